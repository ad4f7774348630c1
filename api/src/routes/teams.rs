//! Teams and their members. A caller sees the teams they belong to (any other team is 404) and manages
//! the members of their active team only. Adding, changing or removing an administrator — or making
//! someone one — needs the administrator role; a team never loses its last administrator.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cspm_shared::auth::password::check_policy;
use cspm_shared::domain::role::Role;
use cspm_shared::error::StoreError;
use cspm_shared::ids::{TeamId, UserId};
use cspm_shared::store::sessions;
use cspm_shared::store::users::{self, TeamDoc, UserDoc};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiJson, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// A team, with the caller's role in it.
#[derive(Serialize, JsonSchema)]
pub struct TeamView {
    id: TeamId,
    name: String,
    created_at: super::Time,
    role: Option<Role>,
    /// Whether it is the session's active team.
    active: bool,
}

#[derive(Serialize, JsonSchema)]
pub struct TeamList {
    teams: Vec<TeamView>,
    total: usize,
}

/// A member of a team.
#[derive(Serialize, JsonSchema)]
pub struct MemberView {
    user_id: UserId,
    email: String,
    name: String,
    role: Option<Role>,
    status: String,
    last_login_at: Option<super::Time>,
}

#[derive(Serialize, JsonSchema)]
pub struct MemberList {
    members: Vec<MemberView>,
    total: usize,
}

/// A member removed from the team, and how many of their sessions in it ended.
#[derive(Serialize, JsonSchema)]
pub struct MemberRemoved {
    user_id: UserId,
    /// Always `removed`.
    status: &'static str,
    sessions_ended: u64,
}

/// How many sessions of a member ended.
#[derive(Serialize, JsonSchema)]
pub struct SessionsRevoked {
    user_id: UserId,
    sessions_ended: u64,
}

fn team_view(t: &TeamDoc, role: Option<Role>, active: bool) -> TeamView {
    TeamView { id: t.id.clone(), name: t.name.clone(), created_at: super::rfc3339(t.created_at), role, active }
}

fn member_view(u: &UserDoc, team: &TeamId) -> MemberView {
    MemberView {
        user_id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role_in(team),
        status: u.status.clone(),
        last_login_at: super::rfc3339_opt(u.last_login_at),
    }
}

async fn me(s: &AppState, caller: &Caller) -> ApiResult<UserDoc> {
    users::get(&s.mongo, &caller.user).await?.ok_or_else(|| ApiError::Unauthorized("unknown user".into()))
}

/// A team the caller belongs to; any other is not found.
fn member_team(user: &UserDoc, raw: &str) -> ApiResult<(TeamId, Role)> {
    let id: TeamId = path_id(raw, "team")?;
    let role = user.role_in(&id).ok_or_else(|| ApiError::not_found("team"))?;
    Ok((id, role))
}

/// The caller's active team, named in the path; another team is not found.
fn active_team(caller: &Caller, raw: &str) -> ApiResult<TeamId> {
    let id: TeamId = path_id(raw, "team")?;
    if id != caller.team {
        return Err(ApiError::not_found("team"));
    }
    Ok(id)
}

pub async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TeamList>> {
    let user = me(&s, &caller).await?;
    let ids: Vec<TeamId> = user.memberships.iter().map(|m| m.team_id.clone()).collect();
    let teams = users::teams(&s.mongo, &ids).await?;
    let teams: Vec<TeamView> = teams.iter().map(|t| team_view(t, user.role_in(&t.id), t.id == caller.team)).collect();
    Ok(Json(TeamList { total: teams.len(), teams }))
}

#[derive(Deserialize, JsonSchema)]
pub struct CreateTeam {
    name: String,
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, Json<TeamView>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    let team = match users::create_team(&s.mongo, name).await {
        Ok(t) => t,
        Err(StoreError::Duplicate) => return Err(ApiError::Conflict(format!("a team named `{name}` already exists"))),
        Err(e) => return Err(e.into()),
    };
    users::add_membership(&s.mongo, &caller.user, &team.id, Role::Admin).await?;
    Ok((StatusCode::CREATED, Json(team_view(&team, Some(Role::Admin), false))))
}

