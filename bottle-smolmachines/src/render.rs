//! Pure rendering of a [`SmolmachinesPlan`] to the exact commands launch
//! runs, in order, each with its undo; and the full teardown.
//!
//! Launch order (SPEC §6, seeds 003): loopback alias (macOS) → bundle
//! bridge → bundle container (published on the alias on macOS only) →
//! bundle health → agent image build → `docker save` → `smolvm machine
//! create` (allowlist = the bundle's endpoint only: its container IP on
//! Linux, the alias on macOS) → verify what smolvm recorded → start → readiness poll →
//! ownership fix-ups → provisioning. Teardown is the undos, newest first.

use bottle_core::backend::{LaunchScript, Step};
use bottle_core::command::CommandSpec;
use bottle_core::prepare::AGENT_CA_PATH;

use crate::hv::HostOs;
use crate::plan::{SmolmachinesPlan, AGENT_HOME, AGENT_UID, LABEL_ALIAS, WORKSPACE};
use crate::smolvm::{Exec, Smolvm};

/// The docker CLI.
pub const DOCKER: &str = "docker";

/// What launch does with a step beyond running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Run once; failure aborts the launch.
    Run,
    /// Write the derived Dockerfile and empty context, then run.
    BuildAgent,
    /// Retry until it succeeds or the deadline passes (seconds).
    Poll(u64),
    /// Run `machine ls --json` and check the recorded allowlist and image.
    VerifyMachine,
}

/// One step and how launch treats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmolStep {
    /// How launch runs it.
    pub kind: Kind,
    /// The step.
    pub step: Step,
}

fn step(kind: Kind, name: &str, run: CommandSpec, undo: Option<CommandSpec>) -> SmolStep {
    SmolStep {
        kind,
        step: Step {
            name: name.into(),
            run,
            undo,
        },
    }
}

fn docker<I, S>(args: I) -> CommandSpec
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    CommandSpec::new(DOCKER).args(args)
}

/// A smolvm command carrying every secret value in its environment (the
/// argv names them by variable only).
fn smolvm_cmd(s: &Smolvm, args: Vec<String>, p: &SmolmachinesPlan, secrets: bool) -> CommandSpec {
    let mut c = CommandSpec::new(&s.program).args(args);
    if secrets {
        for (k, v) in &p.secret_values {
            c = c.secret_env(k.clone(), v.clone());
        }
    }
    c
}

fn label_args(p: &SmolmachinesPlan) -> Vec<String> {
    p.labels
        .iter()
        .flat_map(|(k, v)| ["--label".to_owned(), format!("{k}={v}")])
        .collect()
}

/// The `bottle-sidecar health` argv matching the bundle's `run` argv.
pub fn health_args(bundle_args: &[String]) -> Vec<String> {
    let mut a: Vec<String> = bundle_args.to_vec();
    match a.iter().position(|w| w == "run") {
        Some(i) => a[i] = "health".into(),
        None => a.insert(0, "health".into()),
    }
    a
}

/// The agent exec (attach) options.
pub fn agent_exec(command: Vec<String>, p: &SmolmachinesPlan, tty: bool) -> Exec {
    Exec {
        user: Some(format!("{AGENT_UID}:{AGENT_UID}")),
        workdir: Some(WORKSPACE.into()),
        timeout_secs: None,
        env: p.machine.env.clone(),
        secret_env: p.machine.secret_env.clone(),
        interactive: tty,
        tty,
        command,
    }
}

