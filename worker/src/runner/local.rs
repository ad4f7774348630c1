//! The local-process runner: the scanner runs as a child process of the worker, in its own process
//! group, so that stopping it also stops whatever it started.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{Exit, ProcessSpec, RunReport, StopSignal};

/// How long a process has between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How much of the output is kept for messages.
const TAIL_BYTES: usize = 4096;

/// Whether an executable can be found (an absolute path, or a name on `PATH`).
pub fn find_executable(program: &str) -> Option<std::path::PathBuf> {
    let is_exec = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_exec(p))
}

pub async fn run(spec: &ProcessSpec, timeout: Duration, stop: StopSignal) -> std::io::Result<RunReport> {
    let report = run_process(spec, timeout, stop).await;
    for f in &spec.secret_files {
        if let Err(e) = std::fs::remove_file(f)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, file = %f.display(), "could not remove a credential file");
        }
    }
    report
}

async fn run_process(spec: &ProcessSpec, timeout: Duration, mut stop: StopSignal) -> std::io::Result<RunReport> {
    let started = Instant::now();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.workdir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for key in ["PATH", "HOME", "LANG", "TZ"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let out = tokio::spawn(tail(child.stdout.take()));
    let err = tokio::spawn(tail(child.stderr.take()));

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let exit = tokio::select! {
        status = child.wait() => Exit::Exited(status?.code()),
        _ = &mut deadline => Exit::TimedOut,
        // A dropped sender (the pipeline went away: nobody can use the result) is a shutdown.
        reason = super::stopped(&mut stop) => Exit::Stopped(reason),
    };
    if !matches!(exit, Exit::Exited(_)) {
        terminate(&mut child, pgid).await;
    } else if let Some(pg) = pgid {
        // The scanner is done; anything it left behind in its group goes too.
        let _ = killpg(pg, Signal::SIGKILL);
    }
    let mut output_tail = String::new();
    for part in [out.await, err.await].into_iter().flatten() {
        let s = String::from_utf8_lossy(&part);
        if !s.trim().is_empty() {
            output_tail.push_str(s.trim_end());
            output_tail.push('\n');
        }
    }
    Ok(RunReport { exit, duration: started.elapsed(), output_tail, start_latency: None })
}

/// SIGTERM to the whole group, then SIGKILL if it is still there after the grace period.
async fn terminate(child: &mut tokio::process::Child, pgid: Option<Pid>) {
    if let Some(pg) = pgid {
        let _ = killpg(pg, Signal::SIGTERM);
    }
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        if let Some(pg) = pgid {
            let _ = killpg(pg, Signal::SIGKILL);
        }
        let _ = child.kill().await;
    } else if let Some(pg) = pgid {
        let _ = killpg(pg, Signal::SIGKILL);
    }
}

/// Reads a stream to its end, keeping the last `TAIL_BYTES`.
async fn tail<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let Some(mut r) = stream else { return Vec::new() };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * TAIL_BYTES {
                    kept.drain(..kept.len() - TAIL_BYTES);
                }
            }
        }
    }
    if kept.len() > TAIL_BYTES {
        kept.drain(..kept.len() - TAIL_BYTES);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::StopReason;

    fn spec(program: &str, args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("SECRET_FOR_CHILD".into(), "v".into())],
            workdir: std::env::temp_dir(),
            ok_exit_codes: vec![3],
            secret_files: vec![],
            mounts: vec![],
        }
    }

    #[tokio::test]
    async fn exit_codes_and_output_are_reported() {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let s = spec("sh", &["-c", "echo hello; echo oops >&2; exit 3"]);
        let r = run(&s, Duration::from_secs(30), rx).await.expect("runs");
        assert_eq!(r.exit, Exit::Exited(Some(3)));
        assert!(r.succeeded(&s));
        assert!(r.output_tail.contains("hello") && r.output_tail.contains("oops"), "{}", r.output_tail);
    }

    #[tokio::test]
    async fn the_environment_is_cleared_except_what_the_adapter_passes() {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let s = spec("sh", &["-c", "echo secret=$SECRET_FOR_CHILD cargo=${CARGO:-unset}"]);
        let r = run(&s, Duration::from_secs(30), rx).await.expect("runs");
        assert!(r.output_tail.contains("secret=v"), "{}", r.output_tail);
        assert!(r.output_tail.contains("cargo=unset"), "{}", r.output_tail);
    }

    #[tokio::test]
    async fn a_process_past_its_time_is_killed_with_its_children() {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let marker = std::env::temp_dir().join(format!("cspm-runner-{}", std::process::id()));
        let script = format!("(sleep 3; touch {}) & sleep 60", marker.display());
        let s = spec("sh", &["-c", &script]);
        let r = run(&s, Duration::from_millis(300), rx).await.expect("runs");
        assert_eq!(r.exit, Exit::TimedOut);
        assert!(r.duration < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists(), "the scanner's child survived");
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_process() {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let s = spec("sleep", &["60"]);
        let handle = tokio::spawn(async move { run(&s, Duration::from_secs(60), rx).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(Some(StopReason::Cancelled)).expect("send");
        let r = handle.await.expect("join").expect("runs");
        assert_eq!(r.exit, Exit::Stopped(StopReason::Cancelled));
    }

    #[test]
    fn executables_are_found_on_the_path() {
        assert!(find_executable("sh").is_some());
        assert!(find_executable("no-such-scanner-xyz").is_none());
    }
}
