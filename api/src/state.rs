//! What every handler can reach.

use std::sync::Arc;

use cspm_shared::artifacts::ArtifactStore;
use cspm_shared::auth::jwt::TokenKeys;
use cspm_shared::db::Mongo;
use cspm_shared::queue::Queues;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::ApiConfig;

pub type Labels = Vec<(String, String)>;

/// The API's own metrics (queue gauges come from the shared ops module).
#[derive(Clone, Default)]
pub struct ApiMetrics {
    /// Runs started, by kind and by whether an active run was returned instead.
    pub runs_started: Family<Labels, Counter>,
    /// Sign-in attempts by outcome.
    pub logins: Family<Labels, Counter>,
}

impl ApiMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("cspm_runs_started", "Scan runs requested, by kind and outcome", self.runs_started.clone());
        registry.register("cspm_logins", "Sign-in attempts by outcome", self.logins.clone());
    }
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub mongo: Mongo,
    pub queues: Queues,
    pub tokens: TokenKeys,
    pub metrics: ApiMetrics,
    /// Raw scanner artifacts (read only: the workers write them).
    pub artifacts: ArtifactStore,
    /// Rate limits shared by the replicas (API keys, sign-in).
    pub limiter: cspm_shared::ratelimit::RateLimiter,
}
