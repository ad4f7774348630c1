//! Three real scheduler processes on one Redis and one database: every fire of every schedule makes
//! exactly one run, also when one replica is frozen (SIGSTOP) across the fire time and thawed after.

use std::time::Duration;

use bson::doc;
use cspm_tests::{Fleet, Proc, wait_until, with};
use nix::sys::signal::{Signal, kill};
use serde_json::json;

#[tokio::test]
async fn three_scheduler_replicas_start_one_scan_per_fire() {
    let tick = [("CSPM_SCHEDULE_TICK_SECS", "1")];
    let fleet = Fleet::start(&tick).await;
    let env = with(fleet.env.clone(), &[("CSPM_SCHEDULER_BIND", "127.0.0.1:0"), ("CSPM_SCHEDULE_TICK_SECS", "1")]);
    let second = Proc::spawn("cspm-scheduler", "scheduler2", &env, &fleet.log_dir);
    let third = Proc::spawn("cspm-scheduler", "scheduler3", &env, &fleet.log_dir);
    let token = fleet.admin().await;

    let at = bson::DateTime::from_millis(
        cspm_shared::time::Timestamp::now().plus(Duration::from_secs(8)).millis() / 1000 * 1000,
    )
    .try_to_rfc3339_string()
    .expect("time");
    let mut ids = Vec::new();
    for i in 0..6 {
        let (s, b) = fleet
            .api
            .post(
                &token,
                "/api/schedules",
                json!({
                    "name": format!("once {i}"),
                    "target": { "kind": "native", "scan": "network-discovery", "request": { "target": "127.0.0.1", "ports": "9" } },
                    "trigger": { "type": "once", "at": at },
                }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["id"].as_str().expect("id").to_string());
    }
    // One replica freezes before the fire time and thaws after the others have fired.
    kill(third.pid(), Signal::SIGSTOP).expect("stop");
    wait_until(Duration::from_secs(60), "every schedule to start its scan", || async {
        let n = fleet.mongo.schedule_fires.count_documents(doc! { "status": "started" }).await.ok()?;
        (n >= 6).then_some(())
    })
    .await;
    kill(third.pid(), Signal::SIGCONT).expect("continue");
    // Give every replica several ticks to misbehave.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let runs = fleet.mongo.scan_runs.count_documents(doc! { "trigger": "schedule" }).await.expect("count");
    assert_eq!(runs, 6, "one run per fire");
    assert_eq!(fleet.mongo.schedule_fires.count_documents(doc! {}).await.expect("count"), 6);
    for id in &ids {
        let (s, b) = fleet.api.get(&token, &format!("/api/schedules/{id}")).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["status"], "completed", "{b}");
        assert_eq!(b["history"]["started"], 1, "{b}");
        assert_eq!(b["next_run_at"], serde_json::Value::Null, "{b}");
        let (_, h) = fleet.api.get(&token, &format!("/api/schedules/{id}/history")).await;
        assert_eq!(h["total"], 1, "{h}");
    }
    // Every replica took part in the work or at least ran; none crashed.
    for p in [&second, &third] {
        assert!(!p.log_text().contains("panicked"), "{}", p.log_text());
    }
}
