//! What the dashboard's keys do to bottles and requests: the [`Operator`]
//! interface the keys call, [`Done`] for what background work reports, and
//! the real operator [`CliOperator`] (made with [`CliOperator::new`]).
//!
//! Everything that runs an action (approve, deny, start, stop, resume, rm,
//! logs, shell) is in this one module, so how it runs can change here
//! without touching the UI.

use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bottle_core::command::{CommandSpec, Output};
use bottle_core::plan::{NoPrompt, PlaceholderPrompt};
use bottle_core::{CommandRunner, DuctRunner, LogOptions};
use bottle_lifecycle::{Events, Lifecycle, PlanRequest};

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

/// The real operator: every action calls the same library code as the
/// command (`bottle_lifecycle` for start/resume/stop/rm, the queue API for
/// approve/deny) in this process. What takes an engine runs on a background
/// thread that reports its launch steps and its end to the status line;
/// quitting waits for those threads ([`CliOperator::wait`]) so no launch is
/// cut off halfway.
pub struct CliOperator {
    home: bottle_core::Home,
    done: mpsc::Sender<Done>,
    in_flight: Arc<InFlight>,
}

/// How many background operations are running, and a signal each time one
/// ends, so [`CliOperator::wait`] sleeps until the last one is done.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    ended: Condvar,
}

