//! The Docker runner against the real Docker engine, with the locally built base image
//! (`scripts/images.sh`): exit codes and logs, time limits, cancellation, the allow-list and pull
//! policy, the hardening asked of the daemon, replacement of an earlier attempt's container, and the
//! removal of orphans; Trivy image scans (in `cspm-trivy:local`) of an image that exists only in the
//! local image store, read from the worker's export of it, and of an image that is nowhere. Every test
//! checks that no container is left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use cspm_shared::config::Env;
use cspm_shared::domain::native::{ArtifactKind, NetworkScanType};
use cspm_shared::domain::scan::Tool;
use cspm_shared::ids::{RunId, SubJobId};
use cspm_shared::store::findings::NewFinding;
use cspm_shared::store::subjobs::{NativeSpec, SubJobDoc};
use cspm_shared::testing::{LocalImage, fake_github_token};
use cspm_worker::config::WorkerConfig;
use cspm_worker::metrics::WorkerMetrics;
use cspm_worker::runner::docker::{
    ContainerJob, DockerRunner, LABEL_FLEET, LABEL_MANAGED, LABEL_SUBJOB, LABEL_WORKER, RunnerError, RunnerSettings,
    container_name, container_program,
};
use cspm_worker::runner::{Exit, ImageInput, ProcessSpec, StopReason};
use cspm_worker::tools::{FindingSink, JobContext, Plan, trivy};
use tokio::sync::watch;

const BASE_IMAGE: &str = "cspm-base:bookworm";

struct Rig {
    runner: DockerRunner,
    docker: Docker,
    out: tempfile::TempDir,
    worker: String,
    fleet: String,
}

async fn rig(extra: &[(&str, &str)]) -> Rig {
    let docker = Docker::connect_with_defaults().expect("docker").negotiate_version().await.expect("version");
    docker
        .inspect_image(BASE_IMAGE)
        .await
        .unwrap_or_else(|_| panic!("{BASE_IMAGE} is missing: build it with scripts/images.sh (scripts/test.sh does)"));
    let out = tempfile::tempdir().expect("tempdir");
    let root = out.path().display().to_string();
    let mut vars: Vec<(&str, &str)> =
        vec![("CSPM_SCANNER_RUNNER", "docker"), ("CSPM_DOCKER_IMAGE_NMAP", BASE_IMAGE), ("CSPM_DOCKER_PULL", "never")];
    vars.extend_from_slice(extra);
    let env = Env::from_map(vars);
    // Here the worker and the daemon share one filesystem: the host path is the worker's path.
    let settings = RunnerSettings::load(&env, out.path(), Some(Path::new(&root)));
    let RunnerSettings::Docker(settings) = env.finish(settings).expect("settings") else { panic!("docker") };
    let worker = format!("test-worker-{}", ulid::Ulid::generate().to_string().to_ascii_lowercase());
    // Each test is its own fleet: the reaper of one never sees another's containers.
    let fleet = format!("test-fleet-{}", ulid::Ulid::generate().to_string().to_ascii_lowercase());
    let runner = DockerRunner::connect(settings, worker.clone(), fleet.clone(), WorkerMetrics::default())
        .await
        .expect("connects");
    Rig { runner, docker, out, worker, fleet }
}

impl Rig {
    fn workdir(&self, subjob: &SubJobId) -> PathBuf {
        let dir = self.out.path().join("run").join(subjob.as_str());
        std::fs::create_dir_all(&dir).expect("workdir");
        dir
    }

    async fn exists(&self, name: &str) -> bool {
        self.docker.inspect_container(name, None::<InspectContainerOptions>).await.is_ok()
    }
}

fn shell(workdir: &Path, script: &str) -> ProcessSpec {
    ProcessSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("SCANNER_TOKEN".into(), "t0ken".into())],
        workdir: workdir.to_path_buf(),
        ok_exit_codes: vec![3],
        secret_files: vec![],
        mounts: vec![],
    }
}

fn job<'a>(spec: &'a ProcessSpec, run: &'a RunId, subjob: &'a SubJobId) -> ContainerJob<'a> {
    ContainerJob { spec, tool: Tool::Nmap, program: "sh", run_id: run, subjob_id: subjob }
}

fn no_stop() -> (watch::Sender<Option<StopReason>>, watch::Receiver<Option<StopReason>>) {
    watch::channel(None)
}

