//! One agent connection: admission (a free slot, a well-formed request, the
//! access credential), the configured remote and its mirror, then a fetch
//! or a push served by `git upload-pack` / `git receive-pack` on the
//! mirror with the socket as its stdio.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::accept::{Session, State};
use super::git::{ensure_mirror, git_async, has_refs, mirror_path, ENV_SOCKET, ENV_TOKEN};
use super::pktline::{self, err_pkt, Request, Service};
use super::{push, GateConfig, RemoteConfig, SIDECAR};

/// Serve one agent connection to its end.
pub(super) async fn handle_conn(st: Arc<State>, mut stream: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Ok(_permit) = st.slots.try_acquire() else {
        let _ = stream
            .write_all(&err_pkt(
                "git-gate: too many concurrent sessions, retry later",
            ))
            .await;
        return;
    };
    let Some(req) = admit(&st, &mut stream, peer, started).await else {
        return;
    };
    let mut who = Who {
        st: &st,
        op: op_name(req.service),
        // The requested name is the agent's text: recorded only once it is
        // known to be a configured remote or clean (S10).
        remote: "[redacted]".into(),
        peer,
        started,
    };
    let Some((remote, mirror)) = open_remote(&mut who, &mut stream, &req).await else {
        return;
    };
    match req.service {
        Service::UploadPack => fetch(&who, stream, &remote, &mirror, &req).await,
        Service::ReceivePack => push(&st, stream, &remote, &mirror, &req).await,
    }
}

/// Read the one request pkt-line and check the access credential; a bad
/// or refused request is answered, audited and ends the connection.
async fn admit(
    st: &State,
    stream: &mut TcpStream,
    peer: SocketAddr,
    started: Instant,
) -> Option<Request> {
    let req = match tokio::time::timeout(Duration::from_secs(15), pktline::read_pkt(stream)).await {
        Ok(Ok(p)) => pktline::parse_request(&p),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(pktline::RequestError::Bad("no request within 15s".into())),
    };
    let (op, rule, msg) = match req.map(|r| check_access(st.access.as_ref(), r)) {
        Ok(Ok(r)) => return Some(r),
        // No credential, or a wrong one: not this bottle's agent.
        Ok(Err(service)) => (
            op_name(service),
            "access-credential",
            "git-gate: access denied: this gate serves only its own bottle's agent (use the remote URLs the agent's git config sets)".to_owned(),
        ),
        Err(e) => (
            "connect",
            "bad-request",
            format!("git-gate: bad request: {e}"),
        ),
    };
    let _ = stream.write_all(&err_pkt(&msg)).await;
    st.audit.record(
        SIDECAR,
        json!({"op": op, "peer": peer.to_string(), "decision": "deny", "rule": rule,
               "ms": started.elapsed().as_millis() as u64}),
    );
    None
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

/// The configured remote the request names (from the live config, re-read
/// on every connection) and its mirror, set up; a refusal is answered and
/// audited.
async fn open_remote(
    who: &mut Who<'_>,
    stream: &mut TcpStream,
    req: &Request,
) -> Option<(RemoteConfig, PathBuf)> {
    let cfg = match GateConfig::load(&who.st.opts.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%e, "gate config invalid");
            who.deny(
                stream,
                "config-invalid",
                "git-gate: the gate's configuration is invalid; refusing".into(),
            )
            .await;
            return None;
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
        who.deny(stream, "unknown-remote", msg).await;
        return None;
    };
    let mirror = mirror_path(&cfg.mirrors_dir, &remote.name);
    if let Err(e) = ensure_mirror(&mirror, &who.st.hook_program) {
        tracing::error!(%e, "mirror setup failed");
        who.deny(
            stream,
            "mirror-error",
            format!("git-gate: mirror for '{}' unavailable", remote.name),
        )
        .await;
        return None;
    }
    Some((remote, mirror))
}

/// A fetch: refresh the mirror from upstream (or, when the remote allows
/// it and upstream is down, serve it stale), then serve it.
async fn fetch(
    who: &Who<'_>,
    mut stream: TcpStream,
    remote: &RemoteConfig,
    mirror: &Path,
    req: &Request,
) {
    let st = who.st;
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
    let guard = st.lock_for(&remote.name).lock_owned().await;
    let refreshed = st.refresh(mirror, remote).await;
    drop(guard);
    let (rule, warning) = match refreshed {
        Ok(()) => ("fetch", None),
        Err(e) if remote.serve_stale && has_refs(mirror) => ("serve-stale", Some(e)),
        Err(e) => {
            let msg = format!(
                "git-gate: upstream of remote '{}' is unreachable, refusing to serve stale data: {e}",
                remote.name
            );
            who.deny(&mut stream, "upstream-unreachable", msg).await;
            return;
        }
    };
    let mut line = json!({"op": "fetch", "remote": remote.name, "peer": who.peer.to_string(), "decision": "allow",
                          "rule": rule, "scanned": 0, "ms": who.started.elapsed().as_millis() as u64});
    if let Some(w) = &warning {
        line["warning"] = json!(format!(
            "upstream unreachable, served the mirror as last refreshed: {w}"
        ));
    }
    st.audit.record(SIDECAR, line);
    let res = run_service(st, stream, mirror, req, &[]).await;
    if let Err(e) = res {
        tracing::warn!(%e, remote = %remote.name, "fetch session ended with an error");
    }
}

/// A push: serve `receive-pack` with a session token the mirror's hook
/// hands back to the daemon (`hook_session`), which decides.
async fn push(
    st: &Arc<State>,
    stream: TcpStream,
    remote: &RemoteConfig,
    mirror: &Path,
    req: &Request,
) {
    // Hold the remote's lock for the whole push so no other session's
    // refresh can race the mirror's ref update.
    let _guard = st.lock_for(&remote.name).lock_owned().await;
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
        let (st2, mirror, remote) = (st.clone(), mirror.to_owned(), remote.clone());
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
    let res = run_service(st, stream, mirror, req, &env).await;
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

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Who is asking, for the audit line of a refusal.
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
