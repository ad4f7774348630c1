//! The HTTP routes, one file per resource.

pub mod accounts;
pub mod api_keys;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod compliance;
pub mod findings;
pub mod native;
pub mod scans;
pub mod schedules;
pub mod teams;
pub mod threat_intel;
pub mod vulnerabilities;

use axum::Router;
use axum::routing::{get, post, put};
use cspm_shared::time::Timestamp;

use crate::problem::ApiError;
use crate::state::AppState;

/// Every `/api` route. Paths are the seed's, so its documented clients keep working (list and create
/// also answer with a trailing slash, as the seed's do).
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/me", get(auth::me))
        .route("/api/cloud-accounts", get(accounts::list).post(accounts::create))
        .route("/api/cloud-accounts/", get(accounts::list).post(accounts::create))
        .route("/api/cloud-accounts/{id}", get(accounts::get).put(accounts::update).delete(accounts::delete))
        .route("/api/cloud-accounts/{id}/scan", post(scans::scan_account))
        .route("/api/cloud-scans", get(scans::list).post(scans::initiate))
        .route("/api/cloud-scans/", get(scans::list).post(scans::initiate))
        .route("/api/cloud-scans/initiate", post(scans::initiate))
        .route("/api/cloud-scans/{run_id}", axum::routing::delete(scans::cancel))
        .route("/api/cloud-scans/{run_id}/status", get(scans::status))
        .route("/api/cloud-scans/{run_id}/summary", get(scans::summary))
        .route("/api/cloud-scans/{run_id}/ocsf", get(scans::ocsf))
        .route("/api/cloud-scans/{run_id}/artifacts", get(artifacts::list))
        .route("/api/cloud-scans/{run_id}/artifacts/{artifact_id}", get(artifacts::download))
        .route("/api/cspm/findings", get(findings::list))
        .route("/api/cspm/findings/grouped", get(findings::grouped))
        .route("/api/cspm/findings/stats", get(findings::stats))
        .route("/api/cspm/findings/compliance-scores", get(compliance::scores))
        .route("/api/cspm/findings/{id}", get(findings::get))
        .route("/api/cspm/findings/{id}/resolve", post(findings::resolve))
        .route("/api/cspm/findings/{id}/suppress", post(findings::suppress))
        .route("/api/cspm/findings/{id}/unsuppress", post(findings::unsuppress))
        .route("/api/vulnerabilities/occurrences", get(vulnerabilities::list))
        .route("/api/vulnerabilities/occurrences/{id}", get(vulnerabilities::get))
        .route("/api/vulnerabilities/occurrences/{id}/status", put(vulnerabilities::set_status))
        .route("/api/schedules", get(schedules::list).post(schedules::create))
        .route("/api/schedules/", get(schedules::list).post(schedules::create))
        .route("/api/schedules/{id}", get(schedules::get).put(schedules::update).delete(schedules::delete))
        .route("/api/schedules/{id}/pause", post(schedules::pause))
        .route("/api/schedules/{id}/resume", post(schedules::resume))
        .route("/api/schedules/{id}/history", get(schedules::history))
        .route("/api/native-scans/network-discovery", post(native::network_discovery))
        .route("/api/native-scans/web-vulnerability", post(native::web_vulnerability))
        .route("/api/native-scans/container-image", post(native::container_image))
        .route("/api/native-scans/filesystem", post(native::filesystem))
        .route("/api/native-scans/results", get(native::results_list))
        .route("/api/native-scans/results/{scan_id}", get(native::result))
        .route("/api/threat-intel/kev", get(threat_intel::kev_status))
        .route("/api/threat-intel/kev/import", post(threat_intel::kev_import))
        .route("/api/common-controls/catalog", get(compliance::catalog))
        .route("/api/common-controls/control/{scf_id}", get(compliance::control))
        .route(
            "/api/common-controls/control/{scf_id}/state",
            put(compliance::set_state).delete(compliance::clear_state),
        )
        .route("/api/compliance-engine/sync", post(compliance::start_sync))
        .route("/api/compliance-engine/sync/{job_id}", get(compliance::sync_job))
        .route("/api/compliance-engine/status", get(compliance::status))
        .route("/api/compliance-engine/thresholds", put(compliance::set_threshold))
}

pub const IMPORT_SCF_PATH: &str = "/api/common-controls/import-scf";

/// The SCF catalog upload, with its own body limit (`CSPM_SCF_IMPORT_MAX_BYTES`: the catalog files are
/// several MB; every other route keeps `CSPM_MAX_BODY_BYTES`).
pub fn import_router(max_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(IMPORT_SCF_PATH, post(compliance::import_scf).layer(axum::extract::DefaultBodyLimit::max(max_bytes)))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// BSON to JSON; stored times (`*_at` fields, and `first_seen` / `last_seen`, epoch milliseconds)
/// become RFC 3339.
pub fn bson_to_json(b: bson::Bson) -> serde_json::Value {
    use bson::Bson;
    use serde_json::{Value, json};
    let is_time = |k: &str| k.ends_with("_at") || k == "first_seen" || k == "last_seen" || k == "until";
    match b {
        Bson::Document(d) => Value::Object(
            d.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Bson::Int64(ms) if is_time(&k) => json!(Timestamp::from_millis(ms).to_rfc3339()),
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

pub fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339()
}

pub fn rfc3339_opt(t: Option<Timestamp>) -> Option<String> {
    t.map(rfc3339)
}
