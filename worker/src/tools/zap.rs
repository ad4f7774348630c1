//! ZAP (Zed Attack Proxy): web applications, read from its traditional JSON report (`traditional-json`,
//! and `traditional-json-plus`, whose request and response headers and bodies are skipped, never kept).
//!
//! The plan runs ZAP in command-line mode (`-cmd`) with an Automation Framework plan written into the
//! SubJob's directory: the Quick Start options (`-quickurl`) always actively attack, and the quick profile
//! must not, so the plan is the documented way to choose per profile. The target URL is checked against
//! the SSRF policy again here, before every scan.
//!
//! Each alert instance is one finding, whose identity is (site, alert reference, HTTP method, page URL
//! without its query, parameter): ZAP's `alertRef` is the plugin id, or `<pluginid>-<n>` for the variants
//! one plugin raises (the four "Sec-Fetch-* Header is Missing" alerts of plugin 90005), so two variants on
//! one page stay two findings. The method is part of it because a GET and a POST of one URL are different
//! requests; the query is not, because active-scan instances carry the attack in it.
//!
//! Severity is ZAP's risk; ZAP has no critical level, so nothing here is Critical:
//!
//! | `riskcode` | ZAP risk      | severity      |
//! |------------|---------------|---------------|
//! | 0          | Informational | Informational |
//! | 1          | Low           | Low           |
//! | 2          | Medium        | Medium        |
//! | 3          | High          | High          |
//!
//! Confidence (1 Low, 2 Medium, 3 High, 4 Confirmed) is kept in `details`; alerts whose confidence is
//! 0 (False Positive, set by a person or an alert filter) are dropped. Every site of the report counts as
//! examined: a site with no alert is a verified empty result.
//!
//! This module also holds the web-target check Wapiti shares.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;

use bson::{Document, doc};
use cspm_shared::domain::finding::{Endpoint, FindingClass, VulnId, Vulnerability};
use cspm_shared::domain::native::{Target, WebScanProfile};
use cspm_shared::domain::severity::Severity;
use cspm_shared::store::findings::NewFinding;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{FindingSink, JobContext, Plan, ToolError, is_blank_report, open_output};
use crate::config::WorkerConfig;
use crate::runner::ProcessSpec;
use crate::runner::local::find_executable;

/// The report the plan asks ZAP for.
pub const OUTPUT_FILE: &str = "zap.json";
/// The Automation Framework plan the worker writes.
pub const PLAN_FILE: &str = "zap-plan.yaml";
/// ZAP's home directory for the run (configuration, session, add-on state): one per SubJob, so that
/// concurrent scans never share state and nothing outlives the SubJob's directory.
const HOME_DIR: &str = "zap-home";
/// Evidence-like strings (attack, evidence, other info, request lines) kept per finding.
pub(super) const MAX_EVIDENCE: usize = 1024;
/// Descriptive texts (description, solution) kept per finding.
pub(super) const MAX_TEXT: usize = 8192;
/// URLs and other identifying strings kept per finding.
pub(super) const MAX_FIELD: usize = 2048;

pub fn check_available(config: &WorkerConfig) -> Result<(), ToolError> {
    find_executable(&config.zap_path).map(|_| ()).ok_or_else(|| {
        ToolError::new(format!(
            "tool `zap` is not available on this worker: `{}` was not found (install ZAP and set CSPM_ZAP_PATH to its \
             zap.sh, or run this queue on workers that have it)",
            config.zap_path
        ))
    })
}

// ---------------------------------------------------------------------------------------------------
// Web targets (shared with Wapiti)
// ---------------------------------------------------------------------------------------------------

/// An http(s) URL a web scanner may be pointed at, in the parts the plans need. It is read with the
/// fleet's one URL check (`cspm_shared::domain::native::WebTarget`, which the API applied when the scan
/// was requested), so that what the API accepted is exactly what the scanner is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WebTarget {
    pub(super) https: bool,
    /// Lower-case; an IPv6 address without its brackets.
    pub(super) host: String,
    /// `None` for the scheme's default port (ZAP matches its contexts on URLs without it).
    pub(super) port: Option<u16>,
    /// The path and query, starting with `/`; the fragment is dropped (it never reaches the server).
    pub(super) path: String,
}

impl WebTarget {
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        let checked = cspm_shared::domain::native::WebTarget::parse(raw)?;
        let url = url::Url::parse(&checked.url).map_err(|e| format!("`{}` is not a URL: {e}", checked.url))?;
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string().to_ascii_lowercase(),
            None => return Err(format!("`{}` names no host", checked.url)),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        if path.len() > MAX_FIELD {
            return Err(format!("a web scan target must be a URL of at most {MAX_FIELD} characters"));
        }
        // `Url::port` is `None` for the scheme's default port.
        Ok(Self { https: url.scheme() == "https", host, port: url.port(), path })
    }

    pub(super) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `scheme://host[:port]`.
    pub(super) fn origin(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match self.port {
            Some(p) => format!("{}://{host}:{p}", self.scheme()),
            None => format!("{}://{host}", self.scheme()),
        }
    }

    pub(super) fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    pub(super) fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }
}

/// The SubJob's URL and web profile, after the SSRF guard: the host is resolved and every address it
/// stands for checked, here, before each scan (the API checked at submission, but a name can resolve
/// differently now). Refusals carry the guard's own message.
pub(super) async fn checked_web_target(ctx: &JobContext<'_>) -> Result<(WebTarget, WebScanProfile), ToolError> {
    let spec = ctx.job.native.as_ref().ok_or_else(|| ToolError::new("the SubJob has no native target"))?;
    let target = WebTarget::parse(&spec.target).map_err(ToolError::new)?;
    let host = Target::parse(&target.host).map_err(ToolError::new)?;
    ctx.config.target_policy.resolve(&host).await.map_err(ToolError::new)?;
    Ok((target, spec.web_profile.unwrap_or(WebScanProfile::Standard)))
}