#[tokio::test]
async fn exit_code_logs_and_output_come_back_and_the_container_goes() {
    let rig = rig(&[]).await;
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let dir = rig.workdir(&subjob);
    let secret = dir.join("credentials.json");
    std::fs::write(&secret, "{}").expect("secret");
    let mut spec = shell(
        &dir,
        "echo out-line; echo err-line >&2; echo token=$SCANNER_TOKEN home=$HOME; id -u > uid.txt; \
         echo findings > report.txt; exit 3",
    );
    spec.secret_files = vec![secret.clone()];
    let (_tx, rx) = no_stop();
    let report = rig.runner.run(job(&spec, &run, &subjob), Duration::from_secs(60), rx).await.expect("runs");
    assert_eq!(report.exit, Exit::Exited(Some(3)));
    assert!(report.succeeded(&spec), "3 is a success for this spec");
    for needle in ["out-line", "err-line", "token=t0ken", "home=/tmp"] {
        assert!(report.output_tail.contains(needle), "{needle} missing from {:?}", report.output_tail);
    }
    // Written by the scanner through the host path, read back through the worker's.
    assert_eq!(std::fs::read_to_string(dir.join("report.txt")).expect("output").trim(), "findings");
    let uid: u32 = std::fs::read_to_string(dir.join("uid.txt")).expect("uid").trim().parse().expect("number");
    assert_ne!(uid, 0, "the scanner ran as root");
    assert!(!secret.exists(), "the credential file outlived the scan");
    assert!(!rig.exists(&container_name(&subjob)).await, "the container was left behind");
}

#[tokio::test]
async fn a_container_past_its_time_is_stopped_and_removed() {
    let rig = rig(&[("CSPM_DOCKER_STOP_GRACE_SECS", "1")]).await;
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let spec = shell(&rig.workdir(&subjob), "trap '' TERM; sleep 600");
    let (_tx, rx) = no_stop();
    let started = Instant::now();
    let report = rig.runner.run(job(&spec, &run, &subjob), Duration::from_secs(2), rx).await.expect("runs");
    assert_eq!(report.exit, Exit::TimedOut);
    // 2 s of time, 1 s of grace before SIGKILL, and the daemon's own work on a busy machine.
    assert!(started.elapsed() < Duration::from_secs(40), "took {:?}", started.elapsed());
    assert!(!rig.exists(&container_name(&subjob)).await, "the container was left behind");
}

#[tokio::test]
async fn cancel_stops_a_running_container_within_seconds() {
    let rig = rig(&[]).await;
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let spec = shell(&rig.workdir(&subjob), "sleep 600");
    let (tx, rx) = no_stop();
    let name = container_name(&subjob);
    let runner = rig.runner.clone();
    let (r2, s2) = (run.clone(), subjob.clone());
    let handle = tokio::spawn(async move { runner.run(job(&spec, &r2, &s2), Duration::from_secs(600), rx).await });

    // While it runs, the daemon holds what was asked of it.
    let mut inspected = None;
    for _ in 0..100 {
        if let Ok(c) = rig.docker.inspect_container(&name, None::<InspectContainerOptions>).await
            && c.state.as_ref().and_then(|s| s.running) == Some(true)
        {
            inspected = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = inspected.expect("the container runs");
    let host = c.host_config.expect("host config");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(host.security_opt.unwrap_or_default().iter().any(|o| o.starts_with("no-new-privileges")));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.memory, Some(2048 * 1024 * 1024));
    assert_eq!(host.pids_limit, Some(512));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.auto_remove, Some(false));
    let config = c.config.expect("config");
    assert!(!config.user.unwrap_or_default().starts_with("0"), "runs as root");
    let labels = config.labels.unwrap_or_default();
    assert_eq!(labels.get(LABEL_SUBJOB).map(String::as_str), Some(subjob.as_str()));
    assert_eq!(labels.get(LABEL_WORKER), Some(&rig.worker));

    let asked = Instant::now();
    tx.send(Some(StopReason::Cancelled)).expect("send");
    let report = handle.await.expect("join").expect("runs");
    assert_eq!(report.exit, Exit::Stopped(StopReason::Cancelled));
    // `sleep` as PID 1's child ends on SIGTERM at once (the init process forwards it).
    assert!(asked.elapsed() < Duration::from_secs(15), "cancel took {:?}", asked.elapsed());
    assert!(!rig.exists(&name).await, "the container was left behind");
}

