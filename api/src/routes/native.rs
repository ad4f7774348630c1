//! Native scans: `POST /api/native-scans/network-discovery` (nmap) and the unified results
//! (`GET /api/native-scans/results[/{scan_id}]`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bson::{Bson, doc};
use cspm_shared::domain::native::{
    ArtifactKind, NetworkScanType, WebScanProfile, WebTarget, parse_image_ref, path_under_roots,
};
use cspm_shared::domain::provider::Provider;
use cspm_shared::domain::scan::{RunStatus, SubJobCounts, Tool};
use cspm_shared::ids::{AccountId, RunId};
use cspm_shared::orchestrate::{self, NativeScanRequest, NetworkScanRequest, StartError};
use cspm_shared::store::results::{self, ResultDoc};
use cspm_shared::store::runs::{RunDoc, RunKind, RunSummary};
use cspm_shared::store::subjobs::NativeSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, page};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, bson_to_json, rfc3339, rfc3339_opt};
use crate::state::AppState;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkDiscoveryBody {
    /// An IP address, a small CIDR block or a host name.
    #[schemars(length(min = 1, max = 253))]
    target: String,
    #[serde(default)]
    ports: Option<String>,
    #[serde(default)]
    scan_type: Option<String>,
}

pub async fn network_discovery(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NetworkDiscoveryBody>,
) -> ApiResult<(StatusCode, Json<NativeStarted>)> {
    let scan_type: NetworkScanType = match body.scan_type {
        None => NetworkScanType::PortScan,
        Some(t) => t.parse().map_err(|e: String| ApiError::invalid("scan_type", e))?,
    };
    s.queues.ping().await?;
    let req = NetworkScanRequest {
        team: caller.team.clone(),
        target: body.target,
        ports: body.ports,
        scan_type,
        trigger: "api".into(),
        created_by: Some(caller.user.clone()),
    };
    let run = match orchestrate::start_network_scan(&s.mongo, &s.queues, req, &s.config.target_policy, &s.config.limits)
        .await
    {
        Ok(run) => run,
        Err(StartError::InvalidField(field, msg)) => return Err(ApiError::invalid(field, msg)),
        Err(StartError::Invalid(msg)) => return Err(ApiError::Unprocessable { detail: msg, errors: vec![] }),
        Err(e) => return Err(e.into()),
    };
    s.metrics
        .runs_started
        .get_or_create(&vec![("kind".into(), "native".into()), ("outcome".into(), "created".into())])
        .inc();
    tracing::info!(run.id = %run.id, target = run.target.as_deref().unwrap_or(""), "network scan started");
    let mut answer = started(&run, Tool::Nmap);
    // The network scan's answer has never carried `success`.
    answer.1.success = None;
    Ok(answer)
}

/// The answer to a started native scan (the seed's shape).
#[derive(Serialize, JsonSchema)]
pub struct NativeStarted {
    /// Always true; absent from the network scan's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    success: Option<bool>,
    scan_id: RunId,
    status: RunStatus,
    target: Option<String>,
    scan_type: String,
    tool_type: &'static str,
    /// Always 0: the scan has just been queued.
    findings_count: i64,
}

fn started(run: &cspm_shared::store::runs::RunDoc, tool: Tool) -> (StatusCode, Json<NativeStarted>) {
    (
        StatusCode::ACCEPTED,
        Json(NativeStarted {
            success: Some(true),
            scan_id: run.id.clone(),
            status: run.status,
            target: run.target.clone(),
            scan_type: run.scan_type.clone(),
            tool_type: tool.as_str(),
            findings_count: 0,
        }),
    )
}

