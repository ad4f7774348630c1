//! Findings: `/api/cspm/findings` (list, detail, grouped by check, stats) and the lifecycle actions a
//! person takes (`resolve`, `suppress`, `unsuppress`). Every query is the caller's team's.

use axum::Json;
use axum::extract::{Path, State};
use bson::{Bson, Document, doc};
use cspm_shared::domain::finding::{FindingClass, FindingStatus, SUPPRESSION_WINDOWS_DAYS};
use cspm_shared::domain::provider::Provider;
use cspm_shared::domain::scan::Tool;
use cspm_shared::domain::severity::Severity;
use std::collections::BTreeMap;

use cspm_shared::ids::{AccountId, RunId, UserId};
use cspm_shared::store::findings::{self, ChangeError, FindingDoc};
use cspm_shared::time::Timestamp;
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page};
use crate::openapi::Object;
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, bson_to_json, rfc3339, rfc3339_opt};
use crate::state::AppState;

#[derive(Deserialize, Default, JsonSchema)]
pub struct FindingsQuery {
    account_id: Option<String>,
    provider: Option<String>,
    /// One severity or several, comma-separated.
    severity: Option<String>,
    /// A lifecycle status, several comma-separated, or `fail` (open and reopened) / `pass`.
    status: Option<String>,
    service: Option<String>,
    region: Option<String>,
    tool: Option<String>,
    /// `detection`, `vulnerability` or `compliance`.
    class: Option<String>,
    rule_id: Option<String>,
    /// Alias of `rule_id` (the seed's name).
    check_id: Option<String>,
    run_id: Option<String>,
    cve: Option<String>,
    /// Case-insensitive text in the title, rule, resource or description.
    search: Option<String>,
    /// `severity` (default), `last_seen`, `first_seen`, `title`, `rule_id`.
    sort: Option<String>,
    /// `desc` (default) or `asc`.
    order: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

fn too_long(field: &str, v: &str) -> Result<(), ApiError> {
    if v.len() > 256 { Err(ApiError::invalid(field, "is too long (at most 256 characters)")) } else { Ok(()) }
}

/// Escapes a user's text for a regular expression, so that search is literal.
fn literal_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn statuses(raw: &str) -> Result<Vec<&'static str>, ApiError> {
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "fail" | "active" => out.extend(FindingStatus::ACTIVE.iter().map(|s| s.as_str())),
            "pass" => out.push(FindingStatus::Passed.as_str()),
            other => out.push(other.parse::<FindingStatus>().map_err(|e| ApiError::invalid("status", e))?.as_str()),
        }
    }
    Ok(out)
}

/// The query's filter, always within the caller's team.
fn filter(caller: &Caller, q: &FindingsQuery) -> Result<Document, ApiError> {
    let mut f = doc! { "team_id": &caller.team };
    if let Some(a) = &q.account_id {
        // An id that cannot exist matches nothing, like another team's.
        let id: AccountId = a.parse().map_err(|_| ApiError::invalid("account_id", "not an account id"))?;
        f.insert("account_id", id);
    }
    if let Some(p) = &q.provider {
        let p: Provider = p.parse().map_err(|e: String| ApiError::invalid("provider", e))?;
        f.insert("provider", p.as_str());
    }
    if let Some(s) = &q.severity {
        let list: Result<Vec<&str>, ApiError> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<Severity>().map(Severity::as_str).map_err(|e| ApiError::invalid("severity", e)))
            .collect();
        f.insert("severity", doc! { "$in": list? });
    }
    if let Some(s) = &q.status {
        f.insert("status", doc! { "$in": statuses(s)? });
    }
    if let Some(t) = &q.tool {
        let t: Tool = t.parse().map_err(|e: String| ApiError::invalid("tool", e))?;
        f.insert("tool", t.as_str());
    }
    if let Some(c) = &q.class {
        let class = match c.as_str() {
            "detection" => FindingClass::Detection,
            "vulnerability" => FindingClass::Vulnerability,
            "compliance" => FindingClass::Compliance,
            _ => return Err(ApiError::invalid("class", "expected detection, vulnerability or compliance")),
        };
        f.insert("class", class.as_str());
    }
    let cve = q.cve.as_ref().map(|c| c.to_ascii_uppercase());
    for (field, value, key) in [
        ("service", q.service.as_ref(), "service"),
        ("region", q.region.as_ref(), "region"),
        ("rule_id", q.rule_id.as_ref().or(q.check_id.as_ref()), "rule_id"),
        ("cve", cve.as_ref(), "cves"),
    ] {
        if let Some(v) = value {
            too_long(field, v)?;
            f.insert(key, v.clone());
        }
    }
    if let Some(r) = &q.run_id {
        let run: RunId = r.parse().map_err(|_| ApiError::invalid("run_id", "not a run id"))?;
        f.insert("last_run_id", run);
    }
    if let Some(s) = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        too_long("search", s)?;
        let rx = doc! { "$regex": literal_regex(s), "$options": "i" };
        f.insert(
            "$or",
            vec![
                doc! { "title": rx.clone() },
                doc! { "rule_id": rx.clone() },
                doc! { "resource_uid": rx.clone() },
                doc! { "description": rx },
            ],
        );
    }
    Ok(f)
}

