//! The launch engine both backends run their steps on (ARCHITECTURE.md
//! "Render / launch").
//!
//! A backend turns its rendered steps into [`LaunchStep`]s: a name, the
//! earlier steps it waits for, what to run (a closure given a
//! [`StepContext`]) and how to undo it ([`Undo`]: a command, or a closure
//! given the launch's runner). [`Launch::run`] starts each step as soon as
//! the steps it waits for succeeded, pushes a finished step's undo on an
//! [`UndoStack`], and reports finished steps in step order to one
//! [`Progress`] observer. On a failure, or a SIGINT/SIGTERM/SIGHUP caught by
//! an [`InterruptGuard`], it starts nothing more, lets the running steps
//! finish, then unwinds newest first and reports every cleanup error.
//! `BOTTLE_KEEP=1` keeps everything instead (and, given the state dir,
//! marks it preserved so `gc` keeps it too).
//!
//! With `RUST_LOG=bottle_core::launch=debug` each step's own start offset
//! and duration are logged as `step timing <start ms> <took ms> <name>`
//! (`cargo xtask bench start` reads them).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Instant;

use crate::backend::Progress;
use crate::command::{failure, CommandRunner, CommandSpec};
use crate::error::{Error, Result};
use crate::state::StateDir;

/// Env var: `1` keeps what a failed or interrupted launch created.
pub const KEEP_ENV: &str = "BOTTLE_KEEP";

/// Whether the operator asked to keep a failed launch (`BOTTLE_KEEP=1`).
pub fn keep_requested() -> bool {
    std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1")
}

// ---------------------------------------------------------------------------
// Signals

/// Signals that interrupt a launch: Ctrl-C, `kill`, a closed terminal.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// How many interrupting signals this process received while a guard was
/// installed (a guard compares against the count at its install, so
/// concurrent launches in one process each see a signal, and a new guard
/// does not see an old one).
static SIGNALS_SEEN: AtomicUsize = AtomicUsize::new(0);

struct Installed {
    guards: usize,
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    guards: 0,
    saved: Vec::new(),
});

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// While alive, SIGINT, SIGTERM and SIGHUP mark the launch interrupted
/// instead of killing `bottle` before it removed what it created. The first
/// guard installs the handlers, the last one dropped restores what was
/// there before.
pub struct InterruptGuard {
    seen_at_install: usize,
    raised: AtomicBool,
}

impl std::fmt::Debug for InterruptGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptGuard")
            .field("interrupted", &self.interrupted())
            .finish()
    }
}

impl InterruptGuard {
    /// Install the handlers (or join the guards already installed).
    pub fn install() -> Self {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        let seen_at_install = SIGNALS_SEEN.load(Ordering::SeqCst);
        if installed.guards == 0 {
            installed.saved.clear();
            for sig in SIGNALS {
                // SAFETY: a zeroed sigaction is valid; the handler only
                // increments an atomic (async-signal-safe); `old` receives
                // the previous disposition, restored on the last drop.
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                    sa.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut sa.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, &sa, &mut old) == 0 {
                        installed.saved.push((sig, old));
                    }
                }
            }
        }
        installed.guards += 1;
        Self {
            seen_at_install,
            raised: AtomicBool::new(false),
        }
    }

    /// Was a signal received since this guard was installed, or
    /// [`InterruptGuard::raise`] called?
    pub fn interrupted(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
            || SIGNALS_SEEN.load(Ordering::SeqCst) != self.seen_at_install
    }

    /// Interrupt the launch this guard watches (and no other): what a
    /// signal does, for a caller's own cancel button or a test.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        installed.guards = installed.guards.saturating_sub(1);
        if installed.guards == 0 {
            for (sig, old) in installed.saved.drain(..) {
                // SAFETY: restores the disposition saved at install.
                unsafe {
                    libc::sigaction(sig, &old, std::ptr::null_mut());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Undo

/// An undo closure: given the launch's runner.
pub type UndoFn<'a> = Box<dyn FnOnce(&dyn CommandRunner) -> Result<()> + Send + 'a>;

/// The undo of a step.
pub enum Undo<'a> {
    /// Run this command through the launch's runner; a non-zero exit is a
    /// cleanup error unless the command allows failure.
    Command(CommandSpec),
    /// Call this with the launch's runner (e.g. a removal that counts "not
    /// found" as done).
    Call(UndoFn<'a>),
}

impl<'a> Undo<'a> {
    /// An undo that calls `f` with the launch's runner.
    pub fn call(f: impl FnOnce(&dyn CommandRunner) -> Result<()> + Send + 'a) -> Self {
        Undo::Call(Box::new(f))
    }

    fn run(self, runner: &dyn CommandRunner) -> Result<()> {
        match self {
            Undo::Command(spec) => match runner.output(&spec) {
                Ok(o) if o.success() || spec.allow_failure => Ok(()),
                Ok(o) => Err(failure(&spec, &o)),
                Err(e) => Err(e),
            },
            Undo::Call(f) => f(runner),
        }
    }
}

impl From<CommandSpec> for Undo<'_> {
    fn from(spec: CommandSpec) -> Self {
        Undo::Command(spec)
    }
}

impl std::fmt::Debug for Undo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undo::Command(spec) => write!(f, "Undo::Command({spec})"),
            Undo::Call(_) => f.write_str("Undo::Call(..)"),
        }
    }
}

