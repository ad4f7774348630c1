//! API keys for automation (`cspm_platform.api_keys`).
//!
//! A key is `osk_` followed by 48 random alphanumerics. It is shown once, when made; the store keeps its
//! SHA-256 (to find it again when presented) and its first 12 characters (to let people tell keys
//! apart), never the key itself. A key belongs to the user who made it and to the team active then; what
//! it may do is its scopes AND its owner's role, checked by the API's access layer on every call.
//!
//! Rotation makes a successor with the same name, scopes, limits and expiry policy and leaves the old key
//! working for a grace period, so that a pipeline can switch without an outage. The old key moves from
//! `active` to `rotated` through a conditional update, so two rotations racing make one successor.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bson::{Document, doc};
use futures::TryStreamExt;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Mongo;
use crate::domain::scope::{Preset, Scope};
use crate::error::{StoreError, StoreResult};
use crate::ids::{ApiKeyId, TeamId, UserId};
use crate::time::Timestamp;

/// What every key starts with.
pub const SECRET_PREFIX: &str = "osk_";
/// Random characters after the prefix.
pub const SECRET_RANDOM_CHARS: usize = 48;
/// Characters of the key kept in clear (`osk_` and eight random ones).
pub const KEY_PREFIX_CHARS: usize = 12;
/// Keys a user may hold that are active and unexpired.
pub const MAX_ACTIVE_KEYS_PER_USER: u64 = 25;
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 60;
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 600;
pub const DEFAULT_EXPIRES_IN_DAYS: u32 = 90;
pub const MAX_EXPIRES_IN_DAYS: u32 = 365;
pub const DEFAULT_GRACE_HOURS: u32 = 48;
pub const MAX_GRACE_HOURS: u32 = 168;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 500;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

/// Where a key is used: a label its owner chooses, for telling keys apart and revoking by environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Production,
    Staging,
    Development,
    Ci,
}

impl Environment {
    pub const ALL: [Environment; 4] =
        [Environment::Production, Environment::Staging, Environment::Development, Environment::Ci];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Development => "development",
            Environment::Ci => "ci",
        }
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Environment::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown environment `{s}` (production, staging, development, ci)"))
    }
}

/// The life of a key: `active` → `rotated` (usable until its grace period ends) or `revoked` (at once);
/// a rotated key can still be revoked. Expiry is not a status: it is read from `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Revoked,
    Rotated,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Rotated => "rotated",
        }
    }
}

/// Why a presented key is not honoured (each is a 401 to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Malformed, or no key has that hash.
    Unknown,
    /// Past its expiry, or a rotated key past its grace period.
    Expired,
    Revoked,
}

impl KeyRefusal {
    /// A sentence for the caller.
    pub fn describe(self) -> &'static str {
        match self {
            KeyRefusal::Unknown => "invalid API key",
            KeyRefusal::Expired => "the API key has expired",
            KeyRefusal::Revoked => "the API key has been revoked",
        }
    }
}

/// An API-key document. Its `Debug` shows neither the hash nor anything derived from the key beyond the
/// prefix people see in lists.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiKeyDoc {
    #[serde(rename = "_id")]
    pub id: ApiKeyId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The first [`KEY_PREFIX_CHARS`] characters of the key.
    pub key_prefix: String,
    /// SHA-256 of the whole key, lower-case hex (unique index `uniq_hash`).
    pub key_hash: String,
    pub scopes: Vec<Scope>,
    /// The preset the scopes came from, when they did.
    #[serde(default)]
    pub preset: Option<Preset>,
    pub owner_id: UserId,
    /// The team active when the key was made: the key acts in it.
    pub team_id: TeamId,
    #[serde(default)]
    pub environment: Environment,
    #[serde(deserialize_with = "whole_u32")]
    pub rate_limit_per_minute: u32,
    /// Days a key made by this policy lives (0: never expires); a rotation's successor gets as many.
    #[serde(default = "default_expiry_days", deserialize_with = "whole_u32")]
    pub expires_in_days: u32,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "whole_i64")]
    pub usage_count: i64,
    pub status: KeyStatus,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// The successor, once rotated.
    #[serde(default)]
    pub rotated_to: Option<ApiKeyId>,
    /// The key this one replaced.
    #[serde(default)]
    pub rotated_from: Option<ApiKeyId>,
    /// A rotated key is honoured until then.
    #[serde(default)]
    pub grace_until: Option<Timestamp>,
}

