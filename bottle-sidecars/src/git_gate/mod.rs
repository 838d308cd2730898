//! git-gate (port 9418): the agent's only route to real git remotes.
//!
//! Design (see `docs/git-gate.md`): the daemon speaks the git:// front door
//! itself — it reads the one request pkt-line (`git-upload-pack /origin.git
//! \0host=…\0`), maps the path to a configured remote (anything else gets an
//! `ERR` packet and an audit line) and then runs `git upload-pack` /
//! `git receive-pack` on that remote's bare mirror, piping the socket.
//!
//! - Fetch: the mirror is refreshed from upstream (held key, pinned host key)
//!   before it is served; an unreachable upstream fails the fetch unless the
//!   remote says `serve_stale = true`.
//! - Push: the mirror's pre-receive hook (`bottle-sidecar git-gate
//!   --pre-receive-hook`) hands the ref updates back to this daemon over a
//!   private unix socket; the daemon checks refs against the live
//!   `gate.toml`, refuses deletions / non-fast-forwards unless allowed, scans
//!   only the new commits for secrets and pushes upstream. The hook exits 0
//!   (and the mirror accepts the push) only when the upstream push succeeded.
//!
//! Modules: `accept` (binding, the two accept loops, the shared state),
//! `session` (one agent connection: admission, the remote, fetch or push),
//! `hook_session` (one hook connection: the push decision), [`pktline`]
//! (the git:// request), [`hook`] (the hook side), [`push`] (the checks and
//! the upstream push), [`git`] (mirrors and git commands).

pub use bottle_host::gate as config;
mod accept;
pub mod git;
pub mod hook;
mod hook_session;
pub mod pktline;
pub mod push;
mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::audit::AuditLog;

pub use accept::serve;
pub use config::{ConfigError, GateConfig, Grant, PushRule, RemoteConfig};

/// Audit `sidecar` name.
const SIDECAR: &str = "git-gate";

/// Command-line arguments of this daemon.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of gate.toml.
    #[arg(long, required_unless_present = "pre_receive_hook")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9418")]
    pub listen: SocketAddr,
    /// Audit log (JSONL) to append to.
    #[arg(long, required_unless_present = "pre_receive_hook")]
    pub audit: Option<PathBuf>,
    /// Bottle identity for audit lines (default: `identity` from gate.toml).
    #[arg(long)]
    pub identity: Option<String>,
    /// Internal: run as a mirror's pre-receive hook.
    #[arg(long, hide = true)]
    pub pre_receive_hook: bool,
}

/// Options of [`serve`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Path of gate.toml (re-read on every connection).
    pub config: PathBuf,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Program the mirrors' pre-receive hook runs as
    /// `<program> git-gate --pre-receive-hook`; default: this executable.
    pub hook_program: Option<PathBuf>,
    /// Deadline for one upstream fetch/ls-remote.
    pub upstream_timeout: Duration,
    /// Deadline for one whole agent session (fetch or push).
    pub session_timeout: Duration,
    /// A push skips the pre-push mirror refresh when the mirror was
    /// refreshed successfully less than this long ago (fetches always
    /// refresh). Safe either way: every upstream update carries a lease on
    /// the value the agent saw; the window only trades a wider scan scope
    /// (commits upstream gained meanwhile get scanned too) for one upstream
    /// round trip less per push.
    pub push_refresh_window: Duration,
    /// The bottle's access credential file (`crate::access`): when set, a
    /// request path must start with `/<credential>/`; anyone else is
    /// refused. None (tests of the gate alone): no check.
    pub access_key: Option<PathBuf>,
}

impl Options {
    /// Options with default timeouts and hook program.
    pub fn new(config: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            config: config.into(),
            listen,
            hook_program: None,
            upstream_timeout: Duration::from_secs(120),
            session_timeout: Duration::from_secs(30 * 60),
            push_refresh_window: Duration::from_secs(60),
            access_key: None,
        }
    }
}

/// Why the gate could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// gate.toml is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The access credential could not be read (fail closed: no gate).
    #[error("git-gate access credential: {0}")]
    Access(std::io::Error),
    /// An I/O error (binding, creating dirs).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Mirror setup failed.
    #[error("{0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Run the daemon from its command line; returns the process exit code.
pub fn main(args: Args) -> i32 {
    if args.pre_receive_hook {
        return hook::run_hook();
    }
    let (Some(config), Some(audit_path)) = (args.config, args.audit) else {
        eprintln!("git-gate: --config and --audit are required");
        return 2;
    };
    let cfg = match GateConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("git-gate: {e}");
            return 2;
        }
    };
    let identity = args
        .identity
        .or(cfg.identity.clone())
        .unwrap_or_else(|| "unknown".into());
    let audit = match AuditLog::open(&audit_path, &identity) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "git-gate: cannot open audit log {}: {e}",
                audit_path.display()
            );
            return 1;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("git-gate: {e}");
            return 1;
        }
    };
    let opts = Options::new(config, args.listen);
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok(addr) = rx.await {
                eprintln!("git-gate: listening on {addr}");
            }
        });
        match serve(opts, audit, tx).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("git-gate: {e}");
                1
            }
        }
    })
}