#[tokio::test]
async fn images_off_the_allow_list_or_missing_are_refused_clearly() {
    // An image off the allow-list keeps the worker from starting, naming the key.
    let env = Env::from_map([
        ("CSPM_SCANNER_RUNNER", "docker"),
        ("CSPM_DOCKER_IMAGE_NMAP", "docker.io/library/busybox:latest"),
        ("CSPM_DOCKER_ALLOWED_IMAGES", "cspm-*"),
    ]);
    let _ = RunnerSettings::load(&env, Path::new("/out"), Some(Path::new("/out")));
    let text = env.finish(()).expect_err("refused").to_string();
    assert!(text.contains("CSPM_DOCKER_IMAGE_NMAP") && text.contains("CSPM_DOCKER_ALLOWED_IMAGES"), "{text}");

    let rig = rig(&[("CSPM_DOCKER_IMAGE_TRIVY", "cspm-missing:never"), ("CSPM_DOCKER_ALLOWED_IMAGES", "cspm-*")]).await;
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let spec = shell(&rig.workdir(&subjob), "true");
    let (_tx, rx) = no_stop();

    // Allowed, but absent, and pulls are off.
    let trivy = ContainerJob { spec: &spec, tool: Tool::Trivy, program: "sh", run_id: &run, subjob_id: &subjob };
    let err = rig.runner.run(trivy, Duration::from_secs(30), rx.clone()).await.expect_err("refused");
    assert!(matches!(err, RunnerError::Missing(_)), "{err}");
    assert!(err.to_string().contains("cspm-missing:never") && err.to_string().contains("CSPM_DOCKER_PULL"), "{err}");

    // No image at all for the tool: the key to set is named.
    let wapiti = ContainerJob { spec: &spec, tool: Tool::Wapiti, program: "sh", run_id: &run, subjob_id: &subjob };
    let err = rig.runner.run(wapiti, Duration::from_secs(30), rx).await.expect_err("refused");
    assert!(err.to_string().contains("CSPM_DOCKER_IMAGE_WAPITI"), "{err}");
    assert!(!rig.exists(&container_name(&subjob)).await);
}

