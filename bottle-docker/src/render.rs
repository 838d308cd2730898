//! Plan → the exact docker commands (pure apart from reading the files it
//! hashes or copies: templates, the workspace, the sidecar binary, agent
//! files).
//!
//! Order (SPEC §6 docker): base image, image builds (skipped when the
//! content-hash tag exists), internal network (`--internal`, no host
//! address on its bridge), egress network, home volume, bundle container
//! (alias `bundle` on the internal network, secrets as read-only mounts,
//! connected to the egress network), bundle start (in the background while
//! the agent container is created: non-root, no capabilities, limits, proxy
//! and CA env, and its files copied in), bundle readiness poll, and only
//! then agent start and its exec-ready poll.

use std::collections::BTreeMap;

use bottle_core::backend::Step;
use bottle_core::command::CommandSpec;
use bottle_core::manifest::Runtime;
use bottle_core::plan::{BottlePlan, EnvEntry};
use bottle_core::prepare::{AGENT_CA_PATH, BUNDLE_ROOT};
use bottle_core::{Error, LaunchScript, Result, Secret, StateDir, Wiring};
use camino::Utf8PathBuf;

use crate::images::{self, BuildSpec, ImageSet, AGENT_HOME, AGENT_UID, AGENT_WORKSPACE};
use crate::tar;

/// The agent's name for the bundle (its network alias).
pub const BUNDLE_ALIAS: &str = "bundle";
/// The agent's only DNS upstream: a loopback address of the agent's own
/// network namespace, where nothing answers. Docker's embedded resolver
/// (127.0.0.11) forwards a name it does not know to the `--dns` servers, and
/// it reaches user-given servers from the container's namespace on every
/// engine version (only servers read from the host's resolv.conf are reached
/// from the host's namespace: the CVE-2024-29018 path). So no lookup of the
/// agent leaves its namespace, whatever the engine's version; the bundle's
/// alias is answered by the resolver itself. docs/security.md, "DNS".
pub const AGENT_DNS: &str = "127.0.0.1";
/// Default bundle config path inside the bundle.
pub const DEFAULT_BUNDLE_CONFIG: &str = "/bottle/bundle.toml";
/// The Debian system trust store (replaced by the bottle CA in the agent:
/// every TLS connection the agent makes goes through the egress MITM).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What `launch` does with a step beyond running it.
#[derive(Debug, Clone)]
pub enum Action {
    /// Run; a failure fails the launch.
    Run,
    /// The base image must exist (the default one is never pulled: its fix
    /// is `cargo xtask seed-base`).
    EnsureBase {
        /// Image.
        image: String,
    },
    /// Stage the context and build, unless the tag already exists.
    Build(Box<BuildSpec>),
    /// Create the home volume; its undo applies only when it did not exist
    /// (a resumed bottle keeps its home even if the relaunch fails).
    Volume {
        /// Volume name.
        name: String,
    },
    /// Run after replacing the [`IMAGE_COMMAND`] argument with the
    /// image's own ENTRYPOINT and CMD (read from the built image).
    WithImageCommand {
        /// The image.
        image: String,
    },
    /// Run in the background while the next steps (creating the agent,
    /// which does not start it) proceed; joined before the next `Poll`.
    Background,
    /// Poll `run` until it succeeds or the deadline passes, failing early
    /// when `container` stops running.
    Poll {
        /// The container that must stay up.
        container: String,
        /// The container exiting ends the wait successfully (an agent whose
        /// command ran to completion; its output is in its logs).
        exit_ok: bool,
    },
}

/// A step plus what launch does with it.
#[derive(Debug, Clone)]
pub struct DockerStep {
    /// The step (shown by `--dry-run`).
    pub step: Step,
    /// Its handling.
    pub action: Action,
}

/// The rendered launch.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Steps in order.
    pub steps: Vec<DockerStep>,
    /// Images.
    pub images: ImageSet,
    /// `runc` or `runsc`.
    pub runtime: String,
}

impl Rendered {
    /// As the core's script.
    pub fn script(&self) -> LaunchScript {
        LaunchScript {
            steps: self.steps.iter().map(|s| s.step.clone()).collect(),
        }
    }
}

