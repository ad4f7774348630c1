//! The HTTP routes, one file per resource.

pub mod accounts;
pub mod api_keys;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod compliance;
pub mod findings;
pub mod native;
pub mod scans;
pub mod schedules;
pub mod teams;
pub mod threat_intel;
pub mod vulnerabilities;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;
use cspm_shared::domain::role::Permission::{self, *};
use cspm_shared::domain::scope::Scope;
use cspm_shared::time::Timestamp;

use crate::access::{Access, Keys};
use crate::openapi::{self, Describe, Media, Reply, Returns};
use crate::problem::ApiError;
use crate::state::AppState;

/// One route: what it is, who may call it, and the name its calls carry in the audit trail. The table
/// below is the only place routes are declared; the router, the access checks, the audit trail and the
/// OpenAPI document are all made from it.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// `<resource>.<verb>`, as in the audit trail (`scan.start`).
    pub action: &'static str,
    pub summary: &'static str,
    /// Whether calls are recorded in the audit trail: every write, and downloads of raw output.
    pub audited: bool,
    /// The success statuses the handler answers with (the first is the usual one).
    pub success: &'static [u16],
    /// The media type of a success answer's body.
    pub media: Media,
    /// The request side of the OpenAPI operation, from the handler's extractors.
    pub(crate) describe: fn(&mut schemars::SchemaGenerator) -> openapi::Request,
    /// The schema of a success body, from the type the handler returns (`None`: not JSON, or none).
    pub(crate) reply: fn(&mut schemars::SchemaGenerator) -> Option<schemars::Schema>,
    pub(crate) handler: MethodRouter<AppState>,
}

impl Endpoint {
    fn new<H, T>(
        method: Method,
        path: &'static str,
        access: Access,
        action: &'static str,
        summary: &'static str,
        h: H,
    ) -> Self
    where
        H: Handler<T, AppState> + Returns<T>,
        <H as Returns<T>>::Output: Reply,
        T: Describe + 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone()).unwrap_or(axum::routing::MethodFilter::GET);
        let audited = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        Self {
            method,
            path,
            access,
            action,
            summary,
            audited,
            success: &[200],
            media: Media::Json,
            describe: T::describe,
            reply: <<H as Returns<T>>::Output as Reply>::schema,
            handler: axum::routing::on(filter, h),
        }
    }

    /// The success statuses, where they are not just 200 (`201` for a creation, `202` for work
    /// started, `204` without a body).
    fn responds(mut self, statuses: &'static [u16]) -> Self {
        self.success = statuses;
        self
    }

    /// A success body that is not JSON.
    fn media(mut self, media: Media) -> Self {
        self.media = media;
        self
    }

    /// Records reads of this route too (downloads of raw output).
    fn audited(mut self) -> Self {
        self.audited = true;
        self
    }

    /// Where the handler's body limit differs from `CSPM_MAX_BODY_BYTES`.
    fn body_limit(mut self, bytes: usize) -> Self {
        self.handler = self.handler.layer(axum::extract::DefaultBodyLimit::max(bytes));
        self
    }
}

fn get<H: Handler<T, AppState> + Returns<T>, T: Describe + 'static>(
    p: &'static str,
    a: Access,
    act: &'static str,
    sum: &'static str,
    h: H,
) -> Endpoint
where
    <H as Returns<T>>::Output: Reply,
{
    Endpoint::new(Method::GET, p, a, act, sum, h)
}
fn post<H: Handler<T, AppState> + Returns<T>, T: Describe + 'static>(
    p: &'static str,
    a: Access,
    act: &'static str,
    sum: &'static str,
    h: H,
) -> Endpoint
where
    <H as Returns<T>>::Output: Reply,
{
    Endpoint::new(Method::POST, p, a, act, sum, h)
}
fn put<H: Handler<T, AppState> + Returns<T>, T: Describe + 'static>(
    p: &'static str,
    a: Access,
    act: &'static str,
    sum: &'static str,
    h: H,
) -> Endpoint
where
    <H as Returns<T>>::Output: Reply,
{
    Endpoint::new(Method::PUT, p, a, act, sum, h)
}
fn patch<H: Handler<T, AppState> + Returns<T>, T: Describe + 'static>(
    p: &'static str,
    a: Access,
    act: &'static str,
    sum: &'static str,
    h: H,
) -> Endpoint
where
    <H as Returns<T>>::Output: Reply,
{
    Endpoint::new(Method::PATCH, p, a, act, sum, h)
}
fn delete<H: Handler<T, AppState> + Returns<T>, T: Describe + 'static>(
    p: &'static str,
    a: Access,
    act: &'static str,
    sum: &'static str,
    h: H,
) -> Endpoint
where
    <H as Returns<T>>::Output: Reply,
{
    Endpoint::new(Method::DELETE, p, a, act, sum, h)
}

