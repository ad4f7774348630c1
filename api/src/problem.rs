//! One error shape for every answer that is not a success: RFC 9457 problem details
//! (`application/problem+json`). Server-side failures get an opaque body with an id that the logs carry.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cspm_shared::artifacts::ArtifactError;
use cspm_shared::error::StoreError;
use cspm_shared::orchestrate::StartError;
use serde::Serialize;

/// A field-level complaint in a 422 answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Unprocessable { detail: String, errors: Vec<FieldError> },
    #[error("{0}")]
    Unavailable(String),
    /// A rate limit was reached; `retry_after` in seconds.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    /// Anything unexpected. The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Unprocessable {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError { field: field.to_string(), message }],
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Error");
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let (detail, errors, error_id) = match self {
            ApiError::Internal(cause) => {
                let id = cspm_shared::ids::RunId::new().ulid().to_string();
                tracing::error!(error_id = %id, cause = %cause, "request failed");
                ("the server could not complete the request".to_string(), vec![], Some(id))
            }
            ApiError::Unprocessable { detail, errors } => (detail, errors, None),
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                (detail, vec![], None)
            }
            other => (other.to_string(), vec![], None),
        };
        let body = Problem { kind: "about:blank", title, status: status.as_u16(), detail, errors, error_id };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DatabaseUnavailable(_) => {
                ApiError::Unavailable("the database is unavailable; retry in a few seconds".into())
            }
            StoreError::QueueUnavailable(_) => {
                ApiError::Unavailable("the job queue (Redis) is unavailable; retry in a few seconds".into())
            }
            StoreError::Duplicate => ApiError::Conflict("an object with the same identity already exists".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::Database(s) => s.into(),
            // A document whose object is gone (removed by hand, or by retention half-way).
            ArtifactError::NotFound { .. } => {
                tracing::warn!(error = %e, "an artifact's object is missing");
                ApiError::not_found("artifact")
            }
            other => {
                // The cause names the store and the key: for the log, not for the caller.
                tracing::warn!(error = %other, "artifact store failed");
                ApiError::Unavailable("the artifact store is unavailable; retry in a few seconds".into())
            }
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::NotFound => ApiError::not_found("cloud account"),
            StartError::Invalid(msg) => ApiError::Unprocessable { detail: msg, errors: vec![] },
            StartError::InvalidField(field, msg) => ApiError::invalid(field, msg),
            StartError::Store(s) => s.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
