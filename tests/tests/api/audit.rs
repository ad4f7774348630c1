//! The audit trail: every write recorded once by the access layer, its secrets redacted and sign-in
//! bodies never stored; read back in the caller's scope (their own events, or the team's for an
//! administrator), filtered by user, action wildcard and dates; old events removed by retention.
//! Against the real Redis and Mongo-wire servers. Events a test needs at chosen times or for chosen
//! people are written through the store, as the access layer writes them.

use std::time::Duration;

use bson::{Document, doc};
use cspm_shared::audit::{Actor, AuditEvent, REDACTED, RequestFacts};
use cspm_shared::domain::role::Role;
use cspm_shared::ids::{TeamId, UserId};
use cspm_shared::retention::{self, RetentionSettings};
use cspm_shared::store::audit::{self, AuditQuery};
use cspm_shared::store::users;
use cspm_shared::time::Timestamp;
use cspm_tests::{TestApi, user_token, wait_until};
use futures::TryStreamExt;
use serde_json::{Value, json};

use crate::assert_problem;

const DAY: Duration = Duration::from_secs(86_400);
/// How long the access layer may take to write an event (it writes after the answer).
const RECORDED_WITHIN: Duration = Duration::from_secs(20);

fn ts(raw: &str) -> Timestamp {
    Timestamp::from_millis(bson::DateTime::parse_rfc3339_str(raw).expect("rfc3339").timestamp_millis())
}

fn unique(what: &str) -> String {
    format!("{what}-{}", ulid::Ulid::generate().to_string().to_ascii_lowercase())
}

/// An event as the access layer records it: a POST by `actor` in `team`, with a harmless body.
fn event(team: Option<&TeamId>, actor: Option<&UserId>, action: &str, at: Timestamp, status: u16) -> AuditEvent {
    AuditEvent::record(
        RequestFacts {
            method: "POST",
            path: "/api/probe/p1",
            route: Some("/api/probe/{id}"),
            action: Some(action),
            status,
            duration: Duration::from_millis(5),
            ip: Some("127.0.0.1"),
            user_agent: Some("cspm-tests"),
            content_type: Some("application/json"),
            body: Some(br#"{"name":"probe"}"#),
        },
        Actor { team_id: team.cloned(), user_id: actor.cloned(), ..Actor::default() },
        at,
    )
}

async fn seed(app: &TestApi, team: Option<&TeamId>, actor: Option<&UserId>, action: &str, at: &str, status: u16) {
    audit::insert(&app.mongo, &event(team, actor, action, ts(at), status)).await.expect("event stored");
}

async fn user_id(app: &TestApi, email: &str) -> UserId {
    users::find_by_email(&app.mongo, email).await.expect("db").expect("user exists").id
}

/// Every stored event, as JSON text (what a person reading the database would see).
async fn stored_text(app: &TestApi) -> String {
    let docs: Vec<Document> = app.mongo.audit.find(doc! {}).await.expect("find").try_collect().await.expect("docs");
    serde_json::to_string(&docs).expect("json")
}

/// Waits for the first stored event matching `filter`.
async fn recorded(app: &TestApi, what: &str, filter: Document) -> AuditEvent {
    let d = wait_until(RECORDED_WITHIN, what, || {
        let filter = filter.clone();
        async move { app.mongo.audit.find_one(filter).await.ok().flatten() }
    })
    .await;
    bson::deserialize_from_document(d).expect("an audit event")
}

async fn trail(app: &TestApi, token: &str, query: &str) -> Value {
    let (s, b) = app.api.get(token, &format!("/api/audit-trail{query}")).await;
    assert_eq!(s, 200, "{query}: {b}");
    b
}

fn actions_of(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().expect("an action").to_string())
        .collect()
}