/// The role must hold `p`; an API key needs the scope that stands for it.
fn needs(p: Permission) -> Access {
    Access::needs(p)
}
/// The role must hold `p`; an API key needs `scope`.
fn needs_scope(p: Permission, scope: Scope) -> Access {
    Access::Needs(p, Keys::Scope(scope))
}
/// Any signed-in member, with a session (not an API key).
fn session() -> Access {
    Access::SignedIn(Keys::None)
}

/// Every `/api` route. Paths are the seed's, so its documented clients keep working (list and create
/// also answer with a trailing slash, as the seed's do).
pub fn table(import_max_bytes: usize) -> Vec<Endpoint> {
    use Scope::*;
    let mut t = vec![
        post("/api/auth/login", Access::Public, "user.login", "Sign in: a bearer token for a new session", auth::login),
        post("/api/auth/logout", session(), "user.logout", "End the caller's session", auth::logout),
        get("/api/auth/me", Access::SignedIn(Keys::Any), "user.view", "The caller: user, active team, role", auth::me),
        post(
            "/api/auth/change-password",
            session(),
            "user.change_password",
            "Change the caller's password (ends their other sessions)",
            auth::change_password,
        ),
        get("/api/auth/sessions", session(), "session.list", "The caller's sessions", auth::sessions),
        delete(
            "/api/auth/sessions/{session_id}",
            session(),
            "session.end",
            "End one of the caller's sessions",
            auth::end_session,
        ),
        // Teams and members.
        get("/api/teams", session(), "team.list", "The teams the caller belongs to", teams::list),
        post(
            "/api/teams",
            Access::Needs(CreateTeams, Keys::None),
            "team.create",
            "Create a team (the caller becomes its admin)",
            teams::create,
        )
        .responds(&[201]),
        get("/api/teams/current", session(), "team.view", "The caller's active team", teams::current),
        get("/api/teams/{team_id}", session(), "team.view", "A team the caller belongs to", teams::get),
        post(
            "/api/teams/{team_id}/switch",
            session(),
            "team.switch",
            "Make a team the session's active team",
            teams::switch,
        ),
        get(
            "/api/teams/{team_id}/members",
            session(),
            "team.members",
            "The members of the active team",
            teams::members,
        ),
        post(
            "/api/teams/{team_id}/members",
            Access::Needs(ManageTeam, Keys::None),
            "team.member_add",
            "Add a member to the active team (an existing user, or a new one)",
            teams::add_member,
        )
        .responds(&[201]),
        put(
            "/api/teams/{team_id}/members/{user_id}",
            Access::Needs(ManageTeam, Keys::None),
            "team.member_update",
            "Change a member's role",
            teams::update_member,
        ),
        delete(
            "/api/teams/{team_id}/members/{user_id}",
            Access::Needs(ManageTeam, Keys::None),
            "team.member_remove",
            "Remove a member from the active team (ends their sessions in it)",
            teams::remove_member,
        ),
        post(
            "/api/teams/{team_id}/members/{user_id}/revoke-sessions",
            Access::Needs(ManageTeam, Keys::None),
            "team.member_sessions_revoke",
            "End every session of a member",
            teams::revoke_sessions,
        ),
        // API keys: everyone manages their own, with a session; admins see and revoke the team's.
        get(
            "/api/api-keys/scopes",
            Access::SignedIn(Keys::Any),
            "api_key.scopes",
            "The scopes and presets of API keys",
            api_keys::scopes,
        ),
        get("/api/api-keys", session(), "api_key.list", "The caller's API keys", api_keys::list),
        post(
            "/api/api-keys",
            session(),
            "api_key.create",
            "Create an API key (its secret is shown once)",
            api_keys::create,
        )
        .responds(&[201]),
        get(
            "/api/api-keys/admin/team-keys",
            needs(ManageTeamKeys),
            "api_key.team_list",
            "Every API key of the team",
            api_keys::team_keys,
        ),
        delete(
            "/api/api-keys/admin/{key_id}",
            needs(ManageTeamKeys),
            "api_key.admin_revoke",
            "Revoke any API key of the team",
            api_keys::admin_revoke,
        ),
        get("/api/api-keys/{key_id}", session(), "api_key.view", "One of the caller's API keys", api_keys::get),
        patch(
            "/api/api-keys/{key_id}",
            session(),
            "api_key.update",
            "Rename an API key, change its scopes or rate limit",
            api_keys::update,
        ),
        delete(
            "/api/api-keys/{key_id}",
            session(),
            "api_key.revoke",
            "Revoke one of the caller's API keys",
            api_keys::revoke,
        ),
        post(
            "/api/api-keys/{key_id}/rotate",
            session(),
            "api_key.rotate",
            "Replace an API key; the old one works for a grace period",
            api_keys::rotate,
        )
        .responds(&[201]),
        // Audit trail: members read their own events, admins the team's (the handler decides).
        get("/api/audit-trail", Access::SignedIn(Keys::Scope(AdminAudit)), "audit.list", "Audit events", audit::list),
        get(
            "/api/audit-trail/user/{user_id}",
            Access::SignedIn(Keys::Scope(AdminAudit)),
            "audit.list",
            "One team member's audit events",
            audit::for_user,
        ),
        get(
            "/api/audit-trail/actions",
            Access::SignedIn(Keys::Scope(AdminAudit)),
            "audit.actions",
            "The actions recorded in the audit trail",
            audit::actions,
        ),
        // Cloud accounts.
        get(
            "/api/cloud-accounts",
            needs(ViewCloudAccounts),
            "cloud_account.list",
            "The team's cloud accounts",
            accounts::list,
        ),
        get(
            "/api/cloud-accounts/",
            needs(ViewCloudAccounts),
            "cloud_account.list",
            "The team's cloud accounts",
            accounts::list,
        ),
        post(
            "/api/cloud-accounts",
            needs(ManageCloudAccounts),
            "cloud_account.create",
            "Connect a cloud account",
            accounts::create,
        )
        .responds(&[201]),
        post(
            "/api/cloud-accounts/",
            needs(ManageCloudAccounts),
            "cloud_account.create",
            "Connect a cloud account",
            accounts::create,
        )
        .responds(&[201]),
        get(
            "/api/cloud-accounts/{id}",
            needs(ViewCloudAccounts),
            "cloud_account.view",
            "A cloud account",
            accounts::get,
        ),
        put(
            "/api/cloud-accounts/{id}",
            needs(ManageCloudAccounts),
            "cloud_account.update",
            "Change a cloud account",
            accounts::update,
        ),
        delete(
            "/api/cloud-accounts/{id}",
            needs(ManageCloudAccounts),
            "cloud_account.delete",
            "Remove a cloud account",
            accounts::delete,
        )
        .responds(&[204]),
        post(
            "/api/cloud-accounts/{id}/scan",
            needs(RunScans),
            "scan.start",
            "Scan a cloud account",
            scans::scan_account,
        )
        .responds(&[202, 200]),
        // Cloud scans.
        get("/api/cloud-scans", needs(ViewScans), "scan.list", "The team's scans", scans::list),
        get("/api/cloud-scans/", needs(ViewScans), "scan.list", "The team's scans", scans::list),
        post("/api/cloud-scans", needs(RunScans), "scan.start", "Start a cloud scan", scans::initiate)
            .responds(&[202, 200]),
        post("/api/cloud-scans/", needs(RunScans), "scan.start", "Start a cloud scan", scans::initiate)
            .responds(&[202, 200]),
        post("/api/cloud-scans/initiate", needs(RunScans), "scan.start", "Start a cloud scan", scans::initiate)
            .responds(&[202, 200]),
        delete("/api/cloud-scans/{run_id}", needs(ManageScans), "scan.cancel", "Cancel a scan", scans::cancel)
            .responds(&[202, 200]),
        get(
            "/api/cloud-scans/{run_id}/status",
            needs(ViewScans),
            "scan.view",
            "A scan's status and progress",
            scans::status,
        ),
        get("/api/cloud-scans/{run_id}/summary", needs(ViewScans), "scan.view", "A scan's totals", scans::summary),
        get(
            "/api/cloud-scans/{run_id}/ocsf",
            needs(ViewScans),
            "scan.export",
            "A scan's findings as OCSF (NDJSON)",
            scans::ocsf,
        )
        .media(Media::Ndjson)
        .audited(),
        get(
            "/api/cloud-scans/{run_id}/artifacts",
            needs(ViewScans),
            "artifact.list",
            "A scan's raw scanner output",
            artifacts::list,
        ),
        get(
            "/api/cloud-scans/{run_id}/artifacts/{artifact_id}",
            needs(ViewScans),
            "artifact.download",
            "Download one raw artifact",
            artifacts::download,
        )
        .media(Media::Gzip)
        .audited(),
        // Findings and vulnerabilities.
        get("/api/cspm/findings", needs(ViewScans), "finding.list", "Findings", findings::list),
        get(
            "/api/cspm/findings/grouped",
            needs(ViewScans),
            "finding.list",
            "Findings grouped by check",
            findings::grouped,
        ),
        get("/api/cspm/findings/stats", needs(ViewScans), "finding.stats", "Finding counts", findings::stats),
        get(
            "/api/cspm/findings/compliance-scores",
            needs(ViewAssessments),
            "compliance.scores",
            "Compliance scores per account and framework",
            compliance::scores,
        ),
        get("/api/cspm/findings/{id}", needs(ViewScans), "finding.view", "A finding", findings::get),
        post(
            "/api/cspm/findings/{id}/resolve",
            needs(ManageRisks),
            "finding.resolve",
            "Resolve a finding",
            findings::resolve,
        ),
        post(
            "/api/cspm/findings/{id}/suppress",
            needs(ManageRisks),
            "finding.suppress",
            "Suppress a finding",
            findings::suppress,
        ),
        post(
            "/api/cspm/findings/{id}/unsuppress",
            needs(ManageRisks),
            "finding.unsuppress",
            "Lift a suppression",
            findings::unsuppress,
        ),
        get(
            "/api/vulnerabilities/occurrences",
            needs_scope(ViewScans, VulnerabilitiesRead),
            "vulnerability.list",
            "Vulnerability occurrences",
            vulnerabilities::list,
        ),
        get(
            "/api/vulnerabilities/occurrences/{id}",
            needs_scope(ViewScans, VulnerabilitiesRead),
            "vulnerability.view",
            "A vulnerability occurrence",
            vulnerabilities::get,
        ),
        put(
            "/api/vulnerabilities/occurrences/{id}/status",
            needs_scope(ManageRisks, VulnerabilitiesManage),
            "vulnerability.update_status",
            "Decide on a vulnerability occurrence",
            vulnerabilities::set_status,
        ),
        // Schedules.
        get("/api/schedules", needs(ViewScans), "schedule.list", "The team's schedules", schedules::list),
        get("/api/schedules/", needs(ViewScans), "schedule.list", "The team's schedules", schedules::list),
        post("/api/schedules", needs(ManageScans), "schedule.create", "Create a schedule", schedules::create)
            .responds(&[201]),
        post("/api/schedules/", needs(ManageScans), "schedule.create", "Create a schedule", schedules::create)
            .responds(&[201]),
        get("/api/schedules/{id}", needs(ViewScans), "schedule.view", "A schedule", schedules::get),
        put("/api/schedules/{id}", needs(ManageScans), "schedule.update", "Change a schedule", schedules::update),
        delete("/api/schedules/{id}", needs(ManageScans), "schedule.delete", "Remove a schedule", schedules::delete)
            .responds(&[204]),
        post("/api/schedules/{id}/pause", needs(ManageScans), "schedule.pause", "Pause a schedule", schedules::pause),
        post(
            "/api/schedules/{id}/resume",
            needs(ManageScans),
            "schedule.resume",
            "Resume a schedule",
            schedules::resume,
        ),
        get(
            "/api/schedules/{id}/history",
            needs(ViewScans),
            "schedule.history",
            "A schedule's fires",
            schedules::history,
        ),
        // Native scans.
        post(
            "/api/native-scans/network-discovery",
            needs(RunScans),
            "native_scan.start",
            "Start a network scan (nmap)",
            native::network_discovery,
        )
        .responds(&[202]),
        post(
            "/api/native-scans/web-vulnerability",
            needs(RunScans),
            "native_scan.start",
            "Start a web-vulnerability scan",
            native::web_vulnerability,
        )
        .responds(&[202]),
        post(
            "/api/native-scans/container-image",
            needs(RunScans),
            "native_scan.start",
            "Start a container-image scan",
            native::container_image,
        )
        .responds(&[202]),
        post(
            "/api/native-scans/filesystem",
            needs(RunScans),
            "native_scan.start",
            "Start a filesystem or IaC scan",
            native::filesystem,
        )
        .responds(&[202]),
        get(
            "/api/native-scans/results",
            needs(ViewScans),
            "native_scan.list",
            "Native scan results",
            native::results_list,
        ),
        get(
            "/api/native-scans/results/{scan_id}",
            needs(ViewScans),
            "native_scan.view",
            "A native scan result",
            native::result,
        ),
        // Threat intelligence.
        get(
            "/api/threat-intel/kev",
            needs_scope(ViewScans, VulnerabilitiesRead),
            "threat_intel.view",
            "The CISA KEV catalog's status",
            threat_intel::kev_status,
        ),
        post(
            "/api/threat-intel/kev/import",
            needs(ManageThreatIntel),
            "threat_intel.import",
            "Import the KEV catalog",
            threat_intel::kev_import,
        ),
        // Compliance engine.
        post(
            IMPORT_SCF_PATH,
            needs(AdministerCompliance),
            "compliance.import_catalog",
            "Import the operator's SCF catalog",
            compliance::import_scf,
        )
        .responds(&[201])
        .body_limit(import_max_bytes),
        get(
            "/api/common-controls/catalog",
            needs(ViewAssessments),
            "compliance.catalog",
            "The SCF catalog",
            compliance::catalog,
        ),
        get(
            "/api/common-controls/control/{scf_id}",
            needs(ViewAssessments),
            "compliance.control",
            "One control and its state",
            compliance::control,
        ),
        put(
            "/api/common-controls/control/{scf_id}/state",
            needs(AdministerCompliance),
            "control_state.set",
            "Override a control's state",
            compliance::set_state,
        ),
        delete(
            "/api/common-controls/control/{scf_id}/state",
            needs(AdministerCompliance),
            "control_state.clear",
            "Lift a control-state override",
            compliance::clear_state,
        ),
        post(
            "/api/compliance-engine/sync",
            needs(ManageAssessments),
            "compliance.sync",
            "Start a compliance sync",
            compliance::start_sync,
        )
        .responds(&[202, 200]),
        get(
            "/api/compliance-engine/sync/{job_id}",
            needs(ViewAssessments),
            "compliance.sync_view",
            "A compliance sync",
            compliance::sync_job,
        ),
        get(
            "/api/compliance-engine/status",
            needs(ViewAssessments),
            "compliance.status",
            "The team's compliance engine",
            compliance::status,
        ),
        put(
            "/api/compliance-engine/thresholds",
            needs(ManageAssessments),
            "compliance.threshold_set",
            "Set a framework's threshold",
            compliance::set_threshold,
        ),
    ];
    t.push(get("/api/health", Access::Public, "health", "Liveness", health));
    let doc = openapi::Cached::default();
    let cached = doc.clone();
    t.push(get(
        "/api/openapi.json",
        Access::Public,
        "openapi.document",
        "This API's OpenAPI 3.1 document",
        move || openapi::serve(cached.clone()),
    ));
    t.push(
        get("/api/docs", Access::Public, "openapi.page", "A page that renders the OpenAPI document", openapi::page)
            .media(Media::Html),
    );
    openapi::fill(&doc, &t);
    t
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
}

