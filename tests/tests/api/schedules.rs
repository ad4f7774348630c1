//! Schedules: the API that defines them, and the engine that fires them, driven with controlled time
//! (the engine takes `now`; these tests choose it) against the real Redis and Mongo-wire servers.

use std::time::Duration;

use bson::doc;
use cspm_shared::domain::native::TargetPolicy;
use cspm_shared::domain::role::Role;
use cspm_shared::ids::{RunId, ScheduleId, TeamId};
use cspm_shared::orchestrate::RunLimits;
use cspm_shared::queue::Queues;
use cspm_shared::scheduling::{Engine, ScheduleSettings, TickReport};
use cspm_shared::settings::CommonSettings;
use cspm_shared::store::{runs, schedules};
use cspm_shared::time::Timestamp;
use cspm_tests::{TestApi, base_env, mongodb_uri, redis_url, user_token};
use serde_json::{Value, json};

use crate::assert_problem;

fn ts(raw: &str) -> Timestamp {
    Timestamp::from_millis(bson::DateTime::parse_rfc3339_str(raw).expect("rfc3339").timestamp_millis())
}

fn at(v: &Value) -> Timestamp {
    ts(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
}

/// An engine of one scheduler replica over the test's databases and queues.
fn engine(app: &TestApi, me: &str) -> Engine {
    let env = cspm_shared::config::Env::from_map(base_env(&app.prefix, &redis_url(), &mongodb_uri()));
    let queues = Queues::new(CommonSettings::load(&env).queue).expect("queues");
    let policy = TargetPolicy { allow_private: false, allow_loopback: true };
    let limits = RunLimits::load(&env);
    Engine::new(app.mongo.clone(), queues, limits, policy, ScheduleSettings::default(), me.to_string())
}

async fn create(app: &TestApi, token: &str, body: Value) -> Value {
    let (s, b) = app.api.post(token, "/api/schedules", body).await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn schedule(app: &TestApi, token: &str, id: &Value) -> Value {
    let (s, b) = app.api.get(token, &format!("/api/schedules/{}", id.as_str().expect("id"))).await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn fires(app: &TestApi, token: &str, id: &Value) -> Vec<Value> {
    let (s, b) = app.api.get(token, &format!("/api/schedules/{}/history", id.as_str().expect("id"))).await;
    assert_eq!(s, 200, "{b}");
    b["fires"].as_array().expect("fires").clone()
}

async fn scheduled_runs(app: &TestApi) -> u64 {
    app.mongo.scan_runs.count_documents(doc! { "trigger": "schedule" }).await.expect("count")
}

/// A nightly nmap schedule of loopback (the native target the test policy allows).
fn nightly_native(name: &str) -> Value {
    json!({
        "name": name,
        "target": { "kind": "native", "scan": "network-discovery", "request": { "target": "127.0.0.1", "ports": "9" } },
        "trigger": { "type": "cron", "expression": "0 2 * * *" },
    })
}

/// Marks a run ended with `status` at `when`, as the roll-up would.
async fn end_run(app: &TestApi, run: &str, status: &str, when: Timestamp) {
    app.mongo
        .scan_runs
        .update_one(doc! { "_id": run }, doc! { "$set": { "status": status, "finished_at": when } })
        .await
        .expect("run ended");
}

#[tokio::test]
async fn a_new_account_gets_the_daily_incremental_and_weekly_full_schedules() {
    let app = TestApi::spawn_with(&[("CSPM_AUTO_SCHEDULE_ON_ACCOUNT_ADD", "true")]).await;
    let token = app.admin().await;
    let account = app.api.aws_account(&token, "200000000001", &["eu-west-1"]).await;
    let (s, list) = app.api.get(&token, &format!("/api/schedules?account_id={account}")).await;
    assert_eq!(s, 200, "{list}");
    let items = list["schedules"].as_array().expect("schedules");
    assert_eq!(items.len(), 2, "{list}");
    let daily = items.iter().find(|i| i["name"] == "Daily Cloud Incremental Scan").expect("daily");
    let weekly = items.iter().find(|i| i["name"] == "Weekly Cloud Full Scan").expect("weekly");
    assert_eq!(daily["trigger"], json!({ "type": "cron", "expression": "0 2 * * *", "timezone": "UTC" }));
    assert_eq!(daily["target"]["scan_type"], "incremental");
    assert_eq!(daily["skip_if_scanned_within_hours"], 22);
    assert_eq!(weekly["trigger"]["expression"], "0 3 * * 0");
    assert_eq!(weekly["target"]["scan_type"], "full");
    assert_eq!(weekly["skip_if_scanned_within_hours"], 144);
    for s in [daily, weekly] {
        assert_eq!(s["status"], "active");
        assert_eq!(s["origin"], "account_default");
        let next = at(&s["next_run_at"]);
        assert!(next > Timestamp::now() && next <= Timestamp::now().plus(Duration::from_secs(7 * 86_400)), "{s}");
    }
    let daily_next = daily["next_run_at"].as_str().expect("next");
    assert!(daily_next.ends_with("T02:00:00Z"), "{daily_next}");
    let weekly_next = at(&weekly["next_run_at"]);
    let weekday = time::OffsetDateTime::from_unix_timestamp(weekly_next.millis() / 1000).expect("time").weekday();
    assert_eq!(weekday, time::Weekday::Sunday);

    // Made once however often asked (a retried creation).
    let id = account.parse().expect("account id");
    let team = app.admin_team().await;
    schedules::create_account_defaults(&app.mongo, &team, &id, None, Timestamp::now()).await.expect("again");
    assert_eq!(app.mongo.schedules.count_documents(doc! { "account_id": &account }).await.expect("count"), 2);

    // Removing the account removes its schedules.
    let (s, _) = app.api.delete(&token, &format!("/api/cloud-accounts/{account}")).await;
    assert_eq!(s, 204);
    assert_eq!(app.mongo.schedules.count_documents(doc! { "account_id": &account }).await.expect("count"), 0);

    // Turned off by the operator: none.
    let off = TestApi::spawn().await;
    let token = off.admin().await;
    let account = off.api.aws_account(&token, "200000000002", &[]).await;
    let (_, list) = off.api.get(&token, &format!("/api/schedules?account_id={account}")).await;
    assert_eq!(list["total"], 0, "{list}");
}

#[tokio::test]
async fn schedules_are_validated_team_scoped_and_need_manage_scans() {
    let app = TestApi::spawn().await;
    let admin = app.admin().await;
    let account = app.api.aws_account(&admin, "200000000003", &[]).await;
    let cloud = create(
        &app,
        &admin,
        json!({
            "name": "every six hours",
            "target": { "kind": "cloud_account", "account_id": account, "scan_type": "full", "regions": ["eu-west-1"] },
            "trigger": { "type": "interval", "hours": 6, "start_at": "2030-01-01T00:00:00Z" },
            "overlap": "queue",
        }),
    )
    .await;
    assert_eq!(cloud["next_run_at"], "2030-01-01T00:00:00Z", "{cloud}");
    assert_eq!(cloud["overlap"], "queue");
    assert_eq!(cloud["skip_if_scanned_within_hours"], 144);
    assert_eq!(cloud["history"]["started"], 0);

    let native = create(&app, &admin, nightly_native("nightly ports")).await;
    assert_eq!(
        native["target"],
        json!({
            "kind": "native", "tool": "nmap", "scan_type": "port_scan", "target": "127.0.0.1", "ports": "9", "scanners": [],
        })
    );
    assert_eq!(native["skip_if_scanned_within_hours"], Value::Null);

    for (body, status, needle) in [
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "cron", "expression": "0 2 * *" } }),
            422,
            "five",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "cron", "expression": "0 0 31 2 *" } }),
            422,
            "never fires",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "once", "at": "2020-01-01T00:00:00Z" } }),
            422,
            "past",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "interval", "hours": 0 } }),
            422,
            "interval hours",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": "acc_01ARZ3NDEKTSV4RRFFQ69G5FAV" }, "trigger": { "type": "cron", "expression": "@daily" } }),
            422,
            "no such cloud account",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account, "tools": ["nmap"] }, "trigger": { "type": "cron", "expression": "@daily" } }),
            422,
            "does not scan cloud",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "cron", "expression": "@daily" }, "overlap": "later" }),
            422,
            "overlap",
        ),
        (
            json!({ "name": "x", "target": { "kind": "native", "scan": "network-discovery", "request": { "target": "169.254.169.254" } }, "trigger": { "type": "cron", "expression": "@daily" } }),
            422,
            "target",
        ),
        (
            json!({ "name": "x", "target": { "kind": "native", "scan": "network-discovery", "request": { "target": "10.1.2.3" } }, "trigger": { "type": "cron", "expression": "@daily" } }),
            422,
            "target",
        ),
        (
            json!({ "name": "x", "target": { "kind": "native", "scan": "teleport", "request": {} }, "trigger": { "type": "cron", "expression": "@daily" } }),
            422,
            "not a native scan",
        ),
        (
            json!({ "name": "x", "target": { "kind": "native", "scan": "network-discovery", "request": { "target": "127.0.0.1" } }, "trigger": { "type": "cron", "expression": "@daily" }, "skip_if_scanned_within_hours": 5 }),
            422,
            "cloud-account schedules only",
        ),
        (
            json!({ "name": "", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "cron", "expression": "@daily" } }),
            422,
            "name",
        ),
        (
            json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "hourly" } }),
            422,
            "invalid request body",
        ),
    ] {
        let (s, b) = app.api.post(&admin, "/api/schedules", body.clone()).await;
        assert_problem(s, &b, status, needle);
    }

    // Roles: every role reads, only admin and security managers define.
    let team = app.admin_team().await;
    let viewer = user_token(&app.api, &app.mongo, "viewer@sched.test", &team, Role::Viewer).await;
    let analyst = user_token(&app.api, &app.mongo, "analyst@sched.test", &team, Role::SecurityAnalyst).await;
    let manager = user_token(&app.api, &app.mongo, "manager@sched.test", &team, Role::SecurityManager).await;
    let id = cloud["id"].as_str().expect("id");
    assert_eq!(app.api.get(&viewer, &format!("/api/schedules/{id}")).await.0, 200);
    assert_eq!(app.api.get(&viewer, "/api/schedules").await.1["total"], 2);
    let (s, b) = app.api.post(&analyst, "/api/schedules", nightly_native("no")).await;
    assert_problem(s, &b, 403, "manage_scans");
    let (s, b) = app.api.post(&viewer, &format!("/api/schedules/{id}/pause"), json!({})).await;
    assert_problem(s, &b, 403, "manage_scans");
    assert_eq!(app.api.post(&manager, "/api/schedules", nightly_native("yes")).await.0, 201);

    // Pause, resume, edit.
    let (s, b) =
        app.api.post(&manager, &format!("/api/schedules/{id}/pause"), json!({ "reason": "change freeze" })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "paused");
    assert_eq!(b["paused_reason"], "change freeze");
    assert_eq!(b["auto_paused"], false);
    let (s, b) = app.api.post(&manager, &format!("/api/schedules/{id}/pause"), json!({})).await;
    assert_problem(s, &b, 409, "not active");
    let (s, b) = app.api.post(&manager, &format!("/api/schedules/{id}/resume"), json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "active");
    assert_eq!(b["paused_reason"], Value::Null);
    let (s, b) = app
        .api
        .put(
            &manager,
            &format!("/api/schedules/{id}"),
            json!({ "trigger": { "type": "cron", "expression": "30 4 * * MON" }, "overlap": "cancel_previous" }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["overlap"], "cancel_previous");
    assert!(b["next_run_at"].as_str().expect("next").ends_with("T04:30:00Z"), "{b}");
    let (s, b) = app.api.put(&manager, &format!("/api/schedules/{id}"), json!({ "overlap": "sometimes" })).await;
    assert_problem(s, &b, 422, "overlap");

    // Another team sees none of it: 404 on every object route.
    let other_team = cspm_shared::store::users::ensure_team(&app.mongo, "Other").await.expect("team").id;
    let other = user_token(&app.api, &app.mongo, "other@sched.test", &other_team, Role::Admin).await;
    assert_eq!(app.api.get(&other, "/api/schedules").await.1["total"], 0);
    for (method, path) in [
        ("GET", format!("/api/schedules/{id}")),
        ("PUT", format!("/api/schedules/{id}")),
        ("DELETE", format!("/api/schedules/{id}")),
        ("POST", format!("/api/schedules/{id}/pause")),
        ("POST", format!("/api/schedules/{id}/resume")),
        ("GET", format!("/api/schedules/{id}/history")),
        ("GET", "/api/schedules/sched_nonsense".to_string()),
    ] {
        let (s, b) = match method {
            "GET" => app.api.get(&other, &path).await,
            "PUT" => app.api.put(&other, &path, json!({ "name": "mine" })).await,
            "DELETE" => app.api.delete(&other, &path).await,
            _ => app.api.post(&other, &path, json!({})).await,
        };
        assert_problem(s, &b, 404, "schedule");
    }
    // Nor can it point a schedule at this team's account.
    let (s, b) = app
        .api
        .post(&other, "/api/schedules", json!({ "name": "x", "target": { "kind": "cloud_account", "account_id": account }, "trigger": { "type": "cron", "expression": "@daily" } }))
        .await;
    assert_problem(s, &b, 422, "no such cloud account");

    assert_eq!(app.api.delete(&manager, &format!("/api/schedules/{id}")).await.0, 204);
    assert_eq!(app.api.get(&manager, &format!("/api/schedules/{id}")).await.0, 404);
}

