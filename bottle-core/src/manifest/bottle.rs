//! Bottle files: a bottle parsed from text ([`bottle_from_text`]) and the
//! checks of each section's values, before and after `extends` merges.

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};

use super::diagnostics::{bad_name, parse, Checker};
use super::env::{validate_env, EnvAuthor};
use super::values::{
    is_ssh_url, valid_route_host, validate_glob, validate_scheme, validate_token, METHODS,
};
use super::{
    valid_name, BottleFile, EgressSection, GitSection, LoadedBottle, ProviderSection,
    ResourcesSection, SuperviseSection, KNOWN_BACKENDS,
};
use crate::error::{Error, Result};
use crate::units;

/// Parse and validate a self-contained bottle from text (no `extends`):
/// for tools that embed bottle and keep policy in memory. `path` names it in
/// errors and anchors a relative `dockerfile`.
///
/// ```
/// use bottle_core::manifest::bottle_from_text;
/// let b = bottle_from_text("ci", "memory/ci.toml".into(), r#"
/// [[egress.routes]]
/// host = "api.github.com"
/// methods = ["GET"]
/// "#).unwrap();
/// assert_eq!(b.file.egress.unwrap().routes.unwrap()[0].host, "api.github.com");
///
/// let err = bottle_from_text("ci", "memory/ci.toml".into(), "egres = {}").unwrap_err();
/// assert!(err.to_string().starts_with("memory/ci.toml:1:1: unknown field `egres`"));
/// ```
pub fn bottle_from_text(name: &str, path: Utf8PathBuf, text: &str) -> Result<LoadedBottle> {
    if !valid_name(name) {
        return Err(bad_name("bottle", name, Some(&path)));
    }
    let file: BottleFile = parse(&path, text)?;
    validate_bottle(&path, text, &file)?;
    if file.extends.is_some() {
        return Err(Error::Manifest {
            file: path,
            line: None,
            column: None,
            message: "an in-memory bottle cannot `extends` another".into(),
            fix: "merge the parent's keys into it, or load bottles from a home with `Loader`"
                .into(),
        });
    }
    validate_merged(&path, &file)?;
    Ok(LoadedBottle {
        name: name.to_owned(),
        chain: vec![path],
        file,
    })
}

/// Check a bottle file's values, section by section (errors placed at
/// the offending key).
pub(super) fn validate_bottle(path: &Utf8Path, text: &str, b: &BottleFile) -> Result<()> {
    let ck = Checker { path, text };
    if let Some(backend) = &b.backend {
        if !KNOWN_BACKENDS.contains(&backend.as_str()) {
            return Err(ck.fail(
                "backend",
                format!("unknown backend `{backend}`"),
                format!("use one of: {}", KNOWN_BACKENDS.join(", ")),
            ));
        }
    }
    if let Some(p) = &b.agent_provider {
        validate_provider(&ck, p)?;
    }
    if let Some(env) = &b.env {
        validate_env(path, text, env, EnvAuthor::Operator)?;
    }
    if let Some(g) = &b.git {
        validate_git(&ck, g)?;
    }
    if let Some(e) = &b.egress {
        validate_egress(&ck, e)?;
    }
    if let Some(s) = &b.supervise {
        validate_supervise(&ck, s)?;
    }
    if let Some(r) = &b.resources {
        validate_resources(&ck, r)?;
    }
    Ok(())
}

/// `[agent_provider]`: a template or a Dockerfile that exists, and its auth.
fn validate_provider(ck: &Checker<'_>, p: &ProviderSection) -> Result<()> {
    if p.template.is_some() && p.dockerfile.is_some() {
        return Err(ck.fail(
            "dockerfile",
            "`agent_provider` sets both `template` and `dockerfile`".into(),
            "keep one: a built-in template or your own Dockerfile",
        ));
    }
    if let Some(df) = &p.dockerfile {
        let full = ck.path.parent().unwrap_or(Utf8Path::new(".")).join(df);
        if !full.is_file() {
            return Err(ck.fail(
                "dockerfile",
                format!("`agent_provider.dockerfile` {full} does not exist"),
                "fix the path (relative to the bottle file)",
            ));
        }
    }
    if let Some(a) = &p.auth {
        if !valid_route_host(&a.host) || a.host.starts_with("*.") {
            return Err(ck.fail(
                "host",
                format!("`agent_provider.auth.host` `{}` is not a host name", a.host),
                "write a bare host like api.anthropic.com",
            ));
        }
        validate_scheme(ck, &a.scheme, true)?;
        validate_token(ck, "token", &a.token)?;
    }
    Ok(())
}

