//! `stop`: stop a bottle's agent and sidecars, keeping its state and home
//! volume; the `?prompt` answers and host-variable env values the bundle
//! held are forgotten (`resume` asks / reads them again).

use bottle_core::state::Phase;
use bottle_core::{Identity, Result, StateDir};

use crate::Lifecycle;

impl Lifecycle<'_> {
    /// Stop the bottle `arg` names; returns its identity.
    pub fn stop(&self, arg: &str) -> Result<Identity> {
        let f = self.find(arg)?;
        self.engine_answers(&*f.backend)?;
        f.handle().stop(self.runner)?;
        forget_env_secrets(&f.state);
        let mut meta = f.meta;
        meta.phase = Phase::Stopped;
        meta.owner_pid = None;
        f.state.write_metadata(&meta)?;
        Ok(f.id)
    }
}

/// A stopped bottle keeps no `?prompt` answer or host-variable env value:
/// only the bundle held them, for DLP.
fn forget_env_secrets(state: &StateDir) {
    if let Ok(rd) = std::fs::read_dir(state.secrets_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("env-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
