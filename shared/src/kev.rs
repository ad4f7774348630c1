//! CISA's catalog of Known Exploited Vulnerabilities (KEV): imported from a file or a URL (conditional
//! requests), validated against CISA's JSON Schema and rules of its own, kept in MongoDB
//! (`cspm_threat_intelligence`) behind a single "current" pointer, held by workers as an in-memory
//! index, and applied to findings and vulnerability occurrences that name a CVE — at ingest (the
//! worker's enrichment stage) and, when a new catalog replaces the old one, to what is already stored
//! (both ways: newly listed CVEs are flagged, delisted ones unflagged).
//!
//! A catalog that is malformed, partial or breaks the schema is refused whole, naming what is wrong,
//! and the catalog in force stays. Every step may run twice or die half-way: staging is idempotent, the
//! switch is one compare-and-set, and enrichment passes are recomputed from the stored catalogs until
//! the new one has settled (see `store`).
//!
//! The scheduler calls [`refresh_from_source`] on a timer; the API imports on an administrator's request.

pub mod catalog;
pub mod enrich;
pub mod fetch;
pub mod index;
pub mod schema;
pub mod store;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use catalog::{Catalog, CatalogError, KevEntry, ValidCatalog};
pub use index::{KevCache, KevIndex};
pub use store::{EnrichStats, KevState, Source};

use crate::config::{Env, KeySpec};
use crate::db::Mongo;
use crate::error::{StoreError, StoreResult};
use crate::time::Timestamp;
use fetch::{Conditional, Fetched};
use store::{CheckRecord, FetchMemo, Pass};

/// CISA's feed.
pub const DEFAULT_SOURCE_URL: &str =
    "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json";

pub const KEV_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_KEV_URL",
        DEFAULT_SOURCE_URL,
        "where the scheduler fetches the CISA KEV catalog (http or https, no credentials; off: no scheduled refresh)",
    ),
    KeySpec::optional(
        "CSPM_KEV_REFRESH_HOURS",
        "24",
        "how often the scheduler checks CSPM_KEV_URL for a new catalog, with a conditional request (0: never)",
    ),
    KeySpec::optional(
        "CSPM_KEV_RELOAD_SECS",
        "60",
        "how often a worker checks whether another KEV catalog became current (and loads it if so)",
    ),
    KeySpec::optional("CSPM_KEV_MAX_BYTES", "16777216", "largest KEV catalog accepted, uploaded or downloaded"),
    KeySpec::optional("CSPM_KEV_FETCH_TIMEOUT_SECS", "60", "time limit of one download of the KEV catalog"),
];

/// After a failed check of the source, the next one comes this soon (or at the refresh interval if
/// that is shorter).
const RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The KEV settings, read once from the environment (every binary reads the same keys).
#[derive(Debug, Clone)]
pub struct KevSettings {
    /// The scheduled source; `None`: no scheduled refresh.
    pub source_url: Option<String>,
    /// `None`: no scheduled refresh.
    pub refresh_every: Option<Duration>,
    pub reload_every: Duration,
    pub max_bytes: usize,
    pub fetch_timeout: Duration,
}

impl Default for KevSettings {
    fn default() -> Self {
        Self::load(&Env::from_map(Vec::<(String, String)>::new()))
    }
}

impl KevSettings {
    /// Reads [`KEV_KEYS`]; every problem is recorded in `env`, naming its key.
    pub fn load(env: &Env) -> Self {
        let raw = env.string("CSPM_KEV_URL", DEFAULT_SOURCE_URL);
        let source_url = if raw.eq_ignore_ascii_case("off") {
            None
        } else {
            if let Err(why) = check_source_url(&raw) {
                env.refuse("CSPM_KEV_URL", &why);
            }
            Some(raw)
        };
        let hours: u64 = env.bounded("CSPM_KEV_REFRESH_HOURS", 24, 0, 24 * 30);
        Self {
            source_url,
            refresh_every: (hours > 0).then(|| Duration::from_secs(hours * 3600)),
            reload_every: env.seconds("CSPM_KEV_RELOAD_SECS", 60, 1, 3600),
            max_bytes: env.bounded("CSPM_KEV_MAX_BYTES", 16 * 1024 * 1024, 1024, 256 * 1024 * 1024),
            fetch_timeout: env.seconds("CSPM_KEV_FETCH_TIMEOUT_SECS", 60, 1, 3600),
        }
    }

