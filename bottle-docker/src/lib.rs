//! bottle's docker backend: the agent in a container whose only peer is the
//! bundle (`bottle-sidecar`) on a per-bottle `--internal` network.
//!
//! Modules: [`images`] (templates, content-hash tags, build contexts),
//! [`gc`] (which of those images no container uses),
//! [`workspace`] (which `--cwd` files are copied), [`render`] (plan →
//! commands, pure), [`launch`] (running them with LIFO rollback and Ctrl-C
//! handling), [`subnet`] (the networks' subnets when docker's pools run out),
//! [`running`] (the handle: exec/attach/logs/stop), [`tar`]
//! (agent files with the right owner). Everything goes through the core
//! `CommandRunner`; this crate never talks to the docker API directly.
#![deny(missing_docs)]

use std::sync::Mutex;
use std::time::Duration;

use bottle_core::backend::{Backend, Gvisor, LaunchInput, LaunchScript, Probe, Resource, Running};
use bottle_core::command::{CommandRunner, CommandSpec};
use bottle_core::manifest::Runtime;
use bottle_core::plan::{Identity, LABEL_IDENTITY};
use bottle_core::{Error, Metadata, Result, StateDir};
use camino::Utf8PathBuf;

pub mod gc;
pub mod images;
pub mod launch;
pub mod probe_cache;
pub mod render;
pub mod running;
pub mod subnet;
/// The tar writer lives in core (the CLI packs `bottle cp` input with it).
pub use bottle_core::tar;
/// The `--cwd` copy now lives in core (both backends stage it).
pub use bottle_core::workspace;

pub use probe_cache::{ProbeCache, PROBE_CACHE_ENV};
pub use render::{BundleLimits, RenderOptions, Rendered, AGENT_DNS, BUNDLE_ALIAS};
pub use running::{names_for, DockerRunning};
pub use subnet::{SubnetMode, SubnetSettings, SUBNET_MODE_ENV, SUBNET_POOL_ENV};

/// Env var naming the `bottle-sidecar` binary to put into the bundle image.
pub const SIDECAR_BIN_ENV: &str = "BOTTLE_SIDECAR_BIN";
/// Env var overriding the readiness deadline (seconds).
pub const READY_TIMEOUT_ENV: &str = "BOTTLE_READY_TIMEOUT";

/// The docker backend.
#[derive(Debug)]
pub struct DockerBackend {
    sidecar_bin: Option<Utf8PathBuf>,
    bundle_user: Option<(u32, u32)>,
    host_cpus: Option<f64>,
    gvisor: Mutex<Option<Gvisor>>,
    gvisor_source: Mutex<GvisorSource>,
    probe_cache: ProbeCache,
    bundle_limits: Option<render::BundleLimits>,
    subnets: Option<SubnetSettings>,
}

/// Where this backend's gVisor fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GvisorSource {
    /// Given (a caller's probe, a test), or not known yet.
    Given,
    /// The probe cache ([`probe_cache`]): a test container ran earlier.
    Cache,
    /// A test container this backend ran.
    TestContainer,
}

impl Default for DockerBackend {
    fn default() -> Self {
        Self {
            sidecar_bin: None,
            bundle_user: None,
            host_cpus: std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as f64),
            gvisor: Mutex::new(None),
            gvisor_source: Mutex::new(GvisorSource::Given),
            probe_cache: ProbeCache::default(),
            bundle_limits: None,
            subnets: None,
        }
    }
}

impl DockerBackend {
    /// Use this `bottle-sidecar` binary (default: `$BOTTLE_SIDECAR_BIN`,
    /// else next to the running executable).
    pub fn with_sidecar_bin(mut self, p: impl Into<Utf8PathBuf>) -> Self {
        self.sidecar_bin = Some(p.into());
        self
    }

    /// Run the bundle as this uid:gid (default: the caller's).
    pub fn with_bundle_user(mut self, uid: u32, gid: u32) -> Self {
        self.bundle_user = Some((uid, gid));
        self
    }

