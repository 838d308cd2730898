//! Running a rendered launch: LIFO rollback on failure and on Ctrl-C, image
//! builds skipped when their tag exists, readiness polled with a deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bottle_core::command::{CommandRunner, CommandSpec};
use bottle_core::{Error, Result};

use crate::render::{Action, DockerStep, Rendered};

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

/// The name of the docker object a step creates (network, volume,
/// container, image tag), if any.
fn created(s: &DockerStep) -> Option<&str> {
    match &s.action {
        Action::Build(b) => Some(&b.tag),
        Action::Volume { name } => Some(name),
        Action::Run | Action::WithImageCommand { .. } | Action::Background
            if s.step.run.program == "docker" =>
        {
            let a = &s.step.run.args;
            match a.first().map(String::as_str) {
                Some("network") if a.get(1).is_some_and(|v| v == "create") => {
                    a.last().map(String::as_str)
                }
                Some("create") => a
                    .windows(2)
                    .find(|w| w[0] == "--name")
                    .map(|w| w[1].as_str()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Is `s` a barrier: it waits for every earlier step and every later step
/// waits for it (the base image check, so nothing is created without the
/// base; and every readiness wait, so the agent starts only once the
/// bundle answers).
fn barrier(s: &DockerStep) -> bool {
    matches!(s.action, Action::EnsureBase { .. } | Action::Poll { .. })
}

/// For each step, the earlier steps it waits for. A step waits for the
/// steps that create the docker objects it names (a network, the volume, a
/// container, an image tag); a step that creates nothing (connect, start,
/// copy) also waits for every earlier step naming the same objects; builds run one at a time; barriers
/// (`barrier`) order everything around them. Everything else may run
/// at the same time: the two networks and the volume, the bundle chain
/// (create, connect, start) and the agent chain (create, copy files).
/// ARCHITECTURE.md "Data flow of `bottle start <agent>`".
pub fn dependencies(steps: &[DockerStep]) -> Vec<Vec<usize>> {
    let names: Vec<&str> = steps.iter().filter_map(created).collect();
    let mentions: Vec<Vec<&str>> = steps
        .iter()
        .map(|s| {
            let mut text: Vec<&str> = s.step.run.args.iter().map(String::as_str).collect();
            if let Action::WithImageCommand { image } = &s.action {
                text.push(image);
            }
            names
                .iter()
                .copied()
                .filter(|n| text.iter().any(|a| a.contains(n)))
                .collect()
        })
        .collect();
    let mut deps = Vec::with_capacity(steps.len());
    let mut last_barrier: Option<usize> = None;
    for (i, s) in steps.iter().enumerate() {
        let d: Vec<usize> = if barrier(s) {
            (0..i).collect()
        } else {
            (0..i)
                .filter(|&j| {
                    Some(j) == last_barrier
                        || (matches!(s.action, Action::Build(_))
                            && matches!(steps[j].action, Action::Build(_)))
                        || created(&steps[j]).is_some_and(|n| mentions[i].contains(&n))
                        || (created(s).is_none()
                            && mentions[i].iter().any(|n| mentions[j].contains(n)))
                })
                .collect()
        };
        if barrier(s) {
            last_barrier = Some(i);
        }
        deps.push(d);
    }
    deps
}

/// A finished step.
struct Finished {
    index: usize,
    /// Ok(push the undo?), as the step's handler decided.
    result: Result<bool>,
    skipped: bool,
}

/// Run one step (on a worker thread).
fn run_step(
    s: &DockerStep,
    runner: &dyn CommandRunner,
    ready_timeout: Duration,
    guard: &InterruptGuard,
    prefetched: Option<&ImageCheck>,
) -> (Result<bool>, bool) {
    let mut skipped = false;
    let result = match &s.action {
        Action::Run | Action::Background => runner.output(&s.step.run).map(|_| true),
        Action::WithImageCommand { image } => image_command(runner, image)
            .and_then(|cmd| runner.output(&with_image_command(&s.step.run, &cmd)))
            .map(|_| true),
        Action::EnsureBase { image } => ensure_base(runner, image).map(|_| true),
        Action::Build(b) => {
            let exists = if b.always {
                Ok(false)
            } else {
                match prefetched.and_then(ImageCheck::take) {
                    Some(r) => r,
                    None => image_exists(runner, &b.tag),
                }
            };
            match exists {
                Err(e) => Err(e),
                Ok(true) => {
                    skipped = true;
                    Ok(false)
                }
                Ok(false) => b
                    .stage()
                    .and_then(|_| runner.output(&s.step.run))
                    .map(|_| {
                        b.unstage();
                        false
                    })
                    .map_err(|e| {
                        b.unstage();
                        build_error(b.role, &b.tag, e)
                    }),
            }
        }
        Action::Volume { name: vol } => runner
            .output(
                &CommandSpec::new("docker")
                    .args(["volume", "inspect", vol])
                    .allow_failure(),
            )
            .and_then(|existed| runner.output(&s.step.run).map(|_| !existed.success())),
        Action::Poll { container, exit_ok } => poll(
            runner,
            &s.step.run,
            container,
            *exit_ok,
            ready_timeout,
            guard,
        )
        .map(|_| true),
    };
    (result, skipped)
}

/// An image-tag check started when the launch starts (off the critical
/// path: the tags are content hashes, so a warm launch only confirms that
/// they exist), taken by its build step.
struct ImageCheck {
    rx: std::sync::Mutex<std::sync::mpsc::Receiver<Result<bool>>>,
}

impl ImageCheck {
    fn take(&self) -> Option<Result<bool>> {
        self.rx.lock().ok()?.recv().ok()
    }
}

/// Run every step, each as soon as the steps it depends on
/// ([`dependencies`]) succeeded; on failure or interrupt, let running
/// steps finish, then unwind everything created (newest first). Progress is
/// reported in step order (a step that finished early is reported once
/// every earlier step did), so the last line names what the launch waits
/// for. With `RUST_LOG=bottle_docker::launch=debug` each step's own start
/// offset and duration are logged (`cargo xtask bench start` reads them).
pub fn execute(
    rendered: &Rendered,
    runner: &dyn CommandRunner,
    ready_timeout: Duration,
    progress: Progress<'_>,
) -> Result<()> {
    let guard = InterruptGuard::install();
    let mut undo = UndoStack::new(runner);
    let steps = &rendered.steps;
    let total = steps.len();
    let deps = dependencies(steps);
    let t0 = Instant::now();
    // Image checks of every cached build start now, in parallel.
    let mut senders = Vec::new();
    let checks: Vec<Option<ImageCheck>> = steps
        .iter()
        .map(|s| match &s.action {
            Action::Build(b) if !b.always => {
                let (tx, rx) = std::sync::mpsc::channel();
                senders.push((b.tag.clone(), tx));
                Some(ImageCheck {
                    rx: std::sync::Mutex::new(rx),
                })
            }
            _ => None,
        })
        .collect();
    std::thread::scope(|scope| {
        for (tag, tx) in senders {
            scope.spawn(move || {
                let _ = tx.send(image_exists(runner, &tag));
            });
        }
        let checks = &checks;
        let guard = &guard;
        let (tx, rx) = std::sync::mpsc::channel::<Finished>();
        #[derive(Clone, Copy, PartialEq)]
        enum St {
            Waiting,
            Running,
            Ok,
            Failed,
        }
        let mut state = vec![St::Waiting; total];
        let mut finished: Vec<Option<(bool, bool)>> = vec![None; total];
        let mut reported = 0usize;
        let mut failures: Vec<(usize, Error)> = Vec::new();
        let mut in_flight = 0usize;
        loop {
            if failures.is_empty() && !guard.interrupted() {
                for i in 0..total {
                    if state[i] == St::Waiting && deps[i].iter().all(|&j| state[j] == St::Ok) {
                        state[i] = St::Running;
                        in_flight += 1;
                        let tx = tx.clone();
                        let s = &steps[i];
                        scope.spawn(move || {
                            let started = t0.elapsed();
                            let (result, skipped) =
                                run_step(s, runner, ready_timeout, guard, checks[i].as_ref());
                            let took = t0.elapsed() - started;
                            tracing::debug!(
                                "step timing {} {} {}",
                                started.as_millis(),
                                took.as_millis(),
                                s.step.name
                            );
                            let _ = tx.send(Finished {
                                index: i,
                                result,
                                skipped,
                            });
                        });
                    }
                }
            }
            if in_flight == 0 {
                break;
            }
            let Ok(f) = rx.recv() else { break };
            in_flight -= 1;
            let s = &steps[f.index];
            match f.result {
                Ok(push_undo) => {
                    state[f.index] = St::Ok;
                    if push_undo {
                        if let Some(u) = &s.step.undo {
                            undo.push(&s.step.name, u.clone());
                        }
                    }
                    finished[f.index] = Some((true, f.skipped));
                }
                Err(e) => {
                    state[f.index] = St::Failed;
                    // A failed create may still have made the thing: undo it too.
                    if let Some(u) = &s.step.undo {
                        if matches!(s.action, Action::Run | Action::WithImageCommand { .. }) {
                            undo.push(&s.step.name, u.clone());
                        }
                    }
                    finished[f.index] = Some((false, f.skipped));
                    failures.push((f.index, e));
                }
            }
            // report in step order; a failure is reported once all ran
            while let Some(Some((true, skipped))) = finished.get(reported) {
                progress(reported, total, &steps[reported].step.name, *skipped);
                reported += 1;
            }
        }
        if let Some(k) = (0..failures.len()).min_by_key(|&k| failures[k].0) {
            let (index, e) = failures.swap_remove(k);
            // the failing step is the last line, even if it was not the
            // first to finish
            while reported <= index {
                if let Some((ok, skipped)) = finished[reported] {
                    if ok || reported == index {
                        progress(reported, total, &steps[reported].step.name, skipped);
                    }
                }
                reported += 1;
            }
            let name = steps[index].step.name.clone();
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
        if let Some(i) = state.iter().position(|s| *s != St::Ok) {
            let cleanup = undo.unwind();
            return Err(interrupted(steps[i].step.name.clone(), cleanup));
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
    // Short, capped intervals: a warm bundle answers within a few hundred
    // ms, and each probe is a `docker exec` (the engine has no event for
    // "a command inside would now succeed"). Whether the container still
    // runs is asked when the probe says it does not, and every third miss
    // otherwise (one `docker inspect` less per round).
    let mut delay = Duration::from_millis(10);
    let mut misses = 0u32;
    loop {
        let o = runner.output(&probe)?;
        if o.success() {
            return Ok(());
        }
        misses += 1;
        if guard.interrupted() {
            return Err(Error::Interrupted {
                step: format!("waiting for {container}"),
            });
        }
        let timed_out = start.elapsed() > timeout;
        let ask = timed_out || misses % 3 == 0 || o.stderr.contains("is not running");
        if ask && !running(runner, container)? {
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
        if timed_out {
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
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_core::backend::Step;

    fn st(name: &str, args: &[&str], action: Action) -> DockerStep {
        DockerStep {
            step: Step {
                name: name.into(),
                run: CommandSpec::new("docker").args(args.iter().copied()),
                undo: None,
            },
            action,
        }
    }

    /// The shape of a rendered docker launch (render.rs): what may overlap
    /// and what must stay in order.
    #[test]
    fn launch_dependencies_keep_what_must_be_ordered() {
        let steps = vec![
            st(
                "check base image",
                &["image", "inspect", "base"],
                Action::EnsureBase {
                    image: "base".into(),
                },
            ),
            st(
                "create internal network",
                &["network", "create", "--internal", "b-int"],
                Action::Run,
            ),
            st(
                "create egress network",
                &["network", "create", "b-egress"],
                Action::Run,
            ),
            st(
                "create home volume",
                &["volume", "create", "b-home"],
                Action::Volume {
                    name: "b-home".into(),
                },
            ),
            st(
                "create bundle container",
                &["create", "--name", "b-bundle", "--network", "b-int", "img"],
                Action::Run,
            ),
            st(
                "connect bundle",
                &["network", "connect", "b-egress", "b-bundle"],
                Action::Run,
            ),
            st("start bundle", &["start", "b-bundle"], Action::Background),
            st(
                "create agent container",
                &[
                    "create",
                    "--name",
                    "b-agent",
                    "--network",
                    "b-int",
                    "--mount",
                    "type=volume,source=b-home,target=/home",
                ],
                Action::Run,
            ),
            st("copy agent files", &["cp", "-", "b-agent:/"], Action::Run),
            st(
                "wait for bundle readiness",
                &["exec", "b-bundle", "health"],
                Action::Poll {
                    container: "b-bundle".into(),
                    exit_ok: false,
                },
            ),
            st("start agent", &["start", "b-agent"], Action::Run),
        ];
        let d = dependencies(&steps);
        // everything waits for the base check; networks and volume only for it
        assert_eq!(d[1], [0]);
        assert_eq!(d[2], [0]);
        assert_eq!(d[3], [0]);
        // bundle: its network; then connect after create and the egress net
        assert_eq!(d[4], [0, 1]);
        assert_eq!(d[5], [0, 2, 4]);
        assert_eq!(
            d[6],
            [4, 5].iter().copied().fold(vec![0], |mut v, x| {
                v.push(x);
                v
            })
        );
        // the agent chain does not wait for the bundle chain
        assert_eq!(d[7], [0, 1, 3]);
        assert_eq!(d[8], [0, 7]);
        // readiness waits for all; the agent starts only after it
        assert_eq!(d[9], (0..9).collect::<Vec<_>>());
        assert!(d[10].contains(&9));
    }
}
