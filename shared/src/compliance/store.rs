//! The compliance engine's documents in `cspm_compliance`: catalog versions behind a pointer, a team's
//! control states, thresholds.
//!
//! A catalog import writes a whole new version (its controls and check rows, then its record marked
//! `complete`), and only then flips the pointer: a reader sees the old version or the new one, never a
//! mixture, and a refused or interrupted import leaves the old one in force. Versions other than the
//! current and the previous one are removed after the flip.
//!
//! A team's control state is one document per control it has evidence for, an override on, or had
//! either before. A sync writes the derived part (`derived_state`, `reason`, `tally`, `evidence`) and
//! never the `override`; a person's override writes only the `override`. The two never overwrite each
//! other, and the effective state is decided on read.

use std::collections::{BTreeMap, HashMap};

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, CheckRequirement, Control};
use super::keywords::{self, Term};
use super::mapping::MapperControl;
use super::normalize::framework_key;
use super::state::{ControlState, EvidenceKind, Scored, Tally};
use crate::db::Mongo;
use crate::domain::finding::FindingStatus;
use crate::error::{StoreError, StoreResult};
use crate::ids::{CatalogId, SyncJobId, TeamId, UserId};
use crate::time::Timestamp;

const POINTER_ID: &str = "scf";
/// Documents written per round trip when a catalog is stored.
const WRITE_BATCH: usize = 500;
/// An import still `writing` after this long was interrupted; its documents may be removed.
const ABANDONED_IMPORT_MS: i64 = 3_600_000;

/// A framework of a catalog version: how it is named, and how much of it the crosswalks cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// The comparison key (`nistcsf20`): what `?framework=` is matched against.
    pub key: String,
    /// The name as the catalog first writes it (`nist_csf_2.0`).
    pub name: String,
    pub requirements: i64,
    pub controls: i64,
}

/// The record of a catalog version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogRecord {
    #[serde(rename = "_id")]
    pub id: CatalogId,
    pub status: String,
    #[serde(default)]
    pub release: Option<String>,
    pub controls: i64,
    pub domains: i64,
    pub crosswalk_pairs: i64,
    pub check_requirements: i64,
    pub frameworks: Vec<FrameworkInfo>,
    pub files: Vec<super::catalog::SourceFile>,
    #[serde(default)]
    pub warnings: Vec<String>,
    pub imported_by: UserId,
    pub imported_at: Timestamp,
}

/// A control document of a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub catalog_id: CatalogId,
    #[serde(flatten)]
    pub control: Control,
    /// Its distinctive terms, computed from the catalog's text at import.
    pub terms: Vec<Term>,
    /// Framework keys it is mapped to (for scores).
    pub framework_keys: Vec<String>,
    /// The framework requirements it covers, grouped by framework (a catalog has up to ~100 per control).
    pub crosswalk: Vec<CrosswalkGroup>,
}

/// A control's requirements of one framework. `relationships`, when the crosswalk has them, goes with
/// `requirements` position by position (empty string: none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrosswalkGroup {
    pub framework: String,
    pub requirements: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<String>,
}

impl CrosswalkGroup {
    /// (requirement, relationship) pairs.
    pub fn rows(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.requirements
            .iter()
            .enumerate()
            .map(|(i, r)| (r.as_str(), self.relationships.get(i).map(String::as_str).filter(|s| !s.is_empty())))
    }
}