/// Every launch step, in order.
pub fn steps(p: &SmolmachinesPlan, s: &Smolvm) -> Vec<SmolStep> {
    let mut out = Vec::new();
    let alias = p.addresses.loopback_alias.to_string();

    if p.host_os == HostOs::Macos {
        // macOS routes only 127.0.0.1 by default; the alias must exist
        // before docker can publish on it. Linux routes all of 127/8.
        out.push(step(
            Kind::Run,
            "add loopback alias",
            CommandSpec::new("sudo").args(["-n", "ifconfig", "lo0", "alias", &alias, "up"]),
            Some(CommandSpec::new("sudo").args(["-n", "ifconfig", "lo0", "-alias", &alias])),
        ));
    }

    let mut net = vec![
        "network".to_owned(),
        "create".into(),
        "--driver".into(),
        "bridge".into(),
        "--subnet".into(),
        p.addresses.subnet.clone(),
        "--gateway".into(),
        p.addresses.gateway.to_string(),
    ];
    net.extend(label_args(p));
    net.extend(["--label".to_owned(), format!("{LABEL_ALIAS}={alias}")]);
    net.push(p.names.network.clone());
    out.push(step(
        Kind::Run,
        "create bundle network",
        docker(net),
        Some(docker(["network", "rm", p.names.network.as_str()])),
    ));

    let mut run = vec![
        "run".to_owned(),
        "--detach".into(),
        "--name".into(),
        p.names.bundle.clone(),
        "--network".into(),
        p.names.network.clone(),
        "--ip".into(),
        p.addresses.bundle_ip.to_string(),
        "--restart".into(),
        "no".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
    ];
    run.extend(label_args(p));
    // Linux: the VM reaches the bundle's own IP (only its listeners are
    // there); nothing is published on the host. macOS: container IPs are
    // not routable from the host, so the ports go on the alias.
    if p.host_os == HostOs::Macos {
        for port in &p.ports {
            run.extend(["--publish".to_owned(), format!("{alias}:{port}:{port}")]);
        }
    }
    for m in &p.bundle_mounts {
        let mut spec = format!("type=bind,source={},target={}", m.host, m.target);
        if m.read_only {
            spec.push_str(",readonly");
        }
        run.extend(["--mount".to_owned(), spec]);
    }
    run.push(p.bundle_image.clone());
    run.extend(p.bundle_args.iter().cloned());
    out.push(step(
        Kind::Run,
        "start bundle",
        docker(run),
        Some(docker(["rm", "--force", p.names.bundle.as_str()])),
    ));

    let mut health = vec![
        "exec".to_owned(),
        p.names.bundle.clone(),
        "bottle-sidecar".into(),
    ];
    health.extend(health_args(&p.bundle_args));
    out.push(step(
        Kind::Poll(crate::plan::BUNDLE_READY_SECS),
        "wait for bundle health",
        docker(health),
        None,
    ));

    if let Some(df) = &p.build.user_dockerfile {
        let ctx = df
            .parent()
            .map(|d| d.to_string())
            .unwrap_or_else(|| ".".into());
        let mut b = vec![
            "build".to_owned(),
            "--tag".into(),
            p.names.agent_base_image.clone(),
            "--file".into(),
            df.to_string(),
        ];
        b.extend(label_args(p));
        b.push(ctx);
        out.push(step(
            Kind::Run,
            "build agent base image (bottle Dockerfile)",
            docker(b),
            Some(docker([
                "image",
                "rm",
                "--force",
                p.names.agent_base_image.as_str(),
            ])),
        ));
    }
    let mut b = vec![
        "build".to_owned(),
        "--tag".into(),
        p.names.agent_image.clone(),
        "--file".into(),
        p.paths.dockerfile.to_string(),
    ];
    b.extend(label_args(p));
    b.push(p.build.context.to_string());
    out.push(step(
        Kind::BuildAgent,
        "build agent image",
        docker(b),
        Some(docker([
            "image",
            "rm",
            "--force",
            p.names.agent_image.as_str(),
        ])),
    ));
    out.push(step(
        Kind::Run,
        "save agent image for the VM",
        docker([
            "save",
            "--output",
            p.paths.archive.as_str(),
            p.names.agent_image.as_str(),
        ]),
        Some(CommandSpec::new("rm").args(["-f", p.paths.archive.as_str()])),
    ));

    out.push(step(
        Kind::Run,
        "create VM (allowlist: the bundle endpoint only)",
        smolvm_cmd(s, s.create_args(&p.machine), p, true),
        Some(smolvm_cmd(s, s.delete_args(&p.machine.name), p, false)),
    ));
    out.push(step(
        Kind::VerifyMachine,
        "verify VM allowlist and image digest",
        smolvm_cmd(s, s.ls_args(), p, false),
        None,
    ));
    out.push(step(
        Kind::Run,
        "start VM",
        smolvm_cmd(s, s.start_args(&p.machine.name), p, true),
        Some(smolvm_cmd(s, s.stop_args(&p.machine.name, 10), p, false)),
    ));
    let ready = Exec {
        timeout_secs: Some(5),
        command: vec!["true".into()],
        ..Exec::default()
    };
    out.push(step(
        Kind::Poll(crate::plan::VM_READY_SECS),
        "wait for VM readiness",
        smolvm_cmd(s, s.exec_args(&p.machine.name, &ready), p, false),
        None,
    ));
    let fix = Exec {
        user: Some("root".into()),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "set -e; mkdir -p {AGENT_HOME} {WORKSPACE}; \
                 chown -R {AGENT_UID}:{AGENT_UID} {AGENT_HOME} {WORKSPACE}; \
                 chown root:root /tmp /var/tmp; chmod 1777 /tmp /var/tmp"
            ),
        ],
        ..Exec::default()
    };
    out.push(step(
        Kind::Run,
        "fix ownership (agent home, workspace, tmp)",
        smolvm_cmd(s, s.exec_args(&p.machine.name, &fix), p, false),
        None,
    ));
    for u in &p.uploads {
        let parent = u.dst.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        let mk = Exec {
            user: Some("root".into()),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "mkdir -p {} && chown {uid}:{gid} {}",
                    quote(parent),
                    owned_dirs(parent)
                        .iter()
                        .map(|d| quote(d))
                        .collect::<Vec<_>>()
                        .join(" "),
                    uid = u.uid.unwrap_or(0),
                    gid = u.gid.unwrap_or(0)
                ),
            ],
            ..Exec::default()
        };
        if parent != "/" {
            out.push(step(
                Kind::Run,
                &format!("create {parent}"),
                smolvm_cmd(s, s.exec_args(&p.machine.name, &mk), p, false),
                None,
            ));
        }
        out.push(step(
            Kind::Run,
            &format!("provision {}", u.dst),
            smolvm_cmd(s, s.cp_args(&p.machine.name, u), p, false),
            None,
        ));
    }
    if p.uploads.iter().any(|u| u.dst == AGENT_CA_PATH) {
        let trust = Exec {
            user: Some("root".into()),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "update-ca-certificates || cat {AGENT_CA_PATH} >> /etc/ssl/certs/ca-certificates.crt"
                ),
            ],
            ..Exec::default()
        };
        out.push(step(
            Kind::Run,
            "trust the bottle CA",
            smolvm_cmd(s, s.exec_args(&p.machine.name, &trust), p, false),
            None,
        ));
    }
    out
}

