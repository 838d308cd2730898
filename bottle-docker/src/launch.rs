//! Running a rendered launch: LIFO rollback on failure and on Ctrl-C, image
//! builds skipped when their tag exists, readiness polled with a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bottle_core::command::{CommandRunner, CommandSpec};
use bottle_core::{Error, Result};

use crate::render::{Action, Rendered};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag while a launch runs (the default action would
/// kill `bottle` before it removes what it created); dropped = defaults back.
pub struct InterruptGuard {
    _private: (),
}

impl InterruptGuard {
    /// Install the handlers.
    pub fn install() -> Self {
        INTERRUPTED.store(false, Ordering::SeqCst);
        // SAFETY: the handler only stores into an atomic (async-signal-safe).
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
        Self { _private: () }
    }

    /// Was a signal received?
    pub fn interrupted(&self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the default dispositions.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}

/// A LIFO stack of undo commands run through the launch's runner.
///
/// (The core `Teardown` takes `'static` closures; the runner here is
/// borrowed, so the docker launch keeps the undo commands themselves, with
/// the same semantics: newest first, keep going, collect every error, unwind
/// on drop while armed, `BOTTLE_KEEP=1` keeps everything.)
pub struct UndoStack<'r> {
    runner: &'r dyn CommandRunner,
    steps: Vec<(String, CommandSpec)>,
    armed: bool,
}

impl<'r> UndoStack<'r> {
    /// An empty, armed stack.
    pub fn new(runner: &'r dyn CommandRunner) -> Self {
        Self {
            runner,
            steps: Vec::new(),
            armed: true,
        }
    }
    /// Push an undo.
    pub fn push(&mut self, name: &str, undo: CommandSpec) {
        self.steps.push((name.to_owned(), undo));
    }
    /// Success: forget the undos.
    pub fn disarm(mut self) {
        self.armed = false;
        self.steps.clear();
    }
    /// Run every undo newest first; return the failures.
    pub fn unwind(mut self) -> Vec<(String, Error)> {
        self.armed = false;
        self.run_all()
    }
    fn run_all(&mut self) -> Vec<(String, Error)> {
        let steps = std::mem::take(&mut self.steps);
        if std::env::var_os("BOTTLE_KEEP").is_some_and(|v| v == "1") {
            tracing::warn!(kept = steps.len(), "BOTTLE_KEEP=1: leaving resources");
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (name, undo) in steps.into_iter().rev() {
            match self.runner.output(&undo) {
                Ok(o) if o.success() || undo.allow_failure => {}
                Ok(o) => errors.push((name, bottle_core::command::failure(&undo, &o))),
                Err(e) => errors.push((name, e)),
            }
        }
        errors
    }
}

impl Drop for UndoStack<'_> {
    fn drop(&mut self) {
        if self.armed && !self.steps.is_empty() {
            for (name, e) in self.run_all() {
                tracing::error!(step = %name, error = %e, "cleanup failed");
            }
        }
    }
}

fn image_exists(runner: &dyn CommandRunner, tag: &str) -> Result<bool> {
    Ok(runner
        .output(
            &CommandSpec::new("docker")
                .args(["image", "inspect", "--format", "{{.Id}}", tag])
                .allow_failure(),
        )?
        .success())
}

fn running(runner: &dyn CommandRunner, container: &str) -> Result<bool> {
    let o = runner.output(
        &CommandSpec::new("docker")
            .args(["inspect", "--format", "{{.State.Running}}", container])
            .allow_failure(),
    )?;
    Ok(o.success() && o.stdout.trim() == "true")
}

fn logs_tail(runner: &dyn CommandRunner, container: &str) -> String {
    runner
        .output(
            &CommandSpec::new("docker")
                .args(["logs", "--tail", "15", container])
                .allow_failure(),
        )
        .map(|o| format!("{}{}", o.stdout, o.stderr).trim().to_owned())
        .unwrap_or_default()
}

/// Progress callback: (step index, total, step name, skipped).
pub type Progress<'a> = &'a dyn Fn(usize, usize, &str, bool);

type Pending<'s> = Vec<(
    String,
    std::thread::ScopedJoinHandle<'s, Result<bottle_core::Output>>,
)>;

