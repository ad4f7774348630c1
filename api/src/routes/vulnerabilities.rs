//! Vulnerability occurrences: `/api/vulnerabilities/occurrences` (one CVE on one asset and component,
//! riskiest first) and a person's decision on one (`PUT …/{id}/status`).

use axum::Json;
use axum::extract::{Path, State};
use bson::{Document, doc};
use cspm_shared::domain::severity::Severity;
use cspm_shared::ids::{AccountId, RunId, SubJobId, UserId};
use cspm_shared::kev::KevMark;
use cspm_shared::store::occurrences::{self, Component, Decision, OccurrenceDoc, OccurrenceStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, rfc3339};
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

/// An occurrence: one CVE on one asset and component.
#[derive(Serialize, JsonSchema)]
pub struct OccurrenceView {
    /// `occur_` and 32 hexadecimal digits.
    id: String,
    /// The same as `id`.
    occurrence_id: String,
    /// The CVE.
    vulnerability_id: String,
    title: String,
    severity: Severity,
    status: OccurrenceStatus,
    status_changed_at: Time,
    /// The resource the CVE was found on (an image, a host, an ARN).
    asset_id: String,
    asset_type: String,
    component: Component,
    /// The highest CVSS base score published for the CVE.
    base_cvss: Option<f64>,
    /// The base score × 10 (0 without one): the list's order.
    risk_score: i64,
    /// `P0` (act now) … `P4`, from the base score.
    priority_rank: String,
    fix_available: bool,
    remediation: Option<String>,
    /// Whether the CVE is in the CISA KEV catalog.
    cisa_kev: bool,
    /// The catalog's entry, once enrichment has looked the CVE up.
    kev: Option<KevMark>,
    /// `cspm`, `container`, `application` or `network`.
    source: String,
    /// The tool that reported it last.
    tool: String,
    account_id: Option<AccountId>,
    target: Option<String>,
    region: String,
    /// The finding that reported it last.
    finding_id: String,
    first_seen: Time,
    last_seen: Time,
    first_run_id: RunId,
    last_run_id: RunId,
    last_subjob_id: Option<SubJobId>,
    /// The run that reported it again after a scan had resolved it.
    reopened_run_id: Option<RunId>,
    /// How a scan resolved it.
    resolution: Option<ScanResolutionView>,
    /// The last status a person set.
    decision: Option<DecisionView>,
    /// Every status a person set, oldest first.
    history: Vec<DecisionView>,
}

#[derive(Serialize, JsonSchema)]
pub struct ScanResolutionView {
    /// `auto`: the scope's last complete scan no longer reported it.
    kind: String,
    run_id: RunId,
    at: Time,
}

#[derive(Serialize, JsonSchema)]
pub struct DecisionView {
    status: OccurrenceStatus,
    by: UserId,
    at: Time,
    note: Option<String>,
}

fn decision(d: Decision) -> DecisionView {
    DecisionView { status: d.status, by: d.by, at: rfc3339(d.at), note: d.note }
}

fn view(o: OccurrenceDoc) -> OccurrenceView {
    OccurrenceView {
        occurrence_id: o.id.clone(),
        id: o.id,
        vulnerability_id: o.vulnerability_id,
        title: o.title,
        severity: o.severity,
        status: o.status,
        status_changed_at: rfc3339(o.status_changed_at),
        asset_id: o.asset_id,
        asset_type: o.asset_type,
        component: o.component,
        base_cvss: o.base_cvss,
        risk_score: o.risk_score,
        priority_rank: o.priority_rank,
        fix_available: o.fix_available,
        remediation: o.remediation,
        cisa_kev: o.cisa_kev,
        kev: o.kev,
        source: o.source,
        tool: o.tool,
        account_id: o.account_id,
        target: o.target,
        region: o.region,
        finding_id: o.finding_id,
        first_seen: rfc3339(o.first_seen),
        last_seen: rfc3339(o.last_seen),
        first_run_id: o.first_run_id,
        last_run_id: o.last_run_id,
        last_subjob_id: o.last_subjob_id,
        reopened_run_id: o.reopened_run_id,
        resolution: o.resolution.map(|r| ScanResolutionView { kind: r.kind, run_id: r.run_id, at: rfc3339(r.at) }),
        decision: o.decision.map(decision),
        history: o.history.into_iter().map(decision).collect(),
    }
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
    #[schemars(with = "SettableStatus")]
    status: String,
    #[serde(default)]
    note: Option<String>,
}

/// The statuses a person may set: `reopened` is set only by scans.
struct SettableStatus;

impl JsonSchema for SettableStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SettableOccurrenceStatus".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> =
            OccurrenceStatus::ALL.iter().filter(|s| **s != OccurrenceStatus::Reopened).map(|s| s.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
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