#[tokio::test]
async fn three_replicas_fire_each_due_schedule_exactly_once_and_a_stale_one_takes_nothing() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(create(&app, &token, nightly_native(&format!("nightly {i}"))).await["id"].clone());
    }
    let first = at(&schedule(&app, &token, &ids[0]).await["next_run_at"]);
    let due_now = first.plus(Duration::from_secs(2));
    // A replica reads the due schedules, then stalls (GC pause, SIGSTOP) past everything below.
    let stale = engine(&app, "replica-stale");
    let snapshot = schedules::due(&app.mongo, due_now, 100).await.expect("due");
    assert_eq!(snapshot.len(), 8);

    let (a, b, c) = (engine(&app, "replica-a"), engine(&app, "replica-b"), engine(&app, "replica-c"));
    let (ra, rb, rc) = tokio::join!(a.tick(due_now), b.tick(due_now), c.tick(due_now));
    let reports: Vec<TickReport> = vec![ra.expect("a"), rb.expect("b"), rc.expect("c")];
    assert_eq!(reports.iter().map(|r| r.fired).sum::<u64>(), 8, "{reports:?}");
    assert_eq!(scheduled_runs(&app).await, 8);
    for id in &ids {
        let f = fires(&app, &token, id).await;
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0]["status"], "started", "{f:?}");
        let s = schedule(&app, &token, id).await;
        assert_eq!(s["history"]["started"], 1, "{s}");
        assert_eq!(at(&s["next_run_at"]), first.plus(Duration::from_secs(86_400)));
        assert_eq!(s["last_run_id"], f[0]["run_id"]);
        let run: RunId = s["last_run_id"].as_str().expect("run").parse().expect("run id");
        let doc = runs::get_any(&app.mongo, &run).await.expect("db").expect("run exists");
        assert_eq!(doc.trigger, "schedule");
        assert_eq!(doc.schedule_id.as_ref().map(ScheduleId::to_string), id.as_str().map(String::from));
    }

    // The stale replica wakes up with its old view, later: nothing is fired or started twice.
    let mut r = TickReport::default();
    let later = due_now.plus(Duration::from_secs(90));
    stale.take_from(snapshot, later, &mut r).await.expect("stale take");
    stale.handle_fires(later, &mut r).await.expect("stale handle");
    assert_eq!((r.fired, r.started), (0, 0), "{r:?}");
    // And fires whose handler "died" mid-way (lease expired) are finished by another replica only once.
    let again = a.tick(later).await.expect("tick");
    assert_eq!(again, TickReport::default(), "nothing left to do");
    assert_eq!(scheduled_runs(&app).await, 8);
    assert_eq!(app.mongo.schedule_fires.count_documents(doc! {}).await.expect("count"), 8);
}