/// The endpoint of a web finding on `host:port`.
pub(super) fn web_endpoint(host: &str, port: Option<u16>, https: bool, url: String, method: &str) -> Endpoint {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<IpAddr>().is_ok();
    Endpoint {
        ip: is_ip.then(|| host.to_string()),
        hostname: (!is_ip && !host.is_empty()).then(|| host.to_string()),
        port,
        protocol: Some("tcp".into()),
        service: Some(if https { "https" } else { "http" }.into()),
        url: Some(url),
        http_method: (!method.is_empty()).then(|| method.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------
// Text helpers (shared with Wapiti)
// ---------------------------------------------------------------------------------------------------

/// `s` cut to at most `max` bytes (at a character boundary), marked with `…` when cut.
pub(super) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// Reads a string, a number, a boolean or null as a string (ZAP writes its numbers as strings, other
/// versions and tools do not), keeping at most `max` bytes: the parser's scratch buffer holds the
/// whole value for a moment, the finding keeps only the bounded copy.
struct LenientString {
    max: usize,
}

impl<'de> Visitor<'de> for LenientString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(bounded(v, self.max))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

/// A short field (ids, names, URLs).
pub(super) fn field<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(LenientString { max: MAX_FIELD })
}

/// Evidence, attacks, other info, request lines.
pub(super) fn evidence<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(LenientString { max: MAX_EVIDENCE })
}

/// Descriptions and solutions.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(LenientString { max: MAX_TEXT })
}

/// A 64-bit hash of an identity, to recognise one reported twice without keeping every identity of a
/// large report in memory.
pub(super) fn identity_hash(identity: &[String]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    identity.hash(&mut h);
    h.finish()
}

/// The message for a serde error: the file, the line and column, and what was wrong.
pub(super) fn position_error(name: &str, what: &str, e: &serde_json::Error) -> ToolError {
    let problem = if e.is_eof() {
        format!("the {what} is truncated (it ends at line {}, column {}): {e}", e.line(), e.column())
    } else {
        format!("not a valid {what} at line {}, column {}: {e}", e.line(), e.column())
    };
    ToolError::new(format!("{name}: {problem}"))
}

/// ZAP's HTML paragraphs (`<p>…</p><p>…</p>`) as plain text, one blank line between paragraphs. Only
/// the paragraph and line-break tags ZAP itself writes are removed: the text between them is ZAP's rule
/// documentation verbatim, and may legitimately mention markup such as `<script>`.
fn paragraphs(html: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        current.push_str(&rest[..at]);
        let after = &rest[at..];
        let tag_len = ["<p>", "</p>", "<br>", "<br/>", "<br />"]
            .iter()
            .find(|t| after.len() >= t.len() && after.as_bytes()[..t.len()].eq_ignore_ascii_case(t.as_bytes()))
            .map(|t| t.len());
        match tag_len {
            Some(n) => {
                let para = current.trim();
                if !para.is_empty() {
                    out.push(para.to_string());
                }
                current.clear();
                rest = &after[n..];
            }
            None => {
                current.push('<');
                rest = &after[1..];
            }
        }
    }
    current.push_str(rest);
    let para = current.trim();
    if !para.is_empty() {
        out.push(para.to_string());
    }
    out.join("\n\n")
}

/// The URLs of ZAP's `reference` field (one per paragraph, in practice), and any text that is not one.
fn references(html: &str) -> (Vec<String>, Vec<String>) {
    let mut urls: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    for para in paragraphs(html).split("\n\n").filter(|p| !p.trim().is_empty()) {
        let mut found = false;
        for token in para.split_whitespace() {
            let token = token.trim_end_matches([',', ';', ')']);
            if (token.starts_with("http://") || token.starts_with("https://")) && token.len() > "https://".len() {
                found = true;
                if !urls.iter().any(|u| u == token) {
                    urls.push(bounded(token, MAX_FIELD));
                }
            }
        }
        if !found {
            notes.push(bounded(para.trim(), MAX_EVIDENCE));
        }
    }
    (urls, notes)
}

// ---------------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------------

/// Minutes per Automation Framework job, from the SubJob's timeout. A tenth of the timeout is left for
/// ZAP's start (a JVM and its add-ons) and the report; every job gets at least a minute, because ZAP
/// reads 0 as "unlimited". The runner's timeout stays the hard stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ZapBudget {
    spider_mins: u64,
    spider_depth: u32,
    passive_mins: u64,
    /// `None`: no active scan (the quick profile).
    active_mins: Option<u64>,
    /// The longest any one active rule may run (standard only: comprehensive lets each rule finish).
    rule_mins: Option<u64>,
    after_active_passive_mins: u64,
}

