//! The audit trail: `GET /api/audit-trail`. (Placeholder until the handlers land.)

use crate::problem::ApiError;

pub async fn list() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn actions() -> ApiError {
    ApiError::NotFound("no such route".into())
}