impl fmt::Debug for ApiKeyDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyDoc")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("key_prefix", &self.key_prefix)
            .field("scopes", &self.scopes)
            .field("preset", &self.preset)
            .field("owner_id", &self.owner_id)
            .field("team_id", &self.team_id)
            .field("environment", &self.environment)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("expires_at", &self.expires_at)
            .field("status", &self.status)
            .field("grace_until", &self.grace_until)
            .finish_non_exhaustive()
    }
}

impl ApiKeyDoc {
    /// Whether the key is honoured at `now`, and if not, why.
    pub fn usable_at(&self, now: Timestamp) -> Result<(), KeyRefusal> {
        match self.status {
            KeyStatus::Revoked => return Err(KeyRefusal::Revoked),
            // A rotated key without a grace time is over (it cannot be made so, but a hand-edited
            // document must not make a key live forever).
            KeyStatus::Rotated if self.grace_until.is_none_or(|g| g <= now) => return Err(KeyRefusal::Expired),
            KeyStatus::Rotated | KeyStatus::Active => {}
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(KeyRefusal::Expired);
        }
        Ok(())
    }

    /// Whether the key no longer works because time ran out (expiry, or the end of a grace period).
    pub fn expired_at(&self, now: Timestamp) -> bool {
        self.usable_at(now) == Err(KeyRefusal::Expired)
    }
}

fn default_expiry_days() -> u32 {
    DEFAULT_EXPIRES_IN_DAYS
}

/// A whole number however it was stored: int32, int64 or a double (the MongoDB-wire test server and
/// `$inc` may hand back any of them).
fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v.fract() != 0.0 || v.abs() > 9_007_199_254_740_992.0 {
        return Err(serde::de::Error::custom(format!("`{v}` is not a whole number")));
    }
    Ok(v as i64)
}

fn whole_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = whole(d)?;
    u32::try_from(v).map_err(|_| serde::de::Error::custom(format!("`{v}` is out of range")))
}

fn whole_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole(d)
}

/// A fresh key: `osk_` and 48 characters drawn uniformly from `[A-Za-z0-9]` by the thread's CSPRNG
/// (ChaCha, seeded from the operating system; `Alphanumeric` samples by rejection, without modulo bias).
pub fn generate_secret() -> String {
    let random: String = rand::rng().sample_iter(&Alphanumeric).take(SECRET_RANDOM_CHARS).map(char::from).collect();
    format!("{SECRET_PREFIX}{random}")
}

/// Whether `presented` has the shape of a key. Anything else is refused before a lookup.
pub fn well_formed(presented: &str) -> bool {
    presented.len() == SECRET_PREFIX.len() + SECRET_RANDOM_CHARS
        && presented.strip_prefix(SECRET_PREFIX).is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// SHA-256 of the key as lower-case hex: what the store keeps and looks keys up by.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The characters of a key shown in lists.
pub fn prefix_of(secret: &str) -> String {
    secret.chars().take(KEY_PREFIX_CHARS).collect()
}

/// Checks a key's per-minute limit (1..=600).
pub fn check_rate_limit(per_minute: i64) -> Result<u32, String> {
    u32::try_from(per_minute)
        .ok()
        .filter(|n| (1..=MAX_RATE_LIMIT_PER_MINUTE).contains(n))
        .ok_or_else(|| format!("must be between 1 and {MAX_RATE_LIMIT_PER_MINUTE}"))
}

/// Checks a key's lifetime in days (0: never expires; at most 365).
pub fn check_expiry_days(days: i64) -> Result<u32, String> {
    u32::try_from(days)
        .ok()
        .filter(|n| *n <= MAX_EXPIRES_IN_DAYS)
        .ok_or_else(|| format!("must be between 0 (never expires) and {MAX_EXPIRES_IN_DAYS}"))
}

/// Checks a rotation's grace period in hours (0: the old key stops at once; at most 168).
pub fn check_grace_hours(hours: i64) -> Result<u32, String> {
    u32::try_from(hours)
        .ok()
        .filter(|n| *n <= MAX_GRACE_HOURS)
        .ok_or_else(|| format!("must be between 0 and {MAX_GRACE_HOURS}"))
}

/// Checks a key's name: trimmed, 1..=100 characters.
pub fn check_name(raw: &str) -> Result<String, String> {
    let n = raw.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be 1-{MAX_NAME_CHARS} characters"));
    }
    Ok(n.to_string())
}

