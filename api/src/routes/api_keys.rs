//! API keys: create, list, rotate, revoke. (Placeholder until the handlers land.)

use crate::problem::ApiError;

macro_rules! placeholder {
    ($($name:ident),*) => { $(pub async fn $name() -> ApiError { ApiError::NotFound("no such route".into()) })* };
}
placeholder!(create, list, get, update, rotate, revoke, scopes, team_keys, admin_revoke);
