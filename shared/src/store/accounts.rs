//! Cloud accounts, and the race-free "one active scan per account" rule.

use std::time::Duration;

use crate::time::Timestamp;
use bson::{Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::domain::provider::Provider;
use crate::error::{StoreError, StoreResult};
use crate::ids::{AccountId, RunId, TeamId, UserId};
use crate::store::runs;

/// A cloud account document (`cspm_cloud_security.cloud_accounts`). Credentials are stored encrypted
/// and bound to the account; they are never returned by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountDoc {
    #[serde(rename = "_id")]
    pub id: AccountId,
    pub team_id: TeamId,
    pub provider: Provider,
    pub provider_account_id: String,
    pub name: String,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub credentials_encrypted: Option<String>,
    #[serde(default)]
    pub credential_type: Option<String>,
    /// AWS only: the API endpoint to scan instead of AWS's own (LocalStack-style emulators, air-gapped
    /// partitions). Given to Prowler as `AWS_ENDPOINT_URL`.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Prowler services to check (empty: all of them).
    #[serde(default)]
    pub services: Vec<String>,
    /// Prowler checks to leave out.
    #[serde(default)]
    pub excluded_checks: Vec<String>,
    pub status: String,
    #[serde(default)]
    pub active_run_id: Option<RunId>,
    #[serde(default)]
    pub active_run_claimed_at: Option<Timestamp>,
    #[serde(default)]
    pub last_scan_run_id: Option<RunId>,
    /// Set when the fleet paused the account's schedules (consecutive scheduled failures), with why.
    #[serde(default)]
    pub schedules_paused_at: Option<Timestamp>,
    #[serde(default)]
    pub schedules_paused_reason: Option<String>,
    #[serde(default)]
    pub created_by: Option<UserId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl AccountDoc {
    /// The associated data that binds an encrypted credential to its account.
    pub fn credential_binding(team: &TeamId, id: &AccountId) -> String {
        format!("{team}/{id}")
    }
}

pub async fn insert(db: &Mongo, account: &AccountDoc) -> StoreResult<()> {
    db.cloud_accounts.insert_one(bson::serialize_to_document(account)?).await?;
    Ok(())
}

pub async fn get(db: &Mongo, team: &TeamId, id: &AccountId) -> StoreResult<Option<AccountDoc>> {
    let found = db.cloud_accounts.find_one(doc! { "_id": id, "team_id": team }).await?;
    found.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

pub async fn list(db: &Mongo, team: &TeamId) -> StoreResult<Vec<AccountDoc>> {
    let cursor = db.cloud_accounts.find(doc! { "team_id": team }).sort(doc! { "created_at": 1, "_id": 1 }).await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    docs.into_iter().map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).collect()
}

/// Applies a `$set` to the team's account; returns the updated account, or `None` if it is not the team's.
pub async fn update(db: &Mongo, team: &TeamId, id: &AccountId, mut set: Document) -> StoreResult<Option<AccountDoc>> {
    set.insert("updated_at", Timestamp::now());
    let r = db
        .cloud_accounts
        .find_one_and_update(doc! { "_id": id, "team_id": team }, doc! { "$set": set })
        .return_document(mongodb::options::ReturnDocument::After)
        .await?;
    r.map(|d| bson::deserialize_from_document(d).map_err(StoreError::from)).transpose()
}

/// Why an account cannot be deleted now.
#[derive(Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    ScanActive(RunId),
}