#[tokio::test]
async fn after_downtime_a_schedule_catches_up_once_and_counts_what_it_missed() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let daily = create(&app, &token, nightly_native("nightly")).await;
    let weekly = create(
        &app,
        &token,
        json!({
            "name": "weekly",
            "target": { "kind": "native", "scan": "network-discovery", "request": { "target": "127.0.0.1", "ports": "9" } },
            "trigger": { "type": "cron", "expression": "0 3 * * 0" },
        }),
    )
    .await;
    let first = at(&daily["next_run_at"]);
    // Down for three days and five hours: the daily one runs once, for the latest fire time; the weekly
    // one's only passed time is older than the catch-up window... if it passed at all.
    let now = first.plus(Duration::from_secs(3 * 86_400 + 5 * 3600));
    let e = engine(&app, "replica");
    let r = e.tick(now).await.expect("tick");
    let f = fires(&app, &token, &daily["id"]).await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(at(&f[0]["fire_at"]), first.plus(Duration::from_secs(3 * 86_400)));
    assert_eq!(f[0]["missed_before"], 3);
    let d = schedule(&app, &token, &daily["id"]).await;
    assert_eq!(d["history"]["missed"], 3, "{d}");
    assert_eq!(d["history"]["started"], 1, "{d}");
    assert_eq!(at(&d["next_run_at"]), first.plus(Duration::from_secs(4 * 86_400)));

    let w = schedule(&app, &token, &weekly["id"]).await;
    let weekly_first = at(&weekly["next_run_at"]);
    if weekly_first <= now {
        // Its time passed during the downtime: caught up if within 24 h of now, counted as missed otherwise.
        let wf = fires(&app, &token, &weekly["id"]).await;
        if now.since(weekly_first) <= Duration::from_secs(86_400) {
            assert_eq!(wf.len(), 1, "{wf:?}");
        } else {
            assert!(wf.is_empty(), "{wf:?}");
            assert_eq!(w["history"]["missed"], 1, "{w}");
        }
        assert!(at(&w["next_run_at"]) > now, "{w}");
    } else {
        assert!(fires(&app, &token, &weekly["id"]).await.is_empty());
    }
    assert!(r.fired >= 1, "{r:?}");
    // Ticking again at the same time does nothing more.
    assert_eq!(e.tick(now).await.expect("tick").fired, 0);
}

