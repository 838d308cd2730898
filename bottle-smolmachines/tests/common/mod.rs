//! Fixture plans for the smolmachines tests: `.case` files (several files of
//! a `$BOTTLE_HOME`, each after `# --- <path>`), resolved with a fixed
//! identity, slot and host env, plus the wiring the sidecars would return.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;

use bottle_core::plan::{EnvEntry, Prompter, ResolveOptions};
use bottle_core::prepare::{AgentFile, Mount, Wiring, AGENT_CA_PATH};
use bottle_core::state::StateDir;
use bottle_core::{resolve, BottlePlan, Home, Identity, Loader, Secret};
use camino::{Utf8Path, Utf8PathBuf};

use bottle_test_gate::Requirement;

/// The smolvm CLI (`pip install smolmachines`; `.ci/run` links it): the
/// contract and no-boot tests need it, CI must have it.
pub static SMOLVM: Requirement = Requirement::new("smolvm", || {
    bottle_smolmachines::smolvm::Smolvm::locate()
        .map(|_| ())
        .map_err(|e| format!("the smolvm CLI is unavailable: {}", e.why))
});

/// Every secret value a fixture can produce contains this marker.
pub const MARK: &str = "SECRET";

pub fn host_env(home: &Utf8Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HOME".into(), home.join("operator").to_string()),
        ("ANTHROPIC_API_KEY".into(), "sk-ant-test-SECRET-0001".into()),
        ("GITHUB_TOKEN".into(), "ghp_testSECRET0002".into()),
        ("PLAIN_VAR".into(), "plain-SECRET-0004".into()),
    ])
}

struct FixedAnswers;
impl Prompter for FixedAnswers {
    fn ask(&self, key: &str, _q: &str) -> bottle_core::Result<Secret> {
        Ok(Secret::new(format!("answer-SECRET-{}", key.len())))
    }
}

fn materialize(case: &str, root: &Utf8Path) {
    bottle_core::fixture::write_case(case, root).expect("fixture files are written");
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: Utf8PathBuf,
    pub plan: BottlePlan,
    pub state: StateDir,
    pub wiring: Wiring,
}

impl Fixture {
    /// Every secret value of the plan (tokens, host-var and prompt env).
    pub fn secrets(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .plan
            .held_secrets()
            .values()
            .map(|s| s.expose().to_owned())
            .collect();
        for e in self.plan.env.values() {
            if let EnvEntry::Secret(s) = e {
                v.push(s.expose().to_owned());
            }
        }
        v.extend(
            self.wiring
                .agent_secret_env
                .values()
                .map(|s| s.expose().to_owned()),
        );
        assert!(v.iter().all(|s| s.contains(MARK)));
        v
    }

    /// Replace temp paths for stable snapshots.
    pub fn scrub(&self, text: &str) -> String {
        text.replace(self.root.as_str(), "[HOME]")
    }
}

/// Load `tests/fixtures/<name>.case` with a fixed identity and slot.
pub fn fixture_from(path: &std::path::Path, slot: u32) -> Fixture {
    fixture_from_os(path, slot, bottle_smolmachines::hv::HostOs::Linux)
}

/// As [`fixture_from`], wired for `os` (the agent's bundle endpoint).
pub fn fixture_from_os(
    path: &std::path::Path,
    slot: u32,
    os: bottle_smolmachines::hv::HostOs,
) -> Fixture {
    let case = fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    materialize(&case, &root);
    let loader = Loader::new(Home::new(&root), None);
    let (agent, bottle) = loader.load("main").unwrap();
    let opts = ResolveOptions {
        identity: Some(Identity::parse("main-dev-test01").unwrap()),
        slot,
        ..Default::default()
    };
    let plan = resolve(&agent, &bottle, &opts, &host_env(&root), &FixedAnswers).unwrap();
    let state = StateDir::at(root.join("state/main-dev-test01"));
    let alias = bottle_smolmachines::bundle_host(&plan, os).unwrap();
    let wiring = wiring(&state, &alias);
    Fixture {
        _dir: dir,
        root,
        plan,
        state,
        wiring,
    }
}

pub fn fixture(name: &str) -> Fixture {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.case"));
    fixture_from(&p, 7)
}

/// A fixture wired for `os`.
pub fn fixture_os(name: &str, os: bottle_smolmachines::hv::HostOs) -> Fixture {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.case"));
    fixture_from_os(&p, 7, os)
}

/// The wiring the sidecars' `Prepare` impls return (shape per contracts.md).
pub fn wiring(state: &StateDir, bundle_host: &str) -> Wiring {
    let m = |host: Utf8PathBuf, target: &str, ro: bool| Mount {
        host,
        target: target.into(),
        read_only: ro,
    };
    let proxy = format!("http://{bundle_host}:8888");
    Wiring {
        bundle_mounts: vec![
            m(state.ca_dir(), "/bottle/ca", true),
            m(state.secrets_dir(), "/bottle/secrets", true),
            m(state.egress_dir(), "/bottle/egress", true),
            m(state.git_dir(), "/bottle/git", false),
            m(state.queue_dir(), "/bottle/queue", false),
            m(state.audit_dir(), "/bottle/audit", false),
            m(state.bundle_config_path(), "/bottle/bundle.toml", true),
        ],
        bundle_args: vec![
            "run".into(),
            "--config".into(),
            "/bottle/bundle.toml".into(),
        ],
        agent_env: BTreeMap::from([
            ("HTTPS_PROXY".into(), proxy.clone()),
            ("HTTP_PROXY".into(), proxy.clone()),
            ("https_proxy".into(), proxy.clone()),
            ("http_proxy".into(), proxy),
            (
                "NO_PROXY".into(),
                format!("{bundle_host},localhost,127.0.0.1"),
            ),
            (
                "SSL_CERT_FILE".into(),
                "/etc/ssl/certs/ca-certificates.crt".into(),
            ),
            ("NODE_EXTRA_CA_CERTS".into(), AGENT_CA_PATH.into()),
            (
                "REQUESTS_CA_BUNDLE".into(),
                "/etc/ssl/certs/ca-certificates.crt".into(),
            ),
            (
                "GIT_SSL_CAINFO".into(),
                "/etc/ssl/certs/ca-certificates.crt".into(),
            ),
        ]),
        // the proxy URL with the bundle access credential: by reference
        agent_secret_env: BTreeMap::from([(
            "HTTPS_PROXY".into(),
            Secret::new(format!(
                "http://bottle:access-SECRET-key@{bundle_host}:8888"
            )),
        )]),
        agent_files: vec![
            AgentFile {
                host: state.ca_dir().join("ca.pem"),
                guest: AGENT_CA_PATH.into(),
                mode: 0o644,
            },
            AgentFile {
                host: state.agent_dir().join("gitconfig"),
                guest: "~/.gitconfig".into(),
                mode: 0o644,
            },
            AgentFile {
                host: state.agent_dir().join("mcp.json"),
                guest: "~/.claude/mcp.json".into(),
                mode: 0o600,
            },
        ],
        ports: vec![8888, 9100, 9418],
    }
}
