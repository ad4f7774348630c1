//! The unified scan record (`native_scans.scan_results`): one row per scan, cloud or native, kept current
//! from creation to roll-up, so that one history view covers every kind of scan.

use bson::{Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::db::Mongo;
use crate::domain::provider::Provider;
use crate::domain::scan::{RunStatus, SubJobCounts};
use crate::error::StoreResult;
use crate::ids::{AccountId, RunId, TeamId};
use crate::store::findings;
use crate::store::runs::{RunDoc, RunKind, RunSummary};
use crate::time::Timestamp;

/// How many findings a native scan record embeds (the findings store holds them all).
pub const EMBEDDED_FINDINGS: i64 = 500;

/// A scan's unified record.
#[derive(Debug, Clone, Deserialize)]
pub struct ResultDoc {
    pub scan_id: RunId,
    pub team_id: TeamId,
    pub kind: RunKind,
    /// The first tool of the run.
    #[serde(default)]
    pub tool_type: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub account_id: Option<AccountId>,
    #[serde(default)]
    pub provider: Option<Provider>,
    pub scan_type: String,
    pub status: RunStatus,
    /// `api`, `schedule`, …
    pub trigger: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub findings_count: i64,
    /// Set when the run ends.
    #[serde(default)]
    pub summary: Option<RunSummary>,
    /// Set when the run ends.
    #[serde(default)]
    pub metadata: Option<ResultMetadata>,
    /// A native scan's first findings (at most [`EMBEDDED_FINDINGS`]), set when it ends.
    #[serde(default)]
    pub findings: Vec<EmbeddedFinding>,
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultMetadata {
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    #[serde(default)]
    pub sub_jobs: SubJobCounts,
}

/// A finding embedded in a native scan's record, in the seed's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddedFinding {
    pub name: String,
    pub severity: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub solution: String,
    pub resource: EmbeddedResource,
    pub status: String,
    #[serde(default)]
    pub cves: Vec<String>,
    /// The tool's own detail.
    #[serde(default)]
    pub details: Document,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddedResource {
    pub uid: String,
    #[serde(rename = "type")]
    pub kind: String,
}

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
        // The whole subdocument, written once, rather than dotted paths (which the Mongo-wire test
        // server stores as flat keys).
        let metadata = ResultMetadata { completed_at: run.finished_at, sub_jobs: run.counts.unwrap_or_default() };
        set.insert("metadata", bson::serialize_to_bson(&metadata)?);
        if run.kind == RunKind::Native {
            let found = findings::last_reported_by_run(db, &run.id, EMBEDDED_FINDINGS).await?;
            let text = |f: &Document, k: &str| f.get_str(k).unwrap_or_default().to_string();
            let embedded: Vec<EmbeddedFinding> = found
                .into_iter()
                .map(|f| EmbeddedFinding {
                    name: text(&f, "title"),
                    severity: text(&f, "severity"),
                    description: text(&f, "description"),
                    solution: text(&f, "remediation"),
                    resource: EmbeddedResource { uid: text(&f, "resource_uid"), kind: text(&f, "resource_type") },
                    status: text(&f, "status"),
                    cves: f
                        .get_array("cves")
                        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                    details: f.get_document("details").cloned().unwrap_or_default(),
                })
                .collect();
            set.insert("findings", bson::serialize_to_bson(&embedded)?);
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
pub async fn get(db: &Mongo, team: &TeamId, id: &RunId, kind: RunKind) -> StoreResult<Option<ResultDoc>> {
    let found = db
        .scan_results
        .find_one(doc! { "scan_id": id, "team_id": team, "kind": bson::serialize_to_bson(&kind)? })
        .await?;
    Ok(found.map(bson::deserialize_from_document).transpose()?)
}

/// A page of the team's scan records, newest first, and the total that matches.
pub async fn list(
    db: &Mongo,
    team: &TeamId,
    filter: Document,
    skip: u64,
    limit: i64,
) -> StoreResult<(Vec<ResultDoc>, u64)> {
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
    let rows: Vec<Document> = cursor.try_collect().await?;
    let rows = rows.into_iter().map(bson::deserialize_from_document).collect::<Result<_, _>>()?;
    Ok((rows, total))
}
