//! Files on disk shared by the daemon and the operator API: atomic writes,
//! the operator signing key, and reading the queue into effective
//! [`Request`]s (only *verified* decisions count).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::model::{
    is_request_id, parse_time, Decision, FileStatus, Request, RequestFile, Status, Verdict,
};

pub use bottle_core::state::atomic_write_io as atomic_write;

/// Where the request file of `id` lives.
pub fn request_path(queue: &Path, id: &str) -> PathBuf {
    queue.join(format!("{id}.json"))
}

/// Where the decision file of `id` lives.
pub fn decision_path(queue: &Path, id: &str) -> PathBuf {
    queue.join(format!("{id}.decision.json"))
}

/// Ids of every request file in `queue` (sorted, oldest first by id).
pub fn request_ids(queue: &Path) -> std::io::Result<Vec<String>> {
    let mut ids = Vec::new();
    let entries = match fs::read_dir(queue) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".json") {
            if is_request_id(id) {
                ids.push(id.to_owned());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

/// Read and validate one request file. `Err` carries a reason it was rejected.
pub fn read_request_file(queue: &Path, id: &str) -> Result<Option<RequestFile>, String> {
    let path = request_path(queue, id);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if bytes.len() > 64 * 1024 {
        return Err(format!("{}: too large", path.display()));
    }
    let file: RequestFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.id != id {
        return Err(format!(
            "{}: id does not match the file name",
            path.display()
        ));
    }
    file.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(file))
}

/// What a reader knows about a decision file.
#[derive(Debug)]
pub enum DecisionRead {
    /// No decision file.
    None,
    /// A decision whose signature verifies.
    Valid(Decision),
    /// A file is there but it is not an operator decision (forged or corrupt).
    Invalid(String),
}

/// Read the decision of `id` and check its signature against `verifier`.
pub fn read_decision(queue: &Path, id: &str, verifier: &Verifier) -> DecisionRead {
    let path = decision_path(queue, id);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DecisionRead::None,
        Err(e) => return DecisionRead::Invalid(format!("unreadable: {e}")),
    };
    let decision: Decision = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => return DecisionRead::Invalid(format!("unparsable: {e}")),
    };
    if decision.id != id {
        return DecisionRead::Invalid("id does not match the request".into());
    }
    if !verifier.verify(&decision) {
        return DecisionRead::Invalid("signature does not verify with the operator key".into());
    }
    DecisionRead::Valid(decision)
}

/// Verifies operator decision signatures (Ed25519 public key).
#[derive(Clone)]
pub struct Verifier {
    public: Option<Vec<u8>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("public", &self.public.as_ref().map(hex::encode))
            .finish()
    }
}

impl Verifier {
    /// From the hex public key (as written in `sv.toml` `operator_key`).
    pub fn from_hex(public_hex: &str) -> Result<Self, String> {
        let public =
            hex::decode(public_hex.trim()).map_err(|_| "operator_key is not hex".to_string())?;
        if public.len() != 32 {
            return Err("operator_key must be a 32-byte Ed25519 public key (64 hex chars)".into());
        }
        Ok(Self {
            public: Some(public),
        })
    }

    /// A verifier that accepts nothing (no key known: every decision is unverified).
    pub fn none() -> Self {
        Self { public: None }
    }

    /// Whether `d` carries a valid operator signature.
    pub fn verify(&self, d: &Decision) -> bool {
        let Some(public) = &self.public else {
            return false;
        };
        let Ok(sig) = hex::decode(&d.signature) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::ED25519, public)
            .verify(&d.signed_bytes(), &sig)
            .is_ok()
    }
}

