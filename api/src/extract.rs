//! Extractors that answer bad input with the one problem shape: malformed JSON is 400, a body of the
//! wrong shape or with invalid values is 422, a missing JSON content type is 415, an oversized body 413.

use std::str::FromStr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// `Json<T>` with problem-details rejections.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::Unprocessable {
                    detail: format!("invalid request body: {}", inner_message(&e)),
                    errors: vec![],
                },
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::BadRequest(format!("malformed JSON: {}", inner_message(&e)))
                }
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::UnsupportedMediaType("expected a JSON body with `Content-Type: application/json`".into())
                }
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge("the request body is too large".into())
                }
                other => ApiError::BadRequest(format!("unreadable request body: {}", other.body_text())),
            }),
        }
    }
}

/// serde's message without axum's prefix ("Failed to deserialize the JSON body into the target type: ").
fn inner_message(e: &dyn std::error::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// `Query<T>` with problem-details rejections (a query string that does not parse is 400).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::BadRequest(format!("invalid query string: {}", inner_message(&e))))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// Parses an id from the path. An id that cannot exist is simply not found.
pub fn path_id<T: FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse::<T>().map_err(|_| ApiError::not_found(what))
}

/// Pagination: `skip` (default 0) and `limit` (default `default`, at most `max`).
pub fn page(skip: Option<u64>, limit: Option<i64>, default: i64, max: i64) -> Result<(u64, i64), ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and {max}")));
    }
    let skip = skip.unwrap_or(0);
    if skip > 1_000_000 {
        return Err(ApiError::invalid("skip", "must be at most 1000000"));
    }
    Ok((skip, limit))
}
