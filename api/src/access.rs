//! The access layer every route of `routes::table` runs through: authenticate (a session's bearer
//! token, or an API key in `X-API-Key`), apply the key's rate limit, check the route's declared access
//! (the role's permission AND, for a key, its scope), leave the [`Caller`] for the handler, and record
//! the call in the audit trail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cspm_shared::audit::AuditEvent;
use cspm_shared::auth::jwt::TokenError;
use cspm_shared::domain::role::Permission;
use cspm_shared::domain::scope::Scope;
use cspm_shared::ids::AuditId;
use cspm_shared::ratelimit::Decision;
use cspm_shared::store::api_keys::{self, KeyRefusal};
use cspm_shared::store::{sessions, users};
use cspm_shared::time::Timestamp;

use crate::auth::{Caller, Via};
use crate::problem::ApiError;
use crate::routes::Endpoint;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials (sign-in, liveness).
    Public,
    /// Any signed-in member of the team; API keys as `Keys` says.
    SignedIn(Keys),
    /// The caller's role must hold the permission; API keys as `Keys` says.
    Needs(Permission, Keys),
}

/// Whether and how an API key may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Any valid key.
    Any,
    /// A key holding this scope.
    Scope(Scope),
    /// No key: a signed-in session only (identity administration).
    None,
}

impl Access {
    /// The permission, with the scope that stands for it (a permission without one is session-only).
    pub fn needs(p: Permission) -> Self {
        Access::Needs(p, p.key_scope().map(Keys::Scope).unwrap_or(Keys::None))
    }

    /// Whether a caller with this role and credentials passes, and why not.
    pub fn check(&self, caller: &Caller) -> Result<(), ApiError> {
        let (permission, keys) = match *self {
            Access::Public => return Ok(()),
            Access::SignedIn(k) => (None, k),
            Access::Needs(p, k) => (Some(p), k),
        };
        if let Via::ApiKey { scopes, .. } = &caller.via {
            match keys {
                Keys::Any => {}
                Keys::Scope(s) if scopes.contains(&s) => {}
                Keys::Scope(s) => return Err(ApiError::Forbidden(format!("this API key lacks the scope `{s}`"))),
                Keys::None => {
                    return Err(ApiError::Forbidden(
                        "this action needs a signed-in session; API keys cannot perform it".into(),
                    ));
                }
            }
        }
        if let Some(p) = permission
            && !caller.role.can(p)
        {
            return Err(ApiError::Forbidden(format!(
                "your role ({}) does not allow this action (needs {})",
                caller.role,
                p.as_str()
            )));
        }
        Ok(())
    }
}

/// What the access layer knows about the route it guards.
#[derive(Debug)]
struct Route {
    method: Method,
    path: &'static str,
    access: Access,
    action: &'static str,
    audited: bool,
}

#[derive(Clone)]
struct Gate {
    state: AppState,
    route: Arc<Route>,
}

/// The router of every endpoint of the table, each behind its access layer.
pub fn router(state: &AppState, table: Vec<Endpoint>) -> Router<AppState> {
    let mut router = Router::new();
    for e in table {
        let gate = Gate {
            state: state.clone(),
            route: Arc::new(Route {
                method: e.method.clone(),
                path: e.path,
                access: e.access,
                action: e.action,
                audited: e.audited,
            }),
        };
        router = router.route(e.path, e.handler.route_layer(middleware::from_fn_with_state(gate, guard)));
    }
    router
}

/// Set by a handler on its response when the actor is known only there (sign-in), for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditActor {
    pub user: cspm_shared::ids::UserId,
    pub team: Option<cspm_shared::ids::TeamId>,
    pub email: String,
    pub role: Option<cspm_shared::domain::role::Role>,
}