/// Wait for every background step; the first failure, by step name.
fn join_all(pending: &mut Pending<'_>) -> Option<(String, Error)> {
    let mut first = None;
    for (name, h) in pending.drain(..) {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(Error::other("background step panicked", "report a bug")));
        if let (Err(e), None) = (r, &first) {
            first = Some((name, e));
        }
    }
    first
}

/// Run every step; on failure or interrupt unwind everything created.
pub fn execute(
    rendered: &Rendered,
    runner: &dyn CommandRunner,
    ready_timeout: Duration,
    progress: Progress<'_>,
) -> Result<()> {
    let guard = InterruptGuard::install();
    let mut undo = UndoStack::new(runner);
    let total = rendered.steps.len();
    std::thread::scope(|scope| {
        let mut pending: Pending<'_> = Vec::new();
        for (i, s) in rendered.steps.iter().enumerate() {
            let mut name = s.step.name.clone();
            if guard.interrupted() {
                let _ = join_all(&mut pending);
                let cleanup = undo.unwind();
                return Err(interrupted(name, cleanup));
            }
            let mut skipped = false;
            let result: Result<bool> = match &s.action {
                Action::Run => runner.output(&s.step.run).map(|_| true),
                Action::Background => {
                    let spec = s.step.run.clone();
                    pending.push((name.clone(), scope.spawn(move || runner.output(&spec))));
                    Ok(true)
                }
                Action::WithImageCommand { image } => image_command(runner, image)
                    .and_then(|cmd| runner.output(&with_image_command(&s.step.run, &cmd)))
                    .map(|_| true),
                Action::EnsureBase { image } => ensure_base(runner, image).map(|_| true),
                Action::Build(b) => {
                    if !b.always && image_exists(runner, &b.tag)? {
                        skipped = true;
                        Ok(false)
                    } else {
                        b.stage()
                            .and_then(|_| runner.output(&s.step.run))
                            .map(|_| {
                                b.unstage();
                                false
                            })
                            .map_err(|e| {
                                b.unstage();
                                build_error(b.role, &b.tag, e)
                            })
                    }
                }
                Action::Volume { name: vol } => {
                    let existed = runner
                        .output(
                            &CommandSpec::new("docker")
                                .args(["volume", "inspect", vol])
                                .allow_failure(),
                        )?
                        .success();
                    runner.output(&s.step.run).map(|_| !existed)
                }
                Action::Poll { container, exit_ok } => match join_all(&mut pending) {
                    Some((bg, e)) => {
                        name = bg;
                        Err(e)
                    }
                    None => poll(
                        runner,
                        &s.step.run,
                        container,
                        *exit_ok,
                        ready_timeout,
                        &guard,
                    )
                    .map(|_| true),
                },
            };
            progress(i, total, &name, skipped);
            match result {
                Ok(push_undo) => {
                    if push_undo {
                        if let Some(u) = &s.step.undo {
                            undo.push(&name, u.clone());
                        }
                    }
                }
                Err(e) => {
                    // A failed create may still have made the thing: undo it too.
                    if let Some(u) = &s.step.undo {
                        if matches!(s.action, Action::Run | Action::WithImageCommand { .. }) {
                            undo.push(&name, u.clone());
                        }
                    }
                    // Let background steps finish before removing what they use.
                    let _ = join_all(&mut pending);
                    let cleanup = undo.unwind();
                    if guard.interrupted() {
                        return Err(interrupted(name, cleanup));
                    }
                    return Err(Error::Launch {
                        step: name,
                        source: Box::new(e),
                        cleanup,
                    });
                }
            }
        }
        if let Some((name, e)) = join_all(&mut pending) {
            let cleanup = undo.unwind();
            return Err(Error::Launch {
                step: name,
                source: Box::new(e),
                cleanup,
            });
        }
        if guard.interrupted() {
            let cleanup = undo.unwind();
            return Err(interrupted("the last step".into(), cleanup));
        }
        undo.disarm();
        Ok(())
    })
}

