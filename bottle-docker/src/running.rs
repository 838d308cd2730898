//! The handle of a launched (or existing) docker bottle: exec, attach, logs,
//! health, stop — all through the `docker` CLI.

use std::io::IsTerminal;

use bottle_core::backend::{Health, Running};
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
    bottle_core::teardown::into_result(errors)
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
        runner.interactive(&CommandSpec::new("docker").args(["attach", &self.names.agent]))
    }

    fn logs(&self, sidecar: Option<&str>, follow: bool, runner: &dyn CommandRunner) -> Result<i32> {
        let target = match sidecar {
            // One process tree serves every sidecar: its log has them all.
            Some(_) => &self.names.bundle,
            None => &self.names.agent,
        };
        let mut spec = CommandSpec::new("docker").arg("logs");
        if follow {
            spec = spec.arg("--follow");
        }
        runner.interactive(&spec.arg(target))
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
}
