//! API keys for automation: the store (hashing, expiry, rotation races, the per-user limit) with
//! controlled time, the Redis rate limiter shared by replicas, and the API with `X-API-Key` callers
//! (scopes AND the owner's role, 401 for dead keys, rotation grace, 429 with headers, session-only
//! key management, team isolation).

use std::time::Duration;

use bson::doc;
use cspm_shared::domain::role::Role;
use cspm_shared::domain::scope::{Preset, Scope};
use cspm_shared::error::StoreError;
use cspm_shared::ids::{TeamId, UserId};
use cspm_shared::queue::Queues;
use cspm_shared::ratelimit::RateLimiter;
use cspm_shared::settings::CommonSettings;
use cspm_shared::store::api_keys::{self, KeyError, KeyPatch, KeyRefusal, KeyStatus, NewKey};
use cspm_shared::store::users;
use cspm_shared::time::Timestamp;
use cspm_tests::{Server, TestApi, base_env, mongodb_uri, redis_url, unique_prefix, user_token, wait_until};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::assert_problem;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

fn ts(raw: &Value) -> Timestamp {
    let raw = raw.as_str().unwrap_or_else(|| panic!("a time: {raw}"));
    Timestamp::from_millis(bson::DateTime::parse_rfc3339_str(raw).expect("rfc3339").timestamp_millis())
}

/// An app whose indexes exist (the store tests do not wait for the bootstrap administrator).
async fn store_app() -> TestApi {
    let app = TestApi::spawn().await;
    app.mongo.ensure_indexes().await.expect("indexes");
    app
}

fn ci_key(owner: &UserId, team: &TeamId) -> NewKey {
    NewKey::new("ci".into(), Preset::CiCdBasic.scopes(), Some(Preset::CiCdBasic), owner.clone(), team.clone())
}

fn queues(prefix: &str, redis: &str) -> Queues {
    let env = cspm_shared::config::Env::from_map(base_env(prefix, redis, &mongodb_uri()));
    Queues::new(CommonSettings::load(&env).queue).expect("queues")
}

fn limiter(q: &Queues) -> RateLimiter {
    RateLimiter::new(q.connection(), q.settings().namespace.clone())
}

// ---- the store ------------------------------------------------------------------------------------

#[tokio::test]
async fn a_key_is_stored_as_its_hash_and_honoured_until_it_expires_or_is_revoked() {
    let app = store_app().await;
    let (owner, team) = (UserId::new(), TeamId::new());
    let now = Timestamp::now();
    let (doc, secret) = api_keys::create(&app.mongo, ci_key(&owner, &team), now).await.expect("created");
    assert!(api_keys::well_formed(&secret), "{secret}");
    assert_eq!(doc.key_prefix, &secret[..12]);
    assert_eq!(doc.expires_at, Some(now.plus(DAY * 90)));

    // The stored document holds the hash and the prefix, nothing else derived from the key.
    let raw = app.mongo.api_keys.find_one(doc! { "_id": &doc.id }).await.expect("db").expect("stored");
    assert_eq!(raw.get_str("key_hash").ok(), Some(api_keys::hash_secret(&secret).as_str()));
    let text = format!("{raw:?}");
    assert!(!text.contains(&secret) && !text.contains(&secret[12..]), "{text}");

    let ok = api_keys::authenticate(&app.mongo, &secret, now.plus(HOUR)).await.expect("db");
    assert_eq!(ok.map(|k| k.id), Ok(doc.id.clone()));
    let late = api_keys::authenticate(&app.mongo, &secret, now.plus(DAY * 90)).await.expect("db");
    assert_eq!(late.map(|k| k.id), Err(KeyRefusal::Expired));
    let unknown = api_keys::authenticate(&app.mongo, &api_keys::generate_secret(), now).await.expect("db");
    assert_eq!(unknown.map(|k| k.id), Err(KeyRefusal::Unknown));
    for malformed in ["", "osk_short", &secret[..51], &format!("{secret}x"), &secret.replace("osk_", "OSK_")] {
        let r = api_keys::authenticate(&app.mongo, malformed, now).await.expect("db");
        assert_eq!(r.map(|k| k.id), Err(KeyRefusal::Unknown), "{malformed}");
    }

    // Revoking is idempotent and takes effect at once; another team or owner cannot.
    let other_team = api_keys::revoke(&app.mongo, &TeamId::new(), None, &doc.id, now).await.expect("db");
    assert!(other_team.is_none());
    let other_owner = api_keys::revoke(&app.mongo, &team, Some(&UserId::new()), &doc.id, now).await.expect("db");
    assert!(other_owner.is_none());
    let first = api_keys::revoke(&app.mongo, &team, Some(&owner), &doc.id, now).await.expect("db").expect("found");
    assert_eq!((first.status, first.revoked_at), (KeyStatus::Revoked, Some(now)));
    let again = api_keys::revoke(&app.mongo, &team, None, &doc.id, now.plus(HOUR)).await.expect("db").expect("found");
    assert_eq!(again.revoked_at, Some(now), "a second revocation changes nothing");
    let r = api_keys::authenticate(&app.mongo, &secret, now).await.expect("db");
    assert_eq!(r.map(|k| k.id), Err(KeyRefusal::Revoked));

    // A key that never expires.
    let mut forever = ci_key(&owner, &team);
    forever.expires_in_days = 0;
    let (doc, secret) = api_keys::create(&app.mongo, forever, now).await.expect("created");
    assert_eq!(doc.expires_at, None);
    let r = api_keys::authenticate(&app.mongo, &secret, now.plus(DAY * 3_650)).await.expect("db");
    assert!(r.is_ok());
}