/// Deletes the account and what belongs to it (findings, runs and their SubJobs). Refused while a scan
/// of the account is active: cancel it first.
pub async fn delete(db: &Mongo, team: &TeamId, id: &AccountId) -> StoreResult<DeleteOutcome> {
    let Some(account) = get(db, team, id).await? else {
        return Ok(DeleteOutcome::NotFound);
    };
    if let Some(active) = account.active_run_id.clone()
        && let Some(run) = runs::get_any(db, &active).await?
        && !run.status.is_terminal()
    {
        return Ok(DeleteOutcome::ScanActive(active));
    }
    let r = db
        .cloud_accounts
        .delete_one(doc! { "_id": id, "team_id": team, "active_run_id": account.active_run_id.clone() })
        .await?;
    if r.deleted_count == 0 {
        // A scan started in between.
        return Ok(match get(db, team, id).await?.and_then(|a| a.active_run_id) {
            Some(run) => DeleteOutcome::ScanActive(run),
            None => DeleteOutcome::NotFound,
        });
    }
    crate::store::schedules::delete_for_account(db, team, id).await?;
    db.findings.delete_many(doc! { "team_id": team, "account_id": id }).await?;
    let run_ids: Vec<Document> = db
        .scan_runs
        .find(doc! { "team_id": team, "account_id": id })
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    let ids: Vec<bson::Bson> = run_ids.into_iter().filter_map(|d| d.get("_id").cloned()).collect();
    if !ids.is_empty() {
        db.sub_jobs.delete_many(doc! { "run_id": { "$in": ids.clone() } }).await?;
        db.scan_results.delete_many(doc! { "scan_id": { "$in": ids.clone() } }).await?;
        db.scan_runs.delete_many(doc! { "_id": { "$in": ids } }).await?;
    }
    Ok(DeleteOutcome::Deleted)
}

/// The result of trying to make a run the account's active scan.
#[derive(Debug, PartialEq, Eq)]
pub enum ActiveClaim {
    Claimed,
    /// Another scan of the account is queued or running: its id.
    Existing(RunId),
    NotFound,
}

/// How long a claim may point at a run that does not exist yet (its creator is between the claim and the
/// insert) before it is considered abandoned by a crashed creator.
const CLAIM_GRACE: Duration = Duration::from_secs(120);

/// Makes `run` the account's active scan, unless one is active. Decided by one conditional update on
/// the account document, so two concurrent requests cannot both win (on MongoDB and on the test server).
pub async fn claim_active_run(db: &Mongo, team: &TeamId, id: &AccountId, run: &RunId) -> StoreResult<ActiveClaim> {
    for _ in 0..3 {
        let now = Timestamp::now();
        let won = db
            .cloud_accounts
            .find_one_and_update(
                doc! { "_id": id, "team_id": team, "active_run_id": bson::Bson::Null },
                doc! { "$set": { "active_run_id": run, "active_run_claimed_at": now, "last_scan_run_id": run } },
            )
            .projection(doc! { "_id": 1 })
            .await?;
        if won.is_some() {
            return Ok(ActiveClaim::Claimed);
        }
        let Some(account) = get(db, team, id).await? else {
            return Ok(ActiveClaim::NotFound);
        };
        let Some(existing) = account.active_run_id.clone() else {
            continue; // released in between: try again
        };
        let stale = match runs::get_any(db, &existing).await? {
            Some(r) => r.status.is_terminal(),
            None => account.active_run_claimed_at.is_none_or(|t| Timestamp::now().since(t) > CLAIM_GRACE),
        };
        if !stale {
            return Ok(ActiveClaim::Existing(existing));
        }
        tracing::warn!(account.id = %id, run.id = %existing, "clearing a stale active-scan claim");
        release_active_run(db, id, &existing).await?;
    }
    Err(StoreError::Database("could not settle the account's active scan after 3 tries".into()))
}

/// Clears the account's active scan if it is still `run` (a newer run is never released by an older one).
pub async fn release_active_run(db: &Mongo, id: &AccountId, run: &RunId) -> StoreResult<()> {
    db.cloud_accounts
        .update_one(
            doc! { "_id": id, "active_run_id": run },
            doc! { "$set": { "active_run_id": bson::Bson::Null, "active_run_claimed_at": bson::Bson::Null } },
        )
        .await?;
    Ok(())
}