#[tokio::test]
async fn a_pull_that_cannot_reach_a_registry_fails_with_the_image_named() {
    let rig = rig(&[("CSPM_DOCKER_IMAGE_TRIVY", "127.0.0.1:9/cspm/none:1"), ("CSPM_DOCKER_PULL", "if-missing")]).await;
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let spec = shell(&rig.workdir(&subjob), "true");
    let (_tx, rx) = no_stop();
    let trivy = ContainerJob { spec: &spec, tool: Tool::Trivy, program: "sh", run_id: &run, subjob_id: &subjob };
    let err = rig.runner.run(trivy, Duration::from_secs(30), rx).await.expect_err("no registry");
    assert!(matches!(err, RunnerError::Pull { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:9/cspm/none:1"), "{err}");
}

/// A leftover container of the same SubJob, labelled `worker`, running `sleep`.
async fn leftover(rig: &Rig, subjob: &SubJobId, worker: &str) -> String {
    let docker = &rig.docker;
    let name = container_name(subjob);
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_FLEET.to_string(), rig.fleet.clone()),
        (LABEL_SUBJOB.to_string(), subjob.to_string()),
        (LABEL_WORKER.to_string(), worker.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(BASE_IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "600".into()]),
        labels: Some(labels),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    docker.create_container(Some(options), body).await.expect("create leftover");
    docker.start_container(&name, None).await.expect("start leftover");
    name
}

async fn cleanup(docker: &Docker, name: &str) {
    let _ = docker.remove_container(name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
}

#[tokio::test]
async fn a_redelivered_subjob_replaces_the_earlier_attempts_container() {
    let rig = rig(&[]).await;
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let name = leftover(&rig, &subjob, "a-dead-worker").await;
    let spec = shell(&rig.workdir(&subjob), "echo second attempt > report.txt");
    let (_tx, rx) = no_stop();
    let report = rig.runner.run(job(&spec, &run, &subjob), Duration::from_secs(60), rx).await.expect("runs");
    assert_eq!(report.exit, Exit::Exited(Some(0)));
    assert!(rig.workdir(&subjob).join("report.txt").exists());
    assert!(!rig.exists(&name).await, "neither attempt's container may remain");
}

#[tokio::test]
async fn orphans_of_workers_that_are_gone_are_removed_and_live_ones_kept() {
    let rig = rig(&[]).await;
    let (gone, alive) = (SubJobId::new(), SubJobId::new());
    let gone_name = leftover(&rig, &gone, "worker-gone").await;
    let alive_name = leftover(&rig, &alive, "worker-alive").await;
    let alive_id = alive.clone();
    let removed = rig
        .runner
        .reap_orphans(move |id, worker| {
            let orphan = !(id == alive_id && worker == "worker-alive");
            async move { Ok(orphan) }
        })
        .await
        .expect("reaps");
    assert_eq!(removed, 1);
    assert!(!rig.exists(&gone_name).await, "the orphan is still there");
    assert!(rig.exists(&alive_name).await, "a live worker's container was removed");
    cleanup(&rig.docker, &alive_name).await;

    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_WORKER}=worker-gone")])]);
    let left = rig
        .docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await
        .expect("list");
    assert!(left.is_empty());
}

const TRIVY_IMAGE: &str = "cspm-trivy:local";

fn trivy_subjob(image: &str, run: &RunId, subjob: &SubJobId) -> SubJobDoc {
    let native = NativeSpec {
        target: image.into(),
        ports: None,
        scan_type: NetworkScanType::PortScan,
        web_profile: None,
        artifact: Some(ArtifactKind::Image),
        scanners: vec!["secret".into()],
    };
    SubJobDoc {
        id: subjob.clone(),
        run_id: run.clone(),
        timeout_secs: 300,
        ..cspm_shared::testing::running_native_subjob(Tool::Trivy, native)
    }
}

/// The worker's Trivy plan for an image scan (offline: no vulnerability database here; the secret
/// scanner needs none).
async fn trivy_plan(job: &SubJobDoc, workdir: &Path) -> (ProcessSpec, ImageInput) {
    let config = WorkerConfig::from_env(Env::from_map([
        ("CSPM_TRIVY_OFFLINE", "true"),
        ("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", "true"),
    ]))
    .expect("worker config");
    // The client connects lazily: planning never reaches a server.
    let mongo = cspm_shared::db::Mongo::connect("mongodb://127.0.0.1:1", "", "test", Duration::from_secs(1))
        .await
        .expect("mongo client");
    let ctx = JobContext { job, mongo: &mongo, workdir: workdir.to_path_buf(), config: &config };
    match trivy::plan(&ctx).await.expect("plan") {
        Plan::ProcessReadingImage(spec, image) => (spec, image),
        _ => panic!("an image scan reads an image"),
    }
}

async fn trivy_rig(extra: &[(&str, &str)]) -> Rig {
    let mut vars = vec![("CSPM_DOCKER_IMAGE_TRIVY", TRIVY_IMAGE)];
    vars.extend_from_slice(extra);
    let rig = rig(&vars).await;
    rig.docker
        .inspect_image(TRIVY_IMAGE)
        .await
        .unwrap_or_else(|_| panic!("{TRIVY_IMAGE} is missing: build it with scripts/images.sh (scripts/test.sh does)"));
    rig
}

fn trivy_job<'a>(spec: &'a ProcessSpec, run: &'a RunId, subjob: &'a SubJobId) -> ContainerJob<'a> {
    ContainerJob { spec, tool: Tool::Trivy, program: container_program(Tool::Trivy), run_id: run, subjob_id: subjob }
}

/// A Trivy image SubJob of `image`, planned and run through the rig's runner: what it planned, where,
/// and how the run ended.
struct TrivyRun {
    job: SubJobDoc,
    subjob: SubJobId,
    dir: PathBuf,
    spec: ProcessSpec,
    input: ImageInput,
    result: Result<cspm_worker::runner::RunReport, RunnerError>,
}

