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
//! and CA env, and its files, secret env file included, copied in), agent
//! start (its command waits for the bundle's readiness marker, seen
//! read-only at `/run/bottle`), then the host's wait for that marker.
//! ARCHITECTURE.md "Data flow of `bottle start <agent>`".
//!
//! [`render`] lists those steps; each object's commands are in a module of
//! their own: `networks` (networks and home volume), `bundle`, `agent`,
//! `env` (the agent's plain and secret env), `files` (the archive copied
//! into the agent), `limits` (the bundle's limits).

mod agent;
mod bundle;
mod env;
mod files;
mod limits;
mod networks;

use bottle_core::backend::Step;
use bottle_core::command::CommandSpec;
use bottle_core::manifest::Runtime;
use bottle_core::plan::BottlePlan;
use bottle_core::{LaunchScript, Result, StateDir, Wiring};
use camino::Utf8PathBuf;

pub use env::{agent_env, AGENT_ENV_FILE, EXEC_WITH_ENV, IMAGE_COMMAND};
pub use files::agent_files_archive;
pub use limits::{BundleLimits, BUNDLE_MEMORY_ENV, BUNDLE_PIDS_ENV};

use crate::images::{self, BuildSpec, ImageSet};

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
    /// Create a network; when docker's address pools are exhausted (or
    /// always, by the operator's setting) with a subnet from bottle's own
    /// range (`crate::subnet`).
    Network(Box<crate::subnet::NetworkCreate>),
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
        /// A host file whose appearance also ends the wait (the bundle's
        /// readiness marker, `StateDir::bundle_ready_path`): looked for
        /// every few ms, while `run` (a `docker exec`, ~100 ms each) is
        /// tried only every few hundred ms as the slow path.
        marker: Option<Utf8PathBuf>,
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
    /// Where the networks' subnets come from (`crate::subnet`).
    pub subnets: crate::subnet::SubnetSettings,
}

/// `docker …`.
pub(super) fn docker() -> CommandSpec {
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

/// `--label` arguments: the plan's labels, the home's, and the `role`.
pub(super) fn labels(plan: &BottlePlan, home: &str, role: Option<&str>) -> Vec<String> {
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

/// A step of the launch.
pub(super) fn step(
    name: &str,
    run: CommandSpec,
    undo: Option<CommandSpec>,
    action: Action,
) -> DockerStep {
    DockerStep {
        step: Step {
            name: name.to_owned(),
            run,
            undo,
        },
        action,
    }
}

/// The flags both containers get: their hostname and user, no
/// capabilities, no privilege gain, a process and a memory limit.
pub(super) fn confined(hostname: &str, user: &str, pids: u32, memory_bytes: u64) -> [String; 12] {
    [
        "--hostname",
        hostname,
        "--user",
        user,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--pids-limit",
        &pids.to_string(),
        "--memory",
        &memory_bytes.to_string(),
    ]
    .map(str::to_owned)
}

/// The undo of a created container.
pub(super) fn rm_container(name: &str) -> CommandSpec {
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

/// Render the whole launch.
pub fn render(
    plan: &BottlePlan,
    state: &StateDir,
    wiring: &Wiring,
    opts: &RenderOptions,
) -> Result<Rendered> {
    let images = images::image_set(plan, state, &opts.sidecar_bin, opts.bundle_user)?;
    let runtime = choose_runtime(plan, opts.runsc_works);
    let cx = Ctx {
        plan,
        wiring,
        images: &images,
        opts,
        home: home_label(&home_of(state)),
    };
    let mut steps = image_steps(&images);
    steps.extend(networks::steps(plan, &cx.home, opts.subnets));
    steps.extend(bundle::steps(&cx)?);
    let run_dir = bundle::run_dir(wiring, state);
    let (create_agent, env_file) = agent::create(&cx, runtime, run_dir.as_deref());
    // The bundle starts while the agent is created (not started).
    steps.push(step(
        "start bundle",
        docker().args(["start", &plan.names.bundle]),
        None,
        Action::Background,
    ));
    steps.push(create_agent);
    // the sidecars' files and the agent's skills (README "Skills"), and,
    // when the agent waits for the bundle's marker itself, its secret env
    let copied_env = run_dir.as_ref().and(env_file.clone());
    let files = bottle_core::skills::with_skills(plan, wiring)?;
    if let Some(bytes) = agent_files_archive(&files, copied_env.as_ref())? {
        steps.push(agent::copy_files(plan, bytes, copied_env));
    }
    if run_dir.is_some() {
        // The agent's command waits for the bundle's marker itself: it
        // starts alongside the bundle, and the launch ends once both are
        // up (no `docker exec` on the critical path).
        steps.push(agent::start(plan));
        steps.push(bundle::readiness(plan, wiring, state));
        return Ok(Rendered {
            steps,
            images,
            runtime: runtime.to_owned(),
        });
    }
    // Bundle first: the agent starts only once every sidecar answers.
    steps.push(bundle::readiness(plan, wiring, state));
    match env_file {
        // The handoff is its own exec-ready wait: it is retried until the
        // agent takes it (one `docker exec` less on the critical path).
        Some(text) => {
            steps.push(agent::start(plan));
            steps.push(agent::hand_env(plan, text));
        }
        None => steps.extend([agent::start(plan), agent::exec_ready(plan)]),
    }
    Ok(Rendered {
        steps,
        images,
        runtime: runtime.to_owned(),
    })
}

/// What the containers' commands are rendered from.
struct Ctx<'a> {
    plan: &'a BottlePlan,
    wiring: &'a Wiring,
    images: &'a ImageSet,
    opts: &'a RenderOptions,
    /// [`home_label`] of the bottle's home.
    home: String,
}

/// Check the base image, then build each image (skipped at launch when its
/// content-hash tag exists).
fn image_steps(images: &ImageSet) -> Vec<DockerStep> {
    let mut steps = vec![step(
        "check base image",
        docker().args(["image", "inspect", "--format", "{{.Id}}", &images.base]),
        None,
        Action::EnsureBase {
            image: images.base.clone(),
        },
    )];
    for b in images.builds() {
        steps.push(step(
            &format!("build {} image {}", b.role, b.tag),
            b.command(),
            None,
            Action::Build(Box::new(b.clone())),
        ));
    }
    steps
}