    /// Limit the bundle container to these (default: 512 MiB and 512
    /// processes, or `BOTTLE_BUNDLE_MEMORY` / `BOTTLE_BUNDLE_PIDS`).
    pub fn with_bundle_limits(mut self, l: render::BundleLimits) -> Self {
        self.bundle_limits = Some(l);
        self
    }

    /// Take the networks' subnets this way (default: `BOTTLE_SUBNET_MODE` /
    /// `BOTTLE_SUBNET_POOL`, else docker's pools with bottle's range when
    /// they are exhausted: [`subnet`]).
    pub fn with_subnets(mut self, s: SubnetSettings) -> Self {
        self.subnets = Some(s);
        self
    }

    /// Pretend the host has this many CPUs (snapshots).
    pub fn with_host_cpus(mut self, cpus: Option<f64>) -> Self {
        self.host_cpus = cpus;
        self
    }

    /// Record whether runsc works (tests; normally learnt by `probe`).
    pub fn with_runsc(self, works: bool) -> Self {
        self.with_gvisor(if works {
            Gvisor::Available
        } else {
            Gvisor::Unavailable {
                why: "set by the caller".into(),
            }
        })
    }

    /// Record what a probe found about gVisor (e.g. the preflight's probe).
    pub fn with_gvisor(self, g: Gvisor) -> Self {
        *self.gvisor.lock().unwrap() = Some(g);
        self
    }

    /// Cache the gVisor probe's positive result here (default:
    /// [`ProbeCache::default`]; [`ProbeCache::off`] probes every time).
    pub fn with_probe_cache(mut self, cache: ProbeCache) -> Self {
        self.probe_cache = cache;
        self
    }

    /// What the last probe found about gVisor (`None`: not probed).
    pub fn gvisor_known(&self) -> Option<Gvisor> {
        self.gvisor.lock().unwrap().clone()
    }

