//! Shared support for bottle's integration tests (`tests/integration/main.rs`
//! and the security suite, `tests/security_suite/main.rs`).
//!
//! Real-tool gating: both are `harness = false` targets whose trials name
//! what they need ([`gate::Requirement`]: a docker engine, the seeded
//! images, tmux...). Locally a missing requirement reports the trial
//! *ignored* with the reason, never `ok`; with `CI=true` it fails. The
//! mechanism is the `bottle-test-gate` crate, shared with the tmux tests of
//! `bottle-cli` and the smolvm tests of `bottle-smolmachines`.

use std::path::{Path, PathBuf};

pub use bottle_test_gate as gate;
pub use bottle_test_gate::in_ci;
use gate::Requirement;

/// The seeded base image (`cargo xtask seed-base`).
pub static SEEDED_BASE: Requirement =
    Requirement::new("seeded base image", || image(support_docker::BASE_IMAGE));

/// The seeded base image and the sshd upstream image (`cargo xtask
/// seed-base` builds both).
pub static SEEDED_IMAGES: Requirement = Requirement::new("seeded images", || {
    image(support_docker::BASE_IMAGE)?;
    image(support_docker::SSHD_IMAGE)
});

fn image(tag: &str) -> Result<(), String> {
    if support_docker::image_exists(tag) {
        Ok(())
    } else {
        Err(format!(
            "the seeded image {tag} is missing: run `cargo xtask seed-base`"
        ))
    }
}

/// Is the docker engine reachable?
pub fn docker_available() -> bool {
    gate::DOCKER.gate() == gate::Gate::Run
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
