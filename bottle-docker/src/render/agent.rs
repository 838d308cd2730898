//! The agent container: created (not started) with no capabilities, its
//! limits, the internal network only and a DNS upstream where nothing
//! answers; its files copied in; started once the bundle is ready; then
//! handed its secret env.

use bottle_core::command::Stdin;
use bottle_core::plan::BottlePlan;
use bottle_core::Secret;

use super::env::{agent_env, secret_env_file, AWAIT_ENV, WRITE_ENV};
use super::{
    confined, docker, labels, rm_container, step, Action, Ctx, DockerStep, AGENT_DNS, IMAGE_COMMAND,
};
use crate::images::{AGENT_HOME, AGENT_UID, AGENT_WORKSPACE};

/// The `create agent container` step, and the secret env file to hand the
/// agent once it runs (none when it has no secret env).
pub(super) fn create(cx: &Ctx<'_>, runtime: &str) -> (DockerStep, Option<Secret>) {
    let plan = cx.plan;
    let n = &plan.names;
    let r = &plan.resources;
    let cpus = match cx.opts.host_cpus {
        Some(h) if r.cpus > h => h,
        _ => r.cpus,
    };
    let workdir = if plan.workspace.is_some() {
        AGENT_WORKSPACE
    } else {
        AGENT_HOME
    };
    let mut agent = docker()
        .args(["create", "--name", &n.agent])
        .args(labels(plan, &cx.home, Some("agent")))
        .args(["--network", &n.internal_network])
        .args(confined(
            plan.identity.as_str(),
            &format!("{AGENT_UID}:{AGENT_UID}"),
            r.pids,
            r.memory_bytes,
        ))
        .args([
            "--cpus",
            &format!("{cpus}"),
            "--sysctl",
            "net.ipv6.conf.all.disable_ipv6=1",
            "--dns",
            AGENT_DNS,
            "--mount",
            &format!("type=volume,source={},target={AGENT_HOME}", n.home_volume),
            "--workdir",
            workdir,
            "--interactive",
            "--tty",
        ]);
    if runtime == "runsc" {
        agent = agent.args(["--runtime", "runsc"]);
    }
    let (plain, secret) = agent_env(plan, cx.wiring);
    for (k, v) in &plain {
        agent = agent.args(["--env".to_owned(), format!("{k}={v}")]);
    }
    // Secret env values never enter the container config (`docker inspect`
    // would show them), whatever the agent kind: the entry command waits
    // for an env file the launch writes over `docker exec` stdin once the
    // agent runs. An image whose own command is used (a Dockerfile without
    // an agent `command`) is wrapped too: its ENTRYPOINT and CMD are read
    // from the built image at launch and put where IMAGE_COMMAND stands.
    let env_file = (!secret.is_empty()).then(|| secret_env_file(&secret));
    let image_command = env_file.is_some() && plan.provider.command.is_empty();
    if image_command {
        agent = agent.args(["--entrypoint", "/bin/sh"]);
    }
    agent = agent.arg(cx.images.agent_image());
    if env_file.is_some() {
        if !image_command {
            agent = agent.arg("/bin/sh");
        }
        agent = agent.args(["-c", AWAIT_ENV, "bottle-agent"]);
        if image_command {
            agent = agent.arg(IMAGE_COMMAND);
        }
    }
    agent = agent.args(plan.provider.command.iter().cloned());
    let create = step(
        "create agent container",
        agent,
        Some(rm_container(&n.agent)),
        if image_command {
            Action::WithImageCommand {
                image: cx.images.agent_image().to_owned(),
            }
        } else {
            Action::Run
        },
    );
    (create, env_file)
}

/// Copy the agent files archive (`tar` bytes) into the created agent.
pub(super) fn copy_files(plan: &BottlePlan, archive: Vec<u8>) -> DockerStep {
    step(
        "copy agent files",
        docker()
            .args(["cp", "-", &format!("{}:/", plan.names.agent)])
            .stdin_bytes(archive),
        None,
        Action::Run,
    )
}

/// Start the agent and poll until it takes an exec.
pub(super) fn start(plan: &BottlePlan) -> DockerStep {
    step(
        "start agent",
        docker().args(["start", &plan.names.agent]),
        None,
        Action::Run,
    )
}

/// Poll until the started agent takes a `docker exec` (an agent without
/// secret env; a gated one's env handoff is its own wait).
pub(super) fn exec_ready(plan: &BottlePlan) -> DockerStep {
    let n = &plan.names;
    step(
        "wait for agent exec-ready",
        docker().args(["exec", &n.agent, "true"]),
        None,
        Action::Poll {
            container: n.agent.clone(),
            exit_ok: true,
            marker: None,
        },
    )
}

/// Write the secret env file into the running agent (its entry command
/// waits for it), the text on stdin only; retried until the started agent
/// takes the exec (the marker is touched only after the whole file is
/// written, so a retry rewrites the same text before the command runs).
pub(super) fn hand_env(plan: &BottlePlan, env_file: Secret) -> DockerStep {
    let mut s = step(
        "hand the agent its secret env",
        docker()
            .args([
                "exec",
                "--interactive",
                "--user",
                &format!("{AGENT_UID}:{AGENT_UID}"),
                &plan.names.agent,
            ])
            .args(["/bin/sh", "-c", WRITE_ENV]),
        None,
        Action::Poll {
            container: plan.names.agent.clone(),
            exit_ok: false,
            marker: None,
        },
    );
    s.step.run.stdin = Some(Stdin::Secret(env_file));
    s
}
