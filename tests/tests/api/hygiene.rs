//! Fleet hygiene the scheduler runs: retention in bounded batches (runs with everything that belongs to
//! them, artifacts in object storage included), stuck runs ended with the reason, and the queue
//! housekeeping apalis-redis does not do itself. Against the real Redis, Mongo-wire server and a local
//! artifact directory.

use std::time::Duration;

use bson::doc;
use cspm_shared::artifacts::{ArtifactSettings, ArtifactStore};
use cspm_shared::config::Env;
use cspm_shared::domain::native::NetworkScanType;
use cspm_shared::domain::scan::Tool;
use cspm_shared::ids::{RunId, TeamId};
use cspm_shared::orchestrate::{self, NativeScanRequest, RunLimits};
use cspm_shared::queue::{QueueKind, Queues, SubJobMessage};
use cspm_shared::redis;
use cspm_shared::retention::{self, RetentionSettings};
use cspm_shared::settings::CommonSettings;
use cspm_shared::store::subjobs::NativeSpec;
use cspm_shared::time::Timestamp;
use cspm_tests::{base_env, connect_mongo, mongodb_uri, redis_url, unique_prefix};
use futures::TryStreamExt;

use crate::artifact_store::{output_dir, owner};

const DAY: Duration = Duration::from_secs(86_400);

fn queues(prefix: &str) -> Queues {
    let env = Env::from_map(base_env(prefix, &redis_url(), &mongodb_uri()));
    Queues::new(CommonSettings::load(&env).queue).expect("queues")
}

/// A real native run (one SubJob on the native queue), as the API would start it.
async fn native_run(db: &cspm_shared::db::Mongo, q: &Queues, team: &TeamId) -> RunId {
    let env = Env::from_map(Vec::<(String, String)>::new());
    let req = NativeScanRequest {
        team: team.clone(),
        tool: Tool::Nmap,
        spec: NativeSpec {
            target: "127.0.0.1".into(),
            ports: None,
            scan_type: NetworkScanType::PortScan,
            web_profile: None,
            artifact: None,
            scanners: Vec::new(),
        },
        scan_type: "port_scan".into(),
        trigger: "api".into(),
        created_by: None,
        run_id: None,
        schedule_id: None,
    };
    orchestrate::start_native_scan(db, q, req, &RunLimits::load(&env)).await.expect("run").id
}

/// Moves a run's times (and its SubJobs' and record's) into the past, and ends it when `status` is given.
async fn age(db: &cspm_shared::db::Mongo, run: &RunId, by: Duration, status: Option<&str>) {
    let then = Timestamp::now().minus(by);
    let mut set = doc! { "created_at": then };
    if let Some(s) = status {
        set.insert("status", s);
        set.insert("finished_at", then);
    }
    db.scan_runs.update_one(doc! { "_id": run }, doc! { "$set": set }).await.expect("run");
    db.sub_jobs.update_many(doc! { "run_id": run }, doc! { "$set": { "created_at": then } }).await.expect("jobs");
}

fn settings(batch: i64) -> RetentionSettings {
    let mut s = RetentionSettings::load(&Env::from_map(Vec::<(String, String)>::new()));
    s.batch = batch;
    s.pause = Duration::from_millis(1);
    s
}

