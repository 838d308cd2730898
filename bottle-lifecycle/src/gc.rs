//! `gc`: remove what dead bottles left behind — resources labelled with
//! this home whose state is gone or whose launcher died mid-launch, state
//! dirs of launches that never finished — and, when asked, bottle images
//! no container uses.
//!
//! A backend that some bottle of this home uses but whose engine does not
//! answer fails gc (`Error::Unavailable`) with the reason and the fix:
//! "cleaned 0" would be a lie.

use std::collections::BTreeSet;

use bottle_core::backend::Backend;
use bottle_core::state::Phase;
use bottle_core::{Error, Identity, Probe, Result, StateDir};

use crate::{pid_alive, Events, Lifecycle};

/// What gc may do.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Only say what would be removed.
    pub dry_run: bool,
    /// Also remove bottle images no container uses.
    pub images: bool,
    /// A backend to check even when no bottle of this home names it.
    pub backend: Option<String>,
}

/// What gc did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOutcome {
    /// Bottles whose resources were removed.
    pub removed: usize,
    /// Lines listed (resources, state dirs, images).
    pub listed: usize,
}

impl Lifecycle<'_> {
    /// Collect the garbage; each removal (or would-be removal) is a line to
    /// `events`, the summary a note.
    pub fn gc(&self, opts: &GcOptions, events: &dyn Events) -> Result<GcOutcome> {
        let needed = self.needed_backends(opts)?;
        let verb = if opts.dry_run {
            "would remove"
        } else {
            "remove"
        };
        let mut out = GcOutcome::default();
        let mut problems = Vec::new();
        let mut unreachable = None;
        let mut first_unavailable = None;
        let mut any_ready = false;
        for entry in self.registry.entries() {
            let Some(make) = entry.make else { continue };
            let backend = make();
            if let Probe::Unavailable { why, fix } = backend.probe(self.runner) {
                let e = Error::Unavailable {
                    backend: entry.name.into(),
                    why,
                    fix,
                };
                if needed.contains(entry.name) && unreachable.is_none() {
                    unreachable = Some(e);
                } else if first_unavailable.is_none() {
                    first_unavailable = Some(e);
                }
                continue;
            }
            any_ready = true;
            let resources = match backend.labelled_in_home(self.home.root(), self.runner) {
                Ok(r) => r,
                Err(e) => {
                    problems.push((format!("list {} resources", entry.name), e));
                    continue;
                }
            };
            let ids: BTreeSet<String> = resources.iter().map(|r| r.identity.clone()).collect();
            for id in ids {
                let Some(why) = self.gc_reason(&id) else {
                    continue;
                };
                for r in resources.iter().filter(|r| r.identity == id) {
                    out.listed += 1;
                    events.line(&format!("{verb} {} {} ({why})", r.kind, r.name));
                }
                if opts.dry_run {
                    continue;
                }
                let Ok(ident) = Identity::parse(&id) else {
                    continue;
                };
                match backend.remove_all(&ident, false, self.runner) {
                    Ok(()) => out.removed += 1,
                    Err(e) => problems.push((format!("remove {id}"), e)),
                }
            }
            out.listed += self.gc_images(&*backend, opts, events, &mut problems);
        }
        // State dirs of launches that died before creating anything.
        for id in self.home.identities()? {
            let state = self.home.state(&id);
            if state.preserved() {
                continue;
            }
            let dead = match state.read_metadata() {
                Ok(m) => m.phase == Phase::Launching && !m.owner_pid.is_some_and(pid_alive),
                Err(_) => {
                    !state.metadata_path().exists() && state.slot().is_some() && stale(&state)
                }
            };
            if dead {
                out.listed += 1;
                events.line(&format!("{verb} state {id} (launch never finished)"));
                if !opts.dry_run {
                    state.remove()?;
                }
            }
        }
        if let Some(e) = unreachable {
            return Err(e);
        }
        if !any_ready {
            // nothing could be checked at all: say why the first one is out
            if let Some(e) = first_unavailable {
                return Err(e);
            }
        }
        if !problems.is_empty() {
            return Err(Error::Teardown(problems));
        }
        if out.listed == 0 {
            events.note("gc: nothing to remove");
        } else if !opts.dry_run {
            events.note(&format!("gc: cleaned {} bottle(s)", out.removed));
        }
        Ok(out)
    }

    /// Backends some bottle of this home (or the options) names.
    fn needed_backends(&self, opts: &GcOptions) -> Result<BTreeSet<String>> {
        let mut needed: BTreeSet<String> = self
            .home
            .identities()?
            .iter()
            .filter_map(|id| self.home.state(id).read_metadata().ok())
            .map(|m| m.backend)
            .collect();
        needed.extend(opts.backend.clone());
        Ok(needed)
    }

    /// Why gc removes an identity's resources, or `None` to keep them.
    fn gc_reason(&self, id: &str) -> Option<String> {
        let Ok(ident) = Identity::parse(id) else {
            return Some("unparseable identity".into());
        };
        let state = self.home.state(&ident);
        if !state.path().is_dir() {
            return Some("its state is gone".into());
        }
        if state.preserved() {
            return None;
        }
        match state.read_metadata() {
            Err(_) => Some("its metadata is unreadable".into()),
            Ok(m) if m.phase == Phase::Launching && !m.owner_pid.is_some_and(pid_alive) => {
                Some("its launcher died mid-launch".into())
            }
            Ok(_) => None,
        }
    }

    /// List (and unless a dry run, remove) bottle images no container
    /// uses; without `images` only say how many there are. Returns how
    /// many lines it listed.
    fn gc_images(
        &self,
        backend: &dyn Backend,
        opts: &GcOptions,
        events: &dyn Events,
        problems: &mut Vec<(String, Error)>,
    ) -> usize {
        let unused = match backend.unused_images(self.runner) {
            Ok(u) => u,
            Err(e) => {
                problems.push(("list bottle images".into(), e));
                return 0;
            }
        };
        if unused.is_empty() {
            return 0;
        }
        if !opts.images {
            events.note(&format!(
                "gc: {} bottle image(s) no container uses; `bottle gc --images` removes them (rebuilt on the next start)",
                unused.len()
            ));
            return 0;
        }
        for i in &unused {
            events.line(&format!(
                "{} image {} ({}, no container uses it)",
                if opts.dry_run {
                    "would remove"
                } else {
                    "remove"
                },
                i.tag,
                i.size
            ));
        }
        if opts.dry_run {
            return unused.len();
        }
        let before = backend.images_bytes(self.runner);
        let (removed, errors) = backend.remove_images(&unused, self.runner);
        let after = backend.images_bytes(self.runner);
        problems.extend(errors);
        let freed = match (before, after) {
            (Some(b), Some(a)) => format!(", {} freed", humansize(b.saturating_sub(a))),
            _ => String::new(),
        };
        events.note(&format!("gc: removed {} image(s){freed}", removed.len()));
        unused.len()
    }
}

/// Bytes as docker prints them (decimal units).
fn humansize(b: u64) -> String {
    let units = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (u, m) in units {
        if b as f64 >= m {
            return format!("{:.1} {u}", b as f64 / m);
        }
    }
    format!("{b} B")
}

/// A state dir without metadata older than a minute (an allocation whose
/// `start` died before writing anything).
fn stale(state: &StateDir) -> bool {
    std::fs::metadata(state.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|d| d.as_secs() > 60)
}

#[cfg(test)]
mod tests {
    use super::humansize;

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(humansize(999), "999 B");
        assert_eq!(humansize(1_500), "1.5 kB");
        assert_eq!(humansize(2_000_000_000), "2.0 GB");
    }
}