async fn run_trivy_image(rig: &Rig, image: &str, timeout: Duration) -> TrivyRun {
    let (run, subjob) = (RunId::new(), SubJobId::new());
    let dir = rig.workdir(&subjob);
    let job = trivy_subjob(image, &run, &subjob);
    let (spec, input) = trivy_plan(&job, &dir).await;
    let (_tx, rx) = no_stop();
    let result = rig.runner.run_reading_image(trivy_job(&spec, &run, &subjob), Some(&input), timeout, rx).await;
    TrivyRun { job, subjob, dir, spec, input, result }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_image_only_in_the_local_store_is_scanned_from_the_workers_export_and_named_as_asked() {
    let rig = trivy_rig(&[]).await;
    let token = fake_github_token();
    let image = LocalImage::build(&[("deploy.env", &format!("REGION=eu-west-1\nGITHUB_TOKEN={token}\n"))]);
    let started = Instant::now();
    let TrivyRun { job, subjob, dir, spec, input, result } =
        run_trivy_image(&rig, &image.0, Duration::from_secs(300)).await;
    let report = result.expect("runs");
    let elapsed = started.elapsed();
    assert!(report.succeeded(&spec), "{:?}: {}", report.exit, report.output_tail);
    assert!(!input.archive.exists(), "the image export outlived the scan");
    assert_eq!(files_in(&dir), vec!["trivy.json".to_string()], "only the report is raw output");
    assert!(!rig.exists(&container_name(&subjob)).await, "the container was left behind");

    let (parse_job, parse_dir) = (job.clone(), dir.clone());
    let (found, examined) = tokio::task::spawn_blocking(move || parse(&parse_job, &parse_dir)).await.expect("parser");
    assert!(examined >= 1, "{examined}");
    let secret = found.iter().find(|f| f.rule_id == "github-pat").unwrap_or_else(|| panic!("the secret: {found:#?}"));
    assert_eq!(secret.resource_uid, format!("{}:/app/deploy.env", image.0));
    assert_eq!(secret.details.get_str("artifact").ok(), Some(image.0.as_str()));
    assert_eq!(secret.details.get_str("image_source").ok(), Some("local_image_store"));
    assert_eq!(secret.location.as_ref().and_then(|l| l.start_line), Some(2));
    let text = serde_json::to_string(&found).expect("json");
    assert!(!text.contains(cspm_worker::runner::IMAGE_ARCHIVE), "the archive's path leaked: {text}");
    assert!(!text.contains(&token), "the secret leaked");

    // What the export costs, for the record: the same archive through the same API.
    let (bytes, export) = export_size(&rig.docker, &image.0).await;
    eprintln!("scan of {} ({bytes} bytes exported in {export:?}) took {elapsed:?}", image.0);
}

/// The size of an image's export and the time it takes (the daemon's `docker save`).
async fn export_size(docker: &Docker, image: &str) -> (u64, Duration) {
    use futures::StreamExt;
    let started = Instant::now();
    let mut stream = docker.export_image(image);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.expect("export chunk").len() as u64;
    }
    (bytes, started.elapsed())
}

/// Parses the SubJob's report as the pipeline does (on a blocking thread: the sink blocks).
fn parse(job: &SubJobDoc, dir: &Path) -> (Vec<NewFinding>, u64) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 12);
    let mut sink = FindingSink::new(tx, 100);
    trivy::parse_for(job, dir, 64 << 20, &mut sink).expect("the report parses");
    let examined = sink.examined;
    drop(sink);
    let mut all = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        all.extend(batch);
    }
    (all, examined)
}

#[tokio::test]
async fn a_local_image_over_the_export_limit_fails_naming_the_limit_and_leaves_nothing() {
    let rig = trivy_rig(&[("CSPM_DOCKER_LOCAL_IMAGE_MAX_MB", "1")]).await;
    let image = LocalImage::build(&[("readme.txt", "nothing here\n")]);
    let TrivyRun { subjob, dir, result, .. } = run_trivy_image(&rig, &image.0, Duration::from_secs(120)).await;
    let err = result.expect_err("too large");
    let text = err.to_string();
    assert!(matches!(err, RunnerError::Export { .. }), "{text}");
    assert!(text.contains(&image.0) && text.contains("CSPM_DOCKER_LOCAL_IMAGE_MAX_MB"), "{text}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    assert!(!rig.exists(&container_name(&subjob)).await, "the container was left behind");
}

#[tokio::test]
async fn an_image_neither_local_nor_reachable_fails_with_the_registrys_error() {
    let rig = trivy_rig(&[]).await;
    // Nothing listens on port 9: the registry cannot be reached, and the image is not local.
    let image = "127.0.0.1:9/cspm/absent:1";
    let TrivyRun { subjob, spec, input, result, .. } = run_trivy_image(&rig, image, Duration::from_secs(180)).await;
    let report = result.expect("the scanner runs, and fails");
    assert!(!report.succeeded(&spec), "{:?}", report.exit);
    let tail = &report.output_tail;
    assert!(tail.contains(image), "{tail}");
    assert!(!input.archive.exists());
    assert!(!rig.exists(&container_name(&subjob)).await, "the container was left behind");
    eprintln!("trivy's error: {}", tail.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(""));

    // With local images off, even an image the host has goes to its registry (here: none reachable).
    let rig = trivy_rig(&[("CSPM_DOCKER_LOCAL_IMAGES", "false")]).await;
    let local = LocalImage::build(&[("readme.txt", "nothing here\n")]);
    let TrivyRun { subjob, spec, input, result, .. } = run_trivy_image(&rig, &local.0, Duration::from_secs(180)).await;
    let report = result.expect("the scanner runs, and fails");
    assert!(!report.succeeded(&spec), "{:?}: {}", report.exit, report.output_tail);
    assert!(!input.archive.exists());
    assert!(!rig.exists(&container_name(&subjob)).await, "the container was left behind");
}
