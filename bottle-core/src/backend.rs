//! The backend seam: where an agent runs.
//!
//! A backend probes the host, renders a plan to the exact commands it will
//! run (pure, snapshot-tested), launches them with LIFO rollback, and finds
//! and removes what it made through the `dev.bottle.identity` label. Backends
//! depend on this crate only, never on each other or on the CLI.

use std::fmt;

use serde::Serialize;

use crate::command::{CommandRunner, CommandSpec};
use crate::error::Result;
use crate::plan::{BottlePlan, Identity};
use crate::prepare::Wiring;
use crate::state::{Metadata, StateDir};

/// Whether the agent can run under gVisor (runsc), as a probe found it.
/// Decisions (`runtime = "auto"`) read this, never a note's wording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Gvisor {
    /// The backend has no such choice (a micro-VM is its own kernel).
    NotApplicable,
    /// A container ran under runsc during the probe.
    Available,
    /// Not usable here.
    Unavailable {
        /// Why (not registered, or the test container failed and how).
        why: String,
    },
}

impl Gvisor {
    /// Usable?
    pub fn is_available(&self) -> bool {
        matches!(self, Gvisor::Available)
    }

    /// The line `check` and the preflight show (none when not applicable).
    pub fn note(&self) -> Option<String> {
        match self {
            Gvisor::NotApplicable => None,
            Gvisor::Available => {
                Some("gVisor (runsc): available (a test container ran under it)".into())
            }
            Gvisor::Unavailable { why } => Some(format!(
                "gVisor (runsc): unavailable ({why}); agents run with runc"
            )),
        }
    }
}

/// Whether a backend can be used on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Probe {
    /// Usable.
    Ready {
        /// Version of the engine/CLI.
        version: String,
        /// Extra facts and warnings, for people.
        notes: Vec<String>,
        /// Whether gVisor can be used (typed: what `runtime = "auto"` reads).
        gvisor: Gvisor,
    },
    /// Not usable.
    Unavailable {
        /// Why.
        why: String,
        /// How to fix it.
        fix: String,
    },
}

impl Probe {
    /// Ready?
    pub fn is_ready(&self) -> bool {
        matches!(self, Probe::Ready { .. })
    }

    /// What the probe found about gVisor (`None` when unavailable).
    pub fn gvisor(&self) -> Option<&Gvisor> {
        match self {
            Probe::Ready { gvisor, .. } => Some(gvisor),
            Probe::Unavailable { .. } => None,
        }
    }
}

/// One launch step: a command and the command that undoes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Short name ("create internal network").
    pub name: String,
    /// What to run.
    pub run: CommandSpec,
    /// How to undo it (pushed on the teardown stack once `run` succeeded).
    pub undo: Option<CommandSpec>,
}

/// Everything a backend will run for one plan, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LaunchScript {
    /// Steps in launch order.
    pub steps: Vec<Step>,
}

impl fmt::Display for LaunchScript {
    /// One block per step: `# name`, the command, and `#   undo: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "# {}. {}", i + 1, s.name)?;
            writeln!(f, "{}", s.run)?;
            if let Some(u) = &s.undo {
                writeln!(f, "#   undo: {u}")?;
            }
        }
        Ok(())
    }
}

/// State of a bottle as its backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Agent and bundle up.
    Running,
    /// Agent up but bundle down (no network at all), or the reverse.
    Degraded,
    /// Nothing running.
    Stopped,
}

/// A resource a backend created (found by label for gc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    /// `container`, `network`, `volume`, `vm`, `alias`…
    pub kind: String,
    /// Its name/id.
    pub name: String,
    /// The identity label on it.
    pub identity: String,
}

/// What a backend needs to launch: the plan, its state dir and the sidecar
/// wiring the `Prepare` impls returned.
#[derive(Debug, Clone, Copy)]
pub struct LaunchInput<'a> {
    /// The plan.
    pub plan: &'a BottlePlan,
    /// Its state dir.
    pub state: &'a StateDir,
    /// Sidecar wiring.
    pub wiring: &'a Wiring,
}

