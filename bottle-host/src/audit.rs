//! The JSONL audit log: one line per decision, shared by every daemon.
//!
//! A line never carries a secret value or a request/response body: callers
//! pass only names (hosts, paths, refs, rule names) and counts, and check
//! agent-supplied names with the DLP detector first. As defence in depth, a
//! daemon that holds the bottle's held values installs its detector with
//! [`AuditLog::set_mask`]: from then on every string (and key) of every line
//! written through that log and its clones has each held value, in every
//! form the detector searches, replaced by `*` before it is written, and the
//! line gets `"masked": true` (docs/security.md, S10).
//!
//! The log rotates by size (docs/security.md, "Bounds"): before a line would
//! take `audit.jsonl` past `max_bytes`, the file becomes `audit.jsonl.1`
//! (`.1` becomes `.2`, …, keeping `keep` rotated files; the oldest is
//! dropped). Every writer — the bundle's daemons and the host CLI recording
//! an approval — appends and rotates under an exclusive `flock` on
//! `audit.jsonl.lock` and reopens the file when another writer rotated it,
//! so no line is lost or split between files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// When the audit log rotates and how many rotated files it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// Rotate before the live file would grow past this many bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.keep`); at least 1.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

/// Default [`Rotation::max_bytes`] (16 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// Default [`Rotation::keep`].
pub const DEFAULT_KEEP: u32 = 5;

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_keep() -> u32 {
    DEFAULT_KEEP
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        }
    }
}

/// The files of an audit log, oldest first: `path.keep` … `path.1`, `path`
/// (those that exist).
pub fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=1000u32)
        .map(|i| rotated(path, i))
        .take_while(|p| p.exists())
        .collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

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
    file: Mutex<Option<Writer>>,
    /// Detectors whose held values are masked in every line, by owner.
    masks: Mutex<Vec<(String, Arc<bottle_dlp::Detector>)>>,
}

struct Writer {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    /// (device, inode) of `file`, to notice another writer's rotation.
    id: (u64, u64),
    lock: Option<File>,
}

fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn open_append(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let id = file_id(&file.metadata()?);
    Ok((file, id))
}

impl Writer {
    fn open(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let (file, id) = open_append(path)?;
        let lock_path = {
            let mut s = path.as_os_str().to_owned();
            s.push(".lock");
            PathBuf::from(s)
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .or_else(|_| File::open(&lock_path))
            .map_err(|e| tracing::warn!(error = %e, lock = %lock_path.display(), "audit lock file unavailable; rotating without it"))
            .ok();
        Ok(Self {
            path: path.to_path_buf(),
            rotation: Rotation {
                max_bytes: rotation.max_bytes.max(1),
                keep: rotation.keep.max(1),
            },
            file,
            id,
            lock,
        })
    }

    fn append(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        if let Some(lock) = &self.lock {
            lock.lock_exclusive()?;
        }
        let res = self.append_locked(lines);
        if let Some(lock) = &self.lock {
            let _ = FileExt::unlock(lock);
        }
        res
    }

    /// Append `lines` in as few writes as rotation allows (one, unless the
    /// file must rotate between two of them).
    fn append_locked(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        // Another writer may have rotated the file under us.
        let mut len = match std::fs::metadata(&self.path) {
            Ok(m) if file_id(&m) == self.id => m.len(),
            _ => {
                (self.file, self.id) = open_append(&self.path)?;
                self.file.metadata()?.len()
            }
        };
        let mut pending: Vec<u8> = Vec::new();
        for line in lines {
            if len > 0 && len + line.len() as u64 > self.rotation.max_bytes {
                self.file.write_all(&pending)?;
                pending.clear();
                for i in (1..self.rotation.keep).rev() {
                    let from = rotated(&self.path, i);
                    if from.exists() {
                        std::fs::rename(&from, rotated(&self.path, i + 1))?;
                    }
                }
                std::fs::rename(&self.path, rotated(&self.path, 1))?;
                (self.file, self.id) = open_append(&self.path)?;
                len = 0;
            }
            pending.extend_from_slice(line);
            len += line.len() as u64;
        }
        self.file.write_all(&pending)
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("identity", &self.inner.identity)
            .finish()
    }
}

impl AuditLog {
    /// Open (create/append) the audit file at `path` for bottle `identity`,
    /// rotating with the default [`Rotation`].
    pub fn open(path: &Path, identity: &str) -> std::io::Result<Self> {
        Self::open_with(path, identity, Rotation::default())
    }

