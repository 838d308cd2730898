//! Tidy checks as ordinary tests (rust-analyzer's `tidy.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use bottle_tests::gate::{trial, Trial};
use bottle_tests::workspace_root;

fn tracked_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let out = duct::cmd!("git", "ls-files", "-co", "--exclude-standard")
        .dir(&root)
        .read()
        .expect("git ls-files");
    out.lines()
        .map(|l| root.join(l))
        .filter(|p| p.is_file())
        .collect()
}

fn rust_sources() -> Vec<PathBuf> {
    tracked_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(workspace_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn no_stubs_in_sources() {
    let tidy_file = file!().rsplit('/').next().unwrap().to_owned();
    let needles = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("#[", "ignore"),
    ];
    let mut bad = Vec::new();
    for p in rust_sources() {
        if p.ends_with(&tidy_file) {
            continue;
        }
        let text = fs::read_to_string(&p).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n)) {
                bad.push(format!("{}:{}: {}", rel(&p), i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "stubs or ignored tests:\n{}",
        bad.join("\n")
    );
}

fn no_machine_paths_in_tracked_text() {
    let needles = [
        concat!("/wo", "rk/"),
        concat!("/ro", "ot/"),
        concat!("/ho", "me/runner"),
    ];
    let mut bad = Vec::new();
    for p in tracked_files() {
        let Ok(text) = fs::read_to_string(&p) else {
            continue;
        };
        if p.ends_with("Cargo.lock") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n)) {
                bad.push(format!("{}:{}", rel(&p), i + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "absolute machine paths in tracked files:\n{}",
        bad.join("\n")
    );
}

fn sources_are_formatted() {
    let out = duct::cmd!("cargo", "fmt", "--all", "--", "--check")
        .dir(workspace_root())
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .expect("cargo fmt runs");
    assert!(
        out.status.success(),
        "cargo fmt --check found unformatted code; run `cargo fmt --all`:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn core_stays_free_of_docker_network_and_async() {
    let manifest = fs::read_to_string(workspace_root().join("bottle-core/Cargo.toml")).unwrap();
    for dep in [
        "tokio",
        "hyper",
        "reqwest",
        "hudsucker",
        "rmcp",
        "bottle-docker",
        "bottle-host",
    ] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(dep)),
            "bottle-core must not depend on {dep}"
        );
    }
    let lib = fs::read_to_string(workspace_root().join("bottle-core/src/lib.rs")).unwrap();
    assert!(lib.contains("#![deny(missing_docs)]"));
}

fn dlp_is_sync_and_depends_on_no_workspace_crate() {
    // bottle-dlp is used by the sidecars (async) and by core/cli (sync,
    // host-side checks), so it must stay a leaf: no async runtime, no
    // network, no other bottle crate.
    let manifest = fs::read_to_string(workspace_root().join("bottle-dlp/Cargo.toml")).unwrap();
    for dep in [
        "tokio",
        "hyper",
        "reqwest",
        "hudsucker",
        "rmcp",
        "bottle-core",
        "bottle-host",
        "bottle-sidecars",
        "bottle-docker",
        "bottle-smolmachines",
        "bottle-cli",
    ] {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{dep} "))
                    || l.trim_start().starts_with(&format!("{dep}."))),
            "bottle-dlp must not depend on {dep}"
        );
    }
}

/// Whether a Cargo.toml names `dep` as a dependency (`dep = …` or
/// `dep.workspace = true`).
/// The workspace crates (`bottle-*`) a manifest depends on, in order.
fn workspace_deps(manifest: &str) -> Vec<&str> {
    manifest
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("bottle-"))
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .collect()
}

fn names_dependency(manifest: &str, dep: &str) -> bool {
    manifest.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with(&format!("{dep} ")) || l.starts_with(&format!("{dep}."))
    })
}

fn backends_depend_on_core_only() {
    // (crate, workspace crates it must not depend on); ARCHITECTURE.md,
    // "Dependency rules"
    let rules: [(&str, &[&str]); 4] = [
        (
            "bottle-docker",
            &[
                "bottle-smolmachines",
                "bottle-cli",
                "bottle-host",
                "bottle-sidecars",
            ],
        ),
        (
            "bottle-smolmachines",
            &[
                "bottle-docker",
                "bottle-cli",
                "bottle-host",
                "bottle-sidecars",
            ],
        ),
        (
            "bottle-sidecars",
            &["bottle-docker", "bottle-smolmachines", "bottle-cli"],
        ),
        (
            "bottle-host",
            &[
                "bottle-docker",
                "bottle-smolmachines",
                "bottle-cli",
                "bottle-sidecars",
            ],
        ),
    ];
    for (krate, forbidden) in rules {
        let manifest = fs::read_to_string(workspace_root().join(krate).join("Cargo.toml")).unwrap();
        for other in forbidden {
            assert!(
                !names_dependency(&manifest, other),
                "{krate} must not depend on {other}"
            );
        }
    }
}

/// Crates of an async runtime / HTTP stack / MCP server: the daemons'
/// business, never the host side's.
const ASYNC_STACK: [&str; 8] = [
    "tokio",
    "hyper",
    "hyper-util",
    "reqwest",
    "hudsucker",
    "rmcp",
    "axum",
    "tokio-rustls",
];

