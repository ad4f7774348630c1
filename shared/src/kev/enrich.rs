//! Re-enrichment: when a catalog replaces another, the stored findings and occurrences of every team
//! that name a CVE whose entry changed (added, removed, or edited) get the new catalog's mark.
//!
//! Only the changed CVEs are visited, in chunks; each document's new mark is computed from the new
//! index and written only when it differs from the stored one, in batched `update` commands. Running a
//! pass twice (a crash, a second process) writes nothing the second time. Resolved findings and
//! occurrences keep the mark they had when they were resolved.

use std::collections::BTreeSet;
use std::time::Instant;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;

use super::KevMark;
use super::index::KevIndex;
use super::store::EnrichStats;
use crate::db::Mongo;
use crate::error::StoreResult;
use crate::store::subjobs::number;

/// CVEs per query.
const CVE_CHUNK: usize = 500;
/// Statements per `update` command.
const WRITE_BATCH: usize = 500;

/// The CVEs whose mark differs between `current` and any of `earlier` (every CVE of `current` when
/// there is no earlier catalog), sorted.
pub fn changed_cves(current: &KevIndex, earlier: &[KevIndex]) -> Vec<String> {
    if earlier.is_empty() {
        let mut all: Vec<String> = current.cves().map(str::to_string).collect();
        all.sort();
        return all;
    }
    let mut out = BTreeSet::new();
    for old in earlier {
        for cve in current.cves() {
            if old.get(cve) != current.get(cve) {
                out.insert(cve.to_string());
            }
        }
        for cve in old.cves() {
            if current.get(cve).is_none() {
                out.insert(cve.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// Applies `current` to what stored documents name the CVEs that changed since `earlier`.
pub async fn reenrich(db: &Mongo, current: &KevIndex, earlier: &[KevIndex]) -> StoreResult<EnrichStats> {
    let started = Instant::now();
    let cves = changed_cves(current, earlier);
    let mut stats = EnrichStats { cves_changed: cves.len() as i64, ..EnrichStats::default() };
    for chunk in cves.chunks(CVE_CHUNK) {
        stats.findings_updated += findings(db, current, chunk).await?;
        stats.occurrences_updated += occurrences(db, current, chunk).await?;
    }
    stats.duration_ms = started.elapsed().as_millis() as i64;
    Ok(stats)
}

fn stored_mark(d: &Document) -> Option<KevMark> {
    d.get("kev").filter(|b| !matches!(b, Bson::Null)).and_then(|b| bson::deserialize_from_bson(b.clone()).ok())
}

async fn findings(db: &Mongo, current: &KevIndex, chunk: &[String]) -> StoreResult<i64> {
    let mut cursor = db
        .findings
        .find(doc! { "cves": { "$in": chunk }, "status": { "$ne": "resolved" } })
        .projection(doc! { "cves": 1, "kev": 1 })
        .batch_size(1000)
        .await?;
    let mut writer = Writer::new(db.cloud_security_db(), db.findings.name());
    while let Some(d) = cursor.try_next().await? {
        let Ok(id) = d.get_str("_id") else { continue };
        let cves = d.get_array("cves").map(|a| a.iter().filter_map(Bson::as_str).collect::<Vec<_>>());
        let mark = current.mark_for(cves.unwrap_or_default());
        if stored_mark(&d).as_ref() == Some(&mark) {
            continue;
        }
        writer.push(id, doc! { "kev": bson::serialize_to_bson(&mark)? }).await?;
    }
    writer.finish().await
}

async fn occurrences(db: &Mongo, current: &KevIndex, chunk: &[String]) -> StoreResult<i64> {
    let mut cursor = db
        .occurrences
        .find(doc! { "vulnerability_id": { "$in": chunk }, "status": { "$ne": "resolved" } })
        .projection(doc! { "vulnerability_id": 1, "kev": 1, "cisa_kev": 1 })
        .batch_size(1000)
        .await?;
    let mut writer = Writer::new(db.vulnerabilities_db(), db.occurrences.name());
    while let Some(d) = cursor.try_next().await? {
        let (Ok(id), Ok(cve)) = (d.get_str("_id"), d.get_str("vulnerability_id")) else { continue };
        let mark = current.mark_for([cve]);
        if stored_mark(&d).as_ref() == Some(&mark) && crate::store::flag(&d, "cisa_kev") == mark.known_exploited {
            continue;
        }
        writer.push(id, doc! { "kev": bson::serialize_to_bson(&mark)?, "cisa_kev": mark.known_exploited }).await?;
    }
    writer.finish().await
}

/// Batches `$set`s by `_id` into `update` commands.
struct Writer<'a> {
    db: &'a mongodb::Database,
    collection: &'a str,
    updates: Vec<Bson>,
    modified: i64,
}

impl<'a> Writer<'a> {
    fn new(db: &'a mongodb::Database, collection: &'a str) -> Self {
        Self { db, collection, updates: Vec::with_capacity(WRITE_BATCH), modified: 0 }
    }

    async fn push(&mut self, id: &str, set: Document) -> StoreResult<()> {
        self.updates.push(Bson::Document(doc! { "q": { "_id": id }, "u": { "$set": set } }));
        if self.updates.len() >= WRITE_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> StoreResult<()> {
        if self.updates.is_empty() {
            return Ok(());
        }
        let updates = std::mem::take(&mut self.updates);
        let reply = crate::store::update_statements(self.db, self.collection, updates, false, "KEV mark(s)").await?;
        self.modified += number(&reply, "nModified");
        Ok(())
    }

    async fn finish(mut self) -> StoreResult<i64> {
        self.flush().await?;
        Ok(self.modified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kev::catalog::{Catalog, KevEntry};

    fn index(id: &str, entries: &[(&str, &str)]) -> KevIndex {
        let vulnerabilities = entries
            .iter()
            .map(|(cve, due)| KevEntry {
                cve_id: cve.to_string(),
                vendor_project: "v".into(),
                product: "p".into(),
                vulnerability_name: "n".into(),
                date_added: "2022-01-01".into(),
                short_description: "d".into(),
                required_action: "a".into(),
                due_date: due.to_string(),
                known_ransomware_campaign_use: None,
                notes: None,
                cwes: vec![],
            })
            .collect::<Vec<_>>();
        let c = Catalog {
            title: None,
            catalog_version: id.into(),
            date_released: "2025-01-01T00:00:00Z".into(),
            count: vulnerabilities.len() as u64,
            vulnerabilities,
        };
        KevIndex::from_catalog(id, &c)
    }

    #[test]
    fn the_change_set_holds_added_removed_and_edited_cves() {
        let old = index("a", &[("CVE-1", "2022-02-01"), ("CVE-2", "2022-02-01"), ("CVE-3", "2022-02-01")]);
        let new = index("b", &[("CVE-1", "2022-02-01"), ("CVE-2", "2022-03-01"), ("CVE-4", "2022-02-01")]);
        assert_eq!(changed_cves(&new, std::slice::from_ref(&old)), ["CVE-2", "CVE-3", "CVE-4"]);
        assert_eq!(changed_cves(&new, &[]), ["CVE-1", "CVE-2", "CVE-4"]);
        assert!(changed_cves(&new, std::slice::from_ref(&new)).is_empty());
    }
}
