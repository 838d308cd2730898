//! egress: the bottle's only route out for HTTP(S) — a default-deny,
//! intercepting forward proxy (port 8888).
//!
//! What it does, in request order:
//! - `CONNECT host:port` to a host/port no (unexpired) route matches → 403
//!   before any TLS, naming the host and the supervise tool `request_egress`.
//!   The name is resolved and refused if it only reaches non-public addresses
//!   (unless the route has `allow_private = true`).
//! - Allowed tunnels are intercepted with a leaf certificate for exactly the
//!   CONNECT host, signed by the per-bottle CA ([`ca`]); a TLS SNI naming
//!   another host is refused; HTTP/1.1 and HTTP/2 (ALPN) are served.
//! - Every request (inside a tunnel, or plain `http://` absolute-form) must
//!   name the same host (URI authority / `Host`), match the route's path
//!   globs (on the percent-decoded path; dot segments, also with path
//!   parameters, and encoded or double-encoded separators refused) and
//!   methods, and pass DLP ([`crate::dlp`]) on its request line, headers
//!   (each, and all values joined), the first `max_body_scan` body bytes at
//!   once and the rest as it streams ([`body::PrefixedBody`]). On routes with `auth`, the agent's
//!   `Authorization`/`Cookie` (and the injected header) are dropped and the
//!   configured credential is injected.
//! - Upstream connections go through [`net::GuardedConnector`]: it resolves
//!   the name itself, drops non-public addresses (SSRF guard) and connects to
//!   an address it checked (no re-resolution).
//! - Responses are re-masked: held secret values become `*` (length kept).
//! - WebSocket upgrades on allowed routes are relayed message by message
//!   (agent→upstream messages scanned, upstream→agent masked).
//! - `routes.toml` is reloaded on change (inotify on its directory, only for
//!   events naming it or a secrets entry; a 500 ms stat poll as a fallback
//!   for filesystems without inotify; SIGHUP) by the `reload` module; a
//!   file that does not load keeps the previous policy. Open connections
//!   stay open; every request is checked against the policy in force.
//! - The operator's DLP rule files (the bundle's `[dlp] rules_dir`) are
//!   re-checked on the same 500 ms poll: a change that loads rebuilds the
//!   detector; a broken file is refused (audited with file, line and rule)
//!   and the rules in force stay.
//! - One audit line per decision: method, host, port, path (never the query),
//!   decision, rule, status, bytes, ms. Never a body or header value. Lines
//!   are queued off the request path and appended in batches by one writer
//!   thread; stopping the proxy writes every queued line first.
//!
//! Raw TCP has no path: a tunnel whose first bytes are not a TLS ClientHello
//! is closed.

mod audit_queue;
pub mod body;
pub mod ca;
pub mod head;
pub mod net;
pub use bottle_host::routes as policy;
mod proxy;
mod reload;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::AuditLog;
use audit_queue::AuditQueue;
use policy::Live;

/// Command-line arguments of `bottle-sidecar egress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The live policy file (`routes.toml`); reloaded on change and on SIGHUP.
    #[arg(long, value_name = "ROUTES_TOML")]
    pub config: PathBuf,
    /// Directory holding `ca.pem` and `ca.key`.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8888")]
    pub listen: SocketAddr,
    /// Audit log (JSONL, appended).
    #[arg(long, value_name = "FILE")]
    pub audit: PathBuf,
    /// Held-secrets dir (overrides `secrets_dir` in routes.toml).
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Identity stamped on audit lines (default: `identity` from routes.toml).
    #[arg(long)]
    pub identity: Option<String>,
    /// Tests/benchmarks only: an extra PEM trust root for upstream TLS.
    #[arg(long, value_name = "PEM", hide = true)]
    pub upstream_ca: Option<PathBuf>,
    /// Tests/benchmarks only: resolve NAME to IP without DNS (repeatable).
    #[arg(long = "resolve", value_name = "NAME=IP", hide = true)]
    pub resolve: Vec<String>,
}

