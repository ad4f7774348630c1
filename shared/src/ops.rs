//! The operations endpoints every binary serves: `/healthz` (the process is alive), `/readyz` (MongoDB
//! and Redis answer), `/metrics` (Prometheus text, with queue depths read at scrape time).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::db::Mongo;
use crate::dispatch;
use crate::queue::{QueueKind, Queues};

pub type Labels = Vec<(String, String)>;

/// Queue gauges shared by every binary's `/metrics`.
#[derive(Clone, Default)]
pub struct QueueGauges {
    /// Messages waiting in Redis (`where="redis"`) and SubJobs waiting in MongoDB for room
    /// (`where="held"`), per queue.
    pub depth: Family<Labels, Gauge>,
    /// Finished and dead-lettered messages apalis still keeps, per queue.
    pub finished: Family<Labels, Gauge>,
}

impl QueueGauges {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("cspm_queue_depth", "Messages waiting, per queue and place", self.depth.clone());
        registry.register(
            "cspm_queue_finished_messages",
            "Finished (done) and dead-lettered (dead) messages kept by the queue",
            self.finished.clone(),
        );
    }

    async fn refresh(&self, mongo: &Mongo, queues: &Queues) {
        for kind in QueueKind::ALL {
            let q = kind.as_str().to_string();
            if let Ok(n) = queues.depth(kind).await {
                self.depth
                    .get_or_create(&vec![("queue".into(), q.clone()), ("where".into(), "redis".into())])
                    .set(n as i64);
            }
            if let Ok(n) = dispatch::waiting_count(mongo, kind).await {
                self.depth
                    .get_or_create(&vec![("queue".into(), q.clone()), ("where".into(), "held".into())])
                    .set(n as i64);
            }
            if let Ok((done, dead)) = queues.finished_counts(kind).await {
                self.finished
                    .get_or_create(&vec![("queue".into(), q.clone()), ("state".into(), "done".into())])
                    .set(done as i64);
                self.finished
                    .get_or_create(&vec![("queue".into(), q), ("state".into(), "dead".into())])
                    .set(dead as i64);
            }
        }
    }
}

#[derive(Clone)]
pub struct OpsState {
    pub service: &'static str,
    pub mongo: Mongo,
    pub queues: Queues,
    pub registry: Arc<Registry>,
    pub gauges: QueueGauges,
}

/// The ops routes, to be merged into a binary's router (the API) or served alone (worker, scheduler).
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(s): State<OpsState>) -> Response {
    axum::Json(json!({ "status": "ok", "service": s.service })).into_response()
}

/// Checks both dependencies, each with a short deadline.
pub async fn check_ready(mongo: &Mongo, queues: &Queues) -> Result<(), Vec<String>> {
    let deadline = Duration::from_secs(3);
    let mut down = Vec::new();
    match tokio::time::timeout(deadline, mongo.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => down.push(format!("MongoDB: {e}")),
        Err(_) => down.push("MongoDB: no answer within 3 s".to_string()),
    }
    match tokio::time::timeout(deadline, queues.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => down.push(format!("Redis: {e}")),
        Err(_) => down.push("Redis: no answer within 3 s".to_string()),
    }
    if down.is_empty() { Ok(()) } else { Err(down) }
}

async fn readyz(State(s): State<OpsState>) -> Response {
    match check_ready(&s.mongo, &s.queues).await {
        Ok(()) => axum::Json(json!({ "status": "ready", "service": s.service })).into_response(),
        Err(down) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/problem+json"), (header::RETRY_AFTER, "5")],
            json!({
                "type": "about:blank",
                "title": "Service Unavailable",
                "status": 503,
                "detail": format!("not ready: {}", down.join("; ")),
            })
            .to_string(),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<OpsState>) -> Response {
    s.gauges.refresh(&s.mongo, &s.queues).await;
    let mut body = String::new();
    if encode(&mut body, &s.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// Serves a router on an address until `shutdown` resolves. Handlers see the peer address
/// (`ConnectInfo<SocketAddr>`): the API's sign-in rate limit and audit trail use it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGTERM or Ctrl-C: the signal every binary of the fleet stops on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested");
}

/// What every binary of the fleet is: a configuration loaded once, an application built from it, run
/// until a shutdown signal. [`run_main`] is the whole `main` of each binary.
pub trait Service: Sized {
    type Config;
    /// The binary's name, in logs and error messages.
    const NAME: &'static str;
    fn common(config: &Self::Config) -> &crate::settings::CommonSettings;
    fn build(config: Self::Config) -> impl std::future::Future<Output = anyhow::Result<Self>> + Send;
    fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

/// Loads nothing itself: takes the loaded configuration (refusing to start, exit code 2, with every
/// problem named), starts logging, builds the service and runs it until SIGTERM or Ctrl-C.
pub async fn run_main<S: Service>(config: Result<S::Config, crate::config::ConfigError>) -> std::process::ExitCode {
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", S::NAME);
            return std::process::ExitCode::from(2);
        }
    };
    let common = S::common(&config);
    crate::telemetry::init(S::NAME, common.log_format, &common.log_filter);
    // Every HTTPS client of the process (object storage, feeds) uses ring; installed before any exists.
    crate::artifacts::install_tls_provider();
    let service = match S::build(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match service.run_until_stopped(shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped on an error");
            std::process::ExitCode::FAILURE
        }
    }
}
