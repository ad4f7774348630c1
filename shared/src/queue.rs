//! The Redis job queue (apalis-redis): queue names, the message, the connection, depth and wake-ups.
//!
//! Messages are small (a SubJob id); MongoDB holds the SubJob and is the source of truth. How apalis-redis
//! 1.0.0 really behaves shapes the settings here (see `docs/ARCHITECTURE.md` and the field notes):
//! explicit queue names, `batch_size(1)`, short heartbeats so that a dead worker's job comes back within
//! seconds, a Redis connection with a multi-second response timeout, and an idempotency TTL.

use std::time::Duration;

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_redis::{Config as RedisQueueConfig, ConnectionManager, RedisStorage};
use redis::aio::ConnectionManagerConfig;
use serde::{Deserialize, Serialize};

use crate::error::{StoreError, StoreResult};
use crate::ids::{RunId, SubJobId};

/// The workloads, each with its own queue so that slow scans cannot starve fast ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// Cloud posture SubJobs (one per region × tool).
    Cloud,
    /// Native scans of hosts and networks.
    Native,
}

impl QueueKind {
    pub const ALL: [QueueKind; 2] = [QueueKind::Cloud, QueueKind::Native];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Cloud => "cloud",
            QueueKind::Native => "native",
        }
    }
}

/// What travels through Redis: which SubJob to run. Everything else is read from MongoDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubJobMessage {
    pub subjob_id: SubJobId,
    pub run_id: RunId,
}

/// Queue settings shared by producers and consumers.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub redis_url: String,
    /// Prefix of every queue name, so that several fleets (or tests) share one Redis.
    pub namespace: String,
    pub response_timeout: Duration,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// How many messages may wait in Redis per queue; the rest wait in MongoDB (admission control).
    pub high_water_mark: u64,
}

impl QueueSettings {
    /// The time after which a silent worker's jobs are handed to another worker.
    pub fn orphan_after(&self) -> Duration {
        self.heartbeat * self.missed_heartbeats as u32
    }
}

/// A handle on the queues. Cheap to clone; the connection reconnects by itself.
#[derive(Clone)]
pub struct Queues {
    settings: QueueSettings,
    client: redis::Client,
    conn: ConnectionManager,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").field("namespace", &self.settings.namespace).finish()
    }
}

impl Queues {
    /// Builds the handle without connecting, so that a process can start while Redis is down.
    pub fn new(settings: QueueSettings) -> StoreResult<Self> {
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|e| StoreError::Queue(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.response_timeout))
            .set_connection_timeout(Some(settings.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| StoreError::Queue(e.to_string()))?;
        Ok(Self { settings, client, conn })
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The full Redis name of a queue.
    pub fn queue_name(&self, kind: QueueKind) -> String {
        format!("{}cspm:{}", self.settings.namespace, kind.as_str())
    }

    /// The channel on which producers announce new messages, so idle workers fetch at once instead of
    /// waiting for their next poll.
    pub fn wake_channel(&self, kind: QueueKind) -> String {
        format!("{}:wake", self.queue_name(kind))
    }

    /// The apalis-redis configuration of a queue (the same for producers and consumers).
    pub fn apalis_config(&self, kind: QueueKind) -> RedisQueueConfig {
        RedisQueueConfig::default()
            .queue(self.queue_name(kind))
            // One message per fetch: scanner jobs are long, and prefetching would let one worker hoard
            // jobs while another idles.
            .batch_size(1)
            .heartbeat_interval(self.settings.heartbeat)
            .missed_heartbeats(self.settings.missed_heartbeats)
            .idempotency_ttl(Some(Duration::from_secs(24 * 3600)))
            .emit_events(false)
    }

    pub fn storage(&self, kind: QueueKind) -> RedisStorage<SubJobMessage> {
        RedisStorage::new(self.conn.clone()).with_config(self.apalis_config(kind))
    }

    pub async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Messages waiting in Redis (due or delayed, not yet fetched by a worker).
    pub async fn depth(&self, kind: QueueKind) -> StoreResult<u64> {
        let cfg = self.apalis_config(kind);
        let mut conn = self.conn.clone();
        let (scheduled, active): (u64, u64) = redis::pipe()
            .cmd("ZCARD")
            .arg(cfg.scheduled_jobs_set())
            .cmd("LLEN")
            .arg(cfg.active_jobs_list())
            .query_async(&mut conn)
            .await?;
        Ok(scheduled + active)
    }

    /// Finished and dead-lettered message counts (apalis keeps these sets forever; housekeeping trims them).
    pub async fn finished_counts(&self, kind: QueueKind) -> StoreResult<(u64, u64)> {
        let cfg = self.apalis_config(kind);
        let mut conn = self.conn.clone();
        let (done, dead): (u64, u64) = redis::pipe()
            .cmd("SCARD")
            .arg(cfg.done_jobs_set())
            .cmd("SCARD")
            .arg(cfg.dead_jobs_set())
            .query_async(&mut conn)
            .await?;
        Ok((done, dead))
    }

    /// Housekeeping apalis-redis does not do: removes up to `batch` finished (done) messages with their
    /// payload and metadata, and dead-lettered ones beyond `keep_dead` of them (a set has no order; the dead set is only kept for inspection, MongoDB holds every SubJob's
    /// outcome). Returns (done removed, dead removed). One Lua call: about 7 ms per 1,000 messages.
    pub async fn housekeep(&self, kind: QueueKind, batch: u64, keep_dead: u64) -> StoreResult<(u64, u64)> {
        let cfg = self.apalis_config(kind);
        let mut conn = self.conn.clone();
        let (done, dead): (u64, u64) = housekeeping_script()
            .key(cfg.done_jobs_set())
            .key(cfg.dead_jobs_set())
            .key(cfg.job_data_hash())
            .key(cfg.job_meta_hash())
            .arg(batch.max(1))
            .arg(keep_dead)
            .invoke_async(&mut conn)
            .await?;
        Ok((done, dead))
    }

    /// Pushes messages with their task ids (deterministic per dispatch, so a retried push after an
    /// ambiguous timeout is deduplicated by apalis instead of doubling the message), then wakes workers.
    pub async fn push(&self, kind: QueueKind, messages: Vec<(TaskId, SubJobMessage)>) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut tasks = Vec::with_capacity(messages.len());
        for (id, msg) in messages {
            let bytes = serde_json::to_vec(&msg).map_err(|e| StoreError::Queue(e.to_string()))?;
            let key = id.to_string();
            tasks.push(TaskBuilder::new(bytes).task_id(id).idempotency_key(key).build());
        }
        let mut conn = self.conn.clone();
        // One Lua call for the whole batch.
        apalis_redis::queries::push_tasks(&mut conn, &self.apalis_config(kind), &tasks).await?;
        self.wake(kind).await;
        Ok(())
    }

