//! The stateless worker of the scan fleet: takes SubJobs from the queue, runs the scanner, normalises
//! and stores what it found, and rolls the run up. Built as a library so that tests run the same code.

pub mod app;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod poll;
pub mod runner;
pub mod tools;

/// A shutdown signal: SIGTERM or Ctrl-C.
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
