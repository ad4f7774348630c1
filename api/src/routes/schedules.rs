//! Schedules: `GET/POST /api/schedules`, `GET/PUT/DELETE /api/schedules/{id}`,
//! `POST /api/schedules/{id}/pause|resume`, `GET /api/schedules/{id}/history`. The scheduler fires them
//! (`cspm_shared::scheduling`); this is where teams define them. Reading needs `view_scans`; defining,
//! pausing and deleting need `manage_scans` (a schedule is a standing order to scan).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cspm_shared::domain::provider::validate_region;
use cspm_shared::domain::scan::{ScanType, ToolId};
use cspm_shared::domain::schedule::{OverlapPolicy, Trigger, default_skip_window};
use cspm_shared::ids::{AccountId, RunId, ScheduleId};
use cspm_shared::store::accounts;
use cspm_shared::store::schedules::{
    self, FireDoc, ScheduleDoc, ScheduleFilter, ScheduleStatus, ScheduleTarget, new_schedule,
};
use cspm_shared::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, native, rfc3339, rfc3339_opt};
use crate::state::AppState;

/// When, as the API takes it: times are RFC 3339.
#[derive(Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerBody {
    Cron {
        expression: String,
    },
    Interval {
        hours: u32,
        /// The first fire (default: an interval from now).
        #[serde(default)]
        #[schemars(extend("format" = "date-time"))]
        start_at: Option<String>,
    },
    Once {
        #[schemars(extend("format" = "date-time"))]
        at: String,
    },
}

