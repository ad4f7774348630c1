//! Identity: sessions checked on every request (sign-out, password change and an administrator's
//! revocation take effect at once; at most five per user), lockout after repeated failures (clearing
//! itself, with the same answer meanwhile), legacy password hashes upgraded at sign-in, the sign-in rate
//! limit, and teams with their members and roles.

use std::time::Duration;

use cspm_shared::auth::password::{LEGACY_ITERATIONS, hash_with};
use cspm_shared::domain::role::Role;
use cspm_shared::store::users;
use cspm_tests::{ADMIN_PASSWORD, TestApi, USER_PASSWORD, user_token};
use serde_json::json;

use crate::assert_problem;

#[tokio::test]
async fn signing_out_changing_the_password_and_revocation_end_sessions_at_once() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let email = format!("analyst@{}.test", app.prefix);
    let first = user_token(&app.api, &app.mongo, &email, &team, Role::SecurityAnalyst).await;
    let second = app.api.token(&email, USER_PASSWORD).await;
    assert_eq!(app.api.get(&first, "/api/auth/me").await.0, 200);

    // Sign-out ends that session only.
    let (s, b) = app.api.post(&first, "/api/auth/logout", json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.api.get(&first, "/api/auth/me").await;
    assert_problem(s, &b, 401, "session has ended");
    assert_eq!(app.api.get(&second, "/api/auth/me").await.0, 200);

    // A password change ends every other session, keeps the caller's, and the new password works.
    let third = app.api.token(&email, USER_PASSWORD).await;
    let new_password = "N3w!Passw0rd-for-test";
    let (s, b) = app
        .api
        .post(&third, "/api/auth/change-password", json!({ "current_password": "wrong", "new_password": new_password }))
        .await;
    assert_problem(s, &b, 422, "current_password");
    let (s, b) = app
        .api
        .post(
            &third,
            "/api/auth/change-password",
            json!({ "current_password": USER_PASSWORD, "new_password": "short" }),
        )
        .await;
    assert_problem(s, &b, 422, "12 characters");
    let (s, b) = app
        .api
        .post(
            &third,
            "/api/auth/change-password",
            json!({ "current_password": USER_PASSWORD, "new_password": new_password }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["sessions_ended"], json!(1), "{b}");
    let (s, b) = app.api.get(&second, "/api/auth/me").await;
    assert_problem(s, &b, 401, "ended");
    assert_eq!(app.api.get(&third, "/api/auth/me").await.0, 200);
    assert_eq!(app.api.login(&email, USER_PASSWORD).await.0, 401);
    let fourth = app.api.token(&email, new_password).await;

    // An administrator ends every session of a member.
    let (_, me) = app.api.get(&fourth, "/api/auth/me").await;
    let user_id = me["id"].as_str().expect("id").to_string();
    let (s, b) = app.api.post(&admin, &format!("/api/teams/{team}/members/{user_id}/revoke-sessions"), json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["sessions_ended"], json!(2), "{b}");
    for t in [&third, &fourth] {
        let (s, b) = app.api.get(t, "/api/auth/me").await;
        assert_problem(s, &b, 401, "ended");
    }
}

#[tokio::test]
async fn a_user_holds_at_most_five_sessions_and_the_oldest_ends() {
    let app = TestApi::spawn().await;
    app.admin().await;
    let mut tokens = Vec::new();
    for _ in 0..6 {
        tokens.push(app.api.token(&app.admin_email, ADMIN_PASSWORD).await);
        // Distinct creation times, so that "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The wait inside `admin()` may have made one more: count from the newest six.
    let (s, b) = app.api.get(&tokens[5], "/api/auth/sessions").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total"], json!(5), "{b}");
    assert_eq!(b["sessions"].as_array().map(|a| a.iter().filter(|x| x["current"] == json!(true)).count()), Some(1));
    let (s, body) = app.api.get(&tokens[0], "/api/auth/me").await;
    assert_problem(s, &body, 401, "ended");
    for t in &tokens[1..] {
        assert_eq!(app.api.get(t, "/api/auth/me").await.0, 200);
    }
    // Ending one of one's own sessions by id; another user's session id is not found.
    let victim = b["sessions"][1]["session_id"].as_str().expect("id").to_string();
    let (s, _) = app.api.delete(&tokens[5], &format!("/api/auth/sessions/{victim}")).await;
    assert_eq!(s, 200);
    let (s, b) = app.api.delete(&tokens[5], &format!("/api/auth/sessions/{victim}")).await;
    assert_problem(s, &b, 404, "session not found");
}

#[tokio::test]
async fn five_failures_lock_the_account_with_the_same_answer_until_it_unlocks_itself() {
    let app = TestApi::spawn_with(&[("CSPM_LOGIN_LOCKOUT_SECS", "10")]).await;
    app.admin().await;
    let (_, wrong) = app.api.login(&app.admin_email, "Wrong-passw0rd!").await;
    for _ in 0..4 {
        app.api.login(&app.admin_email, "Wrong-passw0rd!").await;
    }
    // Locked: even the right password gets the very answer a wrong one gets.
    let (s, locked) = app.api.login(&app.admin_email, ADMIN_PASSWORD).await;
    assert_eq!((s, &locked), (401, &wrong));
    let user = users::find_by_email(&app.mongo, &app.admin_email).await.expect("db").expect("admin");
    assert!(user.locked_until.is_some(), "the lock is recorded");
    tokio::time::sleep(Duration::from_millis(10_200)).await;
    let (s, b) = app.api.login(&app.admin_email, ADMIN_PASSWORD).await;
    assert_eq!(s, 200, "the lock clears itself: {b}");
    let user = users::find_by_email(&app.mongo, &app.admin_email).await.expect("db").expect("admin");
    assert_eq!((user.failed_logins, user.locked_until), (0, None));
}

#[tokio::test]
async fn a_legacy_hash_verifies_and_is_upgraded_at_sign_in() {
    let app = TestApi::spawn().await;
    app.admin().await;
    let team = app.admin_team().await;
    let legacy = hash_with(USER_PASSWORD, LEGACY_ITERATIONS, b"0123456789abcdef");
    assert!(legacy.starts_with("100000$"));
    let email = format!("legacy@{}.test", app.prefix);
    users::create_user(&app.mongo, &email, "Legacy", legacy.clone(), &team, Role::Viewer).await.expect("user");
    let (s, b) = app.api.login(&email, USER_PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    let user = users::find_by_email(&app.mongo, &email).await.expect("db").expect("user");
    assert!(user.password_hash.starts_with("600000$"), "upgraded: {}", &user.password_hash[..10]);
    assert_ne!(user.password_hash, legacy);
    assert_eq!(app.api.login(&email, USER_PASSWORD).await.0, 200, "the upgraded hash verifies");
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_client_address() {
    let app = TestApi::spawn_with(&[("CSPM_LOGIN_RATE_PER_MINUTE", "3")]).await;
    // The bootstrap administrator may not exist yet: wait for it without spending attempts.
    cspm_tests::wait_until(Duration::from_secs(60), "the bootstrap administrator", || async {
        users::find_by_email(&app.mongo, &app.admin_email).await.ok().flatten().map(|_| ())
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.api.login(&app.admin_email, ADMIN_PASSWORD).await.0, 200);
    }
    let resp = app
        .api
        .http
        .post(app.api.url("/api/auth/login"))
        .json(&json!({ "email": app.admin_email, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().expect("text").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn teams_members_and_roles() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let manager =
        user_token(&app.api, &app.mongo, &format!("mgr@{}.test", app.prefix), &team, Role::SecurityManager).await;

    // Adding members: a new user (password policy applies), an existing one, and only admins make admins.
    let new_member =
        json!({ "email": format!("new@{}.test", app.prefix), "name": "New", "role": "viewer", "password": "weak" });
    let (s, b) = app.api.post(&manager, &format!("/api/teams/{team}/members"), new_member.clone()).await;
    assert_problem(s, &b, 422, "password");
    let mut ok = new_member.clone();
    ok["password"] = json!(USER_PASSWORD);
    let (s, b) = app.api.post(&manager, &format!("/api/teams/{team}/members"), ok.clone()).await;
    assert_eq!(s, 201, "{b}");
    let member = b["user_id"].as_str().expect("id").to_string();
    let (s, b) = app.api.post(&manager, &format!("/api/teams/{team}/members"), ok).await;
    assert_problem(s, &b, 409, "already a member");
    let (s, b) =
        app.api.put(&manager, &format!("/api/teams/{team}/members/{member}"), json!({ "role": "admin" })).await;
    assert_problem(s, &b, 403, "only an administrator");
    let (s, b) =
        app.api.put(&manager, &format!("/api/teams/{team}/members/{member}"), json!({ "role": "auditor" })).await;
    assert_eq!((s, b["role"].clone()), (200, json!("auditor")), "{b}");
    let (s, b) = app.api.put(&manager, &format!("/api/teams/{team}/members/{member}"), json!({ "role": "root" })).await;
    assert_problem(s, &b, 422, "role");

    // The member's role takes effect on their next request, without signing in again.
    let member_token = app.api.token(&format!("new@{}.test", app.prefix), USER_PASSWORD).await;
    let (_, me) = app.api.get(&member_token, "/api/auth/me").await;
    assert_eq!(me["role"], json!("auditor"));
    app.api.put(&admin, &format!("/api/teams/{team}/members/{member}"), json!({ "role": "security_analyst" })).await;
    let (_, me) = app.api.get(&member_token, "/api/auth/me").await;
    assert_eq!(me["role"], json!("security_analyst"));

    // The last administrator cannot be demoted or removed.
    let (_, admin_me) = app.api.get(&admin, "/api/auth/me").await;
    let admin_id = admin_me["id"].as_str().expect("id").to_string();
    let (s, b) =
        app.api.put(&admin, &format!("/api/teams/{team}/members/{admin_id}"), json!({ "role": "viewer" })).await;
    assert_problem(s, &b, 409, "last administrator");
    let (s, b) = app.api.delete(&admin, &format!("/api/teams/{team}/members/{admin_id}")).await;
    assert_problem(s, &b, 409, "last administrator");

    // Teams: the admin creates one, becomes its admin, switches to it; its members list is its own.
    let (s, b) = app.api.post(&manager, "/api/teams", json!({ "name": "Blue" })).await;
    assert_problem(s, &b, 403, "create_teams");
    let (s, blue) = app.api.post(&admin, "/api/teams", json!({ "name": "Blue" })).await;
    assert_eq!(s, 201, "{blue}");
    let (s, b) = app.api.post(&admin, "/api/teams", json!({ "name": "Blue" })).await;
    assert_problem(s, &b, 409, "already exists");
    let blue_id = blue["id"].as_str().expect("id").to_string();
    let (s, list) = app.api.get(&admin, "/api/teams").await;
    assert_eq!((s, list["total"].clone()), (200, json!(2)), "{list}");
    let (s, b) = app.api.get(&manager, &format!("/api/teams/{blue_id}")).await;
    assert_problem(s, &b, 404, "team not found");
    let (s, b) = app.api.post(&manager, &format!("/api/teams/{blue_id}/switch"), json!({})).await;
    assert_problem(s, &b, 404, "team not found");
    let (s, b) = app.api.post(&admin, &format!("/api/teams/{blue_id}/switch"), json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (_, me) = app.api.get(&admin, "/api/auth/me").await;
    assert_eq!((me["team_id"].clone(), me["team_name"].clone()), (json!(blue_id), json!("Blue")));
    let (s, m) = app.api.get(&admin, &format!("/api/teams/{blue_id}/members")).await;
    assert_eq!((s, m["total"].clone()), (200, json!(1)), "{m}");
    // The old team's accounts are not visible from the new one, and its members routes are 404 now.
    let (s, b) = app.api.get(&admin, &format!("/api/teams/{team}/members")).await;
    assert_problem(s, &b, 404, "team not found");

    // Removing a member ends their sessions in the team.
    let (s, b) = app.api.delete(&manager, &format!("/api/teams/{team}/members/{member}")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.api.get(&member_token, "/api/auth/me").await;
    assert_problem(s, &b, 401, "ended");
    let (s, b) = app.api.delete(&manager, &format!("/api/teams/{team}/members/{member}")).await;
    assert_problem(s, &b, 404, "member not found");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    for (path, auth) in
        [("/api/auth/me", true), ("/api/no-such-route", true), ("/healthz", false), ("/api/cloud-accounts", false)]
    {
        let mut req = app.api.http.get(app.api.url(path));
        if auth {
            req = req.bearer_auth(&token);
        }
        let resp = req.send().await.expect("sent");
        let h = resp.headers();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("cache-control", "no-store"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ] {
            assert_eq!(h.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name} on {path}");
        }
    }
}

#[tokio::test]
async fn retention_removes_expired_sessions_only() {
    let app = TestApi::spawn().await;
    app.admin().await;
    let user = users::find_by_email(&app.mongo, &app.admin_email).await.expect("db").expect("admin");
    let ended = cspm_shared::store::sessions::create(
        &app.mongo,
        &user.id,
        &user.active_team_id,
        Duration::ZERO,
        10,
        Default::default(),
    )
    .await
    .expect("session");
    let settings = cspm_shared::retention::RetentionSettings::load(&cspm_shared::config::Env::from_map(Vec::<(
        String,
        String,
    )>::new()));
    let now = cspm_shared::time::Timestamp::now();
    let r = cspm_shared::retention::sweep(&app.mongo, &app.artifacts, &settings, now).await.expect("sweep");
    assert_eq!(r.sessions, 1, "{r:?}");
    let left = cspm_shared::store::sessions::list(&app.mongo, &user.id, cspm_shared::time::Timestamp::from_millis(0))
        .await
        .expect("sessions");
    assert!(!left.is_empty() && left.iter().all(|x| x.id != ended.id), "{left:?}");
}
