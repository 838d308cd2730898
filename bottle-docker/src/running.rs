//! The handle of a launched (or existing) docker bottle: exec, attach, logs,
//! health, stop — all through the `docker` CLI.

use std::io::IsTerminal;

use bottle_core::backend::{Health, LogOptions, Running};
use bottle_core::command::{CommandRunner, CommandSpec, Output};
use bottle_core::plan::{Identity, Names};
use bottle_core::Result;

/// Resource names of an identity (the same scheme `bottle_core::resolve`
/// uses; a unit test keeps the two in step).
pub fn names_for(id: &Identity) -> Names {
    let id = id.as_str();
    Names {
        bundle: format!("bottle-{id}-bundle"),
        agent: format!("bottle-{id}-agent"),
        internal_network: format!("bottle-{id}-int"),
        egress_network: format!("bottle-{id}-egress"),
        home_volume: format!("bottle-{id}-home"),
    }
}

/// A docker bottle.
#[derive(Debug, Clone)]
pub struct DockerRunning {
    identity: Identity,
    names: Names,
}

impl DockerRunning {
    /// A handle for these names.
    pub fn new(identity: Identity, names: Names) -> Self {
        Self { identity, names }
    }

    /// Resource names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    fn exec_spec(&self, cmd: &[String], interactive: bool) -> CommandSpec {
        let mut spec = CommandSpec::new("docker").arg("exec");
        if interactive {
            spec = spec.arg("--interactive");
            if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                spec = spec.arg("--tty");
            }
        }
        // load the secret env the agent's main process has (see render)
        spec.arg(&self.names.agent)
            .args(["/bin/sh", "-c", crate::render::EXEC_WITH_ENV, "bottle-exec"])
            .args(cmd.iter().cloned())
    }
}

/// The keys that detach from `bottle attach` (docker's default, named
/// explicitly so a `detachKeys` in the user's docker config cannot change
/// what `bottle start` and `bottle attach` announce).
pub const DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// What docker prints when the detach keys were pressed.
const DETACHED: &str = "read escape sequence";

/// `docker attach` with its stderr into `err_file` (a shell redirect: the
/// terminal stays docker's).
fn attach_spec(agent: &str, err_file: &str) -> CommandSpec {
    CommandSpec::new("sh").args([
        "-c",
        "exec docker attach --detach-keys \"$1\" \"$2\" 2>\"$3\"",
        "bottle-attach",
        DETACH_KEYS,
        agent,
        err_file,
    ])
}

/// Whether docker's stderr says the user detached, and the rest of it.
fn split_detach(stderr: &str) -> (bool, String) {
    let mut detached = false;
    let mut rest = String::new();
    for l in stderr.lines() {
        if l.trim() == DETACHED {
            detached = true;
        } else {
            rest.push_str(l);
            rest.push('\n');
        }
    }
    (detached, rest)
}

fn logs_spec(container: &str, opts: &LogOptions) -> CommandSpec {
    let mut spec = CommandSpec::new("docker").arg("logs");
    if opts.follow {
        spec = spec.arg("--follow");
    }
    if let Some(n) = opts.tail {
        spec = spec.args(["--tail".to_owned(), n.to_string()]);
    }
    if let Some(t) = &opts.since {
        spec = spec.args(["--since", t]);
    }
    spec.arg(container)
}

