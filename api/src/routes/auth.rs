//! Sign-in (`POST /api/auth/login`) and the caller's identity (`GET /api/auth/me`).

use axum::Json;
use axum::extract::State;
use cspm_shared::auth::jwt::Claims;
use cspm_shared::auth::password::{dummy_hash, hash_password, verify_password};
use cspm_shared::store::users;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, now_secs};
use crate::extract::ApiJson;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: SecretString,
}

const BAD_CREDENTIALS: &str = "invalid email or password";

pub async fn login(State(s): State<AppState>, ApiJson(body): ApiJson<LoginBody>) -> ApiResult<Json<Value>> {
    if body.email.len() > 320 || body.password.expose_secret().len() > 1024 {
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()));
    }
    let user = users::find_by_email(&s.mongo, &body.email).await?;
    // Unknown users are checked against a dummy hash so that both failures cost the same time.
    let stored = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| dummy_hash().to_string());
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
        Some(u) if verified.ok && u.status == "active" => u,
        _ => {
            s.metrics.logins.get_or_create(&vec![("outcome".into(), "failed".into())]).inc();
            return Err(ApiError::Unauthorized(BAD_CREDENTIALS.into()));
        }
    };
    let role =
        user.active_role().ok_or_else(|| ApiError::Forbidden("you are not a member of your active team".into()))?;
    users::record_login(&s.mongo, &user.id, upgraded).await?;
    let now = now_secs();
    let ttl = s.config.token_ttl.as_secs() as i64;
    let claims = Claims {
        sub: user.id.clone(),
        team: user.active_team_id.clone(),
        role,
        email: user.email.clone(),
        iat: now,
        exp: now + ttl,
        jti: cspm_shared::ids::RunId::new().ulid().to_string(),
    };
    let token = s.tokens.sign(&claims);
    s.metrics.logins.get_or_create(&vec![("outcome".into(), "ok".into())]).inc();
    Ok(Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl,
        "user": user_view(&user.id, &user.email, &user.name, &user.active_team_id, role),
    })))
}

pub async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let user =
        users::get(&s.mongo, &caller.user).await?.ok_or_else(|| ApiError::Unauthorized("unknown user".into()))?;
    let team = users::get_team(&s.mongo, &caller.team).await?;
    let mut v = user_view(&user.id, &user.email, &user.name, &caller.team, caller.role);
    v["team_name"] = json!(team.map(|t| t.name));
    Ok(Json(v))
}

fn user_view(
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
