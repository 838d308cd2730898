//! The live policy files (`egress/routes.toml`, `git/gate.toml`), read
//! loosely as `toml::Value` (their owners define the typed structs) and
//! written only by the operator side: grants appended, expired grants swept.
//!
//! Readers never return an `auth` table or a secret name: the agent sees
//! hosts, ports, paths and methods only.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;
use toml::{Table, Value};

use super::model::parse_time;
use super::store::atomic_write;

/// Read a TOML file as a table; `Ok(None)` when it does not exist.
pub fn read_table(path: &Path) -> Result<Option<Table>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<Table>()
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_table(path: &Path, table: &Table) -> Result<(), String> {
    let text = toml::to_string(table).map_err(|e| format!("{}: {e}", path.display()))?;
    // Never write something we could not read back.
    text.parse::<Table>()
        .map_err(|e| format!("{}: refusing to write unparsable TOML: {e}", path.display()))?;
    atomic_write(path, text.as_bytes(), None).map_err(|e| format!("{}: {e}", path.display()))
}

/// Push rules: plain strings or `{ pattern = "…", … }` tables.
fn push_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Table(t) => t.get("pattern").and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an entry's `expires_at` has passed (unparsable = passed: fail closed).
pub fn is_expired(entry: &Table, now: SystemTime) -> bool {
    match entry.get("expires_at") {
        None => false,
        Some(Value::String(s)) => parse_time(s).is_none_or(|t| t <= now),
        Some(Value::Datetime(d)) => parse_time(&d.to_string()).is_none_or(|t| t <= now),
        Some(_) => true,
    }
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
    let Some(table) = read_table(path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in table
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(t) = entry.as_table() else { continue };
        if is_expired(t, now) {
            continue;
        }
        let Some(host) = t.get("host").and_then(Value::as_str) else {
            continue;
        };
        out.push(RouteView {
            host: host.to_owned(),
            port: t
                .get("port")
                .and_then(Value::as_integer)
                .and_then(|p| u16::try_from(p).ok()),
            paths: str_list(t.get("paths")),
            methods: str_list(t.get("methods")),
            credential_injected: t.contains_key("auth"),
            grant: t.get("grant").and_then(Value::as_str).map(str::to_owned),
            expires_at: t.get("expires_at").map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        });
    }
    Ok(out)
}

/// One git remote as shown to the agent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemoteView {
    /// Remote name.
    pub name: String,
    /// Ref patterns the agent may push (configured + unexpired grants).
    pub push: Vec<String>,
}

