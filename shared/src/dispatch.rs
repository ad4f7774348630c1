//! Admission control: SubJobs wait in MongoDB and are fed to Redis while the queue is below its
//! high-water mark.
//!
//! apalis-redis 1.0.0 fails every worker once 8,000 or more messages are due at once (its fetch script
//! unpacks them all), so the backlog in Redis must stay bounded whatever the API accepts. Any process may
//! feed (the API right after creating a run, workers and the scheduler on a timer): a batch of SubJobs is
//! claimed for dispatch with a token in one conditional update, so concurrent feeders never push the same
//! dispatch twice, and the message's task id is derived from (SubJob, token), so a push retried after an
//! ambiguous timeout is deduplicated by apalis.

use std::time::Duration;

use crate::time::Timestamp;
use apalis_core::task::task_id::TaskId;
use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use crate::db::Mongo;
use crate::error::{StoreError, StoreResult};
use crate::ids::{RunId, SubJobId};
use crate::queue::{QueueKind, Queues, SubJobMessage};
use crate::store::subjobs::{self, SubJobDoc};

/// The apalis task id of one dispatch of a SubJob: a ULID whose time part is the dispatch time and
/// whose random part is derived from the SubJob id and the dispatch token.
pub fn task_id_for(subjob: &SubJobId, token: &str) -> TaskId {
    let ts = ulid::Ulid::from_string(token).map(|u| u.timestamp_ms()).unwrap_or(0);
    let mut h = Sha256::new();
    h.update(subjob.as_str().as_bytes());
    h.update(b"/");
    h.update(token.as_bytes());
    let digest = h.finalize();
    let mut rnd = [0u8; 16];
    rnd[6..].copy_from_slice(&digest[..10]);
    TaskId::from(ulid::Ulid::from_parts(ts, u128::from_be_bytes(rnd)))
}

/// Feeds up to `max_batch` waiting SubJobs of a queue into Redis, never past the high-water mark.
/// Returns how many were pushed.
pub async fn feed(db: &Mongo, queues: &Queues, kind: QueueKind, max_batch: u64) -> StoreResult<u64> {
    // Most of the time nothing waits (new SubJobs are admitted as they are created): find that out with
    // one indexed lookup, without taking the lock that the API's admissions need.
    let waiting = db.sub_jobs.find_one(waiting_filter(kind)).projection(doc! { "_id": 1 }).await?;
    if waiting.is_none() {
        return Ok(0);
    }
    // One feeder per queue at a time, so that the depth read below stays true until the push: the
    // high-water mark then holds exactly, however many processes feed.
    let Some(lock) = queues.lock_feeder(kind, Duration::from_millis(250)).await? else {
        return Ok(0); // another process is feeding this queue right now
    };
    let result = feed_locked(db, queues, kind, max_batch).await;
    queues.unlock_feeder(kind, &lock).await;
    result
}

async fn feed_locked(db: &Mongo, queues: &Queues, kind: QueueKind, max_batch: u64) -> StoreResult<u64> {
    let depth = queues.depth(kind).await?;
    let room = queues.settings().high_water_mark.saturating_sub(depth).min(max_batch);
    if room == 0 {
        return Ok(0);
    }
    let waiting: Vec<Document> = db
        .sub_jobs
        .find(waiting_filter(kind))
        .projection(doc! { "_id": 1 })
        .sort(doc! { "_id": 1 })
        .limit(room as i64)
        .await?
        .try_collect()
        .await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Bson> = waiting.into_iter().filter_map(|d| d.get("_id").cloned()).collect();
    let token = ulid::Ulid::generate().to_string();
    db.sub_jobs
        .update_many(
            doc! { "_id": { "$in": ids.clone() }, "status": "queued", "dispatched_at": Bson::Null },
            doc! { "$set": { "dispatched_at": Timestamp::now(), "dispatch_token": &token } },
        )
        .await?;
    let mine: Vec<Document> = db
        .sub_jobs
        .find(doc! { "_id": { "$in": ids }, "dispatch_token": &token })
        .projection(doc! { "_id": 1, "run_id": 1 })
        .await?
        .try_collect()
        .await?;
    let mut messages = Vec::with_capacity(mine.len());
    for d in &mine {
        let subjob_id: SubJobId = bson::deserialize_from_bson(d.get("_id").cloned().unwrap_or(Bson::Null))?;
        let run_id: RunId = bson::deserialize_from_bson(d.get("run_id").cloned().unwrap_or(Bson::Null))?;
        messages.push((task_id_for(&subjob_id, &token), SubJobMessage { subjob_id, run_id }));
    }
    let n = messages.len() as u64;
    if let Err(e) = queues.push(kind, messages).await {
        release_dispatch(db, &token).await;
        return Err(e);
    }
    Ok(n)
}

