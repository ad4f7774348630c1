//! The in-memory index of the current catalog (CVE → what enrichment writes), and the cache a worker
//! keeps it in: the pointer document is read at most once per reload interval, and the entries only
//! when it names another catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bson::doc;
use futures::TryStreamExt;

use super::KevMark;
use super::catalog::{Catalog, KevEntry};
use super::store;
use crate::db::Mongo;
use crate::domain::finding::{NewFinding, VulnId};
use crate::error::{StoreError, StoreResult};

/// One catalog, indexed by CVE id.
#[derive(Debug, Clone, PartialEq)]
pub struct KevIndex {
    pub catalog_id: String,
    pub version: String,
    marks: HashMap<String, KevMark>,
}

impl KevIndex {
    pub fn from_catalog(catalog_id: &str, c: &Catalog) -> Self {
        let marks = c.vulnerabilities.iter().map(|e| (e.cve_id.clone(), KevMark::listed(e))).collect();
        Self { catalog_id: catalog_id.to_string(), version: c.catalog_version.clone(), marks }
    }

    /// Reads a stored catalog's entries.
    pub async fn load(db: &Mongo, catalog_id: &str, version: &str) -> StoreResult<Self> {
        let mut cursor = db
            .kev_entries
            .find(doc! { "catalog_id": catalog_id })
            .projection(doc! {
                "cve_id": 1, "vulnerability_name": 1, "date_added": 1, "due_date": 1,
                "known_ransomware_campaign_use": 1, "required_action": 1,
            })
            .batch_size(2000)
            .await?;
        let mut marks = HashMap::with_capacity(2048);
        while let Some(d) = cursor.try_next().await? {
            let text = |k: &str| d.get_str(k).ok().map(str::to_string);
            let cve = d.get_str("cve_id").map_err(|_| StoreError::Corrupt("a KEV entry has no cve_id".into()))?;
            marks.insert(
                cve.to_string(),
                KevMark {
                    known_exploited: true,
                    cve: Some(cve.to_string()),
                    vulnerability_name: text("vulnerability_name"),
                    date_added: text("date_added"),
                    due_date: text("due_date"),
                    known_ransomware_campaign_use: text("known_ransomware_campaign_use"),
                    required_action: text("required_action"),
                },
            );
        }
        Ok(Self { catalog_id: catalog_id.to_string(), version: version.to_string(), marks })
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    pub fn get(&self, cve: &str) -> Option<&KevMark> {
        self.marks.get(cve)
    }

    pub fn cves(&self) -> impl Iterator<Item = &str> {
        self.marks.keys().map(String::as_str)
    }

    /// The mark of something that names these CVEs: the first one listed, or "not listed".
    pub fn mark_for<'a>(&self, cves: impl IntoIterator<Item = &'a str>) -> KevMark {
        cves.into_iter().find_map(|c| self.marks.get(c)).cloned().unwrap_or_else(KevMark::not_listed)
    }

    /// The enrichment stage: every finding that names a CVE gets its mark; others are left alone. One
    /// hash lookup per CVE; a clone only for the rare listed ones.
    pub fn enrich(&self, batch: &mut [NewFinding]) {
        for f in batch {
            let mut named = false;
            let mut found = None;
            for v in &f.vulnerabilities {
                if let VulnId::Cve(id) = &v.id {
                    named = true;
                    if let Some(m) = self.marks.get(id.as_str()) {
                        found = Some(m);
                        break;
                    }
                }
            }
            if named {
                f.kev = Some(found.cloned().unwrap_or_else(KevMark::not_listed));
            }
        }
    }
}

impl KevMark {
    pub fn listed(e: &KevEntry) -> Self {
        KevMark {
            known_exploited: true,
            cve: Some(e.cve_id.clone()),
            vulnerability_name: Some(e.vulnerability_name.clone()),
            date_added: Some(e.date_added.clone()),
            due_date: Some(e.due_date.clone()),
            known_ransomware_campaign_use: e.known_ransomware_campaign_use.clone(),
            required_action: Some(e.required_action.clone()),
        }
    }

    pub fn not_listed() -> Self {
        KevMark::default()
    }
}

/// The current catalog as a worker holds it. `current()` is cheap: within the reload interval it only
/// clones an `Arc`; after it, one small read of the pointer document decides whether to load another
/// catalog. When the database is away the index it has is kept (and the check retried after the
/// interval), so enrichment never blocks ingestion.
pub struct KevCache {
    db: Mongo,
    reload_every: Duration,
    index: RwLock<Option<Arc<KevIndex>>>,
    checked_at: Mutex<Option<Instant>>,
    reload: tokio::sync::Mutex<()>,
}

