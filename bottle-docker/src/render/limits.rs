//! The bundle container's memory and process limits, with the operator's
//! overrides from the environment.

use bottle_core::{Error, Result};

/// Memory and process limits of the bundle container (egress buffers
/// request bodies, git-gate runs git: a flood from the agent must hit these,
/// not the host). Defaults: 512 MiB, 512 processes; `BOTTLE_BUNDLE_MEMORY`
/// (e.g. `1GiB`) and `BOTTLE_BUNDLE_PIDS` override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// `--memory` (and `--memory-swap`: no swap beyond it), bytes.
    pub memory_bytes: u64,
    /// `--pids-limit`.
    pub pids: u32,
}

/// Env var overriding the bundle's memory limit (`512MiB`, `1GiB`, bytes).
pub const BUNDLE_MEMORY_ENV: &str = "BOTTLE_BUNDLE_MEMORY";
/// Env var overriding the bundle's process limit.
pub const BUNDLE_PIDS_ENV: &str = "BOTTLE_BUNDLE_PIDS";

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            pids: 512,
        }
    }
}

/// A bad setting in the operator's environment (exit 2, like a manifest).
fn env_error(message: String, fix: String) -> Error {
    Error::Manifest {
        file: "<environment>".into(),
        line: None,
        column: None,
        message,
        fix,
    }
}

impl BundleLimits {
    /// The defaults with the operator's overrides from the environment.
    pub fn from_env() -> Result<Self> {
        let mut l = Self::default();
        if let Ok(v) = std::env::var(BUNDLE_MEMORY_ENV) {
            l.memory_bytes = bottle_core::units::parse_bytes(&v)
                .ok()
                .filter(|b| *b >= 64 << 20)
                .ok_or_else(|| {
                    env_error(
                        format!("{BUNDLE_MEMORY_ENV}={v} is not a memory size of at least 64MiB"),
                        format!("set it like `{BUNDLE_MEMORY_ENV}=1GiB`, or unset it for 512MiB"),
                    )
                })?;
        }
        if let Ok(v) = std::env::var(BUNDLE_PIDS_ENV) {
            l.pids = v.trim().parse().ok().filter(|p| *p >= 64).ok_or_else(|| {
                env_error(
                    format!("{BUNDLE_PIDS_ENV}={v} is not a process count of at least 64"),
                    format!("set it like `{BUNDLE_PIDS_ENV}=1024`, or unset it for 512"),
                )
            })?;
        }
        Ok(l)
    }
}
