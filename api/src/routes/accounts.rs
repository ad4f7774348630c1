//! Cloud accounts: `/api/cloud-accounts` and `/api/cloud-accounts/{id}`. Credentials are validated per
//! provider, encrypted before they are stored, and never returned or logged.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bson::doc;
use cspm_shared::domain::provider::{Provider, ProviderAccountId, validate_region};
use cspm_shared::ids::{AccountId, RunId, ScheduleId};
use cspm_shared::store::accounts::{self, AccountDoc, DeleteOutcome};
use cspm_shared::store::schedules;
use cspm_shared::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::extract::{ApiJson, path_id};
use crate::problem::{ApiError, ApiResult, FieldError};
use crate::routes::{Time, rfc3339};
use crate::state::AppState;

/// Credential fields are strings; the set depends on the provider.
type Credentials = BTreeMap<String, String>;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = name_alias)]
pub struct CreateAccount {
    #[schemars(with = "cspm_shared::domain::provider::Provider")]
    provider: String,
    /// The provider's own id: AWS account id, GCP project id, Azure subscription id.
    account_id: String,
    #[serde(alias = "name")]
    account_name: String,
    #[serde(default)]
    regions: Option<Vec<String>>,
    /// A single region (the seed's field); merged into `regions`.
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    credentials: Option<Credentials>,
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    services: Option<Vec<String>>,
    #[serde(default)]
    excluded_checks: Option<Vec<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = name_alias)]
pub struct UpdateAccount {
    #[serde(default, alias = "name")]
    account_name: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    credentials: Option<Credentials>,
    /// `""` removes the override.
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    services: Option<Vec<String>>,
    #[serde(default)]
    excluded_checks: Option<Vec<String>>,
}

