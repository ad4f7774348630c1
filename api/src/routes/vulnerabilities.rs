//! Vulnerability occurrences: `/api/vulnerabilities/occurrences` (one CVE on one asset and component,
//! riskiest first) and a person's decision on one (`PUT …/{id}/status`).

use axum::Json;
use axum::extract::{Path, State};
use bson::{Bson, Document, doc};
use cspm_shared::store::occurrences::{self, OccurrenceStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page};
use crate::problem::{ApiError, ApiResult};
use crate::routes::bson_to_json;
use crate::state::AppState;

#[derive(Deserialize, JsonSchema)]
pub struct OccurrencesQuery {
    status: Option<String>,
    asset_id: Option<String>,
    vulnerability_id: Option<String>,
    /// The lowest CVSS base score to include.
    severity_min: Option<f64>,
    /// `P0` … `P4`.
    priority_rank: Option<String>,
    /// `cspm`, `container`, `application`, `network`.
    source: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

/// An occurrence as it is stored (the scan that saw it last writes it), with its id and KEV flag.
#[derive(Serialize, JsonSchema)]
pub struct OccurrenceView {
    /// `occur_` and 32 hexadecimal digits.
    id: String,
    /// Whether the CVE is in the CISA KEV catalog.
    cisa_kev: bool,
    /// The stored fields: `vulnerability_id`, `asset_id`, `component`, `status`, `base_cvss`,
    /// `priority_rank`, `source`, `first_seen`, `last_seen` (RFC 3339) and the rest.
    #[serde(flatten)]
    stored: Map<String, Value>,
}

fn view(mut d: Document) -> OccurrenceView {
    d.remove("team_id");
    let id = d.remove("_id").unwrap_or(Bson::Null);
    let kev = cspm_shared::store::flag(&d, "cisa_kev");
    d.remove("cisa_kev");
    let stored = match bson_to_json(Bson::Document(d)) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let id = match id {
        Bson::String(s) => s,
        other => other.to_string(),
    };
    OccurrenceView { id, cisa_kev: kev, stored }
}

/// A page of occurrences, riskiest first.
#[derive(Serialize, JsonSchema)]
pub struct OccurrenceList {
    occurrences: Vec<OccurrenceView>,
    total: u64,
    limit: i64,
    skip: u64,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OccurrencesQuery>,
) -> ApiResult<Json<OccurrenceList>> {
    let (skip, limit) = page(q.skip, q.limit, 50, 100)?;
    let mut f = Document::new();
    if let Some(st) = &q.status {
        let st: OccurrenceStatus = st.parse().map_err(|e: String| ApiError::invalid("status", e))?;
        f.insert("status", st.as_str());
    }
    for (field, value) in [("asset_id", &q.asset_id), ("vulnerability_id", &q.vulnerability_id)] {
        if let Some(v) = value {
            if v.len() > 512 {
                return Err(ApiError::invalid(field, "is too long"));
            }
            f.insert(field, v.clone());
        }
    }
    if let Some(min) = q.severity_min {
        if !(0.0..=10.0).contains(&min) {
            return Err(ApiError::invalid("severity_min", "must be a CVSS score between 0 and 10"));
        }
        f.insert("base_cvss", doc! { "$gte": min });
    }
    if let Some(p) = &q.priority_rank {
        if !["P0", "P1", "P2", "P3", "P4"].contains(&p.as_str()) {
            return Err(ApiError::invalid("priority_rank", "expected P0, P1, P2, P3 or P4"));
        }
        f.insert("priority_rank", p.as_str());
    }
    if let Some(src) = &q.source {
        if !["cspm", "container", "application", "network"].contains(&src.as_str()) {
            return Err(ApiError::invalid("source", "expected cspm, container, application or network"));
        }
        f.insert("source", src.as_str());
    }
    let (rows, total) = occurrences::list(&s.mongo, &caller.team, f, skip, limit).await?;
    let occurrences: Vec<OccurrenceView> = rows.into_iter().map(view).collect();
    Ok(Json(OccurrenceList { occurrences, total, limit, skip }))
}

fn check_id(id: &str) -> ApiResult<()> {
    let ok = id.len() == 38 && id.starts_with("occur_") && id[6..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok { Ok(()) } else { Err(ApiError::not_found("occurrence")) }
}

pub async fn get(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<OccurrenceView>> {
    check_id(&id)?;
    let d = occurrences::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("occurrence"))?;
    Ok(Json(view(d)))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: String,
    #[serde(default)]
    note: Option<String>,
}

pub async fn set_status(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StatusBody>,
) -> ApiResult<Json<OccurrenceView>> {
    check_id(&id)?;
    let status: OccurrenceStatus = body.status.parse().map_err(|e: String| ApiError::invalid("status", e))?;
    if status == OccurrenceStatus::Reopened {
        return Err(ApiError::invalid("status", "only a scan reopens an occurrence"));
    }
    let note = body.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::invalid("note", "is too long (at most 2000 characters)"));
    }
    if status.is_decision() && note.is_none() {
        return Err(ApiError::invalid("note", "a false positive or an accepted risk needs a note saying why"));
    }
    let d = occurrences::set_status(&s.mongo, &caller.team, &id, status, &caller.user, note)
        .await?
        .ok_or_else(|| ApiError::not_found("occurrence"))?;
    tracing::info!(occurrence = %id, status = status.as_str(), "occurrence status set by a person");
    Ok(Json(view(d)))
}
