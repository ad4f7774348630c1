//! Test support: every test gets its own databases (a name prefix) and its own queue namespace on the
//! shared Redis and Mongo-wire servers, so tests run in parallel; helpers boot the API in-process or the
//! real binaries as processes, and start private Redis / Mongo-wire servers for outage tests.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cspm_shared::db::Mongo;
use cspm_shared::domain::role::Role;
use cspm_shared::ids::TeamId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "Adm1n!Passw0rd-test";
pub const USER_PASSWORD: &str = "Us3r!Passw0rd-test";
pub const SECRET_KEY: &str = "test-secret-key-0123456789abcdef0123456789";
/// 32 bytes as hex.
pub const ENCRYPTION_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The shared servers the test command started.
pub fn redis_url() -> String {
    std::env::var("CSPM_TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!("CSPM_TEST_REDIS_URL is not set: run the tests with scripts/test.sh (it starts Redis and the Mongo-wire server)")
    })
}

/// The S3-compatible server (moto) the test command started, as an endpoint URL.
pub fn s3_endpoint() -> String {
    std::env::var("CSPM_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "CSPM_TEST_S3_ENDPOINT is not set: run the tests with scripts/test.sh (it starts the S3 test server, moto)"
        )
    })
}

pub fn mongodb_uri() -> String {
    std::env::var("CSPM_TEST_MONGODB_URI").unwrap_or_else(|_| {
        panic!("CSPM_TEST_MONGODB_URI is not set: run the tests with scripts/test.sh (it starts Redis and the Mongo-wire server)")
    })
}

/// A short unique name for a test's databases and queues.
pub fn unique_prefix() -> String {
    let u = ulid::Ulid::generate().to_string().to_ascii_lowercase();
    format!("t{}", &u[u.len() - 12..])
}