/// The image's own ENTRYPOINT followed by its CMD.
pub fn image_command(runner: &dyn CommandRunner, image: &str) -> Result<Vec<String>> {
    let o = runner.output(&CommandSpec::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}\n{{json .Config.Cmd}}",
        image,
    ]))?;
    let mut cmd = Vec::new();
    for line in o.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let part: Option<Vec<String>> = serde_json::from_str(line.trim()).map_err(|e| {
            Error::other(
                format!("reading the command of image {image}: {e}"),
                "report a bug",
            )
        })?;
        cmd.extend(part.unwrap_or_default());
    }
    if cmd.is_empty() {
        return Err(Error::other(
            format!(
                "image {image} has neither ENTRYPOINT nor CMD, and the agent sets no `command`"
            ),
            "set `command = [...]` in the agent file, or a CMD in the Dockerfile",
        ));
    }
    Ok(cmd)
}

/// `spec` with its [`crate::render::IMAGE_COMMAND`] argument replaced by `cmd`.
pub fn with_image_command(spec: &CommandSpec, cmd: &[String]) -> CommandSpec {
    let mut out = spec.clone();
    out.args = spec
        .args
        .iter()
        .flat_map(|a| {
            if a == crate::render::IMAGE_COMMAND {
                cmd.to_vec()
            } else {
                vec![a.clone()]
            }
        })
        .collect();
    out
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

fn build_error(role: &str, tag: &str, e: Error) -> Error {
    let hint = if role == "agent" {
        "the claude/codex templates install packages and need a registry; use `template = \"shell\"` on registry-less hosts"
    } else {
        "rerun with --verbose; `docker build` output shows the failing line"
    };
    Error::other(format!("building {role} image {tag}: {e}"), hint)
}

fn ensure_base(runner: &dyn CommandRunner, image: &str) -> Result<()> {
    if image_exists(runner, image)? {
        return Ok(());
    }
    // The project's own base image exists nowhere but here: never pull a
    // namesake (README "base image").
    if image == bottle_core::plan::DEFAULT_BASE_IMAGE {
        return Err(Error::Unavailable {
            backend: "docker".into(),
            why: format!("the base image `{image}` is missing"),
            fix: "build it with `cargo xtask seed-base` (debootstrap + docker import, no registry needed)".into(),
        });
    }
    // A base image the bottle names itself: pull exactly that.
    let pulled = runner
        .output(
            &CommandSpec::new("docker")
                .args(["pull", "--quiet", image])
                .allow_failure(),
        )?
        .success();
    if pulled {
        return Ok(());
    }
    Err(Error::Unavailable {
        backend: "docker".into(),
        why: format!("the base image `{image}` (the bottle's `base_image`) is missing and cannot be pulled"),
        fix: format!("`docker pull {image}` or build it, or drop `base_image` to use `{}` (`cargo xtask seed-base`)", bottle_core::plan::DEFAULT_BASE_IMAGE),
    })
}

fn poll(
    runner: &dyn CommandRunner,
    cmd: &CommandSpec,
    container: &str,
    exit_ok: bool,
    timeout: Duration,
    guard: &InterruptGuard,
) -> Result<()> {
    let start = Instant::now();
    let probe = cmd.clone().allow_failure();
    let mut delay = Duration::from_millis(20);
    loop {
        let o = runner.output(&probe)?;
        if o.success() {
            return Ok(());
        }
        if guard.interrupted() {
            return Err(Error::Interrupted {
                step: format!("waiting for {container}"),
            });
        }
        if !running(runner, container)? {
            if exit_ok {
                return Ok(());
            }
            return Err(Error::other(
                format!(
                    "{container} exited before it was ready; its last log lines:\n{}",
                    logs_tail(runner, container)
                ),
                "check the sidecar configuration in the state dir (`bottle logs <id> --sidecar egress`)",
            ));
        }
        if start.elapsed() > timeout {
            return Err(Error::other(
                format!(
                    "{container} not ready after {}s (last check: {}); last log lines:\n{}",
                    timeout.as_secs(),
                    o.stderr.trim(),
                    logs_tail(runner, container)
                ),
                "set BOTTLE_READY_TIMEOUT=<seconds> for slow hosts",
            ));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}