fn sort(q: &FindingsQuery) -> Result<Document, ApiError> {
    let dir = match q.order.as_deref() {
        None | Some("desc") => -1,
        Some("asc") => 1,
        Some(_) => return Err(ApiError::invalid("order", "expected asc or desc")),
    };
    Ok(match q.sort.as_deref() {
        None | Some("severity") => doc! { "severity_id": dir, "last_seen": -1, "_id": 1 },
        Some(k @ ("last_seen" | "first_seen" | "title" | "rule_id")) => doc! { k: dir, "_id": 1 },
        Some(_) => return Err(ApiError::invalid("sort", "expected severity, last_seen, first_seen, title or rule_id")),
    })
}

/// Risk 0–10 from the severity (the seed's scale).
fn risk_score(s: Severity) -> f64 {
    match s {
        Severity::Critical => 9.5,
        Severity::High => 7.5,
        Severity::Medium => 5.0,
        Severity::Low => 2.5,
        Severity::Informational => 0.0,
    }
}

/// A finding as the API shows it.
#[derive(Serialize, JsonSchema)]
pub struct FindingView {
    id: String,
    /// The same as `id` (the seed's name).
    finding_id: String,
    /// The same as `id`: the finding's identity across scans.
    dedup_key: String,
    tool: String,
    /// The OCSF finding class.
    class: FindingClass,
    rule_id: String,
    /// The same as `rule_id` (the seed's name).
    check_id: String,
    title: String,
    description: String,
    severity: Severity,
    /// 0–10, from the severity.
    risk_score: f64,
    status: FindingStatus,
    /// The scanner's verdict.
    result: cspm_shared::domain::finding::Verdict,
    muted: bool,
    resource: ResourceView,
    service: Option<String>,
    region: String,
    account_id: Option<AccountId>,
    provider: Option<Provider>,
    provider_account_id: Option<String>,
    target: Option<String>,
    remediation: Option<String>,
    references: Vec<String>,
    cves: Vec<String>,
    vulnerabilities: Vec<cspm_shared::domain::finding::Vulnerability>,
    /// The CISA KEV entry of one of its CVEs, if any.
    kev: Option<cspm_shared::kev::KevMark>,
    /// Framework → requirements.
    compliance: BTreeMap<String, Vec<String>>,
    location: Option<cspm_shared::domain::finding::CodeLocation>,
    endpoint: Option<cspm_shared::domain::finding::Endpoint>,
    /// The tool's own detail.
    #[schemars(with = "Object")]
    details: Value,
    first_seen: Time,
    last_seen: Time,
    status_changed_at: Option<Time>,
    first_run_id: RunId,
    last_run_id: RunId,
    /// The same as `last_run_id` (the seed's name).
    scan_run_id: RunId,
    reopen_count: i64,
    resolution: Option<ResolutionView>,
    suppression: Option<SuppressionView>,
}

