//! The compliance engine: the SCF catalog (`/api/common-controls/…`), syncs and status
//! (`/api/compliance-engine/…`) and scores (`/api/cspm/findings/compliance-scores`). The catalog is
//! shared by every team; control states, overrides, thresholds and syncs are the caller's team's.

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cspm_shared::compliance::catalog::{self, PartKind, Upload};
use cspm_shared::compliance::normalize;
use cspm_shared::compliance::state::ControlState;
use cspm_shared::compliance::store::{self, CatalogRecord, ControlStateDoc, Override};
use cspm_shared::compliance::sync::{self, SyncError, SyncJob, SyncStart, SyncTrigger};
use cspm_shared::ids::SyncJobId;
use cspm_shared::time::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::rfc3339_opt;
use crate::state::AppState;

/// Files one import may carry.
const MAX_FILES: usize = 64;
/// The time limit of a catalog import (instead of `CSPM_REQUEST_TIMEOUT_SECS`, when that is shorter).
pub const IMPORT_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
/// Longest justification of an override.
const MAX_JUSTIFICATION: usize = 4000;

fn catalog_json(c: &CatalogRecord) -> Value {
    json!({
        "catalog_id": c.id,
        "release": c.release,
        "controls": c.controls,
        "domains": c.domains,
        "crosswalk_pairs": c.crosswalk_pairs,
        "check_requirements": c.check_requirements,
        "frameworks": c.frameworks.iter().map(|f| json!({
            "framework": f.name, "key": f.key, "requirements": f.requirements, "controls": f.controls,
        })).collect::<Vec<_>>(),
        "files": c.files,
        "warnings": c.warnings,
        "imported_by": c.imported_by,
        "imported_at": c.imported_at.to_rfc3339(),
    })
}

/// `POST /api/common-controls/import-scf` (admin): a `multipart/form-data` body with the catalog in the
/// field `catalog` (YAML or JSON; a second `catalog` of the other layout adds titles), crosswalks in
/// `crosswalk` fields (STRM YAML, or the JSON framework → SCF index), and tools' check → requirement
/// files in `check_mapping` fields. A refused upload changes nothing: the catalog in force stays.
pub async fn import_scf(
    State(s): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::UnsupportedMediaType(format!(
            "send the catalog as multipart/form-data (curl -F catalog=@scf.yaml -F crosswalk=@mapping.yaml): {}",
            e.body_text()
        ))
    })?;
    let mut uploads = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or_default().to_string();
        let Some(kind) = PartKind::from_field(&name) else {
            return Err(ApiError::invalid(
                &name,
                "unknown form field (use catalog, crosswalk or check_mapping; the catalog in force is unchanged)",
            ));
        };
        let file_name =
            field.file_name().map(str::to_string).unwrap_or_else(|| format!("{name}#{}", uploads.len() + 1));
        let bytes = field.bytes().await.map_err(multipart_error)?;
        uploads.push(Upload { kind, name: file_name, bytes: bytes.to_vec() });
        if uploads.len() > MAX_FILES {
            return Err(ApiError::invalid("files", format!("at most {MAX_FILES} files per import")));
        }
    }
    let parsed = tokio::task::spawn_blocking(move || catalog::assemble(&uploads))
        .await
        .map_err(|e| ApiError::Internal(format!("catalog parser: {e}")))?;
    let catalog = parsed.map_err(|e| ApiError::Unprocessable {
        detail: format!("the catalog was refused and the one in force is unchanged: {e}"),
        errors: vec![],
    })?;
    let (record, previous) = store::store_catalog(&s.mongo, &catalog, &caller.user).await?;
    tracing::info!(catalog.id = %record.id, controls = record.controls, "SCF catalog imported");
    let mut body = catalog_json(&record);
    body["previous_catalog_id"] = json!(previous);
    Ok((StatusCode::CREATED, Json(body)))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(
            "the catalog upload is larger than CSPM_SCF_IMPORT_MAX_BYTES; the catalog in force is unchanged".into(),
        )
    } else {
        ApiError::BadRequest(format!("unreadable multipart body: {}", e.body_text()))
    }
}

async fn current(s: &AppState) -> ApiResult<CatalogRecord> {
    store::current_catalog(&s.mongo).await?.ok_or_else(|| {
        ApiError::NotFound("no SCF catalog has been imported (POST /api/common-controls/import-scf)".into())
    })
}

/// `GET /api/common-controls/catalog`: the catalog in force.
pub async fn catalog(State(s): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(catalog_json(&current(&s).await?)))
}

fn scf_id(raw: &str) -> ApiResult<String> {
    normalize::scf_id(raw).ok_or_else(|| ApiError::not_found("control"))
}

