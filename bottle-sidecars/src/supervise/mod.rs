//! supervise: the agent's way to ask the operator for more (MCP server,
//! port 9100, `/mcp`). The request/decision model, the signed store and the
//! operator-side queue API the CLI calls are `bottle_host::supervise`,
//! re-exported here.
//!
//! # Who can widen policy, and why a forged file grants nothing
//!
//! Three kinds of files are involved; only the host-side operator API writes
//! the two that matter:
//!
//! 1. **Policy files** — `egress/routes.toml`, `git/gate.toml`. A grant takes
//!    effect *only* by appearing here (a route / `[[grants]]` entry carrying
//!    `grant = "<req-id>"` and `expires_at`). The bundle mounts them read-only,
//!    the agent never sees them, and only [`queue::approve`] appends grants
//!    (and [`queue::deny`] / [`queue::sweep_expired`] remove them).
//! 2. **Requests** — `queue/<req-id>.json`, written by this daemon (the queue
//!    dir is the one read-write mount of the bundle). A request file can only
//!    say `pending` or `denied`; an `approved` status there does not parse.
//!    Every reader re-validates the content (host syntax, ref pattern, lengths,
//!    id shape). A request file, forged or not, never changes policy: the
//!    operator must approve it, and approval writes the policy file.
//! 3. **Decisions** — `queue/<req-id>.decision.json`, written by
//!    [`queue::approve`] / [`queue::deny`] and signed with Ed25519. The private
//!    key lives in `state/<id>/operator/decision.key` (mode 600, created by
//!    [`queue::init`]) and is never mounted into the bundle or the agent; the
//!    public key is in `sv.toml` (`operator_key`). Both this daemon
//!    (`request_status`, `list_policy`) and the operator API believe a decision
//!    only if its signature verifies; a forged or altered decision file is
//!    ignored (and audited as `forged_decision` when the agent asks about it).
//!    So the status the agent is told matches what the operator did.
//!
//! Unanswered requests are denied after `auto_deny_after`: the status is
//! computed from `created` by every reader (so it holds even while this daemon
//! is down), and this daemon also rewrites such request files to `denied`.
//! Denials are narrowing, so they need no signature.
//!
//! This module must not write policy files from the daemon side, and the
//! daemon must not hold the operator's private key.

mod screen;
mod server;

pub use bottle_host::supervise::{capability, config, model, policy, queue, store, DEFAULT_PORT};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

pub use capability::{parse_capability, CapabilityChange};
pub use config::{sv_path, RateLimit, SvConfig};
pub use model::{is_request_id, Decision, Narrowing, Request, RequestKind, Status, Verdict};
pub use policy::{RemoteView, RouteView};
pub use queue::QueueError;
pub use store::{atomic_write, auto_deny_note, Verifier};

use crate::audit::AuditLog;

/// Command-line arguments of `bottle-sidecar supervise`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `sv.toml`.
    #[arg(long)]
    pub config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9100")]
    pub listen: SocketAddr,
    /// Queue directory (read-write).
    #[arg(long)]
    pub queue: PathBuf,
    /// Audit log (JSONL, appended).
    #[arg(long)]
    pub audit: PathBuf,
}

/// What [`serve`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Address to bind (`127.0.0.1:0` in tests).
    pub listen: SocketAddr,
    /// Path of `sv.toml`.
    pub config: PathBuf,
    /// Queue directory (created if missing).
    pub queue: PathBuf,
    /// The bottle's access credential file (`crate::access`): when set,
    /// every request must carry `Authorization: Bearer <credential>`.
    pub access_key: Option<PathBuf>,
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `sv.toml` is missing or invalid.
    #[error("supervise config: {0}")]
    Config(String),
    /// The queue dir is unusable.
    #[error("supervise queue {path}: {source}")]
    Queue {
        /// The dir.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The access credential could not be read (fail closed: no server).
    #[error("supervise access credential: {0}")]
    Access(std::io::Error),
    /// Could not bind.
    #[error("supervise: cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP server stopped.
    #[error("supervise: server stopped: {0}")]
    Server(String),
}