/// Inserts new SubJobs and, in the same step, dispatches as many as fit under the high-water mark (they
/// are written already marked as dispatched, then pushed): a new run costs no extra round trips to reach
/// the workers. Returns whether every SubJob was dispatched; the rest wait for the feeders.
pub async fn insert_and_admit(
    db: &Mongo,
    queues: &Queues,
    kind: QueueKind,
    mut jobs: Vec<SubJobDoc>,
) -> StoreResult<bool> {
    let lock = match queues.lock_feeder(kind, Duration::from_millis(250)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "queue unavailable; the SubJobs wait in MongoDB");
            None
        }
    };
    let mut messages = Vec::new();
    let token = ulid::Ulid::generate().to_string();
    if lock.is_some()
        && let Ok(depth) = queues.depth(kind).await
    {
        let room = queues.settings().high_water_mark.saturating_sub(depth) as usize;
        let now = Timestamp::now();
        for job in jobs.iter_mut().take(room) {
            job.dispatched_at = Some(now);
            job.dispatch_token = Some(token.clone());
            messages.push((
                task_id_for(&job.id, &token),
                SubJobMessage { subjob_id: job.id.clone(), run_id: job.run_id.clone() },
            ));
        }
    }
    let inserted = subjobs::insert_many(db, &jobs).await;
    let mut all = inserted.is_ok() && messages.len() == jobs.len();
    if inserted.is_ok() && !messages.is_empty() && queues.push(kind, messages).await.is_err() {
        all = false;
        release_dispatch(db, &token).await;
    }
    if let Some(l) = lock {
        queues.unlock_feeder(kind, &l).await;
    }
    inserted.map(|()| all)
}

/// SubJobs of a queue that wait in MongoDB for room in Redis.
fn waiting_filter(kind: QueueKind) -> Document {
    doc! { "queue": kind.as_str(), "status": "queued", "dispatched_at": Bson::Null, "cancel_requested": false }
}

/// Gives back the SubJobs of a dispatch whose push failed, so that the next feed retries them (best
/// effort: the lost-message recovery catches what this misses).
async fn release_dispatch(db: &Mongo, token: &str) {
    let _ = db
        .sub_jobs
        .update_many(
            doc! { "dispatch_token": token, "status": "queued" },
            doc! { "$set": { "dispatched_at": Bson::Null, "dispatch_token": Bson::Null } },
        )
        .await;
}

/// Feeds every queue until each is at its mark or has nothing waiting.
pub async fn feed_all(db: &Mongo, queues: &Queues, max_batch: u64) -> StoreResult<u64> {
    let mut total = 0;
    for kind in QueueKind::ALL {
        loop {
            let n = feed(db, queues, kind, max_batch).await?;
            total += n;
            if n < max_batch {
                break;
            }
        }
    }
    Ok(total)
}

/// Finds SubJobs that were dispatched long ago but are still queued and whose message Redis no longer
/// holds (lost with Redis data, dead-lettered after repeated transient failures, or pushed by a feeder
/// that died), and makes them dispatchable again. Returns how many were released.
pub async fn recover_lost_messages(db: &Mongo, queues: &Queues, older_than: Duration, limit: i64) -> StoreResult<u64> {
    let cutoff = Timestamp::now().minus(older_than);
    let stale: Vec<Document> = db
        .sub_jobs
        .find(doc! { "status": "queued", "dispatched_at": { "$lt": cutoff } })
        .projection(doc! { "_id": 1, "queue": 1, "dispatch_token": 1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    let mut released = 0;
    for d in stale {
        let id: SubJobId = bson::deserialize_from_bson(d.get("_id").cloned().unwrap_or(Bson::Null))?;
        let kind: QueueKind = bson::deserialize_from_bson(d.get("queue").cloned().unwrap_or(Bson::Null))?;
        let token = d.get_str("dispatch_token").unwrap_or_default().to_string();
        let status = queues.message_status(kind, &task_id_for(&id, &token)).await?;
        let alive = matches!(status.as_deref(), Some("Pending" | "Queued" | "Running"));
        if alive {
            continue;
        }
        let r = db
            .sub_jobs
            .update_one(
                doc! { "_id": &id, "status": "queued", "dispatch_token": &token },
                doc! { "$set": { "dispatched_at": Bson::Null, "dispatch_token": Bson::Null } },
            )
            .await?;
        if r.modified_count == 1 {
            tracing::warn!(subjob.id = %id, message_status = ?status, "re-dispatching a SubJob whose queue message was lost");
            released += 1;
        }
    }
    Ok(released)
}

/// SubJobs waiting in MongoDB for room in Redis.
pub async fn waiting_count(db: &Mongo, kind: QueueKind) -> StoreResult<u64> {
    db.sub_jobs
        .count_documents(doc! { "queue": kind.as_str(), "status": "queued", "dispatched_at": Bson::Null })
        .await
        .map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_deterministic_per_dispatch() {
        let sj = SubJobId::new();
        let t1 = ulid::Ulid::generate().to_string();
        let t2 = ulid::Ulid::generate().to_string();
        assert_eq!(task_id_for(&sj, &t1).to_string(), task_id_for(&sj, &t1).to_string());
        assert_ne!(task_id_for(&sj, &t1).to_string(), task_id_for(&sj, &t2).to_string());
        assert_ne!(task_id_for(&sj, &t1).to_string(), task_id_for(&SubJobId::new(), &t1).to_string());
    }
}
