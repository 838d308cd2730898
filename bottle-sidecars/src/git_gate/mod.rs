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

pub use bottle_host::gate as config;
pub mod git;
pub mod hook;
pub mod pktline;
pub mod push;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::audit::AuditLog;

pub use config::{ConfigError, GateConfig, Grant, PushRule, RemoteConfig};

use git::{ensure_mirror, git_async, has_refs, mirror_path, refresh, ENV_SOCKET, ENV_TOKEN};
use hook::{HookReply, HookRequest};
use pktline::{err_pkt, Request, Service};

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

struct Session {
    remote: String,
    /// Result of the mirror refresh that runs while the agent uploads.
    refreshed: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
}

struct State {
    opts: Options,
    audit: AuditLog,
    hook_program: PathBuf,
    socket: PathBuf,
    sessions: Mutex<HashMap<String, Session>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Last successful refresh per remote.
    fresh: Mutex<HashMap<String, Instant>>,
    slots: tokio::sync::Semaphore,
    access: Option<crate::access::AccessKey>,
}

impl State {
    /// Refresh `remote`'s mirror and remember when it last succeeded.
    async fn refresh(&self, mirror: &Path, remote: &RemoteConfig) -> Result<(), String> {
        let r = refresh(mirror, remote, self.opts.upstream_timeout).await;
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_ok() {
            fresh.insert(remote.name.clone(), Instant::now());
        } else {
            fresh.remove(&remote.name);
        }
        r
    }

    /// Refreshed successfully within `window`?
    fn is_fresh(&self, remote: &str, window: Duration) -> bool {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(remote)
            .is_some_and(|t| t.elapsed() < window)
    }

    fn lock_for(&self, remote: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(remote.to_owned()).or_default().clone()
    }
}

/// Removes the private socket dir when the daemon stops.
struct SocketDir(PathBuf);
impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bind, send the bound address on `ready`, serve until an error.
pub async fn serve(
    opts: Options,
    audit: AuditLog,
    ready: tokio::sync::oneshot::Sender<SocketAddr>,
) -> Result<(), Error> {
    let cfg = GateConfig::load(&opts.config)?;
    let access = match &opts.access_key {
        Some(p) => Some(crate::access::AccessKey::load(p).map_err(Error::Access)?),
        None => None,
    };
    let hook_program = match &opts.hook_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(io_err("locating the hook program"))?,
    };
    // The hook runs with the mirror as cwd: the path must be absolute.
    let hook_program = std::fs::canonicalize(&hook_program)
        .map_err(io_err(format!("hook program {}", hook_program.display())))?;
    std::fs::create_dir_all(&cfg.mirrors_dir)
        .map_err(io_err(format!("creating {}", cfg.mirrors_dir.display())))?;
    for r in &cfg.remotes {
        ensure_mirror(&mirror_path(&cfg.mirrors_dir, &r.name), &hook_program)
            .map_err(Error::Setup)?;
    }
    let sock_dir = private_dir().map_err(io_err("creating the hook socket dir"))?;
    let _cleanup = SocketDir(sock_dir.clone());
    let socket = sock_dir.join("hook.sock");
    let hooks =
        UnixListener::bind(&socket).map_err(io_err(format!("binding {}", socket.display())))?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(io_err(format!("binding {}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    let state = Arc::new(State {
        opts,
        audit,
        hook_program,
        socket,
        sessions: Mutex::new(HashMap::new()),
        locks: Mutex::new(HashMap::new()),
        fresh: Mutex::new(HashMap::new()),
        slots: tokio::sync::Semaphore::new(64),
        access,
    });
    let _ = ready.send(addr);
    let hook_state = state.clone();
    let hook_task = tokio::spawn(async move {
        loop {
            match hooks.accept().await {
                Ok((stream, _)) => {
                    let st = hook_state.clone();
                    tokio::spawn(async move { handle_hook(st, stream).await });
                }
                Err(e) => return e,
            }
        }
    });
    let result = loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let st = state.clone();
                tokio::spawn(async move { handle_conn(st, stream, peer).await });
            }
            Err(e) if is_transient(&e) => {
                tracing::warn!(%e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                break Err(Error::Io {
                    what: "accepting".into(),
                    source: e,
                })
            }
        }
    };
    hook_task.abort();
    result
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::EMFILE)
        || e.raw_os_error() == Some(libc::ENFILE)
}

