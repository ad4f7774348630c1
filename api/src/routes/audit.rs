//! The audit trail: `GET /api/audit-trail`, `GET /api/audit-trail/user/{user_id}` and
//! `GET /api/audit-trail/actions`. The events are written by the access layer after every write
//! (`cspm_shared::store::audit::insert`); these routes only read them.
//!
//! Who sees what: a caller whose role holds `view_team_audit` (an administrator; through an API key,
//! only one with the scope `admin:audit`) reads the whole team's trail and may filter it by user. Anyone
//! else reads only their own events: a `user_id` naming someone else is refused (403) rather than
//! answered with an empty page, so that a client is not misled into thinking that user did nothing.
//! Another team's events are never in any answer.

use axum::Json;
use axum::extract::{Path, State};
use cspm_shared::audit::AuditEvent;
use cspm_shared::domain::role::{Permission, Role};
use cspm_shared::ids::{ApiKeyId, AuditId, TeamId, UserId};
use cspm_shared::store::audit::{self, AuditQuery};
use cspm_shared::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiQuery, page, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::{Time, rfc3339};
use crate::state::AppState;

/// Longest action pattern accepted.
const MAX_PATTERN_CHARS: usize = 100;
const DAY_MS: i64 = 86_400_000;

#[derive(Deserialize, schemars::JsonSchema)]
pub struct ListQuery {
    user_id: Option<String>,
    action: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    success_only: Option<String>,
    limit: Option<i64>,
    skip: Option<u64>,
}

/// Whether the caller reads the team's whole trail (else only their own events).
fn team_wide(caller: &Caller) -> bool {
    caller.require(Permission::ViewTeamAudit).is_ok()
}

/// A time bound: RFC 3339, or a date (`2026-03-01`) meaning its first millisecond (`start_date`) or its
/// last (`end_date`), so that a range of dates includes both days.
fn time_bound(field: &str, raw: &str, end_of_day: bool) -> ApiResult<Timestamp> {
    let raw = raw.trim();
    let invalid = || ApiError::invalid(field, format!("`{raw}` is not an RFC 3339 time or a YYYY-MM-DD date"));
    let is_date = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if is_date {
        let start = bson::DateTime::parse_rfc3339_str(format!("{raw}T00:00:00Z")).map_err(|_| invalid())?;
        let ms = start.timestamp_millis();
        return Ok(Timestamp::from_millis(if end_of_day { ms + DAY_MS - 1 } else { ms }));
    }
    bson::DateTime::parse_rfc3339_str(raw).map(|d| Timestamp::from_millis(d.timestamp_millis())).map_err(|_| invalid())
}

/// An action pattern: letters, digits, `_`, `-`, `:`, `.` and the wildcard `*` (compared lower-cased,
/// as the vocabulary is).
fn action_pattern(raw: &str) -> ApiResult<Option<String>> {
    let p = raw.trim().to_ascii_lowercase();
    if p.is_empty() {
        return Ok(None);
    }
    if p.chars().count() > MAX_PATTERN_CHARS || !p.chars().all(|c| c.is_ascii_alphanumeric() || "_-:.*".contains(c)) {
        return Err(ApiError::invalid(
            "action",
            format!(
                "must be at most {MAX_PATTERN_CHARS} letters, digits, `_`, `-`, `:` and `.`, \
                 with `*` as a wildcard (`scan.*`)"
            ),
        ));
    }
    Ok(Some(p))
}

fn flag(field: &str, raw: Option<&str>) -> ApiResult<bool> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::invalid(field, "must be true or false")),
    }
}

/// The query of a caller: confined to themselves unless they read the team's trail.
fn build(caller: &Caller, q: ListQuery, user: Option<UserId>) -> ApiResult<AuditQuery> {
    let (skip, limit) = page(q.skip, q.limit, 50, 500)?;
    let user = match (user, q.user_id.as_deref().map(str::trim).filter(|s| !s.is_empty())) {
        (Some(u), _) => Some(u),
        (None, Some(raw)) => Some(raw.parse::<UserId>().map_err(|_| ApiError::invalid("user_id", "not a user id"))?),
        (None, None) => None,
    };
    let wide = team_wide(caller);
    if let Some(u) = &user
        && !wide
        && *u != caller.user
    {
        return Err(ApiError::Forbidden(format!(
            "your role ({}) may read only your own audit events (the team's trail needs view_team_audit)",
            caller.role
        )));
    }
    let start = q.start_date.as_deref().map(|s| time_bound("start_date", s, false)).transpose()?;
    let end = q.end_date.as_deref().map(|s| time_bound("end_date", s, true)).transpose()?;
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(ApiError::invalid("end_date", "is before start_date"));
    }
    Ok(AuditQuery {
        team: caller.team.clone(),
        actor: (!wide).then(|| caller.user.clone()),
        user,
        action: q.action.as_deref().map(action_pattern).transpose()?.flatten(),
        start,
        end,
        success_only: flag("success_only", q.success_only.as_deref())?,
        skip,
        limit,
    })
}

