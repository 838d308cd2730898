//! One hook connection: a mirror's pre-receive hook hands over the ref
//! updates of a push session; the daemon decides and answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::accept::State;
use super::git::mirror_path;
use super::hook::{self, HookReply, HookRequest};
use super::{push, GateConfig, SIDECAR};

/// Answer one hook connection: read its request, decide, reply.
pub(super) async fn handle_hook(st: Arc<State>, stream: UnixStream) {
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

/// Decide the push of one session: its mirror refresh worked, the config
/// and the remote still stand, the scanner loads; then [`push::decide`]
/// checks the refs, scans and pushes upstream.
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
        .and_then(|c| crate::dlp::Detector::load_dir(&c.secrets_dir).ok())
        .map(Arc::new);
    // Defence in depth: the audit log masks these held values in every line.
    if let Some(d) = &detector {
        st.audit.set_mask(SIDECAR, d.clone());
    }
    let refs: Vec<String> = req
        .updates
        .iter()
        .map(|u| push::audit_name(detector.as_deref(), &u.refname))
        .collect();
    let audit_line = |decision: &str, rule: &str, scanned: usize, refname: Option<&str>| {
        let mut l = json!({"op": "push", "remote": session.remote, "refs": refs, "decision": decision,
                           "rule": rule, "scanned": scanned, "ms": started.elapsed().as_millis() as u64});
        if let Some(r) = refname {
            l["ref"] = json!(r);
        }
        l
    };
    let deny = |rule: &str, msg: &str| {
        st.audit.record(SIDECAR, audit_line("deny", rule, 0, None));
        refused(msg)
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
            return deny("config-invalid", "the gate's configuration is invalid");
        }
    };
    let Some(remote) = cfg.remote(&session.remote).cloned() else {
        return deny("unknown-remote", "the remote is no longer configured");
    };
    let Some(detector) = detector else {
        return deny(
            "scanner-unavailable",
            "the secret scanner could not load the bottle's secrets",
        );
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
        Err(_) => return deny("internal-error", "internal error while checking the push"),
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