#[tokio::test]
async fn retention_removes_old_runs_with_their_artifacts_and_old_fixed_findings_in_batches() {
    let prefix = unique_prefix();
    let db = connect_mongo(&prefix).await;
    let q = queues(&prefix);
    let team = TeamId::new();
    let dir = tempfile::tempdir().expect("dir");
    let store = ArtifactStore::new(&ArtifactSettings::Local { dir: dir.path().to_path_buf() }).expect("store");

    // Five old finished runs (one with raw artifacts), one old run still active, one recent finished run.
    let mut old = Vec::new();
    for _ in 0..5 {
        let r = native_run(&db, &q, &team).await;
        age(&db, &r, 200 * DAY, Some("completed")).await;
        old.push(r);
    }
    let (out, _) = output_dir(4096);
    let uploaded = store.upload_dir(&db, &owner(&team, &old[0]), out.path()).await.expect("upload");
    assert_eq!(uploaded.len(), 2);
    let active = native_run(&db, &q, &team).await;
    age(&db, &active, 200 * DAY, None).await;
    let recent = native_run(&db, &q, &team).await;
    age(&db, &recent, 10 * DAY, Some("failed")).await;

    // Findings: fixed long ago (gone), open long ago (kept: still a problem), fixed recently (kept).
    let long_ago = Timestamp::now().minus(200 * DAY);
    let lately = Timestamp::now().minus(DAY);
    for (id, status, seen) in [
        ("f-old-resolved", "resolved", long_ago),
        ("f-old-passed", "passed", long_ago),
        ("f-old-open", "open", long_ago),
        ("f-new-resolved", "resolved", lately),
    ] {
        db.findings
            .insert_one(doc! { "_id": id, "team_id": &team, "status": status, "last_seen": seen, "dedup_key": id })
            .await
            .expect("finding");
    }
    for (id, status, seen) in [("o-old-resolved", "resolved", long_ago), ("o-old-accepted", "accepted_risk", long_ago)]
    {
        db.occurrences
            .insert_one(doc! { "_id": id, "team_id": &team, "status": status, "last_seen": seen })
            .await
            .expect("occ");
    }

    let report = retention::sweep(&db, &store, &settings(2), Timestamp::now()).await.expect("sweep");
    assert_eq!((report.runs, report.sub_jobs, report.artifacts), (5, 5, 2), "{report:?}");
    assert_eq!((report.findings, report.occurrences), (2, 1), "{report:?}");
    assert!(!report.incomplete, "{report:?}");
    for r in &old {
        assert!(db.scan_runs.find_one(doc! { "_id": r }).await.expect("db").is_none());
        assert_eq!(db.sub_jobs.count_documents(doc! { "run_id": r }).await.expect("db"), 0);
        assert_eq!(db.scan_results.count_documents(doc! { "scan_id": r }).await.expect("db"), 0);
    }
    assert_eq!(db.artifacts.count_documents(doc! {}).await.expect("db"), 0);
    let files: Vec<_> = walk(dir.path());
    assert!(files.is_empty(), "objects left in the store: {files:?}");
    for kept in [&active, &recent] {
        assert!(db.scan_runs.find_one(doc! { "_id": kept }).await.expect("db").is_some());
        assert_eq!(db.sub_jobs.count_documents(doc! { "run_id": kept }).await.expect("db"), 1);
    }
    let left: Vec<String> = db
        .findings
        .find(doc! {})
        .await
        .expect("db")
        .try_collect::<Vec<bson::Document>>()
        .await
        .expect("db")
        .into_iter()
        .filter_map(|d| d.get_str("_id").ok().map(String::from))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"f-old-open".to_string()) && left.contains(&"f-new-resolved".to_string()), "{left:?}");

    // A batch budget that runs out says so, and the next sweep finishes the work.
    for _ in 0..3 {
        let r = native_run(&db, &q, &team).await;
        age(&db, &r, 200 * DAY, Some("cancelled")).await;
    }
    let mut tight = settings(1);
    tight.max_batches = 2;
    let first = retention::sweep(&db, &store, &tight, Timestamp::now()).await.expect("sweep");
    assert_eq!(first.runs, 2);
    assert!(first.incomplete);
    let second = retention::sweep(&db, &store, &tight, Timestamp::now()).await.expect("sweep");
    assert_eq!(second.runs, 1);
    assert!(!second.incomplete, "{second:?}");
    assert_eq!(retention::sweep(&db, &store, &tight, Timestamp::now()).await.expect("sweep"), Default::default());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_run_that_stopped_moving_is_ended_with_the_reason_and_a_moving_one_is_not() {
    let prefix = unique_prefix();
    let db = connect_mongo(&prefix).await;
    let q = queues(&prefix);
    let team = TeamId::new();
    let stuck = native_run(&db, &q, &team).await;
    age(&db, &stuck, Duration::from_secs(5 * 3600), None).await;
    // Old too, but its SubJob started an hour ago: it is moving.
    let moving = native_run(&db, &q, &team).await;
    age(&db, &moving, Duration::from_secs(5 * 3600), None).await;
    db.sub_jobs
        .update_many(
            doc! { "run_id": &moving },
            doc! { "$set": { "status": "running", "started_at": Timestamp::now().minus(Duration::from_secs(3600)),
            "lease_expires_at": Timestamp::now().plus(Duration::from_secs(60)) } },
        )
        .await
        .expect("running");
    let young = native_run(&db, &q, &team).await;

    let ended =
        retention::end_stuck_runs(&db, Duration::from_secs(4 * 3600), Timestamp::now(), 100).await.expect("reap");
    assert_eq!(ended, vec![stuck.clone()]);
    let run = cspm_shared::store::runs::get_any(&db, &stuck).await.expect("db").expect("run");
    assert_eq!(run.status.as_str(), "failed");
    let job = db.sub_jobs.find_one(doc! { "run_id": &stuck }).await.expect("db").expect("job");
    assert_eq!(job.get_str("status").ok(), Some("failed"));
    assert!(job.get_str("error").unwrap_or_default().contains("no progress for 4 hours"), "{job}");
    let warnings = run.summary.map(|s| s.warnings).unwrap_or_default();
    assert!(warnings.iter().any(|w| w.contains("no progress")), "{warnings:?}");
    for other in [&moving, &young] {
        let r = cspm_shared::store::runs::get_any(&db, other).await.expect("db").expect("run");
        assert!(!r.status.is_terminal(), "{other} was ended");
    }
    // Ending it again does nothing.
    assert!(
        retention::end_stuck_runs(&db, Duration::from_secs(4 * 3600), Timestamp::now(), 100)
            .await
            .expect("reap")
            .is_empty()
    );
}

