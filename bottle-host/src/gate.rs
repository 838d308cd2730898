//! `gate.toml`: the git-gate's configuration and live push policy.
//!
//! Written by the host-side Prepare (build a [`GateConfig`] and call
//! [`GateConfig::save`]) and edited by `bottle approve` (which appends
//! [`Grant`]s). The gate re-reads the file on every connection, so grants
//! and their expiry take effect without a restart.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

/// The whole `gate.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Bottle identity (stamped on audit lines when the CLI opens the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Directory holding one bare mirror per remote (`<mirrors_dir>/<name>.git`).
    pub mirrors_dir: PathBuf,
    /// Directory of held-secret files; every file is a value the push scan
    /// refuses to let out.
    pub secrets_dir: PathBuf,
    /// The configured remotes.
    #[serde(default, rename = "remotes")]
    pub remotes: Vec<RemoteConfig>,
    /// Live push grants written by `bottle approve`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

/// One upstream remote the agent may reach through the gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Remote name; the agent reaches it as `git://<gate>/<name>.git`.
    pub name: String,
    /// Upstream URL: `ssh://user@host[:port]/path`, `user@host:path`,
    /// `https://host/path` (no credentials) or `file:///path`.
    pub url: String,
    /// Private key (path inside the bundle) used for ssh upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// known_hosts file pinning the upstream host key (required for ssh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// Refs the agent may push (globs on the full ref name).
    #[serde(default)]
    pub push: Vec<PushRule>,
    /// Whether the agent may fetch/clone (default true).
    #[serde(default = "yes")]
    pub fetch: bool,
    /// Serve the last mirrored state (with a warning audit line) when the
    /// upstream cannot be reached, instead of failing the fetch (default false).
    #[serde(default)]
    pub serve_stale: bool,
}

fn yes() -> bool {
    true
}

/// One pushable-ref rule. In TOML either a plain string (`"refs/heads/bot/*"`:
/// no force-push, no delete) or a table
/// `{ pattern = "refs/heads/bot/*", force = true, delete = false }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PushRuleRepr", into = "PushRuleRepr")]
pub struct PushRule {
    /// Glob on the full ref name. `*` stays within one path component, `**`
    /// crosses `/`.
    pub pattern: String,
    /// Non-fast-forward updates allowed.
    pub force: bool,
    /// Deletions allowed.
    pub delete: bool,
}

impl PushRule {
    /// A rule that allows creating and fast-forwarding refs matching `pattern`.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            force: false,
            delete: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PushRuleRepr {
    Plain(String),
    Full {
        pattern: String,
        #[serde(default)]
        force: bool,
        #[serde(default)]
        delete: bool,
    },
}

impl From<PushRuleRepr> for PushRule {
    fn from(r: PushRuleRepr) -> Self {
        match r {
            PushRuleRepr::Plain(pattern) => PushRule::new(pattern),
            PushRuleRepr::Full {
                pattern,
                force,
                delete,
            } => PushRule {
                pattern,
                force,
                delete,
            },
        }
    }
}

impl From<PushRule> for PushRuleRepr {
    fn from(r: PushRule) -> Self {
        if !r.force && !r.delete {
            PushRuleRepr::Plain(r.pattern)
        } else {
            PushRuleRepr::Full {
                pattern: r.pattern,
                force: r.force,
                delete: r.delete,
            }
        }
    }
}

/// A live widening written by `bottle approve` for a `request_git_push`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Remote name the grant applies to.
    pub remote: String,
    /// Ref glob (same syntax as [`PushRule::pattern`]).
    pub pattern: String,
    /// Id of the request that created the grant.
    pub grant: String,
    /// RFC 3339 UTC expiry (`2026-11-24T05:00:00Z`); an expired or
    /// unparseable expiry makes the grant absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_datetime"
    )]
    pub expires_at: Option<String>,
    /// Non-fast-forward allowed (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Deletion allowed (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// Accept `expires_at` as a string or a bare TOML datetime.
fn string_or_datetime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ts {
        S(String),
        D(toml::value::Datetime),
    }
    Ok(Option::<Ts>::deserialize(d)?.map(|t| match t {
        Ts::S(s) => s,
        Ts::D(d) => d.to_string(),
    }))
}

