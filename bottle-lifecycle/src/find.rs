//! Finding an existing bottle: its identity (any unique prefix, docker
//! style), state dir, metadata and the backend that launched it.

use bottle_core::backend::{Backend, Probe, Running};
use bottle_core::state::{Metadata, Phase};
use bottle_core::{Error, Identity, Result, StateDir};

use crate::Lifecycle;

/// A bottle's state, metadata and the backend that launched it.
pub struct Found {
    /// Its identity.
    pub id: Identity,
    /// Its state dir.
    pub state: StateDir,
    /// Its metadata.
    pub meta: Metadata,
    /// The backend named in its metadata.
    pub backend: Box<dyn Backend>,
}

impl Found {
    /// The backend's handle on it.
    pub fn handle(&self) -> Box<dyn Running> {
        self.backend.handle(&self.meta, &self.state)
    }

    /// A stopped bottle has no containers: say so (and how to go on)
    /// before asking the engine for them; `what` says what is missing.
    pub fn refuse_stopped(&self, what: &str) -> Result<()> {
        if self.meta.phase != Phase::Stopped {
            return Ok(());
        }
        Err(Error::other(
            format!("{} is stopped: {what}", self.id),
            format!(
                "`bottle resume {}` relaunches it (`bottle logs {} --audit` shows its decisions)",
                self.id, self.id
            ),
        ))
    }
}

impl Lifecycle<'_> {
    /// The bottle `arg` names: its exact identity or a unique prefix of one
    /// (none is "no such bottle", several list the matches; both usage
    /// errors).
    pub fn identity(&self, arg: &str) -> Result<Identity> {
        let all = self.home.identities()?;
        if let Some(id) = all.iter().find(|i| i.as_str() == arg) {
            return Ok(id.clone());
        }
        let matches: Vec<&Identity> = if arg.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|i| i.as_str().starts_with(arg)).collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NoSuchBottle {
                identity: arg.to_owned(),
            }),
            many => Err(Error::Ambiguous {
                what: "bottle",
                prefix: arg.to_owned(),
                matches: many.iter().map(|i| i.to_string()).collect(),
            }),
        }
    }

    /// The bottle `arg` names, with its metadata and backend.
    pub fn find(&self, arg: &str) -> Result<Found> {
        let id = self.identity(arg)?;
        let state = self.home.state(&id);
        if !state.path().is_dir() {
            return Err(Error::NoSuchBottle {
                identity: id.to_string(),
            });
        }
        let meta = state.read_metadata()?;
        let backend = self.registry.get(&meta.backend)?;
        Ok(Found {
            id,
            state,
            meta,
            backend,
        })
    }

    /// Whether the backend's engine answers (`Backend::engine_answers`, a
    /// cheap question); when it does not, the backend's probe says why and
    /// what to do (`Error::Unavailable`, exit 3) instead of the engine's
    /// raw error or a misleading cleanup report.
    pub fn engine_answers(&self, backend: &dyn Backend) -> Result<()> {
        if backend.engine_answers(self.runner) {
            return Ok(());
        }
        match backend.probe(self.runner) {
            Probe::Unavailable { why, fix } => Err(Error::Unavailable {
                backend: backend.id().into(),
                why,
                fix,
            }),
            Probe::Ready { .. } => Ok(()),
        }
    }
}

/// Whether a pid is alive (signal 0; a zombie is dead).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    exists && !zombie
}
