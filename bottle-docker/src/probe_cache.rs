//! The gVisor probe's cache: a `docker run --runtime runsc` test container
//! costs about half a second, and `bottle start` probes every time.
//!
//! Only a positive result is cached ("a test container ran under runsc"),
//! keyed by everything that could change it: the engine's daemon id and
//! version, its runtimes as `docker info` lists them (paths and arguments),
//! the runsc binary's inode, size, mtime and ctime, `DOCKER_HOST` /
//! `DOCKER_CONTEXT`, and bottle's version. A key that cannot be formed
//! (runsc not an absolute path here, a daemon id that does not parse)
//! means no cache: probe every time. A negative result removes the entry,
//! so a cached answer can never make `runtime = "auto"` pick runc; and a
//! launch that used runsc and failed re-probes (ARCHITECTURE.md
//! "Render / launch"), so a stale "available" fails closed instead of
//! falling back.
//!
//! Location: `$BOTTLE_PROBE_CACHE` (a file path, or `off`), else
//! `$XDG_CACHE_HOME/bottle/docker-probe.json`, else
//! `~/.cache/bottle/docker-probe.json`.

use std::os::unix::fs::MetadataExt;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

/// Env var: the cache file, or `off` to probe every time.
pub const PROBE_CACHE_ENV: &str = "BOTTLE_PROBE_CACHE";

/// Everything a cached gVisor result depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeKey {
    /// bottle's version (the probe itself may change).
    pub bottle: String,
    /// The engine's daemon id (`docker info --format {{.ID}}`).
    pub daemon_id: String,
    /// The engine's version.
    pub server_version: String,
    /// `docker info --format {{json .Runtimes}}`, as printed.
    pub runtimes: String,
    /// runsc's path as the engine has it registered.
    pub runsc_path: String,
    /// runsc's inode, size, mtime and ctime (ns).
    pub runsc_file: (u64, u64, i128, i128),
    /// `DOCKER_HOST` and `DOCKER_CONTEXT`.
    pub docker_env: (Option<String>, Option<String>),
}

impl ProbeKey {
    /// The key, when every part can be read: `None` means "do not cache".
    pub fn new(daemon_id: &str, server_version: &str, runtimes_json: &str) -> Option<Self> {
        let daemon_id = daemon_id.trim();
        let id_ok = !daemon_id.is_empty()
            && daemon_id.len() <= 128
            && daemon_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-');
        let server_version = server_version.trim();
        if !id_ok || server_version.is_empty() {
            return None;
        }
        let runtimes = runtimes_json.trim();
        let parsed: serde_json::Value = serde_json::from_str(runtimes).ok()?;
        let runsc_path = parsed.get("runsc")?.get("path")?.as_str()?.to_owned();
        if !runsc_path.starts_with('/') {
            return None;
        }
        let m = std::fs::metadata(&runsc_path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(ProbeKey {
            bottle: env!("CARGO_PKG_VERSION").to_owned(),
            daemon_id: daemon_id.to_owned(),
            server_version: server_version.to_owned(),
            runtimes: runtimes.to_owned(),
            runsc_path,
            runsc_file: (
                m.ino(),
                m.size(),
                ns(m.mtime(), m.mtime_nsec()),
                ns(m.ctime(), m.ctime_nsec()),
            ),
            docker_env: (
                std::env::var("DOCKER_HOST").ok(),
                std::env::var("DOCKER_CONTEXT").ok(),
            ),
        })
    }
}

/// What the cache file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    key: ProbeKey,
    /// Always true: only "a test container ran under runsc" is stored.
    gvisor_available: bool,
    /// When the test container ran.
    probed: String,
}

/// Where the gVisor result is cached (or nowhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCache {
    path: Option<Utf8PathBuf>,
}

impl Default for ProbeCache {
    /// `$BOTTLE_PROBE_CACHE`, else the XDG cache dir.
    fn default() -> Self {
        match std::env::var(PROBE_CACHE_ENV) {
            Ok(v) if v == "off" || v == "0" => Self::off(),
            Ok(v) if !v.is_empty() => Self::at(v),
            _ => {
                let base = std::env::var("XDG_CACHE_HOME")
                    .ok()
                    .filter(|v| v.starts_with('/'))
                    .map(Utf8PathBuf::from)
                    .or_else(|| {
                        std::env::var("HOME")
                            .ok()
                            .filter(|v| v.starts_with('/'))
                            .map(|h| Utf8PathBuf::from(h).join(".cache"))
                    });
                Self {
                    path: base.map(|b| b.join("bottle/docker-probe.json")),
                }
            }
        }
    }
}

