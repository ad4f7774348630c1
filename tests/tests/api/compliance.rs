//! The compliance engine through the API, against the real servers: the operator's SCF catalog imported
//! from the fixtures (both layouts; nothing of it is in this repository), Prowler's AWS example findings
//! stored through the worker's own parser and store, syncs, control states explained control by control,
//! framework scores computed here by hand, overrides that syncs never change, one sync per team at a
//! time, and another team's view kept apart.
//!
//! The expected controls are not written here either: an independent reading of the fixture files (a
//! line scan of the crosswalks and Prowler's check files) works them out at run time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bson::doc;
use cspm_shared::compliance::sync::{self, SyncStart, SyncTrigger};
use cspm_shared::domain::finding::NewFinding;
use cspm_shared::domain::provider::Provider;
use cspm_shared::domain::role::Role;
use cspm_shared::ids::{AccountId, RunId, SubJobId, TeamId};
use cspm_shared::store::findings::{self, FindingScope, upsert_batch};
use cspm_shared::store::users;
use cspm_shared::time::Timestamp;
use cspm_tests::{TestApi, user_token, wait_until};
use serde_json::{Value, json};

use crate::assert_problem;
use crate::fixtures::{fixture, import, import_bytes, json_import, prowler_aws_findings, sync_and_wait};

const CROSSWALKS: [&str; 4] = ["nist-csf-2.0", "iso27001-2022", "cis-controls-v8", "pcidss-4_0"];
const CHECK_FILES: [&str; 4] = ["nist_csf_2.0_aws", "iso27001_2022_aws", "cis_5.0_aws", "cis_controls_8.1"];

/// (field, file name, path) of the YAML catalog, its crosswalks and Prowler's check files.
fn yaml_import() -> Vec<(&'static str, String, PathBuf)> {
    let mut parts = vec![("catalog", "scf-2025.2.2.yaml".to_string(), fixture("scf/ciso-assistant/scf-2025.2.2.yaml"))];
    for fw in CROSSWALKS {
        let name = format!("mapping-{fw}-and-scf-2025.2.2.yaml");
        parts.push(("crosswalk", name.clone(), fixture(&format!("scf/ciso-assistant/{name}"))));
    }
    for f in CHECK_FILES {
        parts.push(("check_mapping", format!("{f}.json"), fixture(&format!("prowler/compliance/{f}.json"))));
    }
    parts
}

fn aws_scope(team: &TeamId, account: &AccountId, at: i64) -> FindingScope {
    FindingScope {
        team_id: team.clone(),
        tool: "prowler".into(),
        account_id: Some(account.clone()),
        target: None,
        region: "us-east-1".into(),
        run_id: RunId::new(),
        subjob_id: SubJobId::new(),
        seen_at: Timestamp::from_millis(at),
        cloud: Some((Provider::Aws, "123456789012".into())),
    }
}

async fn ingest(app: &TestApi, scope: &FindingScope) -> Vec<NewFinding> {
    let batch = tokio::task::spawn_blocking(prowler_aws_findings).await.expect("parsed");
    upsert_batch(&app.mongo, scope, &batch).await.expect("stored");
    batch
}

// ---- the independent oracle: what the fixtures say, read line by line ----

/// (framework, requirement) → SCF ids, framework → SCF requirement from a STRM crosswalk.
fn crosswalk_oracle(name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(fixture(&format!("scf/ciso-assistant/mapping-{name}-and-scf-2025.2.2.yaml")))
        .expect("crosswalk");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut source: Option<String> = None;
    for line in text.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(s) = line.strip_prefix("source_requirement_urn: ") {
            source = Some(s.trim().to_string());
        } else if let Some(t) = line.strip_prefix("target_requirement_urn: ")
            && let Some(s) = source.take()
        {
            let (sf, sr) = last_two(&s);
            let (tf, tr) = last_two(t.trim());
            if sf == name && tf.starts_with("scf") {
                out.entry(sr.to_ascii_lowercase()).or_default().insert(tr.to_ascii_uppercase());
            }
        }
    }
    out
}

