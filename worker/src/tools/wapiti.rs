//! Wapiti: web applications, read from its JSON report (`-f json`; the layout of Wapiti 3.0.4, Debian's
//! package: `classifications`, `vulnerabilities`, `anomalies`, `additionals`, `infos`).
//!
//! The plan points Wapiti at the SubJob's URL (checked against the SSRF policy again here, with the
//! check ZAP's adapter uses), keeps its session, configuration and home inside the SubJob's directory,
//! forces English (its category names are translated, and the CWE table below matches the English ones)
//! and never uses Wapiti's public endpoint: modules that need the internet are left out and the
//! out-of-band endpoint is a `.invalid` name, which cannot resolve.
//!
//! Every entry is one finding whose identity is (target origin, category, method, path, parameter,
//! subject): the origin and path are where the request went, without its query (which carries the
//! payload); the subject is Wapiti's `info` for entries without a parameter, because passive checks
//! report several headers or cookies on one path and only `info` tells them apart ("X-Frame-Options is
//! not set", "HttpOnly flag is not set in the cookie : session"); with a parameter, `info` can name
//! payload details and is left out. An identity reported twice (one HTTP 500 met by four modules) is
//! one finding.
//!
//! | Wapiti 3.0.4 category                  | CWE  |
//! |----------------------------------------|------|
//! | Cross Site Scripting                   | 79   |
//! | SQL Injection, Blind SQL Injection     | 89   |
//! | Command execution                      | 78   |
//! | Path Traversal                         | 22   |
//! | CRLF Injection                         | 93   |
//! | XML External Entity                    | 611  |
//! | Server Side Request Forgery            | 918  |
//! | Open Redirect                          | 601  |
//! | Cross Site Request Forgery             | 352  |
//! | Backup file                            | 530  |
//! | Potentially dangerous file             | 538  |
//! | Htaccess Bypass                        | 650  |
//! | Weak credentials                       | 1391 |
//! | Content Security Policy Configuration  | 693  |
//! | HTTP Secure Headers                    | 693; X-Frame-Options 1021; Strict-Transport-Security 319 |
//! | Secure Flag cookie                     | 614  |
//! | HttpOnly Flag cookie                   | 1004 |
//! | Internal Server Error (anomaly)        | 755  |
//! | Resource consumption (anomaly)         | 400  |
//!
//! A category outside the table takes the first `CWE-n` its classification's references name, else it
//! is the advisory `WAPITI-<category>`.
//!
//! Severity is Wapiti's `level`: 0 Informational, 1 Low, 2 Medium, 3 High, 4 Critical (its own
//! `*_LEVEL` constants). Vulnerabilities are Vulnerability Findings. Anomalies (HTTP 500 errors and
//! timeouts met while attacking) are Detection Findings, at most Low: Wapiti itself calls them "items
//! of less importance", and a 500 is a symptom to look at, not a proven weakness. Additionals
//! (technology fingerprints) are Informational Detection Findings.
//!
//! Wapiti 3.0.4 writes a report, and exits 0, even when the target never answered, and its report does
//! not say how many pages it crawled; so the report counts as examined only when it holds an entry or
//! (later versions) names crawled pages. An empty report resolves nothing (the zero-findings guard).
//!
//! `http_request` holds the request as sent, POST body and headers included: only its request line is
//! kept; of `curl_command`, only the URL.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::BufReader;
use std::path::Path;

use bson::doc;
use cspm_shared::domain::finding::{FindingClass, VulnId, Vulnerability};
use cspm_shared::domain::native::WebScanProfile;
use cspm_shared::domain::severity::Severity;
use cspm_shared::store::findings::NewFinding;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::zap::{
    EmitError, LenientField, MAX_EVIDENCE, MAX_FIELD, MAX_TEXT, WebTarget, bounded, checked_web_target, evidence,
    field, identity_hash, page_of, position_error, text, web_endpoint,
};
use super::{FindingSink, JobContext, Plan, ToolError, is_blank_report, open_output};
use crate::config::WorkerConfig;
use crate::runner::ProcessSpec;
use crate::runner::local::find_executable;

/// The report the plan asks Wapiti for.
pub const OUTPUT_FILE: &str = "wapiti.json";
const SESSION_DIR: &str = "wapiti-session";
const CONFIG_DIR: &str = "wapiti-config";
/// Where out-of-band modules (XXE) would tell the target to call back, and where Wapiti would ask for
/// the results: a `.invalid` name (RFC 6761) never resolves, so no scanned application is made to send
/// data to Wapiti's public endpoint.
const NO_ENDPOINT: &str = "http://wapiti-endpoint.invalid/";

/// Passive checks only: headers, cookies, the content security policy.
const QUICK_MODULES: &[&str] = &["cookieflags", "csp", "http_headers"];
/// Wapiti 3.0.4's default modules, less `ssrf` (it needs Wapiti's public endpoint on the internet).
const STANDARD_MODULES: &[&str] =
    &["blindsql", "cookieflags", "csp", "exec", "file", "http_headers", "permanentxss", "redirect", "sql", "xss"];
/// Added for comprehensive scans. Still left out: `ssrf` (the internet), `nikto` and `wapp` (they
/// download their databases from GitHub during the scan) and `brute_login_form` (it tries passwords and
/// can lock real accounts).
const COMPREHENSIVE_EXTRA: &[&str] = &["backup", "buster", "crlf", "csrf", "htaccess", "methods", "shellshock", "xxe"];