/// A page of audit events, newest first.
#[derive(Serialize, JsonSchema)]
pub struct EventList {
    events: Vec<EventView>,
    total: u64,
    skip: u64,
    limit: i64,
}

/// The actions recorded, and whose (`team` or `own`).
#[derive(Serialize, JsonSchema)]
pub struct Actions {
    actions: Vec<String>,
    scope: &'static str,
}

/// One audited request.
#[derive(Serialize, JsonSchema)]
pub struct EventView {
    id: AuditId,
    at: Time,
    team_id: Option<TeamId>,
    actor_id: Option<UserId>,
    actor_email: Option<String>,
    actor_role: Option<Role>,
    api_key_id: Option<ApiKeyId>,
    method: String,
    path: String,
    /// The route template (`/api/cloud-scans/{run_id}`), or the path when no route matched.
    route: String,
    /// `<resource>.<verb>` (`scan.start`).
    action: String,
    status: u16,
    success: bool,
    duration_ms: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    /// The redacted body summary.
    body: Option<String>,
    /// The object acted on (the first path parameter).
    target_id: Option<String>,
}

async fn answer(s: &AppState, q: AuditQuery) -> ApiResult<Json<EventList>> {
    let (events, total) = audit::query(&s.mongo, &q).await?;
    let events: Vec<EventView> = events.iter().map(view).collect();
    Ok(Json(EventList { events, total, skip: q.skip, limit: q.limit }))
}

/// `GET /api/audit-trail?user_id=&action=&start_date=&end_date=&success_only=&limit=&skip=`: newest
/// first, at most 500 a page (default 50).
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<EventList>> {
    let q = build(&caller, q, None)?;
    answer(&s, q).await
}

/// `GET /api/audit-trail/user/{user_id}`: one user's events, with the other filters of the list.
pub async fn for_user(
    State(s): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<EventList>> {
    let user: UserId = path_id(&user_id, "user")?;
    // Someone outside the caller's team is not found, like any other team's object.
    let member = cspm_shared::store::users::get(&s.mongo, &user).await?;
    if member.and_then(|m| m.role_in(&caller.team)).is_none() {
        return Err(ApiError::not_found("user"));
    }
    let q = build(&caller, q, Some(user))?;
    answer(&s, q).await
}

/// `GET /api/audit-trail/actions`: the actions recorded, for a filter menu (the caller's own unless
/// they read the team's trail).
pub async fn actions(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Actions>> {
    let wide = team_wide(&caller);
    let actor = (!wide).then_some(&caller.user);
    let actions = audit::actions(&s.mongo, &caller.team, actor).await?;
    Ok(Json(Actions { actions, scope: if wide { "team" } else { "own" } }))
}

fn view(e: &AuditEvent) -> EventView {
    EventView {
        id: e.id.clone(),
        at: rfc3339(e.at),
        team_id: e.team_id.clone(),
        actor_id: e.actor_id.clone(),
        actor_email: e.actor_email.clone(),
        actor_role: e.actor_role,
        api_key_id: e.api_key_id.clone(),
        method: e.method.clone(),
        path: e.path.clone(),
        route: e.route.clone(),
        action: e.action.clone(),
        status: e.status,
        success: e.success,
        duration_ms: e.duration_ms,
        ip: e.ip.clone(),
        user_agent: e.user_agent.clone(),
        body: e.body.clone(),
        target_id: e.target_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_read_as_documented() {
        let day = time_bound("start_date", "2026-03-01", false).expect("a date");
        assert_eq!(day.to_rfc3339(), "2026-03-01T00:00:00Z");
        let end = time_bound("end_date", "2026-03-01", true).expect("a date");
        assert_eq!(end.to_rfc3339(), "2026-03-01T23:59:59.999Z");
        let t = time_bound("start_date", "2026-03-01T10:00:00+02:00", false).expect("a time");
        assert_eq!(t.to_rfc3339(), "2026-03-01T08:00:00Z");
        for bad in ["yesterday", "2026-13-01", "2026-3-1", "", "1700000000"] {
            match time_bound("end_date", bad, true) {
                Err(ApiError::Unprocessable { errors, .. }) => assert_eq!(errors[0].field, "end_date"),
                other => panic!("`{bad}` gave {other:?}"),
            }
        }
    }

    #[test]
    fn action_patterns_are_checked_and_lower_cased() {
        assert_eq!(action_pattern(" Scan.* ").ok().flatten().as_deref(), Some("scan.*"));
        assert_eq!(action_pattern("").ok().flatten(), None);
        assert!(action_pattern("scan.(start|cancel)").is_err());
        assert!(action_pattern("^scan").is_err());
        assert!(action_pattern(&"a".repeat(101)).is_err());
    }

    #[test]
    fn success_only_takes_booleans() {
        assert!(flag("success_only", Some("true")).expect("true"));
        assert!(!flag("success_only", None).expect("absent"));
        assert!(!flag("success_only", Some("0")).expect("0"));
        assert!(flag("success_only", Some("yes please")).is_err());
    }
}