/// The operator's signing key, `state/<id>/operator/decision.key` (PKCS#8, mode 600).
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl Signer {
    /// Path of the private key inside a state dir.
    pub fn key_path(state_dir: &Path) -> PathBuf {
        state_dir.join("operator").join("decision.key")
    }

    /// Load the key if it exists.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, String> {
        let path = Self::key_path(state_dir);
        match fs::read(&path) {
            Ok(bytes) => Ed25519KeyPair::from_pkcs8(&bytes)
                .map(|pair| Some(Self { pair }))
                .map_err(|_| format!("{}: not an Ed25519 PKCS#8 key", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Load the key, creating it (and `operator/`, mode 700) when absent.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = Self::key_path(state_dir);
        match fs::read(&path) {
            Ok(bytes) => {
                let pair = Ed25519KeyPair::from_pkcs8(&bytes)
                    .map_err(|_| format!("{}: not an Ed25519 PKCS#8 key", path.display()))?;
                Ok(Self { pair })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().expect("key path has a parent");
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| "could not generate the operator key".to_string())?;
                // create_new semantics via hard link would be stricter; atomic rename
                // is enough: only operator processes on the host write here.
                atomic_write(&path, pkcs8.as_ref(), Some(0o600))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                // Another process may have won the race; load whatever is there now.
                let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let pair = Ed25519KeyPair::from_pkcs8(&bytes)
                    .map_err(|_| format!("{}: not an Ed25519 PKCS#8 key", path.display()))?;
                Ok(Self { pair })
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Hex public key (for `sv.toml` `operator_key`).
    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// A verifier for this key.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            public: Some(self.pair.public_key().as_ref().to_vec()),
        }
    }

    /// Fill in `d.signature`.
    pub fn sign(&self, d: &mut Decision) {
        d.signature = hex::encode(self.pair.sign(&d.signed_bytes()).as_ref());
    }
}

/// Everything the queue says, as effective requests.
pub struct QueueView {
    /// Valid requests, oldest first.
    pub requests: Vec<Request>,
    /// Request ids whose decision file was present but not a valid operator decision.
    pub forged_decisions: Vec<(String, String)>,
    /// Request files that were rejected (invalid content), with the reason.
    pub rejected: Vec<(String, String)>,
}

/// Effective status of one request file given its (verified) decision.
pub fn effective(
    file: RequestFile,
    decision: Option<Decision>,
    auto_deny_after: Duration,
    now: SystemTime,
) -> Request {
    let mut req = Request {
        id: file.id,
        kind: file.kind,
        reason: file.reason,
        created: file.created,
        status: Status::Pending,
        status_reason: None,
        expires_at: None,
        decision: None,
    };
    if let Some(d) = decision {
        match d.verdict {
            Verdict::Approved => {
                let expired = d
                    .expires_at
                    .as_deref()
                    .map(|e| parse_time(e).is_none_or(|t| t <= now))
                    .unwrap_or(false);
                req.status = if expired {
                    Status::Expired
                } else {
                    Status::Approved
                };
                req.expires_at = d.expires_at.clone();
                req.status_reason = d.reason.clone();
            }
            Verdict::Denied => {
                req.status = Status::Denied;
                req.status_reason = Some(
                    d.reason
                        .clone()
                        .unwrap_or_else(|| "denied by the operator".into()),
                );
            }
        }
        req.decision = Some(d);
        return req;
    }
    let deadline = parse_time(&req.created).map(|c| c + auto_deny_after);
    if file.status == FileStatus::Denied || deadline.is_none_or(|d| d <= now) {
        req.status = Status::Denied;
        req.status_reason = Some(auto_deny_note(auto_deny_after));
    }
    req
}

/// The text an auto-denied request carries.
pub fn auto_deny_note(after: Duration) -> String {
    format!(
        "no operator answer within {}",
        humantime::format_duration(Duration::from_secs(after.as_secs().max(1)))
    )
}

/// Read one request as its effective view.
pub fn load_one(
    queue: &Path,
    id: &str,
    verifier: &Verifier,
    auto_deny_after: Duration,
) -> Result<Option<(Request, Option<String>)>, String> {
    if !is_request_id(id) {
        return Ok(None);
    }
    let Some(file) = read_request_file(queue, id)? else {
        return Ok(None);
    };
    let (decision, forged) = match read_decision(queue, id, verifier) {
        DecisionRead::None => (None, None),
        DecisionRead::Valid(d) => (Some(d), None),
        DecisionRead::Invalid(why) => (None, Some(why)),
    };
    Ok(Some((
        effective(file, decision, auto_deny_after, SystemTime::now()),
        forged,
    )))
}

/// Read the whole queue.
pub fn load_all(
    queue: &Path,
    verifier: &Verifier,
    auto_deny_after: Duration,
) -> std::io::Result<QueueView> {
    let mut view = QueueView {
        requests: Vec::new(),
        forged_decisions: Vec::new(),
        rejected: Vec::new(),
    };
    let now = SystemTime::now();
    for id in request_ids(queue)? {
        let file = match read_request_file(queue, &id) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(why) => {
                view.rejected.push((id, why));
                continue;
            }
        };
        let decision = match read_decision(queue, &id, verifier) {
            DecisionRead::None => None,
            DecisionRead::Valid(d) => Some(d),
            DecisionRead::Invalid(why) => {
                view.forged_decisions.push((id.clone(), why));
                None
            }
        };
        view.requests
            .push(effective(file, decision, auto_deny_after, now));
    }
    Ok(view)
}

/// Create a new request file (fails if the id exists).
pub fn write_request(queue: &Path, file: &RequestFile) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    atomic_write(&request_path(queue, &file.id), &bytes, Some(0o644))
}

/// Mark every pending, undecided request older than `after` as denied in its
/// file. Returns the ids it marked.
pub fn mark_auto_denied(queue: &Path, after: Duration) -> std::io::Result<Vec<String>> {
    let now = SystemTime::now();
    let mut marked = Vec::new();
    for id in request_ids(queue)? {
        if decision_path(queue, &id).exists() {
            continue;
        }
        let Ok(Some(mut file)) = read_request_file(queue, &id) else {
            continue;
        };
        if file.status != FileStatus::Pending {
            continue;
        }
        let due = parse_time(&file.created).is_none_or(|c| c + after <= now);
        if due {
            file.status = FileStatus::Denied;
            file.status_reason = Some(auto_deny_note(after));
            write_request(queue, &file)?;
            marked.push(id);
        }
    }
    Ok(marked)
}
