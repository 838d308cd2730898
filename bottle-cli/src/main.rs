//! `bottle`: run an autonomous coding agent in a sandbox whose only ways out
//! are sidecars that hold the secrets and enforce the operator's policy.
//!
//! This crate owns the command line: parsing, the backend registry, output,
//! and the mapping of errors to exit codes (0 ok, 1 runtime failure,
//! 2 usage/manifest error, 3 backend unavailable, 4 policy refusal,
//! 130 interrupted by Ctrl-C). Writing to a reader that went away
//! (`bottle plan demo --json | head`) ends quietly with 0, as `ripgrep` does.

use std::process::ExitCode;

use bottle_core::{Error, ErrorKind};
use camino::Utf8PathBuf;
use clap::Parser;

mod cmd;
mod dashboard;
mod progress;
mod registry;
mod ui;

/// The `bottle` command line.
#[derive(Debug, Parser)]
#[command(
    name = "bottle",
    version,
    about = "Run a coding agent in a sandbox whose only ways out are policy-enforcing sidecars"
)]
pub struct Cli {
    /// Home directory (default: $BOTTLE_HOME, else ~/.bottle).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<Utf8PathBuf>,
    /// Backend to use (overrides the bottle's `backend`).
    #[arg(long, global = true, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Print tracing output (also RUST_LOG).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Print only errors and requested output.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    // `COMPLETE=<shell> bottle ...`: answer a completion request and exit.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    ui::quiet_on_closed_stdout();
    let cli = Cli::try_parse().unwrap_or_else(|e| with_tips(e).exit());
    init_tracing(cli.verbose);
    match cmd::run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            ui::print_error(&e);
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Add bottle's own tips to a usage error: `bottle exec ID id` (the
/// command without `--`) says where the `--` goes.
fn with_tips(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::UnknownArgument
        && e.render().to_string().contains("Usage: bottle exec ")
    {
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                "the command goes after `--`: bottle exec <ID> -- <CMD>...".into(),
            ]),
        );
    }
    e
}

fn init_tracing(verbose: bool) {
    let filter = if verbose {
        tracing_subscriber::EnvFilter::new("debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Exit code of an error (SPEC §3); an interrupted launch is 130, the
/// shell convention for Ctrl-C (128 + SIGINT).
pub fn exit_code(e: &Error) -> u8 {
    if interrupted(e) {
        return 130;
    }
    match e.kind() {
        ErrorKind::Usage => 2,
        ErrorKind::Unavailable => 3,
        ErrorKind::Refused => 4,
        _ => 1,
    }
}

fn interrupted(e: &Error) -> bool {
    match e {
        Error::Interrupted { .. } => true,
        Error::Launch { source, .. } => interrupted(source),
        _ => false,
    }
}