/// What, as the API takes it.
#[derive(Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetBody {
    CloudAccount {
        account_id: String,
        #[serde(default)]
        scan_type: Option<String>,
        #[serde(default)]
        regions: Option<Vec<String>>,
        #[serde(default)]
        tools: Option<Vec<String>>,
    },
    /// One of the native scan endpoints (`scan`: its last path segment) with the body it takes.
    Native { scan: String, request: Value },
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schemars(length(min = 1, max = 200), regex(pattern = r"\S"))]
    name: String,
    #[serde(default)]
    description: Option<String>,
    target: TargetBody,
    trigger: TriggerBody,
    #[serde(default)]
    overlap: Option<String>,
    /// Skip a fire when the account had a qualifying scan this recently (0: never skip). Default: 22 for
    /// incremental scans, 144 for full ones, none otherwise.
    #[serde(default)]
    skip_if_scanned_within_hours: Option<u32>,
    /// Create it paused.
    #[serde(default)]
    paused: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"\S"))]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    target: Option<TargetBody>,
    #[serde(default)]
    trigger: Option<TriggerBody>,
    #[serde(default)]
    overlap: Option<String>,
    #[serde(default)]
    skip_if_scanned_within_hours: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct ListQuery {
    account_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
pub struct PageQuery {
    limit: Option<i64>,
    skip: Option<u64>,
}

fn time_field(field: &str, raw: &str) -> ApiResult<Timestamp> {
    bson::DateTime::parse_rfc3339_str(raw)
        .map(|d| Timestamp::from_millis(d.timestamp_millis()))
        .map_err(|_| ApiError::invalid(field, format!("`{raw}` is not an RFC 3339 time (2026-12-24T02:00:00Z)")))
}

fn trigger(body: TriggerBody, now: Timestamp) -> ApiResult<Trigger> {
    let t = match body {
        TriggerBody::Cron { expression } => Trigger::Cron { expression: expression.trim().to_string() },
        TriggerBody::Interval { hours, start_at } => {
            let anchor = match start_at {
                Some(raw) => time_field("trigger.start_at", &raw)?,
                None => now.plus(std::time::Duration::from_secs(u64::from(hours) * 3600)),
            };
            Trigger::Interval { hours, anchor }
        }
        TriggerBody::Once { at } => {
            let at = time_field("trigger.at", &at)?;
            if at <= now {
                return Err(ApiError::invalid("trigger.at", "is in the past"));
            }
            Trigger::Once { at }
        }
    };
    t.validate().map_err(|e| ApiError::invalid("trigger", e))?;
    Ok(t)
}

async fn target(s: &AppState, caller: &Caller, body: TargetBody) -> ApiResult<ScheduleTarget> {
    match body {
        TargetBody::CloudAccount { account_id, scan_type, regions, tools } => {
            // Another team's account is no account at all.
            let no_account = || ApiError::invalid("target.account_id", "no such cloud account");
            let id: AccountId = account_id.parse().map_err(|_| no_account())?;
            accounts::get(&s.mongo, &caller.team, &id).await?.ok_or_else(no_account)?;
            let scan_type: ScanType = match scan_type {
                None => ScanType::Incremental,
                Some(t) => t.parse().map_err(|e: String| ApiError::invalid("target.scan_type", e))?,
            };
            let regions = regions
                .unwrap_or_default()
                .iter()
                .map(|r| validate_region(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::invalid("target.regions", e))?;
            let tools = tools.unwrap_or_default();
            for t in &tools {
                let tool: ToolId = t.parse().map_err(|e: String| ApiError::invalid("target.tools", e))?;
                if !tool.tool.scans_cloud() {
                    return Err(ApiError::invalid("target.tools", format!("`{t}` does not scan cloud accounts")));
                }
            }
            Ok(ScheduleTarget::CloudAccount { account_id: id, scan_type, regions, tools })
        }
        TargetBody::Native { scan, request } => {
            let plan = native::plan(s, &scan, request).await?;
            Ok(ScheduleTarget::Native { tool: plan.tool, scan_type: plan.scan_type, spec: plan.spec })
        }
    }
}

fn overlap(raw: Option<String>) -> ApiResult<Option<OverlapPolicy>> {
    raw.map(|o| o.parse().map_err(|e: String| ApiError::invalid("overlap", e))).transpose()
}

fn name(raw: &str) -> ApiResult<String> {
    let n = raw.trim();
    if n.is_empty() || n.chars().count() > 200 {
        return Err(ApiError::invalid("name", "must be 1-200 characters"));
    }
    Ok(n.to_string())
}

fn description(raw: Option<String>) -> ApiResult<Option<String>> {
    match raw {
        Some(d) if d.chars().count() > 2000 => Err(ApiError::invalid("description", "at most 2000 characters")),
        other => Ok(other),
    }
}

fn skip_window(target: &ScheduleTarget, hours: Option<u32>) -> ApiResult<Option<i64>> {
    match (target, hours) {
        (_, Some(h)) if h > 24 * 366 => Err(ApiError::invalid("skip_if_scanned_within_hours", "at most 8784")),
        (ScheduleTarget::Native { .. }, Some(h)) if h > 0 => {
            Err(ApiError::invalid("skip_if_scanned_within_hours", "applies to cloud-account schedules only"))
        }
        (_, Some(0)) => Ok(None),
        (_, Some(h)) => Ok(Some(i64::from(h) * 3600)),
        (ScheduleTarget::CloudAccount { scan_type, .. }, None) => {
            Ok(default_skip_window(*scan_type).map(|d| d.as_secs() as i64))
        }
        (ScheduleTarget::Native { .. }, None) => Ok(None),
    }
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    let now = Timestamp::now();
    let name = name(&body.name)?;
    let description = description(body.description)?;
    let trigger = trigger(body.trigger, now)?;
    let overlap = overlap(body.overlap)?.unwrap_or_default();
    let target = target(&s, &caller, body.target).await?;
    let skip = skip_window(&target, body.skip_if_scanned_within_hours)?;
    let mut doc = new_schedule(
        ScheduleId::new(),
        caller.team.clone(),
        name,
        target,
        trigger,
        overlap,
        "user",
        Some(caller.user.clone()),
        now,
    );
    doc.description = description;
    doc.skip_if_scanned_within_secs = skip;
    if body.paused {
        doc.status = ScheduleStatus::Paused;
        doc.paused_at = Some(now);
        doc.paused_reason = Some("created paused".into());
    }
    schedules::insert(&s.mongo, &doc).await?;
    tracing::info!(schedule.id = %doc.id, trigger = doc.trigger.kind(), "schedule created");
    Ok((StatusCode::CREATED, Json(view(&doc))))
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<ScheduleList>> {
    let (skip, limit) = page(q.skip, q.limit, 50, 200)?;
    let mut filter = ScheduleFilter::default();
    if let Some(a) = q.account_id {
        filter.account_id = Some(a.parse().map_err(|_| ApiError::invalid("account_id", "not a cloud account id"))?);
    }
    if let Some(st) = q.status {
        filter.status = Some(match st.as_str() {
            "active" => ScheduleStatus::Active,
            "paused" => ScheduleStatus::Paused,
            "completed" => ScheduleStatus::Completed,
            "expired" => ScheduleStatus::Expired,
            other => {
                return Err(ApiError::invalid(
                    "status",
                    format!("`{other}` is not a schedule status (active, paused, completed, expired)"),
                ));
            }
        });
    }
    let (rows, total) = schedules::list(&s.mongo, &caller.team, &filter, skip, limit).await?;
    let schedules: Vec<ScheduleView> = rows.iter().map(view).collect();
    Ok(Json(ScheduleList { schedules, total, limit, skip }))
}

async fn load(s: &AppState, caller: &Caller, id: &str) -> ApiResult<ScheduleDoc> {
    let id: ScheduleId = path_id(id, "schedule")?;
    schedules::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("schedule"))
}

pub async fn get(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(view(&load(&s, &caller, &id).await?)))
}

pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Json<ScheduleView>> {
    let mut doc = load(&s, &caller, &id).await?;
    let now = Timestamp::now();
    if let Some(n) = &body.name {
        doc.name = name(n)?;
    }
    if body.description.is_some() {
        doc.description = description(body.description)?;
    }
    if let Some(t) = body.trigger {
        doc.trigger = trigger(t, now)?;
    }
    if let Some(o) = overlap(body.overlap)? {
        doc.overlap = o;
    }
    let target_changed = body.target.is_some();
    if let Some(t) = body.target {
        doc.target = target(&s, &caller, t).await?;
        doc.account_id = doc.target.account_id().cloned();
    }
    if target_changed || body.skip_if_scanned_within_hours.is_some() {
        doc.skip_if_scanned_within_secs = skip_window(&doc.target, body.skip_if_scanned_within_hours)?;
    }
    let updated =
        schedules::replace_definition(&s.mongo, &doc, now).await?.ok_or_else(|| ApiError::not_found("schedule"))?;
    Ok(Json(view(&updated)))
}

pub async fn delete(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: ScheduleId = path_id(&id, "schedule")?;
    if !schedules::delete(&s.mongo, &caller.team, &id).await? {
        return Err(ApiError::not_found("schedule"));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ScheduleView>> {
    let id: ScheduleId = path_id(&id, "schedule")?;
    // The body is optional: `{"reason": "..."}` or nothing.
    let body: Option<PauseBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?)
    };
    let reason = match body.and_then(|b| b.reason) {
        Some(r) if r.chars().count() > 500 => return Err(ApiError::invalid("reason", "at most 500 characters")),
        Some(r) => r,
        None => format!("paused by {}", caller.user),
    };
    match schedules::pause(&s.mongo, &caller.team, &id, &reason, Timestamp::now()).await? {
        None => return Err(ApiError::not_found("schedule")),
        Some(false) => return Err(ApiError::Conflict("the schedule is not active".into())),
        Some(true) => {}
    }
    let doc = schedules::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("schedule"))?;
    Ok(Json(view(&doc)))
}

