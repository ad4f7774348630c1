//! The control API of the scan fleet: authentication, validation, creation of runs and SubJobs, and
//! reads. Built as a library so that tests boot the very application `main.rs` runs.

pub mod access;
pub mod auth;
pub mod config;
pub mod extract;
pub mod problem;
pub mod routes;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cspm_shared::artifacts::ArtifactStore;
use cspm_shared::auth::jwt::TokenKeys;
use cspm_shared::auth::password::{generate_password, hash_password};
use cspm_shared::db::Mongo;
use cspm_shared::ops::{self, OpsState, QueueGauges};
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::ApiConfig;
use crate::problem::ApiError;
use crate::state::{ApiMetrics, AppState};

/// A built application: bound to its address, ready to serve.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects (lazily) to MongoDB and Redis, binds the listener and builds the router. The database
    /// need not be up: index creation and the bootstrap administrator are retried in the background.
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let mongo = config.common.mongo("cspm-api").await?;
        let queues = config.common.queues()?;
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let tokens = TokenKeys::new(config.secret_key.clone());
        let artifacts = ArtifactStore::new(&config.artifacts)?;
        let metrics = ApiMetrics::default();
        let gauges = QueueGauges::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        gauges.register(&mut registry);
        let state = AppState {
            config: Arc::new(config),
            mongo: mongo.clone(),
            queues: queues.clone(),
            tokens,
            metrics,
            artifacts,
            limiter: cspm_shared::ratelimit::RateLimiter::new(queues.connection(), queues.settings().namespace.clone()),
        };
        let ops_state = OpsState { service: "cspm-api", mongo, queues, registry: Arc::new(registry), gauges };
        let router = router(state.clone(), ops_state);
        Ok(Self { listener, router, state })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tokio::spawn(prepare_database(self.state.clone()));
        tracing::info!(addr = %self.listener.local_addr()?, "api listening");
        ops::serve(self.listener, self.router, shutdown).await?;
        Ok(())
    }
}

/// The full router: ops endpoints, `/api`, problem-details fallbacks, and the request middleware.
pub fn router(state: AppState, ops_state: OpsState) -> Router {
    let max_body = state.config.max_body_bytes;
    let api = access::router(&state, routes::table(state.config.compliance.import_max_bytes))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state.clone());
    api.merge(ops::router(ops_state))
        .layer(middleware::from_fn_with_state(state, guard))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = cspm_shared::ids::RunId::new().ulid().to_string();
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request.id = %id)
        }))
}

/// Per-request limits and headers: a time limit answered with a problem document, and headers that keep
/// API answers out of caches and browsers' content sniffing.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let limit: Duration = if req.uri().path() == routes::IMPORT_SCF_PATH {
        // A catalog import parses and stores several MB (a whole catalog version).
        s.config.request_timeout.max(routes::compliance::IMPORT_TIME_LIMIT)
    } else {
        s.config.request_timeout
    };
    // The documentation page sets its own policy (it runs its own inline script); everything else is
    // data, never a document a browser should render or frame.
    let is_page = req.uri().path() == "/api/docs";
    let mut resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::Unavailable(format!("the request did not complete within {} s", limit.as_secs())).into_response()
        }
    };
    let h = resp.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !is_page && !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    resp
}

/// Creates the indexes and the bootstrap administrator, retrying until the database answers.
async fn prepare_database(state: AppState) {
    let mut delay = Duration::from_millis(200);
    loop {
        match try_prepare(&state.mongo, &state).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database not ready for start-up tasks");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn try_prepare(mongo: &Mongo, state: &AppState) -> anyhow::Result<()> {
    mongo.ensure_indexes().await?;
    let cfg = &state.config;
    if cspm_shared::store::users::find_by_email(mongo, &cfg.admin_email).await?.is_some() {
        return Ok(());
    }
    let (password, generated) = match &cfg.admin_password {
        Some(p) => (p.expose_secret().to_string(), false),
        None => (generate_password(), true),
    };
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await?;
    let created = cspm_shared::orchestrate::bootstrap_admin(mongo, &cfg.admin_email, hash).await?;
    if created {
        tracing::info!(email = %cfg.admin_email, "bootstrap administrator created");
        if generated {
            // Shown once, on the console only (not in the structured logs).
            eprintln!(
                "\n*** bootstrap administrator: {} / password: {}\n*** change it after the first sign-in; it is not shown again.\n",
                cfg.admin_email, password
            );
        }
    }
    Ok(())
}

impl cspm_shared::ops::Service for Application {
    type Config = ApiConfig;
    const NAME: &'static str = "cspm-api";
    fn common(config: &ApiConfig) -> &cspm_shared::settings::CommonSettings {
        &config.common
    }
    async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        Application::build(config).await
    }
    async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        Application::run_until_stopped(self, shutdown).await
    }
}