fn last_two(urn: &str) -> (String, String) {
    let mut it = urn.rsplit(':');
    let req = it.next().unwrap_or_default().to_string();
    let fw = it.next().unwrap_or_default().to_string();
    (fw, req)
}

/// Prowler's check → (requirement id, requirement name) of one check file.
fn check_oracle(file: &str, check: &str) -> Vec<(String, String)> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixture(&format!("prowler/compliance/{file}.json"))).expect("file"))
            .expect("json");
    let reqs =
        v.get("Requirements").or_else(|| v.get("requirements")).and_then(Value::as_array).cloned().unwrap_or_default();
    reqs.iter()
        .filter(|r| {
            let checks = r.get("Checks").or_else(|| r.get("checks")).cloned().unwrap_or(Value::Null);
            let mut all: Vec<Value> = checks.as_array().cloned().unwrap_or_default();
            if let Some(m) = checks.as_object() {
                all.extend(m.values().flat_map(|l| l.as_array().cloned().unwrap_or_default()));
            }
            all.iter().any(|c| c.as_str() == Some(check))
        })
        .map(|r| {
            let id = r.get("Id").or_else(|| r.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
            let name = r.get("Name").or_else(|| r.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
            (id, name)
        })
        .collect()
}

/// `GV.PO-3` → `gv.po-03` (the crosswalk's spelling).
fn two_digit(id: &str) -> String {
    match id.rsplit_once('-') {
        Some((head, n)) if n.len() == 1 && n.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{head}-0{n}").to_ascii_lowercase()
        }
        _ => id.to_ascii_lowercase(),
    }
}

/// The SCF controls each check reaches through the crosswalks (ISO 27001 by id; NIST CSF by name).
fn oracle_controls(check: &str) -> BTreeSet<String> {
    let iso = crosswalk_oracle("iso27001-2022");
    let nist = crosswalk_oracle("nist-csf-2.0");
    let cis = crosswalk_oracle("cis-controls-v8");
    let mut out = BTreeSet::new();
    for (id, _) in check_oracle("iso27001_2022_aws", check) {
        out.extend(iso.get(&id.to_ascii_lowercase()).cloned().unwrap_or_default());
    }
    for (_, name) in check_oracle("nist_csf_2.0_aws", check) {
        out.extend(nist.get(&two_digit(&name)).cloned().unwrap_or_default());
    }
    for (id, _) in check_oracle("cis_controls_8.1", check) {
        out.extend(cis.get(&id.to_ascii_lowercase()).cloned().unwrap_or_default());
    }
    out
}

async fn control(app: &TestApi, token: &str, id: &str) -> Value {
    let (s, b) = app.api.get(token, &format!("/api/common-controls/control/{id}")).await;
    assert_eq!(s, 200, "{id}: {b}");
    b
}

