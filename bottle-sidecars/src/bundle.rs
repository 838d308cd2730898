//! `bottle-sidecar run`: every daemon of a bottle under one supervisor.
//!
//! Fail closed: the daemons run as tokio tasks; when any of them exits — with
//! an error *or* "successfully" — the supervisor stops all the others (their
//! listeners close) and the process exits non-zero with the reason on stderr
//! and in the audit log. The agent then has no way out at all; the backend
//! notices the dead bundle. `bottle-sidecar: ready` is printed on stdout once
//! every configured daemon has bound its port.
//!
//! `bottle-sidecar health` exits 0 iff every configured daemon's port accepts
//! a TCP connection (the docker backend runs it with `docker exec`).

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::audit::AuditLog;
use crate::{egress, git_gate, supervise};

pub use bottle_host::bundle::{
    log_path, BundleConfig, DlpSection, EgressSection, GitGateSection, SuperviseSection, LOG_FILE,
};

type Joined = Option<Result<(String, Result<(), String>), tokio::task::JoinError>>;
type DaemonFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Starter = Box<dyn FnOnce(oneshot::Sender<SocketAddr>) -> DaemonFuture + Send>;

/// Runs daemons as tasks; the first one to exit stops them all.
pub struct Supervisor {
    daemons: Vec<(String, Starter)>,
    ready_timeout: Duration,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field(
                "daemons",
                &self.daemons.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why [`Supervisor::run`] returned. Every variant is a failure: the
/// daemons are meant to run forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A daemon exited (its error, or "exited" when it returned Ok).
    DaemonExited {
        /// Which daemon.
        daemon: String,
        /// Why.
        reason: String,
        /// Whether every daemon had reported ready before.
        after_ready: bool,
    },
    /// A daemon did not report ready in time.
    NotReady {
        /// Which daemons were missing.
        missing: Vec<String>,
    },
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::DaemonExited { daemon, reason, .. } => write!(f, "{daemon} stopped: {reason}"),
            Exit::NotReady { missing } => {
                write!(f, "not ready in time: {}", missing.join(", "))
            }
        }
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// No daemons yet; 60 s to become ready.
    pub fn new() -> Self {
        Self {
            daemons: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// How long all daemons together may take to bind.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// Add a daemon: `start(ready)` returns its future, which must send the
    /// bound address on `ready` and then run until it fails.
    pub fn add<F, Fut, E>(&mut self, name: &str, start: F)
    where
        F: FnOnce(oneshot::Sender<SocketAddr>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let starter: Starter = Box::new(move |ready| {
            let fut = start(ready);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self.daemons.push((name.to_owned(), starter));
    }

    /// Names of the daemons added so far.
    pub fn names(&self) -> Vec<String> {
        self.daemons.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Start everything; call `on_ready` once all daemons are bound; return
    /// when the first daemon exits, after every other daemon has been stopped.
    pub async fn run(self, on_ready: impl FnOnce(&[(String, SocketAddr)])) -> Exit {
        let mut set: JoinSet<(String, Result<(), String>)> = JoinSet::new();
        let mut readies = Vec::new();
        for (name, start) in self.daemons {
            let (tx, rx) = oneshot::channel();
            let fut = start(tx);
            let task_name = name.clone();
            set.spawn(async move { (task_name, fut.await) });
            readies.push((name, rx));
        }
        let names: Vec<String> = readies.iter().map(|(n, _)| n.clone()).collect();
        let got: std::sync::Mutex<Vec<(String, SocketAddr)>> = std::sync::Mutex::new(Vec::new());
        let all_ready = async {
            for (name, rx) in readies {
                match rx.await {
                    Ok(addr) => got
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((name, addr)),
                    // The daemon dropped its sender: it is exiting; join_next reports why.
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
        let early = tokio::select! {
            r = tokio::time::timeout(self.ready_timeout, all_ready) => r.err().map(|_| {
                let got = got.lock().unwrap_or_else(|p| p.into_inner());
                Exit::NotReady {
                    missing: names.iter().filter(|n| !got.iter().any(|(g, _)| g == *n)).cloned().collect(),
                }
            }),
            joined = set.join_next() => Some(exit_of(joined, false)),
        };
        let exit = match early {
            Some(exit) => exit,
            None => {
                let got = got.into_inner().unwrap_or_else(|p| p.into_inner());
                on_ready(&got);
                exit_of(set.join_next().await, true)
            }
        };
        set.abort_all();
        while set.join_next().await.is_some() {}
        exit
    }
}

fn exit_of(joined: Joined, after_ready: bool) -> Exit {
    match joined {
        Some(Ok((daemon, Ok(())))) => Exit::DaemonExited {
            daemon,
            reason: "exited".into(),
            after_ready,
        },
        Some(Ok((daemon, Err(reason)))) => Exit::DaemonExited {
            daemon,
            reason,
            after_ready,
        },
        Some(Err(e)) => Exit::DaemonExited {
            daemon: "?".into(),
            reason: if e.is_panic() {
                "panicked".into()
            } else {
                e.to_string()
            },
            after_ready,
        },
        None => Exit::DaemonExited {
            daemon: "none".into(),
            reason: "no daemons configured".into(),
            after_ready,
        },
    }
}

/// Build the supervisor for a bundle config.
pub fn supervisor(config: &BundleConfig, audit: &AuditLog) -> Supervisor {
    let mut sup = Supervisor::new();
    if let Some(e) = &config.egress {
        let mut opts = egress::Options::new(e.routes.clone(), e.ca_dir.clone(), e.listen);
        opts.secrets_dir = e.secrets_dir.clone();
        opts.access_key = config.access_key.clone();
        if let Some(n) = e.max_connections {
            opts.max_connections = n;
        }
        if let Some(n) = e.max_buffered_bytes {
            opts.max_buffered_bytes = n;
        }
        opts.upstream_ca = e.upstream_ca.clone();
        let audit = audit.clone();
        sup.add("egress", move |ready| egress::serve(opts, audit, ready));
    }
    if let Some(g) = &config.git_gate {
        let mut opts = git_gate::Options::new(g.config.clone(), g.listen);
        opts.hook_program = g.hook_program.clone();
        opts.access_key = config.access_key.clone();
        let audit = audit.clone();
        sup.add("git-gate", move |ready| git_gate::serve(opts, audit, ready));
    }
    if let Some(s) = &config.supervise {
        let opts = supervise::Options {
            listen: s.listen,
            config: s.config.clone(),
            queue: s.queue.clone(),
            access_key: config.access_key.clone(),
        };
        let audit = audit.clone();
        sup.add("supervise", move |ready| {
            supervise::serve(opts, audit, ready)
        });
    }
    sup
}

/// The bundle's readiness marker ([`BundleConfig::ready_file`]): absent
/// until every daemon listens, present while they do, gone once one exits
/// (the host waits for it, ARCHITECTURE.md "Data flow of `bottle start
/// <agent>`").
struct ReadyMarker<'a>(Option<&'a Path>);

impl ReadyMarker<'_> {
    /// Remove a marker a previous run left.
    fn clear(&self) {
        if let Some(p) = self.0 {
            if let Err(e) = std::fs::remove_file(p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(target: "bundle", "removing {}: {e}", p.display());
                }
            }
        }
    }

    /// Every daemon listens: write the marker (atomically: the host never
    /// sees a half-written one).
    fn set(&self) {
        if let Some(p) = self.0 {
            let text = format!("ready {}\n", std::process::id());
            if let Err(e) = bottle_core::state::atomic_write_io(p, text.as_bytes(), Some(0o644)) {
                tracing::warn!(target: "bundle", "writing {}: {e}", p.display());
            }
        }
    }
}

/// Run a bundle until a daemon exits (returns the reason) — the library form
/// of `bottle-sidecar run`. `on_ready` gets every daemon's bound address;
/// the config's `ready_file` is written then, and removed when a daemon
/// exits.
pub async fn run(
    config: &BundleConfig,
    audit: AuditLog,
    on_ready: impl FnOnce(&[(String, SocketAddr)]),
) -> Exit {
    let marker = ReadyMarker(config.ready_file.as_deref());
    marker.clear();
    if let Some(dlp) = &config.dlp {
        match dlp.install() {
            Ok(set) => audit.record(
                "bundle",
                json!({"event": "dlp-rules", "rules": set.len(), "disabled": dlp.disable}),
            ),
            Err(e) => {
                eprintln!(
                    "bottle-sidecar: DLP rules not loaded, built-in rules stay in force: {e}"
                );
                audit.record(
                    "bundle",
                    json!({"event": "dlp-rules-error", "error": e.to_string()}),
                );
            }
        }
    }
    let sup = supervisor(config, &audit);
    audit.record("bundle", json!({"event": "start", "daemons": sup.names()}));
    let exit = sup
        .run(|addrs| {
            let listening: serde_json::Map<String, serde_json::Value> = addrs
                .iter()
                .map(|(n, a)| (n.clone(), json!(a.to_string())))
                .collect();
            audit.record("bundle", json!({"event": "ready", "listening": listening}));
            marker.set();
            on_ready(addrs)
        })
        .await;
    marker.clear();
    let (daemon, reason) = match &exit {
        Exit::DaemonExited { daemon, reason, .. } => (daemon.clone(), reason.clone()),
        Exit::NotReady { missing } => (missing.join(","), "not ready in time".into()),
    };
    audit.record(
        "bundle",
        json!({"event": "stop", "daemon": daemon, "reason": reason, "decision": "fail-closed", "rule": "daemon-exit"}),
    );
    exit
}

/// Arguments of `bottle-sidecar run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `bundle.toml`.
    #[arg(long)]
    pub config: PathBuf,
}

/// Arguments of `bottle-sidecar health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// `bundle.toml`.
    #[arg(long)]
    pub config: PathBuf,
    /// Connect timeout per daemon.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `bottle-sidecar run`: returns the process exit code (never 0 unless
/// stopped by SIGTERM/SIGINT).
pub fn main(args: Args) -> i32 {
    let config = match BundleConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            init_tracing();
            eprintln!("bottle-sidecar: invalid bundle config: {e}");
            return 2;
        }
    };
    init_tracing_with_log(&log_path(&config.audit));
    let rotation = config.audit_rotation.unwrap_or_default();
    let audit = match AuditLog::open_with(&config.audit, &config.identity, rotation) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bottle-sidecar: audit log {}: {e}", config.audit.display());
            return 1;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bottle-sidecar: tokio: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let on_ready = |addrs: &[(String, SocketAddr)]| {
            for (name, addr) in addrs {
                tracing::info!(target: "bundle", daemon = %name, "{name} listening on {addr}");
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "bottle-sidecar: ready");
            let _ = out.flush();
        };
        tokio::select! {
            exit = run(&config, audit.clone(), on_ready) => {
                tracing::error!(target: "bundle", "{exit}; stopping every daemon (fail closed)");
                1
            }
            signal = shutdown_signal() => {
                ReadyMarker(config.ready_file.as_deref()).clear();
                tracing::info!(target: "bundle", "{signal}; stopping");
                audit.record("bundle", json!({"event": "stop", "reason": signal}));
                0
            }
        }
    })
}