/// A fresh mode-700 dir under the temp dir (short path: unix socket limit).
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let dir = base.join(format!("bottle-gg-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temp dir name"))
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// With an access credential: the request path must be
/// `/<credential>/<remote>.git`; returns the request with the credential
/// removed, or the service of a refused one. Without: the request as is.
fn check_access(
    access: Option<&crate::access::AccessKey>,
    mut req: Request,
) -> Result<Request, Service> {
    let Some(key) = access else {
        return Ok(req);
    };
    match req.remote.split_once('/') {
        Some((cred, remote)) if key.matches(cred.as_bytes()) => {
            req.remote = remote.to_owned();
            Ok(req)
        }
        _ => Err(req.service),
    }
}

fn op_name(s: Service) -> &'static str {
    match s {
        Service::UploadPack => "fetch",
        Service::ReceivePack => "push",
    }
}

async fn handle_conn(st: Arc<State>, mut stream: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Ok(_permit) = st.slots.try_acquire() else {
        let _ = stream
            .write_all(&err_pkt(
                "git-gate: too many concurrent sessions, retry later",
            ))
            .await;
        return;
    };
    let req =
        match tokio::time::timeout(Duration::from_secs(15), pktline::read_pkt(&mut stream)).await {
            Ok(Ok(p)) => pktline::parse_request(&p),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(pktline::RequestError::Bad("no request within 15s".into())),
        };
    let req = match req.map(|r| check_access(st.access.as_ref(), r)) {
        Ok(Ok(r)) => r,
        Ok(Err(service)) => {
            // No credential, or a wrong one: not this bottle's agent.
            let _ = stream
                .write_all(&err_pkt(
                    "git-gate: access denied: this gate serves only its own bottle's agent (use the remote URLs the agent's git config sets)",
                ))
                .await;
            st.audit.record(
                SIDECAR,
                json!({"op": op_name(service), "peer": peer.to_string(), "decision": "deny", "rule": "access-credential",
                       "ms": started.elapsed().as_millis() as u64}),
            );
            return;
        }
        Err(e) => {
            let msg = format!("git-gate: bad request: {e}");
            let _ = stream.write_all(&err_pkt(&msg)).await;
            st.audit.record(
                SIDECAR,
                json!({"op": "connect", "peer": peer.to_string(), "decision": "deny", "rule": "bad-request",
                       "ms": started.elapsed().as_millis() as u64}),
            );
            return;
        }
    };
    let op = op_name(req.service);
    let mut who = Who {
        st: &st,
        op,
        // The requested name is the agent's text: recorded only once it is
        // known to be a configured remote or clean (S10).
        remote: "[redacted]".into(),
        peer,
        started,
    };
    // Live config: re-read on every connection.
    let cfg = match GateConfig::load(&st.opts.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%e, "gate config invalid");
            who.deny(
                &mut stream,
                "config-invalid",
                "git-gate: the gate's configuration is invalid; refusing".into(),
            )
            .await;
            return;
        }
    };
    who.remote = match cfg.remote(&req.remote) {
        Some(r) => r.name.clone(),
        None => push::audit_name(
            crate::dlp::Detector::load_dir(&cfg.secrets_dir)
                .ok()
                .as_ref(),
            &req.remote,
        ),
    };
    let Some(remote) = cfg.remote(&req.remote).cloned() else {
        let names: Vec<&str> = cfg.remotes.iter().map(|r| r.name.as_str()).collect();
        let msg = format!(
            "git-gate: unknown remote '{}' (configured: {}); ask the operator to add it to the bottle",
            req.remote,
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        );
        who.deny(&mut stream, "unknown-remote", msg).await;
        return;
    };
    let mirror = mirror_path(&cfg.mirrors_dir, &remote.name);
    if let Err(e) = ensure_mirror(&mirror, &st.hook_program) {
        tracing::error!(%e, "mirror setup failed");
        who.deny(
            &mut stream,
            "mirror-error",
            format!("git-gate: mirror for '{}' unavailable", remote.name),
        )
        .await;
        return;
    }
    let lock = st.lock_for(&remote.name);
    match req.service {
        Service::UploadPack => {
            if !remote.fetch {
                who.deny(
                    &mut stream,
                    "fetch-disabled",
                    format!(
                        "git-gate: fetching from remote '{}' is disabled",
                        remote.name
                    ),
                )
                .await;
                return;
            }
            let guard = lock.lock().await;
            let refreshed = st.refresh(&mirror, &remote).await;
            drop(guard);
            let (rule, warning) = match refreshed {
                Ok(()) => ("fetch", None),
                Err(e) if remote.serve_stale && has_refs(&mirror) => ("serve-stale", Some(e)),
                Err(e) => {
                    let msg = format!(
                        "git-gate: upstream of remote '{}' is unreachable, refusing to serve stale data: {e}",
                        remote.name
                    );
                    who.deny(&mut stream, "upstream-unreachable", msg).await;
                    return;
                }
            };
            let mut line = json!({"op": "fetch", "remote": remote.name, "peer": peer.to_string(), "decision": "allow",
                                  "rule": rule, "scanned": 0, "ms": started.elapsed().as_millis() as u64});
            if let Some(w) = &warning {
                line["warning"] = json!(format!(
                    "upstream unreachable, served the mirror as last refreshed: {w}"
                ));
            }
            st.audit.record(SIDECAR, line);
            let res = run_service(&st, stream, &mirror, &req, &[]).await;
            if let Err(e) = res {
                tracing::warn!(%e, remote = %remote.name, "fetch session ended with an error");
            }
        }
        Service::ReceivePack => {
            // Hold the remote's lock for the whole push so no other session's
            // refresh can race the mirror's ref update.
            let _guard = lock.lock().await;
            // Refresh the mirror while the agent uploads its pack; the hook
            // waits for it before deciding (and refuses if upstream is down).
            // The advertisement may predate the refresh: every upstream
            // update carries a lease on the advertised value, so a ref that
            // moved upstream fails the push instead of being overwritten.
            let (done, refreshed) = tokio::sync::watch::channel(None);
            let refresher = if st.is_fresh(&remote.name, st.opts.push_refresh_window) {
                let _ = done.send(Some(Ok(())));
                None
            } else {
                let (st2, mirror, remote) = (st.clone(), mirror.clone(), remote.clone());
                Some(tokio::spawn(async move {
                    let r = st2.refresh(&mirror, &remote).await;
                    let _ = done.send(Some(r));
                }))
            };
            let token = random_token();
            st.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    token.clone(),
                    Session {
                        remote: remote.name.clone(),
                        refreshed,
                    },
                );
            let env = [
                (ENV_SOCKET, st.socket.to_string_lossy().into_owned()),
                (ENV_TOKEN, token.clone()),
            ];
            let res = run_service(&st, stream, &mirror, &req, &env).await;
            // Never leave a fetch running into the next session's lock.
            if let Some(r) = refresher {
                let _ = r.await;
            }
            st.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token);
            if let Err(e) = res {
                tracing::warn!(%e, remote = %remote.name, "push session ended with an error");
            }
        }
    }
}

