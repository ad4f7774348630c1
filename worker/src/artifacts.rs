//! The raw output of every SubJob that ran (what the scanner wrote), kept in object storage.
//!
//! The upload comes after the findings are stored, so it can never lose them. An upload that still
//! fails after the store's own retries does not fail the SubJob: its output moves to a spool directory
//! beside the SubJob directories (`<output dir>/.spool/<subjob>/`, with the owner in `owner.json` and
//! the files in `files/`) and is uploaded again from there by a background loop, until it succeeds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cspm_shared::artifacts::{ArtifactError, ArtifactOwner, ArtifactStore};
use cspm_shared::db::Mongo;
use serde::{Deserialize, Serialize};

/// The spool's directory name under the output root (never a run id: those start with `scan_`).
const SPOOL: &str = ".spool";
/// How often the spool is retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Spooled {
    owner: ArtifactOwner,
}

/// Uploads a SubJob's output directory. `Ok(None)`: uploaded (or nothing to upload). `Ok(Some(why))`:
/// not uploaded, `why` being the SubJob's warning: the store failed and the output was spooled for a
/// later attempt, or the output itself cannot be uploaded (too many files, unreadable). `Err`: the
/// store failed and spooling failed too (the output is lost; the findings are not).
pub async fn upload_or_spool(
    store: &ArtifactStore,
    mongo: &Mongo,
    output_root: &Path,
    owner: &ArtifactOwner,
    dir: &Path,
) -> Result<Option<String>, String> {
    if is_empty(dir).await {
        return Ok(None);
    }
    match store.upload_dir(mongo, owner, dir).await {
        Ok(docs) => {
            tracing::debug!(artifacts = docs.len(), store = store.name(), "raw output uploaded");
            Ok(None)
        }
        // The output itself cannot be uploaded (too many files, unreadable): a retry cannot help.
        Err(e @ (ArtifactError::TooManyFiles { .. } | ArtifactError::Read { .. })) => {
            tracing::warn!(error = %e, "raw output not kept");
            Ok(Some(format!("the raw output was not kept: {e}")))
        }
        Err(e) => {
            let why = format!("the raw output could not be uploaded to {} ({e}); it is kept for a retry", store.name());
            tracing::warn!(error = %e, "raw output upload failed; spooling it");
            spool(output_root, owner, dir).await.map_err(|s| format!("{why}, but spooling it failed: {s}"))?;
            Ok(Some(why))
        }
    }
}

async fn is_empty(dir: &Path) -> bool {
    match tokio::fs::read_dir(dir).await {
        Ok(mut d) => d.next_entry().await.ok().flatten().is_none(),
        Err(_) => true,
    }
}

fn spool_dir(output_root: &Path) -> PathBuf {
    output_root.join(SPOOL)
}

async fn spool(output_root: &Path, owner: &ArtifactOwner, dir: &Path) -> Result<(), String> {
    let entry = spool_dir(output_root).join(owner.subjob_id.as_str());
    if tokio::fs::try_exists(&entry).await.unwrap_or(false) {
        // An earlier attempt's spooled output: this attempt's replaces it.
        tokio::fs::remove_dir_all(&entry).await.map_err(|e| e.to_string())?;
    }
    tokio::fs::create_dir_all(&entry).await.map_err(|e| e.to_string())?;
    let meta = serde_json::to_vec(&Spooled { owner: owner.clone() }).map_err(|e| e.to_string())?;
    tokio::fs::write(entry.join("owner.json"), meta).await.map_err(|e| e.to_string())?;
    // Same filesystem (both under the output root): a rename, not a copy.
    tokio::fs::rename(dir, entry.join("files")).await.map_err(|e| e.to_string())
}

/// Uploads what the spool holds; returns how many SubJobs' outputs went up. An entry without a readable
/// owner is reported and left for a person (never silently deleted).
pub async fn drain_spool(store: &ArtifactStore, mongo: &Mongo, output_root: &Path) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(spool_dir(output_root)).await else { return 0 };
    let mut uploaded = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let owner = match tokio::fs::read(path.join("owner.json")).await.map(|b| serde_json::from_slice::<Spooled>(&b))
        {
            Ok(Ok(s)) => s.owner,
            _ => {
                tracing::warn!(dir = %path.display(), "spooled output without a readable owner.json; left in place");
                continue;
            }
        };
        match store.upload_dir(mongo, &owner, &path.join("files")).await {
            Ok(_) => {
                if let Err(e) = tokio::fs::remove_dir_all(&path).await {
                    tracing::warn!(error = %e, dir = %path.display(), "could not remove an uploaded spool entry");
                }
                uploaded += 1;
            }
            Err(e @ (ArtifactError::TooManyFiles { .. } | ArtifactError::Read { .. })) => {
                // Can never succeed: dropped (the SubJob's findings do not depend on it), and said so.
                tracing::warn!(error = %e, subjob.id = %owner.subjob_id, "spooled output cannot be uploaded; dropping it");
                let _ = tokio::fs::remove_dir_all(&path).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, subjob.id = %owner.subjob_id, "spooled output still cannot be uploaded");
                // The store is probably away for all of them: try again next round.
                break;
            }
        }
    }
    uploaded
}

/// Retries the spool until the process ends.
pub async fn spool_loop(store: ArtifactStore, mongo: Mongo, output_root: PathBuf) {
    loop {
        let n = drain_spool(&store, &mongo, &output_root).await;
        if n > 0 {
            tracing::info!(uploaded = n, "spooled raw output uploaded");
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