/// Checks a key's description (at most 500 characters; blank means none).
pub fn check_description(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => {
            Err(format!("must be at most {MAX_DESCRIPTION_CHARS} characters"))
        }
        Some(d) => Ok(Some(d.to_string())),
    }
}

/// Checks a scope list: known scopes, at least one; duplicates are dropped and the order made stable.
pub fn check_scopes<S: AsRef<str>>(raw: &[S]) -> Result<Vec<Scope>, String> {
    let mut scopes = raw.iter().map(|s| s.as_ref().parse::<Scope>()).collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err("give at least one scope".into());
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// Why a change to keys was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The user holds as many active keys as allowed.
    #[error("you already hold {MAX_ACTIVE_KEYS_PER_USER} active API keys; revoke one first")]
    TooManyActive,
    /// No such key for this caller (absent, another user's, another team's).
    #[error("API key not found")]
    NotFound,
    /// The key is not active (revoked, rotated, expired): it cannot be changed or rotated.
    #[error("{0}")]
    NotActive(String),
    /// A value out of bounds (the API checks first; this guards the store).
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type KeyResult<T> = Result<T, KeyError>;

impl From<mongodb::error::Error> for KeyError {
    fn from(e: mongodb::error::Error) -> Self {
        KeyError::Store(e.into())
    }
}

impl From<bson::error::Error> for KeyError {
    fn from(e: bson::error::Error) -> Self {
        KeyError::Store(e.into())
    }
}

/// What a new key is made of (the values checked by the `check_*` functions).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub description: Option<String>,
    pub scopes: Vec<Scope>,
    pub preset: Option<Preset>,
    pub owner: UserId,
    pub team: TeamId,
    pub environment: Environment,
    pub rate_limit_per_minute: u32,
    /// 0: never expires.
    pub expires_in_days: u32,
}

impl NewKey {
    /// A key with the defaults: production, 60 calls a minute, 90 days.
    pub fn new(name: String, scopes: Vec<Scope>, preset: Option<Preset>, owner: UserId, team: TeamId) -> Self {
        Self {
            name,
            description: None,
            scopes,
            preset,
            owner,
            team,
            environment: Environment::default(),
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
            expires_in_days: DEFAULT_EXPIRES_IN_DAYS,
        }
    }

    fn validate(&self) -> KeyResult<()> {
        let invalid = |field, message: String| Err(KeyError::Invalid { field, message });
        if let Err(m) = check_name(&self.name) {
            return invalid("name", m);
        }
        if self.scopes.is_empty() {
            return invalid("scopes", "give at least one scope".into());
        }
        if let Err(m) = check_rate_limit(i64::from(self.rate_limit_per_minute)) {
            return invalid("rate_limit_per_minute", m);
        }
        if let Err(m) = check_expiry_days(i64::from(self.expires_in_days)) {
            return invalid("expires_in_days", m);
        }
        Ok(())
    }

    /// The document and its key, made at `now`.
    fn mint(&self, now: Timestamp) -> (ApiKeyDoc, String) {
        let secret = generate_secret();
        let expires_at = (self.expires_in_days > 0).then(|| now.plus(DAY * self.expires_in_days));
        let doc = ApiKeyDoc {
            id: ApiKeyId::new(),
            name: self.name.clone(),
            description: self.description.clone(),
            key_prefix: prefix_of(&secret),
            key_hash: hash_secret(&secret),
            scopes: self.scopes.clone(),
            preset: self.preset,
            owner_id: self.owner.clone(),
            team_id: self.team.clone(),
            environment: self.environment,
            rate_limit_per_minute: self.rate_limit_per_minute,
            expires_in_days: self.expires_in_days,
            expires_at,
            created_at: now,
            last_used_at: None,
            usage_count: 0,
            status: KeyStatus::Active,
            revoked_at: None,
            rotated_to: None,
            rotated_from: None,
            grace_until: None,
        };
        (doc, secret)
    }
}

