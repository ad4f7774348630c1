//! API keys: `POST/GET /api/api-keys`, `GET/PATCH/DELETE /api/api-keys/{key_id}`,
//! `POST /api/api-keys/{key_id}/rotate`, `GET /api/api-keys/scopes`, and for administrators
//! `GET /api/api-keys/admin/team-keys` and `DELETE /api/api-keys/admin/{key_id}`.
//!
//! Anyone signed in manages their own keys in their active team; a key never manages keys (the route
//! table makes these routes session-only, and the handlers refuse a key again). The key itself appears
//! in one answer only, the one that made it (creation or rotation).

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cspm_shared::domain::scope::{Preset, Scope};
use cspm_shared::ids::{ApiKeyId, UserId};
use cspm_shared::store::api_keys::{
    self, ApiKeyDoc, DEFAULT_GRACE_HOURS, Environment, KeyError, KeyPatch, NewKey, check_description,
    check_expiry_days, check_grace_hours, check_name, check_rate_limit, check_scopes,
};
use cspm_shared::store::users;
use cspm_shared::time::Timestamp;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiJson, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, rfc3339, rfc3339_opt};
use crate::state::AppState;

const SHOWN_ONCE: &str = "Store this API key now: it is shown only once and cannot be retrieved again.";

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<Vec<Scope>>")]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(with = "Option<Preset>")]
    scope_preset: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    /// Wide integers, so that an out-of-range value gets a message naming the field.
    #[serde(default)]
    rate_limit_per_minute: Option<i64>,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    name: Option<String>,
    /// Blank removes it.
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<Vec<Scope>>")]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(with = "Option<Preset>")]
    scope_preset: Option<String>,
    #[serde(default)]
    rate_limit_per_minute: Option<i64>,
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    grace_period_hours: Option<i64>,
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::TooManyActive => ApiError::Conflict(e.to_string()),
            KeyError::NotFound => ApiError::not_found("API key"),
            KeyError::NotActive(m) => ApiError::Conflict(m),
            KeyError::Invalid { field, message } => ApiError::invalid(field, message),
            KeyError::Store(s) => s.into(),
        }
    }
}

/// Keys are made and changed by people: an API key that could mint keys would outlive its own revocation.
fn session_only(caller: &Caller) -> ApiResult<()> {
    if caller.session().is_none() {
        return Err(ApiError::Forbidden("API keys are managed when signed in, not with an API key".into()));
    }
    Ok(())
}

/// Scopes from exactly one of a list and a preset.
fn scopes_of(scopes: Option<Vec<String>>, preset: Option<String>) -> ApiResult<Option<(Vec<Scope>, Option<Preset>)>> {
    match (scopes, preset) {
        (Some(_), Some(_)) => Err(ApiError::invalid("scope_preset", "give either scopes or scope_preset, not both")),
        (Some(list), None) => Ok(Some((check_scopes(&list).map_err(|m| ApiError::invalid("scopes", m))?, None))),
        (None, Some(p)) => {
            let preset: Preset = p.parse().map_err(|m: String| ApiError::invalid("scope_preset", m))?;
            Ok(Some((preset.scopes(), Some(preset))))
        }
        (None, None) => Ok(None),
    }
}

/// An optional JSON body: nothing (or whitespace) is the default; otherwise it must parse, with the same
/// answers as [`ApiJson`] (400 malformed, 422 wrong shape).
fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::Unprocessable { detail: format!("invalid request body: {e}"), errors: vec![] }
        }
        _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
    })
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<NewKeyView>)> {
    session_only(&caller)?;
    let name = check_name(&body.name).map_err(|m| ApiError::invalid("name", m))?;
    let (scopes, preset) = scopes_of(body.scopes, body.scope_preset)?
        .ok_or_else(|| ApiError::invalid("scopes", "give scopes or a scope_preset"))?;
    let mut new = NewKey::new(name, scopes, preset, caller.user.clone(), caller.team.clone());
    new.description =
        check_description(body.description.as_deref()).map_err(|m| ApiError::invalid("description", m))?;
    if let Some(e) = body.environment {
        new.environment = e.parse::<Environment>().map_err(|m| ApiError::invalid("environment", m))?;
    }
    if let Some(r) = body.rate_limit_per_minute {
        new.rate_limit_per_minute = check_rate_limit(r).map_err(|m| ApiError::invalid("rate_limit_per_minute", m))?;
    }
    if let Some(d) = body.expires_in_days {
        new.expires_in_days = check_expiry_days(d).map_err(|m| ApiError::invalid("expires_in_days", m))?;
    }
    let (doc, secret) = api_keys::create(&s.mongo, new, Timestamp::now()).await?;
    Ok((StatusCode::CREATED, Json(shown_once(&doc, secret))))
}

