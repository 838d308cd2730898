//! Binding and the accept loops: agents' git:// connections on TCP, the
//! mirrors' pre-receive hooks on a private unix socket; the [`State`] every
//! connection shares.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};

use super::git::{ensure_mirror, mirror_path, refresh};
use super::{hook_session, io_err, session, Error, GateConfig, Options, RemoteConfig};
use crate::audit::AuditLog;

/// A push in progress: the hook connection finds it by its token.
pub(super) struct Session {
    /// The remote pushed to.
    pub(super) remote: String,
    /// Result of the mirror refresh that runs while the agent uploads.
    pub(super) refreshed: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
}

/// What every connection shares.
pub(super) struct State {
    pub(super) opts: Options,
    pub(super) audit: AuditLog,
    /// The mirrors' pre-receive hook program (absolute).
    pub(super) hook_program: PathBuf,
    /// The hooks' unix socket.
    pub(super) socket: PathBuf,
    /// Pushes in progress, by token.
    pub(super) sessions: Mutex<HashMap<String, Session>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Last successful refresh per remote.
    fresh: Mutex<HashMap<String, Instant>>,
    /// Concurrent agent sessions.
    pub(super) slots: tokio::sync::Semaphore,
    /// The bottle's access credential, if it has one.
    pub(super) access: Option<crate::access::AccessKey>,
}

impl State {
    /// Refresh `remote`'s mirror and remember when it last succeeded.
    pub(super) async fn refresh(&self, mirror: &Path, remote: &RemoteConfig) -> Result<(), String> {
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
    pub(super) fn is_fresh(&self, remote: &str, window: Duration) -> bool {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(remote)
            .is_some_and(|t| t.elapsed() < window)
    }

    /// The lock that serializes sessions on `remote`'s mirror.
    pub(super) fn lock_for(&self, remote: &str) -> Arc<tokio::sync::Mutex<()>> {
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
                    tokio::spawn(async move { hook_session::handle_hook(st, stream).await });
                }
                Err(e) => return e,
            }
        }
    });
    let result = loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let st = state.clone();
                tokio::spawn(async move { session::handle_conn(st, stream, peer).await });
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
