use bson::doc;
use cspm_shared::domain::role::Role;
use cspm_shared::store::users;
use cspm_tests::{TestApi, user_token};
use serde_json::json;

use crate::assert_problem;

#[tokio::test]
async fn accounts_are_validated_per_provider() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let creds = json!({ "access_key_id": "AKIATEST", "secret_access_key": "s" });
    for bad in ["12345678901", "1234567890123", "12345678901x"] {
        let (s, b) = app
            .api
            .post(
                &token,
                "/api/cloud-accounts",
                json!({ "provider": "aws", "account_id": bad, "account_name": "a", "credentials": creds }),
            )
            .await;
        assert_problem(s, &b, 422, "12 digits");
        assert_eq!(b["errors"][0]["field"], json!("account_id"), "{b}");
    }
    let (s, b) = app
        .api
        .post(&token, "/api/cloud-accounts", json!({ "provider": "oracle", "account_id": "1", "account_name": "a" }))
        .await;
    assert_problem(s, &b, 422, "unknown provider");
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "aws", "account_id": "123456789012", "account_name": "a",
            "credentials": { "access_key_id": "AKIA" } }),
        )
        .await;
    assert_problem(s, &b, 422, "secret_access_key");
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "azure", "account_id": "not-a-guid", "account_name": "a" }),
        )
        .await;
    assert_problem(s, &b, 422, "GUID");
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "gcp", "account_id": "my-project-1", "account_name": "g",
            "credentials": { "service_account_json": "not json" } }),
        )
        .await;
    assert_problem(s, &b, 422, "service_account_json");
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "aws", "account_id": "123456789012", "account_name": "a", "colour": "red" }),
        )
        .await;
    assert_problem(s, &b, 422, "unknown field");
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "aws", "account_id": "123456789012", "account_name": "a", "regions": ["EU West"] }),
        )
        .await;
    assert_problem(s, &b, 422, "region");
}

#[tokio::test]
async fn account_lifecycle_and_duplicates() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let id = app.api.aws_account(&token, "111122223333", &["eu-west-1"]).await;
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts/",
            json!({ "provider": "aws", "account_id": "111122223333", "account_name": "again" }),
        )
        .await;
    assert_problem(s, &b, 409, "already connected");
    let (s, list) = app.api.get(&token, "/api/cloud-accounts").await;
    assert_eq!(s, 200);
    assert_eq!(list["total"], json!(1));
    let (s, updated) = app
        .api
        .put(
            &token,
            &format!("/api/cloud-accounts/{id}"),
            json!({ "account_name": "prod", "regions": ["us-east-1", "us-east-1", "eu-west-1"] }),
        )
        .await;
    assert_eq!(s, 200, "{updated}");
    assert_eq!(updated["account_name"], json!("prod"));
    assert_eq!(updated["regions"], json!(["us-east-1", "eu-west-1"]));
    let (s, b) = app.api.put(&token, &format!("/api/cloud-accounts/{id}"), json!({ "provider": "gcp" })).await;
    assert_problem(s, &b, 422, "unknown field");
    let (s, _) = app.api.delete(&token, &format!("/api/cloud-accounts/{id}")).await;
    assert_eq!(s, 204);
    let (s, b) = app.api.get(&token, &format!("/api/cloud-accounts/{id}")).await;
    assert_problem(s, &b, 404, "cloud account not found");
}

#[tokio::test]
async fn credentials_are_encrypted_at_rest_and_never_returned() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzzzzzzzzz";
    let (s, created) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "aws", "account_id": "444455556666", "account_name": "a",
            "credentials": { "access_key_id": "AKIAQQQQQQQQQQQQQQQQ", "secret_access_key": secret } }),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["has_credentials"], json!(true));
    let id = created["id"].as_str().expect("id");
    let (_, fetched) = app.api.get(&token, &format!("/api/cloud-accounts/{id}")).await;
    let (_, listed) = app.api.get(&token, "/api/cloud-accounts").await;
    for text in [created.to_string(), fetched.to_string(), listed.to_string()] {
        assert!(!text.contains(secret) && !text.contains("AKIAQQQQ"), "a credential leaked: {text}");
    }
    let raw = app.mongo.cloud_accounts.find_one(doc! { "_id": id }).await.expect("db").expect("stored");
    let stored = raw.to_string();
    assert!(!stored.contains(secret) && !stored.contains("AKIAQQQQ"), "stored in clear: {stored}");
    let blob = raw.get_str("credentials_encrypted").expect("encrypted blob");
    assert!(blob.starts_with("v1:"), "{blob}");
}