struct Who<'a> {
    st: &'a State,
    op: &'static str,
    remote: String,
    peer: SocketAddr,
    started: Instant,
}

impl Who<'_> {
    /// Audit a refusal and send it to the client as an `ERR` packet.
    async fn deny(&self, stream: &mut TcpStream, rule: &str, msg: String) {
        self.st.audit.record(
            SIDECAR,
            json!({"op": self.op, "remote": self.remote, "peer": self.peer.to_string(), "decision": "deny",
                   "rule": rule, "scanned": 0, "ms": self.started.elapsed().as_millis() as u64}),
        );
        let _ = stream.write_all(&err_pkt(&msg)).await;
        let _ = stream.shutdown().await;
    }
}

/// Run `git upload-pack|receive-pack <mirror>` with the socket as its stdio.
async fn run_service(
    st: &State,
    stream: TcpStream,
    mirror: &Path,
    req: &Request,
    env: &[(&str, String)],
) -> std::io::Result<()> {
    let mut cmd = git_async();
    cmd.arg(req.service.git_subcommand());
    if req.service == Service::UploadPack {
        cmd.args(["--strict", "--timeout=600"]);
    }
    cmd.arg(mirror);
    if let Some(p) = &req.protocol {
        cmd.env("GIT_PROTOCOL", p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (mut rd, mut wr) = stream.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut rd, &mut stdin).await;
    });
    let errlog = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::debug!(line = %l, "git stderr");
        }
    });
    let down = async {
        let r = tokio::io::copy(&mut stdout, &mut wr).await;
        let _ = wr.shutdown().await;
        r
    };
    let res = match tokio::time::timeout(st.opts.session_timeout, down).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "session timed out",
        )),
    };
    up.abort();
    if res.is_err() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
    errlog.abort();
    res
}