fn group_rows(pairs: &[&super::catalog::CrosswalkPair]) -> Vec<CrosswalkGroup> {
    let mut groups: Vec<CrosswalkGroup> = Vec::new();
    for p in pairs {
        let idx = match groups.iter().position(|g| g.framework == p.framework) {
            Some(i) => i,
            None => {
                groups.push(CrosswalkGroup {
                    framework: p.framework.clone(),
                    requirements: Vec::new(),
                    relationships: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[idx].requirements.push(p.requirement.clone());
        groups[idx].relationships.push(p.relationship.clone().unwrap_or_default());
    }
    for g in &mut groups {
        if g.relationships.iter().all(String::is_empty) {
            g.relationships.clear();
        }
    }
    groups
}

/// Stores a validated catalog as a new version and makes it the current one. Returns its record and the
/// version it replaced.
pub async fn store_catalog(
    db: &Mongo,
    catalog: &Catalog,
    by: &UserId,
) -> StoreResult<(CatalogRecord, Option<CatalogId>)> {
    let c = &db.compliance;
    let id = CatalogId::new();
    let now = Timestamp::now();
    let frameworks: Vec<FrameworkInfo> = catalog
        .framework_summary()
        .into_iter()
        .map(|(name, r, n)| FrameworkInfo {
            key: framework_key(&name),
            name,
            requirements: r as i64,
            controls: n as i64,
        })
        .collect();
    let record = CatalogRecord {
        id: id.clone(),
        status: "writing".into(),
        release: catalog.release.clone(),
        controls: catalog.controls.len() as i64,
        domains: catalog.domains().len() as i64,
        crosswalk_pairs: catalog.crosswalk.len() as i64,
        check_requirements: catalog.checks.len() as i64,
        frameworks,
        files: catalog.files.clone(),
        warnings: catalog.warnings.clone(),
        imported_by: by.clone(),
        imported_at: now,
    };
    c.catalogs.insert_one(bson::serialize_to_document(&record)?).await?;

    let texts: Vec<(String, String)> = catalog
        .controls
        .iter()
        .map(|x| {
            let body = format!("{} {}", x.description, x.question.as_deref().unwrap_or(""));
            (x.title.clone().unwrap_or_default(), body)
        })
        .collect();
    let terms = keywords::control_terms(&texts);
    let mut crosswalk: HashMap<&str, Vec<&super::catalog::CrosswalkPair>> = HashMap::new();
    for p in &catalog.crosswalk {
        crosswalk.entry(p.scf_id.as_str()).or_default().push(p);
    }
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    for (control, terms) in catalog.controls.iter().zip(terms) {
        let rows = group_rows(&crosswalk.remove(control.scf_id.as_str()).unwrap_or_default());
        let mut keys: Vec<String> = rows.iter().map(|r| framework_key(&r.framework)).collect();
        keys.sort();
        keys.dedup();
        let d = ControlDoc {
            id: format!("{id}:{}", control.scf_id),
            catalog_id: id.clone(),
            control: control.clone(),
            terms,
            framework_keys: keys,
            crosswalk: rows,
        };
        batch.push(bson::serialize_to_document(&d)?);
        if batch.len() >= WRITE_BATCH {
            c.controls.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        c.controls.insert_many(batch).await?;
    }
    let mut rows = Vec::new();
    for (i, r) in catalog.checks.iter().enumerate() {
        let mut d = bson::serialize_to_document(r)?;
        d.insert("_id", format!("{id}:{i}"));
        d.insert("catalog_id", &id);
        rows.push(d);
        if rows.len() >= WRITE_BATCH {
            c.check_mappings.insert_many(std::mem::take(&mut rows)).await?;
        }
    }
    if !rows.is_empty() {
        c.check_mappings.insert_many(rows).await?;
    }
    c.catalogs.update_one(doc! { "_id": &id }, doc! { "$set": { "status": "complete" } }).await?;

    // The flip: one write. Whoever flips last wins; both versions are complete.
    let previous = current_catalog_id(db).await?;
    c.catalog_pointer
        .update_one(
            doc! { "_id": POINTER_ID },
            doc! { "$set": {
                "catalog_id": &id,
                "previous_catalog_id": previous.as_ref().map(Bson::from).unwrap_or(Bson::Null),
                "flipped_at": now,
            } },
        )
        .upsert(true)
        .await?;
    remove_old_versions(db, &id, previous.as_ref()).await?;
    let mut record = record;
    record.status = "complete".into();
    Ok((record, previous))
}

/// Removes the documents of versions that are neither `keep` nor `previous` (and not an import still
/// being written by someone else).
async fn remove_old_versions(db: &Mongo, keep: &CatalogId, previous: Option<&CatalogId>) -> StoreResult<()> {
    let c = &db.compliance;
    let mut kept: Vec<Bson> = vec![keep.into()];
    if let Some(p) = previous {
        kept.push(p.into());
    }
    let stale_writing = Timestamp::now().millis() - ABANDONED_IMPORT_MS;
    let old: Vec<Document> = c
        .catalogs
        .find(doc! {
            "_id": { "$nin": &kept },
            "$or": [ { "status": "complete" }, { "imported_at": { "$lt": stale_writing } } ],
        })
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    for d in old {
        let Ok(old_id) = d.get_str("_id") else { continue };
        c.controls.delete_many(doc! { "catalog_id": old_id }).await?;
        c.check_mappings.delete_many(doc! { "catalog_id": old_id }).await?;
        c.catalogs.delete_one(doc! { "_id": old_id }).await?;
    }
    Ok(())
}

pub async fn current_catalog_id(db: &Mongo) -> StoreResult<Option<CatalogId>> {
    let Some(p) = db.compliance.catalog_pointer.find_one(doc! { "_id": POINTER_ID }).await? else {
        return Ok(None);
    };
    match p.get_str("catalog_id") {
        Ok(s) => Ok(Some(s.parse().map_err(|e| StoreError::Corrupt(format!("catalog pointer: {e}")))?)),
        Err(_) => Ok(None),
    }
}

/// The record of the current catalog version.
pub async fn current_catalog(db: &Mongo) -> StoreResult<Option<CatalogRecord>> {
    let Some(id) = current_catalog_id(db).await? else { return Ok(None) };
    match db.compliance.catalogs.find_one(doc! { "_id": &id }).await? {
        Some(d) => Ok(Some(bson::deserialize_from_document(d)?)),
        None => Err(StoreError::Corrupt(format!("the catalog pointer names {id}, which is not stored"))),
    }
}

/// One control of the current version.
pub async fn control(db: &Mongo, catalog: &CatalogId, scf_id: &str) -> StoreResult<Option<ControlDoc>> {
    match db.compliance.controls.find_one(doc! { "_id": format!("{catalog}:{scf_id}") }).await? {
        Some(d) => Ok(Some(bson::deserialize_from_document(d)?)),
        None => Ok(None),
    }
}

/// The controls of a version as the mapper needs them (in id order), and its check rows.
pub async fn mapper_input(db: &Mongo, catalog: &CatalogId) -> StoreResult<(Vec<MapperControl>, Vec<CheckRequirement>)> {
    let mut cursor = db
        .compliance
        .controls
        .find(doc! { "catalog_id": catalog })
        .projection(doc! { "scf_id": 1, "domain": 1, "terms": 1, "crosswalk": 1 })
        .batch_size(500)
        .await?;
    #[derive(Deserialize)]
    struct Row {
        scf_id: String,
        domain: String,
        #[serde(default)]
        terms: Vec<Term>,
        #[serde(default)]
        crosswalk: Vec<CrosswalkGroup>,
    }
    let mut controls = Vec::new();
    while let Some(d) = cursor.try_next().await? {
        let r: Row = bson::deserialize_from_document(d)?;
        controls.push(MapperControl {
            scf_id: r.scf_id,
            domain: r.domain,
            terms: r.terms,
            crosswalk: r
                .crosswalk
                .iter()
                .flat_map(|g| {
                    g.rows().map(|(req, rel)| (g.framework.clone(), req.to_string(), rel.map(str::to_string)))
                })
                .collect(),
        });
    }
    controls.sort_by(|a, b| super::normalize::scf_order(&a.scf_id, &b.scf_id));
    let checks: Vec<CheckRequirement> = db
        .compliance
        .check_mappings
        .find(doc! { "catalog_id": catalog })
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .map(bson::deserialize_from_document)
        .collect::<Result<_, _>>()?;
    Ok((controls, checks))
}

/// Per control of a version: its framework keys (for scores).
pub async fn control_frameworks(db: &Mongo, catalog: &CatalogId) -> StoreResult<Vec<(String, Vec<String>)>> {
    let mut cursor = db
        .compliance
        .controls
        .find(doc! { "catalog_id": catalog })
        .projection(doc! { "scf_id": 1, "framework_keys": 1 })
        .batch_size(1000)
        .await?;
    let mut out = Vec::new();
    while let Some(d) = cursor.try_next().await? {
        let id = d.get_str("scf_id").unwrap_or_default().to_string();
        let keys = d
            .get_array("framework_keys")
            .map(|a| a.iter().filter_map(|b| b.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        out.push((id, keys));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// Control state

/// One piece of evidence kept on a control (the first ones; the tally counts them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    pub finding_id: String,
    pub tool: String,
    pub rule_id: String,
    pub title: String,
    /// The finding's lifecycle state when the sync read it.
    pub status: FindingStatus,
    /// What the finding says about the control.
    pub kind: EvidenceKind,
    /// How the finding was mapped to the control.
    pub path: String,
    pub explanation: String,
}

/// A person's decision on a control, which syncs never change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub state: ControlState,
    pub justification: String,
    pub by: UserId,
    pub at: Timestamp,
}

/// A team's state of one control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlStateDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub team_id: TeamId,
    pub scf_id: String,
    #[serde(default = "not_assessed")]
    pub derived_state: ControlState,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub tally: Tally,
    #[serde(default)]
    pub evidence_count: i64,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// Findings per path that reached this control.
    #[serde(default)]
    pub paths: BTreeMap<String, i64>,
    #[serde(default, rename = "override")]
    pub manual: Option<Override>,
    #[serde(default)]
    pub sync_job_id: Option<SyncJobId>,
    #[serde(default)]
    pub synced_at: Option<Timestamp>,
}

fn not_assessed() -> ControlState {
    ControlState::NotAssessed
}

impl ControlStateDoc {
    /// The state in force: the override's, else the derived one.
    pub fn state(&self) -> ControlState {
        self.manual.as_ref().map_or(self.derived_state, |o| o.state)
    }

    pub fn scored(&self) -> Scored {
        Scored { state: self.state(), has_evidence: self.evidence_count > 0 }
    }
}

pub fn state_id(team: &TeamId, scf_id: &str) -> String {
    format!("{team}:{scf_id}")
}

/// The derived part of a control's state, as a sync computed it.
#[derive(Debug, Clone)]
pub struct Derived {
    pub scf_id: String,
    pub state: ControlState,
    pub reason: String,
    pub tally: Tally,
    pub evidence: Vec<Evidence>,
    pub paths: BTreeMap<String, i64>,
}

/// Writes the derived states of a sync (one `update` command per batch of controls), then resets to
/// "not assessed, no evidence" every other control of the team that an earlier sync left evidence on.
pub async fn write_derived(db: &Mongo, team: &TeamId, job: &SyncJobId, derived: &[Derived]) -> StoreResult<()> {
    let now = Timestamp::now();
    let coll = &db.compliance.control_state;
    for chunk in derived.chunks(WRITE_BATCH) {
        let mut updates = Vec::with_capacity(chunk.len());
        for d in chunk {
            updates.push(Bson::Document(doc! {
                "q": { "_id": state_id(team, &d.scf_id) },
                "u": { "$set": {
                    "team_id": team,
                    "scf_id": &d.scf_id,
                    "derived_state": d.state.as_str(),
                    "reason": &d.reason,
                    "tally": bson::serialize_to_bson(&d.tally)?,
                    "evidence_count": d.tally.total(),
                    "evidence": bson::serialize_to_bson(&d.evidence)?,
                    "paths": bson::serialize_to_bson(&d.paths)?,
                    "sync_job_id": job,
                    "synced_at": now,
                } },
                "upsert": true,
            }));
        }
        crate::store::update_statements(db.compliance.database(), coll.name(), updates, false, "control state(s)")
            .await?;
    }
    let (state, reason) = Tally::default().derive();
    coll.update_many(
        doc! { "team_id": team, "sync_job_id": { "$ne": job } },
        doc! { "$set": {
            "derived_state": state.as_str(),
            "reason": reason,
            "tally": bson::serialize_to_bson(&Tally::default())?,
            "evidence_count": 0_i64,
            "evidence": [],
            "paths": {},
            "sync_job_id": job,
            "synced_at": now,
        } },
    )
    .await?;
    Ok(())
}

/// Every stored control state of the team.
pub async fn team_states(db: &Mongo, team: &TeamId) -> StoreResult<HashMap<String, ControlStateDoc>> {
    let mut cursor = db
        .compliance
        .control_state
        .find(doc! { "team_id": team })
        .projection(doc! { "evidence": 0 })
        .batch_size(1000)
        .await?;
    let mut out = HashMap::new();
    while let Some(d) = cursor.try_next().await? {
        let s: ControlStateDoc = bson::deserialize_from_document(d)?;
        out.insert(s.scf_id.clone(), s);
    }
    Ok(out)
}

pub async fn team_state(db: &Mongo, team: &TeamId, scf_id: &str) -> StoreResult<Option<ControlStateDoc>> {
    match db.compliance.control_state.find_one(doc! { "_id": state_id(team, scf_id), "team_id": team }).await? {
        Some(d) => Ok(Some(bson::deserialize_from_document(d)?)),
        None => Ok(None),
    }
}

/// Sets a person's override (the derived part is left to the syncs).
pub async fn set_override(db: &Mongo, team: &TeamId, scf_id: &str, o: &Override) -> StoreResult<()> {
    db.compliance
        .control_state
        .update_one(
            doc! { "_id": state_id(team, scf_id) },
            doc! {
                "$set": { "team_id": team, "scf_id": scf_id, "override": bson::serialize_to_bson(o)? },
                "$setOnInsert": {
                    "derived_state": ControlState::NotAssessed.as_str(),
                    "reason": "no sync has assessed this control yet",
                    "evidence_count": 0_i64,
                },
            },
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// Removes a person's override; `false` when there was none.
pub async fn clear_override(db: &Mongo, team: &TeamId, scf_id: &str) -> StoreResult<bool> {
    let r = db
        .compliance
        .control_state
        .update_one(
            doc! { "_id": state_id(team, scf_id), "team_id": team, "override": { "$ne": Bson::Null } },
            doc! { "$set": { "override": Bson::Null } },
        )
        .await?;
    Ok(r.modified_count > 0)
}

// ---------------------------------------------------------------------------------------------------
// Thresholds

/// The team's thresholds by framework key.
pub async fn thresholds(db: &Mongo, team: &TeamId) -> StoreResult<HashMap<String, f64>> {
    let docs: Vec<Document> = db.compliance.thresholds.find(doc! { "team_id": team }).await?.try_collect().await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| {
            let key = d.get_str("framework_key").ok()?.to_string();
            let t = match d.get("threshold")? {
                Bson::Double(f) => *f,
                Bson::Int32(n) => f64::from(*n),
                Bson::Int64(n) => *n as f64,
                _ => return None,
            };
            Some((key, t))
        })
        .collect())
}

/// The key of a team's own default threshold (for frameworks it set none for).
pub const TEAM_DEFAULT_THRESHOLD: &str = "*";

/// Sets the team's threshold of a framework, or (`None`) its default for every framework.
pub async fn set_threshold(
    db: &Mongo,
    team: &TeamId,
    framework: Option<&str>,
    threshold: f64,
    by: &UserId,
) -> StoreResult<()> {
    let key = framework.map_or_else(|| TEAM_DEFAULT_THRESHOLD.to_string(), framework_key);
    db.compliance
        .thresholds
        .update_one(
            doc! { "_id": format!("{team}:{key}") },
            doc! { "$set": {
                "team_id": team, "framework_key": &key, "framework": framework.unwrap_or(TEAM_DEFAULT_THRESHOLD),
                "threshold": threshold, "by": by, "at": Timestamp::now(),
            } },
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// A framework's score for the team.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FrameworkRow {
    pub framework: String,
    pub key: String,
    #[serde(flatten)]
    pub score: super::state::FrameworkScore,
    pub threshold: f64,
    /// `None` while nothing of the framework is assessed.
    pub meets_threshold: Option<bool>,
}

/// Scores per framework of the current catalog (all of them, or those matching `only`).
pub async fn scores(
    db: &Mongo,
    team: &TeamId,
    catalog: &CatalogRecord,
    only: Option<&str>,
    default_threshold: f64,
) -> StoreResult<Vec<FrameworkRow>> {
    let wanted = only.map(framework_key);
    let frameworks: Vec<&FrameworkInfo> =
        catalog.frameworks.iter().filter(|f| wanted.as_ref().is_none_or(|w| *w == f.key)).collect();
    if frameworks.is_empty() {
        return Ok(Vec::new());
    }
    let states = team_states(db, team).await?;
    let per_control = control_frameworks(db, &catalog.id).await?;
    let mut members: HashMap<&str, Vec<Scored>> = frameworks.iter().map(|f| (f.key.as_str(), Vec::new())).collect();
    let default = Scored { state: ControlState::NotAssessed, has_evidence: false };
    for (scf_id, keys) in &per_control {
        let scored = states.get(scf_id).map_or(default, ControlStateDoc::scored);
        for k in keys {
            if let Some(list) = members.get_mut(k.as_str()) {
                list.push(scored);
            }
        }
    }
    let thresholds = thresholds(db, team).await?;
    let mut rows: Vec<FrameworkRow> = frameworks
        .into_iter()
        .map(|f| {
            let score = super::state::score(members.get(f.key.as_str()).map(Vec::as_slice).unwrap_or(&[]));
            let threshold = thresholds
                .get(&f.key)
                .or_else(|| thresholds.get(TEAM_DEFAULT_THRESHOLD))
                .copied()
                .unwrap_or(default_threshold);
            let meets_threshold = (score.with_evidence > 0 || score.implemented + score.partial > 0)
                .then(|| score.score.is_some_and(|s| s >= threshold));
            FrameworkRow { framework: f.name.clone(), key: f.key.clone(), score, threshold, meets_threshold }
        })
        .collect();
    rows.sort_by(|a, b| a.framework.cmp(&b.framework));
    Ok(rows)
}