#[tokio::test]
async fn a_cloud_account_created_with_credentials_is_recorded_with_its_secrets_redacted() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let secret = unique("s3cr3t-access-key");
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({
                "provider": "aws",
                "account_id": "123456789012",
                "account_name": "audited account",
                "regions": ["eu-west-1"],
                "credentials": { "access_key_id": "AKIAAUDITAUDITAUDIT", "secret_access_key": secret },
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let e = recorded(&app, "the account's audit event", doc! { "action": "cloud_account.create" }).await;
    assert_eq!((e.method.as_str(), e.path.as_str(), e.status, e.success), ("POST", "/api/cloud-accounts", 201, true));
    assert_eq!(e.team_id, Some(app.admin_team().await));
    assert_eq!(e.actor_id, Some(user_id(&app, &app.admin_email).await));
    assert_eq!(e.actor_email.as_deref(), Some(app.admin_email.as_str()));
    assert_eq!(e.actor_role, Some(Role::Admin));
    let body = e.body.clone().expect("the body is summarised");
    assert!(body.contains("audited account") && body.contains(REDACTED), "{body}");
    // Nowhere in the stored trail: not in the body, not in any other field, not in any other event.
    let all = stored_text(&app).await;
    assert!(!all.contains(&secret), "the secret is stored: {all}");
    assert!(!all.contains("AKIAAUDITAUDITAUDIT"), "the access key id is stored: {all}");

    // Read back through the API, times as RFC 3339.
    let page = trail(&app, &token, "?action=cloud_account.create").await;
    assert_eq!(page["total"], json!(1), "{page}");
    let ev = &page["events"][0];
    assert_eq!(ev["id"], json!(e.id), "{ev}");
    assert_eq!(ev["at"], json!(e.at.to_rfc3339()), "{ev}");
    assert!(bson::DateTime::parse_rfc3339_str(ev["at"].as_str().expect("at")).is_ok(), "{ev}");
    assert!(!page.to_string().contains(&secret), "{page}");
}

#[tokio::test]
async fn a_failed_sign_in_is_recorded_without_its_body() {
    let app = TestApi::spawn().await;
    // Signed in once: the bootstrap administrator exists, and a successful sign-in is on record.
    app.admin().await;
    let since = Timestamp::now();
    let wrong = unique("Wr0ng-passw0rd");
    let (s, b) = app.api.login(&app.admin_email, &wrong).await;
    assert_problem(s, &b, 401, "invalid email or password");
    let e = recorded(
        &app,
        "the failed sign-in's audit event",
        doc! { "action": "user.login", "status": 401, "at": { "$gte": since.minus(Duration::from_secs(1)) } },
    )
    .await;
    assert!(!e.success, "{e:?}");
    assert_eq!((e.method.as_str(), e.path.as_str()), ("POST", "/api/auth/login"));
    assert_eq!(e.body, None, "a sign-in body is never stored");
    let ok = recorded(&app, "the successful sign-in", doc! { "action": "user.login", "status": 200 }).await;
    assert!(ok.success);
    assert_eq!(ok.body, None, "a sign-in body is never stored");
    let all = stored_text(&app).await;
    assert!(!all.contains(&wrong), "the attempted password is stored: {all}");
    assert!(!all.contains(cspm_tests::ADMIN_PASSWORD), "the password is stored: {all}");
}

#[tokio::test]
async fn reads_are_not_recorded_and_refused_writes_are() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    for path in ["/api/cloud-accounts", "/api/auth/me", "/api/audit-trail", "/api/audit-trail/actions"] {
        let (s, b) = app.api.get(&token, path).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    // A write after the reads, refused (422): recorded, as a failure.
    let (s, b) = app
        .api
        .post(&token, "/api/cloud-accounts", json!({ "provider": "oracle", "account_id": "1", "account_name": "a" }))
        .await;
    assert_eq!(s, 422, "{b}");
    let e = recorded(&app, "the refused write", doc! { "action": "cloud_account.create" }).await;
    assert_eq!((e.status, e.success), (422, false));
    let gets = app.mongo.audit.count_documents(doc! { "method": { "$in": ["GET", "HEAD"] } }).await.expect("count");
    assert_eq!(gets, 0, "reads were recorded: {}", stored_text(&app).await);
}

#[tokio::test]
async fn members_read_their_own_events_and_administrators_the_teams() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let admin_id = user_id(&app, &app.admin_email).await;
    let viewer_email = format!("viewer@{}.test", app.prefix);
    let viewer = user_token(&app.api, &app.mongo, &viewer_email, &team, Role::Viewer).await;
    let viewer_id = user_id(&app, &viewer_email).await;
    let analyst_email = format!("analyst@{}.test", app.prefix);
    let analyst = user_token(&app.api, &app.mongo, &analyst_email, &team, Role::SecurityAnalyst).await;
    let analyst_id = user_id(&app, &analyst_email).await;
    seed(&app, Some(&team), Some(&admin_id), "probe.admin_one", "2021-01-01T00:00:00Z", 200).await;
    seed(&app, Some(&team), Some(&admin_id), "probe.admin_two", "2021-01-02T00:00:00Z", 200).await;
    seed(&app, Some(&team), Some(&viewer_id), "probe.viewer", "2021-01-03T00:00:00Z", 403).await;
    seed(&app, Some(&team), Some(&analyst_id), "probe.analyst", "2021-01-04T00:00:00Z", 201).await;

    let all = trail(&app, &admin, "?action=probe.*").await;
    assert_eq!(all["total"], json!(4), "{all}");
    let one = trail(&app, &admin, &format!("?action=probe.*&user_id={viewer_id}")).await;
    assert_eq!(actions_of(&one), vec!["probe.viewer"], "{one}");
    let one = trail(&app, &admin, &format!("?action=probe.*&user_id={analyst_id}")).await;
    assert_eq!(actions_of(&one), vec!["probe.analyst"], "{one}");

    // A viewer and an analyst see their own, whatever they filter by.
    let own = trail(&app, &viewer, "?action=probe.*").await;
    assert_eq!(actions_of(&own), vec!["probe.viewer"], "{own}");
    assert!(own["events"].as_array().expect("events").iter().all(|e| e["actor_id"] == json!(viewer_id)), "{own}");
    let own = trail(&app, &viewer, "").await;
    assert!(own["events"].as_array().expect("events").iter().all(|e| e["actor_id"] == json!(viewer_id)), "{own}");
    let own = trail(&app, &analyst, &format!("?user_id={analyst_id}&action=probe.*")).await;
    assert_eq!(actions_of(&own), vec!["probe.analyst"], "{own}");
    let (s, b) = app.api.get(&viewer, &format!("/api/audit-trail?user_id={admin_id}")).await;
    assert_problem(s, &b, 403, "your own audit events");
    let (s, b) = app.api.get(&analyst, &format!("/api/audit-trail?user_id={viewer_id}")).await;
    assert_problem(s, &b, 403, "your own audit events");

    // The action menu follows the same scope.
    let (s, b) = app.api.get(&admin, "/api/audit-trail/actions").await;
    assert_eq!(s, 200, "{b}");
    let listed: Vec<&str> = b["actions"].as_array().expect("actions").iter().filter_map(Value::as_str).collect();
    for a in ["probe.admin_one", "probe.admin_two", "probe.analyst", "probe.viewer"] {
        assert!(listed.contains(&a), "{a} missing: {b}");
    }
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "sorted: {b}");
    let (s, b) = app.api.get(&viewer, "/api/audit-trail/actions").await;
    assert_eq!(s, 200, "{b}");
    let listed: Vec<&str> = b["actions"].as_array().expect("actions").iter().filter_map(Value::as_str).collect();
    assert!(listed.contains(&"probe.viewer"), "{b}");
    assert!(!listed.iter().any(|a| a.starts_with("probe.") && *a != "probe.viewer"), "others' actions: {b}");

    // The trail has no route that changes or removes an event.
    let id = all["events"][0]["id"].as_str().expect("id").to_string();
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/audit-trail".to_string()),
        (reqwest::Method::DELETE, format!("/api/audit-trail/{id}")),
        (reqwest::Method::PUT, format!("/api/audit-trail/{id}")),
        (reqwest::Method::POST, "/api/audit-trail".to_string()),
    ] {
        let (s, b) = app.api.raw(app.api.http.request(method.clone(), app.api.url(&path)).bearer_auth(&admin)).await;
        assert!(matches!(s, 404 | 405), "{method} {path}: {s} {b}");
    }
    assert_eq!(trail(&app, &admin, "?action=probe.*").await["total"], json!(4));
}

