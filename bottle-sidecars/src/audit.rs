//! The JSONL audit log: one line per decision, shared by every daemon.
//!
//! A line never carries a secret value or a request/response body: callers
//! pass only names (hosts, paths, refs, rule names) and counts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// A shareable, append-only JSONL writer.
///
/// Every line gets `ts` (RFC 3339, UTC), `identity` and `sidecar` plus the
/// caller's fields. Lines are written with one `write_all` under a lock so
/// concurrent daemons never interleave.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    identity: String,
    file: Mutex<Option<File>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("identity", &self.inner.identity)
            .finish()
    }
}

impl AuditLog {
    /// Open (create/append) the audit file at `path` for bottle `identity`.
    pub fn open(path: &Path, identity: &str) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                identity: identity.to_owned(),
                file: Mutex::new(Some(file)),
            }),
        })
    }

    /// An audit log that drops every line (for unit tests that do not assert on it).
    pub fn discard(identity: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity: identity.to_owned(),
                file: Mutex::new(None),
            }),
        }
    }

    /// The bottle identity stamped on every line.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// Append one decision line. `fields` must be a JSON object; its keys are
    /// merged after `ts`, `identity` and `sidecar`.
    pub fn record(&self, sidecar: &str, fields: Value) {
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(now_rfc3339()));
        line.insert(
            "identity".into(),
            Value::String(self.inner.identity.clone()),
        );
        line.insert("sidecar".into(), Value::String(sidecar.to_owned()));
        if let Value::Object(map) = fields {
            for (k, v) in map {
                line.insert(k, v);
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut guard = self.inner.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = guard.as_mut() {
            if let Err(err) = file.write_all(text.as_bytes()) {
                tracing::error!(%err, "could not append to the audit log");
            }
        }
    }
}

/// Current time as RFC 3339 with millisecond precision, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_identity_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "demo-dev-abc1").unwrap();
        log.record(
            "egress",
            serde_json::json!({"decision": "deny", "host": "x.test"}),
        );
        log.record("git-gate", serde_json::json!({"decision": "allow"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["identity"], "demo-dev-abc1");
        assert_eq!(lines[0]["sidecar"], "egress");
        assert_eq!(lines[0]["host"], "x.test");
        assert_eq!(lines[1]["decision"], "allow");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    }
}