/// A LIFO stack of undos run through one runner.
///
/// Newest first, keeps going past failures and returns all of them;
/// dropping an armed stack unwinds it too (an early return or a panic
/// cannot leak resources); `BOTTLE_KEEP=1` keeps everything.
pub struct UndoStack<'r> {
    runner: &'r dyn CommandRunner,
    steps: Vec<(String, Undo<'r>)>,
    armed: bool,
    keep: bool,
}

impl std::fmt::Debug for UndoStack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(n, _)| n))
            .finish()
    }
}

impl<'r> UndoStack<'r> {
    /// An empty, armed stack (keeping everything when `BOTTLE_KEEP=1`).
    pub fn new(runner: &'r dyn CommandRunner) -> Self {
        Self {
            runner,
            steps: Vec::new(),
            armed: true,
            keep: keep_requested(),
        }
    }

    /// Keep (or not) what it would undo, whatever `BOTTLE_KEEP` says.
    pub fn keeping(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Whether unwinding keeps everything instead.
    pub fn keeps(&self) -> bool {
        self.keep
    }

    /// Push the undo of a step that just succeeded.
    pub fn push(&mut self, name: impl Into<String>, undo: impl Into<Undo<'r>>) {
        self.steps.push((name.into(), undo.into()));
    }

    /// Names of the pending undos, oldest first.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Number of pending undos.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// No undo pending.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The launch succeeded: forget the undos (the resources now belong to
    /// the running bottle, whose `stop` removes them).
    pub fn disarm(mut self) {
        self.armed = false;
        self.steps.clear();
    }

    /// Run every undo, newest first; every failure, named by its step.
    pub fn unwind(mut self) -> Vec<(String, Error)> {
        self.armed = false;
        self.run_all()
    }

    fn run_all(&mut self) -> Vec<(String, Error)> {
        let steps = std::mem::take(&mut self.steps);
        if self.keep {
            tracing::warn!(
                kept = steps.len(),
                "{KEEP_ENV}=1: leaving resources in place"
            );
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (name, undo) in steps.into_iter().rev() {
            if let Err(e) = undo.run(self.runner) {
                errors.push((name, e));
            }
        }
        errors
    }
}

impl Drop for UndoStack<'_> {
    fn drop(&mut self) {
        if self.armed && !self.steps.is_empty() {
            tracing::warn!(
                steps = self.steps.len(),
                "undo stack dropped while armed: unwinding"
            );
            for (name, e) in self.run_all() {
                tracing::error!(step = %name, error = %e, "cleanup failed");
            }
        }
    }
}

/// Turn a list of cleanup failures into a result.
pub fn into_result(errors: Vec<(String, Error)>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown(errors))
    }
}

// ---------------------------------------------------------------------------
// Steps

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It made what it makes: its undo goes on the stack.
    Done,
    /// It ran, but what it names was there before (a resumed bottle's home
    /// volume): its undo must not remove it.
    Existed,
    /// Nothing to do (an image already built): reported as skipped, no
    /// undo.
    Skipped,
}

/// What a running step may use.
pub struct StepContext<'a> {
    /// The launch's runner.
    pub runner: &'a dyn CommandRunner,
    guard: &'a InterruptGuard,
}

impl StepContext<'_> {
    /// Was the launch interrupted? A step that waits (a readiness poll)
    /// asks between tries and gives up with [`Error::Interrupted`].
    pub fn interrupted(&self) -> bool {
        self.guard.interrupted()
    }
}

type RunFn<'a> = Box<dyn Fn(&StepContext<'_>) -> Result<Outcome> + Send + Sync + 'a>;

/// One step of a launch.
pub struct LaunchStep<'a> {
    name: String,
    after: Vec<usize>,
    run: RunFn<'a>,
    undo: Option<Undo<'a>>,
    undo_if_failed: bool,
}

impl std::fmt::Debug for LaunchStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchStep")
            .field("name", &self.name)
            .field("after", &self.after)
            .field("undo", &self.undo)
            .field("undo_if_failed", &self.undo_if_failed)
            .finish()
    }
}