/// Which part of the agent's output [`Running::logs`] prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep printing new output until interrupted or the agent stops.
    pub follow: bool,
    /// Only the last `n` lines.
    pub tail: Option<usize>,
    /// Only output since this instant (RFC 3339, UTC).
    pub since: Option<String>,
}

/// A handle to a launched (or existing) bottle.
pub trait Running: Send {
    /// The identity.
    fn identity(&self) -> &Identity;
    /// Run a command in the agent with the terminal attached; exit code.
    fn exec(&self, cmd: &[String], runner: &dyn CommandRunner) -> Result<i32>;
    /// Run a command in the agent and capture its output.
    fn exec_output(
        &self,
        cmd: &[String],
        runner: &dyn CommandRunner,
    ) -> Result<crate::command::Output>;
    /// Attach the agent's terminal; exit code (0 after a detach).
    fn attach(&self, runner: &dyn CommandRunner) -> Result<i32>;
    /// The keys that detach from [`Running::attach`] leaving the agent
    /// running (e.g. `Ctrl-P Ctrl-Q`), if the backend has any.
    fn detach_keys(&self) -> Option<&'static str> {
        None
    }
    /// Print the agent's output (the sidecars' logs are a file in the state
    /// dir, see `bottle logs --sidecar`); exit code.
    fn logs(&self, opts: &LogOptions, runner: &dyn CommandRunner) -> Result<i32>;
    /// Health.
    fn health(&self, runner: &dyn CommandRunner) -> Result<Health>;
    /// Stop and remove every resource but the state and the home volume.
    /// Safe to call twice.
    fn stop(&self, runner: &dyn CommandRunner) -> Result<()>;

    /// Whether the agent runs now (what `bottle cp/diff/export` need);
    /// an error when this backend cannot move files in or out.
    fn agent_running(&self, runner: &dyn CommandRunner) -> Result<bool> {
        let _ = runner;
        Err(no_file_access())
    }
    /// Copy `guest` (a file or directory in the agent) to `host`.
    fn copy_out(
        &self,
        guest: &str,
        host: &camino::Utf8Path,
        runner: &dyn CommandRunner,
    ) -> Result<()> {
        let _ = (guest, host, runner);
        Err(no_file_access())
    }
    /// Unpack a tar (paths relative to `/`, owners as the archive says,
    /// see [`crate::tar`]) into the agent.
    fn copy_in(&self, tar: Vec<u8>, runner: &dyn CommandRunner) -> Result<()> {
        let _ = (tar, runner);
        Err(no_file_access())
    }
    /// Copy `guest` as it was when the bottle started (from the agent's
    /// image, not the running agent) to `host`; an error when it was not
    /// there.
    fn copy_out_baseline(
        &self,
        guest: &str,
        host: &camino::Utf8Path,
        runner: &dyn CommandRunner,
    ) -> Result<()> {
        let _ = (guest, host, runner);
        Err(no_file_access())
    }
}

fn no_file_access() -> crate::Error {
    crate::Error::other(
        "this backend cannot copy files in or out of a bottle yet (`bottle cp`, `diff`, `export`)",
        "`bottle exec <id> -- ...` reaches the agent",
    )
}

/// A launch step finished: (step index from 0, total, name, skipped), in
/// step order (the observer of `bottle_core::launch::Launch::run`).
pub type Progress<'a> = &'a dyn Fn(usize, usize, &str, bool);

/// An image a backend built that nothing uses now (`bottle gc --images`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// `repository:tag`.
    pub tag: String,
    /// The engine's id for it.
    pub id: String,
    /// Size as the engine prints it.
    pub size: String,
}