/// The environment every binary of a test fleet shares.
pub fn base_env(prefix: &str, redis: &str, mongo: &str) -> Vec<(String, String)> {
    [
        ("MONGODB_URI", mongo.to_string()),
        ("REDIS_URL", redis.to_string()),
        ("CSPM_DB_PREFIX", format!("{prefix}_")),
        ("CSPM_QUEUE_NAMESPACE", format!("{prefix}:")),
        ("SECRET_KEY", SECRET_KEY.to_string()),
        ("CLOUD_ENCRYPTION_KEY", ENCRYPTION_KEY.to_string()),
        ("DEFAULT_ADMIN_EMAIL", format!("admin@{prefix}.test")),
        ("DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ("CSPM_ALLOW_LOOPBACK_SCAN_TARGETS", "true".to_string()),
        // Accounts made by tests get no schedules (a test running across 02:00 UTC would otherwise see a
        // scheduled scan of its account); the schedule tests turn it on.
        ("CSPM_AUTO_SCHEDULE_ON_ACCOUNT_ADD", "false".to_string()),
        // No machine running the tests reaches CISA; the KEV tests import catalogs themselves.
        ("CSPM_KEV_URL", "off".to_string()),
        // Tests sign in often from one address (and poll sign-in until the bootstrap administrator
        // exists); the sign-in rate limit has its own test.
        ("CSPM_LOGIN_RATE_PER_MINUTE", "100000".to_string()),
        ("CSPM_LOG_FORMAT", "json".to_string()),
        ("RUST_LOG", "info".to_string()),
        (
            "CSPM_ARTIFACT_DIR",
            std::env::temp_dir().join("cspm-tests").join(prefix).join("artifacts").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Sets or replaces keys of an environment list.
pub fn with(mut env: Vec<(String, String)>, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in overrides {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_every(Duration::from_millis(100), timeout, what, f).await
}

/// [`wait_until`] with a polling period (heavy checks must not load the servers under test).
pub async fn wait_every<T, F, Fut>(period: Duration, timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {:?} waiting for {what}", timeout);
        }
        tokio::time::sleep(period).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// An HTTP client for one API base URL.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        cspm_shared::artifacts::install_tls_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        Self { base: base.into(), http }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body)).await
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.put(format!("{}{path}", self.base)).bearer_auth(token).json(&body)).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    /// A raw request (for malformed bodies and missing headers).
    pub async fn raw(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        self.send(req).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn login(&self, email: &str, password: &str) -> (u16, Value) {
        self.send(self.http.post(self.url("/api/auth/login")).json(&json!({ "email": email, "password": password })))
            .await
    }

    /// Signs in, waiting for the bootstrap administrator to exist (it is created in the background).
    pub async fn token(&self, email: &str, password: &str) -> String {
        wait_until(Duration::from_secs(60), &format!("sign-in of {email}"), || async {
            let (status, body) = self.login(email, password).await;
            (status == 200).then(|| body["access_token"].as_str().unwrap_or_default().to_string())
        })
        .await
    }

    /// Connects an AWS account (canary tests need no real credentials) and returns its id.
    pub async fn aws_account(&self, token: &str, aws_id: &str, regions: &[&str]) -> String {
        let (status, body) = self
            .post(
                token,
                "/api/cloud-accounts",
                json!({
                    "provider": "aws",
                    "account_id": aws_id,
                    "account_name": format!("account {aws_id}"),
                    "regions": regions,
                    "credentials": { "access_key_id": "AKIATESTTESTTEST", "secret_access_key": "not-a-real-secret-key-xyz" },
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("account id").to_string()
    }

    /// A run's OCSF events (`GET /api/cloud-scans/{run}/ocsf`), one per NDJSON line.
    pub async fn ocsf_events(&self, token: &str, run: &str) -> Vec<Value> {
        let resp = self
            .http
            .get(self.url(&format!("/api/cloud-scans/{run}/ocsf")))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(ctype, "application/x-ndjson");
        let text = resp.text().await.expect("body");
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON event per line")).collect()
    }

    /// Waits until a run reaches a terminal state and returns its status document.
    pub async fn wait_finished(&self, token: &str, run: &str, timeout: Duration) -> Value {
        wait_until(timeout, &format!("run {run} to finish"), || async {
            let (status, body) = self.get(token, &format!("/api/cloud-scans/{run}/status")).await;
            let s = body["status"].as_str().unwrap_or_default();
            (status == 200 && ["completed", "partial", "failed", "cancelled"].contains(&s)).then_some(body)
        })
        .await
    }
}

/// Creates a user with a role in a team (directly in the store: team administration arrives with the
/// identity work) and returns a token for it.
pub async fn user_token(api: &Api, mongo: &Mongo, email: &str, team: &TeamId, role: Role) -> String {
    let hash =
        tokio::task::spawn_blocking(|| cspm_shared::auth::password::hash_password(USER_PASSWORD)).await.expect("hash");
    cspm_shared::store::users::create_user(mongo, email, email, hash, team, role).await.expect("user created");
    api.token(email, USER_PASSWORD).await
}

pub async fn connect_mongo(prefix: &str) -> Mongo {
    Mongo::connect(&mongodb_uri(), &format!("{prefix}_"), "cspm-tests", Duration::from_secs(5)).await.expect("mongo")
}

/// The API, in-process, on a free port.
pub struct TestApi {
    pub api: Api,
    pub prefix: String,
    pub mongo: Mongo,
    /// The API's artifact store, for tests that put artifacts where the API reads them.
    pub artifacts: cspm_shared::artifacts::ArtifactStore,
    pub admin_email: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApi {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(overrides: &[(&str, &str)]) -> Self {
        let prefix = unique_prefix();
        let env = with(base_env(&prefix, &redis_url(), &mongodb_uri()), &[("CSPM_API_BIND", "127.0.0.1:0")]);
        let env = with(env, overrides);
        Self::spawn_env(prefix, env).await
    }

    pub async fn spawn_env(prefix: String, env: Vec<(String, String)>) -> Self {
        let config = cspm_api::config::ApiConfig::from_env(cspm_shared::config::Env::from_map(env)).expect("config");
        let admin_email = config.admin_email.clone();
        let app = cspm_api::Application::build(config).await.expect("api builds");
        let port = app.port();
        let artifacts = app.state().artifacts.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let mongo = connect_mongo(&prefix).await;
        Self {
            api: Api::new(format!("http://127.0.0.1:{port}")),
            prefix,
            mongo,
            artifacts,
            admin_email,
            stop: Some(tx),
        }
    }

    pub async fn admin(&self) -> String {
        self.api.token(&self.admin_email, ADMIN_PASSWORD).await
    }

    /// The bootstrap team (the administrator's).
    pub async fn admin_team(&self) -> TeamId {
        let user = cspm_shared::store::users::find_by_email(&self.mongo, &self.admin_email)
            .await
            .expect("db")
            .expect("admin exists");
        user.active_team_id
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Where the binaries are: `CSPM_BIN_DIR`, or the profile directory the test itself was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CSPM_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("profile dir")
}

/// A real process of the fleet, stopped (SIGKILL) when dropped; its log is printed if the test failed.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(binary: &str, name: &str, env: &[(String, String)], log_dir: &Path) -> Self {
        let path = bin_dir().join(binary);
        assert!(
            path.exists(),
            "{} not found: build the binaries first (cargo build --workspace --bins)",
            path.display()
        );
        std::fs::create_dir_all(log_dir).expect("log dir");
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("process starts");
        Self { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn sigkill(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        let _ = kill(self.pid(), Signal::SIGTERM);
    }

    /// Whether the process has exited (and with what code).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(code) = self.exited() {
                return code;
            }
            assert!(start.elapsed() < timeout, "{} did not exit within {timeout:?}", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let file = std::fs::File::open(&self.log);
            if let Ok(f) = file {
                let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
                let start = lines.len().saturating_sub(40);
                eprintln!("---- last lines of {} ({}) ----", self.name, self.log.display());
                for l in &lines[start..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// A whole fleet of real processes: the API, workers and the scheduler, sharing a test's namespace.
pub struct Fleet {
    pub prefix: String,
    pub env: Vec<(String, String)>,
    pub api: Api,
    pub api_proc: Proc,
    pub workers: Vec<Proc>,
    pub scheduler: Option<Proc>,
    pub mongo: Mongo,
    pub log_dir: PathBuf,
    pub admin_email: String,
    worker_seq: usize,
}

impl Fleet {
    /// Starts the API and the scheduler; workers are started with [`Fleet::add_worker`].
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        let prefix = unique_prefix();
        let api_port = free_port();
        let env = with(base_env(&prefix, &redis_url(), &mongodb_uri()), overrides);
        let log_dir = std::env::temp_dir().join("cspm-tests").join(&prefix);
        let api_env = with(env.clone(), &[("CSPM_API_BIND", &format!("127.0.0.1:{api_port}"))]);
        let api_proc = Proc::spawn("cspm-api", "api", &api_env, &log_dir);
        let sched_env = with(env.clone(), &[("CSPM_SCHEDULER_BIND", "127.0.0.1:0")]);
        let scheduler = Some(Proc::spawn("cspm-scheduler", "scheduler", &sched_env, &log_dir));
        let api = Api::new(format!("http://127.0.0.1:{api_port}"));
        wait_until(Duration::from_secs(60), "the API to answer /readyz", || async {
            let r = api.http.get(api.url("/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        let mongo = connect_mongo(&prefix).await;
        let admin_email = format!("admin@{prefix}.test");
        Self { prefix, env, api, api_proc, workers: Vec::new(), scheduler, mongo, log_dir, admin_email, worker_seq: 0 }
    }

    pub fn add_worker(&mut self, overrides: &[(&str, &str)]) -> usize {
        self.worker_seq += 1;
        let name = format!("worker{}", self.worker_seq);
        let env = with(self.env.clone(), &[("CSPM_WORKER_BIND", "127.0.0.1:0"), ("CSPM_WORKER_NAME", name.as_str())]);
        let output = self.log_dir.join("output").join(&name);
        let env = with(env, &[("CSPM_WORKER_OUTPUT_DIR", output.to_str().unwrap_or("/tmp/cspm-output"))]);
        let env = with(env, overrides);
        self.workers.push(Proc::spawn("cspm-worker", &name, &env, &self.log_dir));
        self.workers.len() - 1
    }

    pub async fn admin(&self) -> String {
        self.api.token(&self.admin_email, ADMIN_PASSWORD).await
    }
}

/// A server process the test owns (a private Redis or Mongo-wire server), to stop and restart at will.
pub struct Server {
    pub port: u16,
    program: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// A private Redis on a free port.
    pub fn redis() -> Self {
        let port = free_port();
        let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut s = Self { port, program: "redis-server".into(), args, child: None };
        s.start();
        s
    }

    /// A private Mongo-wire server (`nx-27017`, in memory) on a free port.
    pub fn mongo_wire() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join("cspm-tests").join(format!("nx-{port}"));
        let _ = std::fs::create_dir_all(&dir);
        let args = vec![
            "--db".into(),
            "memory".into(),
            "-p".into(),
            port.to_string(),
            "--pid-file".into(),
            dir.join("nx.pid").display().to_string(),
            "--log-file".into(),
            dir.join("nx.log").display().to_string(),
        ];
        let mut s = Self { port, program: "nx-27017".into(), args, child: None };
        s.start();
        s
    }

    pub fn start(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "{} did not listen on {}", self.program, self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn mongodb_uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A helper process (a listener to scan) that is killed when the test ends, however it ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The OCSF schema of the fixtures.
pub fn ocsf_schema() -> cspm_shared::ocsf::schema::OcsfSchema {
    cspm_shared::ocsf::schema::OcsfSchema::load(
        &cspm_shared::testing::fixtures_dir().join("ocsf/compiled/ocsf-1.4.0.export.json"),
    )
    .expect("OCSF schema")
}

/// Asserts that every event validates against the OCSF 1.4.0 schema.
pub fn assert_valid_ocsf(events: &[Value]) {
    let schema = ocsf_schema();
    for e in events {
        let errors = schema.validate(e);
        assert!(errors.is_empty(), "invalid OCSF event: {errors:?}\n{e}");
    }
}

/// A worker running in a container of the locally built image `cspm-worker:local` (`scripts/images.sh
/// worker`), Docker-out-of-Docker: it sees the host's Docker socket and the host's output directory at
/// the same path, and starts scanners as its siblings. Host networking, so it reaches the test's Redis
/// and Mongo-wire server on loopback. Removed when dropped; its log is printed if the test failed.
pub struct ContainerWorker {
    pub name: String,
}

impl ContainerWorker {
    pub const IMAGE: &'static str = "cspm-worker:local";

    /// `output` must be a directory of the host; it is given to the image's user (10001).
    pub fn start(name: &str, env: &[(String, String)], output: &Path) -> Self {
        let socket = Path::new("/var/run/docker.sock");
        let socket_gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(socket).expect("docker socket"));
        std::fs::create_dir_all(output).expect("output dir");
        // As root (CI), hand the directory to the worker's user; otherwise let it in.
        if std::os::unix::fs::chown(output, Some(10001), Some(10001)).is_err() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o777)).expect("chmod output");
        }
        let dir = output.display().to_string();
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--user",
            "10001:10001",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--group-add".into(), socket_gid.to_string()]);
        args.extend(["-v".into(), format!("{}:/var/run/docker.sock", socket.display())]);
        args.extend(["-v".into(), format!("{dir}:{dir}")]);
        // A local artifact store is shared with the API the way a volume would be.
        if let Some((_, artifacts)) = env.iter().find(|(k, _)| k == "CSPM_ARTIFACT_DIR") {
            std::fs::create_dir_all(artifacts).expect("artifact dir");
            let _ = std::os::unix::fs::chown(artifacts, Some(10001), Some(10001));
            args.extend(["-v".into(), format!("{artifacts}:{artifacts}")]);
        }
        let env = with(
            env.to_vec(),
            &[("CSPM_WORKER_OUTPUT_DIR", &dir), ("PROWLER_HOST_OUTPUT_DIR", &dir), ("CSPM_SCANNER_RUNNER", "docker")],
        );
        for (k, v) in &env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        args.push(Self::IMAGE.into());
        let out = Command::new("docker").args(&args).output().expect("docker run");
        assert!(
            out.status.success(),
            "cannot start the worker container (is {} built? scripts/images.sh worker): {}",
            Self::IMAGE,
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name: name.to_string() }
    }

    pub fn logs(&self) -> String {
        let out = Command::new("docker").args(["logs", &self.name]).output().expect("docker logs");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// SIGKILL, as a crashed host process would die; the container stays (stopped) for its logs.
    pub fn kill(&self) {
        let _ = Command::new("docker").args(["kill", "--signal", "KILL", &self.name]).output();
    }
}

impl Drop for ContainerWorker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!("---- last lines of container {} ----", self.name);
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}

/// Names of the containers (running or not) labelled as started by a fleet (its database prefix).
pub fn fleet_containers(db_prefix: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter", &format!("label=io.cspm.fleet={db_prefix}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Creates a bucket on the test's S3 server (object_store cannot; moto takes an unsigned path-style PUT).
pub async fn create_bucket(bucket: &str) {
    cspm_shared::artifacts::install_tls_provider();
    let resp = reqwest::Client::new()
        .put(format!("{}/{bucket}", s3_endpoint()))
        .send()
        .await
        .expect("the S3 test server answers");
    assert!(resp.status().is_success(), "creating bucket {bucket}: {}", resp.status());
}

/// The settings that point a fleet's artifact store at a bucket of the test's S3 server.
pub fn s3_overrides(bucket: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CSPM_ARTIFACT_STORE", "s3".into()),
        ("CSPM_S3_BUCKET", bucket.into()),
        ("CSPM_S3_ENDPOINT", s3_endpoint()),
        ("CSPM_S3_ACCESS_KEY_ID", "testing-key-id".into()),
        ("CSPM_S3_SECRET_ACCESS_KEY", "testing-secret-key".into()),
        ("CSPM_S3_PATH_STYLE", "true".into()),
        ("CSPM_S3_ALLOW_HTTP", "true".into()),
    ]
}