#[tokio::test]
async fn a_rotated_key_works_during_its_grace_period_and_not_after() {
    let app = store_app().await;
    let (owner, team) = (UserId::new(), TeamId::new());
    let now = Timestamp::now();
    let mut new = ci_key(&owner, &team);
    new.rate_limit_per_minute = 7;
    new.expires_in_days = 30;
    new.environment = api_keys::Environment::Ci;
    let (old, old_secret) = api_keys::create(&app.mongo, new, now).await.expect("created");

    let later = now.plus(DAY);
    let (succ, succ_secret) = api_keys::rotate(&app.mongo, &team, &owner, &old.id, 48, later).await.expect("rotated");
    assert_ne!(succ_secret, old_secret);
    assert_eq!((succ.name.as_str(), succ.scopes.clone(), succ.preset), ("ci", old.scopes.clone(), old.preset));
    assert_eq!((succ.rate_limit_per_minute, succ.environment), (7, api_keys::Environment::Ci));
    assert_eq!(succ.expires_at, Some(later.plus(DAY * 30)), "the same expiry policy, from the rotation");
    assert_eq!(succ.rotated_from.as_ref(), Some(&old.id));
    let old_now = api_keys::get_in_team(&app.mongo, &team, &old.id).await.expect("db").expect("old");
    assert_eq!(old_now.status, KeyStatus::Rotated);
    assert_eq!(old_now.rotated_to.as_ref(), Some(&succ.id));
    assert_eq!(old_now.grace_until, Some(later.plus(HOUR * 48)));

    let at = |t: Timestamp, s: String| {
        let db = app.mongo.clone();
        async move { api_keys::authenticate(&db, &s, t).await.expect("db").map(|k| k.id) }
    };
    assert_eq!(at(later.plus(HOUR * 47), old_secret.clone()).await, Ok(old.id.clone()));
    assert_eq!(at(later.plus(HOUR * 48), old_secret.clone()).await, Err(KeyRefusal::Expired));
    assert_eq!(at(later.plus(HOUR * 48), succ_secret.clone()).await, Ok(succ.id.clone()));

    // A rotated key is not rotated again, nor changed; grace 0 ends the old key at once.
    let again = api_keys::rotate(&app.mongo, &team, &owner, &old.id, 48, later).await;
    assert!(matches!(again, Err(KeyError::NotActive(_))), "{again:?}");
    let patch = KeyPatch { name: Some("renamed".into()), ..KeyPatch::default() };
    let changed = api_keys::update(&app.mongo, &team, &owner, &old.id, &patch).await;
    assert!(matches!(changed, Err(KeyError::NotActive(_))), "{changed:?}");
    let (_, third) = api_keys::rotate(&app.mongo, &team, &owner, &succ.id, 0, later).await.expect("rotated");
    assert_eq!(at(later, succ_secret).await, Err(KeyRefusal::Expired));
    assert!(at(later, third).await.is_ok());
    let too_long = api_keys::rotate(&app.mongo, &team, &owner, &succ.id, 169, later).await;
    assert!(matches!(too_long, Err(KeyError::Invalid { field: "grace_period_hours", .. })), "{too_long:?}");
    let stranger = api_keys::rotate(&app.mongo, &team, &UserId::new(), &old.id, 1, later).await;
    assert!(matches!(stranger, Err(KeyError::NotFound)), "{stranger:?}");

    // Revoking a key in its grace period ends it at once.
    let (k, s) = api_keys::create(&app.mongo, ci_key(&owner, &team), now).await.expect("created");
    api_keys::rotate(&app.mongo, &team, &owner, &k.id, 48, now).await.expect("rotated");
    api_keys::revoke(&app.mongo, &team, Some(&owner), &k.id, now).await.expect("db").expect("found");
    assert_eq!(at(now, s).await, Err(KeyRefusal::Revoked));
}

#[tokio::test]
async fn two_concurrent_rotations_of_one_key_make_one_successor() {
    let app = store_app().await;
    let (owner, team) = (UserId::new(), TeamId::new());
    let now = Timestamp::now();
    for round in 0..5 {
        let (old, _) = api_keys::create(&app.mongo, ci_key(&owner, &team), now).await.expect("created");
        let rotations = (0..4).map(|_| api_keys::rotate(&app.mongo, &team, &owner, &old.id, 48, now));
        let results = futures::future::join_all(rotations).await;
        // Outcomes without the keys themselves (a failure message must not print them).
        let outcomes: Vec<_> = results.iter().map(|r| r.as_ref().map(|(k, _)| k.id.clone())).collect();
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
        assert!(
            results.iter().filter(|r| r.is_err()).all(|r| matches!(r, Err(KeyError::NotActive(_)))),
            "{outcomes:?}"
        );
        let successors = app.mongo.api_keys.count_documents(doc! { "rotated_from": &old.id }).await.expect("count");
        assert_eq!(successors, 1, "round {round}: the losers withdrew their successors");
        let old_now = api_keys::get_in_team(&app.mongo, &team, &old.id).await.expect("db").expect("old");
        assert_eq!(old_now.rotated_to.as_ref(), Some(&won[0].0.id));
    }
}