fn state_json(st: Option<&ControlStateDoc>) -> Value {
    let Some(st) = st else {
        return json!({
            "state": "not_assessed", "derived_state": "not_assessed", "reason": "no sync has assessed this control yet",
            "override": null, "tally": { "failing": 0, "passing": 0, "undecided": 0, "unverified": 0 },
            "evidence_count": 0, "evidence": [], "paths": {}, "score_weight": 0.0, "synced_at": null, "sync_job_id": null,
        });
    };
    json!({
        "state": st.state(),
        "derived_state": st.derived_state,
        "reason": st.reason,
        "override": st.manual.as_ref().map(|o| json!({
            "state": o.state, "justification": o.justification, "by": o.by, "at": o.at.to_rfc3339(),
        })),
        "tally": st.tally,
        "evidence_count": st.evidence_count,
        "evidence": st.evidence,
        "paths": st.paths,
        "score_weight": st.state().weight(st.evidence_count > 0),
        "synced_at": rfc3339_opt(st.synced_at),
        "sync_job_id": st.sync_job_id,
    })
}

async fn control_view(s: &AppState, caller: &Caller, raw_id: &str) -> ApiResult<Value> {
    let id = scf_id(raw_id)?;
    let catalog = current(s).await?;
    let control = store::control(&s.mongo, &catalog.id, &id).await?.ok_or_else(|| ApiError::not_found("control"))?;
    let state = store::team_state(&s.mongo, &caller.team, &id).await?;
    let mut frameworks: std::collections::BTreeMap<&str, Vec<Value>> = std::collections::BTreeMap::new();
    for g in &control.crosswalk {
        let list = frameworks.entry(g.framework.as_str()).or_default();
        for (requirement, relationship) in g.rows() {
            list.push(json!({ "requirement": requirement, "relationship": relationship }));
        }
    }
    Ok(json!({
        "scf_id": control.control.scf_id,
        "title": control.control.title,
        "description": control.control.description,
        "question": control.control.question,
        "domain": control.control.domain,
        "weight": control.control.weight,
        "catalog_id": catalog.id,
        "frameworks": frameworks.into_iter().map(|(f, r)| json!({ "framework": f, "requirements": r })).collect::<Vec<_>>(),
        "keywords": control.terms.iter().map(|t| t.stem.as_str()).collect::<Vec<_>>(),
        "team": state_json(state.as_ref()),
    }))
}

