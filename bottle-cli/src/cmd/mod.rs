//! Subcommands. Each module owns its clap args and its `run`.

use bottle_core::manifest::Runtime;
use bottle_core::{DuctRunner, Error, Home, Result};
use bottle_lifecycle::{Lifecycle, PlanRequest};
use camino::Utf8PathBuf;
use clap::Subcommand;

use crate::Cli;

pub mod check;
pub mod completions;
pub mod dashboard;
pub mod gc;
pub mod ids;
pub mod init;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod plan;
pub mod queue;
pub mod start;
pub mod work;

/// Every `bottle` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create $BOTTLE_HOME with an example bottle and a `demo` agent (never overwrites).
    Init(init::Args),
    /// Validate every manifest and probe every backend.
    Check(check::Args),
    /// Print the resolved plan of an agent (no side effects).
    Plan(plan::Args),
    /// Start an agent in a new bottle.
    Start(start::Args),
    /// List bottles.
    Ls(lifecycle::LsArgs),
    /// Attach to an agent's terminal.
    Attach(lifecycle::IdArgs),
    /// Run one command in an agent.
    Exec(lifecycle::ExecArgs),
    /// Agent or sidecar logs, or the audit log.
    Logs(logs::LogsArgs),
    /// The policy a bottle runs under now: routes, grants with expiry, push rules, limits.
    Inspect(inspect::InspectArgs),
    /// Stop a bottle (keeps its state and home volume).
    Stop(lifecycle::IdArgs),
    /// Relaunch a stopped bottle from its state.
    Resume(lifecycle::IdArgs),
    /// Remove a bottle's state and home volume (a running one: asks, or -f).
    Rm(work::RmArgs),
    /// Copy files out of (`<id>:<path> <host path>`) or into a running bottle.
    Cp(work::CpArgs),
    /// The workspace's changes since the bottle started, as a patch.
    Diff(work::DiffArgs),
    /// The agent's new commits as a git bundle or patch series (DLP-scanned).
    Export(work::ExportArgs),
    /// Remove resources whose bottle is gone or whose launcher died.
    Gc(gc::GcArgs),
    /// List permission requests.
    Queue(queue::QueueArgs),
    /// Approve a permission request (optionally narrowed, with a TTL).
    Approve(queue::ApproveArgs),
    /// Deny a permission request (an approved one: revoke its grant at once).
    Deny(queue::DenyArgs),
    /// Full-screen view: bottles, live decisions, the queue with approve/deny keys.
    Dashboard,
    /// Print shell completions.
    Completions(completions::Args),
}

/// Dispatch; returns the exit code on success.
pub fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Init(a) => init::run(cli, a),
        Command::Check(a) => check::run(cli, a),
        Command::Plan(a) => plan::run(cli, a),
        Command::Start(a) => start::run(cli, a),
        Command::Ls(a) => lifecycle::ls(cli, a),
        Command::Attach(a) => lifecycle::attach(cli, a),
        Command::Exec(a) => lifecycle::exec(cli, a),
        Command::Logs(a) => logs::run(cli, a),
        Command::Inspect(a) => inspect::run(cli, a),
        Command::Stop(a) => lifecycle::stop(cli, a),
        Command::Resume(a) => lifecycle::resume(cli, a),
        Command::Rm(a) => work::rm(cli, a),
        Command::Cp(a) => work::cp(cli, a),
        Command::Diff(a) => work::diff(cli, a),
        Command::Export(a) => work::export(cli, a),
        Command::Gc(a) => gc::run(cli, a),
        Command::Queue(a) => queue::queue(cli, a),
        Command::Approve(a) => queue::approve(cli, a),
        Command::Deny(a) => queue::deny(cli, a),
        Command::Dashboard => dashboard::run(cli),
        Command::Completions(a) => completions::run(a),
    }
}

/// The home selected by `--home` / `$BOTTLE_HOME`.
pub fn home(cli: &Cli) -> Result<Home> {
    Home::discover(cli.home.as_deref())
}

/// Flags shared by `plan` and `start`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanFlags {
    /// Directory copied into the agent (and whose .bottle/agents may define the agent).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<Utf8PathBuf>,
    /// Docker runtime: auto, runc or runsc.
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<Runtime>,
    /// Extra env for the agent, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = env_pair)]
    pub env: Vec<String>,
}

/// `--env` takes NAME=VALUE (a usage error, exit 2, otherwise).
fn env_pair(s: &str) -> std::result::Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "`{s}` is not NAME=VALUE (write --env {}=VALUE)",
            if s.is_empty() { "NAME" } else { s }
        )),
    }
}

impl PlanFlags {
    /// The lifecycle's request for `agent` with these flags and `cli`'s
    /// `--backend`.
    pub fn request(&self, cli: &Cli, agent: &str) -> Result<PlanRequest> {
        let mut env = Vec::new();
        for kv in &self.env {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::other(
                    format!("--env `{kv}` is not NAME=VALUE"),
                    "write --env NAME=VALUE",
                )
            })?;
            env.push((k.to_owned(), v.to_owned()));
        }
        Ok(PlanRequest {
            agent: agent.to_owned(),
            cwd: self.cwd.clone(),
            runtime: self.runtime,
            env,
            backend: cli.backend.clone(),
        })
    }
}

/// The lifecycle library over `cli`'s home, the compiled-in backends and
/// real commands.
pub fn lifecycle(cli: &Cli) -> Result<Lifecycle<'static>> {
    Ok(Lifecycle::new(
        home(cli)?,
        crate::registry::registry(),
        &DuctRunner,
    ))
}