#[derive(Serialize, JsonSchema)]
pub struct ResourceView {
    uid: String,
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub struct ResolutionView {
    kind: String,
    reason: String,
    run_id: Option<RunId>,
    by: Option<UserId>,
    note: Option<String>,
    at: Time,
}

#[derive(Serialize, JsonSchema)]
pub struct SuppressionView {
    reason: String,
    /// None: suppressed for good.
    until: Option<Time>,
    by: UserId,
    at: Time,
}

/// A finding as the API shows it.
pub fn finding_view(f: &FindingDoc) -> FindingView {
    let n = &f.finding;
    FindingView {
        id: f.id.clone(),
        finding_id: f.id.clone(),
        dedup_key: f.id.clone(),
        tool: f.tool.clone(),
        class: n.class,
        rule_id: n.rule_id.clone(),
        check_id: n.rule_id.clone(),
        title: n.title.clone(),
        description: n.description.clone(),
        severity: n.severity,
        risk_score: risk_score(n.severity),
        status: f.status,
        result: n.verdict,
        muted: n.muted,
        resource: ResourceView {
            uid: n.resource_uid.clone(),
            kind: n.resource_type.clone(),
            name: n.resource_name.clone(),
        },
        service: n.service.clone(),
        region: f.region.clone(),
        account_id: f.account_id.clone(),
        provider: f.provider,
        provider_account_id: f.provider_account_id.clone(),
        target: f.target.clone(),
        remediation: n.remediation.clone(),
        references: n.references.clone(),
        cves: n.cves(),
        vulnerabilities: n.vulnerabilities.clone(),
        kev: n.kev.clone(),
        compliance: n.compliance.clone(),
        location: n.location.clone(),
        endpoint: n.endpoint.clone(),
        details: bson_to_json(Bson::Document(n.details.clone())),
        first_seen: rfc3339(f.first_seen),
        last_seen: rfc3339(f.last_seen),
        status_changed_at: rfc3339_opt(f.status_changed_at),
        first_run_id: f.first_run_id.clone(),
        last_run_id: f.last_run_id.clone(),
        scan_run_id: f.last_run_id.clone(),
        reopen_count: f.reopen_count,
        resolution: f.resolution.as_ref().map(|r| ResolutionView {
            kind: r.kind.clone(),
            reason: r.reason.clone(),
            run_id: r.run_id.clone(),
            by: r.by.clone(),
            note: r.note.clone(),
            at: rfc3339(r.at),
        }),
        suppression: f.suppression.as_ref().map(|s| SuppressionView {
            reason: s.reason.clone(),
            until: rfc3339_opt(s.until),
            by: s.by.clone(),
            at: rfc3339(s.at),
        }),
    }
}

/// A page of findings.
#[derive(Serialize, JsonSchema)]
pub struct FindingList {
    findings: Vec<FindingView>,
    total: u64,
    limit: i64,
    skip: u64,
}

/// A finding with its OCSF event.
#[derive(Serialize, JsonSchema)]
pub struct FindingDetail {
    #[serde(flatten)]
    finding: FindingView,
    /// The finding as an OCSF Detection Finding (or Vulnerability / Compliance Finding) event.
    #[schemars(with = "Object")]
    ocsf: Value,
}

fn read(d: Document) -> ApiResult<FindingDoc> {
    bson::deserialize_from_document(d).map_err(|e| ApiError::Internal(format!("unreadable finding: {e}")))
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<FindingsQuery>,
) -> ApiResult<Json<FindingList>> {
    let (skip, limit) = page(q.skip, q.limit, 50, 500)?;
    let f = filter(&caller, &q)?;
    let order = sort(&q)?;
    let total = s.mongo.findings.count_documents(f.clone()).await.map_err(cspm_shared::error::StoreError::from)?;
    let docs: Vec<Document> = s
        .mongo
        .findings
        .find(f)
        .sort(order)
        .skip(skip)
        .limit(limit)
        .await
        .map_err(cspm_shared::error::StoreError::from)?
        .try_collect()
        .await
        .map_err(cspm_shared::error::StoreError::from)?;
    let items = docs.into_iter().map(|d| read(d).map(|f| finding_view(&f))).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(FindingList { findings: items, total, limit, skip }))
}

pub async fn get(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<FindingDetail>> {
    let f = load(&s, &caller, &id).await?;
    Ok(Json(FindingDetail { finding: finding_view(&f), ocsf: f.to_ocsf() }))
}

async fn load(s: &AppState, caller: &Caller, id: &str) -> ApiResult<FindingDoc> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("finding"));
    }
    findings::get(&s.mongo, &caller.team, id).await?.ok_or_else(|| ApiError::not_found("finding"))
}

/// One check's findings.
#[derive(Serialize, JsonSchema)]
pub struct FindingGroup {
    check_id: String,
    rule_id: String,
    title: String,
    tool: String,
    class: String,
    /// The worst severity of the group.
    severity: Severity,
    risk_score: f64,
    count: i64,
    resources_count: usize,
    regions: Vec<String>,
    /// Cloud account ids.
    accounts: Vec<String>,
    last_seen: Option<Time>,
}

/// A page of groups, with the totals of every group.
#[derive(Serialize, JsonSchema)]
pub struct FindingGroups {
    groups: Vec<FindingGroup>,
    total_groups: usize,
    total_findings: i64,
    /// How much grouping shortens the list: 100 × (1 − groups / findings), to one decimal.
    noise_reduction_percent: f64,
    limit: i64,
    skip: u64,
}

