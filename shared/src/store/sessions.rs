//! Signed-in sessions (`cspm_platform.sessions`). A bearer token names its session, and the API honours
//! the token only while the session exists and has not expired, so signing out, changing the password
//! and an administrator's revocation take effect on the next request. A session has a fixed lifetime
//! (never extended) and is bound to the team that was active when it was made (switching team moves it).

use bson::doc;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::error::{StoreError, StoreResult};
use crate::ids::{SessionId, TeamId, UserId};
use crate::time::Timestamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionDoc {
    #[serde(rename = "_id")]
    pub id: SessionId,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// Where a session was opened from (shown to the user in their session list).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

fn decode(d: bson::Document) -> StoreResult<SessionDoc> {
    bson::deserialize_from_document(d).map_err(StoreError::from)
}

/// Opens a session and ends the user's oldest ones beyond `max_per_user`.
pub async fn create(
    db: &Mongo,
    user: &UserId,
    team: &TeamId,
    lifetime: std::time::Duration,
    max_per_user: u32,
    origin: Origin,
) -> StoreResult<SessionDoc> {
    let now = Timestamp::now();
    let session = SessionDoc {
        id: SessionId::new(),
        user_id: user.clone(),
        team_id: team.clone(),
        created_at: now,
        expires_at: now.plus(lifetime),
        ip: origin.ip,
        user_agent: origin.user_agent.map(|ua| ua.chars().take(256).collect()),
    };
    db.sessions.insert_one(bson::serialize_to_document(&session)?).await?;
    // Newest first (ids are ULIDs: creation order breaks ties within a millisecond); everything past the
    // limit ends. Two sign-ins at once may briefly leave one extra; the next sign-in trims it.
    let mut cursor = db
        .sessions
        .find(doc! { "user_id": user })
        .sort(doc! { "created_at": -1, "_id": -1 })
        .skip(u64::from(max_per_user))
        .projection(doc! { "_id": 1 })
        .await?;
    let mut evicted = Vec::new();
    while let Some(d) = cursor.try_next().await? {
        if let Ok(id) = d.get_str("_id") {
            evicted.push(id.to_string());
        }
    }
    if !evicted.is_empty() {
        db.sessions.delete_many(doc! { "_id": { "$in": evicted } }).await?;
    }
    Ok(session)
}

/// The session, if it exists and has not expired.
pub async fn get_active(db: &Mongo, id: &SessionId, now: Timestamp) -> StoreResult<Option<SessionDoc>> {
    let found = db.sessions.find_one(doc! { "_id": id, "expires_at": { "$gt": now } }).await?;
    found.map(decode).transpose()
}

/// Ends one session of a user. `false` when the user has no such session.
pub async fn end(db: &Mongo, user: &UserId, id: &SessionId) -> StoreResult<bool> {
    let r = db.sessions.delete_one(doc! { "_id": id, "user_id": user }).await?;
    Ok(r.deleted_count > 0)
}

/// Ends every session of a user, but `keep` (the caller's own, after a password change).
pub async fn end_all(db: &Mongo, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64> {
    let mut filter = doc! { "user_id": user };
    if let Some(k) = keep {
        filter.insert("_id", doc! { "$nin": [k] });
    }
    Ok(db.sessions.delete_many(filter).await?.deleted_count)
}

/// Ends a user's sessions bound to one team (they were removed from it).
pub async fn end_in_team(db: &Mongo, user: &UserId, team: &TeamId) -> StoreResult<u64> {
    Ok(db.sessions.delete_many(doc! { "user_id": user, "team_id": team }).await?.deleted_count)
}

/// A user's live sessions, newest first.
pub async fn list(db: &Mongo, user: &UserId, now: Timestamp) -> StoreResult<Vec<SessionDoc>> {
    let cursor = db
        .sessions
        .find(doc! { "user_id": user, "expires_at": { "$gt": now } })
        .sort(doc! { "created_at": -1, "_id": -1 })
        .limit(100)
        .await?;
    let docs: Vec<bson::Document> = cursor.try_collect().await?;
    docs.into_iter().map(decode).collect()
}

/// Moves a session to another team (the user switched their active team).
pub async fn set_team(db: &Mongo, id: &SessionId, team: &TeamId) -> StoreResult<()> {
    db.sessions.update_one(doc! { "_id": id }, doc! { "$set": { "team_id": team } }).await?;
    Ok(())
}