pub async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<KeyList<KeyView>>> {
    session_only(&caller)?;
    let now = Timestamp::now();
    let keys = api_keys::list_for_owner(&s.mongo, &caller.user, &caller.team).await?;
    let api_keys: Vec<KeyView> = keys.iter().map(|k| view(k, now)).collect();
    Ok(Json(KeyList { total: api_keys.len(), api_keys }))
}

async fn own(s: &AppState, caller: &Caller, raw: &str) -> ApiResult<ApiKeyDoc> {
    let id: ApiKeyId = path_id(raw, "API key")?;
    api_keys::get_for_owner(&s.mongo, &caller.team, &caller.user, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))
}

pub async fn get(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<KeyView>> {
    session_only(&caller)?;
    Ok(Json(view(&own(&s, &caller, &id).await?, Timestamp::now())))
}

pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Json<KeyView>> {
    session_only(&caller)?;
    let id: ApiKeyId = path_id(&id, "API key")?;
    let patch = KeyPatch {
        name: body.name.as_deref().map(check_name).transpose().map_err(|m| ApiError::invalid("name", m))?,
        description: body
            .description
            .as_deref()
            .map(|d| check_description(Some(d)))
            .transpose()
            .map_err(|m| ApiError::invalid("description", m))?,
        scopes: scopes_of(body.scopes, body.scope_preset)?,
        rate_limit_per_minute: body
            .rate_limit_per_minute
            .map(check_rate_limit)
            .transpose()
            .map_err(|m| ApiError::invalid("rate_limit_per_minute", m))?,
    };
    let doc = api_keys::update(&s.mongo, &caller.team, &caller.user, &id, &patch).await?;
    Ok(Json(view(&doc, Timestamp::now())))
}

pub async fn rotate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RotatedKey>)> {
    session_only(&caller)?;
    let id: ApiKeyId = path_id(&id, "API key")?;
    let body: RotateBody = optional_body(&body)?;
    let grace = match body.grace_period_hours {
        Some(h) => check_grace_hours(h).map_err(|m| ApiError::invalid("grace_period_hours", m))?,
        None => DEFAULT_GRACE_HOURS,
    };
    let now = Timestamp::now();
    let (doc, secret) = api_keys::rotate(&s.mongo, &caller.team, &caller.user, &id, grace, now).await?;
    let mut answer = shown_once(&doc, secret);
    answer.key.rotated_from = Some(id.clone());
    let old_key = OldKey {
        key_id: id,
        status: "rotated",
        grace_until: rfc3339(now.plus(std::time::Duration::from_secs(u64::from(grace) * 3600))),
    };
    Ok((StatusCode::CREATED, Json(RotatedKey { new: answer, old_key })))
}

pub async fn revoke(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Revoked>> {
    session_only(&caller)?;
    let id: ApiKeyId = path_id(&id, "API key")?;
    let doc = api_keys::revoke(&s.mongo, &caller.team, Some(&caller.user), &id, Timestamp::now())
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Json(revoked(&doc)))
}

/// The vocabulary: every scope with what it allows, every preset with its scopes.
pub async fn scopes(_caller: Caller) -> Json<Vocabulary> {
    let scopes = Scope::ALL.iter().map(|s| ScopeInfo { scope: s.as_str(), description: s.describe() }).collect();
    let presets = Preset::ALL
        .iter()
        .map(|p| PresetInfo { preset: p.as_str(), scopes: p.scopes().iter().map(|s| s.as_str()).collect() })
        .collect();
    Json(Vocabulary { scopes, presets })
}

