//! Shared by the CLI tests: a temp home plus a `PATH` dir holding a fake
//! `docker` whose daemon is down (it records every call it gets).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bottle_core::state::{Metadata, Phase, METADATA_SCHEMA};

/// What the fake `docker` prints on stderr.
pub const DAEMON_DOWN: &str =
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";

/// `<dir>/home`, `<dir>/bin/docker` (fake), `<dir>/empty`, `<dir>/cwd`,
/// and `<dir>/docker-calls` (what the fake was asked).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let docker = bin.join("docker");
        std::fs::write(
            &docker,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\necho '{DAEMON_DOWN}' >&2\nexit 1\n",
                dir.path().join("docker-calls").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["home", "empty", "cwd"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `bottle --home <home> args…` with `path` as the whole `PATH`, stdin
    /// closed, and none of the caller's bottle, docker or log settings.
    pub fn command(&self, path: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bottle"));
        c.arg("--home")
            .arg(self.home())
            .args(args)
            .env("PATH", path)
            .env_remove("BOTTLE_HOME")
            .env_remove("BOTTLE_SMOLVM")
            .env_remove("RUST_LOG")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        c
    }

    /// Snapshot settings that show this env's temp dir as `[TMP]`.
    pub fn settings(&self) -> insta::Settings {
        let mut s = insta::Settings::clone_current();
        s.add_filter(&regex_escape(self.dir.path()), "[TMP]");
        s.set_prepend_module_to_snapshot(false);
        s
    }

    /// Write `state/<id>/metadata.json` as `bottle start` would.
    pub fn bottle(&self, id: &str, phase: Phase) {
        let state = self.home().join("state").join(id);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("slot"), "1").unwrap();
        let meta = Metadata {
            schema_version: METADATA_SCHEMA,
            identity: id.into(),
            agent: "demo".into(),
            bottle: "dev".into(),
            backend: "docker".into(),
            runtime: "runc".into(),
            plan_hash: "0".repeat(64),
            images: Default::default(),
            created: "2025-01-01T00:00:00Z".into(),
            workspace: None,
            owner_pid: None,
            phase,
            slot: 1,
            capabilities: Vec::new(),
        };
        std::fs::write(
            state.join("metadata.json"),
            serde_json::to_string_pretty(&meta).unwrap(),
        )
        .unwrap();
    }
}

/// `p` as a regex matching itself.
fn regex_escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if !c.is_ascii_alphanumeric() && c != '/' && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