    /// [`AuditLog::open`] with an explicit rotation policy.
    pub fn open_with(path: &Path, identity: &str, rotation: Rotation) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                identity: identity.to_owned(),
                file: Mutex::new(Some(Writer::open(path, rotation)?)),
                masks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// An audit log that drops every line (for unit tests that do not assert on it).
    pub fn discard(identity: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity: identity.to_owned(),
                file: Mutex::new(None),
                masks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The bottle identity stamped on every line.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// replaces its detector (after a reload of the secrets dir).
    pub fn set_mask(&self, owner: &str, detector: Arc<bottle_dlp::Detector>) {
        let mut masks = self.inner.masks.lock().unwrap_or_else(|p| p.into_inner());
        match masks.iter_mut().find(|(o, _)| o == owner) {
            Some(slot) => slot.1 = detector,
            None => masks.push((owner.to_owned(), detector)),
        }
    }

    /// Append one decision line. `fields` must be a JSON object; its keys are
    /// written after `ts`, `identity` and `sidecar` (anything else is
    /// written as no fields).
    pub fn record(&self, sidecar: &str, fields: Value) {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.record_batch(sidecar, [(SystemTime::now(), fields)]);
    }

    /// Append several lines of one sidecar, each `(time of the decision,
    /// fields)` with `fields` serialising as a JSON object (a struct or a
    /// map), under one lock and in one write unless the file rotates
    /// between two of them. A daemon that queues its decisions off the
    /// request path writes them so.
    pub fn record_batch<F: Serialize>(
        &self,
        sidecar: &str,
        lines: impl IntoIterator<Item = (SystemTime, F)>,
    ) {
        let lines: Vec<Vec<u8>> = lines
            .into_iter()
            .map(|(ts, fields)| self.line(ts, sidecar, &fields))
            .collect();
        if lines.is_empty() {
            return;
        }
        let mut guard = self.inner.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = guard.as_mut() {
            if let Err(err) = w.append(&lines) {
                tracing::error!(%err, "could not append to the audit log");
            }
        }
    }

    /// One JSONL line: `ts`, `identity`, `sidecar`, then the fields.
    fn line(&self, ts: SystemTime, sidecar: &str, fields: &impl Serialize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Stamped<'a, F> {
            ts: &'a str,
            identity: &'a str,
            sidecar: &'a str,
            #[serde(flatten)]
            fields: F,
        }
        let ts = rfc3339(ts);
        let stamped = Stamped {
            ts: &ts,
            identity: &self.inner.identity,
            sidecar,
            fields,
        };
        let mut line = Vec::with_capacity(256);
        if let Err(err) = serde_json::to_writer(&mut line, &stamped) {
            // Fields that are not an object: the line without them.
            tracing::error!(%err, "audit fields are not a JSON object");
            line.clear();
            let bare = Stamped {
                ts: &ts,
                identity: &self.inner.identity,
                sidecar,
                fields: Map::new(),
            };
            let _ = serde_json::to_writer(&mut line, &bare);
        }
        self.mask(&mut line);
        line.push(b'\n');
        line
    }

    /// Mask every held value of the installed detectors in a serialised
    /// line; a masked line gets `"masked": true`. Masking replaces bytes
    /// of a JSON string with `*`, so the line stays JSON; should it not
    /// (a value spanning JSON syntax), the line is parsed and masked value
    /// by value instead.
    fn mask(&self, line: &mut Vec<u8>) {
        let masks: Vec<Arc<bottle_dlp::Detector>> = self
            .inner
            .masks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, d)| d.clone())
            .collect();
        if masks.is_empty() {
            return;
        }
        let mut masked = None::<Vec<u8>>;
        for d in &masks {
            if let Some(m) = d.mask(masked.as_deref().unwrap_or(line)) {
                masked = Some(m);
            }
        }
        let Some(mut m) = masked else { return };
        if serde_json::from_slice::<Value>(&m).is_err() {
            let Ok(mut v) = serde_json::from_slice::<Value>(line) else {
                return;
            };
            mask_value(&mut v, &masks);
            m = serde_json::to_vec(&v).unwrap_or_default();
        }
        if m.last() == Some(&b'}') {
            m.pop();
            m.extend_from_slice(b",\"masked\":true}");
        }
        *line = m;
    }
}

/// Mask held values in every string and key of `v`; true when any changed.
fn mask_value(v: &mut Value, masks: &[Arc<bottle_dlp::Detector>]) -> bool {
    match v {
        Value::String(s) => mask_string(s, masks),
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, i| mask_value(i, masks) | any),
        Value::Object(map) => {
            let mut any = false;
            let old = std::mem::take(map);
            for (mut k, mut val) in old {
                any |= mask_string(&mut k, masks);
                any |= mask_value(&mut val, masks);
                map.insert(k, val);
            }
            any
        }
        _ => false,
    }
}

fn mask_string(s: &mut String, masks: &[Arc<bottle_dlp::Detector>]) -> bool {
    let mut changed = false;
    for d in masks {
        if let Some(m) = d.mask(s.as_bytes()) {
            *s = String::from_utf8_lossy(&m).into_owned();
            changed = true;
        }
    }
    changed
}