/// The scopes of API keys and their presets.
#[derive(Serialize, JsonSchema)]
pub struct Vocabulary {
    scopes: Vec<ScopeInfo>,
    presets: Vec<PresetInfo>,
}

#[derive(Serialize, JsonSchema)]
pub struct ScopeInfo {
    scope: &'static str,
    /// What it allows.
    description: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct PresetInfo {
    preset: &'static str,
    scopes: Vec<&'static str>,
}

/// A list of keys.
#[derive(Serialize, JsonSchema)]
pub struct KeyList<K> {
    api_keys: Vec<K>,
    total: usize,
}

/// A key of the team, with its owner.
#[derive(Serialize, JsonSchema)]
pub struct TeamKeyView {
    #[serde(flatten)]
    key: KeyView,
    owner: Option<KeyOwner>,
}

#[derive(Serialize, JsonSchema, Clone)]
pub struct KeyOwner {
    user_id: UserId,
    /// None once the user is gone.
    email: Option<String>,
    name: Option<String>,
}

/// Every key of the team, with its owner (administrators).
pub async fn team_keys(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<KeyList<TeamKeyView>>> {
    let now = Timestamp::now();
    let keys = api_keys::list_for_team(&s.mongo, &caller.team).await?;
    let mut owners: HashMap<UserId, KeyOwner> = HashMap::new();
    for k in &keys {
        if !owners.contains_key(&k.owner_id) {
            let user = users::get(&s.mongo, &k.owner_id).await?;
            let owner = KeyOwner {
                user_id: k.owner_id.clone(),
                email: user.as_ref().map(|u| u.email.clone()),
                name: user.as_ref().map(|u| u.name.clone()),
            };
            owners.insert(k.owner_id.clone(), owner);
        }
    }
    let api_keys: Vec<TeamKeyView> =
        keys.iter().map(|k| TeamKeyView { key: view(k, now), owner: owners.get(&k.owner_id).cloned() }).collect();
    Ok(Json(KeyList { total: api_keys.len(), api_keys }))
}

/// Revokes any key of the team (administrators).
pub async fn admin_revoke(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Revoked>> {
    let id: ApiKeyId = path_id(&id, "API key")?;
    let doc = api_keys::revoke(&s.mongo, &caller.team, None, &id, Timestamp::now())
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    tracing::info!(api_key.id = %doc.id, by = %caller.user, "API key revoked by an administrator");
    Ok(Json(revoked(&doc)))
}

/// A revoked key.
#[derive(Serialize, JsonSchema)]
pub struct Revoked {
    key_id: ApiKeyId,
    status: &'static str,
    revoked_at: Option<Time>,
}

fn revoked(doc: &ApiKeyDoc) -> Revoked {
    Revoked { key_id: doc.id.clone(), status: doc.status.as_str(), revoked_at: rfc3339_opt(doc.revoked_at) }
}

/// A new key: the key as reads show it, with the key itself (shown this once).
#[derive(Serialize, JsonSchema)]
pub struct NewKeyView {
    #[serde(flatten)]
    key: KeyView,
    /// The secret: store it now.
    api_key: String,
    message: &'static str,
}

/// A rotated key: the new key (shown once) and what became of the old one.
#[derive(Serialize, JsonSchema)]
pub struct RotatedKey {
    #[serde(flatten)]
    new: NewKeyView,
    old_key: OldKey,
}

#[derive(Serialize, JsonSchema)]
pub struct OldKey {
    key_id: ApiKeyId,
    /// Always `rotated`.
    status: &'static str,
    /// The old key works until then.
    grace_until: Time,
}

/// The answer that carries the key, once: the key as reads show it, with the key itself.
fn shown_once(doc: &ApiKeyDoc, secret: String) -> NewKeyView {
    NewKeyView { key: view(doc, doc.created_at), api_key: secret, message: SHOWN_ONCE }
}

/// A key as lists and reads show it: never the key, never its hash.
#[derive(Serialize, JsonSchema)]
pub struct KeyView {
    key_id: ApiKeyId,
    key_prefix: String,
    name: String,
    description: Option<String>,
    scopes: Vec<Scope>,
    scope_preset: Option<&'static str>,
    environment: &'static str,
    rate_limit_per_minute: u32,
    expires_at: Option<Time>,
    created_at: Time,
    last_used_at: Option<Time>,
    usage_count: i64,
    status: &'static str,
    expired: bool,
    revoked_at: Option<Time>,
    rotated_to: Option<ApiKeyId>,
    rotated_from: Option<ApiKeyId>,
    grace_until: Option<Time>,
}

pub fn view(doc: &ApiKeyDoc, now: Timestamp) -> KeyView {
    KeyView {
        key_id: doc.id.clone(),
        key_prefix: doc.key_prefix.clone(),
        name: doc.name.clone(),
        description: doc.description.clone(),
        scopes: doc.scopes.clone(),
        scope_preset: doc.preset.map(Preset::as_str),
        environment: doc.environment.as_str(),
        rate_limit_per_minute: doc.rate_limit_per_minute,
        expires_at: rfc3339_opt(doc.expires_at),
        created_at: rfc3339(doc.created_at),
        last_used_at: rfc3339_opt(doc.last_used_at),
        usage_count: doc.usage_count,
        status: doc.status.as_str(),
        expired: doc.expired_at(now),
        revoked_at: rfc3339_opt(doc.revoked_at),
        rotated_to: doc.rotated_to.clone(),
        rotated_from: doc.rotated_from.clone(),
        grace_until: rfc3339_opt(doc.grace_until),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_scopes_and_preset_is_taken() {
        let err = |r: ApiResult<_>| match r {
            Err(ApiError::Unprocessable { errors, .. }) => errors[0].field.clone(),
            _ => String::from("no error"),
        };
        assert_eq!(err(scopes_of(Some(vec!["scans:read".into()]), Some("read_only".into()))), "scope_preset");
        assert_eq!(err(scopes_of(Some(vec![]), None)), "scopes");
        assert_eq!(err(scopes_of(Some(vec!["scans:all".into()]), None)), "scopes");
        assert_eq!(err(scopes_of(None, Some("everything".into()))), "scope_preset");
        assert!(matches!(scopes_of(None, None), Ok(None)));
        let Ok(Some((scopes, preset))) = scopes_of(None, Some("ci_cd_basic".into())) else {
            panic!("a preset is taken");
        };
        assert_eq!((scopes, preset), (vec![Scope::ScansTrigger, Scope::ScansRead], Some(Preset::CiCdBasic)));
    }

    #[test]
    fn a_view_carries_neither_key_nor_hash() {
        let now = Timestamp::now();
        let secret = api_keys::generate_secret();
        // A document as the store keeps it.
        let mut doc: ApiKeyDoc = bson::deserialize_from_document(bson::doc! {
            "_id": ApiKeyId::new(), "name": "ci", "key_prefix": api_keys::prefix_of(&secret),
            "key_hash": api_keys::hash_secret(&secret), "scopes": ["scans:read"], "owner_id": UserId::new(),
            "team_id": cspm_shared::ids::TeamId::new(), "rate_limit_per_minute": 60_i32, "created_at": now,
            "status": "active",
        })
        .expect("a key document");
        doc.expires_at = Some(now);
        let v = serde_json::to_value(view(&doc, now)).expect("a view is JSON");
        let text = v.to_string();
        assert!(!text.contains(&secret) && !text.contains(&doc.key_hash), "{text}");
        assert_eq!(v["expired"], serde_json::json!(true));
        assert_eq!(v["expires_at"], serde_json::json!(rfc3339(now)));
        let shown = serde_json::to_value(shown_once(&doc, secret.clone())).expect("JSON");
        assert!(shown.to_string().contains(&secret));
    }
}