pub fn check_available(config: &WorkerConfig) -> Result<(), ToolError> {
    find_executable(&config.wapiti_path).map(|_| ()).ok_or_else(|| {
        ToolError::new(format!(
            "tool `wapiti` is not available on this worker: `{}` was not found (install Wapiti, e.g. the Debian \
             package `wapiti`, or set CSPM_WAPITI_PATH)",
            config.wapiti_path
        ))
    })
}

// ---------------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------------

/// Time limits from the SubJob's timeout. In Wapiti 3.0.4 `--max-scan-time` bounds the crawl and
/// `--max-attack-time` each module, so the attack share is split between the modules; 15% is left for
/// the start and the report. Values under a second would switch the limits off (Wapiti ignores them),
/// so none is. The runner's timeout stays the hard stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WapitiBudget {
    crawl_secs: u64,
    attack_secs: u64,
}

impl WapitiBudget {
    fn of(timeout_secs: i64, modules: usize) -> Self {
        let usable = u64::try_from(timeout_secs).unwrap_or(0).max(10) * 85 / 100;
        let crawl_secs = (usable / 4).max(1);
        let attack_secs = ((usable - crawl_secs) / (modules.max(1) as u64)).max(1);
        Self { crawl_secs, attack_secs }
    }
}

fn modules(profile: WebScanProfile) -> Vec<&'static str> {
    match profile {
        WebScanProfile::Quick => QUICK_MODULES.to_vec(),
        WebScanProfile::Standard => STANDARD_MODULES.to_vec(),
        WebScanProfile::Comprehensive => {
            let mut all: Vec<&str> = STANDARD_MODULES.iter().chain(COMPREHENSIVE_EXTRA).copied().collect();
            all.sort_unstable();
            all
        }
    }
}

fn arguments(target: &WebTarget, profile: WebScanProfile, workdir: &Path, timeout_secs: i64) -> Vec<String> {
    let modules = modules(profile);
    let budget = WapitiBudget::of(timeout_secs, modules.len());
    let depth = match profile {
        WebScanProfile::Quick => 2,
        WebScanProfile::Standard => 5,
        WebScanProfile::Comprehensive => 10,
    };
    let dir = |name: &str| workdir.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "-u".into(),
        target.url(),
        // The URL's folder and below: never `domain` or `punk`, which reach other hosts.
        "--scope".into(),
        "folder".into(),
        "-m".into(),
        modules.join(","),
        "-d".into(),
        depth.to_string(),
        "--max-scan-time".into(),
        budget.crawl_secs.to_string(),
        "--max-attack-time".into(),
        budget.attack_secs.to_string(),
        "-f".into(),
        "json".into(),
        "-o".into(),
        dir(OUTPUT_FILE),
        "--flush-session".into(),
        "--store-session".into(),
        dir(SESSION_DIR),
        "--store-config".into(),
        dir(CONFIG_DIR),
        "--endpoint".into(),
        NO_ENDPOINT.into(),
        // A crashing module would otherwise upload its traceback (with the target's URL) to wapiti3.ovh.
        "--no-bugreport".into(),
        "-v".into(),
        "0".into(),
    ];
    if profile == WebScanProfile::Comprehensive {
        // Level 2 also injects into whole query strings.
        args.extend(["-l".into(), "2".into()]);
    }
    args
}

/// `wapiti -u <url> --scope folder -m <modules> -d <depth> --max-scan-time <s> --max-attack-time <s>
/// -f json -o <workdir>/wapiti.json --flush-session --store-session … --store-config …
/// --endpoint http://wapiti-endpoint.invalid/ --no-bugreport -v 0`. Wapiti 3.0.4 checks for no updates
/// by itself (only `--update` does).
pub async fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let (target, profile) = checked_web_target(ctx).await?;
    let workdir = ctx.workdir.display().to_string();
    Ok(Plan::Process(ProcessSpec {
        program: ctx.config.wapiti_path.clone(),
        args: arguments(&target, profile, &ctx.workdir, ctx.job.timeout_secs),
        env: vec![
            // Wapiti keeps its default session and report copies under HOME: the SubJob's directory.
            ("HOME".into(), workdir),
            // Category names are translated from the locale: the CWE table is keyed on the English ones.
            ("LANG".into(), "en_US.UTF-8".into()),
            ("LC_ALL".into(), "en_US.UTF-8".into()),
        ],
        workdir: ctx.workdir.clone(),
        ok_exit_codes: vec![],
        secret_files: vec![],
        mounts: vec![],
    }))
}

// ---------------------------------------------------------------------------------------------------
// Parse
// ---------------------------------------------------------------------------------------------------

/// What a category is: its description, solution and references.
#[derive(Deserialize, Default)]
struct Classification {
    #[serde(default, deserialize_with = "text")]
    desc: String,
    #[serde(default, deserialize_with = "text")]
    sol: String,
    /// Title → URL.
    #[serde(rename = "ref", default, deserialize_with = "bounded_references")]
    refs: Option<BTreeMap<String, LenientField>>,
}

/// References kept per category. Wapiti names a handful, and every finding of the category carries
/// them: an unbounded list would cost (entries × references) in time and memory.
const MAX_REFERENCES: usize = 32;

