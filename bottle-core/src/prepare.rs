//! The host-side sidecar seam: each sidecar's [`Prepare`] writes its config
//! into the bottle's state dir and says what the backend must wire.
//!
//! Backend-neutral: paths inside the bundle are under [`BUNDLE_ROOT`]; the
//! agent reaches the bundle at [`PrepareContext::bundle_host`], which the
//! backend chooses (a network alias for docker, an IP for a VM).

use std::collections::BTreeMap;

use camino::Utf8PathBuf;
use serde::Serialize;

use crate::error::Result;
use crate::plan::BottlePlan;
use crate::secret::Secret;
use crate::state::StateDir;

/// Where the state dir's pieces are mounted inside the bundle.
pub const BUNDLE_ROOT: &str = "/bottle";
/// Where the per-bottle CA certificate lands in the agent.
pub const AGENT_CA_PATH: &str = "/usr/local/share/ca-certificates/bottle-ca.crt";

/// A host path mounted into the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Host path.
    pub host: Utf8PathBuf,
    /// Path in the bundle.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// A file to place into the agent (copied, never bind-mounted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentFile {
    /// Host path of the content.
    pub host: Utf8PathBuf,
    /// Path in the agent (`~` = the agent's home).
    pub guest: String,
    /// Mode.
    pub mode: u32,
}

/// What the backend must wire for the sidecars.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Wiring {
    /// Mounts into the bundle.
    pub bundle_mounts: Vec<Mount>,
    /// Arguments of `bottle-sidecar` in the bundle.
    pub bundle_args: Vec<String>,
    /// Non-secret env for the agent (proxy, CA, MCP URL…).
    pub agent_env: BTreeMap<String, String>,
    /// Env the agent holds that must stay off every command line and
    /// container config (the bundle access credential in the proxy URL,
    /// ARCHITECTURE.md "Access credential"). A key here overrides the same
    /// key of `agent_env` inside the agent; backends deliver it the way they
    /// deliver secret env.
    pub agent_secret_env: BTreeMap<String, Secret>,
    /// Files to place into the agent.
    pub agent_files: Vec<AgentFile>,
    /// Ports the bundle listens on.
    pub ports: Vec<u16>,
}

impl Wiring {
    /// Append another sidecar's wiring.
    pub fn merge(&mut self, other: Wiring) {
        self.bundle_mounts.extend(other.bundle_mounts);
        if !other.bundle_args.is_empty() {
            self.bundle_args = other.bundle_args;
        }
        self.agent_env.extend(other.agent_env);
        self.agent_secret_env.extend(other.agent_secret_env);
        self.agent_files.extend(other.agent_files);
        self.ports.extend(other.ports);
        self.ports.sort_unstable();
        self.ports.dedup();
    }
}

/// Where the sidecars are being prepared.
#[derive(Debug, Clone)]
pub struct PrepareContext<'a> {
    /// The bottle's state dir (files are written here).
    pub state: &'a StateDir,
    /// Host or IP the agent uses to reach the bundle.
    pub bundle_host: String,
}

/// Host-side preparation of one sidecar.
pub trait Prepare {
    /// Sidecar name (`egress`, `git-gate`, `supervise`, `bundle`).
    fn name(&self) -> &'static str;
    /// Write config into the state dir; return the wiring.
    fn prepare(&self, plan: &BottlePlan, ctx: &PrepareContext<'_>) -> Result<Wiring>;
}
