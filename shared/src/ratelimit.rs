//! Fixed-window rate limits shared by every API replica (Redis).
//!
//! A bucket (for example `key:{key_id}`) is one Redis counter, `{namespace}ratelimit:{bucket}`, that
//! lives for one window from its first hit. Counting and arming the expiry happen in one Lua script, so
//! that replicas racing on a bucket never lose a hit and a counter never outlives its window.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::error::StoreResult;

/// The answer to one hit: whether it is allowed, and what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Hits left in the window after this one.
    pub remaining: u32,
    /// Seconds until the window ends (rounded up; at least 1).
    pub reset_secs: u64,
}

impl Decision {
    /// The decision for the `count`th hit of a window that ends in `ttl_ms`.
    pub fn from_count(count: u64, ttl_ms: u64, limit: u32) -> Self {
        let limit_wide = u64::from(limit);
        Self {
            allowed: count <= limit_wide,
            limit,
            remaining: u32::try_from(limit_wide.saturating_sub(count)).unwrap_or(0),
            reset_secs: ttl_ms.div_ceil(1000).max(1),
        }
    }
}

/// Counts the hit and returns the count and the milliseconds left in the window. The counter's expiry
/// is set by its first hit; a counter found without one (left by a hand or an older version) is given
/// the window again rather than counting forever.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

/// A handle on the limiter. Cheap to clone; the connection reconnects by itself.
#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    namespace: String,
    script: Script,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `namespace` prefixes every key, as the queue namespace does (`Queues::settings().namespace`).
    pub fn new(conn: ConnectionManager, namespace: String) -> Self {
        Self { conn, namespace, script: Script::new(HIT) }
    }

    /// The Redis key of a bucket.
    pub fn key(&self, bucket: &str) -> String {
        format!("{}ratelimit:{bucket}", self.namespace)
    }

    /// Counts one hit on `bucket`, allowing `limit` per `window`. Redis being away is
    /// `StoreError::QueueUnavailable` (the API answers 503).
    pub async fn hit(&self, bucket: &str, limit: u32, window: Duration) -> StoreResult<Decision> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let (count, ttl): (u64, i64) = self.script.key(self.key(bucket)).arg(window_ms).invoke_async(&mut conn).await?;
        Ok(Decision::from_count(count, u64::try_from(ttl).unwrap_or(window_ms), limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_up_to_the_limit_are_allowed_and_counted_down() {
        let d = Decision::from_count(1, 60_000, 3);
        assert_eq!(d, Decision { allowed: true, limit: 3, remaining: 2, reset_secs: 60 });
        assert_eq!(
            Decision::from_count(3, 59_001, 3),
            Decision { allowed: true, limit: 3, remaining: 0, reset_secs: 60 }
        );
        assert_eq!(Decision::from_count(4, 1, 3), Decision { allowed: false, limit: 3, remaining: 0, reset_secs: 1 });
        assert_eq!(Decision::from_count(u64::MAX, 0, 3).reset_secs, 1, "never 0: clients would retry at once");
        assert!(!Decision::from_count(1, 1_000, 0).allowed, "a limit of 0 allows nothing");
    }
}