impl ZapBudget {
    fn of(profile: WebScanProfile, timeout_secs: i64) -> Self {
        let minutes = (u64::try_from(timeout_secs).unwrap_or(0).max(60) * 9 / 10) / 60;
        let part = |pct: u64| (minutes * pct / 100).max(1);
        match profile {
            WebScanProfile::Quick => Self {
                spider_mins: part(60),
                spider_depth: 2,
                passive_mins: part(30),
                active_mins: None,
                rule_mins: None,
                after_active_passive_mins: 0,
            },
            WebScanProfile::Standard => Self {
                spider_mins: part(20),
                spider_depth: 5,
                passive_mins: part(10),
                active_mins: Some(part(55)),
                rule_mins: Some(part(10)),
                after_active_passive_mins: part(5),
            },
            WebScanProfile::Comprehensive => Self {
                spider_mins: part(25),
                spider_depth: 10,
                passive_mins: part(10),
                active_mins: Some(part(50)),
                rule_mins: None,
                after_active_passive_mins: part(5),
            },
        }
    }
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar, escapes included.
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The Automation Framework plan: one context (the target URL and everything under it), the
/// traditional spider, the passive scanner, the active scanner unless the profile is quick, and a
/// traditional JSON report of the target's site only, without alerts marked as false positives.
fn automation_plan(target: &WebTarget, profile: WebScanProfile, workdir: &Path, timeout_secs: i64) -> String {
    let b = ZapBudget::of(profile, timeout_secs);
    // ZAP turns context URLs into regular expressions: the query (`?` is special) stays out of it; the
    // spider still starts from the full URL.
    let context_url = format!("{}{}", target.origin(), target.path.split('?').next().unwrap_or("/"));
    let mut y: Vec<String> = vec![
        "env:".into(),
        "  contexts:".into(),
        "    - name: \"cspm-target\"".into(),
        "      urls:".into(),
        format!("        - {}", yaml_str(&context_url)),
        "  parameters:".into(),
        "    failOnError: true".into(),
        "    failOnWarning: false".into(),
        "    progressToStdout: true".into(),
        "jobs:".into(),
        "  - type: spider".into(),
        "    parameters:".into(),
        format!("      url: {}", yaml_str(&target.url())),
        format!("      maxDuration: {}", b.spider_mins),
        format!("      maxDepth: {}", b.spider_depth),
        "  - type: passiveScan-wait".into(),
        "    parameters:".into(),
        format!("      maxDuration: {}", b.passive_mins),
    ];
    if let Some(active) = b.active_mins {
        y.extend(["  - type: activeScan".into(), "    parameters:".into()]);
        y.push(format!("      maxScanDurationInMins: {active}"));
        if let Some(rule) = b.rule_mins {
            y.push(format!("      maxRuleDurationInMins: {rule}"));
        }
        if profile == WebScanProfile::Comprehensive {
            y.extend(["      addQueryParam: true".into(), "      scanHeadersAllRequests: true".into()]);
        }
        // The active scan's own requests are passively scanned too: wait for them.
        y.extend(["  - type: passiveScan-wait".into(), "    parameters:".into()]);
        y.push(format!("      maxDuration: {}", b.after_active_passive_mins));
    }
    y.extend([
        "  - type: report".into(),
        "    parameters:".into(),
        "      template: \"traditional-json\"".into(),
        format!("      reportDir: {}", yaml_str(&workdir.display().to_string())),
        format!("      reportFile: {}", yaml_str(OUTPUT_FILE)),
        "    confidences:".into(),
        "      - \"confirmed\"".into(),
        "      - \"high\"".into(),
        "      - \"medium\"".into(),
        "      - \"low\"".into(),
        "    sites:".into(),
        format!("      - {}", yaml_str(&target.origin())),
    ]);
    let mut out = y.join("\n");
    out.push('\n');
    out
}

/// `zap.sh -cmd -silent -dir <workdir>/zap-home -autorun <workdir>/zap-plan.yaml`: inline mode (exits
/// when the plan is done), no unsolicited requests (update checks, news, telemetry: `-silent`), a home
/// directory of its own. ZAP exits 0 when the plan succeeded, 1 on errors, 2 on warnings only.
pub async fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let (target, profile) = checked_web_target(ctx).await?;
    let plan_path = ctx.workdir.join(PLAN_FILE);
    std::fs::write(&plan_path, automation_plan(&target, profile, &ctx.workdir, ctx.job.timeout_secs))
        .map_err(|e| ToolError::new(format!("cannot write the ZAP plan {}: {e}", plan_path.display())))?;
    Ok(Plan::Process(process_spec(ctx, &plan_path)))
}

fn process_spec(ctx: &JobContext<'_>, plan_path: &Path) -> ProcessSpec {
    let args = vec![
        "-cmd".to_string(),
        "-silent".into(),
        "-dir".into(),
        ctx.workdir.join(HOME_DIR).display().to_string(),
        "-autorun".into(),
        plan_path.display().to_string(),
    ];
    ProcessSpec {
        program: ctx.config.zap_path.clone(),
        args,
        // The JVM writes preferences under HOME: keep them in the SubJob's directory too.
        env: vec![("HOME".into(), ctx.workdir.display().to_string())],
        workdir: ctx.workdir.clone(),
        // 2: the plan finished with warnings only (a job ran out of time, a site had nothing to spider).
        ok_exit_codes: vec![2],
        secret_files: vec![],
        mounts: vec![],
    }
}

// ---------------------------------------------------------------------------------------------------
// Parse
// ---------------------------------------------------------------------------------------------------

/// One alert of a site, with its instances: the unit held in memory while parsing.
#[derive(Deserialize)]
struct Alert {
    #[serde(default, deserialize_with = "field")]
    pluginid: String,
    #[serde(rename = "alertRef", default, deserialize_with = "field")]
    alert_ref: String,
    #[serde(default, deserialize_with = "field")]
    alert: String,
    #[serde(default, deserialize_with = "field")]
    name: String,
    #[serde(default, deserialize_with = "field")]
    riskcode: String,
    #[serde(default, deserialize_with = "field")]
    confidence: String,
    #[serde(default, deserialize_with = "text")]
    desc: String,
    #[serde(default)]
    instances: Vec<Instance>,
    #[serde(default, deserialize_with = "text")]
    solution: String,
    #[serde(default, deserialize_with = "text")]
    otherinfo: String,
    #[serde(default, deserialize_with = "text")]
    reference: String,
    #[serde(default, deserialize_with = "field")]
    cweid: String,
    #[serde(default, deserialize_with = "field")]
    wascid: String,
    /// JSON-plus: `[{ "tag": "OWASP_2021_A05", "link": "https://…" }]`.
    #[serde(default)]
    tags: Vec<Tag>,
}

/// Only these fields of an instance are read: JSON-plus adds `request-header`, `request-body`,
/// `response-header` and `response-body`, which may hold cookies and credentials and are skipped.
#[derive(Deserialize)]
struct Instance {
    #[serde(default, deserialize_with = "field")]
    uri: String,
    #[serde(default, deserialize_with = "field")]
    method: String,
    #[serde(default, deserialize_with = "field")]
    param: String,
    #[serde(default, deserialize_with = "evidence")]
    attack: String,
    #[serde(default, deserialize_with = "evidence")]
    evidence: String,
    #[serde(default, deserialize_with = "evidence")]
    otherinfo: String,
}

#[derive(Deserialize)]
struct Tag {
    #[serde(default, deserialize_with = "field")]
    tag: String,
    #[serde(default, deserialize_with = "field")]
    link: String,
}

#[derive(Default)]
struct Site {
    name: String,
    host: String,
    port: String,
    ssl: String,
}

/// Why emitting stopped: the report (becomes a parse error with a position) or the store.
pub(super) enum EmitError {
    Report(String),
    Store(ToolError),
}