/// `[git]`: unique valid remote names, ssh remotes pinned and keyed, push
/// patterns as full ref globs.
fn validate_git(ck: &Checker<'_>, g: &GitSection) -> Result<()> {
    let mut seen = BTreeSet::new();
    for r in g.remotes.iter().flatten() {
        if !valid_name(&r.name) {
            return Err(ck.fail(
                "name",
                format!("git remote name `{}` is not valid", r.name),
                "use lowercase letters, digits, `-` and `_`",
            ));
        }
        if !seen.insert(r.name.clone()) {
            return Err(ck.fail(
                "name",
                format!("git remote `{}` is declared twice", r.name),
                "give each remote a unique name",
            ));
        }
        let ssh = is_ssh_url(&r.url);
        if !ssh && !r.url.starts_with("https://") && !r.url.starts_with("file://") {
            return Err(ck.fail("url", format!("git remote `{}` has url `{}`, which is neither ssh nor https", r.name, r.url), "use ssh://git@host/owner/repo.git, git@host:owner/repo.git or https://host/owner/repo.git"));
        }
        if ssh && r.known_host_key.is_none() {
            return Err(ck.fail("url", format!("ssh remote `{}` has no `known_host_key`", r.name), "pin the server's host key: known_host_key = \"ssh-ed25519 AAAA...\" (from `ssh-keyscan <host>`, verified out of band)"));
        }
        if ssh && r.identity_file.is_none() {
            return Err(ck.fail("url", format!("ssh remote `{}` has no `identity_file`", r.name), "set identity_file = \"~/.ssh/deploy_key\" (the gate holds it; the agent never sees it)"));
        }
        if let Some(k) = &r.known_host_key {
            let parts: Vec<&str> = k.split_whitespace().collect();
            if parts.len() < 2 || !(parts[0].starts_with("ssh-") || parts[0].starts_with("ecdsa-"))
            {
                return Err(ck.fail(
                    "known_host_key",
                    format!("`known_host_key` of `{}` is not a host key line", r.name),
                    "write it as \"ssh-ed25519 AAAA...\" (key type then base64)",
                ));
            }
        }
        for p in r.push.iter().flatten() {
            if !p.starts_with("refs/") {
                return Err(ck.fail(
                    "push",
                    format!(
                        "push pattern `{p}` of `{}` does not start with refs/",
                        r.name
                    ),
                    "write full ref globs, e.g. \"refs/heads/bot/*\"",
                ));
            }
            validate_glob(ck, "push", p)?;
        }
    }
    Ok(())
}

/// `[egress]`: body scan size, DLP rule ids, and each route's host, paths,
/// methods and auth.
fn validate_egress(ck: &Checker<'_>, e: &EgressSection) -> Result<()> {
    if let Some(s) = &e.max_body_scan {
        units::parse_bytes(s)
            .map_err(|why| ck.fail("max_body_scan", why, "e.g. max_body_scan = \"1MiB\""))?;
    }
    for id in e.dlp_disable.iter().flatten() {
        let ok = !id.is_empty()
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(ck.fail(
                "dlp_disable",
                format!("`{id}` is not a DLP rule id"),
                "name rules by id, e.g. dlp_disable = [\"generic-api-key\"] (ids: docs/security.md)",
            ));
        }
    }
    for r in e.routes.iter().flatten() {
        if !valid_route_host(&r.host) {
            return Err(ck.fail(
                "host",
                format!(
                    "route host `{}` is not a host name or `*.domain` wildcard",
                    r.host
                ),
                "write a bare lowercase host like api.example.com (no scheme, port or path)",
            ));
        }
        for p in r.paths.iter().flatten() {
            if !p.starts_with('/') {
                return Err(ck.fail(
                    "paths",
                    format!(
                        "path glob `{p}` of route `{}` does not start with /",
                        r.host
                    ),
                    "write paths like \"/v1/**\"",
                ));
            }
            validate_glob(ck, "paths", p)?;
        }
        for m in r.methods.iter().flatten() {
            if !METHODS.contains(&m.as_str()) {
                return Err(ck.fail(
                    "methods",
                    format!("`{m}` is not an HTTP method"),
                    format!("use uppercase methods: {}", METHODS.join(", ")),
                ));
            }
        }
        if let Some(a) = &r.auth {
            validate_scheme(ck, &a.scheme, false)?;
            validate_token(ck, "token", &a.token)?;
        }
    }
    Ok(())
}

/// `[supervise]`: the durations parse.
fn validate_supervise(ck: &Checker<'_>, s: &SuperviseSection) -> Result<()> {
    for (k, v) in [
        ("grant_ttl", &s.grant_ttl),
        ("auto_deny_after", &s.auto_deny_after),
    ] {
        if let Some(v) = v {
            units::parse_duration(v).map_err(|why| {
                ck.fail(
                    k,
                    format!("`supervise.{k}`: {why}"),
                    format!("e.g. {k} = \"30m\""),
                )
            })?;
        }
    }
    Ok(())
}

/// `[resources]`: limits in range.
fn validate_resources(ck: &Checker<'_>, r: &ResourcesSection) -> Result<()> {
    if let Some(c) = r.cpus {
        if !(c > 0.0 && c <= 1024.0) {
            return Err(ck.fail(
                "cpus",
                format!("`resources.cpus = {c}` is out of range"),
                "use a positive number such as 2 or 0.5",
            ));
        }
    }
    if let Some(m) = &r.memory {
        let bytes = units::parse_bytes(m)
            .map_err(|why| ck.fail("memory", why, "e.g. memory = \"4GiB\""))?;
        if bytes < 64 << 20 {
            return Err(ck.fail(
                "memory",
                format!("`resources.memory = \"{m}\"` is below 64MiB"),
                "give the agent at least 64MiB",
            ));
        }
    }
    if r.pids == Some(0) {
        return Err(ck.fail(
            "pids",
            "`resources.pids = 0` would forbid every process".into(),
            "use a limit such as 512",
        ));
    }
    Ok(())
}

/// Checks only the merged `extends` chain can fail: a route host listed
/// twice.
pub(super) fn validate_merged(path: &Utf8Path, b: &BottleFile) -> Result<()> {
    let mut hosts = BTreeSet::new();
    for r in b.egress.iter().flat_map(|e| e.routes.iter().flatten()) {
        if !hosts.insert((r.host.clone(), r.port)) {
            return Err(Error::Manifest {
                file: path.to_owned(),
                line: None,
                column: None,
                message: format!("route host `{}` is listed twice", r.host),
                fix: "merge the two routes into one (list several paths/methods)".into(),
            });
        }
    }
    Ok(())
}
