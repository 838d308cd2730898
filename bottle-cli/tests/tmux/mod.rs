//! What the tmux-driven CLI tests share: the session, and a libtest-mimic
//! runner that reports a test it cannot run here (no tmux) as *ignored*
//! with the reason, never as passed; in CI (`CI=true`) a missing tmux is a
//! failure (`.ci/run` installs it).
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

/// Whether tmux runs here.
pub fn available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a docker engine answers here.
pub fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `tests` (name, body): ignored without tmux outside CI, failed
/// without it in CI.
pub fn run(tests: Vec<(&'static str, fn())>) -> ! {
    run_needing(tests.into_iter().map(|(n, b)| (n, b, false)).collect())
}

/// Run `tests` (name, body, needs a docker engine): each is ignored when
/// what it needs (tmux, and docker where it says so) is missing outside
/// CI, and failed when it is missing in CI.
pub fn run_needing(tests: Vec<(&'static str, fn(), bool)>) -> ! {
    let args = Arguments::from_args();
    let have = available();
    let docker = tests.iter().any(|t| t.2) && docker_answers();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let trials = tests
        .into_iter()
        .map(|(name, body, needs_docker)| {
            let missing = if !have {
                Some("tmux unavailable (install tmux)")
            } else if needs_docker && !docker {
                Some("no docker engine answers (start dockerd)")
            } else {
                None
            };
            if let (Some(why), false) = (missing, ci) {
                eprintln!("SKIPPED (reported ignored): {name}: {why}");
            }
            Trial::test(name, move || {
                if let Some(why) = missing {
                    return Err(Failed::from(format!("required in CI: {why}")));
                }
                std::panic::catch_unwind(body).map_err(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into());
                    Failed::from(msg)
                })
            })
            .with_ignored_flag(missing.is_some() && !ci)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
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
