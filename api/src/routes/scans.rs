//! Cloud scans: start (`POST /api/cloud-scans/initiate`, `POST /api/cloud-accounts/{id}/scan`), list,
//! status with per-SubJob detail, summary, and cancel (`DELETE /api/cloud-scans/{run_id}`).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cspm_shared::domain::provider::Provider;
use std::collections::BTreeMap;

use cspm_shared::domain::scan::{CanaryOptions, RunStatus, ScanType, SubJobCounts, SubJobStatus, ToolId};
use cspm_shared::ids::{AccountId, RunId, SubJobId};
use cspm_shared::orchestrate::{self, CloudScanRequest, StartError, Started};
use cspm_shared::store::findings::FindingDoc;
use cspm_shared::store::runs::{self, RunDoc, RunFilter, RunKind, RunSummary};
use cspm_shared::store::subjobs;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, rfc3339, rfc3339_opt};
use crate::state::AppState;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InitiateBody {
    account_id: String,
    #[serde(default)]
    scan_type: Option<String>,
    /// Accepted for compatibility with the seed's clients; must match the account's provider if given.
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    canary: Option<CanaryOptions>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountScanBody {
    #[serde(default)]
    scan_type: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    canary: Option<CanaryOptions>,
}

pub async fn initiate(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<InitiateBody>,
) -> ApiResult<(StatusCode, Json<ScanStarted>)> {
    let account: AccountId = body.account_id.parse().map_err(|_| ApiError::not_found("cloud account"))?;
    if let Some(p) = &body.provider {
        let p: Provider = p.parse().map_err(|e: String| ApiError::invalid("provider", e))?;
        let acc = cspm_shared::store::accounts::get(&s.mongo, &caller.team, &account)
            .await?
            .ok_or_else(|| ApiError::not_found("cloud account"))?;
        if acc.provider != p {
            return Err(ApiError::invalid("provider", format!("the account is a {} account", acc.provider)));
        }
    }
    start(s, caller, account, body.scan_type, body.regions, body.tools, body.canary, "api").await
}

pub async fn scan_account(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AccountScanBody>,
) -> ApiResult<(StatusCode, Json<ScanStarted>)> {
    let account: AccountId = path_id(&id, "cloud account")?;
    start(s, caller, account, body.scan_type, body.regions, body.tools, body.canary, "manual").await
}

#[allow(clippy::too_many_arguments)]
async fn start(
    s: AppState,
    caller: Caller,
    account: AccountId,
    scan_type: Option<String>,
    regions: Option<Vec<String>>,
    tools: Option<Vec<String>>,
    canary: Option<CanaryOptions>,
    trigger: &str,
) -> ApiResult<(StatusCode, Json<ScanStarted>)> {
    let scan_type: ScanType = match scan_type {
        None => ScanType::Full,
        Some(t) => t.parse().map_err(|e: String| ApiError::invalid("scan_type", e))?,
    };
    let tools = tools
        .map(|t| t.iter().map(|x| x.parse::<ToolId>()).collect::<Result<Vec<_>, _>>())
        .transpose()
        .map_err(|e| ApiError::invalid("tools", e))?;
    // Refuse early rather than accept a scan that cannot be queued.
    s.queues.ping().await?;
    let req = CloudScanRequest {
        team: caller.team.clone(),
        account,
        scan_type,
        regions,
        tools,
        canary,
        trigger: trigger.to_string(),
        created_by: Some(caller.user.clone()),
        run_id: None,
        schedule_id: None,
    };
    let Started { run, already_active } =
        match orchestrate::start_cloud_scan(&s.mongo, &s.queues, req, &s.config.limits).await {
            Ok(started) => started,
            Err(StartError::Invalid(msg)) => return Err(ApiError::Unprocessable { detail: msg, errors: vec![] }),
            Err(e) => return Err(e.into()),
        };
    let outcome = if already_active { "already_active" } else { "created" };
    s.metrics
        .runs_started
        .get_or_create(&vec![("kind".into(), "cloud".into()), ("outcome".into(), outcome.into())])
        .inc();
    let body = ScanStarted {
        estimated_completion: rfc3339_opt(run.estimated_completion),
        already_running: already_active.then_some(true),
        message: if already_active {
            "a scan of this account is already in progress; its id is returned"
        } else {
            "scan started"
        },
        run_id: run.id,
        status: run.status,
        sub_jobs_count: run.sub_jobs_count,
        account_id: run.account_id,
        provider: run.provider,
        scan_type: run.scan_type,
        regions: run.regions,
        tools: run.tools,
    };
    if already_active {
        Ok((StatusCode::OK, Json(body)))
    } else {
        tracing::info!(run.id = %body.run_id, sub_jobs = body.sub_jobs_count, "scan started");
        Ok((StatusCode::ACCEPTED, Json(body)))
    }
}

/// The answer to a scan request: the run started (202), or the one already in progress (200).
#[derive(Serialize, JsonSchema)]
pub struct ScanStarted {
    run_id: RunId,
    status: RunStatus,
    sub_jobs_count: i64,
    account_id: Option<AccountId>,
    provider: Option<Provider>,
    scan_type: String,
    regions: Vec<String>,
    tools: Vec<String>,
    estimated_completion: Option<Time>,
    /// Present (true) when a scan of the account was already in progress: its id is returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    already_running: Option<bool>,
    message: &'static str,
}

/// A page of runs.
#[derive(Serialize, JsonSchema)]
pub struct RunList {
    runs: Vec<RunView>,
    total: u64,
    skip: u64,
    limit: i64,
}

#[derive(Deserialize, JsonSchema)]
pub struct ListQuery {
    account_id: Option<String>,
    provider: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let (skip, limit) = page(q.skip, q.limit, 50, 200)?;
    let filter = RunFilter {
        kind: Some(RunKind::Cloud),
        account_id: match q.account_id {
            // An id that cannot exist matches nothing.
            Some(a) => Some(a.parse().map_err(|_| ApiError::invalid("account_id", "not a cloud account id"))?),
            None => None,
        },
        provider: q.provider.map(|p| p.parse()).transpose().map_err(|e: String| ApiError::invalid("provider", e))?,
        status: q.status.map(|st| st.parse()).transpose().map_err(|e: String| ApiError::invalid("status", e))?,
    };
    let (items, total) = runs::list(&s.mongo, &caller.team, &filter, skip, limit).await?;
    Ok(Json(RunList { runs: items.iter().map(run_view).collect(), total, skip, limit }))
}

/// The caller's team's run named in the path; another team's run is not found (404).
pub(crate) async fn load(s: &AppState, caller: &Caller, id: &str) -> ApiResult<RunDoc> {
    let id: RunId = path_id(id, "scan")?;
    runs::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("scan"))
}