/// A place agents run.
///
/// The CLI knows backends only through this trait and the registry
/// (ARCHITECTURE.md "Adding a backend"): what differs between them is a
/// method here, never a test of [`Backend::id`].
pub trait Backend: Send + Sync {
    /// Stable id (`docker`, `smolmachines`).
    fn id(&self) -> &'static str;
    /// Can it run here? Never fails: an error is an `Unavailable`.
    fn probe(&self, runner: &dyn CommandRunner) -> Probe;
    /// Host name or IP the agent uses to reach the bundle (goes into
    /// [`crate::PrepareContext::bundle_host`]). Docker: the network alias.
    fn bundle_host(&self, plan: &BottlePlan) -> String {
        let _ = plan;
        "bundle".to_owned()
    }
    /// The exact commands `launch` runs, pure.
    fn render(&self, input: LaunchInput<'_>) -> Result<LaunchScript>;
    /// Build images, create resources, start the bundle then the agent.
    /// On failure every created resource is removed (LIFO) before returning.
    fn launch(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
    ) -> Result<Box<dyn Running>>;
    /// A handle to an existing bottle from its metadata.
    fn handle(&self, meta: &Metadata, state: &StateDir) -> Box<dyn Running>;
    /// Every resource carrying the identity label (for `gc`).
    fn labelled(&self, runner: &dyn CommandRunner) -> Result<Vec<Resource>>;
    /// Remove everything of one identity; safe to call twice and after a
    /// crash. `keep_home` keeps the home volume (stop vs rm).
    fn remove_all(
        &self,
        identity: &Identity,
        keep_home: bool,
        runner: &dyn CommandRunner,
    ) -> Result<()>;

    /// The runtime the agent gets (`runc`, `runsc`, `vm`…) and the
    /// preflight's lines about that choice, given what `probe` found
    /// (typed facts such as [`Probe::gvisor`], never its wording).
    fn runtime_choice(&self, plan: &BottlePlan, probe: &Probe) -> (String, Vec<String>) {
        let _ = (plan, probe);
        (self.id().to_owned(), Vec::new())
    }
    /// The names of the steps `launch` will run, in order (for progress);
    /// `probe`: what the caller's probe found, if it probed.
    fn step_names(&self, input: LaunchInput<'_>, probe: Option<&Probe>) -> Vec<String> {
        let _ = probe;
        self.render(input)
            .map(|s| s.steps.into_iter().map(|s| s.name).collect())
            .unwrap_or_default()
    }
    /// [`Backend::launch`] knowing what the caller's `probe` found (no
    /// second probe; `None`: the launch finds out what it needs itself),
    /// reporting each finished step to `progress`.
    fn launch_observed(
        &self,
        input: LaunchInput<'_>,
        runner: &dyn CommandRunner,
        probe: Option<&Probe>,
        progress: Progress<'_>,
    ) -> Result<Box<dyn Running>> {
        let _ = (probe, progress);
        self.launch(input, runner)
    }
    /// Whether the engine answers right now: cheap, no probe (a backend
    /// without an engine of its own: always).
    fn engine_answers(&self, runner: &dyn CommandRunner) -> bool {
        let _ = runner;
        true
    }
    /// Resources of the bottles started from the home at `home_root`
    /// (what that home's `gc` may collect); default: every labelled one.
    fn labelled_in_home(
        &self,
        home_root: &camino::Utf8Path,
        runner: &dyn CommandRunner,
    ) -> Result<Vec<Resource>> {
        let _ = home_root;
        self.labelled(runner)
    }
    /// Images this backend built that nothing uses now.
    fn unused_images(&self, runner: &dyn CommandRunner) -> Result<Vec<CachedImage>> {
        let _ = runner;
        Ok(Vec::new())
    }
    /// Remove `images` (never one in use); (tags removed, failures).
    fn remove_images(
        &self,
        images: &[CachedImage],
        runner: &dyn CommandRunner,
    ) -> (Vec<String>, Vec<(String, crate::Error)>) {
        let _ = (images, runner);
        (Vec::new(), Vec::new())
    }
    /// The health of every bottle this backend runs, by identity, in one
    /// question to the engine (for `bottle ls`); `None`: ask each
    /// [`Running::health`] instead. A bottle missing from the map has
    /// nothing running ([`Health::Stopped`]).
    fn health_of_all(
        &self,
        runner: &dyn CommandRunner,
    ) -> Option<std::collections::BTreeMap<String, Health>> {
        let _ = runner;
        None
    }
    /// Bytes the engine's images take, if it says.
    fn images_bytes(&self, runner: &dyn CommandRunner) -> Option<u64> {
        let _ = runner;
        None
    }
}
