//! `bottle gc`: remove what dead bottles left behind — resources labelled
//! with this home whose state is gone or whose launcher died mid-launch,
//! state dirs of launches that never finished — and, with `--images`,
//! bottle images no container uses.
//!
//! A backend that some bottle of this home uses but whose engine does not
//! answer fails the command (exit 3) with the reason and the fix: "cleaned
//! 0" would be a lie.

use std::collections::BTreeSet;

use bottle_core::backend::Backend;
use bottle_core::state::Phase;
use bottle_core::{DuctRunner, Error, Home, Identity, Result, StateDir};

use super::lifecycle::pid_alive;
use crate::Cli;

/// `bottle gc` args.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Only print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove bottle images (bottle-sidecar, bottle-ws, bottle-agent-*)
    /// that no container uses; they are rebuilt on the next start/resume.
    #[arg(long)]
    pub images: bool,
}

/// Why gc removes an identity's resources, or `None` to keep them.
fn gc_reason(home: &Home, id: &str) -> Option<String> {
    let Ok(ident) = Identity::parse(id) else {
        return Some("unparseable identity".into());
    };
    let state = home.state(&ident);
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

/// Resources of this home (where the backend labels the home; else all).
fn labelled_here(backend: &dyn Backend, home: &Home) -> Result<Vec<bottle_core::Resource>> {
    backend.labelled_in_home(home.root(), &DuctRunner)
}

/// Backends some bottle of this home (or `--backend`) names.
fn needed_backends(cli: &Cli, home: &Home) -> Result<BTreeSet<String>> {
    let mut needed: BTreeSet<String> = home
        .identities()?
        .iter()
        .filter_map(|id| home.state(id).read_metadata().ok())
        .map(|m| m.backend)
        .collect();
    needed.extend(cli.backend.clone());
    Ok(needed)
}

/// `bottle gc`.
pub fn run(cli: &Cli, a: &GcArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let needed = needed_backends(cli, &home)?;
    let verb = if a.dry_run { "would remove" } else { "remove" };
    let mut removed = 0usize;
    let mut listed = 0usize;
    let mut problems = Vec::new();
    let mut unreachable = None;
    let mut first_unavailable = None;
    let mut any_ready = false;
    for entry in crate::registry::BACKENDS {
        let Some(make) = entry.make else { continue };
        let backend = make();
        if let bottle_core::Probe::Unavailable { why, fix } = backend.probe(&DuctRunner) {
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
        let resources = match labelled_here(&*backend, &home) {
            Ok(r) => r,
            Err(e) => {
                problems.push((format!("list {} resources", entry.name), e));
                continue;
            }
        };
        let ids: BTreeSet<String> = resources.iter().map(|r| r.identity.clone()).collect();
        for id in ids {
            let Some(why) = gc_reason(&home, &id) else {
                continue;
            };
            for r in resources.iter().filter(|r| r.identity == id) {
                listed += 1;
                crate::ui::out(&format!("{verb} {} {} ({why})\n", r.kind, r.name));
            }
            if a.dry_run {
                continue;
            }
            let Ok(ident) = Identity::parse(&id) else {
                continue;
            };
            match backend.remove_all(&ident, false, &DuctRunner) {
                Ok(()) => removed += 1,
                Err(e) => problems.push((format!("remove {id}"), e)),
            }
        }
        listed += images(&*backend, cli, a, &mut problems);
    }
    // State dirs of launches that died before creating anything.
    for id in home.identities()? {
        let state = home.state(&id);
        if state.preserved() {
            continue;
        }
        let dead = match state.read_metadata() {
            Ok(m) => m.phase == Phase::Launching && !m.owner_pid.is_some_and(pid_alive),
            Err(_) => !state.metadata_path().exists() && state.slot().is_some() && stale(&state),
        };
        if dead {
            listed += 1;
            crate::ui::out(&format!("{verb} state {id} (launch never finished)\n"));
            if !a.dry_run {
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
    if !cli.quiet {
        if listed == 0 {
            eprintln!("gc: nothing to remove");
        } else if !a.dry_run {
            eprintln!("gc: cleaned {removed} bottle(s)");
        }
    }
    Ok(0)
}

/// List (and unless `--dry-run`, remove) bottle images no container uses;
/// without `--images` only say how many there are. Returns how many lines
/// it listed.
fn images(
    backend: &dyn Backend,
    cli: &Cli,
    a: &GcArgs,
    problems: &mut Vec<(String, Error)>,
) -> usize {
    let unused = match backend.unused_images(&DuctRunner) {
        Ok(u) => u,
        Err(e) => {
            problems.push(("list bottle images".into(), e));
            return 0;
        }
    };
    if unused.is_empty() {
        return 0;
    }
    if !a.images {
        if !cli.quiet {
            eprintln!(
                "gc: {} bottle image(s) no container uses; `bottle gc --images` removes them (rebuilt on the next start)",
                unused.len()
            );
        }
        return 0;
    }
    for i in &unused {
        crate::ui::out(&format!(
            "{} image {} ({}, no container uses it)\n",
            if a.dry_run { "would remove" } else { "remove" },
            i.tag,
            i.size
        ));
    }
    if a.dry_run {
        return unused.len();
    }
    let before = backend.images_bytes(&DuctRunner);
    let (removed, errors) = backend.remove_images(&unused, &DuctRunner);
    let after = backend.images_bytes(&DuctRunner);
    problems.extend(errors);
    if !cli.quiet {
        let freed = match (before, after) {
            (Some(b), Some(a)) => format!(", {} freed", humansize(b.saturating_sub(a))),
            _ => String::new(),
        };
        eprintln!("gc: removed {} image(s){freed}", removed.len());
    }
    unused.len()
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