/// One row per check (rule): how many findings, how many active, the worst severity, where.
pub async fn grouped(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(mut q): ApiQuery<FindingsQuery>,
) -> ApiResult<Json<FindingGroups>> {
    if q.status.is_none() {
        q.status = Some("fail".into());
    }
    let (skip, limit) = page(q.skip, q.limit, 50, 200)?;
    let f = filter(&caller, &q)?;
    let pipeline = vec![
        doc! { "$match": f },
        doc! { "$group": {
            "_id": "$rule_id",
            "title": { "$first": "$title" },
            "tool": { "$first": "$tool" },
            "class": { "$first": "$class" },
            "severity_id": { "$max": "$severity_id" },
            "count": { "$sum": 1 },
            "regions": { "$addToSet": "$region" },
            "accounts": { "$addToSet": "$account_id" },
            "resources": { "$addToSet": "$resource_uid" },
            "last_seen": { "$max": "$last_seen" },
        } },
        doc! { "$sort": { "severity_id": -1, "count": -1, "_id": 1 } },
    ];
    let rows = aggregate(&s, pipeline).await?;
    let total_groups = rows.len();
    let instances: i64 = rows.iter().map(|r| number(r, "count")).sum();
    let groups: Vec<FindingGroup> = rows
        .into_iter()
        .skip(skip as usize)
        .take(limit as usize)
        .map(|r| {
            let severity = severity_of_id(number(&r, "severity_id"));
            let list = |k: &str| -> Vec<String> {
                let mut v: Vec<String> = r
                    .get_array(k)
                    .map(|a| a.iter().filter_map(|b| b.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                v.sort();
                v
            };
            let text = |k: &str| r.get_str(k).unwrap_or_default().to_string();
            FindingGroup {
                check_id: text("_id"),
                rule_id: text("_id"),
                title: text("title"),
                tool: text("tool"),
                class: text("class"),
                severity,
                risk_score: risk_score(severity),
                count: number(&r, "count"),
                resources_count: r.get_array("resources").map(|a| a.len()).unwrap_or(0),
                regions: list("regions"),
                accounts: list("accounts"),
                last_seen: r.get_i64("last_seen").ok().map(|ms| rfc3339(Timestamp::from_millis(ms))),
            }
        })
        .collect();
    let noise_reduction = if instances > 0 { 100.0 * (1.0 - total_groups as f64 / instances as f64) } else { 0.0 };
    Ok(Json(FindingGroups {
        groups,
        total_groups,
        total_findings: instances,
        noise_reduction_percent: (noise_reduction * 10.0).round() / 10.0,
        limit,
        skip,
    }))
}

async fn aggregate(s: &AppState, pipeline: Vec<Document>) -> ApiResult<Vec<Document>> {
    let cursor = s.mongo.findings.aggregate(pipeline).await.map_err(cspm_shared::error::StoreError::from)?;
    Ok(cursor.try_collect().await.map_err(cspm_shared::error::StoreError::from)?)
}

fn number(d: &Document, k: &str) -> i64 {
    match d.get(k) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => 0,
    }
}

fn severity_of_id(id: i64) -> Severity {
    match id {
        5 => Severity::Critical,
        4 => Severity::High,
        3 => Severity::Medium,
        2 => Severity::Low,
        _ => Severity::Informational,
    }
}

/// Counts by status, and the active (open or reopened) ones by severity, tool and class.
#[derive(Serialize, JsonSchema)]
pub struct FindingStats {
    total: i64,
    active: i64,
    /// Every status, with 0 where there are none.
    by_status: BTreeMap<String, i64>,
    /// Every severity, with 0 where there are none.
    active_by_severity: BTreeMap<String, i64>,
    active_by_tool: BTreeMap<String, i64>,
    active_by_class: BTreeMap<String, i64>,
}

/// Counts by status, and the active ones by severity, tool and class.
pub async fn stats(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<FindingsQuery>,
) -> ApiResult<Json<FindingStats>> {
    let mut f = filter(&caller, &q)?;
    f.remove("status");
    // One facet per dimension: grouping on a compound `_id` is not evaluated by every server the
    // fleet runs on (the Mongo-wire test server keeps it literal).
    let active = doc! { "$match": { "status": { "$in": ["open", "reopened"] } } };
    let by = |field: &str| doc! { "$group": { "_id": format!("${field}"), "n": { "$sum": 1 } } };
    let pipeline = vec![
        doc! { "$match": f },
        doc! { "$facet": {
            "status": [by("status")],
            "severity": [active.clone(), by("severity")],
            "tool": [active.clone(), by("tool")],
            "class": [active, by("class")],
        } },
    ];
    let rows = aggregate(&s, pipeline).await?;
    let facets = rows.into_iter().next().unwrap_or_default();
    let tally = |facet: &str, seed: &[&str]| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for k in seed {
            m.insert((*k).to_string(), 0);
        }
        let mut sum = 0;
        for row in facets.get_array(facet).map(|a| a.as_slice()).unwrap_or_default() {
            let Some(d) = row.as_document() else { continue };
            let n = number(d, "n");
            sum += n;
            m.insert(d.get_str("_id").unwrap_or_default().to_string(), n);
        }
        (m, sum)
    };
    let statuses: Vec<&str> = FindingStatus::ALL.iter().map(|s| s.as_str()).collect();
    let (by_status, total) = tally("status", &statuses);
    let (by_severity, active) = tally("severity", &["critical", "high", "medium", "low", "informational"]);
    let (by_tool, _) = tally("tool", &[]);
    let (by_class, _) = tally("class", &[]);
    Ok(Json(FindingStats {
        total,
        active,
        by_status,
        active_by_severity: by_severity,
        active_by_tool: by_tool,
        active_by_class: by_class,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = note_alias)]
pub struct ResolveBody {
    #[serde(alias = "note")]
    resolution_notes: String,
}

/// `note` is the seed's name of `resolution_notes`.
fn note_alias(s: &mut schemars::Schema) {
    crate::openapi::alias(s, "note", "resolution_notes");
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressBody {
    reason: String,
    /// One of the offered windows (7, 14, 30, 60, 90, 180, 365 days); omit it, and `suppress_until`, to
    /// suppress for good.
    #[serde(default)]
    duration_days: Option<u32>,
    /// An end date (RFC 3339) instead of a window.
    #[serde(default)]
    suppress_until: Option<String>,
}

fn note(field: &str, text: &str) -> ApiResult<String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if t.chars().count() > 2000 {
        return Err(ApiError::invalid(field, "is too long (at most 2000 characters)"));
    }
    Ok(t.to_string())
}

fn changed(r: Result<FindingDoc, ChangeError>) -> ApiResult<Json<FindingView>> {
    match r {
        Ok(f) => Ok(Json(finding_view(&f))),
        Err(ChangeError::NotFound) => Err(ApiError::not_found("finding")),
        Err(ChangeError::Conflict(msg)) => Err(ApiError::Conflict(msg)),
    }
}

pub async fn resolve(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> ApiResult<Json<FindingView>> {
    let text = note("resolution_notes", &body.resolution_notes)?;
    load(&s, &caller, &id).await?;
    let r = findings::resolve_manually(&s.mongo, &caller.team, &id, &caller.user, &text).await?;
    tracing::info!(finding = %id, "finding resolved by a person");
    changed(r)
}

pub async fn suppress(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SuppressBody>,
) -> ApiResult<Json<FindingView>> {
    let reason = note("reason", &body.reason)?;
    let now = Timestamp::now();
    let until = match (body.duration_days, body.suppress_until.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("duration_days", "give duration_days or suppress_until, not both"));
        }
        (Some(d), None) => {
            if !SUPPRESSION_WINDOWS_DAYS.contains(&d) {
                return Err(ApiError::invalid(
                    "duration_days",
                    format!("must be one of {SUPPRESSION_WINDOWS_DAYS:?} (omit it to suppress permanently)"),
                ));
            }
            Some(now.plus(std::time::Duration::from_secs(u64::from(d) * 86_400)))
        }
        (None, Some(text)) => {
            let t = bson::DateTime::parse_rfc3339_str(text)
                .map_err(|_| ApiError::invalid("suppress_until", "must be an RFC 3339 date and time"))?;
            let t = Timestamp::from_millis(t.timestamp_millis());
            if t <= now {
                return Err(ApiError::invalid("suppress_until", "must be in the future"));
            }
            Some(t)
        }
        (None, None) => None,
    };
    load(&s, &caller, &id).await?;
    let r = findings::suppress(&s.mongo, &caller.team, &id, &caller.user, &reason, until).await?;
    tracing::info!(finding = %id, permanent = until.is_none(), "finding suppressed");
    changed(r)
}

pub async fn unsuppress(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<FindingView>> {
    load(&s, &caller, &id).await?;
    let r = findings::unsuppress(&s.mongo, &caller.team, &id).await?;
    changed(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_literal() {
        assert_eq!(literal_regex("a.b*(c)"), "a\\.b\\*\\(c\\)");
        assert_eq!(literal_regex("plain"), "plain");
    }

    #[test]
    fn status_filters_accept_the_seed_names() {
        assert_eq!(statuses("fail").ok(), Some(vec!["open", "reopened"]));
        assert_eq!(statuses("pass,resolved").ok(), Some(vec!["passed", "resolved"]));
        assert!(statuses("closed").is_err());
    }
}