    /// The sidecar binary to use.
    pub fn sidecar_bin(&self) -> Result<Utf8PathBuf> {
        if let Some(p) = &self.sidecar_bin {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os(SIDECAR_BIN_ENV) {
            return Ok(Utf8PathBuf::from(p.to_string_lossy().into_owned()));
        }
        let exe = std::env::current_exe()
            .ok()
            .and_then(|e| Utf8PathBuf::from_path_buf(e).ok());
        if let Some(dir) = exe.as_ref().and_then(|e| e.parent()) {
            for cand in [dir.join("bottle-sidecar"), dir.join("../bottle-sidecar")] {
                if cand.is_file() {
                    return Ok(cand);
                }
            }
        }
        Err(Error::other(
            "cannot find the `bottle-sidecar` binary for the bundle image",
            format!(
                "build it (`cargo build -p bottle-sidecars --bin bottle-sidecar`) and put it next to `bottle`, or set {SIDECAR_BIN_ENV}"
            ),
        ))
    }

    fn bundle_user(&self) -> (u32, u32) {
        // SAFETY: getuid/getgid cannot fail.
        self.bundle_user
            .unwrap_or_else(|| unsafe { (libc::getuid(), libc::getgid()) })
    }

    /// Render a launch with the facts known so far.
    pub fn rendered(&self, input: LaunchInput<'_>) -> Result<Rendered> {
        render::render(
            input.plan,
            input.state,
            input.wiring,
            &RenderOptions {
                sidecar_bin: self.sidecar_bin()?,
                bundle_user: self.bundle_user(),
                runsc_works: self.gvisor_known().is_some_and(|g| g.is_available()),
                host_cpus: self.host_cpus,
                bundle_limits: match self.bundle_limits {
                    Some(l) => l,
                    None => render::BundleLimits::from_env()?,
                },
                subnets: match self.subnets {
                    Some(s) => s,
                    None => SubnetSettings::from_env()?,
                },
            },
        )
    }

    /// The runtime the agent will get (`runc`/`runsc`) and a warning line
    /// when `runtime = auto` falls back to runc.
    pub fn runtime_choice(&self, plan: &bottle_core::BottlePlan) -> (&'static str, Option<String>) {
        let g = self.gvisor_known().unwrap_or(Gvisor::Unavailable {
            why: "not probed".into(),
        });
        let rt = render::choose_runtime(plan, g.is_available());
        let warn = match (&g, plan.runtime == Runtime::Auto && rt == "runc") {
            (Gvisor::Unavailable { why }, true) => Some(format!(
                "gVisor (runsc) is not available ({why}): the agent shares the host kernel (runc)"
            )),
            (_, true) => Some(
                "gVisor (runsc) is not available: the agent shares the host kernel (runc)".into(),
            ),
            _ => None,
        };
        (rt, warn)
    }

    /// The preflight's runtime lines: the fallback warning, or else what
    /// the probe found about gVisor; said once (the probe's notes do not
    /// repeat it).
    pub fn runtime_lines(&self, plan: &bottle_core::BottlePlan) -> (&'static str, Vec<String>) {
        let (rt, warn) = self.runtime_choice(plan);
        let lines = match warn {
            Some(w) => vec![format!("WARNING: {w}")],
            None => self
                .gvisor_known()
                .and_then(|g| g.note())
                .into_iter()
                .collect(),
        };
        (rt, lines)
    }

    /// Probe runsc: registered with the engine AND able to run a container
    /// (a real `docker run --runtime runsc`; its result, not its wording,
    /// decides), or a cached "it ran" for the same engine and runsc
    /// ([`probe_cache`]).
    pub fn probe_runsc(&self, runner: &dyn CommandRunner, image: &str) -> Gvisor {
        let facts = std::thread::scope(|s| {
            let version = s.spawn(|| runner.output(&version_spec()));
            let id = s.spawn(|| runner.output(&daemon_id_spec()));
            let runtimes = runner.output(&runtimes_spec());
            EngineFacts {
                runtimes,
                daemon_id: id.join().ok().and_then(|o| o.ok()),
                version: version.join().ok().and_then(|o| o.ok()),
            }
        });
        self.gvisor_from(runner, image, facts, false)
    }

    /// The gVisor decision from the engine's facts: not registered, a
    /// cached positive result for exactly these facts (unless `fresh`), or
    /// a test container.
    fn gvisor_from(
        &self,
        runner: &dyn CommandRunner,
        image: &str,
        facts: EngineFacts,
        fresh: bool,
    ) -> Gvisor {
        let info = facts.runtimes;
        let registered = matches!(&info, Ok(o) if o.success() && o.stdout.contains("\"runsc\""));
        let key = match (&info, &facts.daemon_id, &facts.version) {
            (Ok(rt), Some(id), Some(v)) if registered && id.success() && v.success() => {
                probe_cache::ProbeKey::new(&id.stdout, &v.stdout, &rt.stdout)
            }
            _ => None,
        };
        let mut source = GvisorSource::TestContainer;
        let g = if !registered {
            self.probe_cache.forget();
            Gvisor::Unavailable {
                why: "not registered with the engine; `bash .ci/run` shows how to install and register it".into(),
            }
        } else if !fresh && key.as_ref().is_some_and(|k| self.probe_cache.available(k)) {
            source = GvisorSource::Cache;
            Gvisor::Available
        } else {
            let run = runner.output(
                &CommandSpec::new("docker")
                    .args([
                        "run",
                        "--rm",
                        "--runtime",
                        "runsc",
                        "--network",
                        "none",
                        image,
                        "true",
                    ])
                    .allow_failure(),
            );
            match run {
                Ok(o) if o.success() => {
                    if let Some(k) = &key {
                        self.probe_cache.store(k);
                    }
                    Gvisor::Available
                }
                Ok(o) => {
                    self.probe_cache.forget();
                    Gvisor::Unavailable {
                        why: format!(
                            "registered, but a test container failed: {}",
                            o.stderr.lines().last().unwrap_or("no output").trim()
                        ),
                    }
                }
                Err(e) => {
                    self.probe_cache.forget();
                    Gvisor::Unavailable {
                        why: format!("the test container could not run: {e}"),
                    }
                }
            }
        };
        *self.gvisor.lock().unwrap() = Some(g.clone());
        *self.gvisor_source.lock().unwrap() = source;
        g
    }

    /// Whether the gVisor fact in use came from the probe cache.
    pub fn gvisor_cached(&self) -> bool {
        *self.gvisor_source.lock().unwrap() == GvisorSource::Cache
    }
}

/// What the engine said, for the gVisor decision.
struct EngineFacts {
    runtimes: Result<bottle_core::command::Output>,
    daemon_id: Option<bottle_core::command::Output>,
    version: Option<bottle_core::command::Output>,
}

fn version_spec() -> CommandSpec {
    CommandSpec::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .allow_failure()
}

fn runtimes_spec() -> CommandSpec {
    CommandSpec::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .allow_failure()
}

fn daemon_id_spec() -> CommandSpec {
    CommandSpec::new("docker")
        .args(["info", "--format", "{{.ID}}"])
        .allow_failure()
}

/// Whether an engine of this version forwards DNS from `--internal`
/// networks (CVE-2024-29018, fixed in 26.0, 25.0.4 and 23.0.11); `None`
/// when the version does not parse.
pub fn engine_forwards_internal_dns(version: &str) -> Option<bool> {
    let mut it = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (major, minor, patch) = (it.next()??, it.next()??, it.next()?.unwrap_or(0));
    Some(match major {
        26.. => false,
        25 => minor == 0 && patch < 4,
        24 => true,
        23 => minor == 0 && patch < 11,
        _ => true,
    })
}

/// The `check`/preflight line about DNS: the engine's version, whether it
/// has the CVE-2024-29018 fix, and the construction that makes it moot.
pub fn dns_note(version: &str) -> String {
    let engine = match engine_forwards_internal_dns(version) {
        Some(true) => format!("engine {version} forwards lookups from internal networks (CVE-2024-29018, fixed in 26.0/25.0.4/23.0.11)"),
        Some(false) => format!("engine {version} has the CVE-2024-29018 fix"),
        None => format!("engine version {version} not recognised"),
    };
    format!(
        "DNS: {engine}; holds either way: the agent's only resolver upstream is its own loopback (--dns {})",
        render::AGENT_DNS
    )
}

fn ready_timeout() -> Duration {
    std::env::var(READY_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

impl Backend for DockerBackend {
    fn id(&self) -> &'static str {
        "docker"
    }

    fn probe(&self, runner: &dyn CommandRunner) -> Probe {
        let base = bottle_core::plan::DEFAULT_BASE_IMAGE;
        // Four quick questions at once; the gVisor test container (or its
        // cached result) only after the engine answered.
        let (v, has_base, facts) = std::thread::scope(|s| {
            let has_base = s.spawn(|| {
                runner
                    .output(
                        &CommandSpec::new("docker")
                            .args(["image", "inspect", "--format", "{{.Id}}", base])
                            .allow_failure(),
                    )
                    .map(|o| o.success())
                    .unwrap_or(false)
            });
            let runtimes = s.spawn(|| runner.output(&runtimes_spec()));
            let id = s.spawn(|| runner.output(&daemon_id_spec()));
            let v = runner.output(&version_spec());
            let has_base = has_base.join().unwrap_or(false);
            let runtimes = runtimes
                .join()
                .unwrap_or_else(|_| Err(Error::other("`docker info` panicked", "report a bug")));
            let id = id.join().ok().and_then(|o| o.ok());
            (v, has_base, (runtimes, id))
        });
        let version = match &v {
            Err(Error::Spawn { .. }) => {
                return Probe::Unavailable {
                    why: "the `docker` CLI is not installed".into(),
                    fix: "install Docker (e.g. `apt-get install docker.io`) and start dockerd"
                        .into(),
                }
            }
            Err(e) => {
                return Probe::Unavailable {
                    why: format!("running `docker version` failed: {e}"),
                    fix: "check the docker CLI installation".into(),
                }
            }
            Ok(o) if !o.success() || o.stdout.trim().is_empty() => {
                let why = o
                    .stderr
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no answer")
                    .trim()
                    .to_owned();
                let fix = if why.contains("permission denied") {
                    "add your user to the `docker` group (then log in again) or run as root"
                } else {
                    "start the engine (`sudo systemctl start docker` or `dockerd &`), or set DOCKER_HOST"
                };
                return Probe::Unavailable {
                    why: format!("the docker engine is unreachable: {why}"),
                    fix: fix.into(),
                };
            }
            Ok(o) => o.stdout.trim().to_owned(),
        };
        let mut notes = Vec::new();
        if !has_base {
            notes.push(format!(
                "base image {base} missing: build it with `cargo xtask seed-base`"
            ));
        }
        notes.push(dns_note(&version));
        let facts = EngineFacts {
            runtimes: facts.0,
            daemon_id: facts.1,
            version: v.ok(),
        };
        let gvisor = self.gvisor_from(runner, base, facts, false);
        if self.gvisor_cached() {
            if let Some(p) = self.probe_cache.path() {
                notes.push(format!(
                    "runsc: the test container's earlier result is reused (same engine, runtimes and runsc binary; cached in {p}, {PROBE_CACHE_ENV}=off probes every time)"
                ));
            }
        }
        Probe::Ready {
            version,
            notes,
            gvisor,
        }
    }

    fn render(&self, input: LaunchInput<'_>) -> Result<LaunchScript> {
        Ok(self.rendered(input)?.script())
    }

    fn launch(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
    ) -> Result<Box<dyn Running>> {
        self.launch_with_progress(input, runner, &|_, _, _, _| {})
    }

    fn handle(&self, meta: &Metadata, _state: &StateDir) -> Box<dyn Running> {
        let id = Identity::parse(&meta.identity)
            .unwrap_or_else(|_| Identity::parse("invalid").expect("valid slug"));
        let names = names_for(&id);
        Box::new(DockerRunning::new(id, names))
    }

    fn labelled(&self, runner: &dyn CommandRunner) -> Result<Vec<Resource>> {
        self.list_labelled(None, runner)
    }

    fn remove_all(
        &self,
        identity: &Identity,
        keep_home: bool,
        runner: &dyn CommandRunner,
    ) -> Result<()> {
        running::remove(&names_for(identity), keep_home, runner)?;
        // Anything else carrying the label (e.g. from an older naming).
        let leftovers: Vec<Resource> = self
            .labelled(runner)?
            .into_iter()
            .filter(|r| r.identity == identity.as_str())
            .filter(|r| !(keep_home && r.kind == "volume"))
            .collect();
        let mut errors = Vec::new();
        for r in leftovers {
            let spec = match r.kind.as_str() {
                "container" => CommandSpec::new("docker").args(["rm", "--force", &r.name]),
                "network" => CommandSpec::new("docker").args(["network", "rm", &r.name]),
                _ => CommandSpec::new("docker").args(["volume", "rm", "--force", &r.name]),
            };
            if let Err(e) = runner.output(&spec) {
                errors.push((format!("remove {} {}", r.kind, r.name), e));
            }
        }
        bottle_core::launch::into_result(errors)
    }

    fn runtime_choice(
        &self,
        plan: &bottle_core::BottlePlan,
        probe: &Probe,
    ) -> (String, Vec<String>) {
        let (rt, lines) = self.knowing(Some(probe)).runtime_lines(plan);
        (rt.to_owned(), lines)
    }

    fn step_names(&self, input: LaunchInput<'_>, probe: Option<&Probe>) -> Vec<String> {
        self.knowing(probe)
            .rendered(input)
            .map(|r| r.script().steps.into_iter().map(|s| s.name).collect())
            .unwrap_or_default()
    }

    fn launch_observed(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
        probe: Option<&Probe>,
        progress: bottle_core::backend::Progress<'_>,
    ) -> Result<Box<dyn Running>> {
        self.knowing(probe)
            .launch_with_progress(input, runner, progress)
    }

    fn engine_answers(&self, runner: &dyn CommandRunner) -> bool {
        runner
            .output(
                &CommandSpec::new("docker")
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .allow_failure(),
            )
            .is_ok_and(|o| o.success() && !o.stdout.trim().is_empty())
    }

    fn labelled_in_home(
        &self,
        home_root: &camino::Utf8Path,
        runner: &dyn CommandRunner,
    ) -> Result<Vec<Resource>> {
        let home = format!(
            "label={}={}",
            render::LABEL_HOME,
            render::home_label(home_root)
        );
        self.list_labelled(Some(&home), runner)
    }

    fn unused_images(
        &self,
        runner: &dyn CommandRunner,
    ) -> Result<Vec<bottle_core::backend::CachedImage>> {
        Ok(gc::unused_images(runner)?
            .into_iter()
            .map(|i| bottle_core::backend::CachedImage {
                tag: i.tag,
                id: i.id,
                size: i.size,
            })
            .collect())
    }

    fn remove_images(
        &self,
        images: &[bottle_core::backend::CachedImage],
        runner: &dyn CommandRunner,
    ) -> (Vec<String>, Vec<(String, Error)>) {
        let images: Vec<gc::Image> = images
            .iter()
            .map(|i| gc::Image {
                tag: i.tag.clone(),
                id: i.id.clone(),
                size: i.size.clone(),
            })
            .collect();
        gc::remove_images(&images, runner)
    }

    fn images_bytes(&self, runner: &dyn CommandRunner) -> Option<u64> {
        gc::images_bytes(runner)
    }

    fn health_of_all(
        &self,
        runner: &dyn CommandRunner,
    ) -> Option<std::collections::BTreeMap<String, bottle_core::backend::Health>> {
        let fmt = format!("{{{{.Label \"{LABEL_IDENTITY}\"}}}}\t{{{{.Names}}}}\t{{{{.State}}}}");
        let out = runner
            .output(
                &CommandSpec::new("docker")
                    .args([
                        "ps",
                        "--all",
                        "--filter",
                        &format!("label={LABEL_IDENTITY}"),
                    ])
                    .args(["--format", &fmt])
                    .allow_failure(),
            )
            .ok()?;
        if !out.success() {
            return None;
        }
        Some(running::health_from_ps(&out.stdout))
    }
}

impl DockerBackend {
    /// This backend with what `probe` found about gVisor recorded (so a
    /// launch after the preflight's probe does not probe again).
    fn knowing(&self, probe: Option<&Probe>) -> &DockerBackend {
        if let Some(g) = probe.and_then(Probe::gvisor) {
            let mut known = self.gvisor.lock().unwrap();
            if known.as_ref() != Some(g) {
                // not what this backend's own probe found: nobody here
                // ran a test container for it
                *known = Some(g.clone());
                *self.gvisor_source.lock().unwrap() = GvisorSource::Given;
            }
        }
        self
    }

    fn list_labelled(
        &self,
        extra: Option<&str>,
        runner: &dyn CommandRunner,
    ) -> Result<Vec<Resource>> {
        let filter = format!("label={LABEL_IDENTITY}");
        let fmt = format!("{{{{.Names}}}}\t{{{{.Label \"{LABEL_IDENTITY}\"}}}}");
        let nfmt = format!("{{{{.Name}}}}\t{{{{.Label \"{LABEL_IDENTITY}\"}}}}");
        let mut out = Vec::new();
        for (kind, mut args) in [
            ("container", vec!["ps", "--all"]),
            ("network", vec!["network", "ls"]),
            ("volume", vec!["volume", "ls"]),
        ] {
            args.extend(["--filter", &filter]);
            if let Some(e) = extra {
                args.extend(["--filter", e]);
            }
            args.extend(["--format", if kind == "container" { &fmt } else { &nfmt }]);
            let o = runner.output(&CommandSpec::new("docker").args(args))?;
            for line in o.stdout.lines() {
                if let Some((name, id)) = line.split_once('\t') {
                    out.push(Resource {
                        kind: kind.to_owned(),
                        name: name.trim().to_owned(),
                        identity: id.trim().to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// `launch` with a progress callback (step index, total, name, skipped).
    pub fn launch_with_progress(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
        progress: bottle_core::backend::Progress<'_>,
    ) -> Result<Box<dyn Running>> {
        let gvisor = match self.gvisor_known() {
            Some(g) => g,
            None => self.probe_runsc(runner, &input.plan.provider.base_image),
        };
        if input.plan.runtime == Runtime::Runsc && !gvisor.is_available() {
            let why = match gvisor {
                Gvisor::Unavailable { why } => why,
                _ => "not available".into(),
            };
            return Err(Error::Unavailable {
                backend: "docker".into(),
                why: format!("runtime = \"runsc\" but gVisor cannot be used: {why}"),
                fix:
                    "install gVisor (runsc) and register it with dockerd, or use runtime = \"auto\""
                        .into(),
            });
        }
        let rendered = self.rendered(input)?;
        if let Err(e) = launch::execute(&rendered, runner, ready_timeout(), input.state, progress) {
            return Err(self.check_gvisor_after(e, &rendered, runner, input.plan));
        }
        Ok(Box::new(DockerRunning::new(
            input.plan.identity.clone(),
            input.plan.names.clone(),
        )))
    }

    /// A launch whose agent used runsc failed, and no test container of
    /// this backend vouched for runsc (a cached result, or a caller's
    /// probe): probe afresh. If gVisor fails now, say so (the launch fails
    /// closed; the next start's probe sees it unavailable) instead of
    /// leaving a stale "available" behind. Not after an interrupt.
    fn check_gvisor_after(
        &self,
        e: Error,
        rendered: &Rendered,
        runner: &dyn CommandRunner,
        plan: &bottle_core::BottlePlan,
    ) -> Error {
        let source = *self.gvisor_source.lock().unwrap();
        // only a failure of a step on the agent container can be runsc's
        let on_agent = match &e {
            Error::Launch { step, .. } => rendered.steps.iter().any(|s| {
                s.step.name == *step
                    && s.step
                        .run
                        .args
                        .iter()
                        .any(|a| a.contains(&plan.names.agent))
            }),
            _ => false,
        };
        if rendered.runtime != "runsc"
            || source == GvisorSource::TestContainer
            || !on_agent
            || was_interrupted(&e)
        {
            return e;
        }
        let cached = source == GvisorSource::Cache;
        let facts = EngineFacts {
            runtimes: runner.output(&runtimes_spec()),
            daemon_id: runner.output(&daemon_id_spec()).ok(),
            version: runner.output(&version_spec()).ok(),
        };
        let Gvisor::Unavailable { why } =
            self.gvisor_from(runner, &plan.provider.base_image, facts, true)
        else {
            return e;
        };
        let said = if cached {
            "a test container ran under gVisor (runsc) when bottle last probed (a cached result)"
        } else {
            "the caller's probe found gVisor (runsc) available"
        };
        let fix = "run `bottle start` again: its probe now finds gVisor unavailable (`runtime = \"auto\"` then says it uses runc, `runtime = \"runsc\"` refuses), or repair runsc".to_owned();
        match e {
            Error::Launch {
                step,
                source,
                cleanup,
            } => Error::Launch {
                step,
                source: Box::new(Error::Unavailable {
                    backend: "docker".into(),
                    why: format!("{said}, but a fresh test container fails: {why}; the launch failed: {source}"),
                    fix,
                }),
                cleanup,
            },
            other => other,
        }
    }
}

fn was_interrupted(e: &Error) -> bool {
    match e {
        Error::Interrupted { .. } => true,
        Error::Launch { source, .. } => was_interrupted(source),
        _ => false,
    }
}