impl Grant {
    /// Whether the grant's `expires_at` has passed at `now` as the editor
    /// (`bottle approve`, sweeps, resume) sees it: unparsable = passed.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        crate::supervise::model::is_expired(self.expires_at.as_deref(), now)
    }

    /// Whether the grant is in force at `now` (absent expiry = no expiry).
    pub fn is_live(&self, now: SystemTime) -> bool {
        match &self.expires_at {
            None => true,
            Some(ts) => match humantime::parse_rfc3339_weak(ts.trim_end_matches('Z')) {
                Ok(t) => t > now,
                Err(_) => false,
            },
        }
    }
}

/// A configuration problem; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl GateConfig {
    /// An empty config (no remotes) with the given directories.
    pub fn new(mirrors_dir: impl Into<PathBuf>, secrets_dir: impl Into<PathBuf>) -> Self {
        Self {
            identity: None,
            mirrors_dir: mirrors_dir.into(),
            secrets_dir: secrets_dir.into(),
            remotes: Vec::new(),
            grants: Vec::new(),
        }
    }

    /// Read and validate `gate.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let cfg: GateConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Read `path` for editing: parsed, not validated (the gate validates
    /// on load); `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Parse from TOML text (validated).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: GateConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Render as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("GateConfig always serializes")
    }

    /// Validate, then write atomically (`bottle_core::state::atomic_write_io`).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        self.validate()
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        bottle_core::state::atomic_write_io(path, self.to_toml().as_bytes(), None)
    }

    /// The remote called `name`.
    pub fn remote(&self, name: &str) -> Option<&RemoteConfig> {
        self.remotes.iter().find(|r| r.name == name)
    }

    /// Check names, URLs and globs.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.remotes {
            if !valid_remote_name(&r.name) {
                return Err(format!(
                    "remote name {:?} is invalid (use letters, digits, '.', '_', '-'; must not start with '.' or '-')",
                    r.name
                ));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(format!("remote {:?} is configured twice", r.name));
            }
            let kind = url_kind(&r.url).map_err(|m| format!("remote {:?}: {m}", r.name))?;
            if kind == UrlKind::Ssh && r.known_hosts.is_none() {
                return Err(format!(
                    "remote {:?}: an ssh upstream needs `known_hosts` (the pinned host key)",
                    r.name
                ));
            }
            for rule in &r.push {
                compile_glob(&rule.pattern).map_err(|m| format!("remote {:?}: {m}", r.name))?;
            }
        }
        for g in &self.grants {
            compile_glob(&g.pattern).map_err(|m| format!("grant {:?}: {m}", g.grant))?;
        }
        Ok(())
    }

    /// The push rules in force for `remote` at `now`: its `push` list plus
    /// every live grant for it. Each entry carries the rule's label for the
    /// audit line.
    pub fn push_rules(&self, remote: &str, now: SystemTime) -> Vec<(String, PushRule)> {
        let mut out = Vec::new();
        if let Some(r) = self.remote(remote) {
            for rule in &r.push {
                out.push((format!("push:{}", rule.pattern), rule.clone()));
            }
        }
        for g in self
            .grants
            .iter()
            .filter(|g| g.remote == remote && g.is_live(now))
        {
            out.push((
                format!("grant:{}", g.grant),
                PushRule {
                    pattern: g.pattern.clone(),
                    force: g.force,
                    delete: g.delete,
                },
            ));
        }
        out
    }
}

/// Remote names double as mirror directory names and URL path components.
pub fn valid_remote_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.contains("..")
}

/// Transport family of an upstream URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlKind {
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
    /// `https://` / `http://`.
    Http,
    /// `file://`.
    File,
}