async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

pub const IMPORT_SCF_PATH: &str = "/api/common-controls/import-scf";

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// BSON to JSON; stored times (`*_at` fields, and `first_seen` / `last_seen`, epoch milliseconds)
/// become RFC 3339.
pub fn bson_to_json(b: bson::Bson) -> serde_json::Value {
    use bson::Bson;
    use serde_json::{Value, json};
    let is_time = |k: &str| k.ends_with("_at") || k == "first_seen" || k == "last_seen" || k == "until";
    match b {
        Bson::Document(d) => Value::Object(
            d.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Bson::Int64(ms) if is_time(&k) => json!(Timestamp::from_millis(ms).to_rfc3339()),
                        other => bson_to_json(other),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Bson::Array(a) => Value::Array(a.into_iter().map(bson_to_json).collect()),
        Bson::Int32(n) => json!(n),
        Bson::Int64(n) => json!(n),
        Bson::Double(f) => json!(f),
        Bson::Boolean(b) => json!(b),
        Bson::String(s) => json!(s),
        Bson::Null => Value::Null,
        other => json!(other.to_string()),
    }
}

/// A time as the API shows it: RFC 3339, in UTC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Time(String);

impl schemars::JsonSchema for Time {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Time".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn rfc3339(t: Timestamp) -> Time {
    Time(t.to_rfc3339())
}

pub fn rfc3339_opt(t: Option<Timestamp>) -> Option<Time> {
    t.map(rfc3339)
}
