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