async fn shutdown_signal() -> String {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM".into(),
        _ = int.recv() => "SIGINT".into(),
    }
}

/// Connect to every configured daemon's port; `(name, Ok | Err(reason))`.
/// Unspecified listen addresses (`0.0.0.0`, `::`) are probed on loopback.
pub fn health(config: &BundleConfig, timeout: Duration) -> Vec<(String, Result<(), String>)> {
    config
        .listens()
        .into_iter()
        .map(|(name, addr)| {
            let ip = match addr.ip() {
                IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            let target = SocketAddr::new(ip, addr.port());
            let result = TcpStream::connect_timeout(&target, timeout)
                .map(drop)
                .map_err(|e| format!("{target}: {e}"));
            (name.to_owned(), result)
        })
        .collect()
}

/// `bottle-sidecar health`: 0 iff every daemon's port accepts TCP.
pub fn health_main(args: HealthArgs) -> i32 {
    let config = match BundleConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bottle-sidecar health: {e}");
            return 2;
        }
    };
    let mut ok = true;
    for (name, result) in health(&config, args.timeout) {
        match result {
            Ok(()) => println!("{name}: ok"),
            Err(e) => {
                ok = false;
                println!("{name}: down ({e})");
            }
        }
    }
    if ok {
        0
    } else {
        1
    }
}

/// Colour on stderr only for a terminal, and never with `NO_COLOR` set
/// (a container's stderr is a pipe: `docker logs` shows plain text).
fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Install the stderr tracing subscriber (`RUST_LOG`, default `info`); idempotent.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_ansi(stderr_colour())
        .with_writer(std::io::stderr)
        .try_init();
}

/// [`init_tracing`], and every event also appended as JSON to `log` (the
/// bundle's [`LOG_FILE`]). A log that cannot be opened is said on stderr
/// and the bundle runs on: its decisions still go to the audit log.
fn init_tracing_with_log(log: &Path) {
    use tracing_subscriber::prelude::*;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    let json = match file {
        Ok(f) => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f)),
        ),
        Err(e) => {
            eprintln!("bottle-sidecar: log {}: {e}", log.display());
            None
        }
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(stderr_colour())
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(env_filter())
        .with(stderr)
        .with(json)
        .try_init();
}
