//! `sv.toml`: the supervise daemon's configuration (written host-side into
//! `state/<id>/supervise/sv.toml`; the operator API reads `grant_ttl` and
//! `auto_deny_after` from the same file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The supervise configuration.
///
/// ```toml
/// identity = "demo-dev-a1b2"                  # optional, for messages
/// operator_key = "<64 hex>"                   # Ed25519 public key (from supervise::queue::init)
/// routes = "/bottle/egress/routes.toml"       # live egress policy (read-only); optional
/// gate = "/bottle/git/gate.toml"              # git-gate policy (read-only); optional
/// secrets_dir = "/bottle/secrets"             # held values every request is scanned for; optional
/// grant_ttl = "1h"                            # default TTL of an approval
/// auto_deny_after = "10m"                     # unanswered requests are denied after this
/// allowed_hosts = ["bundle", "localhost", "127.0.0.1", "::1"]  # accepted HTTP Host names
///
/// [rate_limit]
/// burst = 5            # requests at once
/// refill = "10s"       # then one more per this interval
/// max_pending = 20     # open requests at most
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvConfig {
    /// Bottle identity (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Hex Ed25519 public key that verifies operator decisions. Required by the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_key: Option<String>,
    /// Path of the live `routes.toml` as the daemon sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<PathBuf>,
    /// Path of the live `gate.toml` as the daemon sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<PathBuf>,
    /// The bottle's held-secrets dir as the daemon sees it: every string an
    /// agent puts in a request is scanned for these values (and the DLP
    /// patterns) before anything is queued or recorded (docs/security.md,
    /// S10). Absent: patterns only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// Default lifetime of an approved widening.
    #[serde(default = "default_grant_ttl", with = "duration_text")]
    pub grant_ttl: Duration,
    /// Requests nobody answered are denied after this.
    #[serde(default = "default_auto_deny", with = "duration_text")]
    pub auto_deny_after: Duration,
    /// Host names (or `host:port`) the MCP endpoint accepts in `Host`; empty = any.
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Request rate limit.
    #[serde(default)]
    pub rate_limit: RateLimit,
}

/// Token bucket for new requests (per bottle: one daemon serves one bottle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed at once.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// One more request is allowed per this interval.
    #[serde(default = "default_refill", with = "duration_text")]
    pub refill: Duration,
    /// At most this many requests may be pending at a time.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: default_burst(),
            refill: default_refill(),
            max_pending: default_max_pending(),
        }
    }
}

impl Default for SvConfig {
    fn default() -> Self {
        Self {
            identity: None,
            operator_key: None,
            routes: None,
            gate: None,
            secrets_dir: None,
            grant_ttl: default_grant_ttl(),
            auto_deny_after: default_auto_deny(),
            allowed_hosts: default_allowed_hosts(),
            rate_limit: RateLimit::default(),
        }
    }
}

fn default_grant_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_auto_deny() -> Duration {
    Duration::from_secs(600)
}
fn default_burst() -> u32 {
    5
}
fn default_refill() -> Duration {
    Duration::from_secs(10)
}
fn default_max_pending() -> usize {
    20
}
fn default_allowed_hosts() -> Vec<String> {
    ["bundle", "localhost", "127.0.0.1", "::1"]
        .map(String::from)
        .to_vec()
}

impl SvConfig {
    /// Parse `sv.toml`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Write atomically.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        super::store::atomic_write(path, text.as_bytes(), Some(0o644))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Host side: `state_dir/supervise/sv.toml`, or the defaults when absent.
    pub fn load_for_state(state_dir: &Path) -> Result<Self, String> {
        let path = sv_path(state_dir);
        if path.exists() {
            Self::load(&path)
        } else {
            Ok(Self::default())
        }
    }
}

/// `state_dir/supervise/sv.toml`.
pub fn sv_path(state_dir: &Path) -> PathBuf {
    crate::layout::in_state(state_dir, crate::layout::SV)
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let c: SvConfig =
            toml::from_str("operator_key = \"ab\"\n[rate_limit]\nrefill = \"2s\"\n").unwrap();
        assert_eq!(c.auto_deny_after, Duration::from_secs(600));
        assert_eq!(c.rate_limit.refill, Duration::from_secs(2));
        assert_eq!(c.rate_limit.burst, 5);
        let text = toml::to_string(&c).unwrap();
        let back: SvConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<SvConfig>("nope = 1").is_err());
    }
}
