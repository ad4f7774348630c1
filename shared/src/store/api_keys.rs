//! API keys (`cspm_platform.api_keys`). (Placeholder until the store lands.)

use crate::db::Mongo;
use crate::domain::scope::Scope;
use crate::error::StoreResult;
use crate::ids::{ApiKeyId, TeamId, UserId};
use crate::time::Timestamp;

pub struct ApiKeyDoc {
    pub id: ApiKeyId,
    pub owner_id: UserId,
    pub team_id: TeamId,
    pub scopes: Vec<Scope>,
    pub rate_limit_per_minute: u32,
}

pub enum KeyRefusal {
    Unknown,
    Expired,
    Revoked,
}

pub async fn authenticate(
    _db: &Mongo,
    _presented: &str,
    _now: Timestamp,
) -> StoreResult<Result<ApiKeyDoc, KeyRefusal>> {
    Ok(Err(KeyRefusal::Unknown))
}

pub async fn record_use(_db: &Mongo, _id: &ApiKeyId, _now: Timestamp) -> StoreResult<()> {
    Ok(())
}
