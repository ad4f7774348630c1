//! Who is calling. The access layer of every route (`routes::table`) authenticates the request — a
//! session token (`Authorization: Bearer`) or an API key (`X-API-Key`) — checks the route's declared
//! access, and leaves a [`Caller`] in the request for the handler. Every team-scoped query takes
//! `caller.team`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use cspm_shared::domain::role::{Permission, Role};
use cspm_shared::domain::scope::Scope;
use cspm_shared::ids::{ApiKeyId, SessionId, TeamId, UserId};

use crate::problem::ApiError;

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A signed-in session: every scope, bounded by the role.
    Session(SessionId),
    /// An API key: its scopes AND its owner's role bound what it may do.
    ApiKey { id: ApiKeyId, scopes: Vec<Scope> },
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    /// The active team: of the session, or the team the key was made in.
    pub team: TeamId,
    /// The user's role in that team, read from the store on every request.
    pub role: Role,
    pub email: String,
    pub via: Via,
}

impl Caller {
    /// Refuses the request (403) unless the caller's role (and, for a key, its scopes) allow the
    /// permission. Routes declare their access in `routes::table`; handlers call this only for checks
    /// that depend on the request (for example promoting someone to admin).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if !self.role.can(permission) {
            return Err(ApiError::Forbidden(format!(
                "your role ({}) does not allow this action (needs {})",
                self.role,
                permission.as_str()
            )));
        }
        if let (Via::ApiKey { scopes, .. }, Some(scope)) = (&self.via, permission.key_scope())
            && !scopes.contains(&scope)
        {
            return Err(ApiError::Forbidden(format!("this API key lacks the scope `{scope}`")));
        }
        Ok(())
    }

    pub fn session(&self) -> Option<&SessionId> {
        match &self.via {
            Via::Session(s) => Some(s),
            Via::ApiKey { .. } => None,
        }
    }

    pub fn api_key(&self) -> Option<&ApiKeyId> {
        match &self.via {
            Via::ApiKey { id, .. } => Some(id),
            Via::Session(_) => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Present on every route whose access is not public; a handler that asks for a caller on a
        // public route is a programming error, refused rather than served.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal("a handler asked for the caller on a route without access control".into())
        })
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