/// A category's `ref` object, at most `MAX_REFERENCES` of it (the rest is skipped).
fn bounded_references<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, LenientField>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<BTreeMap<String, LenientField>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of reference titles and URLs")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(title) = map.next_key::<String>()? {
                if out.len() < MAX_REFERENCES {
                    out.insert(title, map.next_value::<LenientField>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(V)
}

/// One vulnerability, anomaly or additional, as the generator writes it.
#[derive(Deserialize)]
struct Entry {
    #[serde(default, deserialize_with = "field")]
    method: String,
    #[serde(default, deserialize_with = "field")]
    path: String,
    #[serde(default, deserialize_with = "evidence")]
    info: String,
    #[serde(default, deserialize_with = "field")]
    level: String,
    #[serde(default, deserialize_with = "field")]
    parameter: String,
    #[serde(default, deserialize_with = "request_line")]
    http_request: String,
    #[serde(default, deserialize_with = "curl_url")]
    curl_command: String,
    /// Later versions name the module.
    #[serde(default, deserialize_with = "field")]
    module: String,
    /// Later versions cite OWASP WSTG ids.
    #[serde(default)]
    wstg: Option<StringList>,
}

#[derive(Deserialize, Default)]
struct Infos {
    #[serde(default, deserialize_with = "field")]
    target: String,
    #[serde(default, deserialize_with = "field")]
    version: String,
    /// Later versions: how many pages were crawled.
    #[serde(default)]
    crawled_pages_nbr: Option<u64>,
    /// Later versions: the crawled pages themselves (counted, not kept).
    #[serde(default)]
    crawled_pages: Option<Counted>,
}

/// The length of an array, without keeping its elements.
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Counted;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counted, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Counted(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A string or a list of strings.
struct StringList(Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![bounded(v, MAX_FIELD)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<LenientField>()? {
                    if out.len() < 32 {
                        out.push(s.0);
                    }
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Keeps only the request line of `http_request` (`GET /search?q=… HTTP/1.1`): the rest is headers and
/// the POST body, which may carry cookies, tokens and passwords.
fn request_line<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an HTTP request as text")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(bounded(v.lines().next().unwrap_or_default().trim(), MAX_EVIDENCE))
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(V)
}

/// Keeps only the URL of `curl_command` (`curl "<url>" -e "<referer>" -d "<body>"`): the body may
/// carry credentials. The URL is shell-escaped inside double quotes (`\\`, `\"`, `\$`, `` \` ``, `\!`).
fn curl_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a curl command as text")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            let Some(rest) = v.trim_start().strip_prefix("curl \"") else { return Ok(String::new()) };
            let mut url = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Ok(bounded(&url, MAX_FIELD)),
                    '\\' => url.extend(chars.next()),
                    c => url.push(c),
                }
                if url.len() > MAX_FIELD {
                    break;
                }
            }
            Ok(String::new()) // unterminated: no URL
        }
        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vulnerability,
    Anomaly,
    Additional,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Vulnerability => "vulnerability",
            Kind::Anomaly => "anomaly",
            Kind::Additional => "additional",
        }
    }
}

struct Parser<'a> {
    sink: &'a mut FindingSink,
    classifications: BTreeMap<String, Classification>,
    /// `infos.target`, when the report names it before its entries (3.0.4 names it last).
    target: Option<WebTarget>,
    version: Option<String>,
    seen: HashSet<u64>,
    /// Entries read, duplicates included: evidence that Wapiti reached the target.
    entries: u64,
    crawled: u64,
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

    fn emit(&mut self, kind: Kind, category: &str, e: Entry) -> Result<(), EmitError> {
        self.entries += 1;
        let level = e.level.trim();
        let level_severity = level_severity(level).ok_or_else(|| {
            EmitError::Report(format!("a `{category}` entry has level `{level}` (expected 0, 1, 2, 3 or 4)"))
        })?;
        let severity = match kind {
            Kind::Vulnerability => level_severity,
            Kind::Anomaly => level_severity.min(Severity::Low),
            Kind::Additional => Severity::Informational,
        };
        // Where the request went: its own URL, else the report's target.
        let site = match WebTarget::parse(&e.curl_command) {
            Ok(t) => t,
            Err(_) => self.target.clone().ok_or_else(|| {
                EmitError::Report(format!(
                    "a `{category}` entry has no curl_command URL, and the report has not named its target before it"
                ))
            })?,
        };
        let origin = site.origin();
        let method = e.method.trim().to_ascii_uppercase();
        let path = match e.path.trim() {
            "" => page_of(&site.path).to_string(),
            p => p.to_string(),
        };
        let parameter = e.parameter.trim().to_string();
        let info = e.info.trim().to_string();
        let subject = if parameter.is_empty() { info.clone() } else { String::new() };
        let identity =
            vec![origin.clone(), category.to_string(), method.clone(), path.clone(), parameter.clone(), subject];
        if !self.seen.insert(identity_hash(&identity)) {
            return Ok(());
        }
        let slug = slug(category);
        let class = self.classifications.get(category);
        let cwe = cwe_for(category, &info).or_else(|| class.and_then(cwe_in_references));
        let mut references: Vec<String> = Vec::new();
        for url in class.and_then(|c| c.refs.as_ref()).into_iter().flat_map(|r| r.values()) {
            let url = url.0.trim();
            if url.starts_with("http") && !references.iter().any(|r| r == url) {
                references.push(url.to_string());
            }
        }
        let class_desc = class.map(|c| c.desc.trim().to_string()).unwrap_or_default();
        let description = [info.as_str(), class_desc.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("\n\n");
        let title = if !parameter.is_empty() {
            format!("{category} on {path} ({parameter})")
        } else if !info.is_empty() {
            format!("{category} on {path}: {info}")
        } else {
            format!("{category} on {path}")
        };
        let page_url = format!("{origin}{path}");
        let mut details = doc! {
            "category": category,
            "kind": kind.as_str(),
            "level": level.parse::<i64>().unwrap_or_default(),
        };
        for (key, value) in
            [("parameter", &parameter), ("info", &info), ("request_line", &e.http_request), ("module", &e.module)]
        {
            if !value.trim().is_empty() {
                details.insert(key, value.as_str());
            }
        }
        if let Some(list) = e.wstg.filter(|l| !l.0.is_empty()) {
            details.insert("wstg", list.0);
        }
        if let Some(n) = cwe {
            details.insert("cwe", format!("CWE-{n}"));
        }
        if let Some(v) = &self.version {
            details.insert("wapiti_version", v.as_str());
        }
        let vulnerabilities = if kind == Kind::Vulnerability {
            let id = cwe.map(VulnId::cwe).unwrap_or_else(|| VulnId::Advisory(format!("WAPITI-{slug}")));
            let mut v = Vulnerability::new(id, category, severity);
            v.description = class_desc.clone();
            v.references = references.clone();
            vec![v]
        } else {
            vec![]
        };
        let finding = NewFinding {
            class: if kind == Kind::Vulnerability { FindingClass::Vulnerability } else { FindingClass::Detection },
            rule_id: format!("wapiti.{slug}"),
            title: bounded(&title, 512),
            description: bounded(&description, MAX_TEXT),
            severity,
            resource_uid: page_url.clone(),
            resource_type: "web_page".into(),
            resource_name: Some(origin),
            service: Some(site.scheme().into()),
            identity,
            remediation: class.map(|c| c.sol.trim().to_string()).filter(|s| !s.is_empty()),
            references,
            vulnerabilities,
            endpoint: Some(web_endpoint(&site.host, Some(site.port_or_default()), site.https, page_url, &method)),
            details,
            ..NewFinding::default()
        };
        self.sink.push(finding).map_err(EmitError::Store)
    }
}

