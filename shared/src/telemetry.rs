//! Logging: one initialisation for every binary. JSON lines by default (one object per event, with the
//! fields of the enclosing spans: `run.id`, `subjob.id`, `tool`, ...), or human-readable text.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(format!("unknown log format `{s}` (json or text)")),
        }
    }
}

/// Installs the global subscriber. `filter` uses the `RUST_LOG` syntax (`info,cspm_worker=debug`).
/// Calling it twice is harmless (the second call keeps the first subscriber), which tests rely on.
pub fn init(service: &'static str, format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .with_target(true)
            .with_span_events(FmtSpan::NONE)
            .try_init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init(),
    };
    if result.is_ok() {
        tracing::info!(service, version = env!("CARGO_PKG_VERSION"), "starting");
    }
}
