//! Docker's launch steps: what each rendered step does beyond running its
//! command (image builds skipped when their tag exists, readiness polled
//! with a deadline, the home volume kept when it existed) and which steps
//! wait for which ([`dependencies`]). The core launch engine
//! ([`bottle_core::launch`]) runs them: concurrency, LIFO rollback on
//! failure and on Ctrl-C, keep-on-failure, progress.

use std::time::{Duration, Instant};

use bottle_core::backend::Progress;
use bottle_core::command::{CommandRunner, CommandSpec};
use bottle_core::launch::{Launch, LaunchStep, Outcome, StepContext};
use bottle_core::{Error, Result, StateDir};
use camino::Utf8Path;

use crate::render::{Action, DockerStep, Rendered, AGENT_ENV_FILE};

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

/// The name of the docker object a step creates (network, volume,
/// container, image tag), if any.
fn created(s: &DockerStep) -> Option<&str> {
    match &s.action {
        Action::Build(b) => Some(&b.tag),
        Action::Volume { name } => Some(name),
        Action::Network(n) => Some(&n.name),
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

/// The marker file whose appearance lets a gated agent's command run.
fn env_ready_marker() -> String {
    format!("{AGENT_ENV_FILE}.ready")
}

/// A gated agent: its container's entry command waits for the secret env
/// file (render.rs `AWAIT_ENV`) that a later step writes over `docker exec`
/// (the gate opener). Until the gate opens the container runs nothing but
/// that wait, so it may start while the bundle is still coming up: its
/// own command still runs only after the opener, which waits for every
/// earlier step, the bundle's readiness included. `(agent container,
/// index of the opener)`.
fn gated_agent(steps: &[DockerStep]) -> Option<(&str, usize)> {
    let marker = env_ready_marker();
    let agent = steps.iter().find_map(|s| {
        let a = &s.step.run.args;
        (a.first().is_some_and(|c| c == "create") && a.iter().any(|w| w.contains(&marker)))
            .then(|| created(s))
            .flatten()
    })?;
    let opener = steps.iter().position(|s| {
        let a = &s.step.run.args;
        s.step.run.program == "docker"
            && a.first().is_some_and(|c| c == "exec")
            && a.iter().any(|w| w == agent)
            && a.iter().any(|w| w.contains(&marker))
    })?;
    Some((agent, opener))
}

/// For each step, the earlier steps it waits for. A step waits for the
/// steps that create the docker objects it names (a network, the volume, a
/// container, an image tag); a step that creates nothing (connect, start,
/// copy) also waits for every earlier step naming the same objects; builds
/// run one at a time; barriers (`barrier`) order everything around them.
/// Everything else may run at the same time: the two networks and the
/// volume, the bundle chain (create, connect, start) and the agent chain
/// (create, copy files). A gated agent (`gated_agent`) also starts and
/// becomes exec-ready while the bundle comes up; the step that opens its
/// gate waits for everything before it.
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
    let gate = gated_agent(steps);
    // steps of a gated agent that need not wait for the bundle: its start
    // and its exec-ready wait (after its create, before the opener)
    let early = |i: usize| -> bool {
        let Some((agent, opener)) = gate else {
            return false;
        };
        let s = &steps[i];
        i < opener
            && created(s).is_none()
            && mentions[i].contains(&agent)
            && match &s.action {
                Action::Poll { container, .. } => container == agent,
                Action::Run => s.step.run.args.first().is_some_and(|c| c == "start"),
                _ => false,
            }
    };
    let mut deps = Vec::with_capacity(steps.len());
    let mut last_barrier: Option<usize> = None;
    let mut base_barrier: Option<usize> = None;
    for (i, s) in steps.iter().enumerate() {
        let opener = gate.is_some_and(|(_, o)| o == i);
        let early_i = early(i);
        let is_barrier = (barrier(s) && !early_i) || opener;
        let d: Vec<usize> = if is_barrier {
            (0..i).collect()
        } else {
            // an early step waits only for the base check among barriers
            let fence = if early_i { base_barrier } else { last_barrier };
            (0..i)
                .filter(|&j| {
                    Some(j) == fence
                        || (matches!(s.action, Action::Build(_))
                            && matches!(steps[j].action, Action::Build(_)))
                        || created(&steps[j]).is_some_and(|n| mentions[i].contains(&n))
                        || (created(s).is_none()
                            && mentions[i].iter().any(|n| mentions[j].contains(n)))
                })
                .collect()
        };
        if is_barrier {
            last_barrier = Some(i);
            if matches!(s.action, Action::EnsureBase { .. }) {
                base_barrier = Some(i);
            }
        }
        deps.push(d);
    }
    deps
}

/// Run one step (on a worker thread).
fn run_step(
    s: &DockerStep,
    cx: &StepContext<'_>,
    ready_timeout: Duration,
    prefetched: Option<&ImageCheck>,
) -> Result<Outcome> {
    let runner = cx.runner;
    match &s.action {
        Action::Run | Action::Background => runner.output(&s.step.run).map(|_| Outcome::Done),
        Action::WithImageCommand { image } => image_command(runner, image)
            .and_then(|cmd| runner.output(&with_image_command(&s.step.run, &cmd)))
            .map(|_| Outcome::Done),
        Action::EnsureBase { image } => ensure_base(runner, image).map(|_| Outcome::Done),
        Action::Network(n) => crate::subnet::create(runner, &s.step.run, n).map(|_| Outcome::Done),
        Action::Build(b) => {
            let exists = if b.always {
                false
            } else {
                match prefetched.and_then(ImageCheck::take) {
                    Some(r) => r?,
                    None => image_exists(runner, &b.tag)?,
                }
            };
            if exists {
                return Ok(Outcome::Skipped);
            }
            b.stage()
                .and_then(|_| runner.output(&s.step.run))
                .map(|_| {
                    b.unstage();
                    Outcome::Done
                })
                .map_err(|e| {
                    b.unstage();
                    build_error(b.role, &b.tag, e)
                })
        }
        Action::Volume { name: vol } => {
            let existed = runner
                .output(
                    &CommandSpec::new("docker")
                        .args(["volume", "inspect", vol])
                        .allow_failure(),
                )?
                .success();
            runner.output(&s.step.run)?;
            Ok(if existed {
                Outcome::Existed
            } else {
                Outcome::Done
            })
        }
        Action::Poll {
            container,
            exit_ok,
            marker,
        } => poll(
            cx,
            &s.step.run,
            container,
            *exit_ok,
            ready_timeout,
            marker.as_deref(),
        )
        .map(|_| Outcome::Done),
    }
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

/// Run the rendered steps on the core launch engine, each as soon as the
/// steps it depends on ([`dependencies`]) succeeded; on failure or
/// interrupt the engine lets running steps finish, then unwinds
/// everything created (newest first). A build's undo is none (images are
/// a cache, `bottle gc --images` removes them); a failed create is undone
/// too (it may have made the thing); the home volume is not removed when
/// it existed before. With `BOTTLE_KEEP=1`, a failed launch keeps
/// everything and marks `state` preserved.
pub fn execute(
    rendered: &Rendered,
    runner: &dyn CommandRunner,
    ready_timeout: Duration,
    state: &StateDir,
    progress: Progress<'_>,
) -> Result<()> {
    let steps = &rendered.steps;
    // A readiness marker from an earlier run must not answer for this one
    // (prepare removes it too; a launch is not always after a prepare).
    for s in steps {
        if let Action::Poll {
            marker: Some(m), ..
        } = &s.action
        {
            if let Err(e) = std::fs::remove_file(m) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(Error::io("removing", m.clone(), e));
                }
            }
        }
    }
    let deps = dependencies(steps);
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
        let launch_steps = steps
            .iter()
            .zip(deps)
            .zip(&checks)
            .map(|((s, d), check)| {
                let mut ls = LaunchStep::new(s.step.name.clone(), move |cx| {
                    run_step(s, cx, ready_timeout, check.as_ref())
                })
                .after(d);
                if let Some(u) = &s.step.undo {
                    ls = ls.undo(u.clone());
                    if matches!(
                        s.action,
                        Action::Run | Action::WithImageCommand { .. } | Action::Network(_)
                    ) {
                        ls = ls.undo_if_failed();
                    }
                }
                ls
            })
            .collect();
        Launch::new(launch_steps)
            .preserve_on_keep(state)
            .run(runner, progress)
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
    cx: &StepContext<'_>,
    cmd: &CommandSpec,
    container: &str,
    exit_ok: bool,
    timeout: Duration,
    marker: Option<&Utf8Path>,
) -> Result<()> {
    let runner = cx.runner;
    let start = Instant::now();
    let probe = cmd.clone().allow_failure();
    // Without a marker: short, capped intervals between probes (a warm
    // bundle answers within a few hundred ms, and each probe is a `docker
    // exec`: the engine has no event for "a command inside would now
    // succeed"). With one: the marker file is looked at every 5 ms (a stat,
    // no engine call) and the probe runs only every 300 ms as the slow path.
    // Whether the container still runs is asked when the probe says it
    // does not, and every third miss otherwise (one `docker inspect` less
    // per round).
    let tick = Duration::from_millis(5);
    let mut delay = Duration::from_millis(10);
    let mut next_probe = match marker {
        Some(_) => start + Duration::from_millis(300),
        None => start,
    };
    let mut misses = 0u32;
    loop {
        if marker.is_some_and(|m| m.exists()) {
            return Ok(());
        }
        if Instant::now() < next_probe {
            if cx.interrupted() {
                return Err(Error::Interrupted {
                    step: format!("waiting for {container}"),
                });
            }
            std::thread::sleep(tick);
            continue;
        }
        let o = runner.output(&probe)?;
        if o.success() {
            return Ok(());
        }
        misses += 1;
        if cx.interrupted() {
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
                "its log lines above say why (for the bundle: `bottle logs <id> --sidecar egress`)",
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
        match marker {
            Some(_) => next_probe = Instant::now() + Duration::from_millis(300),
            None => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
        }
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
                    marker: None,
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