#[tokio::test]
async fn a_user_holds_at_most_25_active_keys() {
    let app = store_app().await;
    let (owner, team) = (UserId::new(), TeamId::new());
    let now = Timestamp::now();
    let mut made = Vec::new();
    for n in 0..25 {
        let mut key = ci_key(&owner, &team);
        // Keys that never expire count as well.
        if n % 5 == 0 {
            key.expires_in_days = 0;
        }
        made.push(api_keys::create(&app.mongo, key, now).await.expect("created").0);
    }
    let refused = api_keys::create(&app.mongo, ci_key(&owner, &team), now).await;
    assert!(matches!(refused, Err(KeyError::TooManyActive)), "{refused:?}");
    // Another user is not affected; a revoked or expired key no longer counts.
    api_keys::create(&app.mongo, ci_key(&UserId::new(), &team), now).await.expect("another user");
    api_keys::revoke(&app.mongo, &team, Some(&owner), &made[0].id, now).await.expect("db");
    api_keys::create(&app.mongo, ci_key(&owner, &team), now).await.expect("room again");
    let later = now.plus(DAY * 91);
    api_keys::create(&app.mongo, ci_key(&owner, &team), later).await.expect("the 90-day keys have expired");

    // Racing creations do not pass the limit together.
    let racer = UserId::new();
    for _ in 0..22 {
        api_keys::create(&app.mongo, ci_key(&racer, &team), now).await.expect("created");
    }
    let attempts = (0..8).map(|_| api_keys::create(&app.mongo, ci_key(&racer, &team), now));
    let results = futures::future::join_all(attempts).await;
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(KeyError::TooManyActive))), "{results:?}");
    let count = || app.mongo.api_keys.count_documents(doc! { "owner_id": &racer, "status": "active" });
    let active = count().await.expect("count");
    assert!(active <= 25, "{active} active keys");
    // A racer that went over withdrew its key (several may have): what is left can be filled up.
    for _ in active..25 {
        api_keys::create(&app.mongo, ci_key(&racer, &team), now).await.expect("room left");
    }
    assert_eq!(count().await.expect("count"), 25);
}

#[tokio::test]
async fn uses_are_counted_and_keys_listed_changed_per_owner_and_team() {
    let app = store_app().await;
    let (owner, team) = (UserId::new(), TeamId::new());
    let now = Timestamp::now();
    let (k, _) = api_keys::create(&app.mongo, ci_key(&owner, &team), now).await.expect("created");
    api_keys::create(&app.mongo, ci_key(&UserId::new(), &team), now).await.expect("a colleague's");
    api_keys::create(&app.mongo, ci_key(&owner, &TeamId::new()), now).await.expect("in another team");
    for i in 1..=3 {
        api_keys::record_use(&app.mongo, &k.id, now.plus(Duration::from_secs(i))).await.expect("recorded");
    }
    let read = api_keys::get_for_owner(&app.mongo, &team, &owner, &k.id).await.expect("db").expect("found");
    assert_eq!((read.usage_count, read.last_used_at), (3, Some(now.plus(Duration::from_secs(3)))));
    api_keys::record_use_in_background(&app.mongo, &k.id, now.plus(Duration::from_secs(9)));
    wait_until(Duration::from_secs(10), "the background use to be counted", || async {
        let k = api_keys::get_in_team(&app.mongo, &team, &k.id).await.expect("db").expect("found");
        (k.usage_count == 4).then_some(())
    })
    .await;

    assert_eq!(api_keys::list_for_owner(&app.mongo, &owner, &team).await.expect("db").len(), 1);
    assert_eq!(api_keys::list_for_team(&app.mongo, &team).await.expect("db").len(), 2);
    assert!(api_keys::get_for_owner(&app.mongo, &team, &UserId::new(), &k.id).await.expect("db").is_none());
    assert!(api_keys::get_in_team(&app.mongo, &TeamId::new(), &k.id).await.expect("db").is_none());

    let patch = KeyPatch {
        name: Some("  deploy  ".into()),
        description: Some(Some("the deploy pipeline".into())),
        scopes: Some((vec![Scope::ScansRead], None)),
        rate_limit_per_minute: Some(600),
    };
    let changed = api_keys::update(&app.mongo, &team, &owner, &k.id, &patch).await.expect("changed");
    assert_eq!(changed.name, "deploy");
    assert_eq!(changed.description.as_deref(), Some("the deploy pipeline"));
    assert_eq!((changed.scopes, changed.preset, changed.rate_limit_per_minute), (vec![Scope::ScansRead], None, 600));
    assert_eq!(changed.usage_count, 4, "a change keeps the usage");
    let bad = KeyPatch { rate_limit_per_minute: Some(601), ..KeyPatch::default() };
    let r = api_keys::update(&app.mongo, &team, &owner, &k.id, &bad).await;
    assert!(matches!(r, Err(KeyError::Invalid { field: "rate_limit_per_minute", .. })), "{r:?}");
    let r = api_keys::update(&app.mongo, &TeamId::new(), &owner, &k.id, &patch).await;
    assert!(matches!(r, Err(KeyError::NotFound)), "{r:?}");
}

