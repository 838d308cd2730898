//! `bottle gc`: remove what dead bottles left behind — resources labelled
//! with this home whose state is gone or whose launcher died mid-launch,
//! state dirs of launches that never finished — and, with `--images`,
//! bottle images no container uses.
//!
//! A backend that some bottle of this home uses but whose engine does not
//! answer fails the command (exit 3) with the reason and the fix: "cleaned
//! 0" would be a lie.

use bottle_core::Result;
use bottle_lifecycle::GcOptions;

use crate::events::Term;
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

/// `bottle gc`.
pub fn run(cli: &Cli, a: &GcArgs) -> Result<u8> {
    let opts = GcOptions {
        dry_run: a.dry_run,
        images: a.images,
        backend: cli.backend.clone(),
    };
    super::lifecycle(cli)?.gc(&opts, &Term::new(cli.quiet))?;
    Ok(0)
}