fn decode(d: Document) -> StoreResult<ApiKeyDoc> {
    bson::deserialize_from_document(d).map_err(StoreError::from)
}

/// Inserts a key, retrying with a fresh secret in the (astronomically unlikely) event of a hash clash.
async fn insert(
    db: &Mongo,
    doc: &mut ApiKeyDoc,
    secret: &mut String,
    template: &NewKey,
    now: Timestamp,
) -> KeyResult<()> {
    for _ in 0..3 {
        match db.api_keys.insert_one(bson::serialize_to_document(&*doc)?).await {
            Ok(_) => return Ok(()),
            Err(e) => match StoreError::from(e) {
                StoreError::Duplicate => {
                    let (fresh, fresh_secret) = template.mint(now);
                    doc.key_prefix = fresh.key_prefix;
                    doc.key_hash = fresh.key_hash;
                    *secret = fresh_secret;
                }
                other => return Err(other.into()),
            },
        }
    }
    Err(StoreError::Duplicate.into())
}

/// The keys of `owner` that are active and unexpired at `now` (those that count against the limit):
/// the active ones less those past their expiry. Two counts rather than one `$or` with a null match,
/// which the MongoDB-wire test server does not honour (keys that never expire went uncounted).
async fn count_active(db: &Mongo, owner: &UserId, now: Timestamp) -> StoreResult<u64> {
    let active = db.api_keys.count_documents(doc! { "owner_id": owner, "status": "active" }).await?;
    let expired = db
        .api_keys
        .count_documents(doc! { "owner_id": owner, "status": "active", "expires_at": { "$lte": now } })
        .await?;
    Ok(active.saturating_sub(expired))
}

/// Makes a key. Returns the document and the key itself, which exists nowhere else: show it once.
/// Refused with [`KeyError::TooManyActive`] when the owner already holds 25 active keys; two
/// concurrent creations cannot both pass the limit (the count is checked again after the insert, and the
/// new key withdrawn if it went over).
pub async fn create(db: &Mongo, new: NewKey, now: Timestamp) -> KeyResult<(ApiKeyDoc, String)> {
    new.validate()?;
    if count_active(db, &new.owner, now).await? >= MAX_ACTIVE_KEYS_PER_USER {
        return Err(KeyError::TooManyActive);
    }
    let (mut doc, mut secret) = new.mint(now);
    insert(db, &mut doc, &mut secret, &new, now).await?;
    if count_active(db, &new.owner, now).await? > MAX_ACTIVE_KEYS_PER_USER {
        db.api_keys.delete_one(doc! { "_id": &doc.id }).await?;
        return Err(KeyError::TooManyActive);
    }
    tracing::info!(api_key.id = %doc.id, user.id = %doc.owner_id, team.id = %doc.team_id, "API key created");
    Ok((doc, secret))
}

/// The key presented by a caller, if it is honoured at `now`. A string without the shape of a key is
/// `Unknown` without a lookup. Keys are found by their hash, so the key never reaches the database.
pub async fn authenticate(db: &Mongo, presented: &str, now: Timestamp) -> StoreResult<Result<ApiKeyDoc, KeyRefusal>> {
    if !well_formed(presented) {
        return Ok(Err(KeyRefusal::Unknown));
    }
    let Some(found) = db.api_keys.find_one(doc! { "key_hash": hash_secret(presented) }).await? else {
        return Ok(Err(KeyRefusal::Unknown));
    };
    let key = decode(found)?;
    Ok(key.usable_at(now).map(|()| key))
}

/// Counts a call made with the key: one update by id, through the `_id` index, returning nothing. The
/// API does not wait for it on the request's path (see [`record_use_in_background`]).
pub async fn record_use(db: &Mongo, id: &ApiKeyId, now: Timestamp) -> StoreResult<()> {
    db.api_keys
        .update_one(doc! { "_id": id }, doc! { "$inc": { "usage_count": 1_i64 }, "$set": { "last_used_at": now } })
        .await?;
    Ok(())
}