impl InFlight {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more is running until the returned guard drops (also when the
    /// operation panics, so a wait never hangs on it).
    fn begin(self: &Arc<Self>) -> Running {
        *self.count() += 1;
        Running(self.clone())
    }

    fn wait_idle(&self) {
        let mut n = self.count();
        while *n > 0 {
            n = self.ended.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One background operation, counted in [`InFlight`] while it lives.
struct Running(Arc<InFlight>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.count() -= 1;
        self.0.ended.notify_all();
    }
}

/// A runner whose `interactive` commands (`docker logs`, `smolvm machine
/// logs`) are captured instead of writing over the screen.
#[derive(Default)]
struct Capture(Mutex<String>);

impl CommandRunner for Capture {
    fn output(&self, spec: &CommandSpec) -> bottle_core::Result<Output> {
        DuctRunner.output(spec)
    }
    fn interactive(&self, spec: &CommandSpec) -> bottle_core::Result<i32> {
        let o = DuctRunner.output(&spec.clone().allow_failure())?;
        let mut text = self.0.lock().unwrap_or_else(|p| p.into_inner());
        text.push_str(&o.stdout);
        text.push_str(&o.stderr);
        Ok(o.code)
    }
}

/// A launch's progress on the status line.
pub struct Status {
    what: String,
    done: mpsc::Sender<Done>,
}

impl Events for Status {
    fn step_done(&self, i: usize, total: usize, name: &str, _skipped: bool) {
        let _ = self.done.send(Done::Status(format!(
            "{} … [{}/{total}] {name}",
            self.what,
            i + 1
        )));
    }
}

/// An error with its fix, on one line.
fn with_fix(e: &bottle_core::Error) -> String {
    match e.fix() {
        Some(fix) => format!("{e} (fix: {fix})"),
        None => e.to_string(),
    }
}

/// What failed in the background, for the status line.
fn status_error(what: &str, e: &bottle_core::Error) -> String {
    format!("error: {what}: {}", with_fix(e))
}

impl CliOperator {
    /// The operator for the home at `home`; background work reports on
    /// `done`.
    pub fn new(home: bottle_core::Home, done: mpsc::Sender<Done>) -> Self {
        Self {
            home,
            done,
            in_flight: Arc::default(),
        }
    }

    /// The lifecycle of this home (real backends, real commands).
    fn lifecycle(&self) -> Lifecycle<'static> {
        Lifecycle::new(self.home.clone(), crate::registry::registry(), &DuctRunner)
    }

    /// How many background operations are still running.
    pub fn busy(&self) -> usize {
        *self.in_flight.count()
    }

    /// Wait until every background operation has ended.
    pub fn wait(&self) {
        self.in_flight.wait_idle();
    }

    /// Run `f` on a background thread; its message goes to the status line.
    fn background(&self, f: impl FnOnce() -> Done + Send + 'static) {
        let tx = self.done.clone();
        let running = self.in_flight.begin();
        std::thread::spawn(move || {
            let _running = running;
            let _ = tx.send(f());
        });
    }

    /// Run a lifecycle operation on a background thread: `ok` or its error
    /// goes to the status line; launch steps go there as they finish.
    fn operate(
        &self,
        what: String,
        ok: String,
        run: impl FnOnce(&Lifecycle<'static>, &Status) -> bottle_core::Result<()> + Send + 'static,
    ) {
        let lc = self.lifecycle();
        let events = Status {
            what: what.clone(),
            done: self.done.clone(),
        };
        self.background(move || {
            Done::Status(match run(&lc, &events) {
                Ok(()) => ok,
                Err(e) => status_error(&what, &e),
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
        let st = self.home.state(
            &self
                .lifecycle()
                .identity(identity)
                .map_err(|e| e.to_string())?,
        );
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
        let req = PlanRequest::agent(agent);
        self.lifecycle()
            .resolve(&req, None, &PlaceholderPrompt)
            .map_err(|e| with_fix(&e))?;
        // `?prompt` values cannot be asked here: NoPrompt says so (and
        // `bottle start` in a terminal asks them).
        self.operate(
            format!("start {agent}"),
            format!("started {agent}"),
            move |lc, events| lc.start(&req, false, &NoPrompt, events).map(|_| ()),
        );
        Ok(format!("starting {agent} …"))
    }
    fn stop(&self, identity: &str) -> Result<String, String> {
        let id = identity.to_owned();
        self.operate(
            format!("stop {identity}"),
            format!("stopped {identity} (state and home kept; r resumes it)"),
            move |lc, _| lc.stop(&id).map(|_| ()),
        );
        Ok(format!("stopping {identity} …"))
    }
    fn resume(&self, identity: &str) -> Result<String, String> {
        let id = identity.to_owned();
        self.operate(
            format!("resume {identity}"),
            format!("resumed {identity}"),
            move |lc, events| lc.resume(&id, &NoPrompt, events).map(|_| ()),
        );
        Ok(format!("resuming {identity} …"))
    }
    fn remove(&self, identity: &str) -> Result<String, String> {
        let id = identity.to_owned();
        self.operate(
            format!("rm {identity}"),
            format!("removed {identity}"),
            move |lc, _| lc.rm(&id).map(|_| ()),
        );
        Ok(format!("removing {identity} …"))
    }
    fn logs(&self, identity: &str, stopped: bool) -> Result<String, String> {
        if stopped {
            return self.stopped_logs(identity);
        }
        let id = identity.to_owned();
        let lc = self.lifecycle();
        self.background(move || {
            let capture = Capture::default();
            let opts = LogOptions {
                tail: Some(500),
                ..Default::default()
            };
            let got = lc.find(&id).and_then(|f| {
                f.refuse_stopped("its agent output is gone")?;
                f.handle().logs(&opts, &capture)
            });
            let lines = match got {
                Ok(_) => {
                    let text = capture.0.into_inner().unwrap_or_else(|p| p.into_inner());
                    last_lines(&text, 500)
                }
                Err(e) => vec![status_error("logs", &e)],
            };
            Done::Logs {
                identity: id,
                lines,
            }
        });
        Ok(String::new())
    }
    fn shell(&self, identity: &str) -> Result<String, String> {
        let cmd = [
            "sh",
            "-c",
            "command -v bash >/dev/null 2>&1 && exec bash -l || exec sh -l",
        ]
        .map(String::from);
        eprintln!("shell in {identity}: exit (or Ctrl-D) goes back to the dashboard");
        let lc = self.lifecycle();
        let ran = lc.find(identity).and_then(|f| {
            f.refuse_stopped("there is no agent to run a shell in")?;
            lc.engine_answers(&*f.backend)?;
            f.handle().exec(&cmd, &DuctRunner)
        });
        match ran {
            Ok(code) => Ok(format!("shell in {identity} ended (exit {code})")),
            Err(e) => Err(format!("shell in {identity}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator() -> (tempfile::TempDir, CliOperator, mpsc::Receiver<Done>) {
        let dir = tempfile::tempdir().unwrap();
        let root = camino::Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        let (tx, rx) = mpsc::channel();
        (dir, CliOperator::new(bottle_core::Home::new(root), tx), rx)
    }

    #[test]
    fn wait_returns_once_every_background_operation_has_ended() {
        let (_dir, op, done) = operator();
        let mut gos = Vec::new();
        for i in 0..3 {
            let (go, held) = mpsc::channel::<()>();
            gos.push(go);
            op.background(move || {
                let _ = held.recv();
                Done::Status(format!("op {i}"))
            });
        }
        assert_eq!(op.busy(), 3);
        drop(gos);
        op.wait();
        assert_eq!(op.busy(), 0);
        // each reported before it stopped counting
        let mut said: Vec<_> = done.try_iter().collect();
        said.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(
            said,
            (0..3)
                .map(|i| Done::Status(format!("op {i}")))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_panicking_operation_does_not_hold_up_wait() {
        let (_dir, op, done) = operator();
        op.background(|| panic!("an operation that panics"));
        op.wait();
        assert_eq!(op.busy(), 0);
        assert!(done.try_recv().is_err());
    }
}
