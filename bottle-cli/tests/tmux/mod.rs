//! What the tmux-driven CLI tests share: the session. Each test is a
//! libtest-mimic trial gated on `bottle_test_gate::TMUX`: without tmux it is
//! reported *ignored* with the reason, never passed; in CI (`CI=true`) a
//! missing tmux is a failure (`.ci/run` installs it).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A `docker` that runs the shell `script`, in `<dir>/bin` (returned, for
/// the front of the session's `PATH`): no real engine is touched.
pub fn fake_docker(dir: &Path, script: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(&docker, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// `exe --home <home> init -q`, which must succeed.
pub fn init_home(exe: &Path, home: &Path) {
    let o = Command::new(exe)
        .arg("--home")
        .arg(home)
        .args(["init", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

/// A tmux session, killed whatever happens.
pub struct Session(pub String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

impl Session {
    /// A detached session `<name>-<pid>` of `width`x`height` running the
    /// shell command line `cmdline`.
    pub fn start(name: &str, (width, height): (u16, u16), cmdline: &str) -> Session {
        let s = Session(format!("{name}-{}", std::process::id()));
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &s.0])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(cmdline)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session {}", s.0);
        s
    }

    /// Type `text`, a key per character.
    pub fn type_text(&self, text: &str) {
        let keys: Vec<String> = text.chars().map(String::from).collect();
        self.keys(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// What the pane shows.
    pub fn pane(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Send keys, one by one.
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let _ = Command::new("tmux")
                .args(["send-keys", "-t", &self.0, k])
                .status();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `file` exists (the session's command line writes it when
    /// the command under test has ended), `limit` at most; `what` names
    /// that end in the failure.
    pub fn wait_for_file(&self, file: &Path, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !file.exists() {
            assert!(Instant::now() < deadline, "{what}:\n{}", self.pane());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the screen shows `want` (30 s at most).
    pub fn wait_for(&self, want: &str) -> String {
        self.wait_for_within(want, Duration::from_secs(30))
    }

    /// Wait until the screen shows `want`, `limit` at most.
    pub fn wait_for_within(&self, want: &str, limit: Duration) -> String {
        self.wait_until(&format!("{want:?}"), limit, |p| p.contains(want))
    }

    /// Wait until a line of the screen is `line` (30 s at most): `what` says
    /// which in the failure.
    pub fn wait_for_line(&self, what: &str, line: impl Fn(&str) -> bool) -> String {
        self.wait_until(what, Duration::from_secs(30), |p| p.lines().any(&line))
    }

    /// Wait until the screen is `done`, `limit` at most.
    fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let p = self.pane();
            if done(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "waited for {what}:\n{p}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
