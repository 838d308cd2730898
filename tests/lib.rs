//! Shared support for bottle's integration tests (one test binary:
//! `tests/integration/main.rs`).
//!
//! Real-tool gating (rust-analyzer's `requires` style): a test that needs a
//! real engine or tool calls [`require`]; locally a missing tool skips the
//! test with a printed reason, with `CI=true` it fails.

use std::path::{Path, PathBuf};

/// True when running in CI, where every real-tool test is required.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Gate a test on a tool. Returns `false` (and prints why) when the test
/// must be skipped; panics in CI.
pub fn require(tool: &str, available: bool, why: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{tool} is required in CI but unavailable: {why}");
    }
    eprintln!("SKIPPED: {tool} unavailable ({why}); set CI=true to make this a failure");
    false
}

/// Is the docker engine reachable?
pub fn docker_available() -> bool {
    duct::cmd!("docker", "info")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Gate on a reachable docker engine.
pub fn require_docker() -> bool {
    require("docker", docker_available(), "`docker info` failed")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary (`bottle`, `bottle-sidecar`), building it
/// first if needed.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join(bin);
    let status = duct::cmd!("cargo", "build", "-q", "-p", package, "--bin", bin)
        .dir(&root)
        .unchecked()
        .run()
        .expect("cargo runs");
    assert!(status.status.success(), "building {bin} failed");
    path
}
pub mod support_docker;