    /// Tells idle workers that messages are waiting. Best effort: workers also poll on a timer.
    pub async fn wake(&self, kind: QueueKind) {
        let mut conn = self.conn.clone();
        let r: Result<u64, _> = redis::cmd("PUBLISH").arg(self.wake_channel(kind)).arg(1).query_async(&mut conn).await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "wake-up publish failed; workers will poll");
        }
    }

    /// Takes the queue's feeder lock, waiting up to `wait` for it. Returns the lock's token, or `None`
    /// if another process holds it. The lock expires by itself if its holder dies.
    pub async fn lock_feeder(&self, kind: QueueKind, wait: Duration) -> StoreResult<Option<String>> {
        let key = format!("{}:feeder-lock", self.queue_name(kind));
        let token = ulid::Ulid::generate().to_string();
        let deadline = tokio::time::Instant::now() + wait;
        let mut conn = self.conn.clone();
        loop {
            let got: Option<String> =
                redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(10_000).query_async(&mut conn).await?;
            if got.is_some() {
                return Ok(Some(token));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Releases the feeder lock if this process still holds it.
    pub async fn unlock_feeder(&self, kind: QueueKind, token: &str) {
        let key = format!("{}:feeder-lock", self.queue_name(kind));
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        let mut conn = self.conn.clone();
        if let Err(e) = script.key(key).arg(token).invoke_async::<i64>(&mut conn).await {
            tracing::debug!(error = %e, "could not release the feeder lock; it expires by itself");
        }
    }

    /// Counts one more finished SubJob of a run and returns the count: when it reaches the run's size,
    /// the run is ready to roll up. A hint only (the roll-up recounts from MongoDB, and the scheduler's
    /// sweep catches a count lost with a crash or with Redis data), but it spares a database query per
    /// SubJob.
    pub async fn count_finished(&self, run: &RunId, n: u64) -> StoreResult<u64> {
        let key = format!("{}cspm:run:{run}:finished", self.settings.namespace);
        let mut conn = self.conn.clone();
        let (total, _): (u64, i64) = redis::pipe()
            .cmd("INCRBY")
            .arg(&key)
            .arg(n)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(7 * 24 * 3600)
            .query_async(&mut conn)
            .await?;
        Ok(total)
    }

    /// The apalis status of a message (`Pending`, `Queued`, `Running`, `Done`, `Failed`, `Killed`), or
    /// `None` when Redis no longer knows it.
    pub async fn message_status(&self, kind: QueueKind, task_id: &TaskId) -> StoreResult<Option<String>> {
        let cfg = self.apalis_config(kind);
        let mut conn = self.conn.clone();
        let status: Option<String> = redis::cmd("HGET")
            .arg(format!("{}:{}", cfg.job_meta_hash(), task_id))
            .arg("status")
            .query_async(&mut conn)
            .await?;
        Ok(status)
    }
}

/// Removes finished messages (see [`Queues::housekeep`]). The key layout is apalis-redis 1.0's: the
/// payload in the data hash, the metadata in `<meta>:<id>` and results in `<meta>:result`.
fn housekeeping_script() -> redis::Script {
    redis::Script::new(
        r"
local function purge(id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4] .. ':result', id)
  redis.call('DEL', KEYS[4] .. ':' .. id)
end
local batch = tonumber(ARGV[1])
local done = redis.call('SPOP', KEYS[1], batch)
for _, id in ipairs(done) do purge(id) end
local removed_dead = 0
local surplus = redis.call('SCARD', KEYS[2]) - tonumber(ARGV[2])
if surplus > 0 then
  local dead = redis.call('SPOP', KEYS[2], math.min(surplus, batch))
  for _, id in ipairs(dead) do purge(id) end
  removed_dead = #dead
end
return { #done, removed_dead }
",
    )
}
