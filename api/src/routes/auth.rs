//! Sign-in, sign-out, the caller's identity, password change and the caller's sessions.
//!
//! Sign-in answers an unknown email, a wrong password, a locked account and a disabled account with the
//! same 401 and the same work (a PBKDF2 verification against a dummy hash when there is no user). Five
//! failures in a row (`CSPM_LOGIN_MAX_FAILURES`) lock the account for 15 minutes
//! (`CSPM_LOGIN_LOCKOUT_SECS`); the lock clears itself. Each client address may try
//! `CSPM_LOGIN_RATE_PER_MINUTE` times a minute. A success opens a session (at most
//! `CSPM_MAX_SESSIONS_PER_USER`, the oldest ends) with a fixed lifetime; the token names the session.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cspm_shared::auth::jwt::Claims;
use cspm_shared::auth::password::{check_policy, dummy_hash, hash_password, verify_password};
use cspm_shared::domain::role::Role;
use cspm_shared::ids::{ApiKeyId, SessionId, TeamId, UserId};
use cspm_shared::store::{sessions, users};
use cspm_shared::time::Timestamp;
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::access::{AuditActor, ClientIp};
use crate::auth::Caller;
use crate::extract::{ApiJson, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize, JsonSchema)]
pub struct LoginBody {
    email: String,
    #[schemars(with = "crate::openapi::Password")]
    password: SecretString,
}

const BAD_CREDENTIALS: &str = "invalid email or password";

pub async fn login(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<(axum::Extension<AuditActor>, Json<LoginAnswer>), Refused> {
    if let Some(ip) = &ip {
        match s.limiter.hit(&format!("login:{ip}"), s.config.login_rate_per_minute, Duration::from_secs(60)).await {
            Ok(d) if !d.allowed => {
                return Err(ApiError::TooManyRequests {
                    detail: "too many sign-in attempts from this address; wait a minute".into(),
                    retry_after: d.reset_secs,
                }
                .into());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sign-in rate limit not applied"),
        }
    }
    if body.email.len() > 320 || body.password.expose_secret().len() > 1024 {
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()).into());
    }
    let user = users::find_by_email(&s.mongo, &body.email).await?;
    let now = Timestamp::now();
    // Unknown users are checked against a dummy hash so that every failure costs the same time; so are
    // locked ones, so that a lock is not visible in the timing either.
    let locked = user.as_ref().is_some_and(|u| u.locked_at(now));
    let stored = match &user {
        Some(u) if !locked => u.password_hash.clone(),
        _ => dummy_hash().to_string(),
    };
    let password = body.password;
    let (verified, upgraded) = tokio::task::spawn_blocking(move || {
        let v = verify_password(password.expose_secret(), &stored);
        // A legacy hash (fewer iterations) is replaced while the plain password is at hand.
        let upgraded = v.needs_rehash.then(|| hash_password(password.expose_secret()));
        (v, upgraded)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = match user {
        Some(u) if verified.ok && !locked && u.status == "active" => u,
        other => {
            let mut outcome = "failed";
            if let Some(u) = &other {
                if locked {
                    outcome = "locked";
                } else if !verified.ok {
                    let cfg = &s.config;
                    if users::record_failure(&s.mongo, &u.id, now, cfg.login_max_failures, cfg.login_lockout).await? {
                        tracing::warn!(user.id = %u.id, "account locked after repeated failed sign-ins");
                    }
                }
            }
            s.metrics.logins.get_or_create(&vec![("outcome".into(), outcome.into())]).inc();
            let mut resp = ApiError::Unauthorized(BAD_CREDENTIALS.into()).into_response();
            if let Some(u) = other {
                resp.extensions_mut().insert(AuditActor {
                    user: u.id.clone(),
                    team: Some(u.active_team_id.clone()),
                    email: u.email.clone(),
                    role: u.active_role(),
                });
            }
            return Err(Refused(resp));
        }
    };
    // The active team, or the first team the user still belongs to.
    let (team, role) = match user.active_role() {
        Some(r) => (user.active_team_id.clone(), r),
        None => match user.memberships.first() {
            Some(m) => {
                users::set_active_team(&s.mongo, &user.id, &m.team_id).await?;
                (m.team_id.clone(), m.role)
            }
            None => return Err(ApiError::Forbidden("you are not a member of any team".into()).into()),
        },
    };
    users::record_login(&s.mongo, &user.id, upgraded).await?;
    let origin = sessions::Origin {
        ip,
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
    };
    let cfg = &s.config;
    let session =
        sessions::create(&s.mongo, &user.id, &team, cfg.session_ttl, cfg.max_sessions_per_user, origin).await?;
    let claims = Claims {
        sub: user.id.clone(),
        sid: session.id.clone(),
        iat: session.created_at.millis() / 1000,
        exp: session.expires_at.millis() / 1000,
        jti: cspm_shared::ids::RunId::new().ulid().to_string(),
    };
    let token = s.tokens.sign(&claims);
    s.metrics.logins.get_or_create(&vec![("outcome".into(), "ok".into())]).inc();
    let answer = LoginAnswer {
        access_token: token,
        token_type: "bearer",
        expires_in: cfg.session_ttl.as_secs(),
        session_id: session.id,
        user: user_view(&user.id, &user.email, &user.name, &team, role),
    };
    // The audit trail names who signed in (the request itself carried no identity).
    let actor = AuditActor { user: user.id, team: Some(team), email: user.email, role: Some(role) };
    Ok((axum::Extension(actor), Json(answer)))
}

/// A refused sign-in: its problem document, with the user it names for the audit trail (if any).
pub struct Refused(Response);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        self.0
    }
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused(e.into_response())
    }
}