/// Remove a bottle's containers and networks (and its home volume unless
/// `keep_home`). Safe to call twice: missing resources are fine.
pub fn remove(names: &Names, keep_home: bool, runner: &dyn CommandRunner) -> Result<()> {
    let mut errors = Vec::new();
    let mut run = |what: &str, spec: CommandSpec| {
        let spec = spec.allow_failure();
        match runner.output(&spec) {
            Ok(o)
                if o.success()
                    || o.stderr.contains("No such")
                    || o.stderr.contains("not found") =>
            {
                Ok(())
            }
            Ok(o) => Err(bottle_core::command::failure(&spec, &o)),
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| errors.push((what.to_owned(), e)));
    };
    run(
        "remove containers",
        CommandSpec::new("docker").args([
            "rm",
            "--force",
            "--volumes",
            &names.agent,
            &names.bundle,
        ]),
    );
    for net in [&names.internal_network, &names.egress_network] {
        // The bottle owns its networks: detach anything else attached to
        // them (test upstreams, a debugging container) so removal succeeds.
        if let Ok(o) = runner.output(
            &CommandSpec::new("docker")
                .args([
                    "network",
                    "inspect",
                    "--format",
                    "{{range .Containers}}{{.Name}}\n{{end}}",
                    net,
                ])
                .allow_failure(),
        ) {
            for c in o.stdout.lines().map(str::trim).filter(|c| !c.is_empty()) {
                run(
                    "detach from network",
                    CommandSpec::new("docker").args(["network", "disconnect", "--force", net, c]),
                );
            }
        }
        run(
            "remove network",
            CommandSpec::new("docker").args(["network", "rm", net]),
        );
    }
    if !keep_home {
        run(
            "remove home volume",
            CommandSpec::new("docker").args(["volume", "rm", "--force", &names.home_volume]),
        );
    }
    bottle_core::launch::into_result(errors)
}

impl Running for DockerRunning {
    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn exec(&self, cmd: &[String], runner: &dyn CommandRunner) -> Result<i32> {
        runner.interactive(&self.exec_spec(cmd, true))
    }

    fn exec_output(&self, cmd: &[String], runner: &dyn CommandRunner) -> Result<Output> {
        runner.output(&self.exec_spec(cmd, false).allow_failure())
    }

    fn attach(&self, runner: &dyn CommandRunner) -> Result<i32> {
        // docker says `read escape sequence` (exit 1) on a detach: its
        // stderr goes to a file and comes back without that line, and a
        // detach is exit 0 (the caller sees the agent still running).
        let err = std::env::temp_dir().join(format!(
            "bottle-attach-{}-{}.err",
            self.identity,
            std::process::id()
        ));
        let code = runner.interactive(&attach_spec(&self.names.agent, &err.to_string_lossy()));
        let said = std::fs::read_to_string(&err).unwrap_or_default();
        let _ = std::fs::remove_file(&err);
        let (detached, rest) = split_detach(&said);
        if !rest.is_empty() {
            eprint!("{rest}");
        }
        let code = code?;
        Ok(if detached { 0 } else { code })
    }

