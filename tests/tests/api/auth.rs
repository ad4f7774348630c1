use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cspm_tests::{ADMIN_PASSWORD, TestApi};
use serde_json::json;

use crate::assert_problem;

#[tokio::test]
async fn login_returns_a_token_and_me_describes_the_caller() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let (status, me) = app.api.get(&token, "/api/auth/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], json!(app.admin_email));
    assert_eq!(me["role"], json!("admin"));
    assert_eq!(me["team_name"], json!("Default"));
    let (_, login) = app.api.login(&app.admin_email.to_uppercase(), ADMIN_PASSWORD).await;
    assert_eq!(login["token_type"], json!("bearer"));
    assert!(login["expires_in"].as_i64().unwrap_or(0) > 0);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = TestApi::spawn().await;
    app.admin().await;
    let (s1, wrong) = app.api.login(&app.admin_email, "Wrong-passw0rd!").await;
    let (s2, unknown) = app.api.login("nobody@example.com", ADMIN_PASSWORD).await;
    assert_problem(s1, &wrong, 401, "invalid email or password");
    assert_eq!((s1, wrong), (s2, unknown));
}

#[tokio::test]
async fn every_route_but_health_metrics_and_login_requires_a_token() {
    let app = TestApi::spawn().await;
    let id = "scan_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let routes: Vec<(&str, String)> = vec![
        ("GET", "/api/auth/me".into()),
        ("GET", "/api/cloud-accounts".into()),
        ("POST", "/api/cloud-accounts".into()),
        ("GET", "/api/cloud-accounts/acc_01ARZ3NDEKTSV4RRFFQ69G5FAV".into()),
        ("PUT", "/api/cloud-accounts/acc_01ARZ3NDEKTSV4RRFFQ69G5FAV".into()),
        ("DELETE", "/api/cloud-accounts/acc_01ARZ3NDEKTSV4RRFFQ69G5FAV".into()),
        ("POST", "/api/cloud-accounts/acc_01ARZ3NDEKTSV4RRFFQ69G5FAV/scan".into()),
        ("POST", "/api/cloud-scans/initiate".into()),
        ("GET", "/api/cloud-scans".into()),
        ("GET", format!("/api/cloud-scans/{id}/status")),
        ("GET", format!("/api/cloud-scans/{id}/summary")),
        ("GET", format!("/api/cloud-scans/{id}/ocsf")),
        ("DELETE", format!("/api/cloud-scans/{id}")),
        ("POST", "/api/native-scans/network-discovery".into()),
        ("GET", "/api/native-scans/results".into()),
        ("GET", format!("/api/native-scans/results/{id}")),
    ];
    for (method, path) in &routes {
        let req = app.api.http.request(method.parse().expect("method"), app.api.url(path)).json(&json!({}));
        let (status, body) = app.api.raw(req).await;
        assert_problem(status, &body, 401, "authentication required");
    }
    for open in ["/healthz", "/readyz", "/metrics", "/api/health"] {
        let resp = app.api.http.get(app.api.url(open)).send().await.expect("sent");
        assert_eq!(resp.status().as_u16(), 200, "{open}");
    }
    let metrics = app.api.http.get(app.api.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    assert!(metrics.contains("cspm_queue_depth"), "{metrics}");
}

#[tokio::test]
async fn forged_tampered_and_foreign_tokens_are_refused() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let parts: Vec<&str> = token.split('.').collect();
    let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let (s, b) = app.api.get(&none, "/api/auth/me").await;
    assert_problem(s, &b, 401, "invalid token");
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["role"] = json!("admin");
    claims["team"] = json!("team_01ARZ3NDEKTSV4RRFFQ69G5FAV");
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    let (s, b) = app.api.get(&forged, "/api/auth/me").await;
    assert_problem(s, &b, 401, "invalid token");
    let keys = cspm_shared::auth::jwt::TokenKeys::new("another-key-another-key-another-key".to_string().into());
    let foreign: cspm_shared::auth::jwt::Claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("claims");
    let (s, b) = app.api.get(&keys.sign(&foreign), "/api/auth/me").await;
    assert_problem(s, &b, 401, "invalid token");
    let mut expired = foreign.clone();
    expired.exp = 1;
    let real = cspm_shared::auth::jwt::TokenKeys::new(cspm_tests::SECRET_KEY.to_string().into());
    let (s, b) = app.api.get(&real.sign(&expired), "/api/auth/me").await;
    assert_problem(s, &b, 401, "expired");
}

#[tokio::test]
async fn bad_requests_get_the_problem_shape_with_the_right_status() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let h = &app.api.http;
    let (s, b) = app
        .api
        .raw(
            h.post(app.api.url("/api/cloud-accounts"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_problem(s, &b, 400, "malformed JSON");
    let (s, b) = app.api.raw(h.post(app.api.url("/api/cloud-accounts")).bearer_auth(&token).body("x=1")).await;
    assert_problem(s, &b, 415, "application/json");
    let (s, b) = app.api.post(&token, "/api/cloud-accounts", json!({ "provider": 3 })).await;
    assert_problem(s, &b, 422, "invalid request body");
    let big = "x".repeat(2 * 1024 * 1024);
    let (s, b) = app.api.post(&token, "/api/cloud-accounts", json!({ "provider": big })).await;
    assert_problem(s, &b, 413, "too large");
    let (s, b) = app.api.get(&token, "/api/no-such-thing").await;
    assert_problem(s, &b, 404, "no such route");
    let (s, b) = app.api.raw(h.patch(app.api.url("/api/cloud-accounts")).bearer_auth(&token)).await;
    assert_problem(s, &b, 405, "not allowed");
    let (s, b) = app.api.get(&token, "/api/cloud-scans?limit=abc").await;
    assert_problem(s, &b, 400, "invalid query string");
    let (s, b) = app.api.get(&token, "/api/cloud-scans?limit=0").await;
    assert_problem(s, &b, 422, "limit");
    let (s, b) = app.api.get(&token, "/api/cloud-scans?status=exploded").await;
    assert_problem(s, &b, 422, "status");
    let (s, b) = app.api.get(&token, "/api/cloud-scans/not-an-id/status").await;
    assert_problem(s, &b, 404, "scan not found");
}