async fn score(app: &TestApi, token: &str, framework: &str) -> Value {
    let (s, b) = app.api.get(token, &format!("/api/cspm/findings/compliance-scores?framework={framework}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["frameworks"].as_array().map(Vec::len), Some(1), "{b}");
    b["frameworks"][0].clone()
}

#[tokio::test]
async fn both_catalog_layouts_import_for_admins_only_and_a_bad_one_keeps_the_previous() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    for role in [Role::SecurityManager, Role::ComplianceOfficer, Role::Viewer] {
        let t = user_token(&app.api, &app.mongo, &format!("{role}@import.test"), &team, role).await;
        let (s, b) = import(&app, &t, json_import()).await;
        assert_problem(s, &b, 403, "administer_compliance");
    }
    let (s, none) = app.api.get(&admin, "/api/common-controls/catalog").await;
    assert_problem(s, &none, 404, "no SCF catalog");

    let (s, yaml) = import(&app, &admin, yaml_import()).await;
    assert_eq!(s, 201, "{yaml}");
    assert!(yaml["controls"].as_i64().unwrap_or(0) > 1000, "{yaml}");
    assert!(yaml["release"].as_str().is_some_and(|r| r.starts_with("scf-")), "{yaml}");
    assert_eq!(yaml["files"].as_array().map(Vec::len), Some(9));
    assert_eq!(yaml["previous_catalog_id"], Value::Null);

    let (s, js) = import(&app, &admin, json_import()).await;
    assert_eq!(s, 201, "{js}");
    assert_eq!(js["controls"], json!(1451));
    assert_eq!(js["previous_catalog_id"], yaml["catalog_id"]);
    assert!(js["frameworks"].as_array().map(Vec::len).unwrap_or(0) > 200);

    // Malformed: a cut YAML catalog, a JSON catalog with a bad id, a stray field, a non-multipart body.
    let good = std::fs::read(fixture("scf/ciso-assistant/scf-2025.2.2.yaml")).expect("fixture");
    let cut = good[..good.len() / 2].to_vec();
    let mut broken = cut.clone();
    broken.extend_from_slice(b"\n  - [unclosed: {\n");
    let (s, b) = import_bytes(&app, &admin, &[("catalog", "broken.yaml".into(), broken)]).await;
    assert_problem(s, &b, 422, "broken.yaml");
    assert!(b["detail"].as_str().unwrap_or_default().contains("unchanged"), "{b}");
    let bad_id = br#"{"controls":[{"id":"nope","domain":"D","description":"x"}]}"#.to_vec();
    let (s, b) = import_bytes(&app, &admin, &[("catalog", "bad.json".into(), bad_id)]).await;
    assert_problem(s, &b, 422, "not an SCF control id");
    let (s, b) = import_bytes(&app, &admin, &[("catalog", "x.json".into(), b"{}".to_vec())]).await;
    assert_problem(s, &b, 422, "x.json");
    let (s, b) = import_bytes(&app, &admin, &[("crosswalk", "m.yaml".into(), b"objects: {}\n".to_vec())]).await;
    assert_problem(s, &b, 422, "m.yaml");
    let (s, b) = import_bytes(&app, &admin, &[("attachment", "a.txt".into(), b"hi".to_vec())]).await;
    assert_problem(s, &b, 422, "unknown form field");
    let (s, b) = app.api.post(&admin, "/api/common-controls/import-scf", json!({ "catalog": "x" })).await;
    assert_problem(s, &b, 415, "multipart");

    let (s, now) = app.api.get(&admin, "/api/common-controls/catalog").await;
    assert_eq!(s, 200, "{now}");
    assert_eq!(now["catalog_id"], js["catalog_id"], "the catalog in force is the last good one");
    // Only the current and the previous version are kept.
    let versions = app.mongo.compliance.catalogs.count_documents(doc! {}).await.expect("count");
    assert_eq!(versions, 2);
}

#[tokio::test]
async fn prowler_findings_sync_into_explained_control_states_and_hand_computed_scores() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let (s, b) = import(&app, &admin, yaml_import()).await;
    assert_eq!(s, 201, "{b}");
    let account = AccountId::new();
    let batch = ingest(&app, &aws_scope(&team, &account, 1_000)).await;
    assert_eq!(batch.len(), 5);

    let job = sync_and_wait(&app, &admin).await;
    assert_eq!(job["status"], json!("completed"), "{job}");
    let result = &job["result"];
    assert_eq!(result["findings_read"], json!(5), "{job}");
    assert!(result["findings_by_path"]["crosswalk"].as_i64().unwrap_or(0) >= 3, "{job}");

    // Control by control: every control the oracle says a check reaches holds that finding as evidence,
    // with the crosswalk path and the requirement named; a failing check alone makes it not implemented,
    // manual checks alone leave it not assessed (with evidence).
    let mut by_control: BTreeMap<String, Vec<&NewFinding>> = BTreeMap::new();
    for f in &batch {
        for c in oracle_controls(&f.rule_id) {
            by_control.entry(c).or_default().push(f);
        }
    }
    assert!(by_control.len() >= 5, "the oracle finds crosswalked controls: {by_control:?}");
    for (id, findings) in &by_control {
        let c = control(&app, &admin, id).await;
        let team_state = &c["team"];
        let evidence = team_state["evidence"].as_array().cloned().unwrap_or_default();
        for f in findings {
            let e = evidence.iter().find(|e| e["rule_id"] == json!(f.rule_id));
            let e = e.unwrap_or_else(|| panic!("{id}: no evidence of {} in {team_state}", f.rule_id));
            assert_eq!(e["path"], json!("crosswalk"), "{id}: {e}");
            assert!(e["explanation"].as_str().unwrap_or_default().contains("crosswalk"), "{e}");
        }
        let failing = findings.iter().any(|f| f.verdict == cspm_shared::domain::finding::Verdict::Fail);
        let passing = findings.iter().any(|f| f.verdict == cspm_shared::domain::finding::Verdict::Pass);
        let only_crosswalk = team_state["paths"].as_object().is_some_and(|p| p.keys().all(|k| k == "crosswalk"));
        if only_crosswalk {
            let expected = match (failing, passing) {
                (true, false) => "not_implemented",
                (true, true) => "partial",
                (false, true) => "implemented",
                (false, false) => "not_assessed",
            };
            assert_eq!(team_state["state"], json!(expected), "{id}: {team_state}");
        }
        assert_eq!(team_state["score_weight"], json!(0.25), "{id}: failing or manual evidence only: {team_state}");
    }
    // The NIST CSF join went through Prowler's `GV.xx-n` names to the catalog's `GV.xx-0n`.
    let nist_hit = by_control.iter().find_map(|(id, fs)| {
        fs.iter().any(|f| !check_oracle("nist_csf_2.0_aws", &f.rule_id).is_empty()).then_some(id.clone())
    });
    if let Some(id) = nist_hit {
        let c = control(&app, &admin, &id).await;
        let text = c["team"]["evidence"].to_string();
        assert!(text.contains("NIST-CSF-2.0") || text.contains("ISO27001"), "{text}");
    }

    // The ISO 27001 score by hand: every control of the framework's crosswalk, weighted by its state.
    let iso_members: BTreeSet<String> = crosswalk_oracle("iso27001-2022").into_values().flatten().collect();
    let mut points = 0.0;
    let mut with_evidence = 0;
    for id in &iso_members {
        let c = control(&app, &admin, id).await;
        let w = c["team"]["score_weight"].as_f64().expect("weight (no control is not applicable yet)");
        points += w;
        if c["team"]["evidence_count"].as_i64().unwrap_or(0) > 0 {
            with_evidence += 1;
        }
    }
    let expected = (points / iso_members.len() as f64 * 10_000.0).round() / 100.0;
    let iso = score(&app, &admin, "ISO27001-2022").await;
    assert_eq!(iso["controls"], json!(iso_members.len()), "{iso}");
    assert_eq!(iso["with_evidence"], json!(with_evidence), "{iso}");
    assert_eq!(iso["score"], json!(expected), "{iso}");
    assert!(expected > 0.0 && expected < 70.0, "{expected}");
    assert_eq!(iso["threshold"], json!(70.0));
    assert_eq!(iso["meets_threshold"], json!(false));
    let (_, status) = app.api.get(&admin, "/api/compliance-engine/status").await;
    assert!(status["breaches"].to_string().contains(iso["framework"].as_str().unwrap_or("?")), "{status}");

    // An override wins, with its justification, and a re-sync does not change it.
    let target = by_control.keys().find(|id| iso_members.contains(*id)).expect("an ISO control with evidence").clone();
    let path = format!("/api/common-controls/control/{target}/state");
    let (s, b) = app.api.put(&admin, &path, json!({ "state": "implemented", "justification": "" })).await;
    assert_problem(s, &b, 422, "justification");
    let (s, b) = app.api.put(&admin, &path, json!({ "state": "done", "justification": "x" })).await;
    assert_problem(s, &b, 422, "state");
    let analyst = user_token(&app.api, &app.mongo, "analyst@compliance.test", &team, Role::SecurityAnalyst).await;
    let (s, b) = app.api.put(&analyst, &path, json!({ "state": "implemented", "justification": "x" })).await;
    assert_problem(s, &b, 403, "administer_compliance");
    let (s, b) =
        app.api.put(&admin, &path, json!({ "state": "implemented", "justification": "compensating control" })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["team"]["state"], json!("implemented"));
    let after_override = score(&app, &admin, "ISO27001-2022").await;
    let expected = ((points + 0.75) / iso_members.len() as f64 * 10_000.0).round() / 100.0;
    assert_eq!(after_override["score"], json!(expected), "{after_override}");
    let job = sync_and_wait(&app, &admin).await;
    assert_eq!(job["result"]["overridden_controls"], json!(1), "{job}");
    let c = control(&app, &admin, &target).await;
    assert_eq!(c["team"]["state"], json!("implemented"), "{c}");
    assert_eq!(c["team"]["override"]["justification"], json!("compensating control"));
    assert_ne!(c["team"]["derived_state"], json!("implemented"), "the derived state still says what the findings say");
    assert_eq!(score(&app, &admin, "ISO27001-2022").await["score"], json!(expected));

    // A completed scan that no longer reports the failing checks (an incomplete report) does not raise
    // the score: a check that disappears is not a pass.
    let (s, b) = app.api.delete(&admin, &path).await;
    assert_eq!(s, 200, "{b}");
    let before = score(&app, &admin, "ISO27001-2022").await["score"].as_f64().expect("score");
    let later = aws_scope(&team, &account, 2_000);
    let resolved = findings::resolve_unseen(&app.mongo, &later).await.expect("resolved");
    assert_eq!(resolved, 2, "the two failing checks");
    sync_and_wait(&app, &admin).await;
    let after = score(&app, &admin, "ISO27001-2022").await["score"].as_f64().expect("score");
    assert!(after <= before, "{before} → {after}");
    let c = control(&app, &admin, &target).await;
    assert_ne!(c["team"]["state"], json!("implemented"), "{c}");
}

