//! `bundle.toml`, the one file that tells `bottle-sidecar run` which daemons
//! to start and with which files; written by [`crate::prepare`], read by the
//! bundle supervisor in `bottle-sidecars`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::supervise;

/// `bundle.toml`: which daemons run and with what options. A section that is
/// absent is not started (e.g. no git remotes → no `[git_gate]`).
///
/// ```toml
/// identity = "demo-dev-a1b2"
/// audit = "/bottle/audit/audit.jsonl"
/// access_key = "/bottle/access/key"     # optional: only its holder may use the bundle
/// audit_rotation = { max_bytes = 16777216, keep = 5 }   # optional
///
/// [egress]
/// listen = "0.0.0.0:8888"
/// routes = "/bottle/egress/routes.toml"
/// ca_dir = "/bottle/ca"
/// secrets_dir = "/bottle/secrets"        # optional
/// max_connections = 512                   # optional (503 past it)
/// max_buffered_bytes = 67108864           # optional (503 past it)
///
/// [git_gate]
/// listen = "0.0.0.0:9418"
/// config = "/bottle/git/gate.toml"
///
/// [supervise]
/// listen = "0.0.0.0:9100"
/// config = "/bottle/supervise/sv.toml"
/// queue = "/bottle/queue"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Bottle identity, stamped on every audit line.
    pub identity: String,
    /// The audit log all daemons append to.
    pub audit: PathBuf,
    /// When the audit log rotates (default: 16 MiB, 5 rotated files kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_rotation: Option<crate::audit::Rotation>,
    /// The egress proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSection>,
    /// The git gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_gate: Option<GitGateSection>,
    /// The supervise MCP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervise: Option<SuperviseSection>,
    /// The bottle's access credential file (`crate::access`): when set,
    /// every daemon refuses a client that does not present it (egress:
    /// `Proxy-Authorization`, supervise: `Authorization: Bearer`, git-gate:
    /// the first path segment). Absent: no check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<PathBuf>,
    /// DLP rules for egress and git-gate (one engine): operator rule files
    /// and disabled ids. Absent = the built-in rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<DlpSection>,
    /// A file the bundle writes once every daemon listens, and removes at
    /// start and on exit: the host's readiness signal (no `docker exec`
    /// poll). Absent: none is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_file: Option<PathBuf>,
}

/// `[dlp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpSection {
    /// Dir of gitleaks-format `*.toml` rule files added to the built-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_dir: Option<PathBuf>,
    /// Rule ids turned off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
}

impl DlpSection {
    /// Load the rules and put them in force for every detector built from
    /// now on. On error the rules in force stay (built-ins at start) and the
    /// error is returned (file, line and rule; never scanned data).
    pub fn install(&self) -> Result<std::sync::Arc<bottle_dlp::RuleSet>, bottle_dlp::RuleError> {
        bottle_dlp::rules::reload(self.rules_dir.as_deref(), &self.disable)
    }
}

/// `[egress]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    /// Listen address (default `0.0.0.0:8888`).
    #[serde(default = "default_egress_listen")]
    pub listen: SocketAddr,
    /// Live `routes.toml`.
    pub routes: PathBuf,
    /// Dir with the per-bottle `ca.pem` + `ca.key`.
    pub ca_dir: PathBuf,
    /// Held-secrets dir (overrides `secrets_dir` in routes.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// Agent connections served at once (default
    /// `egress::DEFAULT_MAX_CONNECTIONS` in bottle-sidecars); more get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Request-body bytes buffered for scanning across all requests
    /// (default `egress::DEFAULT_MAX_BUFFERED_BYTES` in bottle-sidecars); past it, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffered_bytes: Option<usize>,
    /// Tests only: an extra PEM trust root for upstream TLS, added to the
    /// built-in webpki roots. Written by the host only when the operator's
    /// environment sets `BOTTLE_TEST_UPSTREAM_CA` (docs/security.md, "Test
    /// hooks"); the agent cannot reach bundle.toml (S8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<PathBuf>,
}

/// `[git_gate]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitGateSection {
    /// Listen address (default `0.0.0.0:9418`).
    #[serde(default = "default_git_listen")]
    pub listen: SocketAddr,
    /// `gate.toml`.
    pub config: PathBuf,
    /// Program the mirrors' pre-receive hook runs (default: this executable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_program: Option<PathBuf>,
}

/// `[supervise]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseSection {
    /// Listen address (default `0.0.0.0:9100`).
    #[serde(default = "default_supervise_listen")]
    pub listen: SocketAddr,
    /// `sv.toml`.
    pub config: PathBuf,
    /// Queue dir (read-write).
    pub queue: PathBuf,
}

fn default_egress_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8888)
}
fn default_git_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9418)
}
fn default_supervise_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), supervise::DEFAULT_PORT)
}

impl BundleConfig {
    /// Parse and check a `bundle.toml`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Write atomically (mode 644).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        self.check()?;
        let text = toml::to_string(self).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        supervise::atomic_write(path, text.as_bytes(), Some(0o644))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// At least one daemon, and no two on the same port.
    pub fn check(&self) -> Result<(), String> {
        let listens = self.listens();
        if listens.is_empty() {
            return Err("bundle.toml names no daemon ([egress], [git_gate] or [supervise])".into());
        }
        for (i, (a, addr_a)) in listens.iter().enumerate() {
            for (b, addr_b) in &listens[i + 1..] {
                if addr_a.port() != 0 && addr_a.port() == addr_b.port() {
                    return Err(format!("{a} and {b} both listen on port {}", addr_a.port()));
                }
            }
        }
        Ok(())
    }

    /// `(daemon name, listen address)` of every configured daemon.
    pub fn listens(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = Vec::new();
        if let Some(e) = &self.egress {
            out.push(("egress", e.listen));
        }
        if let Some(g) = &self.git_gate {
            out.push(("git-gate", g.listen));
        }
        if let Some(s) = &self.supervise {
            out.push(("supervise", s.listen));
        }
        out
    }
}

/// The bundle's own log: a file next to the audit log, so in the bottle's
/// state dir on the host (it outlives the container: `bottle logs
/// --sidecar` works on a stopped bottle). One JSON object per line
/// (tracing's JSON format: `timestamp`, `level`, `target`, `fields`); the
/// `target` names the daemon (`bottle_sidecars::egress::…`, `…::git_gate::…`,
/// `…::supervise::…`, or `bundle` for the supervisor itself).
pub const LOG_FILE: &str = "bundle.log";

/// Where the bundle whose audit log is `audit` writes [`LOG_FILE`].
pub fn log_path(audit: &Path) -> PathBuf {
    audit.with_file_name(LOG_FILE)
}