async fn guard(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let at = Timestamp::now();
    let ip = client_ip(&req);
    let user_agent = header_text(req.headers(), header::USER_AGENT.as_str());
    let path = req.uri().path().to_string();
    let target = cspm_shared::audit::first_path_param(g.route.path, &path).map(|v| v.chars().take(64).collect());
    let (mut resp, caller, limit, body) = match authenticate(&g.state, g.route.access, req.headers()).await {
        Err((e, limit)) => (e.into_response(), None, limit, None),
        Ok((caller, limit)) => {
            // Only an admitted request's body is read: sign-in bodies are never kept; other audited
            // bodies are summarised with secrets redacted.
            let read = if g.route.audited && !cspm_shared::audit::body_is_never_stored(g.route.path) {
                summarise_body(req, g.state.config.max_body_bytes).await
            } else {
                Ok((req, None))
            };
            match read {
                Err(refused) => (refused, caller, limit, None),
                Ok((mut req, body)) => {
                    if let Some(c) = &caller {
                        req.extensions_mut().insert(c.clone());
                    }
                    (next.run(req).await, caller, limit, body)
                }
            }
        }
    };
    if let Some(d) = limit {
        rate_headers(resp.headers_mut(), &d);
    }
    if g.route.audited {
        let actor = resp.extensions().get::<AuditActor>().cloned();
        let status = resp.status().as_u16();
        let event = AuditEvent {
            id: AuditId::new(),
            at,
            team_id: caller.as_ref().map(|c| c.team.clone()).or_else(|| actor.as_ref().and_then(|a| a.team.clone())),
            actor_id: caller.as_ref().map(|c| c.user.clone()).or_else(|| actor.as_ref().map(|a| a.user.clone())),
            actor_email: caller.as_ref().map(|c| c.email.clone()).or_else(|| actor.as_ref().map(|a| a.email.clone())),
            actor_role: caller.as_ref().map(|c| c.role).or_else(|| actor.as_ref().and_then(|a| a.role)),
            api_key_id: caller.as_ref().and_then(|c| c.api_key().cloned()),
            method: g.route.method.to_string(),
            path,
            route: g.route.path.to_string(),
            action: g.route.action.to_string(),
            status,
            success: status < 400,
            duration_ms: started.elapsed().as_millis() as i64,
            ip,
            user_agent,
            body,
            target_id: target,
        };
        let mongo = g.state.mongo.clone();
        // Written after the answer; a failure is logged (the event names no secret).
        tokio::spawn(async move {
            if let Err(e) = cspm_shared::store::audit::insert(&mongo, &event).await {
                tracing::error!(error = %e, action = %event.action, "audit event not recorded");
            }
        });
    }
    resp
}

type Refusal = (ApiError, Option<Decision>);

/// Resolves the caller and checks the route's access. `None` on public routes.
async fn authenticate(
    s: &AppState,
    access: Access,
    headers: &HeaderMap,
) -> Result<(Option<Caller>, Option<Decision>), Refusal> {
    if access == Access::Public {
        return Ok((None, None));
    }
    let now = Timestamp::now();
    let (caller, limit) = if let Some(key) = headers.get("x-api-key") {
        let key = key.to_str().map_err(|_| (ApiError::Unauthorized("invalid API key".into()), None))?;
        by_key(s, key.trim(), now).await?
    } else {
        (by_session(s, headers, now).await.map_err(|e| (e, None))?, None)
    };
    access.check(&caller).map_err(|e| (e, limit.clone()))?;
    Ok((Some(caller), limit))
}

async fn by_session(s: &AppState, headers: &HeaderMap, now: Timestamp) -> Result<Caller, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized(
            "authentication required: send `Authorization: Bearer <token>` or `X-API-Key: <key>`".into(),
        )
    })?;
    let text = value.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header must use the Bearer scheme".into()))?;
    let claims = s.tokens.verify(token.trim(), now.millis() / 1000).map_err(|e| {
        ApiError::Unauthorized(match e {
            TokenError::Expired => "the token has expired; sign in again".into(),
            _ => "invalid token".into(),
        })
    })?;
    let session = sessions::get_active(&s.mongo, &claims.sid, now)
        .await?
        .filter(|sess| sess.user_id == claims.sub)
        .ok_or_else(|| ApiError::Unauthorized("the session has ended; sign in again".into()))?;
    let user = users::get(&s.mongo, &claims.sub)
        .await?
        .filter(|u| u.status == "active")
        .ok_or_else(|| ApiError::Unauthorized("the account is not active".into()))?;
    let role = user.role_in(&session.team_id).ok_or_else(|| {
        ApiError::Unauthorized("you are no longer a member of this session's team; sign in again".into())
    })?;
    Ok(Caller { user: user.id, team: session.team_id, role, email: user.email, via: Via::Session(session.id) })
}