/// A run with its progress, per region and per SubJob.
#[derive(Serialize, JsonSchema)]
pub struct RunStatusView {
    #[serde(flatten)]
    run: RunView,
    progress: Progress,
    regions_progress: BTreeMap<String, RegionProgress>,
    sub_jobs: Vec<SubJobView>,
}

#[derive(Serialize, JsonSchema)]
pub struct Progress {
    /// Percent of the SubJobs that have ended.
    overall: f64,
    total: u64,
    queued: u64,
    running: u64,
    completed: u64,
    failed: u64,
    timed_out: u64,
    cancelled: u64,
}

#[derive(Serialize, JsonSchema, Default)]
pub struct RegionProgress {
    total: i64,
    finished: i64,
    findings: i64,
    /// Percent of the region's SubJobs that have ended, to one decimal.
    progress: f64,
    /// `finished` or `in_progress`.
    status: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct SubJobView {
    sub_job_id: SubJobId,
    region: String,
    /// The tool, with its label if it has one (`canary:b`).
    #[schemars(with = "String")]
    tool: ToolId,
    status: SubJobStatus,
    attempts: i32,
    findings_count: i64,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    error: Option<String>,
}

pub async fn status(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunStatusView>> {
    let run = load(&s, &caller, &id).await?;
    let jobs = subjobs::list_for_run(&s.mongo, &run.id).await?;
    let mut counts = SubJobCounts::default();
    let mut regions: BTreeMap<String, RegionProgress> = BTreeMap::new();
    let mut per_job = Vec::with_capacity(jobs.len());
    for j in jobs {
        counts.add(j.status, 1);
        let entry = regions.entry(j.region.clone()).or_default();
        entry.total += 1;
        if j.status.is_terminal() {
            entry.finished += 1;
        }
        entry.findings += j.findings_count;
        per_job.push(SubJobView {
            sub_job_id: j.id,
            region: j.region,
            tool: j.tool,
            status: j.status,
            attempts: j.attempts,
            findings_count: j.findings_count,
            started_at: rfc3339_opt(j.started_at),
            finished_at: rfc3339_opt(j.finished_at),
            error: j.error,
        });
    }
    for r in regions.values_mut() {
        let total = r.total.max(1);
        r.progress = (r.finished as f64 * 1000.0 / total as f64).round() / 10.0;
        r.status = if r.finished == total { "finished" } else { "in_progress" };
    }
    Ok(Json(RunStatusView {
        run: run_view(&run),
        progress: Progress {
            overall: counts.progress_percent(),
            total: counts.total(),
            queued: counts.queued,
            running: counts.running,
            completed: counts.completed,
            failed: counts.failed,
            timed_out: counts.timed_out,
            cancelled: counts.cancelled,
        },
        regions_progress: regions,
        sub_jobs: per_job,
    }))
}

/// A run's totals.
#[derive(Serialize, JsonSchema)]
pub struct RunSummaryView {
    run_id: RunId,
    status: RunStatus,
    finished: bool,
    total_findings: i64,
    new_findings: i64,
    resolved_findings: i64,
    reopened_findings: i64,
    by_severity: cspm_shared::domain::severity::SeverityCounts,
    sub_jobs: SubJobCounts,
    warnings: Vec<String>,
    duration_seconds: Option<f64>,
    created_at: Time,
    finished_at: Option<Time>,
}

pub async fn summary(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<RunSummaryView>> {
    let run = load(&s, &caller, &id).await?;
    let counts = match run.counts {
        Some(c) => c,
        None => subjobs::count_for_run(&s.mongo, &run.id).await?,
    };
    let summary = run.summary.clone().unwrap_or_default();
    let duration = match (run.started_at, run.finished_at) {
        (Some(a), Some(b)) => Some(b.since(a).as_secs_f64()),
        _ => None,
    };
    Ok(Json(RunSummaryView {
        finished: run.status.is_terminal(),
        total_findings: summary.total_findings,
        new_findings: summary.new_findings,
        resolved_findings: summary.resolved_findings,
        reopened_findings: summary.reopened_findings,
        by_severity: summary.by_severity,
        sub_jobs: counts,
        warnings: summary.warnings,
        duration_seconds: duration,
        created_at: rfc3339(run.created_at),
        finished_at: rfc3339_opt(run.finished_at),
        run_id: run.id,
        status: run.status,
    }))
}

/// A cancel request's outcome: cancelled at once (200), or SubJobs still stopping (202).
#[derive(Serialize, JsonSchema)]
pub struct ScanCancelled {
    run_id: RunId,
    status: RunStatus,
    cancel_requested: bool,
    cancelled_sub_jobs: u64,
    stopping_sub_jobs: u64,
}

pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<ScanCancelled>)> {
    let id: RunId = path_id(&id, "scan")?;
    match orchestrate::cancel_run(&s.mongo, &s.queues, &caller.team, &id).await {
        Ok(Some(c)) => {
            tracing::info!(run.id = %id, cancelled = c.cancelled_sub_jobs, stopping = c.stopping_sub_jobs, "scan cancelled");
            let code = if c.status == RunStatus::Cancelled { StatusCode::OK } else { StatusCode::ACCEPTED };
            Ok((
                code,
                Json(ScanCancelled {
                    run_id: id,
                    status: c.status,
                    cancel_requested: true,
                    cancelled_sub_jobs: c.cancelled_sub_jobs,
                    stopping_sub_jobs: c.stopping_sub_jobs,
                }),
            ))
        }
        Ok(None) => Err(ApiError::not_found("scan")),
        Err(StartError::Invalid(msg)) => Err(ApiError::Conflict(msg)),
        Err(e) => Err(e.into()),
    }
}

/// The run's findings as OCSF events, one JSON object per line (NDJSON), streamed from the database:
/// the findings whose latest sighting is this run.
pub async fn ocsf(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let run = load(&s, &caller, &id).await?;
    let cursor = s
        .mongo
        .findings
        .find(bson::doc! { "team_id": &caller.team, "last_run_id": &run.id })
        .sort(bson::doc! { "_id": 1 })
        .await
        .map_err(cspm_shared::error::StoreError::from)?;
    let lines = cursor.filter_map(|doc| async move {
        match doc {
            Ok(d) => {
                let finding: FindingDoc = match bson::deserialize_from_document(d) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "a stored finding could not be read; left out of the stream");
                        return None;
                    }
                };
                let mut line = serde_json::to_vec(&finding.to_ocsf()).ok()?;
                line.push(b'\n');
                Some(Ok::<_, std::io::Error>(Bytes::from(line)))
            }
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// A run as lists and reads show it.
#[derive(Serialize, JsonSchema)]
pub struct RunView {
    run_id: RunId,
    kind: RunKind,
    account_id: Option<AccountId>,
    provider: Option<Provider>,
    target: Option<String>,
    scan_type: String,
    regions: Vec<String>,
    tools: Vec<String>,
    status: RunStatus,
    sub_jobs_count: i64,
    cancel_requested: bool,
    trigger: String,
    created_at: Time,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    estimated_completion: Option<Time>,
    /// SubJob states at the roll-up (none while the run is active).
    counts: Option<SubJobCounts>,
    summary: Option<RunSummary>,
}

pub fn run_view(r: &RunDoc) -> RunView {
    RunView {
        run_id: r.id.clone(),
        kind: r.kind,
        account_id: r.account_id.clone(),
        provider: r.provider,
        target: r.target.clone(),
        scan_type: r.scan_type.clone(),
        regions: r.regions.clone(),
        tools: r.tools.clone(),
        status: r.status,
        sub_jobs_count: r.sub_jobs_count,
        cancel_requested: r.cancel_requested,
        trigger: r.trigger.clone(),
        created_at: rfc3339(r.created_at),
        started_at: rfc3339_opt(r.started_at),
        finished_at: rfc3339_opt(r.finished_at),
        estimated_completion: rfc3339_opt(r.estimated_completion),
        counts: r.counts,
        summary: r.summary.clone(),
    }
}