impl KevCache {
    pub fn new(db: Mongo, reload_every: Duration) -> Self {
        Self {
            db,
            reload_every,
            index: RwLock::new(None),
            checked_at: Mutex::new(None),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    fn held(&self) -> Option<Arc<KevIndex>> {
        self.index.read().ok().and_then(|g| g.clone())
    }

    fn fresh(&self) -> bool {
        self.checked_at.lock().ok().and_then(|g| *g).is_some_and(|at| at.elapsed() < self.reload_every)
    }

    /// The index of the current catalog; `None` while no catalog was ever imported.
    pub async fn current(&self) -> Option<Arc<KevIndex>> {
        if self.fresh() {
            return self.held();
        }
        let _one_reload = self.reload.lock().await;
        if self.fresh() {
            return self.held();
        }
        if let Err(e) = self.reload_if_changed().await {
            tracing::warn!(error = %e, "could not check for a new KEV catalog; keeping the one held");
        }
        if let Ok(mut g) = self.checked_at.lock() {
            *g = Some(Instant::now());
        }
        self.held()
    }

    /// Checks now, whatever the interval (tests, and a worker that wants the newest at once).
    pub async fn refresh_now(&self) -> StoreResult<Option<Arc<KevIndex>>> {
        let _one_reload = self.reload.lock().await;
        self.reload_if_changed().await?;
        if let Ok(mut g) = self.checked_at.lock() {
            *g = Some(Instant::now());
        }
        Ok(self.held())
    }

    async fn reload_if_changed(&self) -> StoreResult<()> {
        let Some(pointer) = store::current_pointer(&self.db).await? else {
            return Ok(());
        };
        if self.held().is_some_and(|i| i.catalog_id == pointer.catalog_id) {
            return Ok(());
        }
        let index = KevIndex::load(&self.db, &pointer.catalog_id, &pointer.version).await?;
        if index.len() as u64 != pointer.count {
            // The pointer names a catalog whose entries are not all there (a hand-edited database):
            // keep the old index rather than enrich from half a catalog.
            return Err(StoreError::Corrupt(format!(
                "KEV catalog {} has {} of its {} entries",
                pointer.catalog_id,
                index.len(),
                pointer.count
            )));
        }
        tracing::info!(catalog = %index.catalog_id, entries = index.len(), "loaded the KEV catalog");
        if let Ok(mut g) = self.index.write() {
            *g = Some(Arc::new(index));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::Vulnerability;
    use crate::domain::severity::Severity;

    fn entry(cve: &str) -> KevEntry {
        KevEntry {
            cve_id: cve.into(),
            vendor_project: "v".into(),
            product: "p".into(),
            vulnerability_name: format!("{cve} name"),
            date_added: "2022-04-04".into(),
            short_description: "d".into(),
            required_action: "patch".into(),
            due_date: "2022-04-25".into(),
            known_ransomware_campaign_use: Some("Known".into()),
            notes: None,
            cwes: vec![],
        }
    }

    fn finding(ids: &[&str]) -> NewFinding {
        NewFinding {
            vulnerabilities: ids
                .iter()
                .map(|id| Vulnerability::new(VulnId::classify(id), "t", Severity::High))
                .collect(),
            ..NewFinding::default()
        }
    }

    #[test]
    fn enrichment_marks_cve_findings_and_leaves_others_alone() {
        let c = Catalog {
            title: None,
            catalog_version: "1".into(),
            date_released: "2025-01-01T00:00:00Z".into(),
            count: 2,
            vulnerabilities: vec![entry("CVE-2022-22965"), entry("CVE-2021-44228")],
        };
        let idx = KevIndex::from_catalog("1-abc", &c);
        let mut batch =
            vec![finding(&["CVE-2020-0001", "cve-2021-44228"]), finding(&["CVE-2020-0001"]), finding(&["CWE-79"])];
        idx.enrich(&mut batch);
        let listed = batch[0].kev.as_ref().expect("enriched");
        assert!(listed.known_exploited);
        assert_eq!(listed.cve.as_deref(), Some("CVE-2021-44228"));
        assert_eq!(listed.due_date.as_deref(), Some("2022-04-25"));
        assert_eq!(listed.known_ransomware_campaign_use.as_deref(), Some("Known"));
        assert_eq!(batch[1].kev, Some(KevMark::not_listed()));
        assert_eq!(batch[2].kev, None);
        assert_eq!(idx.mark_for(["CVE-1", "CVE-2022-22965"]).cve.as_deref(), Some("CVE-2022-22965"));
        assert!(!idx.mark_for(["CVE-1"]).known_exploited);
    }
}