/// [`record_use`] on a task of its own; a failure is logged (usage counts are informative, a call must
/// not fail or wait because of them).
pub fn record_use_in_background(db: &Mongo, id: &ApiKeyId, now: Timestamp) {
    let (db, id) = (db.clone(), id.clone());
    tokio::spawn(async move {
        if let Err(e) = record_use(&db, &id, now).await {
            tracing::warn!(api_key.id = %id, error = %e, "could not record an API key's use");
        }
    });
}

async fn find_many(db: &Mongo, filter: Document) -> StoreResult<Vec<ApiKeyDoc>> {
    let docs: Vec<Document> =
        db.api_keys.find(filter).sort(doc! { "created_at": -1, "_id": -1 }).await?.try_collect().await?;
    docs.into_iter().map(decode).collect()
}

/// The keys `owner` made in `team`, newest first (every status).
pub async fn list_for_owner(db: &Mongo, owner: &UserId, team: &TeamId) -> StoreResult<Vec<ApiKeyDoc>> {
    find_many(db, doc! { "owner_id": owner, "team_id": team }).await
}

/// Every key of the team, newest first (every status).
pub async fn list_for_team(db: &Mongo, team: &TeamId) -> StoreResult<Vec<ApiKeyDoc>> {
    find_many(db, doc! { "team_id": team }).await
}

/// A key of `owner` in `team`.
pub async fn get_for_owner(db: &Mongo, team: &TeamId, owner: &UserId, id: &ApiKeyId) -> StoreResult<Option<ApiKeyDoc>> {
    db.api_keys.find_one(doc! { "_id": id, "team_id": team, "owner_id": owner }).await?.map(decode).transpose()
}

/// A key of anyone in `team`.
pub async fn get_in_team(db: &Mongo, team: &TeamId, id: &ApiKeyId) -> StoreResult<Option<ApiKeyDoc>> {
    db.api_keys.find_one(doc! { "_id": id, "team_id": team }).await?.map(decode).transpose()
}

/// The changeable part of a key. `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    /// `Some(None)` removes the description.
    pub description: Option<Option<String>>,
    /// New scopes, with the preset they came from (if any).
    pub scopes: Option<(Vec<Scope>, Option<Preset>)>,
    pub rate_limit_per_minute: Option<u32>,
}

impl KeyPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.scopes.is_none()
            && self.rate_limit_per_minute.is_none()
    }

    fn to_set(&self) -> KeyResult<Document> {
        let invalid = |field, message: String| KeyError::Invalid { field, message };
        let mut set = Document::new();
        if let Some(n) = &self.name {
            set.insert("name", check_name(n).map_err(|m| invalid("name", m))?);
        }
        if let Some(d) = &self.description {
            set.insert("description", d.clone());
        }
        if let Some((scopes, preset)) = &self.scopes {
            if scopes.is_empty() {
                return Err(invalid("scopes", "give at least one scope".into()));
            }
            set.insert("scopes", bson::serialize_to_bson(scopes)?);
            set.insert("preset", bson::serialize_to_bson(preset)?);
        }
        if let Some(r) = self.rate_limit_per_minute {
            set.insert(
                "rate_limit_per_minute",
                i64::from(check_rate_limit(i64::from(r)).map_err(|m| invalid("rate_limit_per_minute", m))?),
            );
        }
        Ok(set)
    }
}

/// Changes an active key of `owner` in `team`. A revoked or rotated key cannot be changed.
pub async fn update(
    db: &Mongo,
    team: &TeamId,
    owner: &UserId,
    id: &ApiKeyId,
    patch: &KeyPatch,
) -> KeyResult<ApiKeyDoc> {
    let current = get_for_owner(db, team, owner, id).await?.ok_or(KeyError::NotFound)?;
    if patch.is_empty() {
        return Ok(current);
    }
    if current.status != KeyStatus::Active {
        return Err(KeyError::NotActive(format!(
            "the API key is {}; it can no longer be changed",
            current.status.as_str()
        )));
    }
    let set = patch.to_set()?;
    db.api_keys
        .find_one_and_update(
            doc! { "_id": id, "team_id": team, "owner_id": owner, "status": "active" },
            doc! { "$set": set },
        )
        .return_document(mongodb::options::ReturnDocument::After)
        .await?
        .map(decode)
        .transpose()?
        .ok_or_else(|| KeyError::NotActive("the API key was revoked or rotated meanwhile".into()))
}