    fn detach_keys(&self) -> Option<&'static str> {
        Some("Ctrl-P Ctrl-Q")
    }

    fn logs(&self, opts: &LogOptions, runner: &dyn CommandRunner) -> Result<i32> {
        runner.interactive(&logs_spec(&self.names.agent, opts))
    }

    fn health(&self, runner: &dyn CommandRunner) -> Result<Health> {
        let up = |c: &str| -> Result<bool> {
            let o = runner.output(
                &CommandSpec::new("docker")
                    .args(["inspect", "--format", "{{.State.Running}}", c])
                    .allow_failure(),
            )?;
            Ok(o.success() && o.stdout.trim() == "true")
        };
        Ok(match (up(&self.names.agent)?, up(&self.names.bundle)?) {
            (true, true) => Health::Running,
            (false, false) => Health::Stopped,
            _ => Health::Degraded,
        })
    }

    fn stop(&self, runner: &dyn CommandRunner) -> Result<()> {
        remove(&self.names, true, runner)
    }

    fn agent_running(&self, runner: &dyn CommandRunner) -> Result<bool> {
        Ok(runner
            .output(
                &CommandSpec::new("docker")
                    .args([
                        "inspect",
                        "--format",
                        "{{.State.Running}}",
                        &self.names.agent,
                    ])
                    .allow_failure(),
            )
            .is_ok_and(|o| o.success() && o.stdout.trim() == "true"))
    }

    fn copy_out(
        &self,
        guest: &str,
        host: &camino::Utf8Path,
        runner: &dyn CommandRunner,
    ) -> Result<()> {
        run_ok(
            runner,
            CommandSpec::new("docker").args([
                "cp",
                &format!("{}:{guest}", self.names.agent),
                host.as_str(),
            ]),
        )
    }

    fn copy_in(&self, tar: Vec<u8>, runner: &dyn CommandRunner) -> Result<()> {
        // without `-a`: docker keeps the archive's owners (crate::tar)
        run_ok(
            runner,
            CommandSpec::new("docker")
                .args(["cp", "-", &format!("{}:/", self.names.agent)])
                .stdin_bytes(tar),
        )
    }

    fn copy_out_baseline(
        &self,
        guest: &str,
        host: &camino::Utf8Path,
        runner: &dyn CommandRunner,
    ) -> Result<()> {
        // a container of the agent's image, created (never started), read,
        // removed
        let inspect = CommandSpec::new("docker").args([
            "inspect",
            "--format",
            "{{.Image}}",
            &self.names.agent,
        ]);
        let out = runner.output(&inspect.clone().allow_failure())?;
        if !out.success() {
            return Err(bottle_core::command::failure(&inspect, &out));
        }
        let image = out.stdout.trim().to_owned();
        let name = format!("bottle-{}-baseline-{}", self.identity, std::process::id());
        run_ok(
            runner,
            CommandSpec::new("docker").args([
                "create",
                "--name",
                &name,
                "--label",
                &format!("{}={}", bottle_core::plan::LABEL_IDENTITY, self.identity),
                "--network",
                "none",
                &image,
            ]),
        )?;
        let copied = run_ok(
            runner,
            CommandSpec::new("docker").args(["cp", &format!("{name}:{guest}"), host.as_str()]),
        );
        let removed = run_ok(
            runner,
            CommandSpec::new("docker").args(["rm", "--force", &name]),
        );
        copied.and(removed)
    }
}

/// Health by identity from `docker ps --all` lines
/// `<identity>\t<container name>\t<state>`: agent and bundle running is
/// running, neither is stopped, one of them is degraded (as
/// [`Running::health`] says for one bottle).
pub fn health_from_ps(text: &str) -> std::collections::BTreeMap<String, Health> {
    let mut up: std::collections::BTreeMap<String, (bool, bool)> = Default::default();
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(id), Some(name), Some(state)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let names = names_for(&match Identity::parse(id.trim()) {
            Ok(i) => i,
            Err(_) => continue,
        });
        let e = up.entry(id.trim().to_owned()).or_default();
        let running = state.trim() == "running";
        if name.trim() == names.agent {
            e.0 = running;
        } else if name.trim() == names.bundle {
            e.1 = running;
        }
    }
    up.into_iter()
        .map(|(id, pair)| {
            let h = match pair {
                (true, true) => Health::Running,
                (false, false) => Health::Stopped,
                _ => Health::Degraded,
            };
            (id, h)
        })
        .collect()
}

fn run_ok(runner: &dyn CommandRunner, spec: CommandSpec) -> Result<()> {
    let out = runner.output(&spec.clone().allow_failure())?;
    if out.success() {
        Ok(())
    } else {
        Err(bottle_core::command::failure(&spec, &out))
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn health_of_all_bottles_from_one_ps() {
        let text = "a-b-aaaaaa\tbottle-a-b-aaaaaa-agent\trunning\n\
                    a-b-aaaaaa\tbottle-a-b-aaaaaa-bundle\trunning\n\
                    a-b-bbbbbb\tbottle-a-b-bbbbbb-agent\trunning\n\
                    a-b-bbbbbb\tbottle-a-b-bbbbbb-bundle\texited\n\
                    a-b-cccccc\tbottle-a-b-cccccc-agent\tcreated\n\
                    a-b-cccccc\tbottle-a-b-cccccc-baseline-7\trunning\n";
        let h = health_from_ps(text);
        assert_eq!(h["a-b-aaaaaa"], Health::Running);
        assert_eq!(h["a-b-bbbbbb"], Health::Degraded);
        // another container of the identity does not count as the bundle
        assert_eq!(h["a-b-cccccc"], Health::Stopped);
        assert!(!h.contains_key("a-b-dddddd"));
    }
}