// ---- the rate limiter ----------------------------------------------------------------------------

#[tokio::test]
async fn the_rate_limiter_counts_across_replicas_and_resets_with_its_window() {
    let prefix = unique_prefix();
    let (a, b) = (limiter(&queues(&prefix, &redis_url())), limiter(&queues(&prefix, &redis_url())));
    let window = Duration::from_millis(1_500);
    let first = a.hit("key:one", 3, window).await.expect("redis");
    assert!(first.allowed && first.limit == 3 && first.remaining == 2, "{first:?}");
    assert!((1..=2).contains(&first.reset_secs), "{first:?}");
    let second = b.hit("key:one", 3, window).await.expect("redis");
    assert_eq!((second.allowed, second.remaining), (true, 1), "the other replica sees the same count");
    assert_eq!(a.hit("key:one", 3, window).await.expect("redis").remaining, 0);
    let over = b.hit("key:one", 3, window).await.expect("redis");
    assert_eq!((over.allowed, over.remaining), (false, 0), "{over:?}");
    // Another bucket has its own count.
    assert_eq!(a.hit("key:two", 3, window).await.expect("redis").remaining, 2);

    // One key per bucket under the namespace, expiring with the window.
    let mut conn = cspm_shared::redis::Client::open(redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let ttl: i64 = cspm_shared::redis::cmd("PTTL")
        .arg(format!("{prefix}:ratelimit:key:one"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!((1..=1_500).contains(&ttl), "{ttl}");

    tokio::time::sleep(window + Duration::from_millis(200)).await;
    let fresh = a.hit("key:one", 3, window).await.expect("redis");
    assert_eq!((fresh.allowed, fresh.remaining), (true, 2), "a new window");

    // Concurrent hits: exactly the limit is allowed.
    let hits = (0..40).map(|i| if i % 2 == 0 { a.hit("key:burst", 10, DAY) } else { b.hit("key:burst", 10, DAY) });
    let decisions = futures::future::join_all(hits).await;
    let allowed = decisions.iter().filter(|d| d.as_ref().expect("redis").allowed).count();
    assert_eq!(allowed, 10);
}

#[tokio::test]
async fn the_rate_limiter_reports_redis_down_as_unavailable_and_recovers() {
    let mut redis = Server::redis();
    let prefix = unique_prefix();
    let l = limiter(&queues(&prefix, &redis.redis_url()));
    assert!(l.hit("key:x", 5, DAY).await.expect("redis").allowed);
    redis.stop();
    let down = l.hit("key:x", 5, DAY).await;
    assert!(matches!(down, Err(StoreError::QueueUnavailable(_))), "{down:?}");
    redis.start();
    // A fresh server (nothing persisted) and no cached script: the limiter loads it again.
    let back = wait_until(Duration::from_secs(30), "the limiter to reach Redis again", || async {
        l.hit("key:x", 5, DAY).await.ok()
    })
    .await;
    assert!(back.allowed && back.remaining == 4, "{back:?}");
}

// ---- the API ---------------------------------------------------------------------------------------

/// A call made with an API key: status, body, headers.
async fn with_key(
    app: &TestApi,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, HeaderMap) {
    let mut req = app.api.http.request(method, app.api.url(path)).header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
}

async fn key_get(app: &TestApi, key: &str, path: &str) -> (u16, Value) {
    let (s, b, _) = with_key(app, key, Method::GET, path, None).await;
    (s, b)
}

/// Makes a key with a session; returns (key id, key).
async fn make_key(app: &TestApi, token: &str, body: Value) -> (String, String) {
    let (s, b) = app.api.post(token, "/api/api-keys", body).await;
    assert_eq!(s, 201, "{b}");
    (b["key_id"].as_str().expect("key id").to_string(), b["api_key"].as_str().expect("the key").to_string())
}

fn header(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn an_owner_makes_lists_reads_changes_and_revokes_keys_in_a_session() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let before = Timestamp::now();
    let (s, made) = app
        .api
        .post(
            &token,
            "/api/api-keys",
            json!({ "name": "GitHub Actions", "description": "deploys", "scope_preset": "ci_cd_basic", "environment": "ci" }),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let secret = made["api_key"].as_str().expect("the key");
    assert!(api_keys::well_formed(secret), "{secret}");
    assert_eq!(made["key_prefix"], json!(&secret[..12]));
    assert_eq!(made["scopes"], json!(["scans:trigger", "scans:read"]));
    assert_eq!(made["scope_preset"], "ci_cd_basic");
    assert_eq!(made["environment"], "ci");
    assert_eq!(made["rate_limit_per_minute"], 60);
    assert!(made["message"].as_str().unwrap_or_default().contains("only once"), "{made}");
    let expires = ts(&made["expires_at"]);
    assert!(expires >= before.plus(DAY * 90) && expires <= Timestamp::now().plus(DAY * 90), "{made}");
    let id = made["key_id"].as_str().expect("id");
    assert!(id.starts_with("key_"), "{id}");

    let (s, list) = app.api.get(&token, "/api/api-keys").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["total"], 1);
    let listed = &list["api_keys"][0];
    assert_eq!(listed["key_id"], json!(id));
    let text = list.to_string();
    assert!(!text.contains(secret) && !text.contains(&api_keys::hash_secret(secret)), "{text}");
    assert!(listed.get("api_key").is_none() && listed.get("key_hash").is_none(), "{listed}");
    assert_eq!((listed["status"].clone(), listed["expired"].clone()), (json!("active"), json!(false)));
    assert_eq!((listed["usage_count"].clone(), listed["last_used_at"].clone()), (json!(0), Value::Null));

    let (s, changed) =
        app.api
            .raw(app.api.http.patch(app.api.url(&format!("/api/api-keys/{id}"))).bearer_auth(&token).json(
                &json!({ "name": "GHA", "scopes": ["scans:read"], "rate_limit_per_minute": 120, "description": "" }),
            ))
            .await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!(changed["name"], "GHA");
    assert_eq!(changed["scopes"], json!(["scans:read"]));
    assert_eq!(changed["scope_preset"], Value::Null);
    assert_eq!(changed["rate_limit_per_minute"], 120);
    assert_eq!(changed["description"], Value::Null);

    let (s, r) = app.api.delete(&token, &format!("/api/api-keys/{id}")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!((r["key_id"].clone(), r["status"].clone()), (json!(id), json!("revoked")));
    let (s, r) = app.api.delete(&token, &format!("/api/api-keys/{id}")).await;
    assert_eq!((s, r["status"].clone()), (200, json!("revoked")), "revoking again is fine");
    let (s, read) = app.api.get(&token, &format!("/api/api-keys/{id}")).await;
    assert_eq!((s, read["status"].clone()), (200, json!("revoked")), "{read}");
    let (s, b) = key_get(&app, secret, "/api/cloud-scans").await;
    assert_problem(s, &b, 401, "revoked");
    let (s, b) = app.api.get(&token, "/api/api-keys/key_01J0000000000000000000000Z").await;
    assert_problem(s, &b, 404, "API key not found");
    let (s, b) = app.api.get(&token, "/api/api-keys/not-an-id").await;
    assert_problem(s, &b, 404, "API key not found");
}

#[tokio::test]
async fn a_key_request_is_checked_field_by_field() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    for (body, field) in [
        (json!({ "name": "x" }), "scopes"),
        (json!({ "name": "x", "scopes": ["scans:read"], "scope_preset": "read_only" }), "scope_preset"),
        (json!({ "name": "x", "scopes": [] }), "scopes"),
        (json!({ "name": "x", "scopes": ["scans:everything"] }), "scopes"),
        (json!({ "name": "x", "scope_preset": "god_mode" }), "scope_preset"),
        (json!({ "name": " ", "scope_preset": "read_only" }), "name"),
        (json!({ "name": "x", "scope_preset": "read_only", "environment": "prod" }), "environment"),
        (json!({ "name": "x", "scope_preset": "read_only", "rate_limit_per_minute": 0 }), "rate_limit_per_minute"),
        (json!({ "name": "x", "scope_preset": "read_only", "rate_limit_per_minute": 601 }), "rate_limit_per_minute"),
        (json!({ "name": "x", "scope_preset": "read_only", "expires_in_days": 366 }), "expires_in_days"),
        (json!({ "name": "x", "scope_preset": "read_only", "expires_in_days": -1 }), "expires_in_days"),
    ] {
        let (s, b) = app.api.post(&token, "/api/api-keys", body.clone()).await;
        assert_problem(s, &b, 422, field);
        assert_eq!(b["errors"][0]["field"], json!(field), "{body} → {b}");
    }
    let (s, b) =
        app.api.post(&token, "/api/api-keys", json!({ "name": "x", "scope_preset": "read_only", "ip": 1 })).await;
    assert_eq!(s, 422, "unknown fields are refused: {b}");

    let (s, forever) = app
        .api
        .post(
            &token,
            "/api/api-keys",
            json!({ "name": "x", "scope_preset": "read_only", "expires_in_days": 0, "rate_limit_per_minute": 600 }),
        )
        .await;
    assert_eq!(s, 201, "{forever}");
    assert_eq!((forever["expires_at"].clone(), forever["rate_limit_per_minute"].clone()), (Value::Null, json!(600)));
    assert_eq!(forever["scopes"].as_array().map(Vec::len), Some(6));

    let id = forever["key_id"].as_str().expect("id");
    let (s, b) =
        app.api.post(&token, &format!("/api/api-keys/{id}/rotate"), json!({ "grace_period_hours": 169 })).await;
    assert_problem(s, &b, 422, "grace_period_hours");

    // The 26th active key is a conflict.
    for n in 1..25 {
        make_key(&app, &token, json!({ "name": format!("k{n}"), "scope_preset": "read_only" })).await;
    }
    let (s, b) =
        app.api.post(&token, "/api/api-keys", json!({ "name": "one too many", "scope_preset": "read_only" })).await;
    assert_problem(s, &b, 409, "25 active");
}

#[tokio::test]
async fn the_scopes_route_lists_every_scope_and_preset() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let (s, b) = app.api.get(&token, "/api/api-keys/scopes").await;
    assert_eq!(s, 200, "{b}");
    let scopes = b["scopes"].as_array().expect("scopes");
    assert_eq!(scopes.len(), Scope::ALL.len());
    assert!(scopes.iter().all(|s| s["description"].as_str().is_some_and(|d| !d.is_empty())), "{b}");
    let presets = b["presets"].as_array().expect("presets");
    assert_eq!(presets.len(), Preset::ALL.len());
    let basic = presets.iter().find(|p| p["preset"] == "ci_cd_basic").expect("ci_cd_basic");
    assert_eq!(basic["scopes"], json!(["scans:trigger", "scans:read"]));
}

#[tokio::test]
async fn a_ci_cd_basic_key_starts_a_scan_and_reads_its_status_within_its_rate_limit() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let account = app.api.aws_account(&admin, "700000000001", &["us-east-1"]).await;
    let (id, key) = make_key(&app, &admin, json!({ "name": "ci", "scope_preset": "ci_cd_basic" })).await;

    let (s, run, h) = with_key(
        &app,
        &key,
        Method::POST,
        &format!("/api/cloud-accounts/{account}/scan"),
        Some(json!({ "tools": ["canary"] })),
    )
    .await;
    assert_eq!(s, 202, "{run}");
    assert_eq!(header(&h, "x-ratelimit-limit"), Some(60));
    assert_eq!(header(&h, "x-ratelimit-remaining"), Some(59));
    assert!(header(&h, "x-ratelimit-reset").is_some_and(|r| (1..=60).contains(&r)), "{h:?}");
    let run_id = run["run_id"].as_str().expect("run id");
    let (s, status, h) = with_key(&app, &key, Method::GET, &format!("/api/cloud-scans/{run_id}/status"), None).await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["status"], "queued");
    assert_eq!(header(&h, "x-ratelimit-remaining"), Some(58));

    // What the key lacks a scope for is refused, whatever the (admin) owner may do.
    let (s, b, h) = with_key(&app, &key, Method::GET, "/api/cloud-accounts", None).await;
    assert_problem(s, &b, 403, "cloud:read");
    assert_eq!(header(&h, "x-ratelimit-limit"), Some(60), "every answer to a key carries the headers");
    let (s, b, _) = with_key(&app, &key, Method::DELETE, &format!("/api/cloud-scans/{run_id}"), None).await;
    assert_problem(s, &b, 403, "scans:manage");

    // Its uses are counted (off the request's path).
    wait_until(Duration::from_secs(10), "the key's uses to be counted", || async {
        let (_, k) = app.api.get(&admin, &format!("/api/api-keys/{id}")).await;
        (k["usage_count"].as_i64().unwrap_or(0) >= 2 && k["last_used_at"].is_string()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_key_is_bounded_by_its_owners_role_read_at_every_call() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let account = app.api.aws_account(&admin, "700000000002", &["us-east-1"]).await;
    let p = &app.prefix;
    let viewer = user_token(&app.api, &app.mongo, &format!("viewer@{p}.t"), &team, Role::Viewer).await;
    let (_, key) = make_key(&app, &viewer, json!({ "name": "everything", "scope_preset": "full_access" })).await;
    let scan = format!("/api/cloud-accounts/{account}/scan");
    let (s, b, _) = with_key(&app, &key, Method::POST, &scan, Some(json!({ "tools": ["canary"] }))).await;
    assert_problem(s, &b, 403, "role");
    let (s, b) = key_get(&app, &key, "/api/cloud-scans").await;
    assert_eq!(s, 200, "a viewer's key reads scans: {b}");

    // The role is the owner's now, not when the key was made.
    let analyst_email = format!("analyst@{p}.t");
    let analyst = user_token(&app.api, &app.mongo, &analyst_email, &team, Role::SecurityAnalyst).await;
    let (_, akey) = make_key(&app, &analyst, json!({ "name": "ci", "scope_preset": "ci_cd_basic" })).await;
    app.mongo
        .users
        .update_one(
            doc! { "email": &analyst_email },
            doc! { "$set": { "memberships": [ { "team_id": &team, "role": "viewer" } ] } },
        )
        .await
        .expect("demoted");
    let (s, b, _) = with_key(&app, &akey, Method::POST, &scan, Some(json!({ "tools": ["canary"] }))).await;
    assert_problem(s, &b, 403, "role");
}

#[tokio::test]
async fn dead_keys_are_refused_with_401() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let (id, key) = make_key(&app, &admin, json!({ "name": "ci", "scope_preset": "read_only" })).await;
    let (s, b) = key_get(&app, &key, "/api/cloud-scans").await;
    assert_eq!(s, 200, "{b}");

    for unknown in [api_keys::generate_secret(), "osk_not-a-key".to_string(), String::new()] {
        let (s, b) = key_get(&app, &unknown, "/api/cloud-scans").await;
        assert_problem(s, &b, 401, "");
    }
    app.mongo
        .api_keys
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": { "expires_at": Timestamp::now().minus(Duration::from_secs(1)) } },
        )
        .await
        .expect("expired by hand");
    let (s, b) = key_get(&app, &key, "/api/cloud-scans").await;
    assert_problem(s, &b, 401, "expired");
    let (_, read) = app.api.get(&admin, &format!("/api/api-keys/{id}")).await;
    assert_eq!((read["status"].clone(), read["expired"].clone()), (json!("active"), json!(true)), "{read}");
}

#[tokio::test]
async fn a_rotated_key_keeps_working_through_its_grace_period_and_not_after() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let (first_id, first) =
        make_key(&app, &admin, json!({ "name": "ci", "scope_preset": "ci_cd_basic", "rate_limit_per_minute": 30 }))
            .await;

    let (s, rotated) = app.api.post(&admin, &format!("/api/api-keys/{first_id}/rotate"), json!({})).await;
    assert_eq!(s, 201, "{rotated}");
    let second = rotated["api_key"].as_str().expect("the new key").to_string();
    let second_id = rotated["key_id"].as_str().expect("id").to_string();
    assert_ne!(second, first);
    assert_eq!((rotated["name"].clone(), rotated["rate_limit_per_minute"].clone()), (json!("ci"), json!(30)));
    assert_eq!(rotated["scope_preset"], "ci_cd_basic");
    assert_eq!(rotated["rotated_from"], json!(first_id));
    let grace = ts(&rotated["old_key"]["grace_until"]);
    assert!(grace > Timestamp::now().plus(HOUR * 47) && grace <= Timestamp::now().plus(HOUR * 48), "{rotated}");
    assert!(rotated["message"].as_str().unwrap_or_default().contains("only once"));
    let (s, b) = key_get(&app, &first, "/api/cloud-scans").await;
    assert_eq!(s, 200, "the old key works during the grace period: {b}");
    let (s, b) = key_get(&app, &second, "/api/cloud-scans").await;
    assert_eq!(s, 200, "{b}");
    let (_, old) = app.api.get(&admin, &format!("/api/api-keys/{first_id}")).await;
    assert_eq!((old["status"].clone(), old["rotated_to"].clone()), (json!("rotated"), json!(second_id)), "{old}");

    let (s, b) = app.api.post(&admin, &format!("/api/api-keys/{first_id}/rotate"), json!({})).await;
    assert_problem(s, &b, 409, "only an active key");

    // Without a body the grace period is the default; with 0 the old key stops at once.
    let (s, third) = app
        .api
        .raw(
            app.api
                .http
                .post(app.api.url(&format!("/api/api-keys/{second_id}/rotate")))
                .bearer_auth(&admin)
                .json(&json!({ "grace_period_hours": 0 })),
        )
        .await;
    assert_eq!(s, 201, "{third}");
    let (s, b) = key_get(&app, &second, "/api/cloud-scans").await;
    assert_problem(s, &b, 401, "expired");
    let (s, b) = key_get(&app, third["api_key"].as_str().expect("key"), "/api/cloud-scans").await;
    assert_eq!(s, 200, "{b}");
    let third_id = third["key_id"].as_str().expect("id");
    let (s, fourth) = app
        .api
        .raw(app.api.http.post(app.api.url(&format!("/api/api-keys/{third_id}/rotate"))).bearer_auth(&admin))
        .await;
    assert_eq!(s, 201, "an empty body is the default grace period: {fourth}");
    let grace = ts(&fourth["old_key"]["grace_until"]);
    assert!(grace > Timestamp::now().plus(HOUR * 47), "{fourth}");
}

