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
use cspm_shared::ids::SessionId;
use cspm_shared::store::{sessions, users};
use cspm_shared::time::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::access::{AuditActor, ClientIp};
use crate::auth::Caller;
use crate::extract::{ApiJson, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: SecretString,
}

const BAD_CREDENTIALS: &str = "invalid email or password";

pub async fn login(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    if let Some(ip) = &ip {
        match s.limiter.hit(&format!("login:{ip}"), s.config.login_rate_per_minute, Duration::from_secs(60)).await {
            Ok(d) if !d.allowed => {
                return Err(ApiError::TooManyRequests {
                    detail: "too many sign-in attempts from this address; wait a minute".into(),
                    retry_after: d.reset_secs,
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sign-in rate limit not applied"),
        }
    }
    if body.email.len() > 320 || body.password.expose_secret().len() > 1024 {
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()));
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
            return Ok(resp);
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
            None => return Err(ApiError::Forbidden("you are not a member of any team".into())),
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
    let mut resp = Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": cfg.session_ttl.as_secs(),
        "session_id": session.id,
        "user": user_view(&user.id, &user.email, &user.name, &team, role),
    }))
    .into_response();
    resp.extensions_mut().insert(AuditActor { user: user.id, team: Some(team), email: user.email, role: Some(role) });
    Ok(resp)
}

pub async fn logout(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    if let Some(sid) = caller.session() {
        sessions::end(&s.mongo, &caller.user, sid).await?;
    }
    Ok(Json(json!({ "status": "signed_out" })))
}

pub async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let user =
        users::get(&s.mongo, &caller.user).await?.ok_or_else(|| ApiError::Unauthorized("unknown user".into()))?;
    let team = users::get_team(&s.mongo, &caller.team).await?;
    let mut v = user_view(&user.id, &user.email, &user.name, &caller.team, caller.role);
    v["team_name"] = json!(team.map(|t| t.name));
    v["session_id"] = json!(caller.session());
    v["api_key_id"] = json!(caller.api_key());
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct ChangePasswordBody {
    current_password: SecretString,
    new_password: SecretString,
}

/// Changes the caller's password and ends every other session of theirs. A wrong current password
/// counts as a failed sign-in (a stolen session cannot be used to guess it without locking the account).
pub async fn change_password(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "status": "password_changed", "sessions_ended": ended })))
}

pub async fn sessions(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let list = sessions::list(&s.mongo, &caller.user, Timestamp::now()).await?;
    let items: Vec<Value> = list
        .into_iter()
        .map(|x| {
            json!({
                "session_id": x.id,
                "team_id": x.team_id,
                "created_at": super::rfc3339(x.created_at),
                "expires_at": super::rfc3339(x.expires_at),
                "ip": x.ip,
                "user_agent": x.user_agent,
                "current": Some(&x.id) == caller.session(),
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": items, "total": items.len() })))
}

pub async fn end_session(
    State(s): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id: SessionId = path_id(&session_id, "session")?;
    if !sessions::end(&s.mongo, &caller.user, &id).await? {
        return Err(ApiError::not_found("session"));
    }
    Ok((StatusCode::OK, Json(json!({ "session_id": id, "status": "ended" }))))
}

pub(crate) fn user_view(
    id: &cspm_shared::ids::UserId,
    email: &str,
    name: &str,
    team: &cspm_shared::ids::TeamId,
    role: cspm_shared::domain::role::Role,
) -> Value {
    json!({ "id": id, "email": email, "name": name, "team_id": team, "role": role })
}

/// Hashes a password off the async runtime (PBKDF2 at 600,000 iterations takes a noticeable fraction
/// of a second).
pub async fn hash_blocking(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(|e| ApiError::Internal(e.to_string()))
}