fn host_contract_depends_on_core_and_dlp_only_and_no_async_stack() {
    let manifest = fs::read_to_string(workspace_root().join("bottle-host/Cargo.toml")).unwrap();
    let workspace_deps = workspace_deps(&manifest);
    assert_eq!(
        workspace_deps,
        ["bottle-core", "bottle-dlp"],
        "bottle-host depends on bottle-core and bottle-dlp only"
    );
    for dep in ASYNC_STACK {
        assert!(
            !names_dependency(&manifest, dep),
            "bottle-host must not depend on {dep}"
        );
    }
}

/// `cargo tree` of the `bottle` binary's normal dependencies (all features):
/// the CLI calls the sync host contract (`bottle-host`), so it links no
/// async runtime, HTTP server or MCP stack.
fn the_cli_links_no_tokio_hyper_or_rmcp() {
    let out = duct::cmd!(
        "cargo",
        "tree",
        "--offline",
        "-p",
        "bottle-cli",
        "--all-features",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}"
    )
    .dir(workspace_root())
    .stderr_to_stdout()
    .stdout_capture()
    .unchecked()
    .run()
    .expect("cargo tree runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed:\n{text}");
    let crates: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"bottle-host"),
        "bottle-cli should reach the host contract through bottle-host:\n{text}"
    );
    for dep in ASYNC_STACK.iter().chain(&["bottle-sidecars"]) {
        assert!(
            !crates.contains(dep),
            "bottle-cli links {dep} (`cargo tree -p bottle-cli -e normal -i {dep}` shows why)"
        );
    }
}

fn docs_exist_and_name_the_two_commands() {
    let readme = fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    assert!(readme.contains("cargo xtask demo"));
    assert!(readme.contains("cargo xtask test"));
    assert!(workspace_root().join("ARCHITECTURE.md").is_file());
}

/// The CLI knows backends through the `Backend` trait and the registry
/// only (ARCHITECTURE.md "Adding a backend"): no backend crate, backend
/// type, backend command or test of a backend's id outside `registry.rs`.
fn the_cli_names_no_backend_outside_the_registry() {
    const EXEMPT: [&str; 1] = ["bottle-cli/src/registry.rs"];
    let needles = [
        "bottle_docker",
        "bottle_smolmachines",
        "DockerBackend",
        "SmolmachinesBackend",
        ".id() ==",
        ".id() !=",
        "backend == \"",
        "backend != \"",
        "name == \"docker\"",
        "name == \"smolmachines\"",
        "CommandSpec::new(\"docker\")",
        "CommandSpec::new(\"smolvm\")",
    ];
    let mut hits = Vec::new();
    for p in rust_sources() {
        let r = rel(&p);
        if !r.starts_with("bottle-cli/src/") || EXEMPT.contains(&r.as_str()) {
            continue;
        }
        let text = fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            if let Some(n) = needles.iter().find(|n| line.contains(*n)) {
                hits.push(format!("{r}:{}: `{n}`", i + 1));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "the CLI names a backend outside the registry (add a `Backend` method instead):\n{}",
        hits.join("\n")
    );
}

/// The lifecycle library (ARCHITECTURE.md, "Lifecycle") knows no backend
/// and no async stack: it runs start/resume/stop/rm/gc over `&dyn
/// Backend` with bottle-host's Prepare impls.
fn the_lifecycle_depends_on_core_and_host_only_and_no_async_stack() {
    let manifest =
        fs::read_to_string(workspace_root().join("bottle-lifecycle/Cargo.toml")).unwrap();
    let workspace_deps = workspace_deps(&manifest);
    assert_eq!(
        workspace_deps,
        ["bottle-core", "bottle-host"],
        "bottle-lifecycle depends on bottle-core and bottle-host only"
    );
    for dep in ASYNC_STACK {
        assert!(
            !names_dependency(&manifest, dep),
            "bottle-lifecycle must not depend on {dep}"
        );
    }
}

/// The lifecycle's steps (allocate, prepare, launch, record the phase,
/// remove) run in `bottle-lifecycle` only: the CLI, the dashboard and the
/// embedding example call it, so there is one copy of each.
fn the_cli_runs_no_lifecycle_step_itself() {
    let needles = [
        ".allocate(",
        "prepare_all(",
        ".launch_observed(",
        ".launch(",
        ".remove_all(",
        "write_metadata(",
        "apply_capabilities(",
    ];
    let mut hits = Vec::new();
    for p in rust_sources() {
        let r = rel(&p);
        if !r.starts_with("bottle-cli/") {
            continue;
        }
        let text = fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if let Some(n) = needles.iter().find(|n| line.contains(*n)) {
                hits.push(format!("{r}:{}: `{n}`", i + 1));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "a lifecycle step outside bottle-lifecycle (call `Lifecycle` instead):\n{}",
        hits.join("\n")
    );
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![
        trial!(no_stubs_in_sources),
        trial!(no_machine_paths_in_tracked_text),
        trial!(sources_are_formatted),
        trial!(core_stays_free_of_docker_network_and_async),
        trial!(dlp_is_sync_and_depends_on_no_workspace_crate),
        trial!(backends_depend_on_core_only),
        trial!(host_contract_depends_on_core_and_dlp_only_and_no_async_stack),
        trial!(the_cli_links_no_tokio_hyper_or_rmcp),
        trial!(docs_exist_and_name_the_two_commands),
        trial!(the_cli_names_no_backend_outside_the_registry),
        trial!(the_lifecycle_depends_on_core_and_host_only_and_no_async_stack),
        trial!(the_cli_runs_no_lifecycle_step_itself),
    ]
}
