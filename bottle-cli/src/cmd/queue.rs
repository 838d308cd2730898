//! The permission queue: `bottle queue`, `approve`, `deny`.

use bottle_core::{Error, Result};

use crate::Cli;

/// `bottle queue` args.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `bottle approve` args.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// Request id (see `bottle queue`).
    pub req: String,
    /// How long the grant lasts (default: the bottle's grant_ttl).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Narrow an egress request to these path globs.
    #[arg(long, num_args = 1..)]
    pub paths: Vec<String>,
    /// Narrow an egress request to these methods.
    #[arg(long, num_args = 1..)]
    pub methods: Vec<String>,
    /// Narrow a git push request to this ref pattern.
    #[arg(long = "ref")]
    pub ref_pattern: Option<String>,
}

/// `bottle deny` args.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// Request id.
    pub req: String,
    /// Reason shown to the agent.
    #[arg(long)]
    pub reason: Option<String>,
}

fn pending() -> Error {
    Error::other(
        "the permission queue is not available in this build yet",
        "see issue 6",
    )
}

/// `bottle queue`.
pub fn queue(_cli: &Cli, _a: &QueueArgs) -> Result<u8> {
    Err(pending())
}
/// `bottle approve`.
pub fn approve(_cli: &Cli, _a: &ApproveArgs) -> Result<u8> {
    Err(pending())
}
/// `bottle deny`.
pub fn deny(_cli: &Cli, _a: &DenyArgs) -> Result<u8> {
    Err(pending())
}