async fn start(s: &AppState, caller: &Caller, tool: Tool, spec: NativeSpec, scan_type: &str) -> ApiResult<RunDoc> {
    s.queues.ping().await?;
    let req = NativeScanRequest {
        team: caller.team.clone(),
        tool,
        spec,
        scan_type: scan_type.to_string(),
        trigger: "api".into(),
        created_by: Some(caller.user.clone()),
        run_id: None,
        schedule_id: None,
    };
    let run = orchestrate::start_native_scan(&s.mongo, &s.queues, req, &s.config.limits).await?;
    s.metrics
        .runs_started
        .get_or_create(&vec![("kind".into(), "native".into()), ("outcome".into(), "created".into())])
        .inc();
    tracing::info!(run.id = %run.id, tool = tool.as_str(), "native scan started");
    Ok(run)
}

fn spec(target: String) -> NativeSpec {
    NativeSpec {
        target,
        ports: None,
        scan_type: NetworkScanType::PortScan,
        web_profile: None,
        artifact: None,
        scanners: Vec::new(),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebScanBody {
    /// An http or https URL.
    #[schemars(url, length(max = 2048), regex(pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://"))]
    target_url: String,
    #[serde(default)]
    scan_type: Option<String>,
    /// `wapiti` or `zap`; the fleet's default (`CSPM_WEB_SCANNER`) when absent.
    #[serde(default)]
    tool: Option<String>,
}

/// `POST /api/native-scans/web-vulnerability`: a web application scan (Wapiti or ZAP) of a URL the SSRF
/// guard allows.
pub async fn web_vulnerability(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<WebScanBody>,
) -> ApiResult<(StatusCode, Json<NativeStarted>)> {
    let plan = plan_web(&s, body).await?;
    let run = start(&s, &caller, plan.tool, plan.spec, &plan.scan_type).await?;
    Ok(started(&run, plan.tool))
}

/// A native scan request, checked: what `start` needs (and what a schedule of it stores).
pub struct NativePlan {
    pub tool: Tool,
    pub spec: NativeSpec,
    pub scan_type: String,
}

/// The plan of a request of one of the native scan endpoints, named by the endpoint's last path
/// segment (`network-discovery`, `web-vulnerability`, `container-image`, `filesystem`), with the
/// body that endpoint accepts.
pub async fn plan(s: &AppState, scan: &str, request: Value) -> ApiResult<NativePlan> {
    fn body<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
        serde_json::from_value(v).map_err(|e| ApiError::invalid("target.request", e.to_string()))
    }
    match scan {
        "network-discovery" => plan_network(s, body(request)?).await,
        "web-vulnerability" => plan_web(s, body(request)?).await,
        "container-image" => plan_image(body(request)?),
        "filesystem" => plan_path(s, body(request)?),
        other => Err(ApiError::invalid(
            "target.scan",
            format!(
                "`{other}` is not a native scan (network-discovery, web-vulnerability, container-image, filesystem)"
            ),
        )),
    }
}

async fn plan_network(s: &AppState, body: NetworkDiscoveryBody) -> ApiResult<NativePlan> {
    let scan_type: NetworkScanType = match body.scan_type {
        None => NetworkScanType::PortScan,
        Some(t) => t.parse().map_err(|e: String| ApiError::invalid("scan_type", e))?,
    };
    let spec = match orchestrate::network_spec(&body.target, body.ports.as_deref(), scan_type, &s.config.target_policy)
        .await
    {
        Ok(spec) => spec,
        Err(StartError::InvalidField(field, msg)) => return Err(ApiError::invalid(field, msg)),
        Err(e) => return Err(e.into()),
    };
    Ok(NativePlan { tool: Tool::Nmap, spec, scan_type: scan_type.as_str().to_string() })
}

async fn plan_web(s: &AppState, body: WebScanBody) -> ApiResult<NativePlan> {
    let profile: WebScanProfile = match body.scan_type.as_deref() {
        None => WebScanProfile::Standard,
        Some(t) => t.parse().map_err(|e: String| ApiError::invalid("scan_type", e))?,
    };
    let tool = match body.tool.as_deref() {
        None => s.config.web_scanner,
        Some("wapiti") => Tool::Wapiti,
        Some("zap") => Tool::Zap,
        Some(other) => {
            return Err(ApiError::invalid("tool", format!("`{other}` is not a web scanner (wapiti or zap)")));
        }
    };
    let target = WebTarget::parse(&body.target_url).map_err(|e| ApiError::invalid("target_url", e))?;
    s.config.target_policy.resolve(&target.host).await.map_err(|e| ApiError::invalid("target_url", e))?;
    let mut spec = spec(target.url);
    spec.web_profile = Some(profile);
    Ok(NativePlan { tool, spec, scan_type: profile.as_str().to_string() })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageScanBody {
    /// An image reference (`alpine:3.19`, `registry.example.com/app@sha256:…`).
    #[schemars(length(min = 1, max = 512))]
    image: String,
    /// Trivy scanners: `vuln`, `secret`, `misconfig`, `license` (default: the first three).
    #[serde(default)]
    scanners: Option<Vec<String>>,
}

fn scanners(list: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let list = list.unwrap_or_default();
    for sc in &list {
        if !["vuln", "secret", "misconfig", "license"].contains(&sc.as_str()) {
            return Err(ApiError::invalid(
                "scanners",
                format!("`{sc}` is not a scanner (vuln, secret, misconfig, license)"),
            ));
        }
    }
    Ok(list)
}

/// `POST /api/native-scans/container-image`: Trivy on an image reference.
pub async fn container_image(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ImageScanBody>,
) -> ApiResult<(StatusCode, Json<NativeStarted>)> {
    let plan = plan_image(body)?;
    let run = start(&s, &caller, plan.tool, plan.spec, &plan.scan_type).await?;
    Ok(started(&run, plan.tool))
}

fn plan_image(body: ImageScanBody) -> ApiResult<NativePlan> {
    let image = parse_image_ref(&body.image).map_err(|e| ApiError::invalid("image", e))?;
    let mut spec = spec(image);
    spec.artifact = Some(ArtifactKind::Image);
    spec.scanners = scanners(body.scanners)?;
    Ok(NativePlan { tool: Tool::Trivy, spec, scan_type: "image".into() })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathScanBody {
    path: String,
    /// `filesystem` (packages, secrets and IaC; the default) or `config` (IaC only).
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    scanners: Option<Vec<String>>,
}

/// `POST /api/native-scans/filesystem`: Trivy on a directory under the operator's allowed roots
/// (`CSPM_SCAN_PATH_ROOTS`): dependencies, secrets and infrastructure-as-code.
pub async fn filesystem(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PathScanBody>,
) -> ApiResult<(StatusCode, Json<NativeStarted>)> {
    let plan = plan_path(&s, body)?;
    let run = start(&s, &caller, plan.tool, plan.spec, &plan.scan_type).await?;
    Ok(started(&run, plan.tool))
}

fn plan_path(s: &AppState, body: PathScanBody) -> ApiResult<NativePlan> {
    let kind = match body.kind.as_deref() {
        None | Some("filesystem") => ArtifactKind::Filesystem,
        Some("config") => ArtifactKind::Config,
        Some(other) => return Err(ApiError::invalid("kind", format!("`{other}`: expected filesystem or config"))),
    };
    let path = path_under_roots(&body.path, &s.config.scan_path_roots).map_err(|e| ApiError::invalid("path", e))?;
    let mut spec = spec(path.display().to_string());
    spec.artifact = Some(kind);
    spec.scanners = scanners(body.scanners)?;
    Ok(NativePlan { tool: Tool::Trivy, spec, scan_type: kind.as_str().to_string() })
}

/// A native scan's unified record, with its findings.
#[derive(Serialize, JsonSchema)]
pub struct NativeResult {
    /// The scan's first findings in the seed's shape (empty until the scan has ended).
    findings: Vec<EmbeddedFindingView>,
    #[serde(flatten)]
    record: ResultRecord,
}

/// A scan's unified record.
#[derive(Serialize, JsonSchema)]
pub struct ResultRecord {
    scan_id: RunId,
    kind: RunKind,
    /// The first tool of the scan.
    tool_type: String,
    tools: Vec<String>,
    target: Option<String>,
    account_id: Option<AccountId>,
    provider: Option<Provider>,
    scan_type: String,
    status: RunStatus,
    /// `api`, `schedule`, …
    trigger: String,
    findings_count: i64,
    /// Totals, once the scan has ended.
    summary: Option<RunSummary>,
    /// How the scan ended, once it has.
    metadata: Option<ResultMetadataView>,
    created_at: Time,
    updated_at: Time,
}

#[derive(Serialize, JsonSchema)]
pub struct ResultMetadataView {
    completed_at: Option<Time>,
    /// The scan's SubJobs by state.
    sub_jobs: SubJobCounts,
}

/// A finding as a native scan's record shows it (the seed's shape).
#[derive(Serialize, JsonSchema)]
pub struct EmbeddedFindingView {
    name: String,
    severity: String,
    description: String,
    solution: String,
    resource: EmbeddedResourceView,
    status: String,
    cves: Vec<String>,
    /// The tool's own detail.
    #[schemars(with = "crate::openapi::Object")]
    details: Value,
}

#[derive(Serialize, JsonSchema)]
pub struct EmbeddedResourceView {
    uid: String,
    #[serde(rename = "type")]
    kind: String,
}

pub async fn result(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<NativeResult>> {
    let not_found = || ApiError::NotFound(format!("Scan result not found: {id}"));
    let run: RunId = id.parse().map_err(|_| not_found())?;
    let mut found = results::get(&s.mongo, &caller.team, &run, RunKind::Native).await?.ok_or_else(not_found)?;
    let findings = std::mem::take(&mut found.findings)
        .into_iter()
        .map(|f| EmbeddedFindingView {
            name: f.name,
            severity: f.severity,
            description: f.description,
            solution: f.solution,
            resource: EmbeddedResourceView { uid: f.resource.uid, kind: f.resource.kind },
            status: f.status,
            cves: f.cves,
            details: bson_to_json(Bson::Document(f.details)),
        })
        .collect();
    Ok(Json(NativeResult { findings, record: result_view(found) }))
}

/// A page of native scan records (without their findings).
#[derive(Serialize, JsonSchema)]
pub struct NativeResults {
    /// Always true (the seed's shape).
    success: bool,
    /// How many records this page has.
    count: usize,
    total: u64,
    results: Vec<ResultRecord>,
    limit: i64,
    skip: u64,
}

#[derive(Deserialize, JsonSchema)]
pub struct ResultsQuery {
    tool_type: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

pub async fn results_list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Json<NativeResults>> {
    let (skip, limit) = page(q.skip, q.limit, 50, 200)?;
    let mut filter = doc! { "kind": "native" };
    if let Some(t) = q.tool_type {
        if t.len() > 64 {
            return Err(ApiError::invalid("tool_type", "too long"));
        }
        filter.insert("tool_type", t);
    }
    if let Some(st) = q.status {
        let st: RunStatus = st.parse().map_err(|e: String| ApiError::invalid("status", e))?;
        filter.insert("status", st.as_str());
    }
    let (rows, total) = results::list(&s.mongo, &caller.team, filter, skip, limit).await?;
    let results: Vec<ResultRecord> = rows.into_iter().map(result_view).collect();
    Ok(Json(NativeResults { success: true, count: results.len(), total, results, limit, skip }))
}

fn result_view(d: ResultDoc) -> ResultRecord {
    ResultRecord {
        scan_id: d.scan_id,
        kind: d.kind,
        tool_type: d.tool_type,
        tools: d.tools,
        target: d.target,
        account_id: d.account_id,
        provider: d.provider,
        scan_type: d.scan_type,
        status: d.status,
        trigger: d.trigger,
        findings_count: d.findings_count,
        summary: d.summary,
        metadata: d
            .metadata
            .map(|m| ResultMetadataView { completed_at: rfc3339_opt(m.completed_at), sub_jobs: m.sub_jobs }),
        created_at: rfc3339(d.created_at),
        updated_at: rfc3339(d.updated_at),
    }
}
