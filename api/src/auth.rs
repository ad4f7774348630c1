//! Who is calling: the bearer token becomes a [`Caller`] (user, team, role), and handlers ask it for the
//! permission they need. Every team-scoped query takes `caller.team`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use cspm_shared::auth::jwt::TokenError;
use cspm_shared::domain::role::{Permission, Role};
use cspm_shared::ids::{TeamId, UserId};

use crate::problem::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub team: TeamId,
    pub role: Role,
    pub email: String,
}

impl Caller {
    /// Refuses the request (403) unless the caller's role holds the permission.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.can(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "your role ({}) does not allow this action (needs {})",
                self.role,
                permission.as_str()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("authentication required: send `Authorization: Bearer <token>`".into())
        })?;
        let text = value.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must use the Bearer scheme".into()))?;
        let claims = state.tokens.verify(token.trim(), now_secs()).map_err(|e| {
            ApiError::Unauthorized(match e {
                TokenError::Expired => "the token has expired; sign in again".into(),
                _ => "invalid token".into(),
            })
        })?;
        Ok(Caller { user: claims.sub, team: claims.team, role: claims.role, email: claims.email })
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