/// Remotes and pushable refs from `gate.toml`. Accepts `[[remotes]]` with
/// `name`, or `[remotes.<name>]` tables; `push` lists; `[[grants]]` entries
/// (`remote`, `pattern`, `expires_at`) are merged in while unexpired.
pub fn git_remotes(path: &Path, now: SystemTime) -> Result<Vec<RemoteView>, String> {
    let Some(table) = read_table(path)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<RemoteView> = Vec::new();
    match table.get("remotes") {
        Some(Value::Array(list)) => {
            for r in list.iter().filter_map(Value::as_table) {
                if let Some(name) = r.get("name").and_then(Value::as_str) {
                    out.push(RemoteView {
                        name: name.to_owned(),
                        push: push_list(r.get("push")),
                    });
                }
            }
        }
        Some(Value::Table(map)) => {
            for (name, r) in map {
                out.push(RemoteView {
                    name: name.clone(),
                    push: push_list(r.as_table().and_then(|t| t.get("push"))),
                });
            }
        }
        _ => {}
    }
    for g in table
        .get("grants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_table)
    {
        if is_expired(g, now) {
            continue;
        }
        let (Some(remote), Some(pattern)) = (
            g.get("remote").and_then(Value::as_str),
            g.get("pattern").and_then(Value::as_str),
        ) else {
            continue;
        };
        if let Some(r) = out.iter_mut().find(|r| r.name == remote) {
            if !r.push.iter().any(|p| p == pattern) {
                r.push.push(pattern.to_owned());
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
    let EgressGrant {
        host,
        port,
        paths,
        methods,
        allow_private,
    } = *g;
    let mut table = read_table(path)?.ok_or_else(|| {
        format!(
            "{}: no such file (is this bottle prepared?)",
            path.display()
        )
    })?;
    let mut route = Table::new();
    route.insert("host".into(), Value::String(host.to_owned()));
    if let Some(p) = port {
        route.insert("port".into(), Value::Integer(i64::from(p)));
    }
    if !paths.is_empty() {
        route.insert("paths".into(), strings(paths));
    }
    if !methods.is_empty() {
        route.insert("methods".into(), strings(methods));
    }
    if allow_private {
        route.insert("allow_private".into(), Value::Boolean(true));
    }
    route.insert("grant".into(), Value::String(grant.to_owned()));
    route.insert("expires_at".into(), Value::String(expires_at.to_owned()));
    push_entry(&mut table, "routes", route, path)?;
    write_table(path, &table)
}

/// Append a `[[grants]]` entry to `gate.toml`.
pub fn add_git_grant(
    path: &Path,
    remote: &str,
    pattern: &str,
    grant: &str,
    expires_at: &str,
) -> Result<(), String> {
    let mut table = read_table(path)?.ok_or_else(|| {
        format!(
            "{}: no such file (does this bottle have git remotes?)",
            path.display()
        )
    })?;
    let mut entry = Table::new();
    entry.insert("remote".into(), Value::String(remote.to_owned()));
    entry.insert("pattern".into(), Value::String(pattern.to_owned()));
    entry.insert("grant".into(), Value::String(grant.to_owned()));
    entry.insert("expires_at".into(), Value::String(expires_at.to_owned()));
    push_entry(&mut table, "grants", entry, path)?;
    write_table(path, &table)
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.clone())).collect())
}

fn push_entry(table: &mut Table, key: &str, entry: Table, path: &Path) -> Result<(), String> {
    let list = table
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    match list {
        Value::Array(a) => {
            a.push(Value::Table(entry));
            Ok(())
        }
        _ => Err(format!("{}: `{key}` is not a list", path.display())),
    }
}

/// Remove entries of list `key` for which `drop` is true; rewrite the file
/// only if something changed. Returns the removed entries' `grant` ids (or
/// `host`/`pattern` when they carry none).
pub fn remove_entries(
    path: &Path,
    key: &str,
    drop: impl Fn(&Table) -> bool,
) -> Result<Vec<String>, String> {
    let Some(mut table) = read_table(path)? else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    if let Some(Value::Array(list)) = table.get_mut(key) {
        list.retain(|v| {
            let Some(t) = v.as_table() else { return true };
            if drop(t) {
                let label = ["grant", "host", "pattern"]
                    .iter()
                    .find_map(|k| t.get(*k).and_then(Value::as_str))
                    .unwrap_or("?")
                    .to_owned();
                removed.push(label);
                false
            } else {
                true
            }
        });
    }
    if !removed.is_empty() {
        write_table(path, &table)?;
    }
    Ok(removed)
}

/// Remove every entry of `key` whose `expires_at` is at or before `now`.
pub fn sweep(path: &Path, key: &str, now: SystemTime) -> Result<Vec<String>, String> {
    remove_entries(path, key, |t| {
        t.contains_key("expires_at") && is_expired(t, now)
    })
}

/// Remove the entries created by grant `id`.
pub fn revoke(path: &Path, key: &str, id: &str) -> Result<Vec<String>, String> {
    remove_entries(path, key, |t| {
        t.get("grant").and_then(Value::as_str) == Some(id)
    })
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
        assert!(sweep(&path, "routes", now).unwrap().is_empty());
        let after = now + Duration::from_secs(61);
        assert_eq!(egress_routes(&path, after).unwrap().len(), 1);
        assert_eq!(sweep(&path, "routes", after).unwrap(), vec!["req-1"]);
        let table = read_table(&path).unwrap().unwrap();
        assert_eq!(table["routes"].as_array().unwrap().len(), 1);
        assert_eq!(table["identity"].as_str(), Some("x"));
    }
}
