//! The unified scan record (`native_scans.scan_results`): one row per scan, cloud or native, kept current
//! from creation to roll-up, so that one history view covers every kind of scan.

use crate::time::Timestamp;
use bson::{Document, doc};
use futures::TryStreamExt;

use crate::db::Mongo;
use crate::domain::scan::RunStatus;
use crate::error::StoreResult;
use crate::ids::{RunId, TeamId};
use crate::store::findings;
use crate::store::runs::{RunDoc, RunKind};

/// How many findings a native scan record embeds (the findings store holds them all).
pub const EMBEDDED_FINDINGS: i64 = 500;

fn base_fields(run: &RunDoc) -> StoreResult<Document> {
    Ok(doc! {
        "team_id": &run.team_id,
        "kind": bson::serialize_to_bson(&run.kind)?,
        "tool_type": run.tools.first().cloned().unwrap_or_default(),
        "tools": run.tools.clone(),
        "target": run.target.clone(),
        "account_id": run.account_id.clone(),
        "provider": run.provider.map(|p| p.as_str()),
        "scan_type": &run.scan_type,
        "status": run.status.as_str(),
        "trigger": &run.trigger,
        "updated_at": Timestamp::now(),
    })
}

/// Creates (or refreshes) the record of a run.
pub async fn upsert_for_run(db: &Mongo, run: &RunDoc) -> StoreResult<()> {
    let mut set = base_fields(run)?;
    if run.status.is_terminal() {
        let summary = run.summary.clone().unwrap_or_default();
        set.insert("findings_count", summary.total_findings);
        set.insert("summary", bson::serialize_to_bson(&summary)?);
        set.insert("metadata.completed_at", run.finished_at);
        set.insert("metadata.sub_jobs", bson::serialize_to_bson(&run.counts.unwrap_or_default())?);
        if run.kind == RunKind::Native {
            let found = findings::last_reported_by_run(db, &run.id, EMBEDDED_FINDINGS).await?;
            let embedded: Vec<Document> = found
                .into_iter()
                .map(|f| {
                    doc! {
                        "name": f.get_str("title").unwrap_or_default(),
                        "severity": f.get_str("severity").unwrap_or_default(),
                        "description": f.get_str("description").unwrap_or_default(),
                        "solution": f.get_str("remediation").unwrap_or_default(),
                        "resource": {
                            "uid": f.get_str("resource_uid").unwrap_or_default(),
                            "type": f.get_str("resource_type").unwrap_or_default(),
                        },
                        "status": f.get_str("status").unwrap_or_default(),
                        "cves": f.get_array("cves").cloned().unwrap_or_default(),
                        "details": f.get_document("details").cloned().unwrap_or_default(),
                    }
                })
                .collect();
            set.insert("findings", embedded);
        }
    }
    db.scan_results
        .update_one(
            doc! { "scan_id": &run.id },
            doc! {
                "$set": set,
                "$setOnInsert": { "scan_id": &run.id, "created_at": run.created_at, "findings_count": 0_i64 },
            },
        )
        .upsert(true)
        .await?;
    Ok(())
}

pub async fn set_status(db: &Mongo, id: &RunId, status: RunStatus) -> StoreResult<()> {
    db.scan_results
        .update_one(
            doc! { "scan_id": id, "status": { "$in": ["queued", "running"] } },
            doc! { "$set": { "status": status.as_str(), "updated_at": Timestamp::now() } },
        )
        .await?;
    Ok(())
}

/// The team's record of a scan of the given kind (`native` or `cloud`).
pub async fn get(db: &Mongo, team: &TeamId, id: &RunId, kind: RunKind) -> StoreResult<Option<Document>> {
    Ok(db
        .scan_results
        .find_one(doc! { "scan_id": id, "team_id": team, "kind": bson::serialize_to_bson(&kind)? })
        .await?)
}

/// A page of the team's scan records, newest first, and the total that matches.
pub async fn list(
    db: &Mongo,
    team: &TeamId,
    filter: Document,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<Document>, u64)> {
    let mut q = doc! { "team_id": team };
    q.extend(filter);
    let total = db.scan_results.count_documents(q.clone()).await?;
    let cursor = db
        .scan_results
        .find(q)
        .projection(doc! { "findings": 0 })
        .sort(doc! { "created_at": -1, "scan_id": -1 })
        .skip(skip)
        .limit(limit)
        .await?;
    Ok((cursor.try_collect().await?, total))
}