struct Parser<'a> {
    sink: &'a mut FindingSink,
    version: Option<String>,
    /// Identities already emitted for the current site (ZAP lists an alert once per risk level, and
    /// instances can repeat).
    seen: HashSet<u64>,
    /// A failure that is not the report's fault (the store stopped), reported as itself.
    failure: Option<ToolError>,
}

impl Parser<'_> {
    fn fail<E: de::Error>(&mut self, e: EmitError) -> E {
        match e {
            EmitError::Report(m) => E::custom(m),
            EmitError::Store(err) => {
                self.failure = Some(err);
                E::custom("the finding store stopped")
            }
        }
    }

    fn emit_alert(&mut self, site: &Site, alert: Alert) -> Result<(), EmitError> {
        let plugin = alert.pluginid.trim().to_string();
        if plugin.is_empty() {
            return Err(EmitError::Report(format!("an alert of site `{}` has no pluginid", site.name)));
        }
        let rule = match alert.alert_ref.trim() {
            "" => plugin.clone(),
            r => r.to_string(),
        };
        let risk = alert.riskcode.trim();
        let severity = risk_severity(risk).ok_or_else(|| {
            EmitError::Report(format!(
                "alert {rule} of site `{}` has riskcode `{risk}` (expected 0, 1, 2 or 3)",
                site.name
            ))
        })?;
        let confidence = alert.confidence.trim().to_string();
        if confidence == "0" {
            return Ok(()); // marked as a false positive
        }
        let name = [alert.name.trim(), alert.alert.trim()]
            .into_iter()
            .find(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("ZAP alert {rule}"));
        let cwe = alert.cweid.trim().parse::<u32>().ok().filter(|n| *n > 0);
        let wasc = alert.wascid.trim().parse::<u32>().ok().filter(|n| *n > 0);
        let description = paragraphs(&alert.desc);
        let solution = paragraphs(&alert.solution);
        let alert_otherinfo = paragraphs(&alert.otherinfo);
        let (mut refs, notes) = references(&alert.reference);
        if rule.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            let doc_url = format!("https://www.zaproxy.org/docs/alerts/{rule}/");
            if !refs.contains(&doc_url) {
                refs.push(doc_url);
            }
        }
        let mut vuln = Vulnerability::new(
            cwe.map(VulnId::cwe).unwrap_or_else(|| VulnId::Advisory(format!("ZAP-{plugin}"))),
            name.clone(),
            severity,
        );
        vuln.description = description.clone();
        vuln.references = refs.clone();
        let mut tags = Document::new();
        for t in alert.tags.iter().filter(|t| !t.tag.trim().is_empty()) {
            tags.insert(t.tag.trim(), t.link.trim());
        }
        let https = site.ssl.trim().eq_ignore_ascii_case("true") || site.name.starts_with("https://");
        // A report without `@port` still names the site's URL, and with it the port.
        let port = site
            .port
            .trim()
            .parse::<u16>()
            .ok()
            .or_else(|| WebTarget::parse(&site.name).ok().map(|t| t.port_or_default()));

        // One finding per (method, page, parameter): instances that differ only in their query or
        // evidence are one place, counted.
        let mut order: Vec<(Instance, i64)> = Vec::new();
        let mut index: HashMap<(String, String, String), usize> = HashMap::new();
        let mut instances = alert.instances;
        if instances.is_empty() {
            instances.push(Instance {
                uri: site.name.clone(),
                method: String::new(),
                param: String::new(),
                attack: String::new(),
                evidence: String::new(),
                otherinfo: String::new(),
            });
        }
        for inst in instances {
            let key = (
                inst.method.trim().to_ascii_uppercase(),
                page_of(inst.uri.trim()).to_string(),
                inst.param.trim().to_string(),
            );
            match index.get(&key) {
                Some(&i) => order[i].1 += 1,
                None => {
                    index.insert(key, order.len());
                    order.push((inst, 1));
                }
            }
        }
        for (inst, occurrences) in order {
            let method = inst.method.trim().to_ascii_uppercase();
            let page = match page_of(inst.uri.trim()) {
                "" => site.name.clone(),
                p => p.to_string(),
            };
            let param = inst.param.trim().to_string();
            let identity = vec![site.name.clone(), rule.clone(), method.clone(), page.clone(), param.clone()];
            if !self.seen.insert(identity_hash(&identity)) {
                continue;
            }
            let url = match inst.uri.trim() {
                "" => page.clone(),
                u => u.to_string(),
            };
            let mut details = doc! {
                "site": &site.name,
                "plugin_id": &plugin,
                "alert_ref": &rule,
                "risk_code": risk,
                "confidence": confidence_caption(&confidence),
            };
            if let Some(c) = cwe {
                details.insert("cwe_id", i64::from(c));
            }
            if let Some(w) = wasc {
                details.insert("wasc_id", i64::from(w));
            }
            for (key, value) in [
                ("param", &param),
                ("attack", &inst.attack),
                ("evidence", &inst.evidence),
                ("otherinfo", &inst.otherinfo),
            ] {
                if !value.trim().is_empty() {
                    details.insert(key, value.as_str());
                }
            }
            if !alert_otherinfo.is_empty() {
                details.insert("alert_otherinfo", bounded(&alert_otherinfo, MAX_EVIDENCE));
            }
            if occurrences > 1 {
                details.insert("instances", occurrences);
            }
            if !notes.is_empty() {
                details.insert("reference_notes", notes.clone());
            }
            if !tags.is_empty() {
                details.insert("tags", tags.clone());
            }
            if let Some(v) = &self.version {
                details.insert("zap_version", v.as_str());
            }
            let title =
                if param.is_empty() { format!("{name} on {page}") } else { format!("{name} on {page} ({param})") };
            let finding = NewFinding {
                class: FindingClass::Vulnerability,
                rule_id: format!("zap.{rule}"),
                title,
                description: description.clone(),
                severity,
                resource_uid: page.clone(),
                resource_type: "web_page".into(),
                resource_name: Some(site.name.clone()),
                service: Some(if https { "https" } else { "http" }.into()),
                identity,
                remediation: (!solution.is_empty()).then(|| solution.clone()),
                references: refs.clone(),
                vulnerabilities: vec![vuln.clone()],
                endpoint: Some(web_endpoint(&site.host, port, https, url, &method)),
                details,
                ..NewFinding::default()
            };
            self.sink.push(finding).map_err(EmitError::Store)?;
        }
        Ok(())
    }
}

