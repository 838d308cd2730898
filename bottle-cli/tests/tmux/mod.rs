//! What the tmux-driven CLI tests share: the session. Each test is a
//! libtest-mimic trial gated on `bottle_test_gate::TMUX`: without tmux it is
//! reported *ignored* with the reason, never passed; in CI (`CI=true`) a
//! missing tmux is a failure (`.ci/run` installs it).
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

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

    /// Wait until the screen shows `want` (30 s at most).
    pub fn wait_for(&self, want: &str) -> String {
        self.wait_for_within(want, Duration::from_secs(30))
    }

    /// Wait until the screen shows `want`, `limit` at most.
    pub fn wait_for_within(&self, want: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let p = self.pane();
            if p.contains(want) {
                return p;
            }
            assert!(Instant::now() < deadline, "waited for {want:?}:\n{p}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