#[tokio::test]
async fn another_teams_events_are_never_visible() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let admin_id = user_id(&app, &app.admin_email).await;
    let other = users::ensure_team(&app.mongo, "another team").await.expect("team");
    let other_email = format!("admin@other-{}.test", app.prefix);
    let other_admin = user_token(&app.api, &app.mongo, &other_email, &other.id, Role::Admin).await;
    let other_id = user_id(&app, &other_email).await;
    seed(&app, Some(&team), Some(&admin_id), "probe.mine", "2021-05-01T00:00:00Z", 200).await;
    seed(&app, Some(&other.id), Some(&other_id), "probe.theirs", "2021-05-01T00:00:00Z", 200).await;
    // An event of the administrator in another team (a membership elsewhere) is that team's.
    seed(&app, Some(&other.id), Some(&admin_id), "probe.elsewhere", "2021-05-02T00:00:00Z", 200).await;
    // Nobody's (a failed sign-in of an unknown email): no team reads it.
    seed(&app, None, None, "probe.anonymous", "2021-05-03T00:00:00Z", 401).await;

    assert_eq!(actions_of(&trail(&app, &admin, "?action=probe.*").await), vec!["probe.mine"]);
    let theirs = trail(&app, &admin, &format!("?user_id={other_id}")).await;
    assert_eq!(theirs["total"], json!(0), "{theirs}");
    let page = trail(&app, &admin, "?limit=500").await;
    assert!(page["events"].as_array().expect("events").iter().all(|e| e["team_id"] == json!(team)), "{page}");
    let (_, b) = app.api.get(&admin, "/api/audit-trail/actions").await;
    let listed: Vec<&str> = b["actions"].as_array().expect("actions").iter().filter_map(Value::as_str).collect();
    assert!(listed.contains(&"probe.mine"), "{b}");
    for hidden in ["probe.theirs", "probe.elsewhere", "probe.anonymous"] {
        assert!(!listed.contains(&hidden), "{hidden}: {b}");
    }

    let seen = trail(&app, &other_admin, "?action=probe.*").await;
    assert_eq!(actions_of(&seen), vec!["probe.elsewhere", "probe.theirs"], "{seen}");
}