#[tokio::test]
async fn one_sync_per_team_at_a_time_and_other_teams_see_their_own() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let viewer = user_token(&app.api, &app.mongo, "viewer@sync.test", &team, Role::Viewer).await;
    let (s, b) = app.api.post(&admin, "/api/compliance-engine/sync", json!({})).await;
    assert_problem(s, &b, 409, "no SCF catalog");
    let (s, b) = import(&app, &admin, yaml_import()).await;
    assert_eq!(s, 201, "{b}");
    ingest(&app, &aws_scope(&team, &AccountId::new(), 1_000)).await;

    let (s, b) = app.api.post(&viewer, "/api/compliance-engine/sync", json!({})).await;
    assert_problem(s, &b, 403, "manage_assessments");
    let (s, _) = app.api.get(&viewer, "/api/compliance-engine/status").await;
    assert_eq!(s, 200);

    // A sync in progress elsewhere (the scheduler's): a request gets its id, not a second sync.
    let SyncStart::Claimed(held) = sync::claim(&app.mongo, &team, SyncTrigger::Schedule, None).await.expect("claim")
    else {
        panic!("nothing was running")
    };
    let officer = user_token(&app.api, &app.mongo, "officer@sync.test", &team, Role::ComplianceOfficer).await;
    let (a, b) = tokio::join!(
        app.api.post(&officer, "/api/compliance-engine/sync", json!({})),
        app.api.post(&admin, "/api/compliance-engine/sync", json!({})),
    );
    for (s, body) in [a, b] {
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["job_id"], json!(held.job_id), "{body}");
        assert_eq!(body["existing"], json!(true));
    }
    let (_, status) = app.api.get(&viewer, "/api/compliance-engine/status").await;
    assert_eq!(status["active_sync"]["job_id"], json!(held.job_id), "{status}");
    let held_id = held.job_id.clone();
    sync::run(&app.mongo, held).await.expect("the held sync runs");
    let (_, j) = app.api.get(&viewer, &format!("/api/compliance-engine/sync/{held_id}")).await;
    assert_eq!(j["status"], json!("completed"), "{j}");
    assert_eq!(j["trigger"], json!("schedule"));

    // A sync whose process died (its lease lapsed) is failed with the reason and replaced.
    let SyncStart::Claimed(dead) = sync::claim(&app.mongo, &team, SyncTrigger::Manual, None).await.expect("claim")
    else {
        panic!("nothing was running")
    };
    app.mongo
        .compliance
        .sync_jobs
        .update_one(doc! { "_id": &dead.job_id }, doc! { "$set": { "lease_expires_at": 0_i64 } })
        .await
        .expect("lapse");
    let (s, b) = app.api.post(&admin, "/api/compliance-engine/sync", json!({})).await;
    assert_eq!(s, 202, "{b}");
    assert_ne!(b["job_id"], json!(dead.job_id));
    let (_, j) = app.api.get(&admin, &format!("/api/compliance-engine/sync/{}", dead.job_id)).await;
    assert_eq!(j["status"], json!("failed"), "{j}");
    assert!(j["error"].as_str().unwrap_or_default().contains("abandoned"), "{j}");
    let new_job = b["job_id"].as_str().expect("id").to_string();
    wait_until(std::time::Duration::from_secs(60), "the new sync", || async {
        let (_, j) = app.api.get(&admin, &format!("/api/compliance-engine/sync/{new_job}")).await;
        (j["status"] == json!("completed")).then_some(())
    })
    .await;
    // The dead sync's late end changes nothing.
    assert!(sync::run(&app.mongo, dead).await.is_ok());
    let (_, j) = app.api.get(&admin, &format!("/api/compliance-engine/sync/{new_job}")).await;
    assert_eq!(j["status"], json!("completed"));

    // Another team: its own (empty) states, its own scores, and this team's jobs are not found.
    let other_team = users::ensure_team(&app.mongo, "Other compliance team").await.expect("team");
    let other = user_token(&app.api, &app.mongo, "mgr@other.test", &other_team.id, Role::SecurityManager).await;
    let (s, b) = app.api.get(&other, &format!("/api/compliance-engine/sync/{new_job}")).await;
    assert_problem(s, &b, 404, "sync job");
    let mine = score(&app, &admin, "ISO27001-2022").await;
    let theirs = score(&app, &other, "iso_27001_2022").await;
    assert!(mine["with_evidence"].as_i64().unwrap_or(0) > 0, "{mine}");
    assert_eq!(theirs["with_evidence"], json!(0), "{theirs}");
    assert_eq!(theirs["score"], json!(0.0));
    let (_, st) = app.api.get(&other, "/api/compliance-engine/status").await;
    assert_eq!(st["last_sync"], Value::Null, "{st}");
    let (s, b) = app.api.get(&admin, "/api/cspm/findings/compliance-scores?framework=no-such-framework").await;
    assert_problem(s, &b, 404, "not in the catalog");

    // The scheduler's entry point: nothing is due right after a sync; a completed run makes the team due.
    let settings = cspm_shared::compliance::ComplianceSettings::default();
    let due = sync::sync_due_teams(&app.mongo, &settings).await.expect("due");
    assert!(due.iter().all(|d| d.team != team), "{due:?}");
    assert!(due.iter().any(|d| d.team == other_team.id && d.trigger == SyncTrigger::Schedule), "{due:?}");
    app.mongo
        .scan_runs
        .insert_one(doc! {
            "_id": RunId::new().to_string(), "team_id": &team, "status": "completed",
            "finished_at": Timestamp::now().millis() + 1_000,
        })
        .await
        .expect("a finished run");
    let due = sync::sync_due_teams(&app.mongo, &settings).await.expect("due");
    let mine = due.iter().find(|d| d.team == team).expect("the team is due after its run");
    assert_eq!(mine.trigger, SyncTrigger::RunCompleted);
    assert!(mine.ran.as_ref().is_some_and(|(_, r)| r.is_ok()), "{mine:?}");
}
