//! `cspm-bench containers`: the Docker runner's own cost per SubJob, with the real engine. A trivial
//! command in the given image, run through `DockerRunner` exactly as a SubJob's scanner would be (image
//! check, output directory, create, start, wait, logs, remove): the time from asking to the start, and
//! the whole round trip; then `parallel` such containers at once, to see how many run side by side.

use std::path::Path;
use std::time::{Duration, Instant};

use cspm_shared::config::Env;
use cspm_shared::domain::scan::Tool;
use cspm_shared::ids::{RunId, SubJobId};
use cspm_worker::metrics::WorkerMetrics;
use cspm_worker::runner::ProcessSpec;
use cspm_worker::runner::docker::{ContainerJob, DockerRunner, RunnerSettings};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(image: &str, count: usize, parallel: usize) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("cspm-bench-containers-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let root_text = root.display().to_string();
    let env = Env::from_map([
        ("CSPM_SCANNER_RUNNER", "docker"),
        ("CSPM_DOCKER_IMAGE_NMAP", image),
        ("CSPM_DOCKER_PULL", "never"),
    ]);
    let settings = RunnerSettings::load(&env, &root, Some(Path::new(&root_text)));
    let RunnerSettings::Docker(settings) = env.finish(settings)? else { anyhow::bail!("not docker settings") };
    let metrics = WorkerMetrics::default();
    let runner =
        DockerRunner::connect(settings, "bench".into(), format!("bench-{}", std::process::id()), metrics.clone())
            .await
            .map_err(anyhow::Error::msg)?;

    let one = |script: &'static str| {
        let runner = runner.clone();
        let root = root.clone();
        async move {
            let (run, subjob) = (RunId::new(), SubJobId::new());
            let dir = root.join(run.as_str()).join(subjob.as_str());
            std::fs::create_dir_all(&dir)?;
            let spec = ProcessSpec {
                program: "sh".into(),
                args: vec!["-c".into(), script.into()],
                env: vec![],
                workdir: dir.clone(),
                ok_exit_codes: vec![],
                secret_files: vec![],
                mounts: vec![],
            };
            let job = ContainerJob { spec: &spec, tool: Tool::Nmap, program: "sh", run_id: &run, subjob_id: &subjob };
            let (_tx, rx) = tokio::sync::watch::channel(None);
            let began = Instant::now();
            let report = runner.run(job, Duration::from_secs(300), rx).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let total = began.elapsed().as_secs_f64();
            let _ = std::fs::remove_dir_all(root.join(run.as_str()));
            anyhow::Ok((report, total))
        }
    };

    // Warm-up (the daemon's caches), not counted.
    one("true").await?;
    let mut totals = Vec::with_capacity(count);
    let mut starts = Vec::with_capacity(count);
    for _ in 0..count {
        let (report, total) = one("true").await?;
        anyhow::ensure!(report.exit == cspm_worker::runner::Exit::Exited(Some(0)), "{:?}", report.exit);
        totals.push(total);
        starts.push(report.start_latency.unwrap_or_default().as_secs_f64());
    }
    totals.sort_by(f64::total_cmp);
    starts.sort_by(f64::total_cmp);
    println!(
        "container start (create to running), {count} in a row: median {:.3} s, p95 {:.3} s, max {:.3} s",
        percentile(&starts, 0.5),
        percentile(&starts, 0.95),
        starts.last().copied().unwrap_or_default()
    );
    println!(
        "container round trip (create, start, wait, logs, remove) of `true`, {count} in a row: \
         median {:.3} s, p95 {:.3} s, max {:.3} s",
        percentile(&totals, 0.5),
        percentile(&totals, 0.95),
        totals.last().copied().unwrap_or_default()
    );

    // `parallel` scanners at once (each sleeps 5 s): do they all run side by side?
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        tasks.push(tokio::spawn(one("sleep 5")));
    }
    let watcher = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            for _ in 0..200 {
                peak = peak.max(metrics.containers_running.get());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    for t in tasks {
        t.await??;
    }
    let wall = began.elapsed().as_secs_f64();
    let peak = watcher.await?;
    println!(
        "{parallel} containers of `sleep 5` at once: peak {peak} running together, all done in {wall:.1} s \
         (5 s each if fully parallel)"
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
