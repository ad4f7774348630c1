//! The findings and occurrences API over findings stored by the real store code (the worker's write
//! path), without a worker: filters, grouping, stats, the lifecycle actions, bad input, team isolation.

use bson::doc;
use cspm_shared::domain::finding::{AffectedPackage, Cvss, FindingClass, NewFinding, Verdict, VulnId, Vulnerability};
use cspm_shared::domain::role::Role;
use cspm_shared::domain::severity::Severity;
use cspm_shared::ids::{RunId, SubJobId, TeamId};
use cspm_shared::store::findings::{self, FindingScope, upsert_batch};
use cspm_shared::store::occurrences;
use cspm_shared::time::Timestamp;
use cspm_tests::{TestApi, user_token};
use serde_json::{Value, json};

use crate::assert_problem;

fn scope(team: &TeamId, target: &str, at: i64) -> FindingScope {
    FindingScope {
        team_id: team.clone(),
        tool: "trivy".into(),
        account_id: None,
        target: Some(target.into()),
        region: "global".into(),
        run_id: RunId::new(),
        subjob_id: SubJobId::new(),
        seen_at: Timestamp::from_millis(at),
        cloud: None,
    }
}

fn vuln(cve: &str, pkg: &str, severity: Severity, score: f64) -> NewFinding {
    let mut v = Vulnerability::new(VulnId::Cve(cve.into()), format!("{cve} in {pkg}"), severity);
    v.cvss = vec![Cvss { version: "3.1".into(), base_score: score, vector: None, source: Some("nvd".into()) }];
    v.package = Some(AffectedPackage {
        name: pkg.into(),
        version: "1.0".into(),
        fixed_in_version: Some("1.1".into()),
        ..AffectedPackage::default()
    });
    NewFinding {
        class: FindingClass::Vulnerability,
        rule_id: cve.into(),
        title: format!("{cve} in {pkg} 1.0"),
        description: "A vulnerable package.".into(),
        severity,
        resource_uid: "registry.example.com/app:1".into(),
        resource_type: "container_image".into(),
        service: Some("debian".into()),
        identity: vec!["app:1".into(), pkg.into(), "1.0".into(), cve.into()],
        remediation: Some(format!("Upgrade {pkg} to 1.1")),
        vulnerabilities: vec![v],
        ..NewFinding::default()
    }
}

fn check(rule: &str, resource: &str, verdict: Verdict) -> NewFinding {
    NewFinding {
        class: FindingClass::Compliance,
        rule_id: rule.into(),
        title: format!("Check {rule}"),
        severity: Severity::Medium,
        verdict,
        resource_uid: resource.into(),
        resource_type: "file".into(),
        identity: vec![resource.into(), rule.into()],
        ..NewFinding::default()
    }
}

