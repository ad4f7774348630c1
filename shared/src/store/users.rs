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
    /// Failed sign-ins since the last success or lock.
    #[serde(default)]
    pub failed_logins: i64,
    /// Sign-ins are refused until then (the lock clears itself).
    #[serde(default)]
    pub locked_until: Option<Timestamp>,
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
        failed_logins: 0,
        locked_until: None,
    };
    db.users.insert_one(bson::serialize_to_document(&user)?).await?;
    Ok(user)
}

/// A successful sign-in: clears the failure count and any lock, and stores a rehashed password.
pub async fn record_login(db: &Mongo, id: &UserId, new_hash: Option<String>) -> StoreResult<()> {
    let mut set = doc! { "last_login_at": Timestamp::now(), "failed_logins": 0_i64, "locked_until": bson::Bson::Null };
    if let Some(h) = new_hash {
        set.insert("password_hash", h);
    }
    db.users.update_one(doc! { "_id": id }, doc! { "$set": set }).await?;
    Ok(())
}

impl UserDoc {
    /// Whether sign-ins are refused at `now`.
    pub fn locked_at(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }

    pub fn role_in(&self, team: &TeamId) -> Option<Role> {
        self.memberships.iter().find(|m| &m.team_id == team).map(|m| m.role)
    }
}

/// Counts a failed sign-in; the `max_failures`-th in a row locks the account for `lockout`. Returns
/// whether this failure locked it. The count is incremented atomically, so replicas racing on the same
/// account still lock it at the limit.
pub async fn record_failure(
    db: &Mongo,
    id: &UserId,
    now: Timestamp,
    max_failures: u32,
    lockout: std::time::Duration,
) -> StoreResult<bool> {
    db.users.update_one(doc! { "_id": id }, doc! { "$inc": { "failed_logins": 1_i64 } }).await?;
    // Only the update that finds the count at the limit locks (and resets the count).
    let r = db
        .users
        .update_one(
            doc! { "_id": id, "failed_logins": { "$gte": i64::from(max_failures) } },
            doc! { "$set": { "failed_logins": 0_i64, "locked_until": now.plus(lockout) } },
        )
        .await?;
    Ok(r.modified_count > 0)
}

pub async fn set_password(db: &Mongo, id: &UserId, hash: String) -> StoreResult<()> {
    db.users.update_one(doc! { "_id": id }, doc! { "$set": { "password_hash": hash } }).await?;
    Ok(())
}

pub async fn set_active_team(db: &Mongo, id: &UserId, team: &TeamId) -> StoreResult<()> {
    db.users.update_one(doc! { "_id": id }, doc! { "$set": { "active_team_id": team } }).await?;
    Ok(())
}

/// Changes a user's memberships with `change` (which says whether it changed anything), as one
/// compare-and-set on a revision counter, retried when another writer got there first. `None` when the
/// user does not exist. (The whole array is written: the MongoDB-wire test server mangles `$push`ed
/// sub-documents and ignores `$nin` on array paths, and a revision check is what makes the read and
/// the write one step on any server.)
async fn change_memberships<F>(db: &Mongo, user: &UserId, mut change: F) -> StoreResult<Option<bool>>
where
    F: FnMut(&mut Vec<Membership>) -> bool,
{
    for _ in 0..8 {
        let Some(d) = db.users.find_one(doc! { "_id": user }).await? else {
            return Ok(None);
        };
        let rev = match d.get("rev") {
            Some(bson::Bson::Int32(n)) => Some(i64::from(*n)),
            Some(bson::Bson::Int64(n)) => Some(*n),
            _ => None,
        };
        let mut u: UserDoc = bson::deserialize_from_document(d)?;
        if !change(&mut u.memberships) {
            return Ok(Some(false));
        }
        let filter = match rev {
            Some(r) => doc! { "_id": user, "rev": r },
            None => doc! { "_id": user, "rev": { "$exists": false } },
        };
        let set =
            doc! { "$set": { "memberships": bson::serialize_to_bson(&u.memberships)?, "rev": rev.unwrap_or(0) + 1 } };
        if db.users.update_one(filter, set).await?.matched_count > 0 {
            return Ok(Some(true));
        }
    }
    Err(StoreError::Database(format!("the memberships of {user} kept changing concurrently")))
}

/// Adds a membership. `false` when the user is already a member of the team (or does not exist).
pub async fn add_membership(db: &Mongo, user: &UserId, team: &TeamId, role: Role) -> StoreResult<bool> {
    let changed = change_memberships(db, user, |ms| {
        if ms.iter().any(|m| &m.team_id == team) {
            return false;
        }
        ms.push(Membership { team_id: team.clone(), role });
        true
    })
    .await?;
    Ok(changed == Some(true))
}

/// Changes a member's role. `false` when the user is not a member.
pub async fn set_role(db: &Mongo, user: &UserId, team: &TeamId, role: Role) -> StoreResult<bool> {
    let mut member = false;
    change_memberships(db, user, |ms| match ms.iter_mut().find(|m| &m.team_id == team) {
        Some(m) => {
            member = true;
            let changed = m.role != role;
            m.role = role;
            changed
        }
        None => false,
    })
    .await?;
    Ok(member)
}

/// Removes a membership. `false` when the user was not a member.
pub async fn remove_membership(db: &Mongo, user: &UserId, team: &TeamId) -> StoreResult<bool> {
    let changed = change_memberships(db, user, |ms| {
        let before = ms.len();
        ms.retain(|m| &m.team_id != team);
        ms.len() != before
    })
    .await?;
    Ok(changed == Some(true))
}

/// The members of a team (at most 1,000), by email.
pub async fn members(db: &Mongo, team: &TeamId) -> StoreResult<Vec<UserDoc>> {
    let cursor = db.users.find(doc! { "memberships.team_id": team }).sort(doc! { "email": 1 }).limit(1000).await?;
    let docs: Vec<bson::Document> = futures::TryStreamExt::try_collect(cursor).await?;
    docs.into_iter().map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).collect()
}

/// How many administrators a team has.
pub async fn admin_count(db: &Mongo, team: &TeamId) -> StoreResult<u64> {
    Ok(db
        .users
        .count_documents(doc! { "memberships": { "$elemMatch": { "team_id": team, "role": Role::Admin.as_str() } } })
        .await?)
}

/// The teams with these ids, by name.
pub async fn teams(db: &Mongo, ids: &[TeamId]) -> StoreResult<Vec<TeamDoc>> {
    let cursor = db.teams.find(doc! { "_id": { "$in": ids } }).sort(doc! { "name": 1 }).await?;
    let docs: Vec<bson::Document> = futures::TryStreamExt::try_collect(cursor).await?;
    docs.into_iter().map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).collect()
}

/// Creates a team. `Err(Duplicate)` when the name is taken.
pub async fn create_team(db: &Mongo, name: &str) -> StoreResult<TeamDoc> {
    let team = TeamDoc { id: TeamId::new(), name: name.to_string(), created_at: Timestamp::now() };
    db.teams.insert_one(bson::serialize_to_document(&team)?).await?;
    Ok(team)
}
