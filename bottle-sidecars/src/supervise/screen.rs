//! The DLP screen in front of the queue: every string an agent puts in a
//! request (host, paths, methods, detail, reason, ids, any field) is scanned
//! with the bottle's detector — its held values plus the DLP patterns, the
//! same detector egress and git-gate use — before anything is written to the
//! queue or the audit log (docs/security.md, S10). A hit is refused; the
//! refusal names the rule and the field, never the value.
//!
//! The detector is rebuilt when the secrets dir changes (names, sizes,
//! mtimes), and each build is installed as the audit log's mask
//! ([`crate::audit::AuditLog::set_mask`]) so no line of the bundle carries a
//! held value even if a caller forgets to screen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::audit::AuditLog;
use crate::dlp::Detector;

/// What identifies one state of the secrets dir.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

/// A refused field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// `held:<name>` or `pattern:<id>`.
    pub rule: String,
    /// The field it was found in (`all fields` for a value split over several).
    pub field: String,
}

/// Why the screen cannot answer (fail closed: the request is refused).
#[derive(Debug, thiserror::Error)]
#[error(
    "the held-secrets dir {dir} is unreadable: {source} (fix: check the bottle's secrets mount)"
)]
pub(crate) struct Unavailable {
    dir: PathBuf,
    source: std::io::Error,
}

/// The detector of one daemon, reloaded on change.
pub(crate) struct Screen {
    dir: Option<PathBuf>,
    audit: AuditLog,
    current: Mutex<(Fingerprint, Arc<Detector>)>,
}

const OWNER: &str = "supervise";

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::metadata(entry.path())?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            meta.len(),
            meta.modified().ok(),
        ));
    }
    out.sort();
    Ok(out)
}

impl Screen {
    /// Load the held values of `dir` (none: patterns only) and install them
    /// as `audit`'s mask. An unreadable dir is an error: the daemon does not
    /// start without its screen.
    pub fn load(dir: Option<PathBuf>, audit: AuditLog) -> Result<Self, Unavailable> {
        let (print, det) = match &dir {
            Some(d) => Self::build(d)?,
            None => (Vec::new(), Arc::new(Detector::default())),
        };
        audit.set_mask(OWNER, det.clone());
        Ok(Self {
            dir,
            audit,
            current: Mutex::new((print, det)),
        })
    }

    fn build(dir: &Path) -> Result<(Fingerprint, Arc<Detector>), Unavailable> {
        let err = |source| Unavailable {
            dir: dir.to_path_buf(),
            source,
        };
        let print = fingerprint(dir).map_err(err)?;
        let det = Detector::load_dir(dir).map_err(err)?;
        Ok((print, Arc::new(det)))
    }

    /// The detector for the secrets dir as it is now.
    pub fn detector(&self) -> Result<Arc<Detector>, Unavailable> {
        let Some(dir) = &self.dir else {
            return Ok(self.lock().1.clone());
        };
        let now = fingerprint(dir).map_err(|source| Unavailable {
            dir: dir.clone(),
            source,
        })?;
        {
            let cur = self.lock();
            if cur.0 == now {
                return Ok(cur.1.clone());
            }
        }
        let (print, det) = Self::build(dir)?;
        self.audit.set_mask(OWNER, det.clone());
        *self.lock() = (print, det.clone());
        Ok(det)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Fingerprint, Arc<Detector>)> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first field of `fields` (name, agent text) that holds a secret, or a
/// secret spelled across them (all values back to back).
pub(crate) fn scan_fields(det: &Detector, fields: &[(&str, &str)]) -> Option<Hit> {
    for (name, value) in fields {
        if let Some(f) = det.scan(value.as_bytes()) {
            return Some(Hit {
                rule: f.rule,
                field: (*name).to_owned(),
            });
        }
    }
    let joined: String = fields.iter().map(|(_, v)| *v).collect();
    det.scan(joined.as_bytes()).map(|f| Hit {
        rule: f.rule,
        field: "all fields".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_value_in_any_field_or_split_over_fields_is_found() {
        let held = "pa55-Qz7v-81kd-Lm0x";
        let det = Detector::from_held_bytes(vec![("db".into(), held.as_bytes().to_vec())]);
        assert_eq!(
            scan_fields(&det, &[("host", "a.test"), ("reason", "need it")]),
            None
        );
        let path = format!("/x/{held}");
        let hit = scan_fields(&det, &[("host", "a.test"), ("paths", &path)]).unwrap();
        assert_eq!(
            (hit.rule.as_str(), hit.field.as_str()),
            ("held:db", "paths")
        );
        let hit = scan_fields(&det, &[("kind", &held[..9]), ("detail", &held[9..])]).unwrap();
        assert_eq!(
            (hit.rule.as_str(), hit.field.as_str()),
            ("held:db", "all fields")
        );
    }
}