#[tokio::test]
async fn another_teams_objects_answer_404_and_never_appear_in_lists() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let account = app.api.aws_account(&admin, "777788889999", &["us-east-1"]).await;
    let (s, run) = app
        .api
        .post(
            &admin,
            "/api/cloud-scans/initiate",
            json!({ "account_id": account, "tools": ["canary"], "regions": ["us-east-1"] }),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    let (s, native) = app
        .api
        .post(&admin, "/api/native-scans/network-discovery", json!({ "target": "127.0.0.1", "ports": "9" }))
        .await;
    assert_eq!(s, 202, "{native}");
    let scan_id = native["scan_id"].as_str().expect("scan id").to_string();

    let other_team = users::ensure_team(&app.mongo, "Other team").await.expect("team");
    let other =
        user_token(&app.api, &app.mongo, &format!("mgr@{}.other", app.prefix), &other_team.id, Role::SecurityManager)
            .await;
    for path in [
        format!("/api/cloud-accounts/{account}"),
        format!("/api/cloud-scans/{run_id}/status"),
        format!("/api/cloud-scans/{run_id}/summary"),
        format!("/api/cloud-scans/{run_id}/ocsf"),
        format!("/api/native-scans/results/{scan_id}"),
    ] {
        let (s, b) = app.api.get(&other, &path).await;
        assert_problem(s, &b, 404, "not found");
    }
    let (s, b) =
        app.api.put(&other, &format!("/api/cloud-accounts/{account}"), json!({ "account_name": "mine" })).await;
    assert_problem(s, &b, 404, "not found");
    let (s, b) = app.api.post(&other, &format!("/api/cloud-accounts/{account}/scan"), json!({})).await;
    assert_problem(s, &b, 404, "not found");
    let (s, b) = app.api.post(&other, "/api/cloud-scans/initiate", json!({ "account_id": account })).await;
    assert_problem(s, &b, 404, "not found");
    let (s, b) = app.api.delete(&other, &format!("/api/cloud-scans/{run_id}")).await;
    assert_problem(s, &b, 404, "not found");
    let (s, b) = app.api.delete(&other, &format!("/api/cloud-accounts/{account}")).await;
    assert_problem(s, &b, 404, "not found");
    for list in ["/api/cloud-accounts", "/api/cloud-scans", "/api/native-scans/results"] {
        let (s, body) = app.api.get(&other, list).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["total"], json!(0), "{list}: {body}");
    }
    // The owner still sees everything.
    let (s, _) = app.api.get(&admin, &format!("/api/cloud-scans/{run_id}/status")).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_aws_account_may_carry_an_endpoint_override_and_prowler_scope() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let create = |extra: serde_json::Value| {
        let mut body = json!({ "provider": "aws", "account_id": "123456789012", "account_name": "emulated" });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        body
    };
    for (bad, field, needle) in [
        (json!({ "endpoint_url": "ftp://127.0.0.1:5000" }), "endpoint_url", "http"),
        (json!({ "endpoint_url": "http://key:secret@127.0.0.1:5000" }), "endpoint_url", "credentials"),
        (json!({ "endpoint_url": "not a url" }), "endpoint_url", "not a URL"),
        (json!({ "services": ["s3", "EC2; rm"] }), "services", "not a Prowler name"),
        (json!({ "excluded_checks": ["../x"] }), "excluded_checks", "not a Prowler name"),
    ] {
        let (s, b) = app.api.post(&token, "/api/cloud-accounts", create(bad)).await;
        assert_problem(s, &b, 422, needle);
        assert_eq!(b["errors"][0]["field"], json!(field), "{b}");
        assert!(!b.to_string().contains("secret@"), "the URL's credentials were echoed: {b}");
    }
    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            json!({ "provider": "gcp", "account_id": "my-project-1", "account_name": "g",
                    "endpoint_url": "http://127.0.0.1:5000" }),
        )
        .await;
    assert_problem(s, &b, 422, "only AWS");

    let (s, b) = app
        .api
        .post(
            &token,
            "/api/cloud-accounts",
            create(json!({ "endpoint_url": "http://127.0.0.1:5000/", "services": ["s3", "iam", "s3"],
                           "excluded_checks": ["ec2_ebs_public_snapshot"] })),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["endpoint_url"], json!("http://127.0.0.1:5000"));
    assert_eq!(b["services"], json!(["s3", "iam"]), "deduplicated, in order");
    assert_eq!(b["excluded_checks"], json!(["ec2_ebs_public_snapshot"]));
    let id = b["id"].as_str().expect("id");
    let (s, b) = app.api.put(&token, &format!("/api/cloud-accounts/{id}"), json!({ "endpoint_url": "" })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["endpoint_url"], json!(null), "an empty string clears the override");
    assert_eq!(b["services"], json!(["s3", "iam"]), "untouched");
}
