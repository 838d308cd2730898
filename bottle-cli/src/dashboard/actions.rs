//! What the dashboard's keys do to bottles and requests: the [`Operator`]
//! interface the keys call, [`Done`] for what background work reports, and
//! the real operator [`CliOperator`] (made with [`CliOperator::new`]).
//!
//! Everything that runs an action (approve, deny, start, stop, resume, rm,
//! logs, shell) is in this one module, so how it runs can change here
//! without touching the UI.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::model;
use super::text::last_lines;

/// What the dashboard's keys do (the CLI's real impl and a test recorder).
///
/// Every method returns at once: what takes an engine (stop, rm, start,
/// resume, logs) runs in the background and reports through [`Done`];
/// the `Ok` text is the status line meanwhile.
pub trait Operator {
    /// Approve a request, optionally narrowed to these path globs.
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String>;
    /// Deny a request.
    fn deny(&self, req: &str, reason: &str) -> Result<String, String>;
    /// Start an agent in the background (a bad agent name fails here).
    fn start(&self, agent: &str) -> Result<String, String>;
    /// Stop a bottle in the background.
    fn stop(&self, identity: &str) -> Result<String, String>;
    /// Relaunch a stopped bottle in the background.
    fn resume(&self, identity: &str) -> Result<String, String>;
    /// Remove a bottle (state and home volume) in the background.
    fn remove(&self, identity: &str) -> Result<String, String>;
    /// Fetch a bottle's recent log lines in the background ([`Done::Logs`]);
    /// `stopped`: its agent output is gone, show the sidecars' log.
    fn logs(&self, identity: &str, stopped: bool) -> Result<String, String>;
    /// A shell in the bottle, on this terminal (the dashboard has handed it
    /// over); returns when the shell ends.
    fn shell(&self, identity: &str) -> Result<String, String>;
}

/// What background work reports when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// For the status line (`error: …` when it failed).
    Status(String),
    /// A bottle's log lines, for the logs pane.
    Logs {
        /// The bottle.
        identity: String,
        /// Its lines, oldest first.
        lines: Vec<String>,
    },
}

/// The real operator. Decisions, stop and rm call the same library code
/// as `bottle approve`/`deny`/`stop`/`rm` (stop and rm on a background
/// thread); start and resume (a launch prints progress and may prompt) run
/// `bottle` as a child process whose error, if any, comes back to the
/// status line.
pub struct CliOperator {
    home: bottle_core::Home,
    done: mpsc::Sender<Done>,
}

/// The `bottle` binary to run for a launch: the one this dashboard runs
/// from. When that file is gone (rebuilt or removed since the dashboard
/// started: Linux then names it `… (deleted)`), the running image itself
/// (`/proc/self/exe`, the same version as the dashboard).
fn bottle_exe(current: std::io::Result<PathBuf>, running: &Path) -> Result<PathBuf, String> {
    match current {
        Ok(p) if p.is_file() => Ok(p),
        _ if running.exists() => Ok(running.to_owned()),
        Ok(p) => Err(format!(
            "the bottle binary {} is gone (rebuilt or removed since the dashboard started): restart `bottle dashboard`",
            p.display()
        )),
        Err(e) => Err(format!(
            "cannot find the bottle binary ({e}): restart `bottle dashboard`"
        )),
    }
}

/// The first `error:` line of a failed `bottle` run, with its `fix:`.
fn error_of(stderr: &str) -> String {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with("error:"));
    match lines.next() {
        Some(e) => {
            let e = e.trim_start_matches("error:").trim();
            match lines.next().map(str::trim) {
                Some(fix) if fix.starts_with("fix:") => format!("{e} ({fix})"),
                _ => e.to_owned(),
            }
        }
        None => stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_owned(),
    }
}

impl CliOperator {
    /// The operator for the home at `home`; background work reports on
    /// `done`.
    pub fn new(home: bottle_core::Home, done: mpsc::Sender<Done>) -> Self {
        Self { home, done }
    }

    /// A `Cli` for calling the commands' code in-process (quiet: nothing
    /// may print over the screen).
    fn cli(&self) -> crate::Cli {
        crate::Cli {
            home: Some(self.home.root().to_owned()),
            backend: None,
            verbose: false,
            quiet: true,
            command: crate::cmd::Command::Dashboard,
        }
    }

