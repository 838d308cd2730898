//! The state dir ↔ bundle layout: where every file the host writes for the
//! bundle lives, named once. Prepare mounts a state dir piece at the same
//! relative path under [`BUNDLE_ROOT`], so a file is `<state dir>/<rel>` on
//! the host ([`in_state`]) and `/bottle/<rel>` in the bundle ([`in_bundle`]):
//!
//! | host (state dir)        | bundle                   | mode |
//! |-------------------------|--------------------------|------|
//! | `ca/`                   | `/bottle/ca`             | ro   |
//! | `secrets/`              | `/bottle/secrets`        | ro   |
//! | `access/`               | `/bottle/access`         | ro   |
//! | `egress/`               | `/bottle/egress`         | ro   |
//! | `git/`                  | `/bottle/git`            | ro   |
//! | `git/mirrors/`          | `/bottle/git/mirrors`    | rw   |
//! | `supervise/`            | `/bottle/supervise`      | ro   |
//! | `queue/`                | `/bottle/queue`          | rw   |
//! | `audit/`                | `/bottle/audit`          | rw   |
//! | `run/`                  | `/bottle/run`            | rw   |
//! | `bundle.toml`           | `/bottle/bundle.toml`    | ro   |
//!
//! The operator's decision-signing key (`operator/`) is never mounted.
//! `bottle_core::StateDir` names the same host paths (a test checks they
//! agree).

use std::path::{Path, PathBuf};

pub use bottle_core::prepare::BUNDLE_ROOT;

/// `ca/`: the egress CA (`ca.pem`, `ca.key` mode 600).
pub const CA_DIR: &str = "ca";
/// `secrets/`: held secret values, one file each (mode 600).
pub const SECRETS_DIR: &str = "secrets";
/// `access/`: the bundle access credential.
pub const ACCESS_DIR: &str = "access";
/// `egress/`: the egress policy and what it loads.
pub const EGRESS_DIR: &str = "egress";
/// `egress/routes.toml` ([`crate::routes::RoutesFile`]).
pub const ROUTES: &str = "egress/routes.toml";
/// `egress/dlp/`: the operator's DLP rule files as copied at start.
pub const DLP_RULES_DIR: &str = "egress/dlp";
/// `git/`: the gate's config and mirrors.
pub const GIT_DIR: &str = "git";
/// `git/gate.toml` ([`crate::gate::GateConfig`]).
pub const GATE: &str = "git/gate.toml";
/// `git/mirrors/`: one bare mirror per remote (read-write in the bundle).
pub const MIRRORS_DIR: &str = "git/mirrors";
/// `git/known_hosts`: the pinned upstream host keys.
pub const KNOWN_HOSTS: &str = "git/known_hosts";
/// `supervise/`: supervise's config.
pub const SUPERVISE_DIR: &str = "supervise";
/// `supervise/sv.toml` ([`crate::supervise::SvConfig`]).
pub const SV: &str = "supervise/sv.toml";
/// `queue/`: permission requests and signed decisions (read-write in the bundle).
pub const QUEUE_DIR: &str = "queue";
/// `audit/`: the audit log's dir (read-write in the bundle).
pub const AUDIT_DIR: &str = "audit";
/// `audit/audit.jsonl`.
pub const AUDIT: &str = "audit/audit.jsonl";
/// `run/`: what the running bundle tells the host (read-write in the bundle).
pub const RUN_DIR: &str = "run";
/// `run/bundle.ready`: the bundle's readiness marker
/// ([`crate::bundle::BundleConfig::ready_file`]).
pub const BUNDLE_READY: &str = "run/bundle.ready";
/// `bundle.toml` ([`crate::bundle::BundleConfig`]).
pub const BUNDLE: &str = "bundle.toml";

/// Where `rel` is inside the bundle (`/bottle/<rel>`).
pub fn in_bundle(rel: &str) -> PathBuf {
    PathBuf::from(format!("{BUNDLE_ROOT}/{rel}"))
}

/// Where `rel` is in the state dir `state_dir` on the host.
pub fn in_state(state_dir: &Path, rel: &str) -> PathBuf {
    state_dir.join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_core::StateDir;

    #[test]
    fn the_state_dir_names_the_same_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = camino::Utf8Path::from_path(dir.path()).unwrap();
        let state = StateDir::at(root.join("state/a-b-c1d2"));
        let s = state.path().as_std_path();
        for (core, rel) in [
            (state.ca_dir(), CA_DIR),
            (state.secrets_dir(), SECRETS_DIR),
            (state.access_dir(), ACCESS_DIR),
            (state.egress_dir(), EGRESS_DIR),
            (state.routes_path(), ROUTES),
            (state.dlp_rules_dir(), DLP_RULES_DIR),
            (state.git_dir(), GIT_DIR),
            (state.supervise_dir(), SUPERVISE_DIR),
            (state.queue_dir(), QUEUE_DIR),
            (state.audit_dir(), AUDIT_DIR),
            (state.audit_path(), AUDIT),
            (state.run_dir(), RUN_DIR),
            (state.bundle_ready_path(), BUNDLE_READY),
            (state.bundle_config_path(), BUNDLE),
        ] {
            assert_eq!(core.as_std_path(), in_state(s, rel), "{rel}");
        }
        assert_eq!(crate::supervise::sv_path(s), in_state(s, SV));
        assert_eq!(crate::supervise::queue::routes_path(s), in_state(s, ROUTES));
        assert_eq!(crate::supervise::queue::gate_path(s), in_state(s, GATE));
        assert_eq!(in_bundle(ROUTES), Path::new("/bottle/egress/routes.toml"));
    }
}
