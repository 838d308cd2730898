//! `bottle start` (owned by the docker-backend work; this is the entry point).

use bottle_core::{Error, Result};

use super::PlanFlags;
use crate::Cli;

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent name.
    pub agent: String,
    #[command(flatten)]
    pub flags: PlanFlags,
    /// Skip the y/N preflight.
    #[arg(long, short)]
    pub yes: bool,
    /// Print the commands that would run (secrets redacted) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not attach the agent's terminal.
    #[arg(long, short)]
    pub detach: bool,
}

/// Run `bottle start`.
pub fn run(_cli: &Cli, _a: &Args) -> Result<u8> {
    Err(Error::other(
        "`bottle start` is not available in this build yet",
        "use `bottle plan` to inspect the plan",
    ))
}
