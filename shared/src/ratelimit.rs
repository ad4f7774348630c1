//! Fixed-window rate limits shared by every API replica (Redis). (Placeholder until the limiter lands.)

use std::time::Duration;

use crate::error::StoreResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

#[derive(Clone)]
pub struct RateLimiter {
    _namespace: String,
}

impl RateLimiter {
    pub fn new(_conn: redis::aio::ConnectionManager, namespace: String) -> Self {
        Self { _namespace: namespace }
    }

    pub async fn hit(&self, _bucket: &str, limit: u32, _window: Duration) -> StoreResult<Decision> {
        Ok(Decision { allowed: true, limit, remaining: limit, reset_secs: 60 })
    }
}