/// Wapiti level → severity (see the module comment).
fn level_severity(level: &str) -> Option<Severity> {
    match level {
        "0" => Some(Severity::Informational),
        "1" => Some(Severity::Low),
        "2" => Some(Severity::Medium),
        "3" => Some(Severity::High),
        "4" => Some(Severity::Critical),
        _ => None,
    }
}

/// The CWE of a Wapiti 3.0.4 category (the table of the module comment).
fn cwe_for(category: &str, info: &str) -> Option<u32> {
    Some(match category {
        "Cross Site Scripting" => 79,
        "SQL Injection" | "Blind SQL Injection" => 89,
        "Command execution" => 78,
        "Path Traversal" => 22,
        "CRLF Injection" => 93,
        "XML External Entity" => 611,
        "Server Side Request Forgery" => 918,
        "Open Redirect" => 601,
        "Cross Site Request Forgery" => 352,
        "Backup file" => 530,
        "Potentially dangerous file" => 538,
        // Wapiti's own reference (CWE-538) is about exposed files; the check is a custom HTTP method
        // getting past an access restriction.
        "Htaccess Bypass" => 650,
        // Wapiti cites CWE-798 and CWE-521; the check finds accounts with guessable passwords.
        "Weak credentials" => 1391,
        "Content Security Policy Configuration" => 693,
        "HTTP Secure Headers" if info.contains("X-Frame-Options") => 1021,
        "HTTP Secure Headers" if info.contains("Strict-Transport-Security") => 319,
        "HTTP Secure Headers" => 693,
        "Secure Flag cookie" => 614,
        "HttpOnly Flag cookie" => 1004,
        "Internal Server Error" => 755,
        "Resource consumption" => 400,
        _ => return None,
    })
}

/// The first `CWE-n` a classification's reference titles name.
fn cwe_in_references(class: &Classification) -> Option<u32> {
    class.refs.as_ref()?.keys().find_map(|title| {
        let digits: String = title.trim().strip_prefix("CWE-")?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// `Cross Site Scripting` → `cross_site_scripting`.
fn slug(category: &str) -> String {
    let mut out = String::new();
    for c in category.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_');
    if out.is_empty() { "unknown".into() } else { out.to_string() }
}

struct ReportVisitor<'p, 'a> {
    parser: &'p mut Parser<'a>,
}

impl<'de> Visitor<'de> for ReportVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Wapiti JSON report (an object with `vulnerabilities` and `infos`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut saw_vulnerabilities = false;
        let mut infos: Option<Infos> = None;
        while let Some(key) = map.next_key::<String>()? {
            let kind = match key.as_str() {
                "classifications" => {
                    self.parser.classifications = map.next_value()?;
                    continue;
                }
                "infos" => {
                    let i: Infos = map.next_value()?;
                    self.parser.target = WebTarget::parse(&i.target).ok();
                    self.parser.version = Some(i.version.clone()).filter(|v| !v.is_empty());
                    infos = Some(i);
                    continue;
                }
                "vulnerabilities" => {
                    saw_vulnerabilities = true;
                    Kind::Vulnerability
                }
                "anomalies" => Kind::Anomaly,
                "additionals" => Kind::Additional,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            map.next_value_seed(CategoriesSeed { parser: &mut *self.parser, kind })?;
        }
        let Some(infos) = infos.filter(|i| !i.target.trim().is_empty()) else {
            return Err(de::Error::custom("this JSON is not a Wapiti report: it has no `infos.target`"));
        };
        if !saw_vulnerabilities {
            return Err(de::Error::custom("this JSON is not a Wapiti report: it has no `vulnerabilities`"));
        }
        self.parser.crawled = infos.crawled_pages_nbr.unwrap_or(0).max(infos.crawled_pages.map_or(0, |c| c.0));
        Ok(())
    }
}

struct CategoriesSeed<'p, 'a> {
    parser: &'p mut Parser<'a>,
    kind: Kind,
}

impl<'de> DeserializeSeed<'de> for CategoriesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CategoriesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of categories, each a list of entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(category) = map.next_key::<String>()? {
            let category = bounded(category.trim(), 256);
            map.next_value_seed(EntriesSeed { parser: &mut *self.parser, kind: self.kind, category: &category })?;
        }
        Ok(())
    }
}

struct EntriesSeed<'p, 'a, 'c> {
    parser: &'p mut Parser<'a>,
    kind: Kind,
    category: &'c str,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entry) = seq.next_element::<Entry>()? {
            if let Err(e) = self.parser.emit(self.kind, self.category, entry) {
                return Err(self.parser.fail(e));
            }
        }
        Ok(())
    }
}