impl ProbeCache {
    /// Cache in this file.
    pub fn at(path: impl Into<Utf8PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    /// No cache: probe every time.
    pub fn off() -> Self {
        Self { path: None }
    }

    /// The file, if caching.
    pub fn path(&self) -> Option<&Utf8Path> {
        self.path.as_deref()
    }

    /// Did a test container run under runsc for exactly this key?
    pub fn available(&self, key: &ProbeKey) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Entry>(&t).ok())
            .is_some_and(|e| e.gvisor_available && e.key == *key)
    }

    /// Remember that a test container ran under runsc for `key`.
    pub fn store(&self, key: &ProbeKey) {
        let Some(path) = &self.path else {
            return;
        };
        let entry = Entry {
            key: key.clone(),
            gvisor_available: true,
            probed: now_epoch(),
        };
        let text = serde_json::to_string_pretty(&entry).expect("entry serializes");
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            if let Err(e) = bottle_core::state::create_private_dir(dir) {
                tracing::debug!(error = %e, "probe cache dir");
                return;
            }
        }
        if let Err(e) = bottle_core::state::atomic_write(path, text.as_bytes(), Some(0o600)) {
            tracing::debug!(error = %e, "probe cache not written");
        }
    }

    /// Drop whatever is cached.
    pub fn forget(&self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn now_epoch() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs} (seconds since the epoch)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runsc(dir: &Utf8Path) -> (Utf8PathBuf, String) {
        let bin = dir.join("runsc");
        std::fs::write(&bin, b"runsc v1").unwrap();
        let json = format!(r#"{{"runc":{{"path":"runc"}},"runsc":{{"path":"{bin}"}}}}"#);
        (bin, json)
    }

    fn tmp() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().to_path_buf()).unwrap();
        (d, p)
    }

    #[test]
    fn a_stored_result_is_found_only_for_the_same_key() {
        let (_d, dir) = tmp();
        let (bin, json) = runsc(&dir);
        let cache = ProbeCache::at(dir.join("c/probe.json"));
        let key = ProbeKey::new("ABCD:EFGH", "28.1.1", &json).unwrap();
        assert!(!cache.available(&key));
        cache.store(&key);
        assert!(cache.available(&key));
        // another engine, version or runtime list
        for other in [
            ProbeKey::new("WXYZ:EFGH", "28.1.1", &json),
            ProbeKey::new("ABCD:EFGH", "28.1.2", &json),
            ProbeKey::new(
                "ABCD:EFGH",
                "28.1.1",
                &json.replace(r#""}}"#, r#"","runtimeArgs":["--platform=kvm"]}}"#),
            ),
        ] {
            let other = other.unwrap();
            assert_ne!(other, key);
            assert!(!cache.available(&other), "{other:?}");
        }
        // a replaced runsc binary
        std::fs::remove_file(&bin).unwrap();
        std::fs::write(&bin, b"runsc v2, longer").unwrap();
        let replaced = ProbeKey::new("ABCD:EFGH", "28.1.1", &json).unwrap();
        assert!(!cache.available(&replaced));
        cache.forget();
        assert!(!cache.available(&key));
        assert!(ProbeCache::off().path().is_none());
    }

    #[test]
    fn no_key_without_an_absolute_existing_runsc_or_a_sane_daemon_id() {
        let (_d, dir) = tmp();
        let (_bin, json) = runsc(&dir);
        assert!(ProbeKey::new("ABCD", "28.1.1", &json).is_some());
        assert!(ProbeKey::new(r#"{"runc":{}}"#, "28.1.1", &json).is_none());
        assert!(ProbeKey::new("", "28.1.1", &json).is_none());
        assert!(ProbeKey::new("ABCD", "", &json).is_none());
        assert!(ProbeKey::new("ABCD", "28.1.1", r#"{"runsc":{"path":"runsc"}}"#).is_none());
        let gone = format!(r#"{{"runsc":{{"path":"{dir}/missing"}}}}"#);
        assert!(ProbeKey::new("ABCD", "28.1.1", &gone).is_none());
        assert!(ProbeKey::new("ABCD", "28.1.1", r#"{"runc":{"path":"runc"}}"#).is_none());
    }
}
