//! The HTTP routes, one file per resource.

pub mod accounts;
pub mod auth;
pub mod native;
pub mod scans;

use axum::Router;
use axum::routing::{get, post};
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
        .route("/api/native-scans/network-discovery", post(native::network_discovery))
        .route("/api/native-scans/results", get(native::results_list))
        .route("/api/native-scans/results/{scan_id}", get(native::result))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339()
}

pub fn rfc3339_opt(t: Option<Timestamp>) -> Option<String> {
    t.map(rfc3339)
}