    /// How long after a switch every worker has loaded the new catalog (two reload intervals), so that
    /// a second enrichment pass catches what workers stored with the old one meanwhile.
    pub fn settle_after(&self) -> Duration {
        self.reload_every * 2 + Duration::from_secs(1)
    }
}

fn check_source_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("has the scheme `{}`; use https://", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    Ok(())
}

/// What enrichment writes on a finding or an occurrence that names a CVE (`kev`). A listed CVE carries
/// the catalog's fields; an unlisted one only `known_exploited: false`. A finding that names several
/// listed CVEs carries the first one's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KevMark {
    pub known_exploited: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cve: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerability_name: Option<String>,
    /// `YYYY-MM-DD`, as CISA writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_added: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    /// `Known` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_ransomware_campaign_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_action: Option<String>,
}

/// Why an import or a refresh did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KevError {
    #[error(transparent)]
    Invalid(#[from] CatalogError),
    #[error("the catalog URL is refused: {0}")]
    Url(String),
    #[error("the catalog could not be fetched: {0}")]
    Fetch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import or a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// No source is configured (or refresh is off).
    Disabled,
    /// The last check of the source is recent enough.
    NotDue,
    /// The source answered 304.
    NotModified,
    /// The catalog is the one in force.
    Unchanged { catalog_id: String },
    /// A new catalog is in force; its enrichment is pending ([`apply_pending`]).
    Imported { catalog_id: String, version: String, count: u64 },
}

/// Parses and validates catalog bytes on a blocking thread (1.5 MB of JSON and its schema).
pub async fn validate(bytes: Vec<u8>, max_bytes: usize) -> Result<ValidCatalog, CatalogError> {
    tokio::task::spawn_blocking(move || catalog::parse(&bytes, max_bytes))
        .await
        .unwrap_or_else(|e| Err(CatalogError::NotJson(format!("the validator crashed: {e}"))))
}

/// Imports catalog bytes (an upload, a file). A refused catalog is recorded as a check, and the
/// catalog in force stays.
pub async fn import_bytes(
    db: &Mongo,
    settings: &KevSettings,
    bytes: Vec<u8>,
    source: Source,
) -> Result<RefreshOutcome, KevError> {
    match validate(bytes, settings.max_bytes).await {
        Ok(valid) => import_catalog(db, valid, source, None).await,
        Err(e) => {
            record(db, "refused", Some(e.to_string()), &source, None).await?;
            Err(e.into())
        }
    }
}

/// Imports a catalog file.
pub async fn import_file(db: &Mongo, settings: &KevSettings, path: &Path) -> Result<RefreshOutcome, KevError> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| KevError::Fetch(format!("{}: {e}", path.display())))?;
    if meta.len() > settings.max_bytes as u64 {
        return Err(CatalogError::TooLarge { max: settings.max_bytes }.into());
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| KevError::Fetch(format!("{}: {e}", path.display())))?;
    import_bytes(db, settings, bytes, Source::file(path)).await
}

/// Imports a validated catalog: stages it, then makes it current. Does not enrich ([`apply_pending`]).
pub async fn import_catalog(
    db: &Mongo,
    valid: ValidCatalog,
    source: Source,
    memo: Option<FetchMemo>,
) -> Result<RefreshOutcome, KevError> {
    let id = valid.id();
    let current = store::state(db).await?;
    if current.catalog_id.as_deref() == Some(id.as_str()) {
        record(db, "unchanged", None, &source, memo.as_ref()).await?;
        return Ok(RefreshOutcome::Unchanged { catalog_id: id });
    }
    let new_count = valid.catalog.count;
    if current.count > 0 && (new_count as i64).saturating_mul(2) < current.count {
        let e = CatalogError::Shrunk { current: current.count as u64, new: new_count };
        record(db, "refused", Some(e.to_string()), &source, None).await?;
        return Err(e.into());
    }
    store::stage(db, &valid, &source).await?;
    let mut expected = current.catalog_id;
    for _ in 0..3 {
        if store::flip(db, &valid, &source, expected.as_deref()).await? {
            record(db, "imported", None, &source, memo.as_ref()).await?;
            tracing::info!(catalog = %id, count = new_count, source = %source.kind, "a new KEV catalog is in force");
            return Ok(RefreshOutcome::Imported {
                catalog_id: id,
                version: valid.catalog.catalog_version.clone(),
                count: new_count,
            });
        }
        expected = store::state(db).await?.catalog_id;
        if expected.as_deref() == Some(id.as_str()) {
            return Ok(RefreshOutcome::Unchanged { catalog_id: id });
        }
    }
    Err(StoreError::Database("other imports kept replacing the KEV catalog; try again".into()).into())
}