async fn ids_with_status(app: &TestApi, token: &str, status: &str) -> Vec<String> {
    let (s, b) = app.api.get(token, &format!("/api/cspm/findings?status={status}&limit=500")).await;
    assert_eq!(s, 200, "{b}");
    let mut ids: Vec<String> = b["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap_or("").into())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn findings_are_listed_filtered_grouped_and_counted_within_the_team() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    let s1 = scope(&team, "registry.example.com/app:1", 1_000);
    let batch = vec![
        vuln("CVE-2022-22965", "spring-beans", Severity::Critical, 9.8),
        vuln("CVE-2021-0001", "zlib", Severity::Low, 3.1),
        check("DS002", "Dockerfile", Verdict::Fail),
        check("DS002", "api/Dockerfile", Verdict::Fail),
        check("DS026", "Dockerfile", Verdict::Pass),
    ];
    let stats = upsert_batch(&app.mongo, &s1, &batch).await.expect("stored");
    assert_eq!(stats.inserted, 5);
    assert_eq!(occurrences::sync_batch(&app.mongo, &s1, &batch).await.expect("occurrences"), 2);

    let (s, all) = app.api.get(&token, "/api/cspm/findings").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["total"], json!(5));
    assert_eq!(all["findings"][0]["rule_id"], json!("CVE-2022-22965"), "sorted by severity first");
    assert_eq!(all["findings"][0]["cves"], json!(["CVE-2022-22965"]));
    assert_eq!(all["findings"][0]["status"], json!("open"));

    assert_eq!(ids_with_status(&app, &token, "fail").await.len(), 4);
    assert_eq!(ids_with_status(&app, &token, "pass").await, vec!["DS026"]);
    let (_, crit) = app.api.get(&token, "/api/cspm/findings?severity=critical,low&class=vulnerability").await;
    assert_eq!(crit["total"], json!(2), "{crit}");
    let (_, found) = app.api.get(&token, "/api/cspm/findings?search=SPRING-beans").await;
    assert_eq!(found["total"], json!(1), "search is case-insensitive: {found}");
    let (_, literal) = app.api.get(&token, "/api/cspm/findings?search=.*").await;
    assert_eq!(literal["total"], json!(0), "search text is literal, not a pattern: {literal}");
    let (_, by_cve) = app.api.get(&token, "/api/cspm/findings?cve=cve-2021-0001").await;
    assert_eq!(by_cve["total"], json!(1));

    let (s, grouped) = app.api.get(&token, "/api/cspm/findings/grouped").await;
    assert_eq!(s, 200, "{grouped}");
    assert_eq!(grouped["total_groups"], json!(3), "{grouped}");
    assert_eq!(grouped["total_findings"], json!(4), "passing checks are not in the default (fail) view");
    let ds002 = grouped["groups"].as_array().expect("groups").iter().find(|g| g["check_id"] == json!("DS002"));
    assert_eq!(ds002.map(|g| g["count"].clone()), Some(json!(2)), "{grouped}");

    let (s, stats) = app.api.get(&token, "/api/cspm/findings/stats").await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["total"], json!(5));
    assert_eq!(stats["active"], json!(4));
    assert_eq!(stats["by_status"]["passed"], json!(1));
    assert_eq!(stats["active_by_severity"]["critical"], json!(1));

    let id = all["findings"][0]["id"].as_str().expect("id").to_string();
    let (s, one) = app.api.get(&token, &format!("/api/cspm/findings/{id}")).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["ocsf"]["class_uid"], json!(2002));
    cspm_tests::assert_valid_ocsf(std::slice::from_ref(&one["ocsf"]));

    let (s, occ) = app.api.get(&token, "/api/vulnerabilities/occurrences").await;
    assert_eq!(s, 200, "{occ}");
    assert_eq!(occ["total"], json!(2));
    assert_eq!(occ["occurrences"][0]["vulnerability_id"], json!("CVE-2022-22965"), "riskiest first");
    assert_eq!(occ["occurrences"][0]["priority_rank"], json!("P0"));
    let (_, high) = app.api.get(&token, "/api/vulnerabilities/occurrences?severity_min=7.0").await;
    assert_eq!(high["total"], json!(1));

    // Another team sees none of it, and the ids are simply not found.
    let other = cspm_shared::store::users::ensure_team(&app.mongo, "other team").await.expect("team").id;
    let b = user_token(&app.api, &app.mongo, "b@other.test", &other, Role::Admin).await;
    let (_, none) = app.api.get(&b, "/api/cspm/findings").await;
    assert_eq!(none["total"], json!(0));
    let (s, body) = app.api.get(&b, &format!("/api/cspm/findings/{id}")).await;
    assert_problem(s, &body, 404, "not found");
    let (s, body) =
        app.api.post(&b, &format!("/api/cspm/findings/{id}/resolve"), json!({ "resolution_notes": "x" })).await;
    assert_problem(s, &body, 404, "not found");
    let (s, body) = app
        .api
        .post(&b, &format!("/api/cspm/findings/{id}/suppress"), json!({ "reason": "x", "duration_days": 7 }))
        .await;
    assert_problem(s, &body, 404, "not found");
    let (s, body) = app.api.post(&b, &format!("/api/cspm/findings/{id}/unsuppress"), json!({})).await;
    assert_problem(s, &body, 404, "not found");
    let occ_id = occ["occurrences"][0]["id"].as_str().expect("id");
    let (s, body) = app.api.get(&b, &format!("/api/vulnerabilities/occurrences/{occ_id}")).await;
    assert_problem(s, &body, 404, "not found");
    let (s, body) = app
        .api
        .put(
            &b,
            &format!("/api/vulnerabilities/occurrences/{occ_id}/status"),
            json!({ "status": "accepted_risk", "note": "x" }),
        )
        .await;
    assert_problem(s, &body, 404, "not found");
    let (_, stats_b) = app.api.get(&b, "/api/cspm/findings/stats").await;
    assert_eq!(stats_b["total"], json!(0));
}