/// Revokes a key of `team` (of `owner` only, when given): it stops working at once, including a rotated
/// key still in its grace period. Revoking a revoked key changes nothing. `None` when there is no such key.
pub async fn revoke(
    db: &Mongo,
    team: &TeamId,
    owner: Option<&UserId>,
    id: &ApiKeyId,
    now: Timestamp,
) -> StoreResult<Option<ApiKeyDoc>> {
    let mut filter = doc! { "_id": id, "team_id": team };
    if let Some(o) = owner {
        filter.insert("owner_id", o);
    }
    let mut open = filter.clone();
    open.insert("status", doc! { "$in": ["active", "rotated"] });
    let r = db.api_keys.update_one(open, doc! { "$set": { "status": "revoked", "revoked_at": now } }).await?;
    let key = db.api_keys.find_one(filter).await?.map(decode).transpose()?;
    if r.modified_count == 1
        && let Some(k) = &key
    {
        tracing::info!(api_key.id = %k.id, user.id = %k.owner_id, team.id = %k.team_id, "API key revoked");
    }
    Ok(key)
}

/// Replaces an active key of `owner` in `team` with a new one (same name, description, scopes, limits,
/// environment and expiry policy; a fresh expiry from `now`). The old key keeps working for
/// `grace_hours` (0: it stops at once). Returns the successor and its key, shown once.
///
/// The successor is written first and the old key then moved from `active` to `rotated` only if it is
/// still active: of two rotations racing, one wins, and the other withdraws its successor and answers
/// [`KeyError::NotActive`].
pub async fn rotate(
    db: &Mongo,
    team: &TeamId,
    owner: &UserId,
    id: &ApiKeyId,
    grace_hours: u32,
    now: Timestamp,
) -> KeyResult<(ApiKeyDoc, String)> {
    check_grace_hours(i64::from(grace_hours))
        .map_err(|message| KeyError::Invalid { field: "grace_period_hours", message })?;
    let old = get_for_owner(db, team, owner, id).await?.ok_or(KeyError::NotFound)?;
    if old.status != KeyStatus::Active {
        return Err(KeyError::NotActive(format!(
            "the API key is {}; only an active key can be rotated",
            old.status.as_str()
        )));
    }
    if old.expired_at(now) {
        return Err(KeyError::NotActive("the API key has expired; create a new one".into()));
    }
    let template = NewKey {
        name: old.name.clone(),
        description: old.description.clone(),
        scopes: old.scopes.clone(),
        preset: old.preset,
        owner: old.owner_id.clone(),
        team: old.team_id.clone(),
        environment: old.environment,
        rate_limit_per_minute: old.rate_limit_per_minute,
        expires_in_days: old.expires_in_days.min(MAX_EXPIRES_IN_DAYS),
    };
    let (mut new, mut secret) = template.mint(now);
    new.rotated_from = Some(old.id.clone());
    insert(db, &mut new, &mut secret, &template, now).await?;
    let grace_until = now.plus(HOUR * grace_hours);
    let moved = db
        .api_keys
        .update_one(
            doc! { "_id": &old.id, "team_id": team, "owner_id": owner, "status": "active" },
            doc! { "$set": { "status": "rotated", "rotated_to": &new.id, "grace_until": grace_until } },
        )
        .await;
    let moved = match moved {
        Ok(r) => r.modified_count == 1,
        Err(e) => {
            withdraw(db, &new.id).await;
            return Err(KeyError::Store(e.into()));
        }
    };
    if !moved {
        withdraw(db, &new.id).await;
        return Err(KeyError::NotActive("the API key was rotated or revoked meanwhile".into()));
    }
    tracing::info!(api_key.id = %old.id, api_key.successor = %new.id, grace_hours, "API key rotated");
    Ok((new, secret))
}