async fn by_key(s: &AppState, presented: &str, now: Timestamp) -> Result<(Caller, Option<Decision>), Refusal> {
    let key = match api_keys::authenticate(&s.mongo, presented, now).await.map_err(|e| (ApiError::from(e), None))? {
        Ok(k) => k,
        Err(KeyRefusal::Unknown) => return Err((ApiError::Unauthorized("invalid API key".into()), None)),
        Err(KeyRefusal::Expired) => return Err((ApiError::Unauthorized("the API key has expired".into()), None)),
        Err(KeyRefusal::Revoked) => return Err((ApiError::Unauthorized("the API key has been revoked".into()), None)),
    };
    // Every call of the key counts, refused ones included.
    let limit =
        match s.limiter.hit(&format!("key:{}", key.id), key.rate_limit_per_minute, Duration::from_secs(60)).await {
            Ok(d) => Some(d),
            Err(e) => {
                // Redis away: the key still works (the queue-backed routes fail on their own); said in the log.
                tracing::warn!(error = %e, "API-key rate limit not applied");
                None
            }
        };
    if let Some(d) = &limit
        && !d.allowed
    {
        return Err((
            ApiError::TooManyRequests {
                detail: format!("the API key's rate limit ({} requests per minute) is reached", d.limit),
                retry_after: d.reset_secs,
            },
            limit,
        ));
    }
    let user = users::get(&s.mongo, &key.owner_id)
        .await
        .map_err(|e| (ApiError::from(e), limit.clone()))?
        .filter(|u| u.status == "active")
        .ok_or_else(|| (ApiError::Unauthorized("the API key's owner is not active".into()), limit.clone()))?;
    let role = user.role_in(&key.team_id).ok_or_else(|| {
        (ApiError::Unauthorized("the API key's owner is no longer a member of its team".into()), limit.clone())
    })?;
    let mongo = s.mongo.clone();
    let id = key.id.clone();
    tokio::spawn(async move {
        if let Err(e) = api_keys::record_use(&mongo, &id, now).await {
            tracing::debug!(error = %e, "API-key use not recorded");
        }
    });
    let caller = Caller {
        user: user.id,
        team: key.team_id,
        role,
        email: user.email,
        via: Via::ApiKey { id: key.id, scopes: key.scopes },
    };
    Ok((caller, limit))
}

fn rate_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(d.reset_secs));
}

/// The client's address, for handlers.
pub struct ClientIp(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())))
    }
}

/// The peer address (the API is meant to sit behind nothing that rewrites it, or to be told otherwise).
pub fn client_ip(req: &Request) -> Option<String> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

fn header_text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(256).collect())
}

/// The media type of a Content-Type header without its parameters, as a short token (the header is the
/// caller's text: it must not carry anything else into the audit trail).
fn media_type(raw: &str) -> String {
    let essence = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.chars().filter(|c| c.is_ascii_alphanumeric() || "/+.-".contains(*c)).take(64).collect()
}

/// Reads a JSON body of a known length within the body limit to summarise it for the audit trail, and
/// puts it back. Other bodies (catalog uploads, a KEV catalog of several MB, a body of unknown length)
/// are described by type and size only, and stream on untouched to the handler, which applies its own
/// limit.
async fn summarise_body(req: Request, limit: usize) -> Result<(Request, Option<String>), Response> {
    let ctype = header_text(req.headers(), header::CONTENT_TYPE.as_str()).map(|c| media_type(&c));
    let is_json = ctype.as_deref().is_some_and(|c| c.starts_with("application/json") || c.contains("+json"));
    let len: Option<usize> =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if !is_json || len.is_none_or(|n| n > limit) {
        let summary = match (ctype.as_deref(), len) {
            (_, Some(0)) => None,
            (c, Some(n)) => Some(format!("<{}, {n} bytes>", c.unwrap_or("no content type"))),
            (c, None) => Some(format!("<{}, streamed>", c.unwrap_or("no content type"))),
        };
        return Ok((req, summary));
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return Err(ApiError::PayloadTooLarge("the request body is too large".into()).into_response()),
    };
    let summary = cspm_shared::audit::body_summary(ctype.as_deref(), &bytes);
    Ok((Request::from_parts(parts, axum::body::Body::from(bytes)), summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_media_type_of_a_content_type_reaches_the_trail() {
        assert_eq!(media_type("application/json; charset=utf-8"), "application/json");
        assert_eq!(media_type("Multipart/Form-Data; boundary=secret-token"), "multipart/form-data");
        assert_eq!(media_type("text/plain\"<script>x</script>"), "text/plainscriptx/script");
        assert!(media_type(&"a".repeat(300)).len() <= 64);
    }
}