#[tokio::test]
async fn housekeeping_removes_finished_messages_and_trims_the_dead_letters() {
    let prefix = unique_prefix();
    let q = queues(&prefix);
    let cfg = q.apalis_config(QueueKind::Native);
    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    for i in 0..12u128 {
        let id = apalis_core::task::task_id::TaskId::from(ulid::Ulid::from_parts(1, 1000 + i));
        ids.push(id.to_string());
        msgs.push((id, SubJobMessage { subjob_id: Default::default(), run_id: Default::default() }));
    }
    q.push(QueueKind::Native, msgs).await.expect("push");
    let mut conn = q.connection();
    // Acknowledged as apalis-redis acknowledges: done (7) or dead (5), with their metadata.
    for (i, id) in ids.iter().enumerate() {
        let (set, status) = if i < 7 { (cfg.done_jobs_set(), "Done") } else { (cfg.dead_jobs_set(), "Killed") };
        let _: () = redis::pipe()
            .cmd("ZREM")
            .arg(cfg.scheduled_jobs_set())
            .arg(id)
            .cmd("LREM")
            .arg(cfg.active_jobs_list())
            .arg(0)
            .arg(id)
            .cmd("SADD")
            .arg(&set)
            .arg(id)
            .cmd("HSET")
            .arg(format!("{}:{id}", cfg.job_meta_hash()))
            .arg("status")
            .arg(status)
            .query_async(&mut conn)
            .await
            .expect("ack");
    }
    let data_before: u64 = redis::cmd("HLEN").arg(cfg.job_data_hash()).query_async(&mut conn).await.expect("hlen");
    assert_eq!(data_before, 12);
    // Three at a time, keeping two dead letters.
    let mut removed = (0, 0);
    for _ in 0..10 {
        let (done, dead) = q.housekeep(QueueKind::Native, 3, 2).await.expect("housekeep");
        removed = (removed.0 + done, removed.1 + dead);
        if done == 0 && dead == 0 {
            break;
        }
    }
    assert_eq!(removed, (7, 3));
    assert_eq!(q.finished_counts(QueueKind::Native).await.expect("counts"), (0, 2));
    let data_after: u64 = redis::cmd("HLEN").arg(cfg.job_data_hash()).query_async(&mut conn).await.expect("hlen");
    assert_eq!(data_after, 2, "only the kept dead letters keep their payload");
    let metas: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", cfg.job_meta_hash())).query_async(&mut conn).await.expect("keys");
    assert_eq!(metas.len(), 2, "{metas:?}");
}
