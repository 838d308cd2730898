//! [`SmolmachinesPlan`]: everything one smolmachines launch needs, derived
//! purely from the core plan, the state dir and the sidecar wiring.
//!
//! Names and addresses are functions of the identity and the slot, so a
//! handle rebuilt from `metadata.json` (resume, stop, gc) finds the same
//! resources. Secrets stay [`Secret`]s: they travel to `smolvm` only through
//! its environment and are referenced on argv by variable name.

use std::collections::BTreeMap;

use bottle_core::plan::{BottlePlan, EnvEntry, Identity, ImageSource as CoreImage};
use bottle_core::prepare::{Mount, Wiring};
use bottle_core::state::StateDir;
use bottle_core::{Error, Result, Secret};
use camino::Utf8PathBuf;
use serde::Serialize;

use crate::hv::HostOs;
use crate::net::Addresses;
use crate::smolvm::{
    ImageSource, MachineSpec, SecretEnvRef, Upload, LABEL_BACKEND, LABEL_IDENTITY,
};

/// The bundle image (built by the docker backend / `cargo xtask`).
pub const BUNDLE_IMAGE: &str = concat!("bottle-sidecar:", env!("CARGO_PKG_VERSION"));
/// The agent's user inside the VM.
pub const AGENT_UID: u32 = 1000;
/// The agent's home inside the VM.
pub const AGENT_HOME: &str = "/home/agent";
/// The agent's working directory (holds the `--cwd` copy).
pub const WORKSPACE: &str = "/workspace";
/// Prefix of the host variables carrying secret env values to `smolvm`.
pub const SECRET_ENV_PREFIX: &str = "BOTTLE_SECRET_";
/// Label of the loopback alias on the bundle network (gc finds it there).
pub const LABEL_ALIAS: &str = "dev.bottle.alias";
/// Backend id.
pub const BACKEND_ID: &str = "smolmachines";
/// Readiness deadline for the VM (`machine exec -- true` polling).
pub const VM_READY_SECS: u64 = 60;
/// Readiness deadline for the bundle (`bottle-sidecar health` polling).
pub const BUNDLE_READY_SECS: u64 = 30;

/// The persistent workload that keeps the VM up; the agent runs via exec.
pub fn idle_workload() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done".into(),
    ]
}

/// Names of every resource of one bottle (from the identity alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmolNames {
    /// The bundle bridge network.
    pub network: String,
    /// The bundle container.
    pub bundle: String,
    /// The VM.
    pub machine: String,
    /// The agent image tag (docker).
    pub agent_image: String,
    /// The user-Dockerfile base image tag (docker), when the bottle has one.
    pub agent_base_image: String,
}

impl SmolNames {
    /// Names for `identity`.
    pub fn new(identity: &Identity) -> SmolNames {
        let id = identity.as_str();
        SmolNames {
            network: format!("bottle-{id}-smol"),
            bundle: format!("bottle-{id}-bundle"),
            machine: format!("bottle-{id}-agent"),
            agent_image: format!("bottle-agent:{id}"),
            agent_base_image: format!("bottle-agent-base:{id}"),
        }
    }
}

/// Paths in the state dir this backend owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmolPaths {
    /// `agent/smolmachines/` (Dockerfile, build context, image archive).
    pub dir: Utf8PathBuf,
    /// The derived agent Dockerfile.
    pub dockerfile: Utf8PathBuf,
    /// The build context when no `--cwd` is copied (an empty dir).
    pub empty_context: Utf8PathBuf,
    /// The build context holding the staged `--cwd` copy (git credentials
    /// stripped, docs/security.md S1).
    pub workspace_context: Utf8PathBuf,
    /// The `docker save` archive the VM is created from.
    pub archive: Utf8PathBuf,
}

impl SmolPaths {
    /// Paths under `state`.
    pub fn new(state: &StateDir) -> SmolPaths {
        let dir = state.agent_dir().join("smolmachines");
        SmolPaths {
            dockerfile: dir.join("Dockerfile"),
            empty_context: dir.join("context"),
            workspace_context: dir.join("workspace"),
            archive: dir.join("agent-image.tar"),
            dir,
        }
    }
}

/// How the agent image is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentBuild {
    /// A user Dockerfile built first as the base (`-f`, context = its dir).
    pub user_dockerfile: Option<Utf8PathBuf>,
    /// The derived Dockerfile's text (written at launch, before the build).
    pub dockerfile_text: String,
    /// Build context of the derived image (the staged `--cwd` copy or an
    /// empty dir).
    pub context: Utf8PathBuf,
    /// The `--cwd` directory staged into `context` at launch: the files
    /// `bottle_core::workspace` lists, git credentials stripped (never the
    /// directory itself as the context).
    pub workspace: Option<Utf8PathBuf>,
}