#[tokio::test]
async fn a_key_past_its_rate_limit_gets_429_with_the_headers() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let (_, key) =
        make_key(&app, &admin, json!({ "name": "slow", "scope_preset": "read_only", "rate_limit_per_minute": 3 }))
            .await;
    for left in [2, 1, 0] {
        let (s, b, h) = with_key(&app, &key, Method::GET, "/api/cloud-scans", None).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!((header(&h, "x-ratelimit-limit"), header(&h, "x-ratelimit-remaining")), (Some(3), Some(left)));
    }
    let (s, b, h) = with_key(&app, &key, Method::GET, "/api/cloud-scans", None).await;
    assert_problem(s, &b, 429, "");
    assert_eq!((header(&h, "x-ratelimit-limit"), header(&h, "x-ratelimit-remaining")), (Some(3), Some(0)));
    let reset = header(&h, "x-ratelimit-reset").expect("reset");
    let retry = header(&h, "retry-after").expect("retry-after");
    assert!((1..=60).contains(&reset) && (1..=60).contains(&retry), "{h:?}");
    // Another key of the same owner has its own budget; the session is not limited by the key's.
    let (_, other) = make_key(&app, &admin, json!({ "name": "other", "scope_preset": "read_only" })).await;
    assert_eq!(key_get(&app, &other, "/api/cloud-scans").await.0, 200);
    assert_eq!(app.api.get(&admin, "/api/cloud-scans").await.0, 200);
}