pub async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let id: ScheduleId = path_id(&id, "schedule")?;
    match schedules::resume(&s.mongo, &caller.team, &id, Timestamp::now()).await? {
        None => return Err(ApiError::not_found("schedule")),
        Some(false) => return Err(ApiError::Conflict("the schedule is not paused".into())),
        Some(true) => {}
    }
    let doc = schedules::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("schedule"))?;
    Ok(Json(view(&doc)))
}

pub async fn history(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<FireList>> {
    let doc = load(&s, &caller, &id).await?;
    let (skip, limit) = page(q.skip, q.limit, 50, 200)?;
    let (fires, total) = schedules::history(&s.mongo, &caller.team, &doc.id, skip, limit).await?;
    let fires: Vec<FireView> = fires.iter().map(fire_view).collect();
    Ok(Json(FireList { schedule_id: doc.id, fires, total, limit, skip }))
}

/// A page of schedules.
#[derive(Serialize, JsonSchema)]
pub struct ScheduleList {
    schedules: Vec<ScheduleView>,
    total: u64,
    limit: i64,
    skip: u64,
}

/// A page of a schedule's fires, newest first.
#[derive(Serialize, JsonSchema)]
pub struct FireList {
    schedule_id: ScheduleId,
    fires: Vec<FireView>,
    total: u64,
    limit: i64,
    skip: u64,
}

/// When a schedule fires (times in UTC).
#[derive(Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerView {
    Cron { expression: String, timezone: &'static str },
    Interval { hours: u32, start_at: Time },
    Once { at: Time },
}

/// What a schedule scans.
#[derive(Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetView {
    CloudAccount { account_id: AccountId, scan_type: &'static str, regions: Vec<String>, tools: Vec<String> },
    Native { tool: &'static str, scan_type: String, target: String, ports: Option<String>, scanners: Vec<String> },
}

/// A schedule as the API shows it.
#[derive(Serialize, JsonSchema)]
pub struct ScheduleView {
    id: ScheduleId,
    name: String,
    description: Option<String>,
    target: TargetView,
    trigger: TriggerView,
    overlap: &'static str,
    skip_if_scanned_within_hours: Option<i64>,
    /// `active`, `paused`, `completed` or `expired`.
    status: &'static str,
    paused_reason: Option<String>,
    paused_at: Option<Time>,
    auto_paused: bool,
    next_run_at: Option<Time>,
    last_run_at: Option<Time>,
    last_run_id: Option<RunId>,
    last_outcome: Option<String>,
    last_outcome_at: Option<Time>,
    history: ScheduleHistory,
    origin: String,
    created_at: Time,
    updated_at: Time,
}

/// How the schedule's fires went.
#[derive(Serialize, JsonSchema)]
pub struct ScheduleHistory {
    started: i64,
    skipped: i64,
    missed: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
}

/// One fire of a schedule.
#[derive(Serialize, JsonSchema)]
pub struct FireView {
    id: String,
    fire_at: Time,
    status: &'static str,
    reason: Option<String>,
    run_id: Option<RunId>,
    missed_before: i64,
    attempts: i64,
    created_at: Time,
    ended_at: Option<Time>,
}

fn trigger_view(t: &Trigger) -> TriggerView {
    match t {
        Trigger::Cron { expression } => TriggerView::Cron { expression: expression.clone(), timezone: "UTC" },
        Trigger::Interval { hours, anchor } => TriggerView::Interval { hours: *hours, start_at: rfc3339(*anchor) },
        Trigger::Once { at } => TriggerView::Once { at: rfc3339(*at) },
    }
}

fn target_view(t: &ScheduleTarget) -> TargetView {
    match t {
        ScheduleTarget::CloudAccount { account_id, scan_type, regions, tools } => TargetView::CloudAccount {
            account_id: account_id.clone(),
            scan_type: scan_type.as_str(),
            regions: regions.clone(),
            tools: tools.clone(),
        },
        ScheduleTarget::Native { tool, scan_type, spec } => TargetView::Native {
            tool: tool.as_str(),
            scan_type: scan_type.clone(),
            target: spec.target.clone(),
            ports: spec.ports.as_ref().map(|p| p.as_str().to_string()),
            scanners: spec.scanners.clone(),
        },
    }
}

pub fn view(d: &ScheduleDoc) -> ScheduleView {
    ScheduleView {
        id: d.id.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        target: target_view(&d.target),
        trigger: trigger_view(&d.trigger),
        overlap: d.overlap.as_str(),
        skip_if_scanned_within_hours: d.skip_if_scanned_within_secs.map(|s| s / 3600),
        status: d.status.as_str(),
        paused_reason: d.paused_reason.clone(),
        paused_at: rfc3339_opt(d.paused_at),
        auto_paused: d.auto_paused,
        next_run_at: rfc3339_opt(d.next_fire_at),
        last_run_at: rfc3339_opt(d.last_fire_at),
        last_run_id: d.last_run_id.clone(),
        last_outcome: d.last_outcome.clone(),
        last_outcome_at: rfc3339_opt(d.last_outcome_at),
        history: ScheduleHistory {
            started: d.stats.started,
            skipped: d.stats.skipped,
            missed: d.stats.missed,
            succeeded: d.stats.succeeded,
            failed: d.stats.failed,
            cancelled: d.stats.cancelled,
        },
        origin: d.origin.clone(),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    }
}

fn fire_view(f: &FireDoc) -> FireView {
    FireView {
        id: f.id.clone(),
        fire_at: rfc3339(f.fire_at),
        status: f.status.as_str(),
        reason: f.reason.clone(),
        run_id: f.run_id.clone(),
        missed_before: f.missed_before,
        attempts: f.attempts,
        created_at: rfc3339(f.created_at),
        ended_at: rfc3339_opt(f.run_finished_at),
    }
}