/// Classify an upstream URL; refuses credentials in URLs and other schemes.
pub fn url_kind(url: &str) -> Result<UrlKind, String> {
    if url.starts_with('-') || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("url must not start with '-' or contain spaces/control characters".into());
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        if rest.is_empty() {
            return Err("empty ssh url".into());
        }
        return Ok(UrlKind::Ssh);
    }
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(
                "credentials in an http(s) url are not allowed (they would be on argv)".into(),
            );
        }
        return Ok(UrlKind::Http);
    }
    if url.starts_with("file:///") {
        return Ok(UrlKind::File);
    }
    if url.contains("://") {
        return Err(format!(
            "unsupported url scheme in {url:?} (use ssh://, https:// or file://)"
        ));
    }
    // scp-like: [user@]host:path (a ':' before any '/').
    match (url.find(':'), url.find('/')) {
        (Some(c), slash) if c > 0 && slash.is_none_or(|s| c < s) => Ok(UrlKind::Ssh),
        _ => Err(format!(
            "unsupported url {url:?} (use ssh://, user@host:path, https:// or file://)"
        )),
    }
}

/// Compile a ref glob: `*` within one component, `**` across components.
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    if !pattern.starts_with("refs/") {
        return Err(format!(
            "push pattern {pattern:?} must be a full ref name starting with refs/"
        ));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad push pattern {pattern:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
identity = "demo-dev-a1b2"
mirrors_dir = "/bottle/git/mirrors"
secrets_dir = "/bottle/secrets"

[[remotes]]
name = "origin"
url = "ssh://git@example.test:2222/org/repo.git"
identity_file = "/bottle/secrets/git-origin"
known_hosts = "/bottle/git/known_hosts"
push = ["refs/heads/bot/*", { pattern = "refs/heads/wip/**", force = true, delete = true }]

[[grants]]
remote = "origin"
pattern = "refs/heads/feature/*"
grant = "req-1"
expires_at = "2999-01-01T00:00:00Z"

[[grants]]
remote = "origin"
pattern = "refs/heads/old/*"
grant = "req-0"
expires_at = "2000-01-01T00:00:00Z"
"#;

    #[test]
    fn parses_roundtrips_and_applies_grants() {
        let cfg = GateConfig::from_toml(SAMPLE).unwrap();
        let origin = cfg.remote("origin").unwrap();
        assert!(origin.fetch && !origin.serve_stale);
        assert_eq!(origin.push[0], PushRule::new("refs/heads/bot/*"));
        assert!(origin.push[1].force && origin.push[1].delete);
        let again = GateConfig::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(cfg, again);
        let rules = cfg.push_rules("origin", SystemTime::now());
        let labels: Vec<_> = rules.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "push:refs/heads/bot/*",
                "push:refs/heads/wip/**",
                "grant:req-1"
            ]
        );
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(GateConfig::from_toml(&SAMPLE.replace("push = [", "pushh = [")).is_err());
        assert!(
            GateConfig::from_toml(&SAMPLE.replace("name = \"origin\"", "name = \"../x\"")).is_err()
        );
        assert!(GateConfig::from_toml(
            &SAMPLE.replace("known_hosts = \"/bottle/git/known_hosts\"\n", "")
        )
        .is_err());
        assert!(GateConfig::from_toml(&SAMPLE.replace("refs/heads/bot/*", "heads/bot/*")).is_err());
        assert!(url_kind("https://user:tok@example.test/x.git").is_err());
        assert!(url_kind("ext::sh -c x").is_err());
        assert_eq!(url_kind("git@example.test:org/x.git"), Ok(UrlKind::Ssh));
        assert_eq!(url_kind("file:///tmp/x.git"), Ok(UrlKind::File));
    }

    #[test]
    fn star_stays_in_one_component() {
        let g = compile_glob("refs/heads/bot/*").unwrap();
        assert!(g.is_match("refs/heads/bot/x"));
        assert!(!g.is_match("refs/heads/bot/x/y"));
        assert!(!g.is_match("refs/heads/main"));
        assert!(compile_glob("refs/heads/bot/**")
            .unwrap()
            .is_match("refs/heads/bot/x/y"));
    }

    #[test]
    fn save_is_atomic_and_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("git/gate.toml");
        let mut cfg = GateConfig::new("/m", "/s");
        cfg.remotes.push(RemoteConfig {
            name: "origin".into(),
            url: "file:///tmp/up.git".into(),
            identity_file: None,
            known_hosts: None,
            push: vec![PushRule::new("refs/heads/bot/*")],
            fetch: true,
            serve_stale: false,
        });
        cfg.save(&path).unwrap();
        assert_eq!(GateConfig::load(&path).unwrap(), cfg);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