/// Fetches a catalog from `url` (conditionally, if the last fetch was of the same URL) and imports it.
/// `http` is the client to use: [`fetch::source_client`] for the configured source,
/// [`fetch::checked_client`] for a URL someone asked for.
pub async fn import_url(
    db: &Mongo,
    settings: &KevSettings,
    http: &reqwest::Client,
    url: &str,
) -> Result<RefreshOutcome, KevError> {
    let state = store::state(db).await?;
    let conditional = match &state.fetch {
        Some(m) if m.url == url => Conditional { etag: m.etag.clone(), last_modified: m.last_modified.clone() },
        _ => Conditional::default(),
    };
    let source = Source::url(url);
    let now = Timestamp::now();
    let every = settings.refresh_every.unwrap_or(Duration::from_secs(24 * 3600));
    let memo = |etag: Option<String>, last_modified: Option<String>, next: Duration| FetchMemo {
        url: url.to_string(),
        etag,
        last_modified,
        checked_at: now,
        next_check_at: Some(now.plus(next)),
    };
    let failed_memo = memo(conditional.etag.clone(), conditional.last_modified.clone(), every.min(RETRY_AFTER));
    match fetch::get(http, url, &conditional, settings.max_bytes).await {
        Err(e) => {
            let outcome = if matches!(e, KevError::Invalid(_)) { "refused" } else { "failed" };
            record(db, outcome, Some(e.to_string()), &source, Some(&failed_memo)).await?;
            Err(e)
        }
        Ok(Fetched::NotModified) => {
            let m = memo(conditional.etag, conditional.last_modified, every);
            record(db, "not_modified", None, &source, Some(&m)).await?;
            Ok(RefreshOutcome::NotModified)
        }
        Ok(Fetched::Body { bytes, etag, last_modified }) => match validate(bytes, settings.max_bytes).await {
            Ok(valid) => import_catalog(db, valid, source, Some(memo(etag, last_modified, every))).await,
            Err(e) => {
                // The validators of a refused file are not kept: the next check downloads it again.
                record(db, "refused", Some(e.to_string()), &source, Some(&failed_memo)).await?;
                Err(e.into())
            }
        },
    }
}

/// The scheduler's timer: checks the configured source when its refresh interval has passed since the
/// last check (so several schedulers, or frequent ticks, cost one request per interval), imports a new
/// catalog, and finishes pending enrichment. Call it every minute or so; a failed check is recorded in
/// the status and retried within 15 minutes.
pub async fn refresh_from_source(
    db: &Mongo,
    settings: &KevSettings,
    http: &reqwest::Client,
) -> Result<RefreshOutcome, KevError> {
    let (Some(url), Some(_)) = (&settings.source_url, settings.refresh_every) else {
        apply_pending(db, settings).await?;
        return Ok(RefreshOutcome::Disabled);
    };
    let state = store::state(db).await?;
    let due = match &state.fetch {
        Some(m) if m.url == *url => m.next_check_at.is_none_or(|next| Timestamp::now() >= next),
        _ => true,
    };
    let result = if due { import_url(db, settings, http, url).await } else { Ok(RefreshOutcome::NotDue) };
    let pending = apply_pending(db, settings).await;
    let outcome = result?;
    pending?;
    Ok(outcome)
}