/// Facts `render` needs that are not in the plan.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The `bottle-sidecar` binary to put into the bundle image.
    pub sidecar_bin: Utf8PathBuf,
    /// uid:gid the bundle runs as (the operator's, so state stays theirs).
    pub bundle_user: (u32, u32),
    /// Whether runsc is registered and works (from the probe).
    pub runsc_works: bool,
    /// Host CPUs (limits are clamped to it; docker refuses more).
    pub host_cpus: Option<f64>,
    /// Memory and process limits of the bundle container.
    pub bundle_limits: BundleLimits,
}

/// Memory and process limits of the bundle container (egress buffers
/// request bodies, git-gate runs git: a flood from the agent must hit these,
/// not the host). Defaults: 512 MiB, 512 processes; `BOTTLE_BUNDLE_MEMORY`
/// (e.g. `1GiB`) and `BOTTLE_BUNDLE_PIDS` override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// `--memory` (and `--memory-swap`: no swap beyond it), bytes.
    pub memory_bytes: u64,
    /// `--pids-limit`.
    pub pids: u32,
}

/// Env var overriding the bundle's memory limit (`512MiB`, `1GiB`, bytes).
pub const BUNDLE_MEMORY_ENV: &str = "BOTTLE_BUNDLE_MEMORY";
/// Env var overriding the bundle's process limit.
pub const BUNDLE_PIDS_ENV: &str = "BOTTLE_BUNDLE_PIDS";

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            pids: 512,
        }
    }
}

/// A bad setting in the operator's environment (exit 2, like a manifest).
fn env_error(message: String, fix: String) -> Error {
    Error::Manifest {
        file: "<environment>".into(),
        line: None,
        column: None,
        message,
        fix,
    }
}

impl BundleLimits {
    /// The defaults with the operator's overrides from the environment.
    pub fn from_env() -> Result<Self> {
        let mut l = Self::default();
        if let Ok(v) = std::env::var(BUNDLE_MEMORY_ENV) {
            l.memory_bytes = bottle_core::units::parse_bytes(&v)
                .ok()
                .filter(|b| *b >= 64 << 20)
                .ok_or_else(|| {
                    env_error(
                        format!("{BUNDLE_MEMORY_ENV}={v} is not a memory size of at least 64MiB"),
                        format!("set it like `{BUNDLE_MEMORY_ENV}=1GiB`, or unset it for 512MiB"),
                    )
                })?;
        }
        if let Ok(v) = std::env::var(BUNDLE_PIDS_ENV) {
            l.pids = v.trim().parse().ok().filter(|p| *p >= 64).ok_or_else(|| {
                env_error(
                    format!("{BUNDLE_PIDS_ENV}={v} is not a process count of at least 64"),
                    format!("set it like `{BUNDLE_PIDS_ENV}=1024`, or unset it for 512"),
                )
            })?;
        }
        Ok(l)
    }
}

fn docker() -> CommandSpec {
    CommandSpec::new("docker")
}

/// Label naming the `$BOTTLE_HOME` a resource belongs to (so `gc` of one
/// home never touches another home's bottles).
pub const LABEL_HOME: &str = "dev.bottle.home";

/// The value of [`LABEL_HOME`] for a home directory.
pub fn home_label(home_root: &camino::Utf8Path) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(home_root.as_str().as_bytes())[..8])
}

/// The home of a state dir (`<home>/state/<id>`).
pub fn home_of(state: &StateDir) -> camino::Utf8PathBuf {
    state
        .path()
        .parent()
        .and_then(|p| p.parent())
        .map(camino::Utf8Path::to_owned)
        .unwrap_or_else(|| state.path().to_owned())
}

fn labels(plan: &BottlePlan, home: &str, role: Option<&str>) -> Vec<String> {
    let mut v = Vec::new();
    for (k, val) in &plan.labels {
        v.push("--label".to_owned());
        v.push(format!("{k}={val}"));
    }
    v.push("--label".to_owned());
    v.push(format!("{LABEL_HOME}={home}"));
    if let Some(r) = role {
        v.push("--label".to_owned());
        v.push(format!("dev.bottle.role={r}"));
    }
    v
}

fn step(name: &str, run: CommandSpec, undo: Option<CommandSpec>, action: Action) -> DockerStep {
    DockerStep {
        step: Step {
            name: name.to_owned(),
            run,
            undo,
        },
        action,
    }
}

fn rm_container(name: &str) -> CommandSpec {
    docker()
        .args(["rm", "--force", "--volumes", name])
        .allow_failure()
}