/// The URI without its query and fragment.
pub(super) fn page_of(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or_default()
}

/// ZAP risk → severity (see the module table).
fn risk_severity(code: &str) -> Option<Severity> {
    match code {
        "0" => Some(Severity::Informational),
        "1" => Some(Severity::Low),
        "2" => Some(Severity::Medium),
        "3" => Some(Severity::High),
        _ => None,
    }
}

fn confidence_caption(code: &str) -> String {
    match code {
        "1" => "Low".into(),
        "2" => "Medium".into(),
        "3" => "High".into(),
        "4" => "Confirmed".into(),
        other => other.to_string(),
    }
}

/// The whole report: `@programName`, `@version`, then `site[]`.
struct ReportVisitor<'p, 'a> {
    parser: &'p mut Parser<'a>,
}

impl<'de> Visitor<'de> for ReportVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ZAP traditional JSON report (an object with a `site` array)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut saw_sites = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "@version" => {
                    let v: LenientField = map.next_value()?;
                    self.parser.version = Some(v.0).filter(|v| !v.is_empty());
                }
                "site" => {
                    map.next_value_seed(SitesSeed { parser: &mut *self.parser })?;
                    saw_sites = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !saw_sites {
            return Err(de::Error::custom("this JSON is not a ZAP traditional JSON report: it has no `site` array"));
        }
        Ok(())
    }
}

/// A short field as a standalone value.
pub(super) struct LenientField(pub(super) String);

impl<'de> Deserialize<'de> for LenientField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        field(d).map(LenientField)
    }
}

struct SitesSeed<'p, 'a> {
    parser: &'p mut Parser<'a>,
}

impl<'de> DeserializeSeed<'de> for SitesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SitesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of sites")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(SiteSeed { parser: &mut *self.parser })?.is_some() {}
        Ok(())
    }
}

struct SiteSeed<'p, 'a> {
    parser: &'p mut Parser<'a>,
}

impl<'de> DeserializeSeed<'de> for SiteSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SiteSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a site (an object with `@name` and `alerts`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut site = Site::default();
        let mut saw_alerts = false;
        self.parser.seen.clear();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "@name" => site.name = map.next_value::<LenientField>()?.0.trim().to_string(),
                "@host" => site.host = map.next_value::<LenientField>()?.0,
                "@port" => site.port = map.next_value::<LenientField>()?.0,
                "@ssl" => site.ssl = map.next_value::<LenientField>()?.0,
                "alerts" => {
                    // ZAP writes the site's attributes first; its alerts cannot be placed without them.
                    if site.name.is_empty() {
                        return Err(de::Error::custom("a site lists its `alerts` before its `@name`"));
                    }
                    map.next_value_seed(AlertsSeed { parser: &mut *self.parser, site: &site })?;
                    saw_alerts = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if site.name.is_empty() {
            return Err(de::Error::custom("a site has no `@name`"));
        }
        if !saw_alerts {
            return Err(de::Error::custom(format!("site `{}` has no `alerts` array", site.name)));
        }
        self.parser.sink.count_examined(1);
        Ok(())
    }
}

struct AlertsSeed<'p, 'a, 's> {
    parser: &'p mut Parser<'a>,
    site: &'s Site,
}

impl<'de> DeserializeSeed<'de> for AlertsSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AlertsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of alerts")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(alert) = seq.next_element::<Alert>()? {
            if let Err(e) = self.parser.emit_alert(self.site, alert) {
                return Err(self.parser.fail(e));
            }
        }
        Ok(())
    }
}

/// Finds ZAP's report in the SubJob's directory (the name the plan gave it).
pub fn parse(workdir: &Path, max_bytes: u64, sink: &mut FindingSink) -> Result<(), ToolError> {
    let path = workdir.join(OUTPUT_FILE);
    if !path.exists() {
        return Err(ToolError::new(format!(
            "ZAP wrote no report ({} is missing; see its output for the plan's errors)",
            path.display()
        )));
    }
    let file = open_output(&path, max_bytes)?;
    parse_reader(BufReader::new(file), &path.display().to_string(), sink)
}