/// Everything one smolmachines launch needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmolmachinesPlan {
    /// Identity.
    pub identity: Identity,
    /// Host family (decides the loopback alias steps).
    pub host_os: HostOs,
    /// Slot.
    pub slot: u32,
    /// Addresses.
    pub addresses: Addresses,
    /// Names.
    pub names: SmolNames,
    /// State-dir paths.
    pub paths: SmolPaths,
    /// Labels on every docker resource and the VM.
    pub labels: BTreeMap<String, String>,
    /// The bundle image.
    pub bundle_image: String,
    /// Bundle mounts.
    pub bundle_mounts: Vec<Mount>,
    /// `bottle-sidecar` arguments.
    pub bundle_args: Vec<String>,
    /// The bundle's ports (published on the loopback alias on macOS).
    pub ports: Vec<u16>,
    /// Agent image build.
    pub build: AgentBuild,
    /// The VM.
    pub machine: MachineSpec,
    /// Secret values by host variable name (in smolvm's env only).
    pub secret_values: BTreeMap<String, Secret>,
    /// Files copied into the VM after it is up.
    pub uploads: Vec<Upload>,
    /// The agent's entry command.
    pub agent_command: Vec<String>,
}

impl SmolmachinesPlan {
    /// Derive the plan. Pure: reads nothing, writes nothing.
    pub fn new(
        plan: &BottlePlan,
        state: &StateDir,
        wiring: &Wiring,
        host_os: HostOs,
    ) -> Result<SmolmachinesPlan> {
        let addresses = Addresses::for_slot(plan.slot).map_err(|e| {
            Error::other(
                format!("slot {} has no smolmachines addresses", e.0),
                "`bottle gc` to free slots",
            )
        })?;
        let names = SmolNames::new(&plan.identity);
        let paths = SmolPaths::new(state);
        let mut labels = plan.labels.clone();
        labels.insert(LABEL_IDENTITY.into(), plan.identity.as_str().into());
        labels.insert(LABEL_BACKEND.into(), BACKEND_ID.into());

        // env: literals and wiring go on argv (-e); secrets by reference only
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut secret_env = Vec::new();
        let mut secret_values = BTreeMap::new();
        for (k, v) in &plan.env {
            match v {
                EnvEntry::Literal(s) => {
                    env.insert(k.clone(), s.clone());
                }
                EnvEntry::Secret(s) => {
                    let host_var = format!("{SECRET_ENV_PREFIX}{k}");
                    secret_env.push(SecretEnvRef {
                        guest_var: k.clone(),
                        host_var: host_var.clone(),
                    });
                    secret_values.insert(host_var, s.clone());
                }
            }
        }
        for (k, v) in &wiring.agent_env {
            if secret_values
                .keys()
                .any(|h| h == &format!("{SECRET_ENV_PREFIX}{k}"))
            {
                return Err(Error::other(
                    format!("env `{k}` is both a bottle secret and sidecar wiring"),
                    "rename the bottle's env key",
                ));
            }
            env.insert(k.clone(), v.clone());
        }
        // wiring held off argv (the proxy URL with the bundle access
        // credential): by reference like a secret, replacing the plain value
        for (k, v) in &wiring.agent_secret_env {
            let host_var = format!("{SECRET_ENV_PREFIX}{k}");
            env.remove(k);
            secret_env.retain(|r: &SecretEnvRef| r.guest_var != *k);
            secret_env.push(SecretEnvRef {
                guest_var: k.clone(),
                host_var: host_var.clone(),
            });
            secret_values.insert(host_var, v.clone());
        }
        env.insert("HOME".into(), AGENT_HOME.into());

        let machine = MachineSpec {
            name: names.machine.clone(),
            image: ImageSource::Archive(paths.archive.clone()),
            allow_cidrs: vec![format!("{}/32", addresses.agent_endpoint(host_os))],
            labels: labels.clone(),
            cpus: Some(plan.resources.cpus.ceil().max(1.0) as u32),
            memory_mib: Some((plan.resources.memory_bytes >> 20).max(256)),
            workdir: Some(WORKSPACE.into()),
            env,
            secret_env,
            secret_files: Vec::new(),
            command: idle_workload(),
        };
        machine
            .validate()
            .map_err(|e| Error::other(e.0, "this is a bug in bottle's smolmachines backend"))?;

        let uploads = wiring
            .agent_files
            .iter()
            .map(|f| Upload {
                src: f.host.clone(),
                dst: guest_path(&f.guest),
                uid: Some(if is_system_path(&f.guest) {
                    0
                } else {
                    AGENT_UID
                }),
                gid: Some(if is_system_path(&f.guest) {
                    0
                } else {
                    AGENT_UID
                }),
                mode: Some(f.mode),
            })
            .collect();

        let (user_dockerfile, base) = match &plan.provider.image {
            CoreImage::Dockerfile(p) => (Some(p.clone()), names.agent_base_image.clone()),
            CoreImage::Template(_) => (None, plan.provider.base_image.clone()),
        };
        let template = match &plan.provider.image {
            CoreImage::Template(t) => Some(t.as_str()),
            CoreImage::Dockerfile(_) => None,
        };
        let build = AgentBuild {
            user_dockerfile,
            dockerfile_text: agent_dockerfile(&base, template, plan.workspace.is_some()),
            context: if plan.workspace.is_some() {
                paths.workspace_context.clone()
            } else {
                paths.empty_context.clone()
            },
            workspace: plan.workspace.clone(),
        };

        let mut ports = wiring.ports.clone();
        if ports.is_empty() {
            ports = vec![plan.ports.egress, plan.ports.git_gate, plan.ports.supervise];
        }
        ports.sort_unstable();
        ports.dedup();

        Ok(SmolmachinesPlan {
            identity: plan.identity.clone(),
            host_os,
            slot: plan.slot,
            addresses,
            names,
            paths,
            labels,
            bundle_image: BUNDLE_IMAGE.into(),
            bundle_mounts: wiring.bundle_mounts.clone(),
            bundle_args: wiring.bundle_args.clone(),
            ports,
            build,
            machine,
            secret_values,
            uploads,
            agent_command: plan.provider.command.clone(),
        })
    }