#[tokio::test]
async fn a_key_cannot_manage_keys() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let (id, key) = make_key(&app, &admin, json!({ "name": "all", "scope_preset": "full_access" })).await;
    let body = json!({ "name": "minted by a key", "scope_preset": "full_access" });
    for (method, path, body) in [
        (Method::POST, "/api/api-keys".to_string(), Some(body)),
        (Method::GET, "/api/api-keys".to_string(), None),
        (Method::GET, format!("/api/api-keys/{id}"), None),
        (Method::PATCH, format!("/api/api-keys/{id}"), Some(json!({ "name": "x" }))),
        (Method::POST, format!("/api/api-keys/{id}/rotate"), Some(json!({}))),
        (Method::DELETE, format!("/api/api-keys/{id}"), None),
    ] {
        let (s, b, _) = with_key(&app, &key, method.clone(), &path, body).await;
        assert_eq!(s, 403, "{method} {path}: {b}");
    }
    let (_, list) = app.api.get(&admin, "/api/api-keys").await;
    assert_eq!(list["total"], 1, "no key was made: {list}");
    assert_eq!(list["api_keys"][0]["status"], "active", "{list}");
}

#[tokio::test]
async fn another_users_or_teams_key_is_not_found_and_administrators_see_the_teams_keys() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let p = &app.prefix;
    let analyst = user_token(&app.api, &app.mongo, &format!("analyst@{p}.t"), &team, Role::SecurityAnalyst).await;
    let (id, key) = make_key(&app, &analyst, json!({ "name": "analyst ci", "scope_preset": "ci_cd_basic" })).await;
    let other = users::ensure_team(&app.mongo, &format!("other {p}")).await.expect("team");
    let stranger = user_token(&app.api, &app.mongo, &format!("admin2@{p}.t"), &other.id, Role::Admin).await;

    // Neither a colleague (the team's admin, on the owner's routes) nor another team sees it.
    for token in [&admin, &stranger] {
        let (s, b) = app.api.get(token, &format!("/api/api-keys/{id}")).await;
        assert_problem(s, &b, 404, "API key not found");
        let (s, b) = app
            .api
            .raw(
                app.api
                    .http
                    .patch(app.api.url(&format!("/api/api-keys/{id}")))
                    .bearer_auth(token)
                    .json(&json!({ "name": "x" })),
            )
            .await;
        assert_problem(s, &b, 404, "API key not found");
        let (s, b) = app.api.post(token, &format!("/api/api-keys/{id}/rotate"), json!({})).await;
        assert_problem(s, &b, 404, "API key not found");
        let (s, b) = app.api.delete(token, &format!("/api/api-keys/{id}")).await;
        assert_problem(s, &b, 404, "API key not found");
        let (_, list) = app.api.get(token, "/api/api-keys").await;
        assert_eq!(list["total"], 0, "{list}");
    }
    let (s, b) = app.api.delete(&stranger, &format!("/api/api-keys/admin/{id}")).await;
    assert_problem(s, &b, 404, "API key not found");
    let (s, b) = app.api.get(&stranger, "/api/api-keys/admin/team-keys").await;
    assert_eq!((s, b["total"].clone()), (200, json!(0)), "{b}");
    let (s, b) = key_get(&app, &key, "/api/cloud-scans").await;
    assert_eq!(s, 200, "the key still works: {b}");

    // The team's administrator lists every key with its owner and revokes any; others may not.
    let (s, b) = app.api.get(&analyst, "/api/api-keys/admin/team-keys").await;
    assert_problem(s, &b, 403, "");
    let (s, b) = app.api.delete(&analyst, &format!("/api/api-keys/admin/{id}")).await;
    assert_problem(s, &b, 403, "");
    make_key(&app, &admin, json!({ "name": "admin's", "scope_preset": "read_only" })).await;
    let (s, all) = app.api.get(&admin, "/api/api-keys/admin/team-keys").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["total"], 2, "{all}");
    let theirs = all["api_keys"].as_array().expect("keys").iter().find(|k| k["key_id"] == json!(id)).expect("listed");
    assert_eq!(theirs["owner"]["email"], json!(format!("analyst@{p}.t")));
    assert!(!all.to_string().contains(&key), "{all}");
    let (s, b) = app.api.delete(&admin, &format!("/api/api-keys/admin/{id}")).await;
    assert_eq!((s, b["status"].clone()), (200, json!("revoked")), "{b}");
    let (s, b) = key_get(&app, &key, "/api/cloud-scans").await;
    assert_problem(s, &b, 401, "revoked");
}
