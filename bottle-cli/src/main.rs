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
mod events;
mod progress;
mod registry;
mod ui;

/// The `bottle` command line. Its options may come before the subcommand
/// (`bottle --backend docker start demo`); each subcommand also takes, after
/// its name, those of them it uses ([`FLAGS_OF`]), and its help lists only
/// those.
#[derive(Debug, Parser)]
#[command(
    name = "bottle",
    version,
    about = "Run a coding agent in a sandbox whose only ways out are policy-enforcing sidecars"
)]
pub struct Cli {
    /// Home directory (default: $BOTTLE_HOME, else ~/.bottle).
    #[arg(long, value_name = "DIR")]
    pub home: Option<Utf8PathBuf>,
    /// Backend to use (overrides the bottle's `backend`).
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Print tracing output (also RUST_LOG).
    #[arg(long, short)]
    pub verbose: bool,
    /// Print only errors and requested output.
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    command: cmd::Command,
}

/// Which of `bottle`'s own options each subcommand takes after its name
/// (the rest mean nothing there: `init` picks no backend, `ls` prints only
/// what was asked for). Not listed: none (`completions`).
pub const FLAGS_OF: &[(&str, &[&str])] = &[
    ("init", &["home", "verbose", "quiet"]),
    ("check", &["home", "verbose"]),
    ("plan", &["home", "backend", "verbose"]),
    ("start", &["home", "backend", "verbose", "quiet"]),
    ("ls", &["home", "verbose"]),
    ("attach", &["home", "verbose", "quiet"]),
    ("exec", &["home", "verbose"]),
    ("logs", &["home", "verbose"]),
    ("inspect", &["home", "verbose"]),
    ("stop", &["home", "verbose", "quiet"]),
    ("resume", &["home", "verbose", "quiet"]),
    ("rm", &["home", "verbose", "quiet"]),
    ("cp", &["home", "verbose", "quiet"]),
    ("diff", &["home", "verbose", "quiet"]),
    ("export", &["home", "verbose", "quiet"]),
    ("gc", &["home", "backend", "verbose", "quiet"]),
    ("queue", &["home", "verbose"]),
    ("approve", &["home", "verbose", "quiet"]),
    ("deny", &["home", "verbose", "quiet"]),
    ("dashboard", &["home", "verbose"]),
];

/// The clap command: [`Cli`] plus, on each subcommand, the options of
/// `bottle` it uses ([`FLAGS_OF`]).
pub fn command() -> clap::Command {
    let mut c = <Cli as clap::CommandFactory>::command();
    let own: Vec<clap::Arg> = c.get_arguments().cloned().collect();
    for (sub, ids) in FLAGS_OF {
        c = c.mut_subcommand(*sub, |mut s| {
            // after the subcommand's own options in its help
            for (i, a) in own
                .iter()
                .filter(|a| ids.contains(&a.get_id().as_str()))
                .enumerate()
            {
                s = s.arg(a.clone().display_order(1000 + i));
            }
            s
        });
    }
    c
}

/// Parse the command line: options given after the subcommand count as if
/// given before it.
fn parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let mut cmd = command();
    let m = cmd.try_get_matches_from_mut(std::env::args_os())?;
    let mut cli = Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))?;
    if let Some((_, sub)) = m.subcommand() {
        if let Ok(Some(h)) = sub.try_get_one::<Utf8PathBuf>("home") {
            cli.home = Some(h.clone());
        }
        if let Ok(Some(b)) = sub.try_get_one::<String>("backend") {
            cli.backend = Some(b.clone());
        }
        cli.verbose |= matches!(sub.try_get_one::<bool>("verbose"), Ok(Some(true)));
        cli.quiet |= matches!(sub.try_get_one::<bool>("quiet"), Ok(Some(true)));
    }
    if cli.verbose && cli.quiet {
        return Err(cmd.error(
            clap::error::ErrorKind::ArgumentConflict,
            "--verbose and --quiet cannot be used together",
        ));
    }
    Ok(cli)
}

fn main() -> ExitCode {
    // `COMPLETE=<shell> bottle ...`: answer a completion request and exit.
    clap_complete::CompleteEnv::with_factory(command).complete();
    ui::quiet_on_closed_stdout();
    let cli = parse().unwrap_or_else(|e| with_tips(e).exit());
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

/// Where tracing goes instead of stderr while the dashboard draws on the
/// terminal (its log file): a warning from a stop running behind the
/// screen must not tear it.
pub static TRACE_FILE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

fn init_tracing(verbose: bool) {
    let filter = if verbose {
        tracing_subscriber::EnvFilter::new("debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| -> Box<dyn std::io::Write> {
            let file = TRACE_FILE
                .lock()
                .ok()
                .and_then(|f| f.as_ref().and_then(|f| f.try_clone().ok()));
            match file {
                Some(f) => Box::new(f),
                None => Box::new(std::io::stderr()),
            }
        })
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