/// Streams the report: one site, then one alert (with its instances) at a time in memory.
pub fn parse_reader<R: std::io::BufRead>(mut input: R, name: &str, sink: &mut FindingSink) -> Result<(), ToolError> {
    let blank =
        is_blank_report(&mut input).map_err(|e| ToolError::new(format!("{name}: cannot read the ZAP report: {e}")))?;
    if blank {
        return Err(ToolError::new(format!("{name}: the ZAP report is empty (ZAP stopped before writing it)")));
    }
    // The reports add-on ships its Thymeleaf templates next to its reports: say so rather than point
    // at the first template expression.
    let head = input.fill_buf().map_err(|e| ToolError::new(format!("{name}: cannot read the ZAP report: {e}")))?;
    if head.windows(4).any(|w| w == b"[[${") || head.windows(8).any(|w| w == b"th:block") {
        return Err(ToolError::new(format!(
            "{name}: this is a ZAP report template (Thymeleaf), not a report: generate a report with it \
             (the `traditional-json` template) and parse that"
        )));
    }
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut parser = Parser { sink: &mut *sink, version: None, seen: HashSet::new(), failure: None };
    let result = (&mut de).deserialize_map(ReportVisitor { parser: &mut parser });
    if let Some(failure) = parser.failure.take() {
        return Err(failure);
    }
    result.map_err(|e| position_error(name, "ZAP traditional JSON report", &e))?;
    de.end().map_err(|e| position_error(name, "ZAP traditional JSON report", &e))?;
    sink.flush()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cspm_shared::domain::finding::FindingStatus;
    use cspm_shared::ocsf::event::{EventContext, render};
    use cspm_shared::ocsf::schema::OcsfSchema;
    use cspm_shared::time::Timestamp;
    use proptest::prelude::*;
    use tokio::sync::mpsc;

    pub(crate) fn fixture(rel: &str) -> std::path::PathBuf {
        cspm_shared::testing::fixtures_dir().join("zap").join(rel)
    }

    const REPORTS: [&str; 3] = [
        "zap-extensions/basic-traditional-json.json",
        "zap-extensions/basic-traditional-json-plus.json",
        "bcgov/zap_2.14.0_itsecgames.json",
    ];

    fn parse_bytes(bytes: &[u8], name: &str) -> Result<(Vec<NewFinding>, u64), ToolError> {
        let (tx, mut rx) = mpsc::channel(100_000);
        let mut sink = FindingSink::new(tx, 3);
        let r = parse_reader(bytes, name, &mut sink);
        let examined = sink.examined;
        drop(sink);
        let mut all = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            all.extend(batch);
        }
        r.map(|()| (all, examined))
    }

    fn parse_fixture(rel: &str) -> (Vec<NewFinding>, u64) {
        let bytes = std::fs::read(fixture(rel)).expect("fixture");
        parse_bytes(&bytes, rel).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub(crate) fn schema() -> OcsfSchema {
        OcsfSchema::load(&cspm_shared::testing::fixtures_dir().join("ocsf/compiled/ocsf-1.4.0.export.json"))
            .expect("schema")
    }

    pub(crate) fn assert_valid_ocsf(tool: &str, findings: &[NewFinding], schema: &OcsfSchema) {
        for f in findings {
            let ctx = EventContext {
                tool,
                tool_version: None,
                dedup_key: "0123456789abcdef",
                seen_at: Timestamp::from_millis(1_700_000_000_000),
                first_seen: None,
                status: FindingStatus::first(f.verdict),
                cloud: None,
            };
            let event = render(f, &ctx);
            let errors = schema.validate(&event);
            assert!(errors.is_empty(), "{}: {errors:?}\n{event}", f.title);
        }
    }

    /// What a snapshot keeps of a finding.
    pub(crate) fn summary(findings: &[NewFinding]) -> Vec<serde_json::Value> {
        findings
            .iter()
            .map(|f| {
                let cwe =
                    f.vulnerabilities.first().map(|v| v.id.as_str().to_string()).filter(|id| id.starts_with("CWE-"));
                let endpoint = f.endpoint.clone().unwrap_or_default();
                serde_json::json!({
                    "class": f.class.as_str(),
                    "rule_id": f.rule_id,
                    "cwe": cwe.or_else(|| f.details.get_str("cwe").ok().map(str::to_string)),
                    "severity": f.severity.as_str(),
                    "url": endpoint.url,
                    "method": endpoint.http_method,
                    "param": f.details.get_str("param").or_else(|_| f.details.get_str("parameter")).unwrap_or_default(),
                    "identity": f.identity,
                    "title": f.title,
                })
            })
            .collect()
    }

    #[test]
    fn every_zap_report_fixture_parses_and_renders_valid_ocsf() {
        let schema = schema();
        for rel in REPORTS {
            let (found, examined) = parse_fixture(rel);
            assert!(!found.is_empty(), "{rel}");
            assert_eq!(examined, 1, "{rel}: one site");
            assert!(found.iter().all(|f| f.class == FindingClass::Vulnerability && f.identity.len() == 5), "{rel}");
            assert_valid_ocsf("zap", &found, &schema);
        }
    }

    #[test]
    fn zap_reports_match_their_snapshots() {
        for (rel, snap) in [
            (REPORTS[0], "basic_traditional_json"),
            (REPORTS[1], "basic_traditional_json_plus"),
            (REPORTS[2], "bcgov_itsecgames_2_14_0"),
        ] {
            let (found, _) = parse_fixture(rel);
            insta::assert_json_snapshot!(snap, summary(&found));
        }
    }

    #[test]
    fn a_baseline_scan_maps_risk_cwe_wasc_and_references() {
        let (found, _) = parse_fixture(REPORTS[2]);
        let csp = found
            .iter()
            .find(|f| f.rule_id == "zap.10038-1" && f.resource_uid == "http://www.itsecgames.com/bugs.htm")
            .expect("CSP header alert on bugs.htm");
        assert_eq!(csp.severity, Severity::Medium);
        assert_eq!(csp.vulnerabilities[0].id, VulnId::cwe(693));
        assert_eq!(csp.details.get_i64("wasc_id").ok(), Some(15));
        assert_eq!(csp.details.get_str("confidence").ok(), Some("High"));
        assert!(
            csp.references.len() >= 7 && csp.references.iter().all(|r| r.starts_with("https://")),
            "{:?}",
            csp.references
        );
        assert!(csp.references.contains(&"https://www.zaproxy.org/docs/alerts/10038-1/".to_string()));
        assert!(!csp.description.contains("<p>") && csp.description.starts_with("Content Security Policy"));
        assert!(csp.remediation.as_deref().is_some_and(|r| r.contains("Content-Security-Policy header")));
        let endpoint = csp.endpoint.as_ref().expect("endpoint");
        assert_eq!(endpoint.http_method.as_deref(), Some("GET"));
        assert_eq!(endpoint.hostname.as_deref(), Some("www.itsecgames.com"));
        assert_eq!(endpoint.port, Some(80));
        // The four variants of plugin 90005 stay apart on one page.
        let fetch: Vec<&NewFinding> = found
            .iter()
            .filter(|f| {
                f.details.get_str("plugin_id").ok() == Some("90005") && f.resource_uid == "http://www.itsecgames.com"
            })
            .collect();
        assert_eq!(fetch.len(), 4, "{:?}", fetch.iter().map(|f| &f.identity).collect::<Vec<_>>());
        // Informational alerts are informational; nothing is critical.
        assert!(found.iter().any(|f| f.severity == Severity::Informational));
        assert!(found.iter().all(|f| f.severity != Severity::Critical));
        let total_instances: usize = 5 + 5 + 5 + 8 + 11 + 1 + 1 + 3 * 4 + 13;
        assert_eq!(found.len(), total_instances);
    }

    #[test]
    fn repeated_instances_become_one_finding_and_json_plus_bodies_are_not_kept() {
        let (found, examined) = parse_fixture(REPORTS[1]);
        assert_eq!(examined, 1);
        assert_eq!(found.len(), 1, "two instances of one (method, page, param)");
        let f = &found[0];
        assert_eq!(f.details.get_i64("instances").ok(), Some(2));
        assert_eq!(f.vulnerabilities[0].id, VulnId::cwe(123));
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.details.get_document("tags").ok().and_then(|t| t.get_str("tagkey").ok()), Some("tagvalue"));
        let all = serde_json::to_string(f).expect("json");
        assert!(!all.contains("Test Response Body") && !all.contains("user-agent"), "{all}");
        assert_eq!(f.details.get_array("reference_notes").map(|a| a.len()).ok(), Some(1));
    }

    #[test]
    fn alerts_without_a_cwe_are_zap_advisories_and_false_positives_are_dropped() {
        let report = br#"{"@version": "2.15.0", "site": [{"@name": "https://a.example", "@host": "a.example",
            "@ssl": "true", "alerts": [
              {"pluginid": "10096", "name": "Timestamp Disclosure", "riskcode": "0", "confidence": "1",
               "cweid": "-1", "wascid": "-1", "instances": [{"uri": "https://a.example/x?y=1", "method": "POST",
               "param": "", "evidence": "1700000000"}]},
              {"pluginid": "40012", "name": "XSS", "riskcode": "3", "confidence": "0", "cweid": "79",
               "instances": [{"uri": "https://a.example/s", "method": "GET", "param": "q"}]}
            ]}, {"@name": "https://b.example", "@host": "b.example", "@port": "443", "@ssl": "true", "alerts": []}]}"#;
        let (found, examined) = parse_bytes(report, "r.json").expect("parses");
        assert_eq!(examined, 2, "a site without alerts is examined too");
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(f.vulnerabilities[0].id, VulnId::Advisory("ZAP-10096".into()));
        assert_eq!(f.identity, vec!["https://a.example", "10096", "POST", "https://a.example/x", ""]);
        assert_eq!(f.endpoint.as_ref().and_then(|e| e.service.as_deref()), Some("https"));
        assert_eq!(f.endpoint.as_ref().and_then(|e| e.port), Some(443), "no `@port`: the site URL's");
        assert_eq!(f.details.get_str("zap_version").ok(), Some("2.15.0"));
        let (none, examined) = parse_bytes(br#"{"site": []}"#, "empty.json").expect("no sites");
        assert_eq!((none.len(), examined), (0, 0));
    }

    #[test]
    fn long_evidence_is_bounded() {
        let long = "x".repeat(10_000);
        let report = format!(
            r#"{{"site": [{{"@name": "http://a", "@host": "a", "@port": "80", "@ssl": "false", "alerts": [
            {{"pluginid": "1", "riskcode": "1", "confidence": "2", "instances": [{{"uri": "http://a/", "method": "GET",
            "param": "", "evidence": "{long}", "attack": "{long}"}}]}}]}}]}}"#
        );
        let (found, _) = parse_bytes(report.as_bytes(), "long.json").expect("parses");
        let evidence = found[0].details.get_str("evidence").expect("evidence");
        assert!(evidence.len() <= MAX_EVIDENCE + '…'.len_utf8() && evidence.ends_with('…'));
    }

    #[test]
    fn the_report_template_is_recognised_as_a_template() {
        let bytes = std::fs::read(fixture("zap-extensions/template-traditional-json.report.json")).expect("fixture");
        let err = parse_bytes(&bytes, "template.json").expect_err("a template is not a report");
        assert!(err.message.contains("template.json") && err.message.contains("template"), "{err}");
        // Without the hint, the JSON parser still names the position.
        let err = position_error(
            "t.json",
            "ZAP traditional JSON report",
            &serde_json::from_slice::<serde_json::Value>(&bytes).expect_err("not JSON"),
        );
        assert!(err.message.contains("line 2"), "{err}");
    }

    #[test]
    fn truncated_and_foreign_reports_are_errors_naming_the_file_and_position() {
        for rel in REPORTS {
            let bytes = std::fs::read(fixture(rel)).expect("fixture");
            let mut counting = FindingSink::counting();
            let err = parse_reader(&bytes[..bytes.len() / 2], rel, &mut counting).expect_err("truncated");
            assert!(
                err.message.contains(rel) && err.message.contains("truncated") && err.message.contains("line "),
                "{err}"
            );
        }
        let mut sink = FindingSink::counting();
        let wapiti = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wapiti/wapiti-3.0.4-standard.json"))
            .expect("wapiti report");
        let err = parse_reader(&wapiti[..], "wapiti.json", &mut sink).expect_err("not ZAP");
        assert!(
            err.message.contains("wapiti.json")
                && err.message.contains("no `site` array")
                && err.message.contains("line"),
            "{err}"
        );
        let err = parse_reader(&b"[1, 2]"[..], "array.json", &mut sink).expect_err("array");
        assert!(err.message.contains("array.json") && err.message.contains("column"), "{err}");
        let err = parse_reader(
            &b"{\"site\": [{\"@name\": \"http://a\", \"alerts\": [{\"pluginid\": \"1\", \"riskcode\": \"7\"}]}]}"[..],
            "risk.json",
            &mut sink,
        )
        .expect_err("bad risk");
        assert!(err.message.contains("riskcode `7`") && err.message.contains("line 1"), "{err}");
        let err = parse_reader(&b"{\"site\": []} trailing"[..], "trail.json", &mut sink).expect_err("trailing");
        assert!(err.message.contains("trail.json"), "{err}");
        let err = parse_reader(&b"  "[..], "blank.json", &mut sink).expect_err("empty");
        assert!(err.message.contains("empty"), "{err}");
    }

    #[test]
    fn web_targets_parse_strictly() {
        let t = WebTarget::parse("HTTP://Example.COM:80/app/?q=1#frag").expect("parses");
        assert_eq!((t.https, t.host.as_str(), t.port, t.path.as_str()), (false, "example.com", None, "/app/?q=1"));
        assert_eq!(t.url(), "http://example.com/app/?q=1");
        let v6 = WebTarget::parse("https://[::1]:8443").expect("v6");
        assert_eq!((v6.host.as_str(), v6.port, v6.origin()), ("::1", Some(8443), "https://[::1]:8443".to_string()));
        assert_eq!(v6.port_or_default(), 8443);
        for bad in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "example.com",
            "http://user:pw@example.com/",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http:///path",
            "http://exa mple.com/",
            "http://[::1/",
        ] {
            assert!(WebTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paragraphs_and_references_come_out_as_text_and_urls() {
        assert_eq!(paragraphs("<p>One</p><P>Two <b>bold</b></p>"), "One\n\nTwo <b>bold</b>");
        let (urls, notes) = references("<p>https://a.example/x</p><p>see http://b.example, too</p><p>Plain</p>");
        assert_eq!(urls, vec!["https://a.example/x", "http://b.example"]);
        assert_eq!(notes, vec!["Plain"]);
    }

    fn workdir_ctx_plan(profile: WebScanProfile, timeout_secs: i64) -> String {
        let target = WebTarget::parse("https://app.example.com/shop/?from=cspm").expect("target");
        automation_plan(&target, profile, Path::new("/out/sj1"), timeout_secs)
    }

    #[test]
    fn the_zap_plan_follows_the_profile_and_the_timeout() {
        let quick = workdir_ctx_plan(WebScanProfile::Quick, 3600);
        assert!(!quick.contains("activeScan"), "{quick}");
        assert!(quick.contains("maxDuration: 32") && quick.contains("maxDepth: 2"), "{quick}");
        let standard = workdir_ctx_plan(WebScanProfile::Standard, 3600);
        for line in [
            "        - \"https://app.example.com/shop/\"",
            "      url: \"https://app.example.com/shop/?from=cspm\"",
            "      maxDuration: 10",
            "      maxDepth: 5",
            "  - type: activeScan",
            "      maxScanDurationInMins: 29",
            "      maxRuleDurationInMins: 5",
            "      template: \"traditional-json\"",
            "      reportDir: \"/out/sj1\"",
            "      reportFile: \"zap.json\"",
            "      - \"https://app.example.com\"",
        ] {
            assert!(standard.lines().any(|l| l == line), "missing `{line}` in\n{standard}");
        }
        assert!(!standard.contains("falsepositive"));
        let comprehensive = workdir_ctx_plan(WebScanProfile::Comprehensive, 3600);
        assert!(
            comprehensive.contains("scanHeadersAllRequests: true") && !comprehensive.contains("maxRuleDurationInMins")
        );
        // A tiny timeout still gives every job a minute: ZAP reads 0 as unlimited.
        let tiny = workdir_ctx_plan(WebScanProfile::Standard, 10);
        assert!(!tiny.contains(": 0\n"), "{tiny}");
    }

    #[tokio::test]
    async fn the_zap_command_line_runs_the_plan_inline_and_silently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = loopback_config(true);
        let mongo = lazy_mongo().await;
        let job = web_subjob("http://127.0.0.1:8080/", Some(WebScanProfile::Quick), 600);
        let ctx = JobContext { job: &job, mongo: &mongo, workdir: dir.path().to_path_buf(), config: &config };
        let Plan::Process(spec) = plan(&ctx).await.expect("plan") else { panic!("a process") };
        let w = dir.path().display().to_string();
        assert_eq!(spec.program, "zap.sh");
        assert_eq!(
            spec.args,
            vec![
                "-cmd".to_string(),
                "-silent".into(),
                "-dir".into(),
                format!("{w}/zap-home"),
                "-autorun".into(),
                format!("{w}/zap-plan.yaml")
            ]
        );
        assert_eq!(spec.ok_exit_codes, vec![2]);
        let written = std::fs::read_to_string(dir.path().join(PLAN_FILE)).expect("plan written");
        assert!(written.contains("http://127.0.0.1:8080/") && !written.contains("activeScan"), "{written}");
    }

    #[tokio::test]
    async fn the_zap_plan_refuses_what_the_ssrf_guard_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mongo = lazy_mongo().await;
        let strict = loopback_config(false);
        for (url, expected) in [
            ("http://127.0.0.1:8080/", "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "link-local, metadata"),
            ("file:///etc/passwd", "only http and https"),
        ] {
            let job = web_subjob(url, None, 600);
            let ctx = JobContext { job: &job, mongo: &mongo, workdir: dir.path().to_path_buf(), config: &strict };
            let err = plan(&ctx).await.expect_err(url);
            assert!(err.message.contains(expected), "{url}: {err}");
        }
    }

    pub(crate) fn loopback_config(allow_loopback: bool) -> WorkerConfig {
        let flag = if allow_loopback { "true" } else { "false" };
        WorkerConfig::from_env(cspm_shared::config::Env::from_map([("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", flag)]))
            .expect("config")
    }

    pub(crate) async fn lazy_mongo() -> cspm_shared::db::Mongo {
        // Connects lazily: nothing here talks to a database.
        cspm_shared::db::Mongo::connect("mongodb://127.0.0.1:1", "", "test", std::time::Duration::from_secs(1))
            .await
            .expect("mongo handle")
    }

    pub(crate) fn web_subjob(
        url: &str,
        profile: Option<WebScanProfile>,
        timeout_secs: i64,
    ) -> cspm_shared::store::subjobs::SubJobDoc {
        use cspm_shared::domain::native::NetworkScanType;
        use cspm_shared::domain::scan::Tool;
        use cspm_shared::store::subjobs::{NativeSpec, SubJobDoc};
        let native = NativeSpec {
            target: url.into(),
            ports: None,
            scan_type: NetworkScanType::PortScan,
            web_profile: profile,
            artifact: None,
            scanners: vec![],
        };
        SubJobDoc { timeout_secs, ..cspm_shared::testing::running_native_subjob(Tool::Zap, native) }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut sink = FindingSink::counting();
            let _ = parse_reader(&bytes[..], "fuzz.json", &mut sink);
        }

        #[test]
        fn truncated_or_flipped_fixtures_never_panic(which in 0usize..3, cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
            let mut bytes = std::fs::read(fixture(REPORTS[which])).expect("fixture");
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let end = cut.index(bytes.len() + 1);
            let mut sink = FindingSink::counting();
            let _ = parse_reader(&bytes[..end], "fuzz.json", &mut sink);
        }
    }
}
