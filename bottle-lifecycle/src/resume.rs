//! `resume`: relaunch a stopped (or crashed) bottle from its metadata with
//! the same identity, slot, workspace and home volume, the policy files
//! regenerated from the manifests and the operator's approved capabilities
//! applied.

use bottle_core::plan::Prompter;
use bottle_core::state::Phase;
use bottle_core::{Error, Health, Identity, Result};

use crate::{Events, Lifecycle, PlanRequest};

impl Lifecycle<'_> {
    /// Resume the bottle `arg` names; returns its identity.
    pub fn resume(
        &self,
        arg: &str,
        prompter: &dyn Prompter,
        events: &dyn Events,
    ) -> Result<Identity> {
        let f = self.find(arg)?;
        self.engine_answers(&*f.backend)?;
        if matches!(f.handle().health(self.runner)?, Health::Running) {
            return Err(Error::other(
                format!("{} is already running", f.id),
                format!("`bottle attach {}` or `bottle stop {}` first", f.id, f.id),
            ));
        }
        // Whatever a crash left (a half bottle) goes first; the home stays.
        f.backend.remove_all(&f.id, true, self.runner)?;
        let req = PlanRequest {
            agent: f.meta.agent.clone(),
            cwd: f.meta.workspace.clone(),
            backend: Some(f.meta.backend.clone()),
            ..Default::default()
        };
        let mut plan = self.resolve(&req, Some((f.id.clone(), f.meta.slot)), prompter)?;
        let applied =
            bottle_host::prepare::apply_capabilities(&mut plan, f.state.path().as_std_path());
        for c in &applied {
            events.note(&match &c.outcome {
                Ok(set) => format!(
                    "applying approved capability {} ({}): {set}",
                    c.id, c.summary
                ),
                Err(why) => format!(
                    "approved capability {} ({}) is recorded, not applied: {why}",
                    c.id, c.summary
                ),
            });
        }
        let mut meta = f.meta.clone();
        meta.capabilities = applied.into_iter().map(|c| c.summary).collect();
        meta.phase = Phase::Launching;
        meta.owner_pid = Some(std::process::id());
        meta.plan_hash = plan.hash();
        f.state.write_metadata(&meta)?;
        let wiring = self.prepare(&*f.backend, &plan, &f.state)?;
        let result = self.launch(&*f.backend, &plan, &f.state, &wiring, None, events);
        meta.owner_pid = None;
        meta.phase = if result.is_ok() {
            Phase::Running
        } else {
            Phase::Stopped
        };
        f.state.write_metadata(&meta)?;
        result?;
        Ok(f.id)
    }
}