/// The launch script (core's view of [`steps`]).
pub fn script(p: &SmolmachinesPlan, s: &Smolvm) -> LaunchScript {
    LaunchScript {
        steps: steps(p, s).into_iter().map(|s| s.step).collect(),
    }
}

/// The full teardown, in the order it runs (newest resource first).
pub fn teardown(p: &SmolmachinesPlan, s: &Smolvm) -> Vec<CommandSpec> {
    steps(p, s)
        .into_iter()
        .rev()
        .filter_map(|s| s.step.undo)
        .collect()
}

/// The command that attaches the agent's terminal.
pub fn attach(p: &SmolmachinesPlan, s: &Smolvm) -> CommandSpec {
    smolvm_cmd(
        s,
        s.exec_args(
            &p.machine.name,
            &agent_exec(p.agent_command.clone(), p, true),
        ),
        p,
        true,
    )
}

/// A word in single quotes for the guest's `/bin/sh` (skill file names
/// come from a repository).
fn quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// The directories `mkdir -p <dir>` may create that must belong to the
/// upload's owner: under the agent's home every one below the home (a skill
/// lands in `~/.claude/skills/<name>/...`, and Claude Code writes to
/// `~/.claude` itself), elsewhere just `dir`.
fn owned_dirs(dir: &str) -> Vec<String> {
    match dir.strip_prefix(&format!("{AGENT_HOME}/")) {
        Some(rest) => {
            let mut acc = AGENT_HOME.to_owned();
            rest.split('/')
                .filter(|c| !c.is_empty())
                .map(|c| {
                    acc = format!("{acc}/{c}");
                    acc.clone()
                })
                .collect()
        }
        None => vec![dir.to_owned()],
    }
}
