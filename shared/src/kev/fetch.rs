//! Downloading a catalog: a conditional GET (`If-None-Match` / `If-Modified-Since` from the last answer
//! of the same URL; 304 means unchanged), with the size bounded while it streams in.
//!
//! The configured source (`CSPM_KEV_URL`) is the operator's and is fetched as configured. A URL given
//! to the API is a request to reach somewhere from inside the fleet, so it goes through the same SSRF
//! guard as a scan target: its host is resolved once, every address must pass the target policy, the
//! client connects to those addresses only (a second lookup cannot answer differently), proxies from
//! the environment are not used, and redirects are not followed.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use super::KevError;
use super::catalog::CatalogError;
use crate::domain::native::{TargetPolicy, WebTarget};

/// Redirects followed for the configured source.
const SOURCE_REDIRECTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Validators of an earlier answer from the same URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditional {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: what was fetched last time is still current.
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// The client for the configured source.
pub fn source_client(timeout: Duration) -> Result<reqwest::Client, KevError> {
    crate::artifacts::install_tls_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(SOURCE_REDIRECTS))
        .build()
        .map_err(|e| KevError::Fetch(format!("cannot build the HTTP client: {}", e.without_url())))
}

/// Checks a URL given to the API and returns a client pinned to the addresses that passed.
pub async fn checked_client(url: &str, policy: &TargetPolicy, timeout: Duration) -> Result<reqwest::Client, KevError> {
    let target = WebTarget::parse(url).map_err(KevError::Url)?;
    let parsed = url::Url::parse(&target.url).map_err(|e| KevError::Url(format!("`{url}` is not a URL: {e}")))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = policy
        .resolve(&target.host)
        .await
        .map_err(KevError::Url)?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    crate::artifacts::install_tls_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(url::Host::Domain(name)) = parsed.host() {
        builder = builder.resolve_to_addrs(name, &addrs);
    }
    builder.build().map_err(|e| KevError::Fetch(format!("cannot build the HTTP client: {}", e.without_url())))
}

/// GETs `url`, conditionally. Error messages never quote the URL (it may carry a token in its query).
pub async fn get(
    http: &reqwest::Client,
    url: &str,
    conditional: &Conditional,
    max_bytes: usize,
) -> Result<Fetched, KevError> {
    let mut req = http.get(url).header(ACCEPT, "application/json");
    if let Some(etag) = &conditional.etag {
        req = req.header(IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &conditional.last_modified {
        req = req.header(IF_MODIFIED_SINCE, lm);
    }
    let mut resp = req.send().await.map_err(|e| KevError::Fetch(describe(&e)))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if status.is_redirection() {
        return Err(KevError::Fetch(format!("the server answered {status}; redirects are not followed")));
    }
    if !status.is_success() {
        return Err(KevError::Fetch(format!("the server answered {status}")));
    }
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(KevError::Invalid(CatalogError::TooLarge { max: max_bytes }));
    }
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
    let mut bytes = Vec::with_capacity(resp.content_length().unwrap_or(0).min(max_bytes as u64) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(|e| KevError::Fetch(describe(&e)))? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(KevError::Invalid(CatalogError::TooLarge { max: max_bytes }));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body { bytes, etag, last_modified })
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the download was cut short"
    } else {
        "the request failed"
    };
    // The innermost cause says why (refused, reset, certificate...), without the URL that the
    // outermost one quotes.
    let mut cause = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_string(),
    }
}