#[tokio::test]
async fn people_resolve_and_suppress_and_scans_respect_it() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    let batch = vec![
        check("R1", "a.tf", Verdict::Fail),
        check("R2", "a.tf", Verdict::Fail),
        check("R3", "a.tf", Verdict::Pass),
    ];
    upsert_batch(&app.mongo, &scope(&team, "/repo", 1_000), &batch).await.expect("stored");
    let (_, list) = app.api.get(&token, "/api/cspm/findings?sort=rule_id&order=asc").await;
    let id = |i: usize| list["findings"][i]["id"].as_str().expect("id").to_string();
    let (r1, r2, r3) = (id(0), id(1), id(2));

    // Resolve with a note; a scan that still sees it failing reopens it.
    let (s, b) = app
        .api
        .post(&token, &format!("/api/cspm/findings/{r1}/resolve"), json!({ "resolution_notes": "patched" }))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], json!("resolved"));
    assert_eq!(b["resolution"]["kind"], json!("manual"));
    assert_eq!(b["resolution"]["note"], json!("patched"));
    let (s, b) =
        app.api.post(&token, &format!("/api/cspm/findings/{r1}/resolve"), json!({ "resolution_notes": "again" })).await;
    assert_problem(s, &b, 409, "only an open or reopened finding");

    // Suppress for 30 days: the next scan keeps it suppressed.
    let (s, b) = app
        .api
        .post(
            &token,
            &format!("/api/cspm/findings/{r2}/suppress"),
            json!({ "reason": "accepted for now", "duration_days": 30 }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], json!("suppressed"));
    assert!(b["suppression"]["until"].is_string(), "{b}");

    let second = scope(&team, "/repo", 2_000);
    let stats = upsert_batch(&app.mongo, &second, &batch).await.expect("stored");
    assert_eq!((stats.inserted, stats.reopened), (0, 1));
    let get = |id: String| {
        let api = app.api.clone();
        let token = token.clone();
        async move { api.get(&token, &format!("/api/cspm/findings/{id}")).await.1 }
    };
    let f1 = get(r1.clone()).await;
    assert_eq!(f1["status"], json!("reopened"), "{f1}");
    assert_eq!(f1["reopen_count"], json!(1));
    assert_eq!(get(r2.clone()).await["status"], json!("suppressed"));
    assert_eq!(get(r3.clone()).await["status"], json!("passed"));

    // Ingesting the same SubJob again changes nothing.
    let before: Vec<bson::Document> = {
        use futures::TryStreamExt;
        app.mongo.findings.find(doc! {}).sort(doc! { "_id": 1 }).await.expect("find").try_collect().await.expect("docs")
    };
    upsert_batch(&app.mongo, &second, &batch).await.expect("stored again");
    let after: Vec<bson::Document> = {
        use futures::TryStreamExt;
        app.mongo.findings.find(doc! {}).sort(doc! { "_id": 1 }).await.expect("find").try_collect().await.expect("docs")
    };
    assert_eq!(before, after, "a SubJob ingested twice writes identical documents");

    // Unsuppress: back to what the last sighting said.
    let (s, b) = app.api.post(&token, &format!("/api/cspm/findings/{r2}/unsuppress"), json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], json!("open"));
    let (s, b) = app.api.post(&token, &format!("/api/cspm/findings/{r2}/unsuppress"), json!({})).await;
    assert_problem(s, &b, 409, "not suppressed");

    // An expired suppression is forgotten at the next sighting (one that ended before the scan).
    let admin =
        cspm_shared::store::users::find_by_email(&app.mongo, &app.admin_email).await.expect("db").expect("admin");
    findings::suppress(&app.mongo, &team, &r2, &admin.id, "short", Some(Timestamp::from_millis(2_500)))
        .await
        .expect("db")
        .expect("suppressed");
    upsert_batch(&app.mongo, &scope(&team, "/repo", 3_000), &batch).await.expect("stored");
    let f2 = get(r2.clone()).await;
    assert_eq!(f2["status"], json!("open"), "{f2}");
    assert!(f2["suppression"].is_null(), "{f2}");

    // A permanent suppression survives any number of scans.
    let (s, _) =
        app.api.post(&token, &format!("/api/cspm/findings/{r2}/suppress"), json!({ "reason": "by design" })).await;
    assert_eq!(s, 200);
    upsert_batch(&app.mongo, &scope(&team, "/repo", 9_000_000_000_000), &batch).await.expect("stored");
    assert_eq!(get(r2).await["status"], json!("suppressed"));
}

