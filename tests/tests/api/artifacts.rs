//! Raw artifacts through the API: listed and downloaded by the run's team only, as the gzip objects
//! they are stored as; unknown ids, other teams and missing tokens answer problem details, and a
//! store that is away answers 503 without saying more.

use bson::doc;
use cspm_shared::artifacts::{ArtifactDoc, ArtifactId, ArtifactOwner};
use cspm_shared::domain::role::Role;
use cspm_shared::domain::scan::{Tool, ToolId};
use cspm_shared::ids::{RunId, SubJobId, TeamId};
use cspm_shared::store::runs::{self, RunDoc, RunKind};
use cspm_shared::time::Timestamp;
use cspm_tests::{TestApi, free_port, user_token};
use sha2::{Digest, Sha256};

use crate::artifact_store::{gunzip, output_dir};
use crate::assert_problem;

async fn run_of(app: &TestApi, team: &TeamId) -> RunId {
    let mut run = RunDoc::queued(RunId::new(), team.clone(), RunKind::Cloud, "full", "api", None);
    run.tools = vec!["prowler".into()];
    run.regions = vec!["us-east-1".into()];
    run.sub_jobs_count = 1;
    runs::insert(&app.mongo, &run).await.expect("run stored");
    run.id
}

#[tokio::test]
async fn a_runs_artifacts_are_listed_and_downloaded_by_its_team_only() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    let run = run_of(&app, &team).await;
    let (out, files) = output_dir(256 * 1024);
    let owner = ArtifactOwner {
        team_id: team.clone(),
        run_id: run.clone(),
        subjob_id: SubJobId::new(),
        tool: ToolId::plain(Tool::Prowler),
    };
    let docs = app.artifacts.upload_dir(&app.mongo, &owner, out.path()).await.expect("uploads");

    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["total"], 2, "{body}");
    let listed = body["artifacts"].as_array().expect("a list");
    for (item, (name, content)) in listed.iter().zip(&files) {
        assert_eq!(item["file_name"], name.as_str(), "{item}");
        assert_eq!(item["subjob_id"], owner.subjob_id.as_str());
        assert_eq!(item["tool"], "prowler");
        assert_eq!(item["size"], content.len());
        assert_eq!(item["sha256"], hex::encode(Sha256::digest(content)));
        assert!(item["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{item}");
        let id = item["id"].as_str().expect("id");
        assert_eq!(item["download"], format!("/api/cloud-scans/{run}/artifacts/{id}"));

        let resp = app
            .api
            .http
            .get(app.api.url(item["download"].as_str().expect("path")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 200);
        let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(header("content-type"), "application/gzip");
        let leaf = name.rsplit('/').next().unwrap_or(name);
        assert_eq!(header("content-disposition"), format!("attachment; filename=\"{leaf}.gz\""));
        assert_eq!(header("content-length"), item["stored_size"].to_string());
        let gz = resp.bytes().await.expect("body");
        assert_eq!(gz.len() as u64, item["stored_size"].as_u64().expect("stored size"));
        assert!(gunzip(&gz) == *content, "{name} changed on the way");
    }

    // Pages: in key order, with the total of all pages; one SubJob's files only; bad paging refused.
    let second_owner = ArtifactOwner { subjob_id: SubJobId::new(), ..owner.clone() };
    app.artifacts.upload_dir(&app.mongo, &second_owner, out.path()).await.expect("uploads");
    let mut seen = Vec::new();
    for skip in 0..4 {
        let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts?limit=1&skip={skip}")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            (body["total"].as_u64(), body["skip"].as_u64(), body["limit"].as_u64()),
            (Some(4), Some(skip), Some(1))
        );
        let page = body["artifacts"].as_array().expect("a page");
        assert_eq!(page.len(), 1, "{body}");
        seen.push((page[0]["subjob_id"].as_str().unwrap_or_default().to_string(), page[0]["file_name"].to_string()));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 4, "every file on exactly one page: {seen:?}");
    let (_, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts?skip=4")).await;
    assert_eq!((body["total"].as_u64(), body["artifacts"].as_array().map(Vec::len)), (Some(4), Some(0)), "{body}");
    let one = format!("/api/cloud-scans/{run}/artifacts?subjob_id={}", second_owner.subjob_id);
    let (_, body) = app.api.get(&token, &one).await;
    assert_eq!(body["total"], 2, "{body}");
    assert!(
        body["artifacts"].as_array().expect("list").iter().all(|a| a["subjob_id"] == second_owner.subjob_id.as_str())
    );
    for bad in ["limit=0", "limit=1001", "subjob_id=nope"] {
        let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts?{bad}")).await;
        assert_problem(s, &body, 422, "");
    }

    // Another team: the run and its artifacts do not exist.
    let other = cspm_shared::store::users::ensure_team(&app.mongo, "other team").await.expect("team").id;
    let b = user_token(&app.api, &app.mongo, &format!("b@{}.other", app.prefix), &other, Role::Admin).await;
    let (s, body) = app.api.get(&b, &format!("/api/cloud-scans/{run}/artifacts")).await;
    assert_problem(s, &body, 404, "not found");
    let (s, body) = app.api.get(&b, &format!("/api/cloud-scans/{run}/artifacts/{}", docs[0].id)).await;
    assert_problem(s, &body, 404, "not found");

    // Unknown or malformed ids, and another run's artifact under this run.
    let unknown = ArtifactId::for_key("teams/x/nothing.gz");
    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts/{unknown}")).await;
    assert_problem(s, &body, 404, "artifact not found");
    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts/art_nope")).await;
    assert_problem(s, &body, 404, "not found");
    let second = run_of(&app, &team).await;
    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{second}/artifacts/{}", docs[0].id)).await;
    assert_problem(s, &body, 404, "artifact not found");
    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{second}/artifacts")).await;
    assert_eq!((s, body["total"].as_u64()), (200, Some(0)), "{body}");

    // No token.
    for path in
        [format!("/api/cloud-scans/{run}/artifacts"), format!("/api/cloud-scans/{run}/artifacts/{}", docs[0].id)]
    {
        let (s, body) = app.api.raw(app.api.http.get(app.api.url(&path))).await;
        assert_problem(s, &body, 401, "");
    }
    // A viewer may look at scans, so at their artifacts too.
    let viewer = user_token(&app.api, &app.mongo, &format!("viewer@{}.t", app.prefix), &team, Role::Viewer).await;
    let (s, body) = app.api.get(&viewer, &format!("/api/cloud-scans/{run}/artifacts")).await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn an_artifact_store_that_is_away_answers_503_without_internals() {
    // Nothing listens on the port: every request to the store fails to connect.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let app = TestApi::spawn_with(&[
        ("CSPM_ARTIFACT_STORE", "s3"),
        ("CSPM_S3_BUCKET", "cspm-away"),
        ("CSPM_S3_ENDPOINT", &endpoint),
        ("CSPM_S3_PATH_STYLE", "true"),
        ("CSPM_S3_ALLOW_HTTP", "true"),
        ("CSPM_S3_ACCESS_KEY_ID", "testing-key-id"),
        ("CSPM_S3_SECRET_ACCESS_KEY", "testing-secret-key"),
    ])
    .await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    let run = run_of(&app, &team).await;
    let key = format!("teams/{team}/runs/{run}/subjobs/sj_x/prowler/report.json.gz");
    let doc = ArtifactDoc {
        id: ArtifactId::for_key(&key),
        team_id: team.clone(),
        run_id: run.clone(),
        subjob_id: SubJobId::new(),
        tool: ToolId::plain(Tool::Prowler),
        file_name: "report.json".into(),
        key,
        size: 10,
        stored_size: 30,
        sha256: hex::encode(Sha256::digest(b"0123456789")),
        content_encoding: "gzip".into(),
        created_at: Timestamp::now(),
    };
    app.mongo.artifacts.insert_one(bson::serialize_to_document(&doc).expect("bson")).await.expect("stored");
    assert_eq!(app.mongo.artifacts.count_documents(doc! { "run_id": &run }).await.expect("counts"), 1);

    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts")).await;
    assert_eq!(s, 200, "listing needs only the database: {body}");
    let (s, body) = app.api.get(&token, &format!("/api/cloud-scans/{run}/artifacts/{}", doc.id)).await;
    assert_problem(s, &body, 503, "artifact store is unavailable");
    let text = body.to_string();
    for secret in ["127.0.0.1", "cspm-away", "teams/", "testing-"] {
        assert!(!text.contains(secret), "`{secret}` leaked: {text}");
    }
}
