//! The worker's bookkeeping, batched: claims, the resolution of what a finished scan no longer reports,
//! and terminal transitions of the SubJobs this worker runs concurrently are coalesced into one database
//! round trip each (per batch, not per SubJob).
//!
//! No request waits for a batch to fill: each loop takes whatever is queued when the previous round
//! trip returns, so batches form by themselves under load and a lone SubJob goes through at once. Every
//! write keeps its per-SubJob guard (state, lease token), so batching changes the cost, not the
//! semantics; SubJobs the fast claim did not take go through the full claim one by one.

use std::collections::HashSet;
use std::time::Duration;

use cspm_shared::db::Mongo;
use cspm_shared::error::{StoreError, StoreResult};
use cspm_shared::ids::SubJobId;
use cspm_shared::store::findings::{self, FindingScope};
use cspm_shared::store::occurrences;
use cspm_shared::store::subjobs::{self, Claim, Finishing};
use tokio::sync::{mpsc, oneshot};

/// The most SubJobs one round trip carries.
const MAX_BATCH: usize = 128;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

pub struct Ledger {
    claims: mpsc::Sender<(SubJobId, Reply<Claim>)>,
    resolutions: mpsc::Sender<(FindingScope, Reply<i64>)>,
    finishes: mpsc::Sender<(Finishing, Reply<bool>)>,
}

impl Ledger {
    pub fn start(db: Mongo, owner: String, lease: Duration) -> Self {
        let (claims, claim_rx) = mpsc::channel(1024);
        let (resolutions, resolve_rx) = mpsc::channel(1024);
        let (finishes, finish_rx) = mpsc::channel(1024);
        tokio::spawn(claim_loop(db.clone(), owner, lease, claim_rx));
        tokio::spawn(resolve_loop(db.clone(), resolve_rx));
        tokio::spawn(finish_loop(db, finish_rx));
        Self { claims, resolutions, finishes }
    }

    /// Claims a SubJob (see [`subjobs::claim`]).
    pub async fn claim(&self, id: SubJobId) -> StoreResult<Claim> {
        let (tx, rx) = oneshot::channel();
        self.claims.send((id, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Resolves the findings and occurrences of a completed SubJob's scope that it did not report (see
    /// [`findings::resolve_unseen_many`]); how many findings the SubJob has resolved in all.
    pub async fn resolve(&self, scope: FindingScope) -> StoreResult<i64> {
        let (tx, rx) = oneshot::channel();
        self.resolutions.send((scope, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Ends a SubJob (see [`subjobs::finish`]); whether this call made the transition.
    pub async fn finish(&self, f: Finishing) -> StoreResult<bool> {
        let (tx, rx) = oneshot::channel();
        self.finishes.send((f, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::Database("the bookkeeping loop stopped".into())
}

async fn next_batch<T>(rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn claim_loop(db: Mongo, owner: String, lease: Duration, mut rx: mpsc::Receiver<(SubJobId, Reply<Claim>)>) {
    while let Some(batch) = next_batch(&mut rx).await {
        // The same SubJob twice in one batch (a duplicate delivery) must not be claimed twice: only the
        // first of each id goes through the fast path.
        let mut seen = HashSet::new();
        let ids: Vec<SubJobId> =
            batch.iter().filter(|(id, _)| seen.insert(id.clone())).map(|(id, _)| id.clone()).collect();
        let mut claimed = match subjobs::claim_queued(&db, &ids, &owner, lease).await {
            Ok(c) => c,
            Err(e) if e.is_transient() => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
                continue;
            }
            // One unreadable SubJob must not hold back the others: claim each on its own.
            Err(_) => Vec::new(),
        };
        for (id, reply) in batch {
            let fast = claimed.iter().position(|(job, _)| job.id == id).map(|i| claimed.swap_remove(i));
            let answer = match fast {
                Some((job, l)) => Ok(Claim::Claimed(Box::new(job), l)),
                // Not simply queued (or a duplicate in this batch): the full claim, on its own.
                None => subjobs::claim_contended(&db, &id, &owner, lease).await,
            };
            let _ = reply.send(answer);
        }
    }
}

async fn resolve_loop(db: Mongo, mut rx: mpsc::Receiver<(FindingScope, Reply<i64>)>) {
    while let Some(batch) = next_batch(&mut rx).await {
        let scopes: Vec<FindingScope> = batch.iter().map(|(s, _)| s.clone()).collect();
        let resolved = match findings::resolve_unseen_many(&db, &scopes).await {
            Ok(counts) => occurrences::resolve_unseen_many(&db, &scopes).await.map(|()| counts),
            Err(e) => Err(e),
        };
        answer(batch, resolved);
    }
}

async fn finish_loop(db: Mongo, mut rx: mpsc::Receiver<(Finishing, Reply<bool>)>) {
    while let Some(batch) = next_batch(&mut rx).await {
        let items: Vec<Finishing> = batch.iter().map(|(f, _)| f.clone()).collect();
        answer(batch, subjobs::finish_many(&db, &items).await);
    }
}

/// Answers each request of a batch with its own result, in order, or all of them with the batch's error.
fn answer<R, T>(batch: Vec<(R, Reply<T>)>, results: StoreResult<Vec<T>>) {
    match results {
        Ok(results) => {
            for ((_, reply), result) in batch.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
