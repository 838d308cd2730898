//! `bottle completions <shell>` (static), and the dynamic completion of
//! agent names, bottle ids and request ids: `source <(COMPLETE=bash bottle)`
//! (clap_complete's `CompleteEnv`, registered in `main`). Dynamic candidates
//! come from `$BOTTLE_HOME` (else `~/.bottle`) and the current directory's
//! `.bottle/agents`.

use bottle_core::{Home, Loader};
use camino::Utf8PathBuf;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell. For completion of agent names,
    /// bottle ids and request ids use the dynamic form instead:
    /// `source <(COMPLETE=bash bottle)`.
    pub shell: clap_complete::Shell,
}

/// Print completions for the shell on stdout (generated into memory first:
/// `clap_complete` panics when its writer fails, e.g. `| true`).
pub fn run(a: &Args) -> bottle_core::Result<u8> {
    let mut cmd = crate::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "bottle", &mut buf);
    crate::ui::out(&String::from_utf8_lossy(&buf));
    Ok(0)
}

fn home() -> Option<Home> {
    Home::discover(None).ok()
}

/// Agent names (home and the current directory's `.bottle/agents`).
pub fn agents() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let Some(home) = home() else {
            return Vec::new();
        };
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|p| Utf8PathBuf::from_path_buf(p).ok());
        Loader::new(home, cwd)
            .agent_names()
            .into_iter()
            .map(CompletionCandidate::new)
            .collect()
    })
}

/// Bottle identities, with their agent and phase as help.
pub fn bottles() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let Some(home) = home() else {
            return Vec::new();
        };
        home.identities()
            .unwrap_or_default()
            .into_iter()
            .map(|id| {
                let help = home
                    .state(&id)
                    .read_metadata()
                    .ok()
                    .map(|m| format!("{} {:?}", m.agent, m.phase).to_lowercase());
                CompletionCandidate::new(id.to_string()).help(help.map(Into::into))
            })
            .collect()
    })
}

/// Pending request ids, with what they ask for as help.
pub fn requests() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let Some(home) = home() else {
            return Vec::new();
        };
        super::ids::all_requests(&home)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, r)| r.status == bottle_host::supervise::Status::Pending)
            .map(|(_, r)| {
                CompletionCandidate::new(r.id.clone()).help(Some(r.kind.summary().into()))
            })
            .collect()
    })
}