/// Library options of the egress daemon (the bundle builds these from
/// bundle.toml; tests build them directly).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Path of `routes.toml`.
    pub routes: PathBuf,
    /// Directory with `ca.pem` + `ca.key`.
    pub ca_dir: PathBuf,
    /// Listen address (`127.0.0.1:0` in tests; the bound address is sent on `ready`).
    pub listen: SocketAddr,
    /// Held-secrets dir; overrides `secrets_dir` in routes.toml.
    #[serde(default)]
    pub secrets_dir: Option<PathBuf>,
    /// Tests only: extra trust root (PEM file) for upstream TLS, added to the
    /// built-in webpki roots.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// Tests only: names resolved to these addresses without DNS. The SSRF
    /// guard still applies to the mapped address.
    #[serde(default)]
    pub resolve_overrides: BTreeMap<String, IpAddr>,
    /// The bottle's access credential file (`crate::access`): when set,
    /// every proxy request must carry it in `Proxy-Authorization`.
    #[serde(default)]
    pub access_key: Option<PathBuf>,
    /// Agent connections served at once; more are answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Request-body bytes buffered for scanning across all requests; a
    /// request that would go past it is answered 503.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
}

/// Default [`Options::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default [`Options::max_buffered_bytes`] (64 MiB).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_buffered_bytes() -> usize {
    DEFAULT_MAX_BUFFERED_BYTES
}

