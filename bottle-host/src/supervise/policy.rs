//! The live policy files (`egress/routes.toml`, `git/gate.toml`) as the
//! operator side edits them: grants appended, expired grants swept, a grant
//! revoked, and the agent's read-only view. Both files are read and written
//! through their one typed struct ([`RoutesFile`], [`GateConfig`]), the same
//! the host writes and the daemons read.
//!
//! Views never return an `auth` table or a secret name: the agent sees
//! hosts, ports, paths and methods only.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::gate::{GateConfig, Grant};
use crate::routes::{RouteFile, RoutesFile};

fn write_routes(path: &Path, file: &RoutesFile) -> Result<(), String> {
    file.save(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn write_gate(path: &Path, file: &GateConfig) -> Result<(), String> {
    super::store::atomic_write(path, file.to_toml().as_bytes(), None)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The error a view returns for a file it cannot read: the agent sees it,
/// so it quotes no line of the file (which may name a secret file); the
/// daemon that loads the file records the details.
fn unreadable(path: &Path) -> String {
    format!("{}: not a valid policy file", path.display())
}

/// One egress route as shown to the agent (no credentials).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteView {
    /// Host pattern.
    pub host: String,
    /// Port, if the route names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path globs (empty = all).
    pub paths: Vec<String>,
    /// Methods (empty = all).
    pub methods: Vec<String>,
    /// The proxy injects a credential on this route (the agent must not send its own).
    pub credential_injected: bool,
    /// Request id of the approval that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// When it stops (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The current, unexpired egress routes in `routes.toml`.
pub fn egress_routes(path: &Path, now: SystemTime) -> Result<Vec<RouteView>, String> {
    let Some(file) = RoutesFile::read(path).map_err(|_| unreadable(path))? else {
        return Ok(Vec::new());
    };
    Ok(file
        .routes
        .into_iter()
        .filter(|r| !r.is_expired(now))
        .map(|r| RouteView {
            credential_injected: r.auth.is_some(),
            host: r.host,
            port: r.port,
            paths: r.paths.unwrap_or_default(),
            methods: r.methods.unwrap_or_default(),
            grant: r.grant,
            expires_at: r.expires_at,
        })
        .collect())
}

/// One git remote as shown to the agent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemoteView {
    /// Remote name.
    pub name: String,
    /// Ref patterns the agent may push (configured + unexpired grants).
    pub push: Vec<String>,
}

/// Remotes and pushable refs from `gate.toml`: each remote's `push`
/// patterns, with the unexpired `[[grants]]` for it merged in.
pub fn git_remotes(path: &Path, now: SystemTime) -> Result<Vec<RemoteView>, String> {
    let Some(file) = GateConfig::read(path).map_err(|_| unreadable(path))? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<RemoteView> = file
        .remotes
        .iter()
        .map(|r| RemoteView {
            name: r.name.clone(),
            push: r.push.iter().map(|p| p.pattern.clone()).collect(),
        })
        .collect();
    for g in file.grants.iter().filter(|g| !g.is_expired(now)) {
        if let Some(r) = out.iter_mut().find(|r| r.name == g.remote) {
            if !r.push.contains(&g.pattern) {
                r.push.push(g.pattern.clone());
            }
        }
    }
    Ok(out)
}

/// The route part of an egress grant.
#[derive(Debug, Clone, Copy)]
pub struct EgressGrant<'a> {
    /// Host pattern.
    pub host: &'a str,
    /// Port, if any.
    pub port: Option<u16>,
    /// Path globs (empty = all).
    pub paths: &'a [String],
    /// Methods (empty = all).
    pub methods: &'a [String],
    /// Reach private addresses.
    pub allow_private: bool,
}

/// Append an egress grant route to `routes.toml` (the file must exist: the
/// host's Prepare writes it).
pub fn add_egress_grant(
    path: &Path,
    g: &EgressGrant<'_>,
    grant: &str,
    expires_at: &str,
) -> Result<(), String> {
    let mut file = RoutesFile::read(path)?.ok_or_else(|| {
        format!(
            "{}: no such file (is this bottle prepared?)",
            path.display()
        )
    })?;
    let listed = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    file.routes.push(RouteFile {
        host: g.host.to_owned(),
        port: g.port,
        paths: listed(g.paths),
        methods: listed(g.methods),
        allow_private: g.allow_private,
        grant: Some(grant.to_owned()),
        expires_at: Some(expires_at.to_owned()),
        ..RouteFile::default()
    });
    write_routes(path, &file)
}

/// Append a `[[grants]]` entry to `gate.toml`.
pub fn add_git_grant(
    path: &Path,
    remote: &str,
    pattern: &str,
    grant: &str,
    expires_at: &str,
) -> Result<(), String> {
    let mut file = GateConfig::read(path)?.ok_or_else(|| {
        format!(
            "{}: no such file (does this bottle have git remotes?)",
            path.display()
        )
    })?;
    file.grants.push(Grant {
        remote: remote.to_owned(),
        pattern: pattern.to_owned(),
        grant: grant.to_owned(),
        expires_at: Some(expires_at.to_owned()),
        force: false,
        delete: false,
    });
    write_gate(path, &file)
}

/// Remove the routes for which `drop` is true; rewrite the file only if
/// something changed. Returns the removed routes' `grant` ids (or `host`
/// when they carry none).
pub fn remove_routes(
    path: &Path,
    drop: impl Fn(&RouteFile) -> bool,
) -> Result<Vec<String>, String> {
    let Some(mut file) = RoutesFile::read(path)? else {
        return Ok(Vec::new());
    };
    let (gone, kept): (Vec<RouteFile>, Vec<RouteFile>) =
        file.routes.into_iter().partition(|r| drop(r));
    file.routes = kept;
    if !gone.is_empty() {
        write_routes(path, &file)?;
    }
    Ok(gone
        .into_iter()
        .map(|r| r.grant.unwrap_or(r.host))
        .collect())
}

/// Remove the `[[grants]]` for which `drop` is true; rewrite the file only
/// if something changed. Returns the removed grants' ids.
pub fn remove_git_grants(
    path: &Path,
    drop: impl Fn(&Grant) -> bool,
) -> Result<Vec<String>, String> {
    let Some(mut file) = GateConfig::read(path)? else {
        return Ok(Vec::new());
    };
    let (gone, kept): (Vec<Grant>, Vec<Grant>) = file.grants.into_iter().partition(|g| drop(g));
    file.grants = kept;
    if !gone.is_empty() {
        write_gate(path, &file)?;
    }
    Ok(gone.into_iter().map(|g| g.grant).collect())
}

/// Remove every route whose `expires_at` is at or before `now`.
pub fn sweep_routes(path: &Path, now: SystemTime) -> Result<Vec<String>, String> {
    remove_routes(path, |r| r.is_expired(now))
}

/// Remove every git grant whose `expires_at` is at or before `now`.
pub fn sweep_git_grants(path: &Path, now: SystemTime) -> Result<Vec<String>, String> {
    remove_git_grants(path, |g| g.is_expired(now))
}

/// Remove the routes created by grant `id`.
pub fn revoke_routes(path: &Path, id: &str) -> Result<Vec<String>, String> {
    remove_routes(path, |r| r.grant.as_deref() == Some(id))
}

/// Remove the git grants created by grant `id`.
pub fn revoke_git_grants(path: &Path, id: &str) -> Result<Vec<String>, String> {
    remove_git_grants(path, |g| g.grant == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grants_append_read_back_and_sweep_without_touching_other_routes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            r#"identity = "x"
[[routes]]
host = "api.example.com"
paths = ["/v1/**"]
auth = { scheme = "bearer", secret = "route-api" }
"#,
        )
        .unwrap();
        let now = SystemTime::now();
        let later = super::super::model::format_time(now + Duration::from_secs(60));
        let methods = ["GET".to_string()];
        let g = EgressGrant {
            host: "new.example.com",
            port: Some(8443),
            paths: &[],
            methods: &methods,
            allow_private: false,
        };
        add_egress_grant(&path, &g, "req-1", &later).unwrap();
        let routes = egress_routes(&path, now).unwrap();
        assert_eq!(routes.len(), 2);
        assert!(routes[0].credential_injected);
        assert_eq!(routes[1].host, "new.example.com");
        assert_eq!(routes[1].port, Some(8443));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("route-api"),
            "other routes keep their auth: {text}"
        );
        // Not yet expired: sweep keeps it; after expiry it is gone and the view hides it.
        assert!(sweep_routes(&path, now).unwrap().is_empty());
        let after = now + Duration::from_secs(61);
        assert_eq!(egress_routes(&path, after).unwrap().len(), 1);
        assert_eq!(sweep_routes(&path, after).unwrap(), vec!["req-1"]);
        let file = RoutesFile::read(&path).unwrap().unwrap();
        assert_eq!(file.routes.len(), 1);
        assert_eq!(file.identity.as_deref(), Some("x"));
    }

    #[test]
    fn a_grant_and_its_revocation_leave_the_written_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        // what the host writes: one route per shape the reader knows
        let written = RoutesFile {
            identity: Some("demo-dev-a1b2".into()),
            dlp: true,
            max_body_scan: 4096,
            secrets_dir: Some("/bottle/secrets".into()),
            routes: vec![
                RouteFile {
                    host: "api.example.com".into(),
                    paths: Some(vec!["/v1/**".into()]),
                    auth: Some(crate::routes::AuthFile {
                        scheme: "bearer".into(),
                        secret: "route-api".into(),
                    }),
                    ..RouteFile::default()
                },
                RouteFile {
                    host: "none.example.com".into(),
                    paths: Some(Vec::new()),
                    comment: Some("no path at all".into()),
                    ..RouteFile::default()
                },
            ],
        };
        written.save(&path).unwrap();
        let later = super::super::model::format_time(SystemTime::now() + Duration::from_secs(60));
        let g = EgressGrant {
            host: "new.example.com",
            port: None,
            paths: &[],
            methods: &[],
            allow_private: false,
        };
        add_egress_grant(&path, &g, "req-2", &later).unwrap();
        let edited = RoutesFile::read(&path).unwrap().unwrap();
        assert_eq!(edited.routes.len(), 3);
        assert_eq!(edited.routes[..2], written.routes[..]);
        assert_eq!(edited.routes[2].grant.as_deref(), Some("req-2"));
        assert_eq!(
            edited.routes[2].paths, None,
            "an empty grant list means every path"
        );
        assert_eq!(revoke_routes(&path, "req-2").unwrap(), ["req-2"]);
        assert_eq!(RoutesFile::read(&path).unwrap().unwrap(), written);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with(crate::routes::HEADER));
    }

    #[test]
    fn git_grants_edit_gate_toml_through_its_struct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.toml");
        let mut written = GateConfig::new("/bottle/git/mirrors", "/bottle/secrets");
        written.remotes.push(crate::gate::RemoteConfig {
            name: "origin".into(),
            url: "file:///srv/up.git".into(),
            identity_file: None,
            known_hosts: None,
            push: vec![crate::gate::PushRule::new("refs/heads/bot/*")],
            fetch: true,
            serve_stale: false,
        });
        written.save(&path).unwrap();
        let now = SystemTime::now();
        let later = super::super::model::format_time(now + Duration::from_secs(60));
        add_git_grant(&path, "origin", "refs/heads/fix/*", "req-3", &later).unwrap();
        // the gate itself loads (and validates) what the editor wrote
        let loaded = GateConfig::load(&path).unwrap();
        assert_eq!(loaded.grants.len(), 1);
        assert_eq!(
            git_remotes(&path, now).unwrap()[0].push,
            ["refs/heads/bot/*", "refs/heads/fix/*"]
        );
        let after = now + Duration::from_secs(61);
        assert_eq!(
            git_remotes(&path, after).unwrap()[0].push,
            ["refs/heads/bot/*"]
        );
        assert_eq!(sweep_git_grants(&path, after).unwrap(), ["req-3"]);
        assert_eq!(GateConfig::load(&path).unwrap(), written);
    }

    #[test]
    fn a_file_the_daemon_would_refuse_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        let text = "[[routes]]\nhost = \"a.example.com\"\npath = [\"/typo\"]\n";
        std::fs::write(&path, text).unwrap();
        let g = EgressGrant {
            host: "b.example.com",
            port: None,
            paths: &[],
            methods: &[],
            allow_private: false,
        };
        let err = add_egress_grant(&path, &g, "req-4", "2999-01-01T00:00:00Z").unwrap_err();
        assert!(err.contains("path"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn the_agents_view_of_a_broken_file_quotes_none_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        std::fs::write(
            &path,
            "[[routes]]\nhost = \"a.example.com\"\nauth = { scheme = \"bearer\", secret = \"tok-name\", extra = 1 }\n",
        )
        .unwrap();
        let err = egress_routes(&path, SystemTime::now()).unwrap_err();
        assert!(err.contains("not a valid policy file"), "{err}");
        assert!(!err.contains("tok-name"), "{err}");
        // the host-side reader keeps the details for the operator
        assert!(RoutesFile::read(&path).unwrap_err().contains("extra"));
    }
}
