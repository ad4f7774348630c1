//! The compliance engine: the SCF catalog (`/api/common-controls/…`), syncs and status
//! (`/api/compliance-engine/…`) and scores (`/api/cspm/findings/compliance-scores`). The catalog is
//! shared by every team; control states, overrides, thresholds and syncs are the caller's team's.

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cspm_shared::compliance::catalog::{self, PartKind, Upload};
use cspm_shared::compliance::normalize;
use cspm_shared::compliance::state::{ControlState, Tally};
use cspm_shared::compliance::store::{self, CatalogRecord, ControlStateDoc, Evidence, Override};
use cspm_shared::compliance::sync::{self, SyncError, SyncJob, SyncStart, SyncTrigger};
use cspm_shared::ids::{CatalogId, SyncJobId, UserId};
use cspm_shared::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, rfc3339, rfc3339_opt};
use crate::state::AppState;

/// Files one import may carry.
const MAX_FILES: usize = 64;
/// The time limit of a catalog import (instead of `CSPM_REQUEST_TIMEOUT_SECS`, when that is shorter).
pub const IMPORT_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
/// Longest justification of an override.
const MAX_JUSTIFICATION: usize = 4000;

/// The SCF catalog in force.
#[derive(Serialize, JsonSchema)]
pub struct CatalogView {
    catalog_id: CatalogId,
    release: Option<String>,
    controls: i64,
    domains: i64,
    crosswalk_pairs: i64,
    check_requirements: i64,
    frameworks: Vec<FrameworkView>,
    /// The files it was assembled from.
    files: Vec<cspm_shared::compliance::catalog::SourceFile>,
    warnings: Vec<String>,
    imported_by: UserId,
    imported_at: Time,
}

#[derive(Serialize, JsonSchema)]
pub struct FrameworkView {
    framework: String,
    key: String,
    requirements: i64,
    controls: i64,
}

/// An imported catalog, and the one it replaced.
#[derive(Serialize, JsonSchema)]
pub struct ImportedCatalog {
    #[serde(flatten)]
    catalog: CatalogView,
    previous_catalog_id: Option<CatalogId>,
}

fn catalog_json(c: &CatalogRecord) -> CatalogView {
    CatalogView {
        catalog_id: c.id.clone(),
        release: c.release.clone(),
        controls: c.controls,
        domains: c.domains,
        crosswalk_pairs: c.crosswalk_pairs,
        check_requirements: c.check_requirements,
        frameworks: c
            .frameworks
            .iter()
            .map(|f| FrameworkView {
                framework: f.name.clone(),
                key: f.key.clone(),
                requirements: f.requirements,
                controls: f.controls,
            })
            .collect(),
        files: c.files.clone(),
        warnings: c.warnings.clone(),
        imported_by: c.imported_by.clone(),
        imported_at: rfc3339(c.imported_at),
    }
}

