//! The operator side of the permission queue: synchronous (no tokio), called
//! by `bottle queue` / `approve` / `deny`, the dashboard and `resume`.
//!
//! Every function takes a bottle's state dir (`$BOTTLE_HOME/state/<id>/`) and
//! uses its fixed layout: `queue/`, `egress/routes.toml`, `git/gate.toml`,
//! `supervise/sv.toml`, `operator/decision.key`, `audit/audit.jsonl`.
//! Mutations hold an exclusive lock on `operator/lock`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use super::config::SvConfig;
use super::model::{
    format_time, is_request_id, validate_text, Decision, Narrowing, Request, RequestKind, Status,
    Verdict, MAX_REASON,
};
use super::policy;
use super::store::{self, Signer};
use crate::audit::AuditLog;

/// Errors of the operator API. Messages are one line and name what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No request with this id in this bottle.
    #[error("no request `{id}` (see `bottle queue`)")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The request already has an answer.
    #[error("request `{id}` is already {status}{note}")]
    AlreadyDecided {
        /// The id.
        id: String,
        /// Its status.
        status: Status,
        /// Extra context.
        note: String,
    },
    /// The operator's input (ttl, narrowing, reason) is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> QueueError {
    QueueError::Io(e.to_string())
}

fn queue_dir(state_dir: &Path) -> PathBuf {
    crate::layout::in_state(state_dir, crate::layout::QUEUE_DIR)
}

/// `state_dir/egress/routes.toml`.
pub fn routes_path(state_dir: &Path) -> PathBuf {
    crate::layout::in_state(state_dir, crate::layout::ROUTES)
}

/// `state_dir/git/gate.toml`.
pub fn gate_path(state_dir: &Path) -> PathBuf {
    crate::layout::in_state(state_dir, crate::layout::GATE)
}

/// `state_dir/audit/audit.jsonl`.
pub fn audit_path(state_dir: &Path) -> PathBuf {
    crate::layout::in_state(state_dir, crate::layout::AUDIT)
}

/// `state_dir/operator/decision.key`: the private key that signs decisions.
/// It must never be mounted into the bundle or the agent.
pub fn operator_key_path(state_dir: &Path) -> PathBuf {
    Signer::key_path(state_dir)
}

fn identity_of(state_dir: &Path) -> String {
    state_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("unknown")
        .to_owned()
}

/// The bottle's audit log, masking the bottle's held values (`secrets/`,
/// when it can be read) in every line the operator API writes: a request
/// file from before the daemon screened requests, or an operator's note,
/// cannot put one on record (docs/security.md, S10).
fn audit(state_dir: &Path) -> AuditLog {
    let log = AuditLog::open(&audit_path(state_dir), &identity_of(state_dir)).unwrap_or_else(|e| {
        tracing::error!(%e, "cannot open the audit log; decisions are not recorded there");
        AuditLog::discard(&identity_of(state_dir))
    });
    let secrets = crate::layout::in_state(state_dir, crate::layout::SECRETS_DIR);
    if let Ok(det) = bottle_dlp::Detector::load_dir(&secrets) {
        log.set_mask("operator", std::sync::Arc::new(det));
    }
    log
}

/// Exclusive advisory lock on `operator/lock`, released on drop.
struct Lock(fs::File);

