//! `start`: preview and preflight, then allocate an identity, resolve the
//! plan (asking `?prompt` values), let `bottle-host`'s Prepare fill the
//! state dir, launch on the backend and record the phase. A declined or
//! failed start gives everything back (ARCHITECTURE.md, "Data flow").

use bottle_core::backend::{Backend, LaunchInput, LaunchScript, Probe, Running};
use bottle_core::plan::{PlaceholderPrompt, Prompter};
use bottle_core::state::{Metadata, Phase, METADATA_SCHEMA};
use bottle_core::{BottlePlan, Error, PrepareContext, Result, StateDir, Wiring};

use crate::{Events, Lifecycle, PlanRequest};

/// The plan as `bottle inspect` shows the bottle's limits (secrets
/// redacted), in the state dir.
pub const PLAN_FILE: &str = "plan.json";

/// What `start` left running.
pub enum Started {
    /// A dry run: the commands that would run (secrets redacted); its state
    /// is removed again.
    DryRun {
        /// The rendered commands.
        script: LaunchScript,
    },
    /// A launched bottle.
    Running {
        /// Its plan.
        plan: Box<BottlePlan>,
        /// The backend's handle on it.
        running: Box<dyn Running>,
    },
}

/// Metadata of a launch in `phase`, owned by this process.
pub fn metadata(plan: &BottlePlan, runtime: &str, phase: Phase) -> Metadata {
    Metadata {
        schema_version: METADATA_SCHEMA,
        identity: plan.identity.to_string(),
        agent: plan.agent.clone(),
        bottle: plan.bottle.clone(),
        backend: plan.backend.clone(),
        runtime: runtime.to_owned(),
        plan_hash: plan.hash(),
        images: Default::default(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        workspace: plan.workspace.clone(),
        owner_pid: Some(std::process::id()),
        phase,
        slot: plan.slot,
        capabilities: Vec::new(),
    }
}

impl Lifecycle<'_> {
    /// Start `req`'s agent in a new bottle. `events.preflight` sees the
    /// plan first (with the identity really used) and may decline;
    /// `prompter` answers `?prompt` values (a dry run never asks).
    pub fn start(
        &self,
        req: &PlanRequest,
        dry_run: bool,
        prompter: &dyn Prompter,
        events: &dyn Events,
    ) -> Result<Started> {
        // Preview for the preflight: nothing asked, nothing written.
        let preview = self.resolve(req, None, &PlaceholderPrompt)?;
        let backend = self.registry.get(&preview.backend)?;
        let probe = backend.probe(self.runner);
        if let Probe::Unavailable { why, fix } = &probe {
            return Err(Error::Unavailable {
                backend: backend.id().into(),
                why: why.clone(),
                fix: fix.clone(),
            });
        }
        // Allocate before the preflight so it shows the identity `start`
        // really uses; a declined or failed preflight gives it back.
        let (id, slot) = self.home.allocate(&preview.agent, &preview.bottle)?;
        let state = self.home.state(&id);
        let shown = (|| -> Result<String> {
            let preview = self.resolve(req, Some((id.clone(), slot)), &PlaceholderPrompt)?;
            let (runtime, mut notes) = runtime_notes(&*backend, &preview, &probe);
            notes.extend(self.source_notes(req, &preview));
            events.preflight(&preview, &notes)?;
            Ok(runtime)
        })();
        let runtime = match shown {
            Ok(r) => r,
            Err(e) => {
                let _ = state.remove();
                return Err(e);
            }
        };
        let prompter: &dyn Prompter = if dry_run {
            &PlaceholderPrompt
        } else {
            prompter
        };
        let result = (|| -> Result<Started> {
            let plan = self.resolve(req, Some((id.clone(), slot)), prompter)?;
            state.write_metadata(&metadata(&plan, &runtime, Phase::Launching))?;
            let wiring = self.prepare(&*backend, &plan, &state)?;
            if dry_run {
                let script = backend.render(LaunchInput {
                    plan: &plan,
                    state: &state,
                    wiring: &wiring,
                })?;
                return Ok(Started::DryRun { script });
            }
            let running = self.launch(&*backend, &plan, &state, &wiring, Some(&probe), events)?;
            // the launching record, now running (same `created`: AGE goes on)
            let mut meta = state.read_metadata()?;
            meta.phase = Phase::Running;
            meta.owner_pid = None;
            state.write_metadata(&meta)?;
            Ok(Started::Running {
                plan: Box::new(plan),
                running,
            })
        })();
        match result {
            Ok(Started::DryRun { script }) => {
                let _ = state.remove();
                Ok(Started::DryRun { script })
            }
            Ok(started) => Ok(started),
            Err(e) => {
                // Launch rolled its resources back; the state has nothing
                // to resume (unless the backend kept it on failure).
                if !state.preserved() {
                    let _ = state.remove();
                }
                Err(e)
            }
        }
    }

    /// Prepare the sidecars' state (`bottle_host::prepare`) and return the
    /// wiring; the plan goes to [`PLAN_FILE`] for `bottle inspect`.
    pub fn prepare(
        &self,
        backend: &dyn Backend,
        plan: &BottlePlan,
        state: &StateDir,
    ) -> Result<Wiring> {
        let ctx = PrepareContext {
            state,
            bundle_host: backend.bundle_host(plan),
        };
        let json = serde_json::to_vec_pretty(plan).expect("plan serializes");
        bottle_core::state::atomic_write(&state.path().join(PLAN_FILE), &json, Some(0o600))?;
        bottle_host::prepare::prepare_all(plan, &ctx)
    }

    /// Launch a prepared plan, reporting progress to `events`; `probe` is
    /// the caller's probe when it has one (not asked again).
    pub fn launch(
        &self,
        backend: &dyn Backend,
        plan: &BottlePlan,
        state: &StateDir,
        wiring: &Wiring,
        probe: Option<&Probe>,
        events: &dyn Events,
    ) -> Result<Box<dyn Running>> {
        let input = LaunchInput {
            plan,
            state,
            wiring,
        };
        // Step names let a bar say what is running (the backend reports a
        // step after it finished); plain lines do not need them.
        let names = if events.wants_step_names() {
            backend.step_names(input, probe)
        } else {
            Vec::new()
        };
        events.launch_started(names);
        let progress = |i: usize, total: usize, name: &str, skipped: bool| {
            events.step_done(i, total, name, skipped)
        };
        let result = backend.launch_observed(input, self.runner, probe, &progress);
        events.launch_finished();
        result
    }
}

/// Runtime line(s) for the preflight, and the runtime's name.
fn runtime_notes(backend: &dyn Backend, plan: &BottlePlan, probe: &Probe) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    if let Probe::Ready {
        version, notes: n, ..
    } = probe
    {
        notes.push(format!("{} {version}", backend.id()));
        notes.extend(n.iter().cloned());
    }
    let (runtime, lines) = backend.runtime_choice(plan, probe);
    notes.extend(lines);
    (runtime, notes)
}
