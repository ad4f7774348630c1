//! One test per dependency outage: the API answers 503 with a clear message while Redis or MongoDB is
//! away, and recovers by itself when it returns.

use std::time::Duration;

use cspm_tests::{Server, TestApi, base_env, mongodb_uri, redis_url, unique_prefix, wait_until, with};
use serde_json::json;

use crate::assert_problem;

#[tokio::test]
async fn redis_down_gives_503_and_the_api_recovers_when_it_returns() {
    let mut redis = Server::redis();
    let prefix = unique_prefix();
    let env = with(base_env(&prefix, &redis.redis_url(), &mongodb_uri()), &[("CSPM_API_BIND", "127.0.0.1:0")]);
    let app = TestApi::spawn_env(prefix, env).await;
    let token = app.admin().await;
    let account = app.api.aws_account(&token, "600000000001", &["us-east-1"]).await;

    redis.stop();
    let (s, b) =
        app.api.post(&token, "/api/cloud-scans/initiate", json!({ "account_id": account, "tools": ["canary"] })).await;
    assert_problem(s, &b, 503, "queue (Redis) is unavailable");
    let ready = app.api.http.get(app.api.url("/readyz")).send().await.expect("sent");
    assert_eq!(ready.status().as_u16(), 503);
    let detail = ready.text().await.unwrap_or_default();
    assert!(detail.contains("Redis"), "{detail}");
    // Reads that need only the database keep working.
    let (s, _) = app.api.get(&token, "/api/cloud-accounts").await;
    assert_eq!(s, 200);

    redis.start();
    let run = wait_until(Duration::from_secs(30), "the API to accept scans again", || async {
        let (s, b) = app
            .api
            .post(&token, "/api/cloud-scans/initiate", json!({ "account_id": account, "tools": ["canary"] }))
            .await;
        (s == 202).then_some(b)
    })
    .await;
    assert_eq!(run["sub_jobs_count"], json!(1));
    let ready = app.api.http.get(app.api.url("/readyz")).send().await.expect("sent");
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn mongodb_down_gives_503_and_the_api_recovers_when_it_returns() {
    let mut mongo = Server::mongo_wire();
    let prefix = unique_prefix();
    let env = with(
        base_env(&prefix, &redis_url(), &mongo.mongodb_uri()),
        &[("CSPM_API_BIND", "127.0.0.1:0"), ("CSPM_DEPENDENCY_TIMEOUT_MS", "1000")],
    );
    let app = TestApi::spawn_env(prefix, env).await;
    // The test's own handle on the database points at the shared server; use the API for everything.
    let token = app.api.token(&app.admin_email, cspm_tests::ADMIN_PASSWORD).await;

    mongo.stop();
    let (s, b) = app.api.get(&token, "/api/cloud-accounts").await;
    assert_problem(s, &b, 503, "database is unavailable");
    let (s, b) = app.api.login(&app.admin_email, cspm_tests::ADMIN_PASSWORD).await;
    assert_problem(s, &b, 503, "database is unavailable");
    let ready = app.api.http.get(app.api.url("/readyz")).send().await.expect("sent");
    assert_eq!(ready.status().as_u16(), 503);

    // An in-memory server comes back empty: the API recreates its indexes and administrator by itself
    // only at start-up, so recovery here means answering from the database again, not finding old
    // data — the session went with the data, so the token is refused by the database's answer.
    mongo.start();
    let (s, b) = wait_until(Duration::from_secs(30), "the API to answer from the database again", || async {
        let (s, b) = app.api.get(&token, "/api/cloud-accounts").await;
        (s != 503).then_some((s, b))
    })
    .await;
    assert_problem(s, &b, 401, "session has ended");
    let ready = app.api.http.get(app.api.url("/readyz")).send().await.expect("sent");
    assert_eq!(ready.status().as_u16(), 200);
}