/// The runtime the agent gets.
pub fn choose_runtime(plan: &BottlePlan, runsc_works: bool) -> &'static str {
    match plan.runtime {
        Runtime::Runc => "runc",
        Runtime::Runsc => "runsc",
        Runtime::Auto if runsc_works => "runsc",
        Runtime::Auto => "runc",
    }
}

/// The bundle config path named in the bundle args (`--config X`).
pub fn bundle_config(wiring: &Wiring) -> String {
    wiring
        .bundle_args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| DEFAULT_BUNDLE_CONFIG.to_owned())
}

/// The agent's environment: plan env, then the sidecar wiring, then what the
/// backend enforces (proxy, CA trust, home). Returns (plain, secret).
pub fn agent_env(
    plan: &BottlePlan,
    wiring: &Wiring,
) -> (BTreeMap<String, String>, BTreeMap<String, Secret>) {
    let mut plain = BTreeMap::new();
    let mut secret = BTreeMap::new();
    for (k, v) in &plan.env {
        match v {
            EnvEntry::Literal(s) => {
                plain.insert(k.clone(), s.clone());
            }
            EnvEntry::Secret(s) => {
                secret.insert(k.clone(), s.clone());
            }
        }
    }
    for (k, v) in &wiring.agent_env {
        secret.remove(k);
        plain.insert(k.clone(), v.clone());
    }
    let proxy = format!("http://{BUNDLE_ALIAS}:{}", plan.ports.egress);
    let enforced = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", &proxy),
        ("http_proxy", &proxy),
        ("https_proxy", &proxy),
        ("NO_PROXY", BUNDLE_ALIAS),
        ("no_proxy", BUNDLE_ALIAS),
        ("SSL_CERT_FILE", AGENT_CA_PATH),
        ("NODE_EXTRA_CA_CERTS", AGENT_CA_PATH),
        ("REQUESTS_CA_BUNDLE", AGENT_CA_PATH),
        ("GIT_SSL_CAINFO", AGENT_CA_PATH),
        ("CURL_CA_BUNDLE", AGENT_CA_PATH),
        ("HOME", AGENT_HOME),
        ("BOTTLE_IDENTITY", plan.identity.as_str()),
    ];
    for (k, v) in enforced {
        secret.remove(k);
        plain.insert(k.to_owned(), v.to_owned());
    }
    // Wiring the agent holds off the container config (the proxy URL with
    // the bundle access credential): it overrides the plain value inside
    // the agent once the env file is loaded.
    for (k, v) in &wiring.agent_secret_env {
        secret.insert(k.clone(), v.clone());
    }
    (plain, secret)
}

fn guest_path(p: &str) -> String {
    if p == "~" {
        AGENT_HOME.to_owned()
    } else if let Some(rest) = p.strip_prefix("~/") {
        format!("{AGENT_HOME}/{rest}")
    } else {
        p.to_owned()
    }
}

/// The archive of agent files (`docker cp - <agent>:/`: without `-a` docker keeps the archive's owners): files under the
/// home are owned by the agent, others by root; the bottle CA also replaces
/// the system trust store.
pub fn agent_files_archive(wiring: &Wiring) -> Result<Option<Vec<u8>>> {
    if wiring.agent_files.is_empty() {
        return Ok(None);
    }
    let mut dirs = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for f in &wiring.agent_files {
        let guest = guest_path(&f.guest);
        if !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
            return Err(Error::other(
                format!("agent file target `{}` is not an absolute path", f.guest),
                "agent files go to absolute paths or under ~/",
            ));
        }
        let data = std::fs::read(&f.host).map_err(|e| Error::io("reading", f.host.clone(), e))?;
        let rel = guest.trim_start_matches('/').to_owned();
        let home_rel = AGENT_HOME.trim_start_matches('/');
        let owner = if rel.starts_with(&format!("{home_rel}/")) {
            let mut d = std::path::Path::new(&rel).parent();
            while let Some(p) = d {
                let s = p.to_string_lossy().into_owned();
                if s.len() <= home_rel.len() {
                    break;
                }
                dirs.insert(s);
                d = p.parent();
            }
            AGENT_UID
        } else {
            0
        };
        if guest == AGENT_CA_PATH {
            files.push(tar::Entry::File {
                path: SYSTEM_CA_BUNDLE.trim_start_matches('/').to_owned(),
                mode: 0o644,
                owner: 0,
                data: data.clone(),
            });
        }
        files.push(tar::Entry::File {
            path: rel,
            mode: f.mode,
            owner,
            data,
        });
    }
    let mut entries: Vec<tar::Entry> = dirs
        .into_iter()
        .map(|path| tar::Entry::Dir {
            path,
            mode: 0o755,
            owner: AGENT_UID,
        })
        .collect();
    entries.extend(files);
    tar::archive(&entries)
        .map(Some)
        .map_err(|e| Error::other(e, "shorten the agent file paths"))
}