/// Runs the enrichment pass the current catalog is due for, if any: the first one right after the
/// switch, the settling one once every worker has had time to load the catalog; then removes earlier
/// catalogs. Returns what the pass changed.
pub async fn apply_pending(db: &Mongo, settings: &KevSettings) -> StoreResult<Option<EnrichStats>> {
    let state = store::state(db).await?;
    let (Some(id), Some(version)) = (state.catalog_id, state.catalog_version) else { return Ok(None) };
    let pass = if state.enriched_at.is_none() {
        Pass::First
    } else if state.settled_at.is_none() {
        let flipped = state.flipped_at.unwrap_or_default();
        if Timestamp::now() < flipped.plus(settings.settle_after()) {
            return Ok(None);
        }
        Pass::Settle
    } else {
        store::remove_old(db, &id).await?;
        return Ok(None);
    };
    let current = KevIndex::load(db, &id, &version).await?;
    if current.len() as i64 != state.count {
        return Err(StoreError::Corrupt(format!(
            "KEV catalog {id} has {} of its {} entries",
            current.len(),
            state.count
        )));
    }
    let mut earlier = Vec::new();
    for (eid, ev) in store::earlier_catalogs(db, &id).await? {
        earlier.push(KevIndex::load(db, &eid, &ev).await?);
    }
    let stats = enrich::reenrich(db, &current, &earlier).await?;
    store::record_pass(db, &id, pass, &stats).await?;
    tracing::info!(
        catalog = %id,
        pass = ?pass,
        cves_changed = stats.cves_changed,
        findings_updated = stats.findings_updated,
        occurrences_updated = stats.occurrences_updated,
        duration_ms = stats.duration_ms,
        "KEV re-enrichment pass done"
    );
    if pass == Pass::Settle {
        store::remove_old(db, &id).await?;
    }
    Ok(Some(stats))
}

/// Both passes of a new catalog, from the process that imported it: the first at once, the settling
/// one after [`KevSettings::settle_after`]. If this process dies, the scheduler's refresh finishes.
pub async fn enrich_until_settled(db: Mongo, settings: KevSettings) {
    if let Err(e) = apply_pending(&db, &settings).await {
        tracing::warn!(error = %e, "KEV re-enrichment failed; the scheduler's next refresh retries it");
        return;
    }
    tokio::time::sleep(settings.settle_after()).await;
    if let Err(e) = apply_pending(&db, &settings).await {
        tracing::warn!(error = %e, "KEV re-enrichment failed; the scheduler's next refresh retries it");
    }
}

/// The status document (empty before the first import or check).
pub async fn status(db: &Mongo) -> StoreResult<KevState> {
    store::state(db).await
}

async fn record(
    db: &Mongo,
    outcome: &str,
    detail: Option<String>,
    source: &Source,
    memo: Option<&FetchMemo>,
) -> StoreResult<()> {
    let check = CheckRecord { at: Timestamp::now(), outcome: outcome.to_string(), detail, source: source.clone() };
    store::record_check(db, &check, memo).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_the_cisa_feed_and_refuse_bad_values() {
        let s = KevSettings::default();
        assert_eq!(s.source_url.as_deref(), Some(DEFAULT_SOURCE_URL));
        assert_eq!(s.refresh_every, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(s.max_bytes, 16 * 1024 * 1024);
        let env = Env::from_map([("CSPM_KEV_URL", "off"), ("CSPM_KEV_REFRESH_HOURS", "0")]);
        let off = KevSettings::load(&env);
        assert!(off.source_url.is_none() && off.refresh_every.is_none());
        assert!(env.finish(()).is_ok());
        let env = Env::from_map([
            ("CSPM_KEV_URL", "ftp://mirror/kev.json"),
            ("CSPM_KEV_RELOAD_SECS", "0"),
            ("CSPM_KEV_MAX_BYTES", "lots"),
        ]);
        KevSettings::load(&env);
        let text = env.finish(()).expect_err("refused").to_string();
        for key in ["CSPM_KEV_URL", "CSPM_KEV_RELOAD_SECS", "CSPM_KEV_MAX_BYTES"] {
            assert!(text.contains(key), "{key}: {text}");
        }
        let env = Env::from_map([("CSPM_KEV_URL", "https://user:pw@mirror.example/kev.json")]);
        KevSettings::load(&env);
        let text = env.finish(()).expect_err("refused").to_string();
        assert!(text.contains("credentials") && !text.contains("pw@"), "{text}");
    }

    #[test]
    fn marks_keep_only_what_they_know() {
        let unlisted = bson::serialize_to_document(&KevMark::not_listed()).expect("bson");
        assert_eq!(unlisted, bson::doc! { "known_exploited": false });
    }
}