impl Options {
    /// Options with the given files and no test hooks.
    pub fn new(routes: PathBuf, ca_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            routes,
            ca_dir,
            listen,
            secrets_dir: None,
            upstream_ca: None,
            resolve_overrides: BTreeMap::new(),
            access_key: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// Why the egress daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// routes.toml or the secrets dir did not load.
    #[error("egress policy: {0}")]
    Config(String),
    /// The CA could not be loaded.
    #[error("egress CA in {dir}: {source}")]
    Ca {
        /// CA dir.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Upstream TLS setup failed (e.g. a bad `upstream_ca`).
    #[error("egress TLS setup: {0}")]
    Tls(String),
    /// The access credential could not be read (fail closed: no proxy).
    #[error("egress access credential: {0}")]
    Access(std::io::Error),
    /// Binding or accepting failed.
    #[error("egress: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by the request path and the connector.
pub(crate) struct Shared {
    live: RwLock<Arc<Live>>,
    pub(crate) resolve_overrides: BTreeMap<String, IpAddr>,
}

impl Shared {
    /// The policy in force right now.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, live: Live) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}

/// Install the process-wide rustls crypto provider (aws-lc-rs) if none is
/// installed yet. Both providers are compiled into this binary, so rustls
/// cannot pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Run the proxy: bind `opts.listen`, send the bound address on `ready`,
/// serve until an accept error.
///
/// Audit lines leave the request path through a queue with its own writer
/// thread; when this future is dropped (its runtime shutting down) and the
/// last request it served is gone, every queued line has been appended
/// before the drop returns.
pub async fn serve(
    opts: Options,
    audit: AuditLog,
    ready: tokio::sync::oneshot::Sender<SocketAddr>,
) -> Result<(), Error> {
    install_crypto_provider();
    let audit = AuditQueue::start(audit);
    let access = match &opts.access_key {
        Some(p) => Some(crate::access::AccessKey::load(p).map_err(Error::Access)?),
        None => None,
    };
    let live = Live::load(&opts.routes, opts.secrets_dir.as_deref()).map_err(Error::Config)?;
    let loaded = ca::load(&opts.ca_dir).map_err(|source| Error::Ca {
        dir: opts.ca_dir.clone(),
        source,
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let authority = ca::LeafSigner::new(loaded, provider.clone()).map_err(|source| Error::Ca {
        dir: opts.ca_dir.clone(),
        source,
    })?;

    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &opts.upstream_ca {
        let pem =
            std::fs::read(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let shared = Arc::new(Shared {
        live: RwLock::new(Arc::new(live)),
        resolve_overrides: opts
            .resolve_overrides
            .iter()
            .map(|(k, v)| (net::normalize_host(k), *v))
            .collect(),
    });
    let connector = net::GuardedConnector {
        shared: shared.clone(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector.clone());
    let ws_connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https);

    let proxy = Arc::new(proxy::Proxy {
        shared: shared.clone(),
        audit: audit.clone(),
        ca: authority,
        client,
        ws_connector,
        access,
        budget: Arc::new(tokio::sync::Semaphore::new(
            opts.max_buffered_bytes
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
    });
    let conns = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));

    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    // Registered before `ready` so a SIGHUP sent once the proxy is up is
    // never the default (terminating) action.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::spawn(reload::reload_loop(
        shared,
        audit,
        opts.routes.clone(),
        opts.secrets_dir.clone(),
        hup,
    ));
    let _ = ready.send(addr);
    tracing::info!(%addr, "egress listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) if is_transient_accept_error(&e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match conns.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(proxy::serve_conn(proxy.clone(), tcp, peer, permit));
            }
            Err(_) => {
                tokio::spawn(proxy::over_capacity(
                    proxy.clone(),
                    tcp,
                    opts.max_connections,
                ));
            }
        }
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(libc::EMFILE)
        || e.raw_os_error() == Some(libc::ENFILE)
}

/// Run the daemon from its command line; returns the process exit code.
pub fn main(args: Args) -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut opts = Options::new(args.config.clone(), args.ca_dir.clone(), args.listen);
    opts.secrets_dir = args.secrets_dir.clone();
    opts.upstream_ca = args.upstream_ca.clone();
    for spec in &args.resolve {
        let parsed = spec
            .split_once('=')
            .and_then(|(n, ip)| Some((n.to_owned(), ip.parse::<IpAddr>().ok()?)));
        match parsed {
            Some((name, ip)) => {
                opts.resolve_overrides.insert(name, ip);
            }
            None => {
                eprintln!("bottle-sidecar egress: --resolve wants NAME=IP, got `{spec}`");
                return 2;
            }
        }
    }
    let identity = match &args.identity {
        Some(i) => i.clone(),
        None => match Live::load(&args.config, args.secrets_dir.as_deref()) {
            Ok(live) => live.identity.clone().unwrap_or_else(|| "unknown".into()),
            Err(e) => {
                eprintln!("bottle-sidecar egress: {e}");
                return 1;
            }
        },
    };
    let audit = match AuditLog::open(&args.audit, &identity) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "bottle-sidecar egress: audit log {}: {e}",
                args.audit.display()
            );
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bottle-sidecar egress: tokio runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(async move {
        // Registered before serving, so a SIGTERM/SIGINT is never the
        // default (immediate) exit: queued audit lines are written first.
        let stop = shutdown_signal();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut server = tokio::spawn(serve(opts, audit, tx));
        tokio::pin!(stop);
        tokio::select! {
            addr = rx => {
                if let Ok(addr) = addr {
                    println!("bottle-sidecar egress: listening on {addr}");
                }
            }
            signal = &mut stop => {
                tracing::info!("{signal}; stopping");
                return 0;
            }
        }
        tokio::select! {
            exit = &mut server => match exit {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    eprintln!("bottle-sidecar {e}");
                    1
                }
                Err(e) => {
                    eprintln!("bottle-sidecar egress: {e}");
                    1
                }
            },
            signal = &mut stop => {
                tracing::info!("{signal}; stopping");
                0
            }
        }
    });
    // Dropping the runtime drops every task; the last audit-queue handle
    // among them waits for the writer to append every queued line.
    drop(rt);
    code
}

/// The first SIGTERM or SIGINT (pending forever if neither can be caught).
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
