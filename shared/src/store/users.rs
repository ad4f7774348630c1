//! Users, teams and memberships (`cspm_platform`).

use crate::time::Timestamp;
use bson::doc;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::domain::role::Role;
use crate::error::{StoreError, StoreResult};
use crate::ids::{TeamId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub team_id: TeamId,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: UserId,
    /// Lower-cased; unique.
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub memberships: Vec<Membership>,
    pub active_team_id: TeamId,
    pub status: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub last_login_at: Option<Timestamp>,
}

impl UserDoc {
    /// The user's role in their active team.
    pub fn active_role(&self) -> Option<Role> {
        self.memberships.iter().find(|m| m.team_id == self.active_team_id).map(|m| m.role)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamDoc {
    #[serde(rename = "_id")]
    pub id: TeamId,
    pub name: String,
    pub created_at: Timestamp,
}

pub fn normalise_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

pub async fn find_by_email(db: &Mongo, email: &str) -> StoreResult<Option<UserDoc>> {
    let found = db.users.find_one(doc! { "email": normalise_email(email) }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

pub async fn get(db: &Mongo, id: &UserId) -> StoreResult<Option<UserDoc>> {
    let found = db.users.find_one(doc! { "_id": id }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

pub async fn get_team(db: &Mongo, id: &TeamId) -> StoreResult<Option<TeamDoc>> {
    let found = db.teams.find_one(doc! { "_id": id }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

/// Creates a team, or returns the existing team of that name (idempotent across replicas).
pub async fn ensure_team(db: &Mongo, name: &str) -> StoreResult<TeamDoc> {
    let team = TeamDoc { id: TeamId::new(), name: name.to_string(), created_at: Timestamp::now() };
    match db.teams.insert_one(bson::serialize_to_document(&team)?).await {
        Ok(_) => Ok(team),
        Err(e) => match StoreError::from(e) {
            StoreError::Duplicate => {
                let found = db.teams.find_one(doc! { "name": name }).await?;
                let found = found.ok_or_else(|| StoreError::Database(format!("team `{name}` vanished")))?;
                Ok(bson::deserialize_from_document(found)?)
            }
            other => Err(other),
        },
    }
}

/// Creates a user with one membership. `Err(Duplicate)` when the email is taken.
pub async fn create_user(
    db: &Mongo,
    email: &str,
    name: &str,
    password_hash: String,
    team: &TeamId,
    role: Role,
) -> StoreResult<UserDoc> {
    let user = UserDoc {
        id: UserId::new(),
        email: normalise_email(email),
        name: name.to_string(),
        password_hash,
        memberships: vec![Membership { team_id: team.clone(), role }],
        active_team_id: team.clone(),
        status: "active".into(),
        created_at: Timestamp::now(),
        last_login_at: None,
    };
    db.users.insert_one(bson::serialize_to_document(&user)?).await?;
    Ok(user)
}

pub async fn record_login(db: &Mongo, id: &UserId, new_hash: Option<String>) -> StoreResult<()> {
    let mut set = doc! { "last_login_at": Timestamp::now() };
    if let Some(h) = new_hash {
        set.insert("password_hash", h);
    }
    db.users.update_one(doc! { "_id": id }, doc! { "$set": set }).await?;
    Ok(())
}