impl<'a> LaunchStep<'a> {
    /// A step that runs `run`; waits for nothing until [`LaunchStep::after`].
    pub fn new(
        name: impl Into<String>,
        run: impl Fn(&StepContext<'_>) -> Result<Outcome> + Send + Sync + 'a,
    ) -> Self {
        Self {
            name: name.into(),
            after: Vec::new(),
            run: Box::new(run),
            undo: None,
            undo_if_failed: false,
        }
    }

    /// A step that runs `spec` (a failure fails the launch).
    pub fn command(name: impl Into<String>, spec: CommandSpec) -> Self {
        Self::new(name, move |cx: &StepContext<'_>| {
            cx.runner.output(&spec).map(|_| Outcome::Done)
        })
    }

    /// Wait for these earlier steps (indices into the launch's steps).
    pub fn after(mut self, steps: impl IntoIterator<Item = usize>) -> Self {
        self.after.extend(steps);
        self.after.sort_unstable();
        self.after.dedup();
        self
    }

    /// Undo it with this (pushed once the step succeeded).
    pub fn undo(mut self, undo: impl Into<Undo<'a>>) -> Self {
        self.undo = Some(undo.into());
        self
    }

    /// Undo it even when it failed (a failed create may still have made
    /// the thing).
    pub fn undo_if_failed(mut self) -> Self {
        self.undo_if_failed = true;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The earlier steps it waits for.
    pub fn waits_for(&self) -> &[usize] {
        &self.after
    }
}

/// A launch: steps run as their dependencies allow, with rollback.
#[derive(Debug)]
pub struct Launch<'a> {
    steps: Vec<LaunchStep<'a>>,
    preserve: Option<&'a StateDir>,
    guard: Option<&'a InterruptGuard>,
    keep: Option<bool>,
}

/// A finished step, sent from its worker.
struct Finished {
    index: usize,
    result: Result<Outcome>,
}

#[derive(Clone, Copy, PartialEq)]
enum St {
    Waiting,
    Running,
    Ok,
    Failed,
}

impl<'a> Launch<'a> {
    /// A launch of these steps (each waits for what its `after` names).
    pub fn new(steps: Vec<LaunchStep<'a>>) -> Self {
        Self {
            steps,
            preserve: None,
            guard: None,
            keep: None,
        }
    }