#[tokio::test]
async fn action_wildcards_dates_and_pages_filter_the_trail() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    let me = user_id(&app, &app.admin_email).await;
    for (action, at, status) in [
        ("scan.start", "2020-01-10T12:00:00Z", 202),
        ("scan.cancel", "2020-02-01T00:00:00Z", 409),
        ("scanner.update", "2020-02-15T08:30:00Z", 200),
        ("cloud_account.delete", "2020-02-29T23:59:59.999Z", 204),
        ("schedule.delete", "2020-03-01T00:00:00Z", 204),
    ] {
        seed(&app, Some(&team), Some(&me), action, at, status).await;
    }
    // Events the test made (its sign-in) are from now: every query here ends in 2020.
    let q = |rest: &str| format!("?end_date=2020-12-31&{rest}");

    let all = trail(&app, &token, &q("")).await;
    assert_eq!(
        actions_of(&all),
        vec!["schedule.delete", "cloud_account.delete", "scanner.update", "scan.cancel", "scan.start"],
        "newest first: {all}"
    );
    assert_eq!(all["events"][0]["at"], json!("2020-03-01T00:00:00Z"), "{all}");
    assert_eq!(all["events"][1]["at"], json!("2020-02-29T23:59:59.999Z"), "{all}");
    assert_eq!((all["total"].clone(), all["skip"].clone(), all["limit"].clone()), (json!(5), json!(0), json!(50)));

    assert_eq!(actions_of(&trail(&app, &token, &q("action=scan.*")).await), vec!["scan.cancel", "scan.start"]);
    assert_eq!(actions_of(&trail(&app, &token, &q("action=SCAN.*")).await), vec!["scan.cancel", "scan.start"]);
    assert_eq!(
        actions_of(&trail(&app, &token, &q("action=*.delete")).await),
        vec!["schedule.delete", "cloud_account.delete"]
    );
    assert_eq!(actions_of(&trail(&app, &token, &q("action=scan.start")).await), vec!["scan.start"]);
    assert_eq!(actions_of(&trail(&app, &token, &q("action=scan")).await), Vec::<String>::new());
    assert_eq!(actions_of(&trail(&app, &token, &q("action=*")).await).len(), 5);
    assert_eq!(
        actions_of(&trail(&app, &token, &q("action=*an*.*")).await),
        vec!["scanner.update", "scan.cancel", "scan.start"]
    );

    // Dates include both days; times are exact.
    assert_eq!(
        actions_of(&trail(&app, &token, "?start_date=2020-02-01&end_date=2020-02-29").await),
        vec!["cloud_account.delete", "scanner.update", "scan.cancel"]
    );
    assert_eq!(
        actions_of(&trail(&app, &token, &q("start_date=2020-02-15T08:30:00Z")).await),
        vec!["schedule.delete", "cloud_account.delete", "scanner.update"]
    );
    assert_eq!(
        actions_of(
            &trail(&app, &token, "?start_date=2020-02-15T08:30:00.001Z&end_date=2020-02-29T23:59:59.998Z").await
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        actions_of(&trail(&app, &token, &q("success_only=true&action=scan.*")).await),
        vec!["scan.start"],
        "the 409 is not a success"
    );

    let page = trail(&app, &token, &q("limit=2&skip=1")).await;
    assert_eq!(actions_of(&page), vec!["cloud_account.delete", "scanner.update"], "{page}");
    assert_eq!((page["total"].clone(), page["skip"].clone(), page["limit"].clone()), (json!(5), json!(1), json!(2)));

    for (query, field) in [
        ("?start_date=yesterday", "start_date"),
        ("?end_date=2020-02-30", "end_date"),
        ("?start_date=2020-03-01&end_date=2020-02-01", "end_date"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?action=scan.(start|cancel)", "action"),
        ("?user_id=nobody", "user_id"),
        ("?success_only=maybe", "success_only"),
    ] {
        let (s, b) = app.api.get(&token, &format!("/api/audit-trail{query}")).await;
        assert_problem(s, &b, 422, field);
        assert_eq!(b["errors"][0]["field"], json!(field), "{query}: {b}");
    }
}

#[tokio::test]
async fn the_store_confines_readers_and_matches_wildcards_on_the_server() {
    let app = TestApi::spawn().await;
    let team = TeamId::new();
    let (me, you) = (UserId::new(), UserId::new());
    let t0 = Timestamp::from_millis(1_600_000_000_000);
    for (i, (who, action)) in
        [(&me, "scan.start"), (&you, "scan.cancel"), (&me, "scanner.update"), (&you, "a-b:c.delete"), (&me, "a+b.c")]
            .into_iter()
            .enumerate()
    {
        let at = t0.plus(Duration::from_secs(i as u64));
        audit::insert(&app.mongo, &event(Some(&team), Some(who), action, at, 200)).await.expect("stored");
    }
    let run = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery::team(team.clone());
        f(&mut q);
        let db = app.mongo.clone();
        async move {
            let (events, total) = audit::query(&db, &q).await.expect("query");
            assert!(total as usize >= events.len());
            events.into_iter().map(|e| e.action).collect::<Vec<_>>()
        }
    };
    assert_eq!(run(&|_| {}).await, vec!["a+b.c", "a-b:c.delete", "scanner.update", "scan.cancel", "scan.start"]);
    assert_eq!(run(&|q| q.action = Some("scan.*".into())).await, vec!["scan.cancel", "scan.start"]);
    assert_eq!(run(&|q| q.action = Some("a-b:c.*".into())).await, vec!["a-b:c.delete"]);
    assert_eq!(run(&|q| q.action = Some("a+b.*".into())).await, vec!["a+b.c"]);
    assert_eq!(run(&|q| q.action = Some("*.delete".into())).await, vec!["a-b:c.delete"]);
    assert_eq!(run(&|q| q.action = Some("a.b.c".into())).await, Vec::<String>::new(), "`.` is not a wildcard");
    assert_eq!(run(&|q| q.action = Some("*b.c".into())).await, vec!["a+b.c"]);
    assert_eq!(run(&|q| q.actor = Some(me.clone())).await, vec!["a+b.c", "scanner.update", "scan.start"]);
    assert_eq!(
        run(&|q| {
            q.actor = Some(me.clone());
            q.user = Some(you.clone());
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(run(&|q| q.user = Some(you.clone())).await, vec!["a-b:c.delete", "scan.cancel"]);
    assert_eq!(
        run(&|q| {
            q.start = Some(t0.plus(Duration::from_secs(1)));
            q.end = Some(t0.plus(Duration::from_secs(3)));
        })
        .await,
        vec!["a-b:c.delete", "scanner.update", "scan.cancel"]
    );
    let (page, total) = audit::query(&app.mongo, &AuditQuery { skip: 3, limit: 10, ..AuditQuery::team(team.clone()) })
        .await
        .expect("page");
    assert_eq!((page.len(), total), (2, 5));
    assert_eq!(
        audit::actions(&app.mongo, &team, None).await.expect("actions"),
        vec!["a+b.c", "a-b:c.delete", "scan.cancel", "scan.start", "scanner.update"]
    );
    assert_eq!(
        audit::actions(&app.mongo, &team, Some(&you)).await.expect("actions"),
        vec!["a-b:c.delete", "scan.cancel"]
    );
    assert!(audit::actions(&app.mongo, &TeamId::new(), None).await.expect("actions").is_empty());
}

#[tokio::test]
async fn retention_removes_audit_events_older_than_a_year_in_batches() {
    let app = TestApi::spawn().await;
    let team = TeamId::new();
    let now = Timestamp::now();
    for i in 0..7 {
        let at = now.minus(DAY * 400).minus(Duration::from_secs(i));
        audit::insert(&app.mongo, &event(Some(&team), None, "probe.old", at, 200)).await.expect("stored");
    }
    for i in 0..3 {
        let at = now.minus(DAY * 300).minus(Duration::from_secs(i));
        audit::insert(&app.mongo, &event(Some(&team), None, "probe.recent", at, 200)).await.expect("stored");
    }
    let mut s = RetentionSettings::load(&cspm_shared::config::Env::from_map(Vec::<(String, String)>::new()));
    assert_eq!(s.audit_age, DAY * 365);
    s.batch = 2;
    s.max_batches = 2;
    s.pause = Duration::from_millis(1);
    let first = retention::sweep(&app.mongo, &app.artifacts, &s, now).await.expect("sweep");
    assert_eq!((first.audit, first.incomplete), (4, true), "{first:?}");
    let second = retention::sweep(&app.mongo, &app.artifacts, &s, now).await.expect("sweep");
    assert_eq!((second.audit, second.incomplete), (3, false), "{second:?}");
    assert_eq!(retention::sweep(&app.mongo, &app.artifacts, &s, now).await.expect("sweep").audit, 0);
    let left: Vec<AuditEvent> =
        audit::query(&app.mongo, &AuditQuery { limit: 100, ..AuditQuery::team(team.clone()) }).await.expect("query").0;
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|e| e.action == "probe.recent"), "{left:?}");
}

/// A GET with an API key.
async fn key_get(app: &TestApi, key: &str, path: &str) -> (u16, Value) {
    app.api.raw(app.api.http.get(app.api.url(path)).header("X-API-Key", key)).await
}

/// Makes an API key with a session; returns (key id, key).
async fn make_key(app: &TestApi, token: &str, scopes: &[&str]) -> (String, String) {
    let (s, b) = app.api.post(token, "/api/api-keys", json!({ "name": unique("audit"), "scopes": scopes })).await;
    assert_eq!(s, 201, "{b}");
    (b["key_id"].as_str().expect("key id").to_string(), b["api_key"].as_str().expect("the key").to_string())
}

#[tokio::test]
async fn api_keys_read_the_teams_trail_only_with_admin_audit_and_their_owners_role() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let admin_id = user_id(&app, &app.admin_email).await;
    let viewer_email = format!("viewer@{}.test", app.prefix);
    let viewer = user_token(&app.api, &app.mongo, &viewer_email, &team, Role::Viewer).await;
    let viewer_id = user_id(&app, &viewer_email).await;
    seed(&app, Some(&team), Some(&admin_id), "probe.admin", "2022-01-01T00:00:00Z", 200).await;
    seed(&app, Some(&team), Some(&viewer_id), "probe.viewer", "2022-01-02T00:00:00Z", 200).await;

    let (_, audit_key) = make_key(&app, &admin, &["admin:audit"]).await;
    let (s, b) = key_get(&app, &audit_key, "/api/audit-trail?action=probe.*").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(actions_of(&b), vec!["probe.viewer", "probe.admin"], "{b}");
    let (_, scans_key) = make_key(&app, &admin, &["scans:read"]).await;
    let (s, b) = key_get(&app, &scans_key, "/api/audit-trail").await;
    assert_problem(s, &b, 403, "admin:audit");

    // The scope does not lift the owner's role: a viewer's key reads the viewer's own events.
    let (_, viewer_key) = make_key(&app, &viewer, &["admin:audit"]).await;
    let (s, b) = key_get(&app, &viewer_key, "/api/audit-trail?action=probe.*").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(actions_of(&b), vec!["probe.viewer"], "{b}");
    let (s, b) = key_get(&app, &viewer_key, &format!("/api/audit-trail?user_id={admin_id}")).await;
    assert_problem(s, &b, 403, "your own audit events");

    // A write with a key names the key.
    let (cloud_id, cloud_key) = make_key(&app, &admin, &["cloud:manage"]).await;
    let (s, b) = app
        .api
        .raw(app.api.http.post(app.api.url("/api/cloud-accounts")).header("X-API-Key", &cloud_key).json(&json!({
            "provider": "aws", "account_id": "123456789012", "account_name": "by key",
            "credentials": { "access_key_id": "AKIAKEYKEYKEYKEYKEY", "secret_access_key": unique("k") },
        })))
        .await;
    assert_eq!(s, 201, "{b}");
    let e = recorded(&app, "the key's write", doc! { "action": "cloud_account.create" }).await;
    assert_eq!(e.api_key_id.map(|k| k.to_string()), Some(cloud_id));
    assert_eq!(e.actor_id, Some(admin_id));
    let all = stored_text(&app).await;
    assert!(!all.contains(&cloud_key), "the key is stored: {all}");
}