/// Render the whole launch.
pub fn render(
    plan: &BottlePlan,
    state: &StateDir,
    wiring: &Wiring,
    opts: &RenderOptions,
) -> Result<Rendered> {
    let images = images::image_set(plan, state, &opts.sidecar_bin, opts.bundle_user)?;
    let runtime = choose_runtime(plan, opts.runsc_works);
    let n = &plan.names;
    let home = home_label(&home_of(state));
    let mut steps = Vec::new();

    steps.push(step(
        "check base image",
        docker().args(["image", "inspect", "--format", "{{.Id}}", &images.base]),
        None,
        Action::EnsureBase {
            image: images.base.clone(),
        },
    ));
    for b in images.builds() {
        steps.push(step(
            &format!("build {} image {}", b.role, b.tag),
            b.command(),
            None,
            Action::Build(Box::new(b.clone())),
        ));
    }

    // Internal network: no route out, and no address of the host on its
    // bridge (so the agent cannot reach host listeners via the gateway).
    let mut net = docker().args(["network", "create", "--internal"]);
    net = net.args(["--opt", "com.docker.network.bridge.inhibit_ipv4=true"]);
    net = net.args(labels(plan, &home, None)).arg(&n.internal_network);
    steps.push(step(
        "create internal network",
        net,
        Some(
            docker()
                .args(["network", "rm", &n.internal_network])
                .allow_failure(),
        ),
        Action::Run,
    ));
    steps.push(step(
        "create egress network",
        docker()
            .args(["network", "create"])
            .args(labels(plan, &home, None))
            .arg(&n.egress_network),
        Some(
            docker()
                .args(["network", "rm", &n.egress_network])
                .allow_failure(),
        ),
        Action::Run,
    ));
    steps.push(step(
        "create home volume",
        docker()
            .args(["volume", "create"])
            .args(labels(plan, &home, None))
            .arg(&n.home_volume),
        Some(
            docker()
                .args(["volume", "rm", "--force", &n.home_volume])
                .allow_failure(),
        ),
        Action::Volume {
            name: n.home_volume.clone(),
        },
    ));

    // Bundle.
    let (uid, gid) = opts.bundle_user;
    let mut bundle = docker()
        .args(["create", "--name", &n.bundle])
        .args(labels(plan, &home, Some("bundle")))
        .args([
            "--network",
            &n.internal_network,
            "--network-alias",
            BUNDLE_ALIAS,
            "--hostname",
            BUNDLE_ALIAS,
            "--user",
            &format!("{uid}:{gid}"),
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            &opts.bundle_limits.pids.to_string(),
            "--memory",
            &opts.bundle_limits.memory_bytes.to_string(),
            "--memory-swap",
            &opts.bundle_limits.memory_bytes.to_string(),
            "--restart",
            "no",
            "--env",
            "HOME=/tmp",
        ]);
    for m in &wiring.bundle_mounts {
        if !m.target.starts_with(BUNDLE_ROOT) {
            return Err(Error::other(
                format!(
                    "bundle mount target `{}` is outside {BUNDLE_ROOT}",
                    m.target
                ),
                "sidecar mounts belong under /bottle",
            ));
        }
        let mut spec = format!("type=bind,source={},target={}", m.host, m.target);
        if m.read_only {
            spec.push_str(",readonly");
        }
        bundle = bundle.args(["--mount", &spec]);
    }
    bundle = bundle.arg(&images.bundle.tag).arg(images::SIDECAR_IN_IMAGE);
    if wiring.bundle_args.is_empty() {
        bundle = bundle.args(["run", "--config", DEFAULT_BUNDLE_CONFIG]);
    } else {
        bundle = bundle.args(wiring.bundle_args.iter().cloned());
    }
    steps.push(step(
        "create bundle container",
        bundle,
        Some(rm_container(&n.bundle)),
        Action::Run,
    ));
    steps.push(step(
        "connect bundle to egress network",
        docker().args(["network", "connect", &n.egress_network, &n.bundle]),
        None,
        Action::Run,
    ));
    // Agent.
    let r = &plan.resources;
    let cpus = match opts.host_cpus {
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
        .args(labels(plan, &home, Some("agent")))
        .args([
            "--network",
            &n.internal_network,
            "--hostname",
            plan.identity.as_str(),
            "--user",
            &format!("{AGENT_UID}:{AGENT_UID}"),
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            &r.pids.to_string(),
            "--memory",
            &r.memory_bytes.to_string(),
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
    let (plain, secret) = agent_env(plan, wiring);
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
    agent = agent.arg(images.agent_image());
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
    // The bundle starts while the agent is created (not started).
    steps.push(step(
        "start bundle",
        docker().args(["start", &n.bundle]),
        None,
        Action::Background,
    ));
    steps.push(step(
        "create agent container",
        agent,
        Some(rm_container(&n.agent)),
        if image_command {
            Action::WithImageCommand {
                image: images.agent_image().to_owned(),
            }
        } else {
            Action::Run
        },
    ));
    // the sidecars' files and the agent's skills (README "Skills")
    if let Some(bytes) = agent_files_archive(&bottle_core::skills::with_skills(plan, wiring)?)? {
        steps.push(step(
            "copy agent files",
            docker()
                .args(["cp", "-", &format!("{}:/", n.agent)])
                .stdin_bytes(bytes),
            None,
            Action::Run,
        ));
    }
    // Bundle first: the agent starts only once every sidecar answers.
    steps.push(step(
        "wait for bundle readiness",
        docker().args([
            "exec",
            &n.bundle,
            images::SIDECAR_IN_IMAGE,
            "health",
            "--config",
            &bundle_config(wiring),
        ]),
        None,
        Action::Poll {
            container: n.bundle.clone(),
            exit_ok: false,
        },
    ));

    steps.push(step(
        "start agent",
        docker().args(["start", &n.agent]),
        None,
        Action::Run,
    ));
    steps.push(step(
        "wait for agent exec-ready",
        docker().args(["exec", &n.agent, "true"]),
        None,
        Action::Poll {
            container: n.agent.clone(),
            exit_ok: true,
        },
    ));
    if let Some(text) = env_file {
        steps.push(step(
            "hand the agent its secret env",
            docker()
                .args([
                    "exec",
                    "--interactive",
                    "--user",
                    &format!("{AGENT_UID}:{AGENT_UID}"),
                    &n.agent,
                ])
                .args(["/bin/sh", "-c", WRITE_ENV]),
            None,
            Action::Run,
        ));
        let last = steps.len() - 1;
        steps[last].step.run.stdin = Some(bottle_core::command::Stdin::Secret(text));
    }
    Ok(Rendered {
        steps,
        images,
        runtime: runtime.to_owned(),
    })
}

/// Stands for the agent image's own ENTRYPOINT + CMD in a rendered
/// `docker create` (replaced at launch; see [`Action::WithImageCommand`]).
pub const IMAGE_COMMAND: &str = "<image ENTRYPOINT and CMD>";
/// Where the agent's secret env lives (container layer, agent-owned, 0600;
/// never in the container config, never on the home volume).
pub const AGENT_ENV_FILE: &str = "/tmp/.bottle-env";
/// Entry wrapper: wait for the env file, load it, run the real command.
const AWAIT_ENV: &str =
    "while [ ! -e /tmp/.bottle-env.ready ]; do sleep 0.05; done; . /tmp/.bottle-env; exec \"$@\"";
/// Writes the env file from stdin (run as the agent user).
const WRITE_ENV: &str = "umask 077 && cat > /tmp/.bottle-env && touch /tmp/.bottle-env.ready";
/// Prefix for `bottle exec`: the same env as the agent's main process.
pub const EXEC_WITH_ENV: &str = "[ -r /tmp/.bottle-env ] && . /tmp/.bottle-env; exec \"$@\"";

/// `export NAME='value'` lines for the secret env (single-quote escaped).
fn secret_env_file(secret: &BTreeMap<String, Secret>) -> Secret {
    let mut text = String::new();
    for (k, v) in secret {
        text.push_str(&format!(
            "export {k}='{}'\n",
            v.expose().replace('\'', "'\\''")
        ));
    }
    Secret::new(text)
}