    /// A launch of these steps, each after the one before it.
    pub fn sequential(steps: Vec<LaunchStep<'a>>) -> Self {
        let steps = steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| if i == 0 { s } else { s.after([i - 1]) })
            .collect();
        Self::new(steps)
    }

    /// With `BOTTLE_KEEP=1`, a failed launch marks this state dir preserved
    /// (so `bottle start` and `gc` keep it next to the kept resources).
    pub fn preserve_on_keep(mut self, state: &'a StateDir) -> Self {
        self.preserve = Some(state);
        self
    }

    /// Keep (or not) what a failed launch created, whatever `BOTTLE_KEEP`
    /// says.
    pub fn keeping(mut self, keep: bool) -> Self {
        self.keep = Some(keep);
        self
    }

    /// Watch this guard instead of installing one.
    pub fn with_guard(mut self, guard: &'a InterruptGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The steps' names in order.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    /// Run every step, each as soon as the steps it waits for succeeded;
    /// report each finished step to `progress` in step order (a step that
    /// finished early is reported once every earlier one was, so the last
    /// line names what the launch waits for). On failure or interrupt:
    /// start nothing more, let running steps finish, unwind everything
    /// pushed (newest first), and return [`Error::Launch`] (with every
    /// cleanup failure) or [`Error::Interrupted`].
    pub fn run(self, runner: &dyn CommandRunner, progress: Progress<'_>) -> Result<()> {
        let own_guard;
        let guard = match self.guard {
            Some(g) => g,
            None => {
                own_guard = InterruptGuard::install();
                &own_guard
            }
        };
        let preserve = self.preserve;
        let keep = self.keep;
        let total = self.steps.len();
        let mut runs = Vec::with_capacity(total);
        let mut undos = Vec::with_capacity(total);
        let mut meta = Vec::with_capacity(total);
        for (i, s) in self.steps.into_iter().enumerate() {
            if let Some(&j) = s.after.iter().find(|&&j| j >= i) {
                return Err(Error::other(
                    format!(
                        "launch step {} ({}) waits for step {} that does not come before it",
                        i + 1,
                        s.name,
                        j + 1
                    ),
                    "report a bug",
                ));
            }
            runs.push(s.run);
            undos.push(s.undo);
            meta.push((s.name, s.after, s.undo_if_failed));
        }
        let mut undo = UndoStack::new(runner);
        if let Some(keep) = keep {
            undo = undo.keeping(keep);
        }
        let t0 = Instant::now();
        let cx = StepContext { runner, guard };
        let outcome = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<Finished>();
            let mut state = vec![St::Waiting; total];
            let mut finished: Vec<Option<(bool, bool)>> = vec![None; total];
            let mut reported = 0usize;
            let mut failures: Vec<(usize, Error)> = Vec::new();
            let mut in_flight = 0usize;
            loop {
                if failures.is_empty() && !guard.interrupted() {
                    for i in 0..total {
                        if state[i] == St::Waiting && meta[i].1.iter().all(|&j| state[j] == St::Ok)
                        {
                            state[i] = St::Running;
                            in_flight += 1;
                            let tx = tx.clone();
                            let run = &runs[i];
                            let name = meta[i].0.as_str();
                            let cx = &cx;
                            scope.spawn(move || {
                                let started = t0.elapsed();
                                let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(cx)))
                                    .unwrap_or_else(|_| {
                                        Err(Error::other(
                                            format!("launch step `{name}` panicked"),
                                            "report a bug",
                                        ))
                                    });
                                let took = t0.elapsed() - started;
                                tracing::debug!(
                                    "step timing {} {} {}",
                                    started.as_millis(),
                                    took.as_millis(),
                                    name
                                );
                                let _ = tx.send(Finished { index: i, result });
                            });
                        }
                    }
                }
                if in_flight == 0 {
                    break;
                }
                let Ok(f) = rx.recv() else { break };
                in_flight -= 1;
                let name = &meta[f.index].0;
                match f.result {
                    Ok(outcome) => {
                        state[f.index] = St::Ok;
                        if let (Outcome::Done, Some(u)) = (outcome, undos[f.index].take()) {
                            undo.push(name.clone(), u);
                        }
                        finished[f.index] = Some((true, outcome == Outcome::Skipped));
                    }
                    Err(e) => {
                        state[f.index] = St::Failed;
                        if meta[f.index].2 {
                            if let Some(u) = undos[f.index].take() {
                                undo.push(name.clone(), u);
                            }
                        }
                        finished[f.index] = Some((false, false));
                        failures.push((f.index, e));
                    }
                }
                // report in step order; a failure is reported once all ran
                while let Some(Some((true, skipped))) = finished.get(reported) {
                    progress(reported, total, &meta[reported].0, *skipped);
                    reported += 1;
                }
            }
            if let Some(k) = (0..failures.len()).min_by_key(|&k| failures[k].0) {
                let (index, e) = failures.swap_remove(k);
                // the failing step is the last line, even if it was not
                // the first to finish
                while reported <= index {
                    if let Some((ok, skipped)) = finished[reported] {
                        if ok || reported == index {
                            progress(reported, total, &meta[reported].0, skipped);
                        }
                    }
                    reported += 1;
                }
                return Err((meta[index].0.clone(), Some(Box::new(e))));
            }
            if let Some(i) = state.iter().position(|s| *s != St::Ok) {
                return Err((meta[i].0.clone(), None));
            }
            if guard.interrupted() {
                return Err(("the last step".to_owned(), None));
            }
            Ok(())
        });
        let (step, source) = match outcome {
            Ok(()) => {
                undo.disarm();
                return Ok(());
            }
            Err(v) => v,
        };
        let kept: Vec<String> = undo.names().iter().map(|n| (*n).to_owned()).collect();
        let keeps = undo.keeps();
        let cleanup = undo.unwind();
        if keeps {
            if let Some(state) = preserve {
                mark_preserved(state, &step, kept);
            }
        }
        if guard.interrupted() {
            return Err(interrupted(step, cleanup));
        }
        match source {
            Some(source) => Err(Error::Launch {
                step,
                source,
                cleanup,
            }),
            None => Err(interrupted(step, cleanup)),
        }
    }
}

/// `BOTTLE_KEEP=1`: write `.preserve` naming the failed step and what was
/// kept (gc and `bottle start` leave a preserved state dir alone).
fn mark_preserved(state: &StateDir, step: &str, kept: Vec<String>) {
    let mut text = format!("{KEEP_ENV}=1: the launch stopped at `{step}`; kept, oldest first:\n");
    for k in kept {
        text.push_str(&format!("  {k}\n"));
    }
    text.push_str("`bottle rm <id>` removes them and this state dir.\n");
    if let Err(e) = crate::state::atomic_write(&state.preserve_path(), text.as_bytes(), Some(0o600))
    {
        tracing::warn!(error = %e, "could not mark the state dir preserved");
    }
}

fn interrupted(step: String, cleanup: Vec<(String, Error)>) -> Error {
    if cleanup.is_empty() {
        Error::Interrupted { step }
    } else {
        Error::Launch {
            step,
            source: Box::new(Error::Interrupted {
                step: "launch".into(),
            }),
            cleanup,
        }
    }
}

#[cfg(test)]
mod tests;
