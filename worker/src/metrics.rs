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
    /// Docker runner: seconds from asking for a scanner container to its start, by tool.
    pub container_start: Family<Labels, Histogram, fn() -> Histogram>,
    /// Docker runner: scanner containers running now.
    pub containers_running: Gauge,
    /// Docker runner: containers of earlier attempts replaced by a re-delivered SubJob.
    pub containers_replaced: Counter,
    /// Docker runner: orphaned containers (of workers that are gone) removed.
    pub containers_reaped: Counter,
    /// Docker runner: image pulls by outcome, and their duration.
    pub image_pulls: Family<Labels, Counter>,
    pub image_pull_seconds: Histogram,
}

fn start_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0])
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
            container_start: Family::new_with_constructor(start_histogram),
            containers_running: Gauge::default(),
            containers_replaced: Counter::default(),
            containers_reaped: Counter::default(),
            image_pulls: Family::default(),
            image_pull_seconds: Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0]),
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
        r.register(
            "cspm_container_start_seconds",
            "Time from creating a scanner container to its start, by tool",
            self.container_start.clone(),
        );
        r.register(
            "cspm_containers_running",
            "Scanner containers running for this worker",
            self.containers_running.clone(),
        );
        r.register(
            "cspm_containers_replaced",
            "Containers of earlier attempts replaced by a re-delivered SubJob",
            self.containers_replaced.clone(),
        );
        r.register("cspm_containers_reaped", "Orphaned scanner containers removed", self.containers_reaped.clone());
        r.register("cspm_image_pulls", "Scanner image pulls, by outcome", self.image_pulls.clone());
        r.register("cspm_image_pull_seconds", "Duration of scanner image pulls", self.image_pull_seconds.clone());
    }

    pub fn ended(&self, tool: &str, outcome: &str, seconds: f64) {
        let labels = vec![("tool".to_string(), tool.to_string()), ("outcome".to_string(), outcome.to_string())];
        self.subjobs.get_or_create(&labels).inc();
        self.duration.get_or_create(&vec![("tool".to_string(), tool.to_string())]).observe(seconds);
    }

    pub fn container_started(&self, tool: &str, seconds: f64) {
        self.container_start.get_or_create(&vec![("tool".to_string(), tool.to_string())]).observe(seconds);
    }

    pub fn container_replaced(&self) {
        self.containers_replaced.inc();
    }

    pub fn image_pulled(&self, outcome: &str, seconds: f64) {
        self.image_pulls.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]).inc();
        self.image_pull_seconds.observe(seconds);
    }

    pub fn skipped(&self, reason: &str) {
        self.skipped.get_or_create(&vec![("reason".to_string(), reason.to_string())]).inc();
    }
}
