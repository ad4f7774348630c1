//! Threat intelligence: the CISA KEV catalog's status (`GET /api/threat-intel/kev`, any signed-in role)
//! and its import (`POST /api/threat-intel/kev/import`, administrators only: a catalog changes every
//! team's findings).
//!
//! The import body is either the catalog itself (the JSON CISA publishes) or `{ "url": "…" }`, which the
//! API fetches — after the SSRF guard of scan targets (`CSPM_ALLOW_*` / `ALLOW_PRIVATE_SCAN_TARGETS`),
//! pinned to the addresses that passed, without redirects. The body may be as large as
//! `CSPM_KEV_MAX_BYTES` (the general request limit is far smaller than the catalog).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use cspm_shared::kev::store::{CheckRecord, EnrichStats};
use cspm_shared::kev::{self, CatalogError, KevError, KevSettings, KevState, RefreshOutcome, Source};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, rfc3339, rfc3339_opt};
use crate::state::AppState;

pub async fn kev_status(State(s): State<AppState>, _caller: Caller) -> ApiResult<Json<KevStatus>> {
    let state = kev::status(&s.mongo).await?;
    Ok(Json(status_view(&state, &s.config.kev)))
}

pub async fn kev_import(
    State(s): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<KevImported>> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json_type {
        return Err(ApiError::UnsupportedMediaType(
            "expected the catalog, or {\"url\": …}, as JSON with `Content-Type: application/json`".into(),
        ));
    }
    let settings = &s.config.kev;
    let bytes = axum::body::to_bytes(body, settings.max_bytes).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!("the catalog is larger than the limit of {} bytes", settings.max_bytes))
    })?;
    let outcome = match url_request(&bytes)? {
        Some(url) => {
            let http = kev::fetch::checked_client(&url, &s.config.target_policy, settings.fetch_timeout)
                .await
                .map_err(import_error)?;
            kev::import_url(&s.mongo, settings, &http, &url).await
        }
        None => kev::import_bytes(&s.mongo, settings, bytes.to_vec(), Source::upload()).await,
    }
    .map_err(import_error)?;
    if matches!(outcome, RefreshOutcome::Imported { .. } | RefreshOutcome::Unchanged { .. }) {
        // Re-enrichment of stored findings runs after the answer; an unchanged catalog finishes a pass a
        // crash left pending. The status shows its progress.
        tokio::spawn(kev::enrich_until_settled(s.mongo.clone(), settings.clone()));
    }
    let state = kev::status(&s.mongo).await?;
    let word = match &outcome {
        RefreshOutcome::Imported { .. } => "imported",
        RefreshOutcome::Unchanged { .. } => "unchanged",
        RefreshOutcome::NotModified => "not_modified",
        RefreshOutcome::NotDue | RefreshOutcome::Disabled => "unchanged",
    };
    Ok(Json(KevImported { outcome: word, status: status_view(&state, settings) }))
}

/// `Some(url)` when the body is `{ "url": … }`; `None` when it should be a catalog (including bodies
/// that do not parse: the validator says what is wrong with them).
fn url_request(bytes: &[u8]) -> ApiResult<Option<String>> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else { return Ok(None) };
    let Some(url) = map.get("url") else { return Ok(None) };
    if map.len() != 1 {
        return Err(ApiError::invalid("url", "a URL import takes `url` alone (or send the catalog itself)"));
    }
    match url.as_str() {
        Some(u) => Ok(Some(u.to_string())),
        None => Err(ApiError::invalid("url", "must be an http or https URL")),
    }
}

fn import_error(e: KevError) -> ApiError {
    match e {
        KevError::Invalid(CatalogError::NotJson(m)) => {
            ApiError::BadRequest(format!("the catalog is not valid JSON (truncated or malformed): {m}"))
        }
        KevError::Invalid(CatalogError::TooLarge { max }) => {
            ApiError::PayloadTooLarge(format!("the catalog is larger than the limit of {max} bytes"))
        }
        KevError::Invalid(other) => {
            ApiError::Unprocessable { detail: format!("{other}; the current catalog stays"), errors: vec![] }
        }
        KevError::Url(m) => ApiError::invalid("url", m),
        KevError::Fetch(m) => ApiError::Unprocessable {
            detail: format!("the catalog could not be fetched: {m}; the current catalog stays"),
            errors: vec![],
        },
        KevError::Store(e) => e.into(),
    }
}

/// A URL as the status shows it: without its query (which may carry a token).
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.query().is_some() => {
            u.set_query(None);
            format!("{u}?…")
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unreadable URL)".into(),
    }
}