/// A canary-tool schedule of an account (the canary tool starts no scanner).
fn account_schedule(account: &str, scan_type: &str, overlap: &str) -> Value {
    json!({
        "name": format!("{scan_type} {overlap}"),
        "target": { "kind": "cloud_account", "account_id": account, "scan_type": scan_type, "regions": ["eu-west-1"], "tools": ["canary"] },
        // First fire a minute from now, so that "now" in the test and in the database agree.
        "trigger": { "type": "interval", "hours": 24, "start_at": Timestamp::now().plus(Duration::from_secs(60)).to_rfc3339() },
        "overlap": overlap,
    })
}

#[tokio::test]
async fn the_skip_window_and_the_overlap_policies_decide_each_fire() {
    let app = TestApi::spawn().await;
    let token = app.admin().await;
    let team: TeamId = app.admin_team().await;
    let e = engine(&app, "replica");

    // Scanned (incremental) ten hours ago: a scheduled incremental is skipped, a scheduled full is not.
    let account = app.api.aws_account(&token, "200000000010", &[]).await;
    let mut recent =
        runs::RunDoc::queued(RunId::new(), team.clone(), runs::RunKind::Cloud, "incremental", "manual", None);
    recent.account_id = Some(account.parse().expect("id"));
    recent.status = cspm_shared::domain::scan::RunStatus::Completed;
    recent.finished_at = Some(Timestamp::now().minus(Duration::from_secs(10 * 3600)));
    runs::insert(&app.mongo, &recent).await.expect("run");
    let inc = create(&app, &token, account_schedule(&account, "incremental", "skip")).await;
    let due = at(&inc["next_run_at"]).plus(Duration::from_secs(1));
    e.tick(due).await.expect("tick");
    let f = fires(&app, &token, &inc["id"]).await;
    assert_eq!(f[0]["status"], "skipped", "{f:?}");
    let why = f[0]["reason"].as_str().expect("reason");
    assert!(why.contains("skip window") && why.contains(recent.id.as_str()), "{why}");
    assert_eq!(schedule(&app, &token, &inc["id"]).await["history"]["skipped"], 1);
    let full = create(&app, &token, account_schedule(&account, "full", "skip")).await;
    e.tick(at(&full["next_run_at"]).plus(Duration::from_secs(1))).await.expect("tick");
    let f = fires(&app, &token, &full["id"]).await;
    assert_eq!(f[0]["status"], "started", "{f:?}");
    let scheduled = f[0]["run_id"].as_str().expect("run").to_string();

    // Its scan is active now. skip: skipped, naming it.
    let skip = create(&app, &token, account_schedule(&account, "quick", "skip")).await;
    let t = at(&skip["next_run_at"]).plus(Duration::from_secs(1));
    e.tick(t).await.expect("tick");
    let f = fires(&app, &token, &skip["id"]).await;
    assert_eq!(f[0]["status"], "skipped");
    assert!(f[0]["reason"].as_str().expect("reason").contains(&scheduled), "{f:?}");

    // queue: waits, and starts once the previous scan ended.
    let queue = create(&app, &token, account_schedule(&account, "quick", "queue")).await;
    let t = at(&queue["next_run_at"]).plus(Duration::from_secs(1));
    e.tick(t).await.expect("tick");
    let f = fires(&app, &token, &queue["id"]).await;
    assert_eq!(f[0]["status"], "waiting", "{f:?}");
    e.tick(t.plus(Duration::from_secs(10))).await.expect("tick");
    assert_eq!(fires(&app, &token, &queue["id"]).await[0]["status"], "waiting");
    let (s, b) = app.api.delete(&token, &format!("/api/cloud-scans/{scheduled}")).await;
    assert_eq!(s, 200, "{b}");
    let ended = app.api.get(&token, &format!("/api/cloud-scans/{scheduled}/status")).await.1;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    e.tick(t.plus(Duration::from_secs(20))).await.expect("tick");
    let f = fires(&app, &token, &queue["id"]).await;
    assert_eq!(f[0]["status"], "started", "{f:?}");
    let queued_run = f[0]["run_id"].as_str().expect("run").to_string();
    // The full schedule's fire saw its scan cancelled.
    let f = fires(&app, &token, &full["id"]).await;
    assert_eq!(f[0]["status"], "cancelled", "{f:?}");
    assert_eq!(schedule(&app, &token, &full["id"]).await["history"]["cancelled"], 1);

    // cancel_previous: the running scan is cancelled, then the fire starts.
    let cancel = create(&app, &token, account_schedule(&account, "quick", "cancel_previous")).await;
    let t = at(&cancel["next_run_at"]).plus(Duration::from_secs(1));
    e.tick(t).await.expect("tick");
    let prev = app.api.get(&token, &format!("/api/cloud-scans/{queued_run}/status")).await.1;
    assert_eq!(prev["status"], "cancelled", "{prev}");
    e.tick(t.plus(Duration::from_secs(10))).await.expect("tick");
    let f = fires(&app, &token, &cancel["id"]).await;
    assert_eq!(f[0]["status"], "started", "{f:?}");
}

