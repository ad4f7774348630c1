//! Cloud scans: start (`POST /api/cloud-scans/initiate`, `POST /api/cloud-accounts/{id}/scan`), list,
//! status with per-SubJob detail, summary, and cancel (`DELETE /api/cloud-scans/{run_id}`).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cspm_shared::domain::provider::Provider;
use cspm_shared::domain::scan::{CanaryOptions, RunStatus, ScanType, SubJobCounts, ToolId};
use cspm_shared::ids::{AccountId, RunId};
use cspm_shared::orchestrate::{self, CloudScanRequest, StartError, Started};
use cspm_shared::store::findings::FindingDoc;
use cspm_shared::store::runs::{self, RunDoc, RunFilter, RunKind};
use cspm_shared::store::subjobs;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{rfc3339, rfc3339_opt};
use crate::state::AppState;

#[derive(Deserialize)]
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

#[derive(Deserialize)]
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
) -> ApiResult<(StatusCode, Json<Value>)> {
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
) -> ApiResult<(StatusCode, Json<Value>)> {
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
) -> ApiResult<(StatusCode, Json<Value>)> {
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
    let mut body = json!({
        "run_id": run.id,
        "status": run.status,
        "sub_jobs_count": run.sub_jobs_count,
        "account_id": run.account_id,
        "provider": run.provider,
        "scan_type": run.scan_type,
        "regions": run.regions,
        "tools": run.tools,
        "estimated_completion": rfc3339_opt(run.estimated_completion),
    });
    if already_active {
        body["already_running"] = json!(true);
        body["message"] = json!("a scan of this account is already in progress; its id is returned");
        Ok((StatusCode::OK, Json(body)))
    } else {
        tracing::info!(run.id = %run.id, sub_jobs = run.sub_jobs_count, "scan started");
        body["message"] = json!("scan started");
        Ok((StatusCode::ACCEPTED, Json(body)))
    }
}

#[derive(Deserialize)]
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
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({
        "runs": items.iter().map(run_view).collect::<Vec<_>>(),
        "total": total,
        "skip": skip,
        "limit": limit,
    })))
}

/// The caller's team's run named in the path; another team's run is not found (404).
pub(crate) async fn load(s: &AppState, caller: &Caller, id: &str) -> ApiResult<RunDoc> {
    let id: RunId = path_id(id, "scan")?;
    runs::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("scan"))
}

pub async fn status(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let run = load(&s, &caller, &id).await?;
    let jobs = subjobs::list_for_run(&s.mongo, &run.id).await?;
    let mut counts = SubJobCounts::default();
    let mut regions = serde_json::Map::new();
    let mut per_job = Vec::with_capacity(jobs.len());
    for j in &jobs {
        counts.add(j.status, 1);
        let entry =
            regions.entry(j.region.clone()).or_insert_with(|| json!({ "total": 0, "finished": 0, "findings": 0 }));
        entry["total"] = json!(entry["total"].as_i64().unwrap_or(0) + 1);
        if j.status.is_terminal() {
            entry["finished"] = json!(entry["finished"].as_i64().unwrap_or(0) + 1);
        }
        entry["findings"] = json!(entry["findings"].as_i64().unwrap_or(0) + j.findings_count);
        per_job.push(json!({
            "sub_job_id": j.id,
            "region": j.region,
            "tool": j.tool,
            "status": j.status,
            "attempts": j.attempts,
            "findings_count": j.findings_count,
            "started_at": rfc3339_opt(j.started_at),
            "finished_at": rfc3339_opt(j.finished_at),
            "error": j.error,
        }));
    }
    for (_, r) in regions.iter_mut() {
        let total = r["total"].as_i64().unwrap_or(0).max(1);
        let finished = r["finished"].as_i64().unwrap_or(0);
        r["progress"] = json!((finished as f64 * 1000.0 / total as f64).round() / 10.0);
        r["status"] = json!(if finished == total { "finished" } else { "in_progress" });
    }
    let mut v = run_view(&run);
    v["progress"] = json!({
        "overall": counts.progress_percent(),
        "total": counts.total(),
        "queued": counts.queued,
        "running": counts.running,
        "completed": counts.completed,
        "failed": counts.failed,
        "timed_out": counts.timed_out,
        "cancelled": counts.cancelled,
    });
    v["regions_progress"] = Value::Object(regions);
    v["sub_jobs"] = Value::Array(per_job);
    Ok(Json(v))
}

pub async fn summary(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({
        "run_id": run.id,
        "status": run.status,
        "finished": run.status.is_terminal(),
        "total_findings": summary.total_findings,
        "new_findings": summary.new_findings,
        "resolved_findings": summary.resolved_findings,
        "reopened_findings": summary.reopened_findings,
        "by_severity": summary.by_severity,
        "sub_jobs": counts,
        "warnings": summary.warnings,
        "duration_seconds": duration,
        "created_at": rfc3339(run.created_at),
        "finished_at": rfc3339_opt(run.finished_at),
    })))
}

pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id: RunId = path_id(&id, "scan")?;
    match orchestrate::cancel_run(&s.mongo, &s.queues, &caller.team, &id).await {
        Ok(Some(c)) => {
            tracing::info!(run.id = %id, cancelled = c.cancelled_sub_jobs, stopping = c.stopping_sub_jobs, "scan cancelled");
            let code = if c.status == RunStatus::Cancelled { StatusCode::OK } else { StatusCode::ACCEPTED };
            Ok((
                code,
                Json(json!({
                    "run_id": id,
                    "status": c.status,
                    "cancel_requested": true,
                    "cancelled_sub_jobs": c.cancelled_sub_jobs,
                    "stopping_sub_jobs": c.stopping_sub_jobs,
                })),
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

pub fn run_view(r: &RunDoc) -> Value {
    json!({
        "run_id": r.id,
        "kind": r.kind,
        "account_id": r.account_id,
        "provider": r.provider,
        "target": r.target,
        "scan_type": r.scan_type,
        "regions": r.regions,
        "tools": r.tools,
        "status": r.status,
        "sub_jobs_count": r.sub_jobs_count,
        "cancel_requested": r.cancel_requested,
        "trigger": r.trigger,
        "created_at": rfc3339(r.created_at),
        "started_at": rfc3339_opt(r.started_at),
        "finished_at": rfc3339_opt(r.finished_at),
        "estimated_completion": rfc3339_opt(r.estimated_completion),
        "counts": r.counts,
        "summary": r.summary,
    })
}