/// An import's outcome (`imported`, `unchanged`, `not_modified`) and the catalog's status after it.
#[derive(Serialize, JsonSchema)]
pub struct KevImported {
    outcome: &'static str,
    status: KevStatus,
}

/// The KEV catalog in force, its enrichment of findings, and its refresh.
#[derive(Serialize, JsonSchema)]
pub struct KevStatus {
    catalog_id: Option<String>,
    version: Option<String>,
    date_released: Option<String>,
    count: i64,
    sha256: Option<String>,
    source: Option<SourceView>,
    imported_at: Option<Time>,
    last_refresh_at: Option<Time>,
    last_check: Option<CheckView>,
    enrichment: Enrichment,
    refresh: Refresh,
}

/// Where a catalog came from (a URL's query is not shown).
#[derive(Serialize, JsonSchema)]
pub struct SourceView {
    kind: String,
    url: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub struct CheckView {
    at: Time,
    outcome: String,
    detail: Option<String>,
    source: SourceView,
}

#[derive(Serialize, JsonSchema)]
pub struct Enrichment {
    /// `none`, `pending`, `applied` or `settled`.
    state: &'static str,
    enriched_at: Option<Time>,
    settled_at: Option<Time>,
    first_pass: Option<PassStats>,
    settle_pass: Option<PassStats>,
}

#[derive(Serialize, JsonSchema)]
pub struct PassStats {
    cves_changed: i64,
    findings_updated: i64,
    occurrences_updated: i64,
    duration_ms: i64,
}

#[derive(Serialize, JsonSchema)]
pub struct Refresh {
    url: Option<String>,
    every_hours: Option<u64>,
    next_check_at: Option<Time>,
}

fn source_view(s: &Source) -> SourceView {
    SourceView { kind: s.kind.clone(), url: s.url.as_deref().map(shown_url) }
}

fn stats_view(s: &Option<EnrichStats>) -> Option<PassStats> {
    s.as_ref().map(|s| PassStats {
        cves_changed: s.cves_changed,
        findings_updated: s.findings_updated,
        occurrences_updated: s.occurrences_updated,
        duration_ms: s.duration_ms,
    })
}

fn check_view(c: &CheckRecord) -> CheckView {
    CheckView {
        at: rfc3339(c.at),
        outcome: c.outcome.clone(),
        detail: c.detail.clone(),
        source: source_view(&c.source),
    }
}

fn status_view(st: &KevState, settings: &KevSettings) -> KevStatus {
    let enrichment = match (&st.catalog_id, st.enriched_at, st.settled_at) {
        (None, _, _) => "none",
        (Some(_), None, _) => "pending",
        (Some(_), Some(_), None) => "applied",
        (Some(_), Some(_), Some(_)) => "settled",
    };
    KevStatus {
        catalog_id: st.catalog_id.clone(),
        version: st.catalog_version.clone(),
        date_released: st.date_released.clone(),
        count: st.count,
        sha256: st.sha256.clone(),
        source: st.source.as_ref().map(source_view),
        imported_at: rfc3339_opt(st.imported_at),
        last_refresh_at: rfc3339_opt(st.last_checked_at),
        last_check: st.last_check.as_ref().map(check_view),
        enrichment: Enrichment {
            state: enrichment,
            enriched_at: rfc3339_opt(st.enriched_at),
            settled_at: rfc3339_opt(st.settled_at),
            first_pass: stats_view(&st.enrichment),
            settle_pass: stats_view(&st.settle),
        },
        refresh: Refresh {
            url: settings.source_url.as_deref().map(shown_url),
            every_hours: settings.refresh_every.map(|d| d.as_secs() / 3600),
            next_check_at: rfc3339_opt(st.fetch.as_ref().and_then(|f| f.next_check_at)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_bodies_are_told_from_catalogs() {
        assert_eq!(
            url_request(br#"{"url":"https://x.example/kev.json"}"#).ok(),
            Some(Some("https://x.example/kev.json".into()))
        );
        assert_eq!(url_request(br#"{"catalogVersion":"1","vulnerabilities":[]}"#).ok(), Some(None));
        assert_eq!(url_request(b"{\"catalogVersion\":").ok(), Some(None));
        assert!(url_request(br#"{"url":"https://x.example","count":1}"#).is_err());
        assert!(url_request(br#"{"url":7}"#).is_err());
    }

    #[test]
    fn shown_urls_drop_their_query() {
        assert_eq!(shown_url("https://m.example/kev.json?token=s3cret"), "https://m.example/kev.json?…");
        assert_eq!(shown_url(kev::DEFAULT_SOURCE_URL), kev::DEFAULT_SOURCE_URL);
    }
}
