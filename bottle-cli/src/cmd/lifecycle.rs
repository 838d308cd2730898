//! Lifecycle commands of existing bottles (owned by the docker-backend work).

use bottle_core::{Error, Result};

use crate::Cli;

/// An identity argument.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Bottle identity (see `bottle ls`).
    pub id: String,
}

/// `bottle exec` args.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Bottle identity.
    pub id: String,
    /// Command and arguments (after `--`).
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// `bottle ls` args.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `bottle logs` args.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Bottle identity.
    pub id: String,
    /// A sidecar's logs: egress, git-gate or supervise.
    #[arg(long)]
    pub sidecar: Option<String>,
    /// Print the JSONL decision log.
    #[arg(long)]
    pub audit: bool,
    /// Keep following.
    #[arg(long, short)]
    pub follow: bool,
}

/// `bottle gc` args.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Only print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

fn pending(cmd: &str) -> Error {
    Error::other(
        format!("`bottle {cmd}` is not available in this build yet"),
        "use `bottle plan` to inspect a plan",
    )
}

/// `bottle ls`.
pub fn ls(_cli: &Cli, _a: &LsArgs) -> Result<u8> {
    Err(pending("ls"))
}
/// `bottle attach`.
pub fn attach(_cli: &Cli, _a: &IdArgs) -> Result<u8> {
    Err(pending("attach"))
}
/// `bottle exec`.
pub fn exec(_cli: &Cli, _a: &ExecArgs) -> Result<u8> {
    Err(pending("exec"))
}
/// `bottle logs`.
pub fn logs(_cli: &Cli, _a: &LogsArgs) -> Result<u8> {
    Err(pending("logs"))
}
/// `bottle stop`.
pub fn stop(_cli: &Cli, _a: &IdArgs) -> Result<u8> {
    Err(pending("stop"))
}
/// `bottle resume`.
pub fn resume(_cli: &Cli, _a: &IdArgs) -> Result<u8> {
    Err(pending("resume"))
}
/// `bottle rm`.
pub fn rm(_cli: &Cli, _a: &IdArgs) -> Result<u8> {
    Err(pending("rm"))
}
/// `bottle gc`.
pub fn gc(_cli: &Cli, _a: &GcArgs) -> Result<u8> {
    Err(pending("gc"))
}