impl Lock {
    fn take(state_dir: &Path) -> Result<Self, QueueError> {
        use std::os::unix::io::AsRawFd;
        let dir = state_dir.join("operator");
        fs::create_dir_all(&dir).map_err(|e| io(format!("{}: {e}", dir.display())))?;
        let path = dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("{}: {e}", path.display())))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io(format!(
                "{}: lock: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: as above.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Create the operator signing key if absent and return its public key (hex)
/// — the host-side Prepare writes it into `sv.toml` as `operator_key`.
pub fn init(state_dir: &Path) -> Result<String, QueueError> {
    let _lock = Lock::take(state_dir)?;
    Ok(Signer::load_or_create(state_dir).map_err(io)?.public_hex())
}

fn signer(state_dir: &Path) -> Result<Signer, QueueError> {
    Signer::load_or_create(state_dir).map_err(io)
}

/// Every valid request of this bottle, oldest first, with its effective status
/// (decisions count only when their operator signature verifies).
pub fn list(state_dir: &Path) -> Result<Vec<Request>, QueueError> {
    let config = SvConfig::load_for_state(state_dir).map_err(io)?;
    let verifier = match Signer::load(state_dir).map_err(io)? {
        Some(s) => s.verifier(),
        // No key yet: no decision was ever signed, so none can be valid.
        None => store::Verifier::none(),
    };
    let view =
        store::load_all(&queue_dir(state_dir), &verifier, config.auto_deny_after).map_err(io)?;
    for (id, why) in &view.forged_decisions {
        tracing::warn!(%id, %why, "ignoring a decision file that is not an operator decision");
    }
    for (id, why) in &view.rejected {
        tracing::warn!(%id, %why, "ignoring an invalid request file");
    }
    Ok(view.requests)
}

/// Number of pending requests (0 when the queue cannot be read; logged).
pub fn pending_count(state_dir: &Path) -> usize {
    match list(state_dir) {
        Ok(list) => list.iter().filter(|r| r.status == Status::Pending).count(),
        Err(e) => {
            tracing::warn!(%e, "cannot read the queue of {}", state_dir.display());
            0
        }
    }
}

/// Find a request by id across every bottle under `state_root`
/// (`$BOTTLE_HOME/state`). Returns the bottle's state dir and the request.
pub fn find_request(state_root: &Path, req_id: &str) -> Option<(PathBuf, Request)> {
    if !is_request_id(req_id) {
        return None;
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(state_root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for dir in dirs {
        if !store::request_path(&queue_dir(&dir), req_id).exists() {
            continue;
        }
        if let Ok(list) = list(&dir) {
            if let Some(req) = list.into_iter().find(|r| r.id == req_id) {
                return Some((dir, req));
            }
        }
    }
    None
}

fn get(state_dir: &Path, req_id: &str) -> Result<Request, QueueError> {
    let not_found = || QueueError::NotFound {
        id: req_id.to_owned(),
    };
    if !is_request_id(req_id) {
        return Err(not_found());
    }
    list(state_dir)?
        .into_iter()
        .find(|r| r.id == req_id)
        .ok_or_else(not_found)
}

fn write_decision(
    state_dir: &Path,
    mut d: Decision,
    signer: &Signer,
) -> Result<Decision, QueueError> {
    signer.sign(&mut d);
    let bytes = serde_json::to_vec_pretty(&d).map_err(io)?;
    let path = store::decision_path(&queue_dir(state_dir), &d.id);
    store::atomic_write(&path, &bytes, Some(0o644))
        .map_err(|e| io(format!("{}: {e}", path.display())))?;
    Ok(d)
}

/// Approve a pending request, optionally narrowed, for `ttl` (default: the
/// bottle's `grant_ttl`). Egress: appends a grant route to `routes.toml`;
/// git push: appends a `[[grants]]` entry to `gate.toml`; capability: only
/// recorded (applied on resume). Then writes the signed decision.
pub fn approve(
    state_dir: &Path,
    req_id: &str,
    ttl: Option<Duration>,
    narrowed: &Narrowing,
) -> Result<Decision, QueueError> {
    let _lock = Lock::take(state_dir)?;
    let config = SvConfig::load_for_state(state_dir).map_err(io)?;
    let req = get(state_dir, req_id)?;
    if req.status != Status::Pending {
        let note = if req.decision.is_none() && req.status == Status::Denied {
            format!(
                " ({}; the agent can ask again)",
                req.status_reason.clone().unwrap_or_default()
            )
        } else {
            String::new()
        };
        return Err(QueueError::AlreadyDecided {
            id: req.id,
            status: req.status,
            note,
        });
    }
    let ttl = ttl.unwrap_or(config.grant_ttl);
    if ttl.is_zero() || ttl > Duration::from_secs(366 * 24 * 3600) {
        return Err(QueueError::Invalid(
            "--ttl must be between 1s and 1 year".into(),
        ));
    }
    let grant = narrowed.apply(&req.kind).map_err(QueueError::Invalid)?;
    let now = SystemTime::now();
    // Rounded up to the second (the file format's precision): a grant never
    // lasts less than the TTL asked for, and at most 1 s more.
    let expires_at = format_time(ceil_second(now + ttl));
    let signer = signer(state_dir)?;
    match &grant {
        RequestKind::Egress {
            host,
            port,
            paths,
            methods,
            allow_private,
        } => policy::add_egress_grant(
            &routes_path(state_dir),
            &policy::EgressGrant {
                host,
                port: *port,
                paths,
                methods,
                allow_private: *allow_private,
            },
            req_id,
            &expires_at,
        )
        .map_err(io)?,
        RequestKind::GitPush {
            remote,
            ref_pattern,
        } => policy::add_git_grant(
            &gate_path(state_dir),
            remote,
            ref_pattern,
            req_id,
            &expires_at,
        )
        .map_err(io)?,
        RequestKind::Capability { .. } => {}
    }
    let decision = Decision {
        id: req_id.to_owned(),
        verdict: Verdict::Approved,
        decided_at: format_time(now),
        reason: None,
        expires_at: Some(expires_at.clone()),
        grant: Some(grant.clone()),
        signature: String::new(),
    };
    let decision = match write_decision(state_dir, decision, &signer) {
        Ok(d) => d,
        Err(e) => {
            // Do not leave a grant nobody can see in the queue.
            let _ = revoke_grant(state_dir, req_id, &grant);
            return Err(e);
        }
    };
    audit(state_dir).record(
        "supervise",
        json!({
            "event": "decision",
            "actor": "operator",
            "id": req_id,
            "decision": "approve",
            "kind": grant.name(),
            "grant": grant,
            "expires_at": expires_at,
        }),
    );
    Ok(decision)
}

fn ceil_second(t: SystemTime) -> SystemTime {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    if nanos == 0 {
        t
    } else {
        t + Duration::from_nanos(u64::from(1_000_000_000 - nanos))
    }
}

fn revoke_grant(
    state_dir: &Path,
    req_id: &str,
    kind: &RequestKind,
) -> Result<Vec<String>, QueueError> {
    match kind {
        RequestKind::Egress { .. } => {
            policy::revoke_routes(&routes_path(state_dir), req_id).map_err(io)
        }
        RequestKind::GitPush { .. } => {
            policy::revoke_git_grants(&gate_path(state_dir), req_id).map_err(io)
        }
        RequestKind::Capability { .. } => Ok(Vec::new()),
    }
}

/// Deny a pending request with a reason the agent sees via `request_status`.
/// Denying an *approved* request revokes it: its grant is removed from the
/// policy file at once.
pub fn deny(state_dir: &Path, req_id: &str, reason: Option<&str>) -> Result<Decision, QueueError> {
    let _lock = Lock::take(state_dir)?;
    let reason = reason.unwrap_or("denied by the operator").to_owned();
    validate_text("reason", &reason, MAX_REASON).map_err(QueueError::Invalid)?;
    let req = get(state_dir, req_id)?;
    let revoking = match req.status {
        Status::Pending => false,
        Status::Approved => true,
        status => {
            return Err(QueueError::AlreadyDecided {
                id: req.id,
                status,
                note: String::new(),
            })
        }
    };
    let signer = signer(state_dir)?;
    if revoking {
        let granted = req
            .decision
            .as_ref()
            .and_then(|d| d.grant.clone())
            .unwrap_or(req.kind.clone());
        revoke_grant(state_dir, req_id, &granted)?;
    }
    let decision = Decision {
        id: req_id.to_owned(),
        verdict: Verdict::Denied,
        decided_at: format_time(SystemTime::now()),
        reason: Some(reason),
        expires_at: None,
        grant: None,
        signature: String::new(),
    };
    let decision = write_decision(state_dir, decision, &signer)?;
    audit(state_dir).record(
        "supervise",
        json!({
            "event": "decision",
            "actor": "operator",
            "id": req_id,
            "decision": if revoking { "revoke" } else { "deny" },
            "kind": req.kind.name(),
        }),
    );
    Ok(decision)
}

/// What [`sweep_expired`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Grant ids (or hosts) removed from `routes.toml`.
    pub routes: Vec<String>,
    /// Grant ids removed from `gate.toml`.
    pub git_grants: Vec<String>,
}

/// Remove every expired route / git grant from the policy files (the proxy
/// and gate already ignore them; this keeps the files tidy and true).
pub fn sweep_expired(state_dir: &Path) -> Result<Swept, QueueError> {
    let _lock = Lock::take(state_dir)?;
    let now = SystemTime::now();
    let swept = Swept {
        routes: policy::sweep_routes(&routes_path(state_dir), now).map_err(io)?,
        git_grants: policy::sweep_git_grants(&gate_path(state_dir), now).map_err(io)?,
    };
    if !swept.routes.is_empty() || !swept.git_grants.is_empty() {
        let log = audit(state_dir);
        for id in &swept.routes {
            log.record("supervise", json!({"event": "grant_expired", "actor": "operator", "file": "routes.toml", "id": id, "decision": "remove", "rule": "ttl"}));
        }
        for id in &swept.git_grants {
            log.record("supervise", json!({"event": "grant_expired", "actor": "operator", "file": "gate.toml", "id": id, "decision": "remove", "rule": "ttl"}));
        }
    }
    Ok(swept)
}

/// Approved, unexpired capability requests (for `resume` to apply).
pub fn approved_capabilities(state_dir: &Path) -> Result<Vec<Request>, QueueError> {
    Ok(list(state_dir)?
        .into_iter()
        .filter(|r| {
            r.status == Status::Approved && matches!(r.kind, RequestKind::Capability { .. })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_malformed_ids_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            approve(dir.path(), "../x", None, &Narrowing::default()),
            Err(QueueError::NotFound { .. })
        ));
        assert!(matches!(
            deny(dir.path(), "req-20260101T000000Z-0000000000000000", None),
            Err(QueueError::NotFound { .. })
        ));
        assert!(find_request(dir.path(), "req-20260101T000000Z-0000000000000000").is_none());
        assert_eq!(pending_count(dir.path()), 0);
    }

    #[test]
    fn the_operators_audit_lines_mask_the_bottles_held_values() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("demo-dev-abc1");
        init(&state).unwrap();
        let held = "db-Pa55w0rd-7Qx2-Lk91";
        let secrets = crate::layout::in_state(&state, crate::layout::SECRETS_DIR);
        fs::create_dir_all(&secrets).unwrap();
        fs::write(secrets.join("DB_PASSWORD"), held).unwrap();
        // A request file that carries the value (written before requests
        // were screened, say).
        let file = super::super::model::RequestFile {
            id: super::super::model::new_request_id(),
            kind: RequestKind::Capability {
                kind: "package".into(),
                detail: format!("apt package {held}"),
            },
            reason: "r".into(),
            status: super::super::model::FileStatus::Pending,
            created: format_time(SystemTime::now()),
            status_reason: None,
        };
        fs::create_dir_all(queue_dir(&state)).unwrap();
        store::write_request(&queue_dir(&state), &file).unwrap();
        approve(&state, &file.id, None, &Narrowing::default()).unwrap();
        let text = fs::read_to_string(audit_path(&state)).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(line["decision"], "approve");
        assert_eq!(line["masked"], true);
        assert!(!text.contains(held), "{text}");
    }
}