/// `name` is the seed's name of `account_name`.
fn name_alias(s: &mut schemars::Schema) {
    crate::openapi::alias(s, "name", "account_name");
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<CreatedAccount>)> {
    let mut errors = Vec::new();
    let provider: Option<Provider> = body.provider.parse().map_err(|e| field(&mut errors, "provider", e)).ok();
    let provider_account = provider.and_then(|p| {
        ProviderAccountId::parse(p, &body.account_id).map_err(|e| field(&mut errors, "account_id", e)).ok()
    });
    let name = check_name(&body.account_name).map_err(|e| field(&mut errors, "account_name", e)).ok();
    let mut regions = body.regions.unwrap_or_default();
    regions.extend(body.region);
    let regions = check_regions(&regions).map_err(|e| field(&mut errors, "regions", e)).ok();
    if let (Some(p), Some(c)) = (provider, body.credentials.as_ref())
        && let Err(e) = check_credentials(p, c)
    {
        field(&mut errors, "credentials", e);
    }
    let endpoint_url = match (provider, body.endpoint_url.as_deref()) {
        (_, None) => None,
        (Some(p), Some(url)) => {
            check_endpoint(p, url).map_err(|e| field(&mut errors, "endpoint_url", e)).ok().flatten()
        }
        (None, Some(_)) => None,
    };
    let services =
        check_names(body.services.as_deref().unwrap_or_default()).map_err(|e| field(&mut errors, "services", e)).ok();
    let excluded_checks = check_names(body.excluded_checks.as_deref().unwrap_or_default())
        .map_err(|e| field(&mut errors, "excluded_checks", e))
        .ok();
    let (Some(provider), Some(provider_account), Some(name), Some(regions), Some(services), Some(excluded_checks)) =
        (provider, provider_account, name, regions, services, excluded_checks)
    else {
        return Err(unprocessable(errors));
    };
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let id = AccountId::new();
    let now = Timestamp::now();
    let account = AccountDoc {
        credentials_encrypted: body.credentials.as_ref().map(|c| seal(&s, &caller, &id, c)),
        credential_type: body.credentials.as_ref().map(|_| credential_type(provider).to_string()),
        endpoint_url,
        services,
        excluded_checks,
        id,
        team_id: caller.team.clone(),
        provider,
        provider_account_id: provider_account.as_str().to_string(),
        name,
        regions,
        status: "active".into(),
        active_run_id: None,
        active_run_claimed_at: None,
        last_scan_run_id: None,
        schedules_paused_at: None,
        schedules_paused_reason: None,
        created_by: Some(caller.user.clone()),
        created_at: now,
        updated_at: now,
    };
    match accounts::insert(&s.mongo, &account).await {
        Ok(()) => {}
        Err(cspm_shared::error::StoreError::Duplicate) => {
            return Err(ApiError::Conflict(format!(
                "{} account {} is already connected to this team",
                provider,
                provider_account.as_str()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(account.id = %account.id, provider = %provider, "cloud account connected");
    let mut body = CreatedAccount { account: view(&account), schedules: None };
    if s.config.auto_schedule {
        // The account exists whatever happens here; a failure is reported, and the schedules can be
        // made through /api/schedules.
        match schedules::create_account_defaults(&s.mongo, &caller.team, &account.id, Some(caller.user.clone()), now)
            .await
        {
            Ok(made) => body.schedules = Some(made.into_iter().map(|m| m.id).collect()),
            Err(e) => {
                tracing::warn!(account.id = %account.id, error = %e, "could not create the default schedules");
                body.schedules = Some(Vec::new());
            }
        }
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// A connected account, with the default schedules made for it (when `CSPM_AUTO_SCHEDULE` is on).
#[derive(Serialize, JsonSchema)]
pub struct CreatedAccount {
    #[serde(flatten)]
    account: AccountView,
    /// The ids of the default schedules; present only when the API makes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedules: Option<Vec<ScheduleId>>,
}

#[derive(Serialize, JsonSchema)]
pub struct AccountList {
    accounts: Vec<AccountView>,
    total: usize,
}

pub async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<AccountList>> {
    let found = accounts::list(&s.mongo, &caller.team).await?;
    let accounts: Vec<AccountView> = found.iter().map(view).collect();
    Ok(Json(AccountList { total: accounts.len(), accounts }))
}

pub async fn get(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<AccountView>> {
    let id: AccountId = path_id(&id, "cloud account")?;
    let account =
        accounts::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("cloud account"))?;
    Ok(Json(view(&account)))
}

pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateAccount>,
) -> ApiResult<Json<AccountView>> {
    let id: AccountId = path_id(&id, "cloud account")?;
    let existing =
        accounts::get(&s.mongo, &caller.team, &id).await?.ok_or_else(|| ApiError::not_found("cloud account"))?;
    let mut errors = Vec::new();
    let mut set = doc! {};
    if let Some(n) = &body.account_name {
        match check_name(n) {
            Ok(n) => {
                set.insert("name", n);
            }
            Err(e) => field(&mut errors, "account_name", e),
        }
    }
    if let Some(r) = &body.regions {
        match check_regions(r) {
            Ok(r) => {
                set.insert("regions", r);
            }
            Err(e) => field(&mut errors, "regions", e),
        }
    }
    if let Some(url) = &body.endpoint_url {
        match check_endpoint(existing.provider, url) {
            Ok(u) => {
                set.insert("endpoint_url", u);
            }
            Err(e) => field(&mut errors, "endpoint_url", e),
        }
    }
    for (name, list) in [("services", &body.services), ("excluded_checks", &body.excluded_checks)] {
        if let Some(list) = list {
            match check_names(list) {
                Ok(l) => {
                    set.insert(name, l);
                }
                Err(e) => field(&mut errors, name, e),
            }
        }
    }
    if let Some(c) = &body.credentials {
        match check_credentials(existing.provider, c) {
            Ok(()) => {
                set.insert("credentials_encrypted", seal(&s, &caller, &id, c));
                set.insert("credential_type", credential_type(existing.provider));
            }
            Err(e) => field(&mut errors, "credentials", e),
        }
    }
    if !errors.is_empty() {
        return Err(unprocessable(errors));
    }
    let new_credentials = set.contains_key("credentials_encrypted");
    let mut updated = accounts::update(&s.mongo, &caller.team, &id, set)
        .await?
        .ok_or_else(|| ApiError::not_found("cloud account"))?;
    if new_credentials && updated.schedules_paused_at.is_some() {
        // New credentials are the fix the automatic pause waits for.
        let n = schedules::resume_auto_paused(&s.mongo, &id, Timestamp::now()).await?;
        tracing::info!(account.id = %id, resumed = n, "credentials updated: resumed the paused schedules");
        updated.schedules_paused_at = None;
        updated.schedules_paused_reason = None;
    }
    Ok(Json(view(&updated)))
}

pub async fn delete(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: AccountId = path_id(&id, "cloud account")?;
    match accounts::delete(&s.mongo, &caller.team, &id).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT),
        DeleteOutcome::NotFound => Err(ApiError::not_found("cloud account")),
        DeleteOutcome::ScanActive(run) => {
            Err(ApiError::Conflict(format!("scan {run} of this account is still active; cancel it first")))
        }
    }
}

/// A cloud account as the API shows it: never its credentials.
#[derive(Serialize, JsonSchema)]
pub struct AccountView {
    id: AccountId,
    provider: Provider,
    /// The provider's own id: AWS account id, GCP project id, Azure subscription id.
    account_id: String,
    account_name: String,
    regions: Vec<String>,
    status: String,
    has_credentials: bool,
    credential_type: Option<String>,
    endpoint_url: Option<String>,
    services: Vec<String>,
    excluded_checks: Vec<String>,
    active_run_id: Option<RunId>,
    last_scan_run_id: Option<RunId>,
    schedules_paused: bool,
    schedules_paused_reason: Option<String>,
    created_at: Time,
    updated_at: Time,
}

pub fn view(a: &AccountDoc) -> AccountView {
    AccountView {
        id: a.id.clone(),
        provider: a.provider,
        account_id: a.provider_account_id.clone(),
        account_name: a.name.clone(),
        regions: a.regions.clone(),
        status: a.status.clone(),
        has_credentials: a.credentials_encrypted.is_some(),
        credential_type: a.credential_type.clone(),
        endpoint_url: a.endpoint_url.clone(),
        services: a.services.clone(),
        excluded_checks: a.excluded_checks.clone(),
        active_run_id: a.active_run_id.clone(),
        last_scan_run_id: a.last_scan_run_id.clone(),
        schedules_paused: a.schedules_paused_at.is_some(),
        schedules_paused_reason: a.schedules_paused_reason.clone(),
        created_at: rfc3339(a.created_at),
        updated_at: rfc3339(a.updated_at),
    }
}

fn field(errors: &mut Vec<FieldError>, name: &str, message: impl Into<String>) {
    errors.push(FieldError { field: name.to_string(), message: message.into() });
}

fn unprocessable(errors: Vec<FieldError>) -> ApiError {
    let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    ApiError::Unprocessable { detail, errors }
}

fn check_name(name: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control) {
        Err("must be 1-200 printable characters".into())
    } else {
        Ok(n.to_string())
    }
}

/// An AWS endpoint override: an absolute http(s) URL of a host, without credentials, query or
/// fragment. `""` clears it. Where it may point (loopback, private ranges) is checked by the worker
/// before each scan, with the same policy as native targets.
fn check_endpoint(provider: Provider, url: &str) -> Result<Option<String>, String> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if provider != Provider::Aws {
        return Err("only AWS accounts take an endpoint override".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials (give them in `credentials`)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || url.len() > 512 {
        return Err("must be a plain endpoint URL (no query or fragment, at most 512 characters)".into());
    }
    Ok(Some(parsed.as_str().trim_end_matches('/').to_string()))
}

/// Prowler service and check names: lowercase letters, digits and `_`, at most 200 of them.
fn check_names(names: &[String]) -> Result<Vec<String>, String> {
    if names.len() > 200 {
        return Err("at most 200 names".into());
    }
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim();
        if n.is_empty()
            || n.len() > 100
            || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("`{n}` is not a Prowler name (lowercase letters, digits and _)"));
        }
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    Ok(out)
}

fn check_regions(regions: &[String]) -> Result<Vec<String>, String> {
    if regions.len() > 64 {
        return Err("at most 64 regions".into());
    }
    let mut out: Vec<String> = Vec::new();
    for r in regions {
        let r = validate_region(r)?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The credential fields each provider needs (all strings). Unknown fields are refused so that a typo
/// does not silently drop a secret.
fn check_credentials(provider: Provider, c: &Credentials) -> Result<(), String> {
    let (required, optional): (&[&str], &[&str]) = match provider {
        Provider::Aws => (&["access_key_id", "secret_access_key"], &["session_token", "region"]),
        Provider::Gcp => (&["service_account_json"], &[]),
        Provider::Azure => (&["client_id", "client_secret", "tenant_id"], &[]),
    };
    for key in required {
        if c.get(*key).is_none_or(|v| v.trim().is_empty()) {
            return Err(format!("`{key}` is required for {provider}"));
        }
    }
    for key in c.keys() {
        if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
            return Err(format!("unknown credential field `{key}` for {provider}"));
        }
    }
    if c.values().map(String::len).sum::<usize>() > 64 * 1024 {
        return Err("credentials are larger than 64 KiB".into());
    }
    if provider == Provider::Gcp {
        let sa = c.get("service_account_json").map(String::as_str).unwrap_or_default();
        let parsed: Result<serde_json::Map<String, Value>, _> = serde_json::from_str(sa);
        if parsed.is_err() {
            return Err("`service_account_json` must be the service account key file (a JSON object)".into());
        }
    }
    Ok(())
}

fn credential_type(p: Provider) -> &'static str {
    match p {
        Provider::Aws => "access_key",
        Provider::Gcp => "service_account",
        Provider::Azure => "client_secret",
    }
}

fn seal(s: &AppState, caller: &Caller, id: &AccountId, c: &Credentials) -> String {
    let plain = serde_json::to_vec(c).unwrap_or_default();
    s.config.cipher.encrypt(&plain, &AccountDoc::credential_binding(&caller.team, id))
}