/// `GET /api/common-controls/control/{scf_id}`: the control, and the team's state of it with the
/// evidence and how each finding was mapped.
pub async fn control(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(control_view(&s, &caller, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    state: String,
    justification: String,
}

/// `PUT /api/common-controls/control/{scf_id}/state` (admin): a manual state with its justification.
/// Syncs keep attaching evidence but never change it.
pub async fn set_state(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OverrideBody>,
) -> ApiResult<Json<Value>> {
    let state: ControlState = body.state.parse().map_err(|e: String| ApiError::invalid("state", e))?;
    let justification = body.justification.trim();
    if justification.is_empty() {
        return Err(ApiError::invalid("justification", "is required: say why the control is in this state"));
    }
    if justification.len() > MAX_JUSTIFICATION {
        return Err(ApiError::invalid("justification", format!("is too long (at most {MAX_JUSTIFICATION} bytes)")));
    }
    let scf = scf_id(&id)?;
    let catalog = current(&s).await?;
    if store::control(&s.mongo, &catalog.id, &scf).await?.is_none() {
        return Err(ApiError::not_found("control"));
    }
    let o = Override { state, justification: justification.to_string(), by: caller.user.clone(), at: Timestamp::now() };
    store::set_override(&s.mongo, &caller.team, &scf, &o).await?;
    Ok(Json(control_view(&s, &caller, &scf).await?))
}

/// `DELETE /api/common-controls/control/{scf_id}/state` (admin): back to the derived state.
pub async fn clear_state(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let scf = scf_id(&id)?;
    if !store::clear_override(&s.mongo, &caller.team, &scf).await? {
        return Err(ApiError::NotFound("the control has no override".into()));
    }
    Ok(Json(control_view(&s, &caller, &scf).await?))
}

fn job_json(j: &SyncJob) -> Value {
    json!({
        "job_id": j.id,
        "status": j.status,
        "trigger": j.trigger,
        "requested_by": j.requested_by,
        "catalog_id": j.catalog_id,
        "created_at": j.created_at.to_rfc3339(),
        "finished_at": rfc3339_opt(j.finished_at),
        "result": j.result,
        "error": j.error,
    })
}

/// `POST /api/compliance-engine/sync`: starts the team's sync (202 with its job id) or, while one is
/// running, answers 200 with that one's id.
pub async fn start_sync(State(s): State<AppState>, caller: Caller) -> ApiResult<(StatusCode, Json<Value>)> {
    match sync::claim(&s.mongo, &caller.team, SyncTrigger::Manual, Some(&caller.user)).await {
        Ok(SyncStart::Claimed(c)) => {
            let id = c.job_id.clone();
            let mongo = s.mongo.clone();
            tokio::spawn(async move {
                let _ = sync::run(&mongo, c).await;
            });
            Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": id, "status": "running", "existing": false }))))
        }
        Ok(SyncStart::Running(id)) => {
            Ok((StatusCode::OK, Json(json!({ "job_id": id, "status": "running", "existing": true }))))
        }
        Err(SyncError::NoCatalog) => Err(ApiError::Conflict(SyncError::NoCatalog.to_string())),
        Err(SyncError::Store(e)) => Err(e.into()),
    }
}

/// `GET /api/compliance-engine/sync/{job_id}`: one sync of the team.
pub async fn sync_job(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id: SyncJobId = path_id(&id, "sync job")?;
    let job = sync::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("sync job"))?;
    Ok(Json(job_json(&job)))
}

/// `GET /api/compliance-engine/status`: the catalog, the running and the last sync, overrides, and the
/// frameworks below their thresholds.
pub async fn status(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let catalog = store::current_catalog(&s.mongo).await?;
    let (active, last) = sync::team_jobs(&s.mongo, &caller.team).await?;
    let states = store::team_states(&s.mongo, &caller.team).await?;
    let overridden = states.values().filter(|x| x.manual.is_some()).count();
    let (assessed, breaches) = match &catalog {
        Some(c) => {
            let rows = store::scores(&s.mongo, &caller.team, c, None, s.config.compliance.default_threshold).await?;
            let assessed: Vec<Value> = rows
                .iter()
                .filter(|r| r.meets_threshold.is_some())
                .map(|r| json!({ "framework": r.framework, "score": r.score.score, "threshold": r.threshold, "meets_threshold": r.meets_threshold }))
                .collect();
            let breaches: Vec<Value> = rows
                .iter()
                .filter(|r| r.meets_threshold == Some(false))
                .map(|r| {
                    json!({ "framework": r.framework, "score": r.score.score, "threshold": r.threshold,
                    "gap_points": r.score.score.map(|sc| ((r.threshold - sc) * 100.0).round() / 100.0) })
                })
                .collect();
            (assessed, breaches)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(Json(json!({
        "catalog": catalog.as_ref().map(|c| json!({
            "catalog_id": c.id, "release": c.release, "controls": c.controls, "imported_at": c.imported_at.to_rfc3339(),
        })),
        "active_sync": active.as_ref().map(job_json),
        "last_sync": last.as_ref().map(job_json),
        "overridden_controls": overridden,
        "default_threshold": s.config.compliance.default_threshold,
        "assessed_frameworks": assessed,
        "breaches": breaches,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdBody {
    #[serde(default)]
    framework: Option<String>,
    threshold: f64,
}

/// `PUT /api/compliance-engine/thresholds`: the team's threshold of a framework (or, without
/// `framework`, its own default for all).
pub async fn set_threshold(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ThresholdBody>,
) -> ApiResult<Json<Value>> {
    if !(0.0..=100.0).contains(&body.threshold) || !body.threshold.is_finite() {
        return Err(ApiError::invalid("threshold", "must be a percentage between 0 and 100"));
    }
    let framework = body.framework.as_deref().map(str::trim).filter(|f| !f.is_empty());
    if let Some(f) = framework {
        let catalog = current(&s).await?;
        let key = normalize::framework_key(f);
        if !catalog.frameworks.iter().any(|x| x.key == key) {
            return Err(ApiError::invalid("framework", format!("`{f}` is not a framework of the catalog")));
        }
    }
    store::set_threshold(&s.mongo, &caller.team, framework, body.threshold, &caller.user).await?;
    Ok(Json(json!({ "framework": framework, "threshold": body.threshold })))
}

#[derive(Deserialize, Default)]
pub struct ScoresQuery {
    framework: Option<String>,
}

/// `GET /api/cspm/findings/compliance-scores?framework=`: the team's score per framework of the catalog.
pub async fn scores(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ScoresQuery>,
) -> ApiResult<Json<Value>> {
    let Some(catalog) = store::current_catalog(&s.mongo).await? else {
        return Ok(Json(json!({ "catalog_id": null, "frameworks": [] })));
    };
    let only = q.framework.as_deref().map(str::trim).filter(|f| !f.is_empty());
    let rows = store::scores(&s.mongo, &caller.team, &catalog, only, s.config.compliance.default_threshold).await?;
    if let Some(f) = only
        && rows.is_empty()
    {
        return Err(ApiError::NotFound(format!("framework `{f}` is not in the catalog")));
    }
    Ok(Json(json!({ "catalog_id": catalog.id, "frameworks": rows })))
}
