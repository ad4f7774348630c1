//! The worker's metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(String, String)>;

#[derive(Clone)]
pub struct WorkerMetrics {
    /// SubJobs this worker ended, by tool and outcome (completed, failed, timed_out, cancelled,
    /// handed_back, lease_lost).
    pub subjobs: Family<Labels, Counter>,
    /// Wall time of SubJobs from claim to end, by tool.
    pub duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Findings written to the store.
    pub findings: Counter,
    /// SubJobs running now.
    pub running: Gauge,
    /// Deliveries that needed no work (duplicates, already finished, cancelled before start).
    pub skipped: Family<Labels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0])
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self {
            subjobs: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            findings: Counter::default(),
            running: Gauge::default(),
            skipped: Family::default(),
        }
    }
}

impl WorkerMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("cspm_subjobs", "SubJobs ended by this worker, by tool and outcome", self.subjobs.clone());
        r.register("cspm_subjob_duration_seconds", "SubJob wall time from claim to end", self.duration.clone());
        r.register("cspm_findings_stored", "Findings written to the store", self.findings.clone());
        r.register("cspm_subjobs_running", "SubJobs running on this worker", self.running.clone());
        r.register("cspm_deliveries_skipped", "Queue deliveries that needed no work, by reason", self.skipped.clone());
    }

    pub fn ended(&self, tool: &str, outcome: &str, seconds: f64) {
        let labels = vec![("tool".to_string(), tool.to_string()), ("outcome".to_string(), outcome.to_string())];
        self.subjobs.get_or_create(&labels).inc();
        self.duration.get_or_create(&vec![("tool".to_string(), tool.to_string())]).observe(seconds);
    }

    pub fn skipped(&self, reason: &str) {
        self.skipped.get_or_create(&vec![("reason".to_string(), reason.to_string())]).inc();
    }
}
