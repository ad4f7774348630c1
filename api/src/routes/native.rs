//! Native scans: `POST /api/native-scans/network-discovery` (nmap) and the unified results
//! (`GET /api/native-scans/results[/{scan_id}]`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bson::{Bson, Document, doc};
use cspm_shared::domain::native::NetworkScanType;
use cspm_shared::domain::role::Permission;
use cspm_shared::domain::scan::RunStatus;
use cspm_shared::ids::RunId;
use cspm_shared::orchestrate::{self, NetworkScanRequest, StartError};
use cspm_shared::store::results;
use cspm_shared::store::runs::RunKind;
use cspm_shared::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDiscoveryBody {
    target: String,
    #[serde(default)]
    ports: Option<String>,
    #[serde(default)]
    scan_type: Option<String>,
}

pub async fn network_discovery(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NetworkDiscoveryBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Permission::RunScans)?;
    let scan_type: NetworkScanType = match body.scan_type {
        None => NetworkScanType::PortScan,
        Some(t) => t.parse().map_err(|e: String| ApiError::invalid("scan_type", e))?,
    };
    s.queues.ping().await?;
    let req = NetworkScanRequest {
        team: caller.team.clone(),
        target: body.target,
        ports: body.ports,
        scan_type,
        trigger: "api".into(),
        created_by: Some(caller.user.clone()),
    };
    let run = match orchestrate::start_network_scan(&s.mongo, &s.queues, req, &s.config.target_policy, &s.config.limits)
        .await
    {
        Ok(run) => run,
        Err(StartError::InvalidField(field, msg)) => return Err(ApiError::invalid(field, msg)),
        Err(StartError::Invalid(msg)) => return Err(ApiError::Unprocessable { detail: msg, errors: vec![] }),
        Err(e) => return Err(e.into()),
    };
    s.metrics
        .runs_started
        .get_or_create(&vec![("kind".into(), "native".into()), ("outcome".into(), "created".into())])
        .inc();
    tracing::info!(run.id = %run.id, target = run.target.as_deref().unwrap_or(""), "network scan started");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "scan_id": run.id,
            "status": run.status,
            "target": run.target,
            "scan_type": run.scan_type,
            "tool_type": "nmap",
            "findings_count": 0,
        })),
    ))
}

pub async fn result(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    caller.require(Permission::ViewScans)?;
    let not_found = || ApiError::NotFound(format!("Scan result not found: {id}"));
    let run: RunId = id.parse().map_err(|_| not_found())?;
    let found = results::get(&s.mongo, &caller.team, &run, RunKind::Native).await?.ok_or_else(not_found)?;
    let mut v = result_view(found);
    if v.get("findings").is_none() {
        v["findings"] = json!([]);
    }
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct ResultsQuery {
    tool_type: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

pub async fn results_list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Permission::ViewScans)?;
    let (skip, limit) = page(q.skip, q.limit, 50, 200)?;
    let mut filter = doc! { "kind": "native" };
    if let Some(t) = q.tool_type {
        if t.len() > 64 {
            return Err(ApiError::invalid("tool_type", "too long"));
        }
        filter.insert("tool_type", t);
    }
    if let Some(st) = q.status {
        let st: RunStatus = st.parse().map_err(|e: String| ApiError::invalid("status", e))?;
        filter.insert("status", st.as_str());
    }
    let (rows, total) = results::list(&s.mongo, &caller.team, filter, skip, limit).await?;
    let items: Vec<Value> = rows.into_iter().map(result_view).collect();
    Ok(Json(
        json!({ "success": true, "count": items.len(), "total": total, "results": items, "limit": limit, "skip": skip }),
    ))
}

/// A stored record as JSON: dates as RFC 3339, internal fields dropped.
fn result_view(mut d: Document) -> Value {
    d.remove("_id");
    d.remove("team_id");
    bson_to_json(Bson::Document(d))
}

/// BSON to JSON; stored times (`*_at` fields, epoch milliseconds) become RFC 3339.
fn bson_to_json(b: Bson) -> Value {
    match b {
        Bson::Document(d) => Value::Object(
            d.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Bson::Int64(ms) if k.ends_with("_at") => json!(Timestamp::from_millis(ms).to_rfc3339()),
                        other => bson_to_json(other),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Bson::Array(a) => Value::Array(a.into_iter().map(bson_to_json).collect()),
        Bson::Int32(n) => json!(n),
        Bson::Int64(n) => json!(n),
        Bson::Double(f) => json!(f),
        Bson::Boolean(b) => json!(b),
        Bson::String(s) => json!(s),
        Bson::Null => Value::Null,
        other => json!(other.to_string()),
    }
}