/// Removes a successor whose rotation did not happen (its key was never shown to anyone).
async fn withdraw(db: &Mongo, id: &ApiKeyId) {
    if let Err(e) = db.api_keys.delete_one(doc! { "_id": id }).await {
        tracing::warn!(api_key.id = %id, error = %e, "could not remove the successor of a failed rotation");
    }
}

#[cfg(test)]
mod tests {
    use bson::Bson;

    use super::*;

    fn key(status: KeyStatus, expires_at: Option<i64>, grace_until: Option<i64>) -> ApiKeyDoc {
        let new =
            NewKey::new("ci".into(), Preset::CiCdBasic.scopes(), Some(Preset::CiCdBasic), UserId::new(), TeamId::new());
        let (mut doc, _) = new.mint(Timestamp::from_millis(0));
        doc.status = status;
        doc.expires_at = expires_at.map(Timestamp::from_millis);
        doc.grace_until = grace_until.map(Timestamp::from_millis);
        doc
    }

    #[test]
    fn a_secret_is_osk_and_48_alphanumerics_and_never_repeats() {
        let a = generate_secret();
        assert_eq!(a.len(), 52);
        assert!(a.starts_with("osk_"));
        assert!(a[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert!(well_formed(&a));
        assert_ne!(a, generate_secret());
    }

    #[test]
    fn secrets_use_the_whole_alphabet_evenly() {
        // 2,000 keys are 96,000 draws: about 1,548 of each of 62 characters. A biased or narrowed
        // alphabet (modulo bias, hex only, one case) falls far outside these bounds.
        let mut counts = std::collections::HashMap::<u8, u32>::new();
        for _ in 0..2_000 {
            for b in generate_secret()[4..].bytes() {
                *counts.entry(b).or_default() += 1;
            }
        }
        assert_eq!(counts.len(), 62, "{counts:?}");
        assert!(counts.values().all(|&n| (1_300..=1_800).contains(&n)), "{counts:?}");
    }

    #[test]
    fn only_key_shaped_strings_are_well_formed() {
        let good = format!("osk_{}", "a".repeat(48));
        assert!(well_formed(&good));
        for bad in [
            String::new(),
            "osk_".into(),
            format!("osk_{}", "a".repeat(47)),
            format!("osk_{}", "a".repeat(49)),
            format!("OSK_{}", "a".repeat(48)),
            format!("osk_{}-", "a".repeat(47)),
            format!("osk_{}é", "a".repeat(46)),
            format!("key_{}", "a".repeat(48)),
        ] {
            assert!(!well_formed(&bad), "{bad}");
        }
    }

    #[test]
    fn the_hash_is_sha256_hex_and_the_prefix_twelve_characters() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let s = generate_secret();
        assert_eq!(prefix_of(&s).len(), 12);
        assert!(s.starts_with(&prefix_of(&s)));
        let (doc, secret) = NewKey::new("n".into(), vec![Scope::ScansRead], None, UserId::new(), TeamId::new())
            .mint(Timestamp::from_millis(5));
        assert_eq!(doc.key_hash, hash_secret(&secret));
        assert_eq!(doc.key_prefix, prefix_of(&secret));
    }

    #[test]
    fn the_debug_form_shows_neither_hash_nor_key() {
        let (doc, secret) = NewKey::new("n".into(), vec![Scope::ScansRead], None, UserId::new(), TeamId::new())
            .mint(Timestamp::from_millis(5));
        let shown = format!("{doc:?}");
        assert!(!shown.contains(&doc.key_hash), "{shown}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains(&doc.key_prefix), "{shown}");
    }

    #[test]
    fn a_key_is_honoured_until_it_expires_is_revoked_or_its_grace_ends() {
        let at = Timestamp::from_millis;
        assert_eq!(key(KeyStatus::Active, None, None).usable_at(at(1_000)), Ok(()));
        assert_eq!(key(KeyStatus::Active, Some(1_000), None).usable_at(at(999)), Ok(()));
        assert_eq!(key(KeyStatus::Active, Some(1_000), None).usable_at(at(1_000)), Err(KeyRefusal::Expired));
        assert_eq!(key(KeyStatus::Revoked, None, None).usable_at(at(0)), Err(KeyRefusal::Revoked));
        assert_eq!(key(KeyStatus::Rotated, None, Some(500)).usable_at(at(499)), Ok(()));
        assert_eq!(key(KeyStatus::Rotated, None, Some(500)).usable_at(at(500)), Err(KeyRefusal::Expired));
        assert_eq!(key(KeyStatus::Rotated, None, None).usable_at(at(0)), Err(KeyRefusal::Expired));
        // The grace period does not outlive the key's own expiry.
        assert_eq!(key(KeyStatus::Rotated, Some(100), Some(500)).usable_at(at(200)), Err(KeyRefusal::Expired));
        assert!(key(KeyStatus::Rotated, None, Some(500)).expired_at(at(600)));
        assert!(!key(KeyStatus::Revoked, Some(1), None).expired_at(at(600)), "revoked is not expired");
    }

    #[test]
    fn new_keys_default_to_production_60_a_minute_and_90_days() {
        let now = Timestamp::from_millis(1_000);
        let (doc, _) = NewKey::new("n".into(), vec![Scope::ScansRead], None, UserId::new(), TeamId::new()).mint(now);
        assert_eq!(doc.environment, Environment::Production);
        assert_eq!(doc.rate_limit_per_minute, 60);
        assert_eq!(doc.expires_at, Some(now.plus(DAY * 90)));
        assert_eq!(doc.status, KeyStatus::Active);
        let mut forever = NewKey::new("n".into(), vec![Scope::ScansRead], None, UserId::new(), TeamId::new());
        forever.expires_in_days = 0;
        assert_eq!(forever.mint(now).0.expires_at, None);
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(check_rate_limit(1), Ok(1));
        assert_eq!(check_rate_limit(600), Ok(600));
        assert!(check_rate_limit(0).is_err());
        assert!(check_rate_limit(601).is_err());
        assert!(check_rate_limit(-5).is_err());
        assert_eq!(check_expiry_days(0), Ok(0));
        assert_eq!(check_expiry_days(365), Ok(365));
        assert!(check_expiry_days(366).is_err());
        assert!(check_expiry_days(-1).is_err());
        assert_eq!(check_grace_hours(0), Ok(0));
        assert_eq!(check_grace_hours(168), Ok(168));
        assert!(check_grace_hours(169).is_err());
        assert_eq!(check_name("  ci  "), Ok("ci".into()));
        assert!(check_name(" ").is_err());
        assert!(check_name(&"x".repeat(101)).is_err());
        assert_eq!(check_description(Some("  ")), Ok(None));
        assert!(check_description(Some(&"x".repeat(501))).is_err());
        assert_eq!(
            check_scopes(&["scans:read", "scans:trigger", "scans:read"]),
            Ok(vec![Scope::ScansTrigger, Scope::ScansRead])
        );
        assert!(check_scopes::<&str>(&[]).is_err());
        assert!(check_scopes(&["scans:everything"]).expect_err("unknown").contains("scans:everything"));
        assert_eq!("ci".parse::<Environment>(), Ok(Environment::Ci));
        assert!("prod".parse::<Environment>().is_err());
    }

    #[test]
    fn documents_read_back_whatever_integer_width_the_server_chose() {
        let (doc, _) = NewKey::new("n".into(), vec![Scope::ScansRead], None, UserId::new(), TeamId::new())
            .mint(Timestamp::from_millis(5));
        let mut raw = bson::serialize_to_document(&doc).expect("serialises");
        assert!(!raw.contains_key("secret"));
        raw.insert("rate_limit_per_minute", Bson::Int32(60));
        raw.insert("usage_count", Bson::Double(3.0));
        raw.insert("expires_in_days", Bson::Int64(30));
        raw.insert("created_at", Bson::Int32(5));
        let back = decode(raw.clone()).expect("decodes");
        assert_eq!((back.rate_limit_per_minute, back.usage_count, back.expires_in_days), (60, 3, 30));
        raw.insert("usage_count", Bson::Double(3.5));
        assert!(decode(raw).is_err(), "a fractional count is corrupt");
    }
}
