//! Live policy reload: `routes.toml` (and the held-secrets dir) watched
//! with inotify, a 500 ms stat poll as a fallback for filesystems without
//! inotify, and SIGHUP; the DLP rule files are re-checked on the same poll.
//! A file that does not load keeps the previous policy (ARCHITECTURE.md
//! "The sidecars").
//!
//! Only events that name `routes.toml` or an entry of the secrets dir
//! trigger a reload: other files in the routes dir (an audit log written
//! next to it on every request, an editor's temp file) do not rebuild the
//! detector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::audit_queue::AuditQueue;
use super::policy::Live;
use super::Shared;

/// What the stat poll compares: routes file (mtime, size, inode) and the
/// secrets dir's mtime.
fn fingerprint(routes: &Path, secrets: Option<&Path>) -> Vec<(Option<SystemTime>, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for p in std::iter::once(routes).chain(secrets) {
        match std::fs::metadata(p) {
            Ok(m) => out.push((m.modified().ok(), m.len(), m.ino())),
            Err(_) => out.push((None, 0, 0)),
        }
    }
    out
}

/// What a watch event must name to trigger a reload.
#[derive(Debug, Clone)]
struct Watched {
    /// The routes file, as its watched dir joined with its name.
    routes: PathBuf,
    /// The held-secrets dir, if any.
    secrets: Option<PathBuf>,
}

impl Watched {
    /// Does an event on `paths` concern the policy? An event that names no
    /// path (a rescan after an overflow) does.
    fn concerns(&self, paths: &[PathBuf]) -> bool {
        paths.is_empty()
            || paths.iter().any(|p| {
                *p == self.routes
                    || self
                        .secrets
                        .as_ref()
                        .is_some_and(|s| p == s || p.parent() == Some(s.as_path()))
            })
    }
}

/// Reload the policy in `shared` when its files change (see the module
/// docs); runs until the proxy stops.
pub(crate) async fn reload_loop(
    shared: Arc<Shared>,
    audit: AuditQueue,
    routes: PathBuf,
    secrets_override: Option<PathBuf>,
    mut hup: Option<tokio::signal::unix::Signal>,
) {
    use notify::Watcher as _;
    let secrets_dir = || {
        secrets_override
            .clone()
            .or_else(|| shared.live().secrets_dir.clone())
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Watched as canonical paths: events name them the same way.
    let dir = routes
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let secrets = secrets_dir().map(|s| s.canonicalize().unwrap_or(s));
    let watched = Watched {
        routes: dir.join(routes.file_name().unwrap_or_default()),
        secrets: secrets.clone(),
    };
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) && watched.concerns(&ev.paths) {
                let _ = tx.send(());
            }
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the routes dir; polling only");
            }
            if let Some(s) = &secrets {
                let _ = w.watch(s, notify::RecursiveMode::NonRecursive);
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; polling only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = fingerprint(&routes, secrets_dir().as_deref());
    loop {
        let reason = tokio::select! {
            Some(()) = rx.recv() => {
                // Coalesce the burst of events an atomic write produces.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while rx.try_recv().is_ok() {}
                "watch"
            }
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => "sighup",
            _ = tick.tick() => {
                // DLP rule files (the bundle's `[dlp] rules_dir`): a change
                // that loads puts the new rules in force and rebuilds the
                // detector below; a broken file is refused and the rules in
                // force stay (bottle_dlp::rules::refresh).
                let rules_changed = match crate::dlp::rules::refresh() {
                    crate::dlp::rules::Refresh::Unchanged => false,
                    crate::dlp::rules::Refresh::Reloaded(set) => {
                        tracing::info!(rules = set.len(), "DLP rules reloaded");
                        audit.event(json!({"event": "dlp-rules", "decision": "ok", "rule": "dlp-rules-reload", "rules": set.len()}),
                        );
                        true
                    }
                    crate::dlp::rules::Refresh::Failed(e) => {
                        tracing::error!(error = %e, "DLP rule file refused; the previous rules stay in force");
                        audit.event(json!({"event": "dlp-rules", "decision": "error", "rule": "dlp-rules-invalid", "error": e.to_string()}),
                        );
                        false
                    }
                };
                let now = fingerprint(&routes, secrets_dir().as_deref());
                if now == last && !rules_changed {
                    continue;
                }
                if rules_changed { "dlp-rules" } else { "poll" }
            }
        };
        last = fingerprint(&routes, secrets_dir().as_deref());
        match Live::load(&routes, secrets_override.as_deref()) {
            Ok(live) => {
                let n = live.routes.len();
                shared.set(live);
                tracing::info!(reason, routes = n, "egress policy reloaded");
                audit.event(json!({"event": "reload", "decision": "ok", "rule": "reload", "routes": n, "trigger": reason}),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "egress policy reload failed; keeping the previous policy");
                audit.event(json!({"event": "reload", "decision": "error", "rule": "reload-failed", "trigger": reason}),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_file_and_secrets_entries_trigger_a_reload() {
        let w = Watched {
            routes: PathBuf::from("/b/egress/routes.toml"),
            secrets: Some(PathBuf::from("/b/secrets")),
        };
        let concerns = |p: &str| w.concerns(&[PathBuf::from(p)]);
        assert!(concerns("/b/egress/routes.toml"));
        assert!(concerns("/b/secrets/route-token"));
        assert!(concerns("/b/secrets"));
        assert!(
            !concerns("/b/egress/audit.jsonl"),
            "an audit log next to routes.toml"
        );
        assert!(!concerns("/b/egress/.routes.toml.tmp"));
        assert!(!concerns("/b/secrets/sub/deeper"));
        // A rename names both ends; the new name is the routes file.
        assert!(w.concerns(&[
            PathBuf::from("/b/egress/.routes.toml.tmp"),
            PathBuf::from("/b/egress/routes.toml"),
        ]));
        assert!(w.concerns(&[]), "a rescan (no path) reloads");
        let no_secrets = Watched {
            secrets: None,
            ..w.clone()
        };
        assert!(!no_secrets.concerns(&[PathBuf::from("/b/secrets/route-token")]));
    }
}