/// Finds Wapiti's report in the SubJob's directory (the name the plan gave it).
pub fn parse(workdir: &Path, max_bytes: u64, sink: &mut FindingSink) -> Result<(), ToolError> {
    let path = workdir.join(OUTPUT_FILE);
    if !path.exists() {
        return Err(ToolError::new(format!("Wapiti wrote no report ({} is missing; see its output)", path.display())));
    }
    let file = open_output(&path, max_bytes)?;
    parse_reader(BufReader::new(file), &path.display().to_string(), sink)
}

/// Streams the report: the classifications (a few dozen) are kept, entries go one at a time.
pub fn parse_reader<R: std::io::BufRead>(mut input: R, name: &str, sink: &mut FindingSink) -> Result<(), ToolError> {
    let blank = is_blank_report(&mut input)
        .map_err(|e| ToolError::new(format!("{name}: cannot read the Wapiti report: {e}")))?;
    if blank {
        return Err(ToolError::new(format!("{name}: the Wapiti report is empty (Wapiti stopped before writing it)")));
    }
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut parser = Parser {
        sink: &mut *sink,
        classifications: BTreeMap::new(),
        target: None,
        version: None,
        seen: HashSet::new(),
        entries: 0,
        crawled: 0,
        failure: None,
    };
    let result = (&mut de).deserialize_map(ReportVisitor { parser: &mut parser });
    if let Some(failure) = parser.failure.take() {
        return Err(failure);
    }
    result.map_err(|e| position_error(name, "Wapiti JSON report", &e))?;
    de.end().map_err(|e| position_error(name, "Wapiti JSON report", &e))?;
    let examined = parser.entries > 0 || parser.crawled > 0;
    if examined {
        sink.count_examined(1);
    }
    sink.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::zap::tests::{assert_valid_ocsf, lazy_mongo, loopback_config, schema, summary, web_subjob};
    use proptest::prelude::*;
    use std::io::BufRead as _;
    use std::time::{Duration, Instant};
    use tokio::sync::mpsc;

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/wapiti").join(name)
    }

    const STANDARD_REPORT: &str = "wapiti-3.0.4-standard.json";
    const UNREACHABLE_REPORT: &str = "wapiti-3.0.4-unreachable.json";

    fn parse_bytes(bytes: &[u8], name: &str) -> Result<(Vec<NewFinding>, u64), ToolError> {
        let (tx, mut rx) = mpsc::channel(100_000);
        let mut sink = FindingSink::new(tx, 4);
        let r = parse_reader(bytes, name, &mut sink);
        let examined = sink.examined;
        drop(sink);
        let mut all = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            all.extend(batch);
        }
        r.map(|()| (all, examined))
    }

    fn parse_testdata(name: &str) -> (Vec<NewFinding>, u64) {
        let bytes = std::fs::read(testdata(name)).expect("test data");
        parse_bytes(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A fuzz target's finding (`fuzz/`), kept as a regression input.
    fn fuzz_input(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz").join(name)).expect("fuzz input")
    }

    #[test]
    fn fuzz_a_category_with_thousands_of_references_gives_each_finding_a_bounded_list() {
        // 30 entries of one category that lists 3,000 references: every entry de-duplicated all of
        // them against each other (over the fuzz target's 10 s timeout), and every finding carried them.
        let (found, _) = parse_bytes(&fuzz_input("wapiti-many-references.bin"), "refs.json").expect("parses");
        assert_eq!(found.len(), 30);
        assert!(found.iter().all(|f| f.references.len() == MAX_REFERENCES), "{:?}", found[0].references);
        assert!(found.iter().all(|f| f.vulnerabilities[0].references.len() == MAX_REFERENCES));
    }

    fn find<'f>(found: &'f [NewFinding], rule: &str, path: &str, param: &str) -> &'f NewFinding {
        found
            .iter()
            .find(|f| f.rule_id == rule && f.identity[3] == path && f.identity[4] == param)
            .unwrap_or_else(|| panic!("no {rule} at {path} ({param}) in {:#?}", summary(found)))
    }

    fn cwe(f: &NewFinding) -> Option<&str> {
        f.details.get_str("cwe").ok()
    }

    #[test]
    fn the_saved_wapiti_report_parses_renders_valid_ocsf_and_matches_its_snapshot() {
        let (found, examined) = parse_testdata(STANDARD_REPORT);
        assert_eq!(examined, 1);
        assert_valid_ocsf("wapiti", &found, &schema());
        insta::assert_json_snapshot!("wapiti_3_0_4_standard", summary(&found));
    }

    #[test]
    fn categories_map_to_cwes_and_levels_to_severities() {
        let (found, _) = parse_testdata(STANDARD_REPORT);
        let xss = find(&found, "wapiti.cross_site_scripting", "/search", "q");
        assert_eq!(xss.class, FindingClass::Vulnerability);
        assert_eq!(xss.vulnerabilities[0].id, VulnId::cwe(79));
        assert_eq!(xss.severity, Severity::Medium, "Wapiti 3.0.4 reports reflected XSS at level 2");
        assert!(xss.references.iter().any(|r| r == "https://cwe.mitre.org/data/definitions/79.html"));
        assert!(xss.remediation.as_deref().is_some_and(|r| r.contains("encoding")));
        let endpoint = xss.endpoint.as_ref().expect("endpoint");
        assert_eq!(endpoint.http_method.as_deref(), Some("GET"));
        assert_eq!(endpoint.ip.as_deref(), Some("127.0.0.1"));
        assert!(endpoint.url.as_deref().is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.ends_with("/search")));
        let post = find(&found, "wapiti.cross_site_scripting", "/feedback", "comment");
        assert_eq!(post.endpoint.as_ref().and_then(|e| e.http_method.as_deref()), Some("POST"));
        assert_eq!(post.details.get_str("request_line").ok(), Some("POST /feedback HTTP/1.1"));
        let sql = find(&found, "wapiti.sql_injection", "/item", "id");
        assert_eq!((sql.vulnerabilities[0].id.clone(), sql.severity), (VulnId::cwe(89), Severity::Critical));
        let frame = found.iter().find(|f| f.title.contains("X-Frame-Options")).expect("X-Frame-Options");
        assert_eq!(frame.vulnerabilities[0].id, VulnId::cwe(1021));
        let hsts = found.iter().find(|f| f.title.contains("Strict-Transport-Security")).expect("HSTS");
        assert_eq!(hsts.vulnerabilities[0].id, VulnId::cwe(319));
        let headers = found.iter().filter(|f| f.rule_id == "wapiti.http_secure_headers").count();
        assert_eq!(headers, 4, "four headers on one path stay four findings");
        let cookie = find(&found, "wapiti.httponly_flag_cookie", "/", "");
        assert_eq!(cookie.vulnerabilities[0].id, VulnId::cwe(1004));
        assert_eq!(find(&found, "wapiti.secure_flag_cookie", "/", "").vulnerabilities[0].id, VulnId::cwe(614));
        // Four modules met the same HTTP 500: one Detection finding, at most Low.
        let errors: Vec<&NewFinding> = found.iter().filter(|f| f.rule_id == "wapiti.internal_server_error").collect();
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].class, errors[0].severity), (FindingClass::Detection, Severity::Low));
        assert_eq!((cwe(errors[0]), errors[0].details.get_i64("level").ok()), (Some("CWE-755"), Some(3)));
        // Credentials and bodies of the requests are never kept.
        for f in &found {
            let all = serde_json::to_string(f).expect("json");
            assert!(!all.contains("s3cr3t-form-token") && !all.contains("Host:"), "{all}");
        }
    }

    #[test]
    fn a_report_of_an_unreachable_target_examined_nothing() {
        let (found, examined) = parse_testdata(UNREACHABLE_REPORT);
        assert_eq!((found.len(), examined), (0, 0));
    }

    #[test]
    fn later_layouts_with_crawled_pages_and_modules_parse() {
        let report = br#"{"vulnerabilities": {"Reflected Cross Site Scripting": [{"method": "GET", "path": "/s",
            "info": "XSS", "level": 2, "parameter": "q", "module": "xss", "wstg": ["WSTG-INPV-01"],
            "http_request": "GET /s?q=x HTTP/1.1\nCookie: secret", "curl_command": "curl \"https://a.example:8443/s?q=\\\"x\\\"\""}]},
            "classifications": {"Reflected Cross Site Scripting": {"desc": "d", "sol": "s",
            "ref": {"CWE-79: Improper Neutralization": "https://cwe.mitre.org/data/definitions/79.html"}}},
            "anomalies": {}, "additionals": {},
            "infos": {"target": "https://a.example:8443/", "version": "Wapiti 3.1.8", "scope": "folder",
            "crawled_pages_nbr": 3, "crawled_pages": [{"request": {}}, {"request": {}}]}}"#;
        let (found, examined) = parse_bytes(report, "new.json").expect("parses");
        assert_eq!((found.len(), examined), (1, 1));
        let f = &found[0];
        // Classifications after the entries: the CWE comes from the name table or is an advisory then.
        assert_eq!(f.vulnerabilities[0].id, VulnId::Advisory("WAPITI-reflected_cross_site_scripting".into()));
        assert_eq!(f.identity, vec!["https://a.example:8443", "Reflected Cross Site Scripting", "GET", "/s", "q", ""]);
        assert_eq!(f.details.get_str("module").ok(), Some("xss"));
        assert_eq!(f.details.get_str("request_line").ok(), Some("GET /s?q=x HTTP/1.1"));
        assert_eq!(f.endpoint.as_ref().and_then(|e| e.port), Some(8443));
        let crawled_only = br#"{"vulnerabilities": {}, "infos": {"target": "http://a/", "crawled_pages_nbr": 5}}"#;
        let (none, examined) = parse_bytes(crawled_only, "clean.json").expect("parses");
        assert_eq!((none.len(), examined), (0, 1), "a clean report with crawled pages is a verified empty result");
    }

    #[test]
    fn unknown_categories_take_the_cwe_their_references_name() {
        let report = br#"{"classifications": {"Brand New Check": {"desc": "d", "sol": "s",
            "ref": {"CWE-1336: Template injection": "https://cwe.mitre.org/data/definitions/1336.html"}}},
            "vulnerabilities": {"Brand New Check": [{"method": "GET", "path": "/", "info": "i", "level": "3",
            "parameter": "", "http_request": "GET / HTTP/1.1", "curl_command": "curl \"http://a.example/\""}]},
            "anomalies": {}, "additionals": {}, "infos": {"target": "http://a.example/"}}"#;
        let (found, _) = parse_bytes(report, "new.json").expect("parses");
        assert_eq!((found[0].vulnerabilities[0].id.clone(), found[0].severity), (VulnId::cwe(1336), Severity::High));
    }

    #[test]
    fn truncated_foreign_and_malformed_reports_are_errors_naming_the_file_and_position() {
        for name in [STANDARD_REPORT, UNREACHABLE_REPORT] {
            let bytes = std::fs::read(testdata(name)).expect("test data");
            let mut sink = FindingSink::counting();
            let err = parse_reader(&bytes[..bytes.len() / 2], name, &mut sink).expect_err("truncated");
            assert!(
                err.message.contains(name) && err.message.contains("truncated") && err.message.contains("line "),
                "{err}"
            );
        }
        let zap = std::fs::read(crate::tools::zap::tests::fixture("bcgov/zap_2.14.0_itsecgames.json")).expect("zap");
        let mut sink = FindingSink::counting();
        let err = parse_reader(&zap[..], "zap.json", &mut sink).expect_err("not Wapiti");
        assert!(
            err.message.contains("zap.json")
                && err.message.contains("not a Wapiti report")
                && err.message.contains("line"),
            "{err}"
        );
        let bad_level =
            br#"{"vulnerabilities": {"SQL Injection": [{"level": "9", "curl_command": "curl \"http://a/\""}]},
            "infos": {"target": "http://a/"}}"#;
        let err = parse_reader(&bad_level[..], "level.json", &mut sink).expect_err("bad level");
        assert!(err.message.contains("level `9`") && err.message.contains("line 1"), "{err}");
        let err = parse_reader(&b"\"just a string\""[..], "s.json", &mut sink).expect_err("string");
        assert!(err.message.contains("s.json") && err.message.contains("column"), "{err}");
        let err = parse_reader(&b""[..], "e.json", &mut sink).expect_err("empty");
        assert!(err.message.contains("empty"), "{err}");
    }

    fn args_for(profile: WebScanProfile, timeout_secs: i64) -> Vec<String> {
        let target = WebTarget::parse("http://127.0.0.1:8080/app/").expect("target");
        arguments(&target, profile, Path::new("/out/sj1"), timeout_secs)
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
    }

    #[test]
    fn the_wapiti_command_line_follows_the_profile_and_the_timeout() {
        let standard = args_for(WebScanProfile::Standard, 600);
        assert_eq!(
            standard,
            [
                "-u",
                "http://127.0.0.1:8080/app/",
                "--scope",
                "folder",
                "-m",
                "blindsql,cookieflags,csp,exec,file,http_headers,permanentxss,redirect,sql,xss",
                "-d",
                "5",
                "--max-scan-time",
                "127",
                "--max-attack-time",
                "38",
                "-f",
                "json",
                "-o",
                "/out/sj1/wapiti.json",
                "--flush-session",
                "--store-session",
                "/out/sj1/wapiti-session",
                "--store-config",
                "/out/sj1/wapiti-config",
                "--endpoint",
                "http://wapiti-endpoint.invalid/",
                "--no-bugreport",
                "-v",
                "0",
            ]
        );
        let quick = args_for(WebScanProfile::Quick, 600);
        assert_eq!(value_of(&quick, "-m"), Some("cookieflags,csp,http_headers"));
        assert_eq!((value_of(&quick, "-d"), value_of(&quick, "--max-attack-time")), (Some("2"), Some("127")));
        let comprehensive = args_for(WebScanProfile::Comprehensive, 3600);
        let modules = value_of(&comprehensive, "-m").expect("modules");
        for m in ["xxe", "buster", "backup", "crlf"] {
            assert!(modules.split(',').any(|x| x == m), "{modules}");
        }
        assert_eq!(value_of(&comprehensive, "-l"), Some("2"));
        for args in [&standard, &quick, &comprehensive] {
            let modules = value_of(args, "-m").expect("modules");
            for never in ["ssrf", "nikto", "wapp", "brute_login_form"] {
                assert!(!modules.split(',').any(|m| m == never), "{never} in {modules}");
            }
        }
        // Limits never drop under a second, which Wapiti would read as "no limit".
        let tiny = args_for(WebScanProfile::Comprehensive, 1);
        assert_eq!((value_of(&tiny, "--max-scan-time"), value_of(&tiny, "--max-attack-time")), (Some("2"), Some("1")));
    }

    #[tokio::test]
    async fn the_wapiti_plan_refuses_what_the_ssrf_guard_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mongo = lazy_mongo().await;
        let strict = loopback_config(false);
        let open = loopback_config(true);
        for (url, config, expected) in [
            ("http://127.0.0.1:8080/", &strict, "loopback"),
            ("http://localhost/", &strict, "loopback"),
            ("http://169.254.169.254/latest/meta-data/", &open, "link-local, metadata"),
            ("http://[fe80::1]/", &open, "link-local, metadata"),
            ("file:///etc/passwd", &open, "only http and https"),
            ("gopher://127.0.0.1/", &open, "only http and https"),
            ("http://admin:pw@127.0.0.1/", &open, "credentials"),
        ] {
            let job = web_subjob(url, None, 600);
            let ctx = JobContext { job: &job, mongo: &mongo, workdir: dir.path().to_path_buf(), config };
            let err = plan(&ctx).await.expect_err(url);
            assert!(err.message.contains(expected), "{url}: {err}");
        }
        let job = web_subjob("http://127.0.0.1:8080/", Some(WebScanProfile::Quick), 600);
        let ctx = JobContext { job: &job, mongo: &mongo, workdir: dir.path().to_path_buf(), config: &open };
        let Plan::Process(spec) = plan(&ctx).await.expect("loopback allowed") else { panic!("a process") };
        assert_eq!(spec.program, "wapiti");
        assert!(spec.env.iter().any(|(k, v)| k == "LANG" && v == "en_US.UTF-8"));
        assert!(spec.env.iter().any(|(k, v)| k == "HOME" && Path::new(v) == dir.path()));
    }

    /// The deliberately vulnerable app of `testdata/wapiti/vulnerable_app.py`, on 127.0.0.1 at a port the
    /// kernel chose; stopped when dropped.
    struct VulnerableApp {
        child: std::process::Child,
        port: u16,
    }

    impl VulnerableApp {
        fn start() -> Self {
            let mut child = std::process::Command::new("python3")
                .arg(testdata("vulnerable_app.py"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("python3 starts the vulnerable app (install python3)");
            let mut line = String::new();
            let stdout = child.stdout.take().expect("stdout");
            std::io::BufReader::new(stdout).read_line(&mut line).expect("the app prints its port");
            let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok());
            let Some(port) = port else {
                let _ = child.kill();
                panic!("the vulnerable app did not print its port: {line:?}");
            };
            Self { child, port }
        }
    }

    impl Drop for VulnerableApp {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_real_wapiti_scan_finds_the_reflected_xss_of_a_vulnerable_app() {
        assert!(
            find_executable("wapiti").is_some(),
            "wapiti is not installed: this test runs a real scan; install it (apt-get install wapiti, Debian's 3.0.4)"
        );
        let app = VulnerableApp::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = loopback_config(true);
        let mongo = lazy_mongo().await;
        let url = format!("http://127.0.0.1:{}/", app.port);
        let job = web_subjob(&url, Some(WebScanProfile::Standard), 300);
        let ctx = JobContext { job: &job, mongo: &mongo, workdir: dir.path().to_path_buf(), config: &config };
        let Plan::Process(spec) = plan(&ctx).await.expect("plan") else { panic!("a process") };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
        let started = Instant::now();
        let report = crate::runner::local::run(&spec, job.timeout(), stop_rx).await.expect("wapiti runs");
        let took = started.elapsed();
        drop(stop_tx);
        assert!(report.succeeded(&spec), "{:?}\n{}", report.exit, report.output_tail);
        eprintln!("wapiti (standard profile) scanned the vulnerable app in {took:.1?}");
        assert!(took < Duration::from_secs(120), "the scan took {took:?}");
        let mut counting = FindingSink::counting();
        super::parse(dir.path(), 64 << 20, &mut counting).expect("the report parses");
        assert_eq!(counting.examined, 1);
        let file = std::fs::File::open(dir.path().join(OUTPUT_FILE)).expect("report");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::BufReader::new(file), &mut bytes).expect("read");
        // The sink hands batches over with a blocking send: parse off the runtime, as the pipeline does.
        let (found, _) = tokio::task::spawn_blocking(move || parse_bytes(&bytes, OUTPUT_FILE))
            .await
            .expect("joins")
            .expect("parses");
        let xss = find(&found, "wapiti.cross_site_scripting", "/search", "q");
        assert_eq!(xss.vulnerabilities[0].id, VulnId::cwe(79));
        assert_eq!(xss.identity[0], format!("http://127.0.0.1:{}", app.port));
        assert_eq!(find(&found, "wapiti.sql_injection", "/item", "id").vulnerabilities[0].id, VulnId::cwe(89));
        assert!(found.iter().all(|f| !serde_json::to_string(f).expect("json").contains("s3cr3t-form-token")));
        assert_valid_ocsf("wapiti", &found, &schema());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut sink = FindingSink::counting();
            let _ = parse_reader(&bytes[..], "fuzz.json", &mut sink);
        }

        #[test]
        fn truncated_or_flipped_reports_never_panic(cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
            let mut bytes = std::fs::read(testdata(STANDARD_REPORT)).expect("test data");
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