/// Current time as RFC 3339 with millisecond precision, UTC.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `ts` as RFC 3339 with millisecond precision, UTC.
pub fn rfc3339(ts: SystemTime) -> String {
    humantime::format_rfc3339_millis(ts).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_held_values_are_masked_in_every_line_of_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "t").unwrap();
        let held = "hunter2-Zx81-qq70-pLm3";
        let det = Arc::new(bottle_dlp::Detector::from_held_bytes(vec![(
            "db".into(),
            held.as_bytes().to_vec(),
        )]));
        log.record("supervise", serde_json::json!({"before": held}));
        log.clone().set_mask("supervise", det);
        let other_daemon = log.clone();
        other_daemon.record(
            "egress",
            serde_json::json!({"host": format!("{held}.x.test"), "list": [held], held: 1}),
        );
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(held);
        log.record(
            "supervise",
            serde_json::json!({"why": format!("b64 {b64}")}),
        );
        log.record("supervise", serde_json::json!({"clean": "nothing"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Before the mask: as written (the control that masking is what
        // changed the later lines).
        assert_eq!(lines[0]["before"], held);
        let after = text.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert!(!after.contains(held) && !after.contains(&b64), "{after}");
        assert_eq!(
            lines[1]["host"],
            format!("{}.x.test", "*".repeat(held.len()))
        );
        assert_eq!(lines[1]["masked"], true);
        assert_eq!(lines[2]["masked"], true);
        assert!(lines[3].get("masked").is_none());
        assert_eq!(lines[3]["clean"], "nothing");
    }

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

    #[test]
    fn rotation_keeps_n_files_and_loses_no_line_with_many_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 4096,
            keep: 1000,
        };
        // Separate handles stand for separate processes (own file, own
        // lock); clones of one handle for threads of one daemon.
        let logs: Vec<AuditLog> = (0..4)
            .map(|_| AuditLog::open_with(&path, "t", rotation).unwrap())
            .collect();
        let per_thread = 300;
        std::thread::scope(|s| {
            for (w, log) in logs.iter().enumerate() {
                for t in 0..2 {
                    let log = log.clone();
                    s.spawn(move || {
                        for i in 0..per_thread {
                            log.record("egress", serde_json::json!({"w": w, "t": t, "i": i}));
                        }
                    });
                }
            }
        });
        let files = files_oldest_first(&path);
        assert!(files.len() > 5, "expected rotations, got {files:?}");
        let mut seen = std::collections::BTreeSet::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(
                text.len() as u64 <= rotation.max_bytes,
                "{} is too big",
                f.display()
            );
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).expect("whole JSON line");
                assert!(seen.insert((v["w"].as_u64(), v["t"].as_u64(), v["i"].as_u64())));
            }
        }
        assert_eq!(seen.len(), 4 * 2 * per_thread);

        // With a small `keep`, only that many rotated files remain.
        let path2 = dir.path().join("small.jsonl");
        let log = AuditLog::open_with(
            &path2,
            "t",
            Rotation {
                max_bytes: 512,
                keep: 2,
            },
        )
        .unwrap();
        for i in 0..100 {
            log.record("egress", serde_json::json!({"i": i}));
        }
        let files = files_oldest_first(&path2);
        assert_eq!(files.len(), 3, "{files:?}");
        // The newest line is in the live file.
        let live = std::fs::read_to_string(&path2).unwrap();
        assert!(live.lines().last().unwrap().contains("\"i\":99"));
    }

    #[test]
    fn a_batch_keeps_order_and_times_and_rotates_between_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 600,
            keep: 100,
        };
        let log = AuditLog::open_with(&path, "t", rotation).unwrap();
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        log.record_batch(
            "egress",
            (0..40u64).map(|i| {
                (
                    t0 + std::time::Duration::from_millis(i),
                    serde_json::json!({"i": i}),
                )
            }),
        );
        let mut seen = Vec::new();
        for f in files_oldest_first(&path) {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                text.len() as u64 <= rotation.max_bytes,
                "{} too big",
                f.display()
            );
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).expect("whole JSON line");
                assert_eq!(v["sidecar"], "egress");
                seen.push((
                    v["i"].as_u64().unwrap(),
                    v["ts"].as_str().unwrap().to_owned(),
                ));
            }
        }
        assert!(
            files_oldest_first(&path).len() > 2,
            "the batch should rotate"
        );
        let want: Vec<(u64, String)> = (0..40u64)
            .map(|i| (i, rfc3339(t0 + std::time::Duration::from_millis(i))))
            .collect();
        assert_eq!(seen, want, "every line once, in order, with its own time");
        assert_eq!(seen[0].1, "2023-11-14T22:13:20.123Z");
    }
}