#[tokio::test]
async fn three_scheduled_failures_in_a_row_pause_the_account_and_a_manual_success_resumes_it() {
    let app = TestApi::spawn_with(&[("CSPM_AUTO_SCHEDULE_ON_ACCOUNT_ADD", "true")]).await;
    let token = app.admin().await;
    let e = engine(&app, "replica");
    let account = app.api.aws_account(&token, "200000000020", &[]).await;
    let mut body = account_schedule(&account, "quick", "skip");
    body["trigger"] = json!({ "type": "interval", "hours": 1 });
    let hourly = create(&app, &token, body).await;
    let mut t = at(&hourly["next_run_at"]).plus(Duration::from_secs(1));
    let mut last = String::new();
    for i in 0..3 {
        e.tick(t).await.expect("tick");
        let f = fires(&app, &token, &hourly["id"]).await;
        assert_eq!(f[0]["status"], "started", "fire {i}: {f:?}");
        last = f[0]["run_id"].as_str().expect("run").to_string();
        end_run(&app, &last, "failed", Timestamp::now().plus(Duration::from_millis(i))).await;
        let r = e.tick(t.plus(Duration::from_secs(5))).await.expect("tick");
        assert_eq!(r.finished, 1, "{r:?}");
        t = t.plus(Duration::from_secs(3600));
    }
    let s = schedule(&app, &token, &hourly["id"]).await;
    assert_eq!(s["history"]["failed"], 3, "{s}");
    assert_eq!(s["status"], "paused", "{s}");
    assert_eq!(s["auto_paused"], true);
    assert!(s["paused_reason"].as_str().expect("reason").contains("3 scheduled scans in a row failed"), "{s}");
    // Every schedule of the account paused, the account says so, and nothing fires while paused.
    let (_, list) = app.api.get(&token, &format!("/api/schedules?account_id={account}")).await;
    assert!(list["schedules"].as_array().expect("list").iter().all(|s| s["status"] == "paused"), "{list}");
    let acc = app.api.get(&token, &format!("/api/cloud-accounts/{account}")).await.1;
    assert_eq!(acc["schedules_paused"], true, "{acc}");
    assert_eq!(e.tick(t.plus(Duration::from_secs(7 * 86_400))).await.expect("tick").fired, 0);

    // A successful manual scan resumes them.
    let team = app.admin_team().await;
    let mut manual = runs::RunDoc::queued(RunId::new(), team, runs::RunKind::Cloud, "quick", "manual", None);
    manual.account_id = Some(account.parse().expect("id"));
    manual.status = cspm_shared::domain::scan::RunStatus::Completed;
    // Controlled time runs ahead of the clock here: the manual scan ends after the pause, in its terms.
    manual.finished_at = Some(t);
    runs::insert(&app.mongo, &manual).await.expect("run");
    let r = e.tick(t).await.expect("tick");
    assert_eq!(r.accounts_resumed, 1, "{r:?}");
    let s = schedule(&app, &token, &hourly["id"]).await;
    assert_eq!(s["status"], "active", "{s}");
    assert!(at(&s["next_run_at"]) > Timestamp::now(), "{s}");
    let acc = app.api.get(&token, &format!("/api/cloud-accounts/{account}")).await.1;
    assert_eq!(acc["schedules_paused"], false, "{acc}");

    // One more failure does not pause again: the streak starts afresh after a resume.
    let t = at(&s["next_run_at"]).plus(Duration::from_secs(1));
    e.tick(t).await.expect("tick");
    let f = fires(&app, &token, &hourly["id"]).await;
    assert_eq!(f[0]["status"], "started", "{f:?}");
    end_run(&app, f[0]["run_id"].as_str().expect("run"), "failed", Timestamp::now().plus(Duration::from_secs(2))).await;
    e.tick(t.plus(Duration::from_secs(5))).await.expect("tick");
    assert_eq!(schedule(&app, &token, &hourly["id"]).await["status"], "active");
    assert_ne!(last, "");

    // New credentials resume an automatic pause too.
    schedules::auto_pause_account(&app.mongo, &account.parse().expect("id"), "test pause", Timestamp::now())
        .await
        .expect("pause");
    assert_eq!(schedule(&app, &token, &hourly["id"]).await["status"], "paused");
    let (s, b) = app
        .api
        .put(
            &token,
            &format!("/api/cloud-accounts/{account}"),
            json!({ "credentials": { "access_key_id": "AKIAZZZZZZZZZZZZZZZZ", "secret_access_key": "x".repeat(40) } }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["schedules_paused"], false, "{b}");
    assert_eq!(schedule(&app, &token, &hourly["id"]).await["status"], "active");
}
