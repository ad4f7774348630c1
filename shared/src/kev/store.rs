//! The catalog in MongoDB (`cspm_threat_intelligence`): `kev_catalogs` holds one document per imported
//! catalog, `kev_vulnerabilities` its entries (`_id` `{catalog}/{cve}`), and `kev_state` one document,
//! `current`, that points at the catalog in force and records checks and enrichment.
//!
//! Replacing a catalog never leaves a half-written one in force: the new catalog's document is written
//! (`staging`), then its entries, then it is marked `staged`; only then does one compare-and-set on the
//! pointer make it current. A process that dies before the flip leaves a staged catalog nobody reads
//! (removed after an hour); one that dies after it leaves enrichment pending, which the next import or
//! refresh finishes. Earlier catalogs are kept until the new one's enrichment has settled, because
//! re-enrichment is computed from the difference.

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::catalog::ValidCatalog;
use crate::db::Mongo;
use crate::error::{StoreError, StoreResult, is_duplicate_key};
use crate::time::Timestamp;

const POINTER: &str = "current";
/// Entries written per round trip.
const WRITE_BATCH: usize = 500;
/// A catalog staged this long ago and never made current was abandoned by a process that died.
const ABANDONED_AFTER_MS: i64 = 3_600_000;

/// Where a catalog came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `upload` (the API's body), `url` (fetched) or `file` (read from a path by an operator's tool).
    pub kind: String,
    #[serde(default)]
    pub url: Option<String>,
}

impl Source {
    pub fn upload() -> Self {
        Self { kind: "upload".into(), url: None }
    }
    pub fn url(url: &str) -> Self {
        Self { kind: "url".into(), url: Some(url.to_string()) }
    }
    pub fn file(path: &std::path::Path) -> Self {
        Self { kind: "file".into(), url: Some(path.display().to_string()) }
    }
}

/// What the last conditional request learnt about a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchMemo {
    pub url: String,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    pub checked_at: Timestamp,
    /// When the scheduled refresh checks again (sooner after a failure).
    #[serde(default)]
    pub next_check_at: Option<Timestamp>,
}

/// One check of a source: what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub at: Timestamp,
    /// `imported`, `unchanged`, `not_modified`, `refused` (the catalog failed validation) or `failed`
    /// (it could not be fetched).
    pub outcome: String,
    #[serde(default)]
    pub detail: Option<String>,
    pub source: Source,
}

/// What one enrichment pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichStats {
    pub cves_changed: i64,
    pub findings_updated: i64,
    pub occurrences_updated: i64,
    pub duration_ms: i64,
}

/// The `current` document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KevState {
    pub catalog_id: Option<String>,
    pub catalog_version: Option<String>,
    pub date_released: Option<String>,
    pub count: i64,
    pub sha256: Option<String>,
    pub source: Option<Source>,
    pub imported_at: Option<Timestamp>,
    /// When the catalog became current; enrichment passes are judged against it.
    pub flipped_at: Option<Timestamp>,
    /// The first enrichment pass of this catalog ended.
    pub enriched_at: Option<Timestamp>,
    pub enrichment: Option<EnrichStats>,
    /// The settling pass ended (after every worker had time to load the catalog); older catalogs can go.
    pub settled_at: Option<Timestamp>,
    pub settle: Option<EnrichStats>,
    pub fetch: Option<FetchMemo>,
    pub last_checked_at: Option<Timestamp>,
    pub last_check: Option<CheckRecord>,
}

/// The catalog in force, as workers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub catalog_id: String,
    pub version: String,
    pub count: u64,
}

pub async fn state(db: &Mongo) -> StoreResult<KevState> {
    match db.kev_state.find_one(doc! { "_id": POINTER }).await? {
        Some(d) => Ok(bson::deserialize_from_document(d)?),
        None => Ok(KevState::default()),
    }
}

