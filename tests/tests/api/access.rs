//! The access matrix, walked from the route table itself (`cspm_api::routes::table`): every route ×
//! every role, × an API key of every preset, × no credentials, and every object route with another
//! team's ids. A route added to the table is covered by these tests without anyone listing it; a route
//! with a path parameter that has no cross-team case here fails the test until it gets one.

use std::collections::BTreeMap;

use cspm_api::access::{Access, Keys};
use cspm_api::routes::{Endpoint, table};
use cspm_shared::domain::role::Role;
use cspm_shared::domain::scope::Preset;
use cspm_tests::{Api, TestApi, USER_PASSWORD, user_token};
use serde_json::{Value, json};

/// An id of the right shape that names nothing.
fn placeholder(path: &str) -> String {
    let mut out = Vec::new();
    for seg in path.split('/') {
        out.push(if seg.starts_with('{') { "nope_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string() } else { seg.to_string() });
    }
    out.join("/")
}

async fn call(api: &Api, e: &Endpoint, path: &str, auth: Auth<'_>, body: &Value) -> (u16, Value) {
    let mut req = api.http.request(e.method.clone(), api.url(path));
    req = match auth {
        Auth::None => req,
        Auth::Token(t) => req.bearer_auth(t),
        Auth::Key(k) => req.header("x-api-key", k),
    };
    if e.method != reqwest::Method::GET && e.method != reqwest::Method::DELETE {
        req = req.json(body);
    }
    api.raw(req).await
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Token(&'a str),
    Key(&'a str),
}

fn role_allowed(access: Access, role: Role) -> bool {
    match access {
        Access::Public | Access::SignedIn(_) => true,
        Access::Needs(p, _) => role.can(p),
    }
}

fn key_allowed(access: Access, preset: Preset) -> bool {
    let keys = match access {
        Access::Public => return true,
        Access::SignedIn(k) | Access::Needs(_, k) => k,
    };
    match keys {
        Keys::Any => true,
        Keys::Scope(s) => preset.scopes().contains(&s),
        Keys::None => false,
    }
}

fn what(e: &Endpoint) -> String {
    format!("{} {}", e.method, e.path)
}

async fn key(api: &Api, token: &str, preset: Preset) -> String {
    let (s, b) = api
        .post(
            token,
            "/api/api-keys",
            json!({ "name": format!("{} key", preset.as_str()), "scope_preset": preset.as_str(), "rate_limit_per_minute": 600 }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["api_key"].as_str().expect("the key is shown once").to_string()
}

#[tokio::test]
async fn every_route_answers_every_role_and_key_as_the_matrix_says() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let mut people: Vec<(Role, String, String)> = vec![(Role::Admin, app.admin_email.clone(), admin.clone())];
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Admin) {
        let email = format!("{}@{}.test", role.as_str(), app.prefix);
        let token = user_token(&app.api, &app.mongo, &email, &team, role).await;
        people.push((role, email, token));
    }
    let routes = table(1 << 20);
    assert!(routes.len() > 60, "the table lists every route ({})", routes.len());
    let body = json!({});
    let mut checked = 0;
    for e in &routes {
        let path = placeholder(e.path);
        for (role, email, token) in &people {
            // Signing out ends the session it is called with: use a session of its own.
            let fresh;
            let token = if e.action == "user.logout" {
                let password = if *role == Role::Admin { cspm_tests::ADMIN_PASSWORD } else { USER_PASSWORD };
                fresh = app.api.token(email, password).await;
                &fresh
            } else {
                token
            };
            let (status, answer) = call(&app.api, e, &path, Auth::Token(token), &body).await;
            assert!(status < 500, "{} as {role}: {status} {answer}", what(e));
            if role_allowed(e.access, *role) {
                assert!(status != 401 && status != 403, "{} as {role} must be allowed: {status} {answer}", what(e));
            } else {
                assert_eq!(status, 403, "{} as {role} must be refused: {answer}", what(e));
                assert!(answer["detail"].as_str().unwrap_or_default().contains("does not allow"), "{answer}");
            }
            checked += 1;
        }
        let (status, answer) = call(&app.api, e, &path, Auth::None, &body).await;
        if e.access == Access::Public {
            assert!(status != 401 && status != 403 && status < 500, "{} is public: {status} {answer}", what(e));
        } else {
            assert_eq!(status, 401, "{} without credentials: {answer}", what(e));
        }
        checked += 1;
    }

    // An administrator's key of every preset: the scopes decide. A viewer's full-access key: the role does.
    let mut keys: Vec<(String, Preset, Role)> = Vec::new();
    for preset in Preset::ALL {
        keys.push((key(&app.api, &admin, preset).await, preset, Role::Admin));
    }
    let viewer = &people.iter().find(|p| p.0 == Role::Viewer).expect("viewer").2;
    keys.push((key(&app.api, viewer, Preset::FullAccess).await, Preset::FullAccess, Role::Viewer));
    for e in routes.iter().filter(|e| e.access != Access::Public) {
        let path = placeholder(e.path);
        for (k, preset, owner) in &keys {
            let (status, answer) = call(&app.api, e, &path, Auth::Key(k), &body).await;
            let label = format!("{} with a {} key of a {owner}", what(e), preset.as_str());
            assert!(status < 500, "{label}: {status} {answer}");
            if key_allowed(e.access, *preset) && role_allowed(e.access, *owner) {
                assert!(status != 401 && status != 403, "{label} must be allowed: {status} {answer}");
            } else {
                assert_eq!(status, 403, "{label} must be refused: {answer}");
            }
            checked += 1;
        }
    }
    eprintln!("access matrix: {} routes, {checked} calls checked", routes.len());
}

/// Team A's objects, by the name of the path parameter and the route's prefix.
struct Objects {
    ids: BTreeMap<&'static str, String>,
}

impl Objects {
    fn id_for(&self, template: &str, param: &str) -> Option<String> {
        let key = match param {
            "{id}" if template.starts_with("/api/cloud-accounts/") => "account",
            "{id}" if template.starts_with("/api/schedules/") => "schedule",
            "{run_id}" => "run",
            "{scan_id}" => "native",
            "{team_id}" => "team",
            "{user_id}" => "member",
            "{key_id}" => "key",
            "{session_id}" => "session",
            _ => return None,
        };
        self.ids.get(key).cloned()
    }
}

/// Routes whose objects only exist after a worker ingested a scan or a sync ran; their cross-team cases
/// are in the tests named here.
const COVERED_ELSEWHERE: &[(&str, &str)] = &[
    ("/api/cspm/findings/{id}", "findings::findings_are_listed_filtered_grouped_and_counted_within_the_team"),
    (
        "/api/vulnerabilities/occurrences/{id}",
        "findings::findings_are_listed_filtered_grouped_and_counted_within_the_team",
    ),
    (
        "/api/cloud-scans/{run_id}/artifacts/{artifact_id}",
        "artifacts::a_runs_artifacts_are_listed_and_downloaded_by_its_team_only",
    ),
    ("/api/compliance-engine/sync/{job_id}", "compliance::one_sync_per_team_at_a_time_and_other_teams_see_their_own"),
    (
        "/api/common-controls/control/{scf_id}",
        "the SCF catalog is shared by all teams; each team's control states: compliance::one_sync_per_team_at_a_time_and_other_teams_see_their_own",
    ),
];

/// A body that passes validation, so that the answer says whether the object exists for the caller.
fn valid_body(e: &Endpoint) -> Value {
    match (e.method.as_str(), e.path) {
        ("PUT", "/api/cloud-accounts/{id}") => json!({ "account_name": "renamed" }),
        ("POST", "/api/cloud-accounts/{id}/scan") => json!({ "scan_type": "quick" }),
        ("PUT", "/api/schedules/{id}") => json!({ "name": "renamed" }),
        ("POST", "/api/teams/{team_id}/members") => json!({ "email": "someone@example.com", "role": "viewer" }),
        ("PUT", "/api/teams/{team_id}/members/{user_id}") => json!({ "role": "viewer" }),
        ("PATCH", "/api/api-keys/{key_id}") => json!({ "name": "renamed" }),
        _ => json!({}),
    }
}

#[tokio::test]
async fn every_object_route_answers_404_with_another_teams_ids() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let api = &app.api;
    let mut ids = BTreeMap::new();
    let account = api.aws_account(&admin, "123456789012", &["eu-west-1"]).await;
    let (s, run) =
        api.post(&admin, &format!("/api/cloud-accounts/{account}/scan"), json!({ "scan_type": "quick" })).await;
    assert_eq!(s, 202, "{run}");
    ids.insert("run", run["run_id"].as_str().expect("run").to_string());
    let (s, sched) = api
        .post(
            &admin,
            "/api/schedules",
            json!({ "name": "nightly", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "cron", "expression": "@daily" } }),
        )
        .await;
    assert_eq!(s, 201, "{sched}");
    ids.insert("schedule", sched["id"].as_str().expect("schedule").to_string());
    ids.insert("account", account);
    let (s, native) = api
        .post(&admin, "/api/native-scans/network-discovery", json!({ "target": "127.0.0.1", "scan_type": "port_scan" }))
        .await;
    assert!(s == 200 || s == 202, "{native}");
    ids.insert("native", native["scan_id"].as_str().expect("scan id").to_string());
    ids.insert("team", team.to_string());
    let (s, member) = api
        .post(
            &admin,
            &format!("/api/teams/{team}/members"),
            json!({ "email": format!("member@{}.test", app.prefix), "name": "Member", "role": "viewer", "password": USER_PASSWORD }),
        )
        .await;
    assert_eq!(s, 201, "{member}");
    ids.insert("member", member["user_id"].as_str().expect("user id").to_string());
    let (s, k) = api.post(&admin, "/api/api-keys", json!({ "name": "ci", "scope_preset": "ci_cd_basic" })).await;
    assert_eq!(s, 201, "{k}");
    ids.insert("key", k["key_id"].as_str().expect("key id").to_string());
    let (_, me) = api.get(&admin, "/api/auth/me").await;
    ids.insert("session", me["session_id"].as_str().expect("session id").to_string());
    let objects = Objects { ids };

    // Another team's administrator: every object route, with team A's ids, answers 404.
    let other = cspm_shared::store::users::ensure_team(&app.mongo, "Other team").await.expect("team");
    let intruder = user_token(api, &app.mongo, &format!("intruder@{}.test", app.prefix), &other.id, Role::Admin).await;
    let mut checked = 0;
    for e in table(1 << 20).iter().filter(|e| e.path.contains('{')) {
        if let Some((_, why)) = COVERED_ELSEWHERE.iter().find(|(p, _)| e.path.starts_with(p)) {
            eprintln!("{}: cross-team case in {why}", what(e));
            continue;
        }
        let mut path = Vec::new();
        for seg in e.path.split('/') {
            if seg.starts_with('{') {
                let id = objects
                    .id_for(e.path, seg)
                    .unwrap_or_else(|| panic!("{}: no cross-team id for {seg}; add one to this test", what(e)));
                path.push(id);
            } else {
                path.push(seg.to_string());
            }
        }
        let path = path.join("/");
        let (status, answer) = call(api, e, &path, Auth::Token(&intruder), &valid_body(e)).await;
        assert_eq!(status, 404, "{} with another team's id: {answer}", what(e));
        checked += 1;
    }
    assert!(checked >= 25, "{checked}");
    // And the objects are all still there for their own team.
    for (route, key) in [("/api/cloud-accounts/", "account"), ("/api/schedules/", "schedule")] {
        let (s, b) = api.get(&admin, &format!("{route}{}", objects.ids[key])).await;
        assert_eq!(s, 200, "{b}");
    }
}