#[tokio::test]
async fn bad_finding_requests_get_clear_answers() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    upsert_batch(&app.mongo, &scope(&team, "/repo", 1_000), &[check("R1", "a.tf", Verdict::Fail)])
        .await
        .expect("stored");
    let (_, list) = app.api.get(&token, "/api/cspm/findings").await;
    let id = list["findings"][0]["id"].as_str().expect("id").to_string();

    for (path, field) in [
        ("/api/cspm/findings?status=closed", "status"),
        ("/api/cspm/findings?severity=urgent", "severity"),
        ("/api/cspm/findings?sort=colour", "sort"),
        ("/api/cspm/findings?limit=0", "limit"),
        ("/api/cspm/findings?provider=oracle", "provider"),
        ("/api/vulnerabilities/occurrences?severity_min=11", "severity_min"),
        ("/api/vulnerabilities/occurrences?priority_rank=P9", "priority_rank"),
    ] {
        let (s, b) = app.api.get(&token, path).await;
        assert_problem(s, &b, 422, field);
    }
    let suppress = format!("/api/cspm/findings/{id}/suppress");
    for (body, needle) in [
        (json!({ "reason": "x", "duration_days": 8 }), "duration_days"),
        (json!({ "reason": "  " }), "reason"),
        (json!({ "reason": "x", "suppress_until": "yesterday" }), "suppress_until"),
        (json!({ "reason": "x", "suppress_until": "2001-01-01T00:00:00Z" }), "future"),
        (json!({ "reason": "x", "duration_days": 7, "suppress_until": "2100-01-01T00:00:00Z" }), "not both"),
    ] {
        let (s, b) = app.api.post(&token, &suppress, body).await;
        assert_problem(s, &b, 422, needle);
    }
    let (s, b) = app.api.post(&token, &format!("/api/cspm/findings/{id}/resolve"), json!({ "note": "" })).await;
    assert_problem(s, &b, 422, "resolution_notes");
    let (s, b) = app.api.get(&token, "/api/cspm/findings/not-an-id").await;
    assert_problem(s, &b, 404, "finding not found");
    let (s, b) = app.api.get(&token, &format!("/api/cspm/findings/{}", "0".repeat(64))).await;
    assert_problem(s, &b, 404, "finding not found");

    // Viewers read but do not decide.
    let viewer = user_token(&app.api, &app.mongo, "viewer@findings.test", &team, Role::Viewer).await;
    let (s, _) = app.api.get(&viewer, "/api/cspm/findings").await;
    assert_eq!(s, 200);
    let (s, b) =
        app.api.post(&viewer, &format!("/api/cspm/findings/{id}/resolve"), json!({ "resolution_notes": "x" })).await;
    assert_problem(s, &b, 403, "manage_risks");
    let analyst = user_token(&app.api, &app.mongo, "analyst@findings.test", &team, Role::SecurityAnalyst).await;
    let (s, b) = app
        .api
        .post(&analyst, &format!("/api/cspm/findings/{id}/resolve"), json!({ "resolution_notes": "done" }))
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn occurrence_decisions_survive_rescans() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team = app.admin_team().await;
    let batch = vec![vuln("CVE-2023-1111", "openssl", Severity::High, 7.5)];
    let first = scope(&team, "registry.example.com/app:1", 1_000);
    upsert_batch(&app.mongo, &first, &batch).await.expect("stored");
    occurrences::sync_batch(&app.mongo, &first, &batch).await.expect("occurrences");
    let (_, occ) = app.api.get(&token, "/api/vulnerabilities/occurrences").await;
    let id = occ["occurrences"][0]["id"].as_str().expect("id").to_string();
    let status = format!("/api/vulnerabilities/occurrences/{id}/status");

    let (s, b) = app.api.put(&token, &status, json!({ "status": "false_positive" })).await;
    assert_problem(s, &b, 422, "note");
    let (s, b) = app.api.put(&token, &status, json!({ "status": "reopened", "note": "x" })).await;
    assert_problem(s, &b, 422, "only a scan");
    let (s, b) = app.api.put(&token, &status, json!({ "status": "false_positive", "note": "not reachable" })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], json!("false_positive"));

    // Seen again, and then not seen: the decision stays.
    let second = scope(&team, "registry.example.com/app:1", 2_000);
    occurrences::sync_batch(&app.mongo, &second, &batch).await.expect("occurrences");
    let third = scope(&team, "registry.example.com/app:1", 3_000);
    assert_eq!(occurrences::resolve_unseen(&app.mongo, &third).await.expect("resolve"), 0);
    let (_, b) = app.api.get(&token, &format!("/api/vulnerabilities/occurrences/{id}")).await;
    assert_eq!(b["status"], json!("false_positive"), "{b}");
    assert_eq!(b["history"].as_array().map(Vec::len), Some(1));

    // Back to open: then scans move it again.
    let (s, _) = app.api.put(&token, &status, json!({ "status": "open" })).await;
    assert_eq!(s, 200);
    assert_eq!(occurrences::resolve_unseen(&app.mongo, &third).await.expect("resolve"), 1);
    occurrences::sync_batch(&app.mongo, &scope(&team, "registry.example.com/app:1", 4_000), &batch)
        .await
        .expect("sync");
    let (_, b): (u16, Value) = app.api.get(&token, &format!("/api/vulnerabilities/occurrences/{id}")).await;
    assert_eq!(b["status"], json!("reopened"), "{b}");
}