/// `POST /api/common-controls/import-scf` (admin): a `multipart/form-data` body with the catalog in the
/// field `catalog` (YAML or JSON; a second `catalog` of the other layout adds titles), crosswalks in
/// `crosswalk` fields (STRM YAML, or the JSON framework → SCF index), and tools' check → requirement
/// files in `check_mapping` fields. A refused upload changes nothing: the catalog in force stays.
pub async fn import_scf(
    State(s): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<ImportedCatalog>)> {
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
    let body = ImportedCatalog { catalog: catalog_json(&record), previous_catalog_id: previous };
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
pub async fn catalog(State(s): State<AppState>, _caller: Caller) -> ApiResult<Json<CatalogView>> {
    Ok(Json(catalog_json(&current(&s).await?)))
}

fn scf_id(raw: &str) -> ApiResult<String> {
    normalize::scf_id(raw).ok_or_else(|| ApiError::not_found("control"))
}

/// The team's state of a control, with its evidence.
#[derive(Serialize, JsonSchema)]
pub struct TeamControlState {
    /// The state in force: the override's, or the derived one.
    state: ControlState,
    derived_state: ControlState,
    reason: String,
    #[serde(rename = "override")]
    manual: Option<OverrideView>,
    /// Findings counted as failing, passing, undecided and unverified.
    tally: Tally,
    evidence_count: i64,
    /// The first pieces of evidence (the tally counts them all).
    evidence: Vec<Evidence>,
    /// How findings were mapped to the control (path → count).
    paths: std::collections::BTreeMap<String, i64>,
    score_weight: Option<f64>,
    synced_at: Option<Time>,
    sync_job_id: Option<SyncJobId>,
}

#[derive(Serialize, JsonSchema)]
pub struct OverrideView {
    state: ControlState,
    justification: String,
    by: UserId,
    at: Time,
}

/// A control of the catalog and the team's state of it.
#[derive(Serialize, JsonSchema)]
pub struct ControlView {
    scf_id: String,
    title: Option<String>,
    description: String,
    question: Option<String>,
    domain: String,
    weight: Option<i32>,
    catalog_id: CatalogId,
    frameworks: Vec<ControlFramework>,
    keywords: Vec<String>,
    team: TeamControlState,
}

#[derive(Serialize, JsonSchema)]
pub struct ControlFramework {
    framework: String,
    requirements: Vec<RequirementView>,
}

#[derive(Serialize, JsonSchema)]
pub struct RequirementView {
    requirement: String,
    relationship: Option<String>,
}

fn state_json(st: Option<&ControlStateDoc>) -> TeamControlState {
    let Some(st) = st else {
        return TeamControlState {
            state: ControlState::NotAssessed,
            derived_state: ControlState::NotAssessed,
            reason: "no sync has assessed this control yet".into(),
            manual: None,
            tally: Tally::default(),
            evidence_count: 0,
            evidence: Vec::new(),
            paths: Default::default(),
            score_weight: Some(0.0),
            synced_at: None,
            sync_job_id: None,
        };
    };
    TeamControlState {
        state: st.state(),
        derived_state: st.derived_state,
        reason: st.reason.clone(),
        manual: st.manual.as_ref().map(|o| OverrideView {
            state: o.state,
            justification: o.justification.clone(),
            by: o.by.clone(),
            at: rfc3339(o.at),
        }),
        tally: st.tally,
        evidence_count: st.evidence_count,
        evidence: st.evidence.clone(),
        paths: st.paths.clone(),
        score_weight: st.state().weight(st.evidence_count > 0),
        synced_at: rfc3339_opt(st.synced_at),
        sync_job_id: st.sync_job_id.clone(),
    }
}

async fn control_view(s: &AppState, caller: &Caller, raw_id: &str) -> ApiResult<ControlView> {
    let id = scf_id(raw_id)?;
    let catalog = current(s).await?;
    let control = store::control(&s.mongo, &catalog.id, &id).await?.ok_or_else(|| ApiError::not_found("control"))?;
    let state = store::team_state(&s.mongo, &caller.team, &id).await?;
    let mut frameworks: std::collections::BTreeMap<&str, Vec<RequirementView>> = std::collections::BTreeMap::new();
    for g in &control.crosswalk {
        let list = frameworks.entry(g.framework.as_str()).or_default();
        for (requirement, relationship) in g.rows() {
            list.push(RequirementView {
                requirement: requirement.to_string(),
                relationship: relationship.map(str::to_string),
            });
        }
    }
    Ok(ControlView {
        scf_id: control.control.scf_id.clone(),
        title: control.control.title.clone(),
        description: control.control.description.clone(),
        question: control.control.question.clone(),
        domain: control.control.domain.clone(),
        weight: control.control.weight,
        catalog_id: catalog.id.clone(),
        frameworks: frameworks
            .into_iter()
            .map(|(f, r)| ControlFramework { framework: f.to_string(), requirements: r })
            .collect(),
        keywords: control.terms.iter().map(|t| t.stem.clone()).collect(),
        team: state_json(state.as_ref()),
    })
}

/// `GET /api/common-controls/control/{scf_id}`: the control, and the team's state of it with the
/// evidence and how each finding was mapped.
pub async fn control(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ControlView>> {
    Ok(Json(control_view(&s, &caller, &id).await?))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    #[schemars(with = "ControlState")]
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
) -> ApiResult<Json<ControlView>> {
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
pub async fn clear_state(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ControlView>> {
    let scf = scf_id(&id)?;
    if !store::clear_override(&s.mongo, &caller.team, &scf).await? {
        return Err(ApiError::NotFound("the control has no override".into()));
    }
    Ok(Json(control_view(&s, &caller, &scf).await?))
}

/// A compliance sync of the team.
#[derive(Serialize, JsonSchema)]
pub struct SyncJobView {
    job_id: SyncJobId,
    status: cspm_shared::compliance::sync::SyncStatus,
    trigger: SyncTrigger,
    requested_by: Option<UserId>,
    catalog_id: CatalogId,
    created_at: Time,
    finished_at: Option<Time>,
    /// What the sync assessed (when it finished).
    result: Option<cspm_shared::compliance::sync::SyncResult>,
    error: Option<String>,
}

/// A sync started (202), or the one already running (200).
#[derive(Serialize, JsonSchema)]
pub struct SyncStarted {
    job_id: SyncJobId,
    /// Always `running`.
    status: &'static str,
    /// Whether it is the sync that was already running.
    existing: bool,
}

fn job_json(j: &SyncJob) -> SyncJobView {
    SyncJobView {
        job_id: j.id.clone(),
        status: j.status,
        trigger: j.trigger,
        requested_by: j.requested_by.clone(),
        catalog_id: j.catalog_id.clone(),
        created_at: rfc3339(j.created_at),
        finished_at: rfc3339_opt(j.finished_at),
        result: j.result.clone(),
        error: j.error.clone(),
    }
}

/// `POST /api/compliance-engine/sync`: starts the team's sync (202 with its job id) or, while one is
/// running, answers 200 with that one's id.
pub async fn start_sync(State(s): State<AppState>, caller: Caller) -> ApiResult<(StatusCode, Json<SyncStarted>)> {
    match sync::claim(&s.mongo, &caller.team, SyncTrigger::Manual, Some(&caller.user)).await {
        Ok(SyncStart::Claimed(c)) => {
            let id = c.job_id.clone();
            let mongo = s.mongo.clone();
            tokio::spawn(async move {
                let _ = sync::run(&mongo, c).await;
            });
            Ok((StatusCode::ACCEPTED, Json(SyncStarted { job_id: id, status: "running", existing: false })))
        }
        Ok(SyncStart::Running(id)) => {
            Ok((StatusCode::OK, Json(SyncStarted { job_id: id, status: "running", existing: true })))
        }
        Err(SyncError::NoCatalog) => Err(ApiError::Conflict(SyncError::NoCatalog.to_string())),
        Err(SyncError::Store(e)) => Err(e.into()),
    }
}

/// `GET /api/compliance-engine/sync/{job_id}`: one sync of the team.
pub async fn sync_job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SyncJobView>> {
    let id: SyncJobId = path_id(&id, "sync job")?;
    let job = sync::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("sync job"))?;
    Ok(Json(job_json(&job)))
}

/// `GET /api/compliance-engine/status`: the catalog, the running and the last sync, overrides, and the
/// frameworks below their thresholds.
/// The team's compliance engine.
#[derive(Serialize, JsonSchema)]
pub struct EngineStatus {
    catalog: Option<CatalogSummary>,
    active_sync: Option<SyncJobView>,
    last_sync: Option<SyncJobView>,
    overridden_controls: usize,
    default_threshold: f64,
    assessed_frameworks: Vec<AssessedFramework>,
    /// The frameworks below their thresholds.
    breaches: Vec<Breach>,
}

#[derive(Serialize, JsonSchema)]
pub struct CatalogSummary {
    catalog_id: CatalogId,
    release: Option<String>,
    controls: i64,
    imported_at: Time,
}

#[derive(Serialize, JsonSchema)]
pub struct AssessedFramework {
    framework: String,
    score: Option<f64>,
    threshold: f64,
    meets_threshold: Option<bool>,
}

#[derive(Serialize, JsonSchema)]
pub struct Breach {
    framework: String,
    score: Option<f64>,
    threshold: f64,
    /// How far below the threshold, in points.
    gap_points: Option<f64>,
}

pub async fn status(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<EngineStatus>> {
    let catalog = store::current_catalog(&s.mongo).await?;
    let (active, last) = sync::team_jobs(&s.mongo, &caller.team).await?;
    let states = store::team_states(&s.mongo, &caller.team).await?;
    let overridden = states.values().filter(|x| x.manual.is_some()).count();
    let (assessed, breaches) = match &catalog {
        Some(c) => {
            let rows = store::scores(&s.mongo, &caller.team, c, None, s.config.compliance.default_threshold).await?;
            let assessed: Vec<AssessedFramework> = rows
                .iter()
                .filter(|r| r.meets_threshold.is_some())
                .map(|r| AssessedFramework {
                    framework: r.framework.clone(),
                    score: r.score.score,
                    threshold: r.threshold,
                    meets_threshold: r.meets_threshold,
                })
                .collect();
            let breaches: Vec<Breach> = rows
                .iter()
                .filter(|r| r.meets_threshold == Some(false))
                .map(|r| Breach {
                    framework: r.framework.clone(),
                    score: r.score.score,
                    threshold: r.threshold,
                    gap_points: r.score.score.map(|sc| ((r.threshold - sc) * 100.0).round() / 100.0),
                })
                .collect();
            (assessed, breaches)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(Json(EngineStatus {
        catalog: catalog.as_ref().map(|c| CatalogSummary {
            catalog_id: c.id.clone(),
            release: c.release.clone(),
            controls: c.controls,
            imported_at: rfc3339(c.imported_at),
        }),
        active_sync: active.as_ref().map(job_json),
        last_sync: last.as_ref().map(job_json),
        overridden_controls: overridden,
        default_threshold: s.config.compliance.default_threshold,
        assessed_frameworks: assessed,
        breaches,
    }))
}

#[derive(Deserialize, JsonSchema)]
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
) -> ApiResult<Json<ThresholdSet>> {
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
    Ok(Json(ThresholdSet { framework: framework.map(str::to_string), threshold: body.threshold }))
}

/// A threshold set: a framework's, or (without `framework`) the team's default.
#[derive(Serialize, JsonSchema)]
pub struct ThresholdSet {
    framework: Option<String>,
    threshold: f64,
}

/// The team's score per framework of the catalog in force.
#[derive(Serialize, JsonSchema)]
pub struct Scores {
    /// None until a catalog is imported.
    catalog_id: Option<CatalogId>,
    /// Per framework: its score, its counts and whether it meets its threshold.
    frameworks: Vec<cspm_shared::compliance::store::FrameworkRow>,
}

#[derive(Deserialize, Default, JsonSchema)]
pub struct ScoresQuery {
    framework: Option<String>,
}

/// `GET /api/cspm/findings/compliance-scores?framework=`: the team's score per framework of the catalog.
pub async fn scores(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ScoresQuery>,
) -> ApiResult<Json<Scores>> {
    let Some(catalog) = store::current_catalog(&s.mongo).await? else {
        return Ok(Json(Scores { catalog_id: None, frameworks: Vec::new() }));
    };
    let only = q.framework.as_deref().map(str::trim).filter(|f| !f.is_empty());
    let rows = store::scores(&s.mongo, &caller.team, &catalog, only, s.config.compliance.default_threshold).await?;
    if let Some(f) = only
        && rows.is_empty()
    {
        return Err(ApiError::NotFound(format!("framework `{f}` is not in the catalog")));
    }
    Ok(Json(Scores { catalog_id: Some(catalog.id), frameworks: rows }))
}