    /// Run `f` on a background thread; its message goes to the status line.
    fn background(&self, f: impl FnOnce() -> Done + Send + 'static) {
        let tx = self.done.clone();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
    }

    /// `bottle --home <home> <args>` with stdin closed and no colours.
    fn bottle(&self, args: &[&str]) -> Result<std::process::Command, String> {
        let exe = bottle_exe(std::env::current_exe(), Path::new("/proc/self/exe"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--home")
            .arg(self.home.root().as_std_path())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        Ok(cmd)
    }

    /// Run `bottle <args>` in the background (stdin closed, its output
    /// appended to `logs/dashboard.log`); `ok` or its error goes to the
    /// status line when it ends.
    fn spawn(&self, args: &[&str], what: String, ok: String) -> Result<(), String> {
        let log_path = self.home.root().join("logs").join("dashboard.log");
        let mut cmd = self.bottle(args)?;
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
        let line = format!("$ bottle {}", args.join(" "));
        self.background(move || {
            let out = child.wait_with_output();
            let _ = std::fs::create_dir_all(log_path.parent().expect("has a parent"));
            if let (Ok(o), Ok(mut log)) = (
                &out,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path),
            ) {
                use std::io::Write;
                let _ = writeln!(log, "{line}");
                let _ = log.write_all(&o.stdout);
                let _ = log.write_all(&o.stderr);
            }
            Done::Status(match out {
                Ok(o) if o.status.success() => ok,
                Ok(o) => format!(
                    "error: {what}: {}",
                    error_of(&String::from_utf8_lossy(&o.stderr))
                ),
                Err(e) => format!("error: {what}: {e}"),
            })
        });
        Ok(())
    }

    /// Run a lifecycle command (`stop`, `rm`) on `identity` in-process on
    /// a background thread; `ok` is the status line when it worked.
    fn lifecycle(
        &self,
        identity: &str,
        verb: &'static str,
        run: fn(&crate::Cli, &crate::cmd::lifecycle::IdArgs) -> bottle_core::Result<u8>,
        ok: String,
    ) {
        let cli = self.cli();
        let id = identity.to_owned();
        self.background(move || {
            let a = crate::cmd::lifecycle::IdArgs { id: id.clone() };
            Done::Status(match run(&cli, &a) {
                Ok(_) => ok,
                Err(e) => format!("error: {verb} {id}: {e}"),
            })
        });
    }

    fn find(&self, req: &str) -> Result<std::path::PathBuf, String> {
        bottle_host::supervise::queue::find_request(self.home.state_root().as_std_path(), req)
            .map(|(d, _)| d)
            .ok_or_else(|| format!("request {req} is gone"))
    }

    /// The sidecars' log of a stopped bottle (its agent output went with
    /// its container), in the background.
    fn stopped_logs(&self, identity: &str) -> Result<String, String> {
        let id = identity.to_owned();
        let st = self
            .home
            .state(&crate::cmd::ids::bottle(&self.home, identity).map_err(|e| e.to_string())?);
        let path = bottle_host::bundle::log_path(st.audit_path().as_std_path());
        self.background(move || {
            let mut lines = vec![format!(
                "{id} is stopped: its agent output is gone; the sidecars' log ({}):",
                path.display()
            )];
            match std::fs::read_to_string(&path) {
                Ok(t) => lines.extend(last_lines(&t, 500)),
                Err(e) => lines.push(format!("(none: {e})")),
            }
            Done::Logs {
                identity: id,
                lines,
            }
        });
        Ok(String::new())
    }
}

impl Operator for CliOperator {
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String> {
        let dir = self.find(req)?;
        let n = bottle_host::supervise::Narrowing {
            paths,
            ..Default::default()
        };
        let d = bottle_host::supervise::queue::approve(&dir, req, None, &n)
            .map_err(|e| e.to_string())?;
        let what = d.grant.map(|g| g.summary()).unwrap_or_default();
        let until = d.expires_at.unwrap_or_default();
        Ok(format!(
            "approved {}: {what} until {until}",
            model::short_id(req)
        ))
    }
    fn deny(&self, req: &str, reason: &str) -> Result<String, String> {
        let dir = self.find(req)?;
        bottle_host::supervise::queue::deny(&dir, req, Some(reason)).map_err(|e| e.to_string())?;
        Ok(format!("denied {}", model::short_id(req)))
    }
    fn start(&self, agent: &str) -> Result<String, String> {
        // what `bottle plan` checks, here and now: a bad name, a broken
        // manifest or a missing backend is said at once
        let flags = crate::cmd::PlanFlags {
            cwd: None,
            runtime: None,
            env: Vec::new(),
        };
        crate::cmd::resolve_plan(
            &self.cli(),
            agent,
            &flags,
            None,
            &bottle_core::plan::PlaceholderPrompt,
        )
        .map_err(|e| match e.fix() {
            Some(fix) => format!("{e} (fix: {fix})"),
            None => e.to_string(),
        })?;
        self.spawn(
            &["start", agent, "--yes", "--detach"],
            format!("start {agent}"),
            format!("started {agent}"),
        )?;
        Ok(format!("starting {agent} …"))
    }
    fn stop(&self, identity: &str) -> Result<String, String> {
        self.lifecycle(
            identity,
            "stop",
            crate::cmd::lifecycle::stop,
            format!("stopped {identity} (state and home kept; r resumes it)"),
        );
        Ok(format!("stopping {identity} …"))
    }
    fn resume(&self, identity: &str) -> Result<String, String> {
        self.spawn(
            &["resume", identity],
            format!("resume {identity}"),
            format!("resumed {identity}"),
        )?;
        Ok(format!("resuming {identity} …"))
    }
    fn remove(&self, identity: &str) -> Result<String, String> {
        self.lifecycle(
            identity,
            "rm",
            crate::cmd::lifecycle::rm,
            format!("removed {identity}"),
        );
        Ok(format!("removing {identity} …"))
    }
    fn logs(&self, identity: &str, stopped: bool) -> Result<String, String> {
        if stopped {
            return self.stopped_logs(identity);
        }
        let id = identity.to_owned();
        let mut cmd = self.bottle(&["logs", identity, "--tail", "500"])?;
        self.background(move || {
            let lines = match cmd.output() {
                Ok(o) if o.status.success() => {
                    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&o.stderr));
                    last_lines(&text, 500)
                }
                Ok(o) => vec![format!(
                    "error: {}",
                    error_of(&String::from_utf8_lossy(&o.stderr))
                )],
                Err(e) => vec![format!("error: bottle logs: {e}")],
            };
            Done::Logs {
                identity: id,
                lines,
            }
        });
        Ok(String::new())
    }
    fn shell(&self, identity: &str) -> Result<String, String> {
        let a = crate::cmd::lifecycle::ExecArgs {
            id: identity.to_owned(),
            cmd: [
                "sh",
                "-c",
                "command -v bash >/dev/null 2>&1 && exec bash -l || exec sh -l",
            ]
            .map(String::from)
            .to_vec(),
        };
        eprintln!("shell in {identity}: exit (or Ctrl-D) goes back to the dashboard");
        match crate::cmd::lifecycle::exec(&self.cli(), &a) {
            Ok(code) => Ok(format!("shell in {identity} ended (exit {code})")),
            Err(e) => Err(format!("shell in {identity}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_to_run_survives_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("bottle");
        std::fs::write(&here, "").unwrap();
        let running = dir.path().join("running");
        std::fs::write(&running, "").unwrap();
        // the file on disk while it is there
        assert_eq!(bottle_exe(Ok(here.clone()), &running), Ok(here.clone()));
        // rebuilt: Linux names the old file `… (deleted)`; the running image
        let gone = dir.path().join("bottle (deleted)");
        assert_eq!(bottle_exe(Ok(gone.clone()), &running), Ok(running.clone()));
        let nowhere = dir.path().join("nowhere");
        let e = bottle_exe(Ok(gone), &nowhere).unwrap_err();
        assert!(e.contains("restart `bottle dashboard`"), "{e}");
        // the real one resolves
        let exe = bottle_exe(std::env::current_exe(), Path::new("/proc/self/exe")).unwrap();
        assert!(exe.exists());
    }

    #[test]
    fn a_failed_child_s_error_is_one_line() {
        assert_eq!(
            error_of("[1/3] x (2 ms)\nerror: no agent `nosuch`\n  fix: agents are: demo\n"),
            "no agent `nosuch` (fix: agents are: demo)"
        );
        assert_eq!(error_of("boom\n\n"), "boom");
    }
}