pub async fn current(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TeamView>> {
    let team = users::get_team(&s.mongo, &caller.team).await?.ok_or_else(|| ApiError::not_found("team"))?;
    Ok(Json(team_view(&team, Some(caller.role), true)))
}

pub async fn get(State(s): State<AppState>, caller: Caller, Path(team_id): Path<String>) -> ApiResult<Json<TeamView>> {
    let user = me(&s, &caller).await?;
    let (id, role) = member_team(&user, &team_id)?;
    let team = users::get_team(&s.mongo, &id).await?.ok_or_else(|| ApiError::not_found("team"))?;
    Ok(Json(team_view(&team, Some(role), id == caller.team)))
}

/// Makes a team the session's active team (and the user's default at the next sign-in).
pub async fn switch(
    State(s): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
) -> ApiResult<Json<TeamView>> {
    let user = me(&s, &caller).await?;
    let (id, role) = member_team(&user, &team_id)?;
    let sid = caller.session().ok_or_else(|| ApiError::Forbidden("switching team needs a signed-in session".into()))?;
    sessions::set_team(&s.mongo, sid, &id).await?;
    users::set_active_team(&s.mongo, &user.id, &id).await?;
    let team = users::get_team(&s.mongo, &id).await?.ok_or_else(|| ApiError::not_found("team"))?;
    Ok(Json(team_view(&team, Some(role), true)))
}

pub async fn members(
    State(s): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
) -> ApiResult<Json<MemberList>> {
    let team = active_team(&caller, &team_id)?;
    let list = users::members(&s.mongo, &team).await?;
    let members: Vec<MemberView> = list.iter().map(|u| member_view(u, &team)).collect();
    Ok(Json(MemberList { total: members.len(), members }))
}

#[derive(Deserialize, JsonSchema)]
pub struct AddMember {
    #[schemars(email)]
    email: String,
    #[schemars(with = "cspm_shared::domain::role::Role")]
    role: String,
    /// For a new user: their name and first password (the password policy applies).
    name: Option<String>,
    #[schemars(with = "Option<crate::openapi::NewPassword>")]
    password: Option<SecretString>,
}

fn parse_role(raw: &str) -> ApiResult<Role> {
    raw.parse::<Role>().map_err(|e| ApiError::invalid("role", e))
}

/// Only administrators grant the administrator role, or change or remove an administrator.
fn guard_admin(caller: &Caller, involved: bool) -> ApiResult<()> {
    if involved && caller.role != Role::Admin {
        return Err(ApiError::Forbidden("only an administrator can grant, change or remove the admin role".into()));
    }
    Ok(())
}

pub async fn add_member(
    State(s): State<AppState>,
    caller: Caller,
    Path(team_id): Path<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> ApiResult<(StatusCode, Json<MemberView>)> {
    let team = active_team(&caller, &team_id)?;
    let role = parse_role(&body.role)?;
    guard_admin(&caller, role == Role::Admin)?;
    let email = users::normalise_email(&body.email);
    if email.len() > 320 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::invalid("email", "is not an email address"));
    }
    let user = match users::find_by_email(&s.mongo, &email).await? {
        Some(u) => {
            if !users::add_membership(&s.mongo, &u.id, &team, role).await? {
                return Err(ApiError::Conflict("the user is already a member of this team".into()));
            }
            u
        }
        None => {
            let name = body.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).ok_or_else(|| {
                ApiError::invalid("name", "is required to create a new user (no user has this email)")
            })?;
            if name.chars().count() > 200 {
                return Err(ApiError::invalid("name", "must be at most 200 characters"));
            }
            let password = body.password.ok_or_else(|| {
                ApiError::invalid("password", "is required to create a new user (no user has this email)")
            })?;
            check_policy(password.expose_secret()).map_err(|why| ApiError::invalid("password", why))?;
            let hash = super::auth::hash_blocking(password.expose_secret().to_string()).await?;
            match users::create_user(&s.mongo, &email, name, hash, &team, role).await {
                Ok(u) => u,
                Err(StoreError::Duplicate) => {
                    return Err(ApiError::Conflict("a user with this email was created at the same time".into()));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let user = users::get(&s.mongo, &user.id).await?.unwrap_or(user);
    Ok((StatusCode::CREATED, Json(member_view(&user, &team))))
}

/// The member named in the path, in the caller's active team.
async fn target_member(
    s: &AppState,
    caller: &Caller,
    team_id: &str,
    user_id: &str,
) -> ApiResult<(TeamId, UserDoc, Role)> {
    let team = active_team(caller, team_id)?;
    let id: UserId = path_id(user_id, "member")?;
    let user = users::get(&s.mongo, &id).await?.ok_or_else(|| ApiError::not_found("member"))?;
    let role = user.role_in(&team).ok_or_else(|| ApiError::not_found("member"))?;
    Ok((team, user, role))
}

/// Refuses to leave the team without an administrator.
async fn keep_an_admin(s: &AppState, team: &TeamId, current: Role) -> ApiResult<()> {
    if current == Role::Admin && users::admin_count(&s.mongo, team).await? <= 1 {
        return Err(ApiError::Conflict("this is the team's last administrator; make someone else admin first".into()));
    }
    Ok(())
}

#[derive(Deserialize, JsonSchema)]
pub struct UpdateMember {
    #[schemars(with = "cspm_shared::domain::role::Role")]
    role: String,
}

pub async fn update_member(
    State(s): State<AppState>,
    caller: Caller,
    Path((team_id, user_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateMember>,
) -> ApiResult<Json<MemberView>> {
    let role = parse_role(&body.role)?;
    let (team, user, current) = target_member(&s, &caller, &team_id, &user_id).await?;
    guard_admin(&caller, role == Role::Admin || current == Role::Admin)?;
    if role != Role::Admin {
        keep_an_admin(&s, &team, current).await?;
    }
    if !users::set_role(&s.mongo, &user.id, &team, role).await? {
        return Err(ApiError::not_found("member"));
    }
    let user = users::get(&s.mongo, &user.id).await?.ok_or_else(|| ApiError::not_found("member"))?;
    Ok(Json(member_view(&user, &team)))
}

pub async fn remove_member(
    State(s): State<AppState>,
    caller: Caller,
    Path((team_id, user_id)): Path<(String, String)>,
) -> ApiResult<Json<MemberRemoved>> {
    let (team, user, current) = target_member(&s, &caller, &team_id, &user_id).await?;
    guard_admin(&caller, current == Role::Admin)?;
    keep_an_admin(&s, &team, current).await?;
    if !users::remove_membership(&s.mongo, &user.id, &team).await? {
        return Err(ApiError::not_found("member"));
    }
    let ended = sessions::end_in_team(&s.mongo, &user.id, &team).await?;
    Ok(Json(MemberRemoved { user_id: user.id, status: "removed", sessions_ended: ended }))
}

pub async fn revoke_sessions(
    State(s): State<AppState>,
    caller: Caller,
    Path((team_id, user_id)): Path<(String, String)>,
) -> ApiResult<Json<SessionsRevoked>> {
    let (_, user, current) = target_member(&s, &caller, &team_id, &user_id).await?;
    guard_admin(&caller, current == Role::Admin)?;
    let ended = sessions::end_all(&s.mongo, &user.id, None).await?;
    Ok(Json(SessionsRevoked { user_id: user.id, sessions_ended: ended }))
}