    /// The address the agent uses to reach the bundle (what `Prepare` must
    /// be given as `bundle_host`).
    pub fn bundle_host(&self) -> String {
        self.addresses.agent_endpoint(self.host_os).to_string()
    }
}

/// The host the agent reaches the bundle at, for `PrepareContext::bundle_host`
/// ([`Addresses::agent_endpoint`]).
pub fn bundle_host(plan: &BottlePlan, host_os: HostOs) -> Result<String> {
    Addresses::for_slot(plan.slot)
        .map(|a| a.agent_endpoint(host_os).to_string())
        .map_err(|e| Error::other(format!("slot {} has no addresses", e.0), "`bottle gc`"))
}

fn guest_path(p: &str) -> String {
    match p.strip_prefix("~/") {
        Some(rest) => format!("{AGENT_HOME}/{rest}"),
        None if p == "~" => AGENT_HOME.into(),
        None => p.into(),
    }
}

fn is_system_path(p: &str) -> bool {
    !(p.starts_with('~') || p.starts_with(AGENT_HOME) || p.starts_with(WORKSPACE))
}

/// The derived agent Dockerfile: tools the bottle needs (CA store, git), the
/// template's agent, a non-root `agent` user (uid 1000), the workspace copy.
pub fn agent_dockerfile(base: &str, template: Option<&str>, workspace: bool) -> String {
    let (extra_apt, extra_apk, install) = match template {
        Some("claude") => (
            "nodejs npm",
            "nodejs npm",
            "RUN npm install -g @anthropic-ai/claude-code\n",
        ),
        Some("codex") => (
            "nodejs npm",
            "nodejs npm",
            "RUN npm install -g @openai/codex\n",
        ),
        _ => ("", "", ""),
    };
    let mut d = format!(
        "# generated by bottle (smolmachines backend); do not edit\n\
         FROM {base}\n\
         USER root\n\
         RUN set -e; \\\n\
         \x20 if command -v apt-get >/dev/null; then \\\n\
         \x20   apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates git curl bash {extra_apt} && rm -rf /var/lib/apt/lists/*; \\\n\
         \x20 elif command -v apk >/dev/null; then apk add --no-cache ca-certificates git curl bash {extra_apk}; fi\n\
         {install}\
         RUN (id -u agent >/dev/null 2>&1) || useradd -m -u {AGENT_UID} -s /bin/bash agent 2>/dev/null || adduser -D -u {AGENT_UID} agent\n\
         RUN mkdir -p {WORKSPACE} {AGENT_HOME} && chown {AGENT_UID}:{AGENT_UID} {WORKSPACE} {AGENT_HOME}\n"
    );
    if workspace {
        d.push_str(&format!(
            "COPY --chown={AGENT_UID}:{AGENT_UID} . {WORKSPACE}\n"
        ));
    }
    d.push_str(&format!("WORKDIR {WORKSPACE}\n"));
    d
}