/// The pointer alone (what a worker reads every reload interval).
pub async fn current_pointer(db: &Mongo) -> StoreResult<Option<Pointer>> {
    let Some(d) = db
        .kev_state
        .find_one(doc! { "_id": POINTER })
        .projection(doc! { "catalog_id": 1, "catalog_version": 1, "count": 1 })
        .await?
    else {
        return Ok(None);
    };
    let (Ok(id), Ok(version)) = (d.get_str("catalog_id"), d.get_str("catalog_version")) else { return Ok(None) };
    let count = match d.get("count") {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        _ => 0,
    };
    Ok(Some(Pointer { catalog_id: id.to_string(), version: version.to_string(), count: count.max(0) as u64 }))
}

/// Writes a catalog and its entries under its id, then marks it `staged`. Idempotent: entries already
/// written (an earlier attempt) are kept.
pub async fn stage(db: &Mongo, c: &ValidCatalog, source: &Source) -> StoreResult<()> {
    let id = c.id();
    let now = Timestamp::now();
    db.kev_catalogs
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": {
                "state": "staging",
                "catalog_version": &c.catalog.catalog_version,
                "date_released": &c.catalog.date_released,
                "count": c.catalog.count as i64,
                "sha256": &c.sha256,
                "source": bson::serialize_to_bson(source)?,
                "staged_at": now,
            } },
        )
        .upsert(true)
        .await?;
    for chunk in c.catalog.vulnerabilities.chunks(WRITE_BATCH) {
        let docs: Vec<Document> = chunk
            .iter()
            .map(|e| {
                doc! {
                    "_id": format!("{id}/{}", e.cve_id),
                    "catalog_id": &id,
                    "cve_id": &e.cve_id,
                    "vendor_project": &e.vendor_project,
                    "product": &e.product,
                    "vulnerability_name": &e.vulnerability_name,
                    "date_added": &e.date_added,
                    "short_description": &e.short_description,
                    "required_action": &e.required_action,
                    "due_date": &e.due_date,
                    "known_ransomware_campaign_use": e.known_ransomware_campaign_use.clone(),
                    "notes": e.notes.clone(),
                    "cwes": &e.cwes,
                }
            })
            .collect();
        match db.kev_entries.insert_many(docs).ordered(false).await {
            Ok(_) => {}
            // Written by an earlier attempt: the id carries the content's digest, so it is the same entry.
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stored = db.kev_entries.count_documents(doc! { "catalog_id": &id }).await?;
    if stored != c.catalog.count {
        return Err(StoreError::Database(format!(
            "KEV catalog {id}: {stored} of its {} entries were stored",
            c.catalog.count
        )));
    }
    db.kev_catalogs.update_one(doc! { "_id": &id }, doc! { "$set": { "state": "staged" } }).await?;
    Ok(())
}

/// Makes a staged catalog current, if the current one is still `expected` (compare-and-set). `false`:
/// another import flipped first.
pub async fn flip(db: &Mongo, c: &ValidCatalog, source: &Source, expected: Option<&str>) -> StoreResult<bool> {
    let id = c.id();
    let now = Timestamp::now();
    let set = doc! {
        "catalog_id": &id,
        "catalog_version": &c.catalog.catalog_version,
        "date_released": &c.catalog.date_released,
        "count": c.catalog.count as i64,
        "sha256": &c.sha256,
        "source": bson::serialize_to_bson(source)?,
        "imported_at": now,
        "flipped_at": now,
        "enriched_at": Bson::Null,
        "enrichment": Bson::Null,
        "settled_at": Bson::Null,
        "settle": Bson::Null,
    };
    let filter = doc! { "_id": POINTER, "catalog_id": expected.map(Bson::from).unwrap_or(Bson::Null) };
    let flipped = match db.kev_state.update_one(filter, doc! { "$set": set }).upsert(true).await {
        // Upserted (first catalog) or matched the expected one.
        Ok(r) => r.matched_count == 1 || r.upserted_id.is_some(),
        // The pointer exists and names another catalog: the upsert collided with it.
        Err(e) if is_duplicate_key(&e) => false,
        Err(e) => return Err(e.into()),
    };
    if flipped {
        db.kev_catalogs.update_one(doc! { "_id": &id }, doc! { "$set": { "state": "current" } }).await?;
        if let Some(prev) = expected {
            db.kev_catalogs
                .update_one(doc! { "_id": prev }, doc! { "$set": { "state": "superseded", "superseded_at": now } })
                .await?;
        }
    }
    Ok(flipped)
}

/// Records a check of a source (and, for a fetched one, what the conditional request learnt).
pub async fn record_check(db: &Mongo, check: &CheckRecord, memo: Option<&FetchMemo>) -> StoreResult<()> {
    let mut set = doc! { "last_checked_at": check.at, "last_check": bson::serialize_to_bson(check)? };
    if let Some(m) = memo {
        set.insert("fetch", bson::serialize_to_bson(m)?);
    }
    db.kev_state.update_one(doc! { "_id": POINTER }, doc! { "$set": set }).upsert(true).await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    First,
    Settle,
}

/// Records an enrichment pass of `catalog_id`, if it is still current.
pub async fn record_pass(db: &Mongo, catalog_id: &str, pass: Pass, stats: &EnrichStats) -> StoreResult<()> {
    let (at, what) = match pass {
        Pass::First => ("enriched_at", "enrichment"),
        Pass::Settle => ("settled_at", "settle"),
    };
    let mut set = Document::new();
    set.insert(at, Timestamp::now());
    set.insert(what, bson::serialize_to_bson(stats)?);
    db.kev_state.update_one(doc! { "_id": POINTER, "catalog_id": catalog_id }, doc! { "$set": set }).await?;
    Ok(())
}

/// Catalogs that were current before `current` and are still stored: what stored findings may reflect.
pub async fn earlier_catalogs(db: &Mongo, current: &str) -> StoreResult<Vec<(String, String)>> {
    let docs: Vec<Document> = db
        .kev_catalogs
        .find(doc! { "_id": { "$ne": current }, "state": { "$in": ["current", "superseded"] } })
        .projection(doc! { "catalog_version": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .iter()
        .filter_map(|d| Some((d.get_str("_id").ok()?.to_string(), d.get_str("catalog_version").ok()?.to_string())))
        .collect())
}

/// Removes catalogs other than `current` that were superseded, or staged and abandoned. Returns how
/// many. Call only once `current` has settled.
///
/// `current` is what the caller read from the pointer, and an import may have flipped it since: so
/// only catalogs staged before `current` are removed as earlier ones; one staged later (the catalog
/// now in force) is kept, whatever its state says. An abandoned staging is removed after an hour.
pub async fn remove_old(db: &Mongo, current: &str) -> StoreResult<u64> {
    let abandoned = Timestamp::now().millis() - ABANDONED_AFTER_MS;
    let staged_at = |d: &Document| match d.get("staged_at") {
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Double(f)) => Some(*f as i64),
        _ => None,
    };
    let Some(current_staged_at) = db.kev_catalogs.find_one(doc! { "_id": current }).await?.as_ref().and_then(staged_at)
    else {
        return Ok(0);
    };
    let docs: Vec<Document> = db
        .kev_catalogs
        .find(doc! { "_id": { "$ne": current }, "$or": [
            { "state": { "$in": ["current", "superseded"] }, "staged_at": { "$lt": current_staged_at } },
            { "state": { "$in": ["staging", "staged"] }, "staged_at": { "$lt": abandoned } },
        ] })
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    let mut removed = 0;
    for d in docs {
        let Ok(id) = d.get_str("_id") else { continue };
        // Entries first: a catalog document without entries is still found (and removed) next time.
        db.kev_entries.delete_many(doc! { "catalog_id": id }).await?;
        db.kev_catalogs.delete_one(doc! { "_id": id }).await?;
        removed += 1;
    }
    Ok(removed)
}