impl From<cspm_shared::error::StoreError> for Refused {
    fn from(e: cspm_shared::error::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// A new session's bearer token.
#[derive(Serialize, JsonSchema)]
pub struct LoginAnswer {
    access_token: String,
    /// Always `bearer`.
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
    session_id: SessionId,
    user: UserView,
}

/// A signed-in user in their active team.
#[derive(Serialize, JsonSchema)]
pub struct UserView {
    id: UserId,
    email: String,
    name: String,
    team_id: TeamId,
    role: Role,
}

/// The caller.
#[derive(Serialize, JsonSchema)]
pub struct Me {
    #[serde(flatten)]
    user: UserView,
    team_name: Option<String>,
    /// The session, when the caller signed in (not with an API key).
    session_id: Option<SessionId>,
    /// The API key, when the caller used one.
    api_key_id: Option<ApiKeyId>,
}

/// A plain outcome: `signed_out`.
#[derive(Serialize, JsonSchema)]
pub struct SignedOut {
    status: &'static str,
}

/// A changed password, and how many of the caller's other sessions ended.
#[derive(Serialize, JsonSchema)]
pub struct PasswordChanged {
    /// Always `password_changed`.
    status: &'static str,
    sessions_ended: u64,
}

/// One of the caller's sessions.
#[derive(Serialize, JsonSchema)]
pub struct SessionView {
    session_id: SessionId,
    team_id: TeamId,
    created_at: super::Time,
    expires_at: super::Time,
    ip: Option<String>,
    user_agent: Option<String>,
    /// Whether this is the session of the request.
    current: bool,
}

#[derive(Serialize, JsonSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
    total: usize,
}

/// An ended session.
#[derive(Serialize, JsonSchema)]
pub struct SessionEnded {
    session_id: SessionId,
    /// Always `ended`.
    status: &'static str,
}

pub async fn logout(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<SignedOut>> {
    if let Some(sid) = caller.session() {
        sessions::end(&s.mongo, &caller.user, sid).await?;
    }
    Ok(Json(SignedOut { status: "signed_out" }))
}

pub async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Me>> {
    let user =
        users::get(&s.mongo, &caller.user).await?.ok_or_else(|| ApiError::Unauthorized("unknown user".into()))?;
    let team = users::get_team(&s.mongo, &caller.team).await?;
    Ok(Json(Me {
        user: user_view(&user.id, &user.email, &user.name, &caller.team, caller.role),
        team_name: team.map(|t| t.name),
        session_id: caller.session().cloned(),
        api_key_id: caller.api_key().cloned(),
    }))
}

#[derive(Deserialize, JsonSchema)]
pub struct ChangePasswordBody {
    #[schemars(with = "crate::openapi::Password")]
    current_password: SecretString,
    #[schemars(with = "crate::openapi::NewPassword")]
    new_password: SecretString,
}

/// Changes the caller's password and ends every other session of theirs. A wrong current password
/// counts as a failed sign-in (a stolen session cannot be used to guess it without locking the account).
pub async fn change_password(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> ApiResult<Json<PasswordChanged>> {
    let user =
        users::get(&s.mongo, &caller.user).await?.ok_or_else(|| ApiError::Unauthorized("unknown user".into()))?;
    if let Err(why) = check_policy(body.new_password.expose_secret()) {
        return Err(ApiError::invalid("new_password", why));
    }
    let now = Timestamp::now();
    let locked = user.locked_at(now);
    let stored = if locked { dummy_hash().to_string() } else { user.password_hash.clone() };
    let (current, new) = (body.current_password, body.new_password);
    let (ok, hash) = tokio::task::spawn_blocking(move || {
        let ok = verify_password(current.expose_secret(), &stored).ok;
        let same = ok && current.expose_secret() == new.expose_secret();
        (ok && !same, (ok && !same).then(|| hash_password(new.expose_secret())))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let Some(hash) = hash.filter(|_| ok && !locked) else {
        if !locked {
            let cfg = &s.config;
            users::record_failure(&s.mongo, &user.id, now, cfg.login_max_failures, cfg.login_lockout).await?;
        }
        return Err(ApiError::invalid(
            "current_password",
            "is not your current password, or the new password is the same as the current one",
        ));
    };
    users::set_password(&s.mongo, &user.id, hash).await?;
    let ended = sessions::end_all(&s.mongo, &user.id, caller.session()).await?;
    Ok(Json(PasswordChanged { status: "password_changed", sessions_ended: ended }))
}

pub async fn sessions(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<SessionList>> {
    let list = sessions::list(&s.mongo, &caller.user, Timestamp::now()).await?;
    let sessions: Vec<SessionView> = list
        .into_iter()
        .map(|x| SessionView {
            current: Some(&x.id) == caller.session(),
            session_id: x.id,
            team_id: x.team_id,
            created_at: super::rfc3339(x.created_at),
            expires_at: super::rfc3339(x.expires_at),
            ip: x.ip,
            user_agent: x.user_agent,
        })
        .collect();
    Ok(Json(SessionList { total: sessions.len(), sessions }))
}

pub async fn end_session(
    State(s): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> ApiResult<(StatusCode, Json<SessionEnded>)> {
    let id: SessionId = path_id(&session_id, "session")?;
    if !sessions::end(&s.mongo, &caller.user, &id).await? {
        return Err(ApiError::not_found("session"));
    }
    Ok((StatusCode::OK, Json(SessionEnded { session_id: id, status: "ended" })))
}

pub(crate) fn user_view(id: &UserId, email: &str, name: &str, team: &TeamId, role: Role) -> UserView {
    UserView { id: id.clone(), email: email.to_string(), name: name.to_string(), team_id: team.clone(), role }
}

/// Hashes a password off the async runtime (PBKDF2 at 600,000 iterations takes a noticeable fraction
/// of a second).
pub async fn hash_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|e| ApiError::Internal(e.to_string()))
}
