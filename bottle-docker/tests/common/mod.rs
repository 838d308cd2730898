//! Shared by the docker backend's recording-runner tests: the shell-basic
//! fixture resolved as `main-dev-abc123`, a backend with a fake sidecar
//! binary, and the launch input of a case.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;

use bottle_core::backend::LaunchInput;
use bottle_core::plan::{NoPrompt, ResolveOptions};
use bottle_core::{resolve, BottlePlan, Home, Identity, Loader, StateDir, Wiring};
use bottle_docker::{DockerBackend, ProbeCache};
use camino::{Utf8Path, Utf8PathBuf};

/// A resolved plan, its state dir and a wiring, in a temp dir.
pub struct Case {
    pub _dir: tempfile::TempDir,
    pub root: Utf8PathBuf,
    pub plan: BottlePlan,
    pub state: StateDir,
    pub wiring: Wiring,
}

/// The shell-basic fixture in slot `slot`, its agent's secret env present
/// or not; the wiring names only the bundle's arguments.
pub fn shell_basic(secret_env: bool, slot: u32) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    let text = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shell-basic.case"),
    )
    .unwrap();
    let text = if secret_env {
        text
    } else {
        text.replace("HOST_SECRET = { secret = \"${HOST_VALUE}\" }\n", "")
    };
    bottle_core::fixture::write_case(&text, &root).unwrap();
    let (agent, bottle) = Loader::new(Home::new(&root), None).load("main").unwrap();
    let opts = ResolveOptions {
        identity: Some(Identity::parse("main-dev-abc123").unwrap()),
        slot,
        ..Default::default()
    };
    let env = BTreeMap::from([
        ("HOME".to_owned(), root.join("operator").to_string()),
        ("API_TOKEN".to_owned(), "tok-SECRET-route-0003".to_owned()),
        ("HOST_VALUE".to_owned(), "host-env-SECRET-0005".to_owned()),
    ]);
    let plan = resolve(&agent, &bottle, &opts, &env, &NoPrompt).unwrap();
    let state = StateDir::at(root.join("state/main-dev-abc123"));
    fs::create_dir_all(state.path()).unwrap();
    Case {
        _dir: dir,
        root,
        plan,
        state,
        wiring: Wiring {
            bundle_args: vec![
                "run".into(),
                "--config".into(),
                "/bottle/bundle.toml".into(),
            ],
            ..Default::default()
        },
    }
}

/// A docker backend with a fake sidecar binary under `root`, bundle user
/// 1000, no CPU clamp and no probe cache.
pub fn backend(root: &Utf8Path) -> DockerBackend {
    let bin = root.join("fake-bottle-sidecar");
    fs::write(&bin, b"\x7fELF fake sidecar binary").unwrap();
    DockerBackend::default()
        .with_sidecar_bin(bin)
        .with_bundle_user(1000, 1000)
        .with_host_cpus(None)
        .with_probe_cache(ProbeCache::off())
}

/// The launch input of `c`.
pub fn input(c: &Case) -> LaunchInput<'_> {
    LaunchInput {
        plan: &c.plan,
        state: &c.state,
        wiring: &c.wiring,
    }
}