#[tokio::test]
async fn resolving_many_scopes_at_once_touches_each_scope_only_and_counts_what_each_subjob_resolved() {
    let app = TestApi::spawn().await;
    let team = TeamId::new();
    let (image_a, image_b) = ("registry.example.com/a:1", "registry.example.com/b:1");
    let first_a = scope(&team, image_a, 1_000);
    let first_b = scope(&team, image_b, 1_000);
    let a = vec![
        vuln("CVE-2024-0001", "openssl", Severity::High, 7.5),
        check("a.one", image_a, Verdict::Fail),
        check("a.two", image_a, Verdict::Fail),
    ];
    let b = vec![vuln("CVE-2024-0002", "zlib", Severity::Medium, 5.0), check("b.one", image_b, Verdict::Fail)];
    for (s, batch) in [(&first_a, &a), (&first_b, &b)] {
        upsert_batch(&app.mongo, s, batch).await.expect("stored");
        occurrences::sync_batch(&app.mongo, s, batch).await.expect("occurrences");
    }

    // The next scan of A reports only `a.one`, now passing; the next scan of B reports all it did.
    let later_a = scope(&team, image_a, 2_000);
    let later_b = scope(&team, image_b, 2_000);
    upsert_batch(&app.mongo, &later_a, &[check("a.one", image_a, Verdict::Pass)]).await.expect("stored");
    upsert_batch(&app.mongo, &later_b, &b).await.expect("stored");
    occurrences::sync_batch(&app.mongo, &later_b, &b).await.expect("occurrences");
    // A SubJob of another team's scope with nothing in it, in the same round trip.
    let other = scope(&TeamId::new(), image_a, 2_000);
    let scopes = [later_a.clone(), later_b.clone(), other];
    // A's count is everything its SubJob resolved: the check reported passing and the two unreported.
    assert_eq!(findings::resolve_unseen_many(&app.mongo, &scopes).await.expect("resolved"), vec![3, 0, 0]);
    occurrences::resolve_unseen_many(&app.mongo, &scopes).await.expect("resolved");

    let mongo = &app.mongo;
    let count = |filter| async move { mongo.findings.count_documents(filter).await.expect("count") };
    assert_eq!(count(doc! { "target": image_a, "status": "resolved" }).await, 3);
    assert_eq!(count(doc! { "resolution.subjob_id": &later_a.subjob_id }).await, 3);
    assert_eq!(count(doc! { "target": image_b, "status": "open" }).await, 2, "B still reports its findings");
    let open_occurrences = |target: &'static str| async move {
        mongo.occurrences.count_documents(doc! { "target": target, "status": "open" }).await.expect("count")
    };
    assert_eq!(open_occurrences(image_a).await, 0, "A's vulnerability is no longer reported");
    assert_eq!(open_occurrences(image_b).await, 1);

    // Repeated (a second attempt of the same SubJobs): nothing more changes, the counts hold.
    assert_eq!(findings::resolve_unseen_many(&app.mongo, &scopes).await.expect("resolved"), vec![3, 0, 0]);
    occurrences::resolve_unseen_many(&app.mongo, &scopes).await.expect("resolved");
    assert_eq!(count(doc! { "target": image_b, "status": "open" }).await, 2);
    assert_eq!(open_occurrences(image_b).await, 1);
    assert!(findings::resolve_unseen_many(&app.mongo, &[]).await.expect("nothing").is_empty());
}