/// Run the MCP server until it fails. Sends the bound address on `ready`.
pub async fn serve(
    opts: Options,
    audit: AuditLog,
    ready: tokio::sync::oneshot::Sender<SocketAddr>,
) -> Result<(), Error> {
    let config = SvConfig::load(&opts.config).map_err(Error::Config)?;
    let access = match &opts.access_key {
        Some(p) => Some(crate::access::AccessKey::load(p).map_err(Error::Access)?),
        None => None,
    };
    let key = config.operator_key.as_deref().ok_or_else(|| {
        Error::Config(format!(
            "{}: no operator_key (the host writes it from supervise::queue::init)",
            opts.config.display()
        ))
    })?;
    let verifier = Verifier::from_hex(key)
        .map_err(|e| Error::Config(format!("{}: {e}", opts.config.display())))?;
    // The screen first: no request is taken without it (fail closed).
    let screen = screen::Screen::load(config.secrets_dir.clone(), audit.clone())
        .map_err(|e| Error::Config(format!("{}: {e}", opts.config.display())))?;
    std::fs::create_dir_all(&opts.queue).map_err(|source| Error::Queue {
        path: opts.queue.clone(),
        source,
    })?;
    let shared = Arc::new(server::Shared {
        bucket: Mutex::new(server::TokenBucket::new(
            config.rate_limit.burst,
            config.rate_limit.refill,
        )),
        verifier,
        queue: opts.queue.clone(),
        audit,
        screen,
        forged_seen: Mutex::new(Default::default()),
        create: tokio::sync::Mutex::new(()),
        config,
    });

    let mut http =
        StreamableHttpServerConfig::default().with_sse_keep_alive(Some(Duration::from_secs(15)));
    http = if shared.config.allowed_hosts.is_empty() {
        http.disable_allowed_hosts()
    } else {
        http.with_allowed_hosts(shared.config.allowed_hosts.clone())
    };
    let factory_shared = shared.clone();
    let service: StreamableHttpService<server::SuperviseServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(server::SuperviseServer::new(factory_shared.clone())),
            Default::default(),
            http,
        );
    let mut router = axum::Router::new().nest_service("/mcp", service);
    if let Some(key) = access {
        let gate = server::AccessGate {
            key: Arc::new(key),
            audit: shared.audit.clone(),
        };
        router = router.layer(axum::middleware::from_fn_with_state(
            gate,
            server::require_access,
        ));
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: opts.listen,
        source,
    })?;
    tracing::info!(%addr, "supervise listening on /mcp");
    let _ = ready.send(addr);

    let sweeper = auto_deny_loop(shared.clone());
    tokio::select! {
        r = axum::serve(listener, router) => match r {
            Ok(()) => Err(Error::Server("the HTTP server returned".into())),
            Err(e) => Err(Error::Server(e.to_string())),
        },
        e = sweeper => Err(e),
    }
}

/// Periodically mark unanswered requests as denied; returns only on a
/// persistent queue failure.
async fn auto_deny_loop(shared: Arc<server::Shared>) -> Error {
    let after = shared.config.auto_deny_after;
    let period = (after / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    let mut failures = 0u32;
    loop {
        tick.tick().await;
        let queue = shared.queue.clone();
        let result =
            tokio::task::spawn_blocking(move || store::mark_auto_denied(&queue, after)).await;
        match result {
            Ok(Ok(ids)) => {
                failures = 0;
                for id in ids {
                    shared.audit.record(
                        "supervise",
                        serde_json::json!({"event": "auto_deny", "id": id, "decision": "deny", "rule": "auto_deny_after"}),
                    );
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(%e, "auto-deny pass failed");
                if failures >= 20 {
                    return Error::Queue {
                        path: shared.queue.clone(),
                        source: e,
                    };
                }
            }
            Err(e) => return Error::Server(format!("auto-deny task: {e}")),
        }
    }
}

/// Run the daemon from its command line; returns the process exit code.
pub fn main(args: Args) -> i32 {
    crate::bundle::init_tracing();
    let config = match SvConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bottle-sidecar supervise: {e}");
            return 2;
        }
    };
    let identity = config.identity.clone().unwrap_or_else(|| "unknown".into());
    let audit = match AuditLog::open(&args.audit, &identity) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "bottle-sidecar supervise: audit log {}: {e}",
                args.audit.display()
            );
            return 1;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bottle-sidecar supervise: tokio: {e}");
            return 1;
        }
    };
    let opts = Options {
        listen: args.listen,
        config: args.config,
        queue: args.queue,
        access_key: None,
    };
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(opts, audit, tx));
        if let Ok(addr) = rx.await {
            eprintln!("bottle-sidecar supervise: listening on http://{addr}/mcp");
        }
        match task.await {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("bottle-sidecar: {e}");
                1
            }
            Err(e) => {
                eprintln!("bottle-sidecar: supervise task: {e}");
                1
            }
        }
    })
}
