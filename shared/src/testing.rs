//! Helpers for the project's tests (kept in the library so that every crate's tests share them).

use std::path::PathBuf;

/// The shared fixtures (real scanner outputs): `CSPM_FIXTURES_DIR` if set, else `../shared/fixtures`
/// next to the workspace, else `/work/shared/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CSPM_FIXTURES_DIR") {
        return PathBuf::from(dir);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/fixtures")
}

/// A native SubJob of `tool` as a worker holds it once claimed (running, first attempt, a run of one,
/// 120 s to run), for tests that plan or parse one; override fields with struct-update syntax.
pub fn running_native_subjob(
    tool: crate::domain::scan::Tool,
    native: crate::store::subjobs::NativeSpec,
) -> crate::store::subjobs::SubJobDoc {
    use crate::domain::scan::{SubJobStatus, ToolId};
    use crate::ids::{RunId, TeamId};
    crate::store::subjobs::SubJobDoc {
        native: Some(native),
        status: SubJobStatus::Running,
        attempts: 1,
        timeout_secs: 120,
        ..crate::store::subjobs::SubJobDoc::queued(
            RunId::new(),
            TeamId::new(),
            crate::queue::QueueKind::Native,
            ToolId::plain(tool),
            "global".into(),
        )
    }
}

/// An image built on this host for one test (`FROM cspm-base:bookworm` with `files` added under `/app`;
/// never pushed anywhere), removed when dropped. Its tag is `.0`.
pub struct LocalImage(pub String);

impl LocalImage {
    pub fn build(files: &[(&str, &str)]) -> Self {
        let name = format!("cspm-test-local-{}", ulid::Ulid::generate().to_string().to_ascii_lowercase());
        let tag = format!("{name}:1");
        let context = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&context).expect("build context");
        let mut dockerfile = String::from("FROM cspm-base:bookworm\n");
        for (name, text) in files {
            std::fs::write(context.join(name), text).expect("context file");
            dockerfile.push_str(&format!("COPY {name} /app/{name}\n"));
        }
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let built = std::process::Command::new("docker")
            .args(["build", "-q", "--network", "none", "-t", &tag])
            .arg(&context)
            .output()
            .expect("docker build runs");
        let _ = std::fs::remove_dir_all(&context);
        assert!(built.status.success(), "docker build failed: {}", String::from_utf8_lossy(&built.stderr));
        LocalImage(tag)
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// A secret Trivy's GitHub rule recognises, random so that it is no allow-listed example.
pub fn fake_github_token() -> String {
    let random = format!("{}{}", ulid::Ulid::generate(), ulid::Ulid::generate()).to_ascii_lowercase();
    format!("ghp_{}", &random[..36])
}
