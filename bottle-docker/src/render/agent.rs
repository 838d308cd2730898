//! The agent container: created (not started) with no capabilities, its
//! limits, the internal network only and a DNS upstream where nothing
//! answers; its files and secret env file copied in; started alongside the
//! bundle, its command waiting for the bundle's readiness marker.

use bottle_core::command::{SecretBytes, Stdin};
use bottle_core::plan::BottlePlan;
use bottle_core::Secret;
use camino::Utf8Path;

use super::env::{agent_env, secret_env_file, AGENT_RUN_DIR, AWAIT_BUNDLE, AWAIT_ENV, WRITE_ENV};
use super::{
    confined, docker, labels, rm_container, step, Action, Ctx, DockerStep, AGENT_DNS, IMAGE_COMMAND,
};
use crate::images::{AGENT_HOME, AGENT_UID, AGENT_WORKSPACE};

/// The `create agent container` step, and the agent's secret env file
/// (none when it has no secret env). With `run_dir` (the state's `run/`,
/// where the bundle writes its readiness marker) the agent sees it
/// read-only and its command waits for the marker (`AWAIT_BUNDLE`): the
/// env file is then copied in with its other files before it starts.
/// Without, its command waits for the env file handed over once it runs
/// (`AWAIT_ENV`), and an agent with no secret env starts only once the
/// bundle answers.
pub(super) fn create(
    cx: &Ctx<'_>,
    runtime: &str,
    run_dir: Option<&Utf8Path>,
) -> (DockerStep, Option<Secret>) {
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
    if let Some(run) = run_dir {
        agent = agent.args([
            "--mount".to_owned(),
            format!("type=bind,source={run},target={AGENT_RUN_DIR},readonly"),
        ]);
    }
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
    let wrapper = match (run_dir, &env_file) {
        (Some(_), _) => Some(AWAIT_BUNDLE),
        (None, Some(_)) => Some(AWAIT_ENV),
        (None, None) => None,
    };
    let image_command = wrapper.is_some() && plan.provider.command.is_empty();
    if image_command {
        agent = agent.args(["--entrypoint", "/bin/sh"]);
    }
    agent = agent.arg(cx.images.agent_image());
    if let Some(wrapper) = wrapper {
        if !image_command {
            agent = agent.arg("/bin/sh");
        }
        agent = agent.args(["-c", wrapper, "bottle-agent"]);
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

/// Copy the agent files archive (`tar` bytes) into the created agent; an
/// archive that holds the secret env file goes on stdin as
/// [`SecretBytes`] (rendered redacted, scrubbed from captured output).
pub(super) fn copy_files(plan: &BottlePlan, archive: Vec<u8>, holds: Option<Secret>) -> DockerStep {
    let mut s = step(
        "copy agent files",
        docker().args(["cp", "-", &format!("{}:/", plan.names.agent)]),
        None,
        Action::Run,
    );
    s.step.run.stdin = Some(match holds {
        Some(env) => Stdin::SecretBytes(SecretBytes::new(archive, vec![env])),
        None => Stdin::Bytes(archive),
    });
    s
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
