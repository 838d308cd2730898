//! `rm`: remove everything of a bottle, its state included. Asking first
//! about a running bottle's unsaved work is the caller's (it knows whether
//! there is a terminal).

use bottle_core::state::Phase;
use bottle_core::{Error, Identity, Result};

use crate::Lifecycle;

impl Lifecycle<'_> {
    /// Whether the bottle `id` was last recorded running (its home volume
    /// may hold work nobody saved).
    pub fn recorded_running(&self, id: &Identity) -> bool {
        self.home
            .state(id)
            .read_metadata()
            .is_ok_and(|m| m.phase == Phase::Running)
    }

    /// Remove the bottle `arg` names: its resources on its backend, then
    /// its state dir. Returns its identity.
    pub fn rm(&self, arg: &str) -> Result<Identity> {
        let id = self.identity(arg)?;
        let state = self.home.state(&id);
        if !state.path().is_dir() {
            return Err(Error::NoSuchBottle {
                identity: id.to_string(),
            });
        }
        let backend_name = state
            .read_metadata()
            .map(|m| m.backend)
            .unwrap_or_else(|_| bottle_core::manifest::DEFAULT_BACKEND.into());
        // A backend this build left out cannot hold anything to remove.
        if let Ok(b) = self.registry.get(&backend_name) {
            self.engine_answers(&*b)?;
            b.remove_all(&id, false, self.runner)?;
        }
        state.remove()?;
        Ok(id)
    }
}