async fn handle_hook(st: Arc<State>, stream: UnixStream) {
    let started = Instant::now();
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(rd).take(16 << 20);
    let reply = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<HookRequest>(&line) {
            Ok(req) => decide_push(st.clone(), req, started).await,
            Err(_) => HookReply {
                ok: false,
                messages: vec!["git-gate: push refused: malformed hook request".into()],
            },
        },
        Err(_) => return,
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
}

async fn decide_push(st: Arc<State>, req: HookRequest, started: Instant) -> HookReply {
    let refused = |msg: &str| HookReply {
        ok: false,
        messages: vec![format!("git-gate: push refused: {msg}")],
    };
    let session = st
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&req.token);
    let Some(session) = session else {
        return refused("unknown push session");
    };
    // Ref names are the agent's text: the record gets them only when the
    // detector finds nothing secret-shaped in them (S10).
    let detector = GateConfig::load(&st.opts.config)
        .ok()
        .and_then(|c| crate::dlp::Detector::load_dir(&c.secrets_dir).ok());
    let refs: Vec<String> = req
        .updates
        .iter()
        .map(|u| push::audit_name(detector.as_ref(), &u.refname))
        .collect();
    let audit_line = |decision: &str, rule: &str, scanned: usize, refname: Option<&str>| {
        let mut l = json!({"op": "push", "remote": session.remote, "refs": refs, "decision": decision,
                           "rule": rule, "scanned": scanned, "ms": started.elapsed().as_millis() as u64});
        if let Some(r) = refname {
            l["ref"] = json!(r);
        }
        l
    };
    let mut refreshed = session.refreshed.clone();
    let refresh = match refreshed.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Err("refresh did not finish".into())),
        Err(_) => Err("refresh did not finish".into()),
    };
    if let Err(e) = refresh {
        st.audit
            .record(SIDECAR, audit_line("deny", "upstream-unreachable", 0, None));
        return HookReply {
            ok: false,
            messages: vec![format!(
                "git-gate: upstream of remote '{}' is unreachable, push refused (nothing was accepted): {e}",
                session.remote
            )],
        };
    }
    let cfg = match GateConfig::load(&st.opts.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%e, "gate config invalid");
            st.audit
                .record(SIDECAR, audit_line("deny", "config-invalid", 0, None));
            return refused("the gate's configuration is invalid");
        }
    };
    let Some(remote) = cfg.remote(&session.remote).cloned() else {
        st.audit
            .record(SIDECAR, audit_line("deny", "unknown-remote", 0, None));
        return refused("the remote is no longer configured");
    };
    let Some(detector) = detector else {
        st.audit
            .record(SIDECAR, audit_line("deny", "scanner-unavailable", 0, None));
        return refused("the secret scanner could not load the bottle's secrets");
    };
    let mirror = mirror_path(&cfg.mirrors_dir, &remote.name);
    // Only git's quarantine variables, and only inside this mirror.
    let env: Vec<(String, String)> = req
        .env
        .into_iter()
        .filter(|(k, v)| {
            hook::FORWARDED_ENV.contains(&k.as_str())
                && v.split(':')
                    .all(|p| Path::new(p).starts_with(&mirror) && !p.contains("/../"))
        })
        .collect();
    let updates = req.updates;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut env = env;
        env.push(("GIT_DIR".into(), mirror.to_string_lossy().into_owned()));
        let ctx = push::PushContext {
            cfg: &cfg,
            remote: &remote,
            mirror: &mirror,
            env: &env,
            detector: &detector,
        };
        push::decide(&ctx, &updates)
    })
    .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(_) => {
            st.audit
                .record(SIDECAR, audit_line("deny", "internal-error", 0, None));
            return refused("internal error while checking the push");
        }
    };
    let decision = if outcome.ok { "allow" } else { "deny" };
    let mut line = audit_line(
        decision,
        &outcome.rule,
        outcome.scanned,
        outcome.refname.as_deref(),
    );
    line["scan_ms"] = json!(outcome.scan_ms);
    line["upstream_ms"] = json!(outcome.upstream_ms);
    st.audit.record(SIDECAR, line);
    HookReply {
        ok: outcome.ok,
        messages: outcome.messages,
    }
}
