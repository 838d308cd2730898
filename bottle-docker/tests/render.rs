//! Snapshots of the rendered docker commands for fixture manifests
//! (`fixtures/*.case`, same format as bottle-core's: files after
//! `# --- <relative path>` lines; `repo/` becomes `--cwd`), and a check that
//! no held secret value reaches any rendered command.

use std::collections::BTreeMap;
use std::fs;

use bottle_core::backend::Backend;
use bottle_core::command::{EnvValue, Stdin};
use bottle_core::plan::{NoPrompt, ResolveOptions};
use bottle_core::prepare::{AgentFile, Mount, AGENT_CA_PATH};
use bottle_core::{resolve, Home, Identity, Loader, RecordingRunner, Wiring};
use bottle_docker::DockerBackend;
use camino::{Utf8Path, Utf8PathBuf};

mod common;
use common::{input, Case};

const SECRETS: [&str; 2] = ["tok-SECRET-route-0003", "sk-ant-SECRET-provider-0001"];

fn host_env(home: &Utf8Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HOME".into(), home.join("operator").to_string()),
        ("API_TOKEN".into(), SECRETS[0].into()),
        ("ANTHROPIC_API_KEY".into(), SECRETS[1].into()),
        ("HOST_VALUE".into(), "host-env-SECRET-0005".into()),
    ])
}

fn materialize(case: &str, root: &Utf8Path) {
    bottle_core::fixture::write_case(case, root).expect("fixture files are written");
}

/// A stand-in bundle access credential (what `prepare` generates).
const ACCESS_KEY: &str = "access-key-SECRET-0f3c9a";

/// Roughly what the sidecars' `Prepare` impls return (shape only).
fn wiring(root: &Utf8Path, state: &Utf8Path) -> Wiring {
    let ca = state.join("ca/ca.pem");
    fs::create_dir_all(ca.parent().unwrap()).unwrap();
    fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let gitconfig = state.join("agent/gitconfig");
    fs::create_dir_all(gitconfig.parent().unwrap()).unwrap();
    fs::write(&gitconfig, "[user]\n\tname = bot\n").unwrap();
    let _ = root;
    let mount = |dir: &str, ro: bool| Mount {
        host: state.join(dir),
        target: format!("/bottle/{dir}"),
        read_only: ro,
    };
    Wiring {
        bundle_mounts: vec![
            Mount {
                host: state.join("bundle.toml"),
                target: "/bottle/bundle.toml".into(),
                read_only: true,
            },
            mount("ca", true),
            mount("secrets", true),
            mount("egress", true),
            mount("git", false),
            mount("queue", false),
            mount("audit", false),
            mount("run", false),
        ],
        bundle_args: vec![
            "run".into(),
            "--config".into(),
            "/bottle/bundle.toml".into(),
        ],
        agent_env: BTreeMap::from([(
            "BOTTLE_MCP_URL".to_owned(),
            "http://bundle:9100/mcp".to_owned(),
        )]),
        // the proxy URL with the bundle access credential: off the argv
        agent_secret_env: BTreeMap::from([(
            "HTTPS_PROXY".to_owned(),
            bottle_core::Secret::new(format!("http://bottle:{ACCESS_KEY}@bundle:8888")),
        )]),
        agent_files: vec![
            AgentFile {
                host: ca,
                guest: AGENT_CA_PATH.into(),
                mode: 0o644,
            },
            AgentFile {
                host: gitconfig,
                guest: "~/.gitconfig".into(),
                mode: 0o644,
            },
        ],
        ports: vec![8888, 9100, 9418],
    }
}

fn load(path: &std::path::Path) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    materialize(&fs::read_to_string(path).unwrap(), &root);
    let repo = root.join("repo");
    let cwd = repo.is_dir().then(|| repo.clone());
    let loader = Loader::new(Home::new(&root), cwd.clone());
    let (agent, bottle) = loader.load("main").unwrap();
    let opts = ResolveOptions {
        cwd,
        identity: Some(Identity::parse("main-dev-abc123").unwrap()),
        ..Default::default()
    };
    let plan = resolve(&agent, &bottle, &opts, &host_env(&root), &NoPrompt).unwrap();
    let state = root.join("state/main-dev-abc123");
    fs::create_dir_all(&state).unwrap();
    let wiring = wiring(&root, &state);
    Case {
        _dir: dir,
        root,
        plan,
        state: bottle_core::StateDir::at(state),
        wiring,
    }
}

fn backend(root: &Utf8Path) -> DockerBackend {
    common::backend(root).with_runsc(true)
}

#[test]
fn rendered_commands() {
    insta::glob!("fixtures/*.case", |path| {
        let case = load(path);
        let be = backend(&case.root);
        let script = be.render(input(&case)).unwrap();
        let text = script.to_string();
        insta::with_settings!({filters => vec![
            (case.root.as_str(), "[ROOT]"),
            (r"dev\.bottle\.home=[0-9a-f]{16}", "dev.bottle.home=[HOME]"),
            // a user Dockerfile's tag hashes its (temporary) path
            (r"bottle-agent-custom:[0-9a-f]{16}", "bottle-agent-custom:[HASH]"),
        ]}, {
            insta::assert_snapshot!(text);
        });
    });
}

#[test]
fn no_held_secret_in_any_rendered_command() {
    insta::glob!("fixtures/*.case", |path| {
        let case = load(path);
        let held = case.plan.held_secrets();
        assert!(!held.is_empty(), "fixture holds no secret: {path:?}");
        let be = backend(&case.root);
        let script = be.render(input(&case)).unwrap();
        // Rendered text, Debug, JSON, and each argv word.
        let shown = format!(
            "{script}\n{script:?}\n{}",
            serde_json::to_string(&script).unwrap()
        );
        // the bundle access credential is held like a secret too
        let mut held = held;
        held.insert(
            "access-key".into(),
            bottle_core::Secret::new(ACCESS_KEY.to_owned()),
        );
        for (name, s) in &held {
            assert!(!shown.contains(s.expose()), "{name} leaked into the render");
            for st in &script.steps {
                for a in st.run.args.iter().chain(std::iter::once(&st.run.program)) {
                    assert!(!a.contains(s.expose()), "{name} on argv of {}", st.name);
                }
                if let Some(Stdin::Bytes(b)) = &st.run.stdin {
                    let t = String::from_utf8_lossy(b);
                    assert!(!t.contains(s.expose()), "{name} in stdin of {}", st.name);
                }
            }
        }
        // Route/provider tokens (held by egress) never reach the agent at
        // all, not even through the docker CLI's environment.
        let create = script
            .steps
            .iter()
            .find(|s| s.name == "create agent container")
            .unwrap();
        for route in &case.plan.egress.routes {
            if let Some(a) = &route.auth {
                for v in create.run.env.values() {
                    let raw = match v {
                        EnvValue::Secret(s) => s.expose().to_owned(),
                        EnvValue::Plain(p) => p.clone(),
                    };
                    assert_ne!(raw, a.token.expose(), "route token in agent env");
                }
            }
        }
        // Running it through a recorder records nothing secret either.
        let rec = RecordingRunner::new();
        rec.reply("docker image inspect", 1, "");
        let _ = be.launch(input(&case), &rec);
        for s in held.values() {
            assert!(!rec.transcript().contains(s.expose()));
            assert!(!format!("{:?}", rec.calls()).contains(s.expose()));
        }
    });
}

#[test]
fn names_match_core() {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shell-basic.case");
    let case = load(&p);
    assert_eq!(
        bottle_docker::names_for(&case.plan.identity),
        case.plan.names
    );
}

fn agent_create(be: &DockerBackend, case: &Case) -> bottle_core::backend::Step {
    be.render(input(case))
        .unwrap()
        .steps
        .into_iter()
        .find(|s| s.name == "create agent container")
        .unwrap()
}

/// THREAT-MODEL S3 (docs/security.md "DNS"): the agent's embedded resolver
/// gets one upstream, a loopback address of the agent's own namespace
/// (docker reaches a `--dns` server from the container's namespace on every
/// engine version), so a name it does not know is forwarded nowhere; the
/// bundle keeps the engine's resolvers (it resolves the upstreams).
#[test]
fn agent_resolver_has_only_a_loopback_upstream() {
    insta::glob!("fixtures/*.case", |path| {
        let case = load(path);
        let be = backend(&case.root);
        let create = agent_create(&be, &case);
        let dns: Vec<&str> = create
            .run
            .args
            .windows(2)
            .filter(|w| w[0] == "--dns")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(dns, [bottle_docker::AGENT_DNS], "{path:?}");
        assert!(bottle_docker::AGENT_DNS.starts_with("127."));
    });
}

/// THREAT-MODEL S1 (issue: `docker inspect` of a Dockerfile bottle): no
/// agent kind gets a secret env value into its container config. Secret
/// values travel only over `docker exec` stdin into a 0600 file.
#[test]
fn secret_env_never_enters_the_container_config() {
    insta::glob!("fixtures/*.case", |path| {
        let case = load(path);
        let be = backend(&case.root);
        let script = be.render(input(&case)).unwrap();
        let create = agent_create(&be, &case);
        assert!(
            !create
                .run
                .env
                .values()
                .any(|v| matches!(v, EnvValue::Secret(_))),
            "{path:?}: a secret goes to `docker create` through the CLI's environment"
        );
        for w in create.run.args.windows(2) {
            if w[0] == "--env" {
                assert!(
                    w[1].contains('='),
                    "{path:?}: `--env {}` copies a value into the container config",
                    w[1]
                );
            }
        }
        let secret_env = case
            .plan
            .env
            .values()
            .any(|v| matches!(v, bottle_core::plan::EnvEntry::Secret(_)));
        // the secret env file travels in the archive copied in before the
        // agent starts, as secret stdin (the wiring mounts `run/`)
        let handed = script.steps.iter().any(|s| {
            s.name == "copy agent files"
                && matches!(&s.run.stdin, Some(Stdin::SecretBytes(b)) if !b.holds().is_empty())
        });
        // the proxy URL with the access credential is always handed over
        let must_hand = secret_env || !case.wiring.agent_secret_env.is_empty();
        assert!(
            must_hand,
            "{path:?}: the wiring carries the access credential"
        );
        assert_eq!(handed, must_hand, "{path:?}");
        if path.ends_with("dockerfile-env.case") || path.ends_with("shell-basic.case") {
            assert!(secret_env, "{path:?} must exercise a secret env entry");
        }
    });
}

/// Issue 14.9: the default base image is the project's own tag; when it is
/// missing, launch stops with the fix and never pulls another image.
#[test]
fn missing_base_image_is_an_error_with_the_fix_never_a_pull() {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shell-basic.case");
    let case = load(&p);
    assert_eq!(case.plan.provider.base_image, "bottle-base:bookworm");
    let be = backend(&case.root);
    let rec = RecordingRunner::new();
    rec.reply("docker image inspect", 1, "");
    let err = be
        .launch(input(&case), &rec)
        .err()
        .expect("launch without the base image fails");
    let text = format!("{err} {err:?}");
    assert!(text.contains("bottle-base:bookworm"), "{text}");
    assert!(text.contains("cargo xtask seed-base"), "{text}");
    assert!(
        !rec.transcript().contains("docker pull"),
        "pulled: {}",
        rec.transcript()
    );
    assert!(!rec.transcript().contains("docker network create"));
}

fn probe_with(info: &str, run_code: i32) -> (DockerBackend, bottle_core::Probe) {
    let rec = RecordingRunner::new();
    rec.reply("docker version", 0, "20.10.24+dfsg1\n");
    rec.reply("docker image inspect", 0, "sha256:x\n");
    rec.reply("docker info", 0, info);
    rec.reply("docker run", run_code, "");
    let be = DockerBackend::default();
    let p = be.probe(&rec);
    (be, p)
}

/// Issue 16 "isolation chosen by a sentence": the runtime follows the
/// probe's typed result of a real `docker run --runtime runsc`, and
/// issue 18: the fallback warning is said once.
#[test]
fn runtime_follows_the_typed_gvisor_probe_and_warns_once() {
    use bottle_core::backend::Gvisor;
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shell-basic.case");
    let case = load(&p);
    assert_eq!(case.plan.runtime, bottle_core::manifest::Runtime::Auto);
    let runsc = r#"{"runc":{"path":"runc"},"runsc":{"path":"/usr/bin/runsc"}}"#;

    // registered and the test container ran: gVisor, no warning
    let (be, probe) = probe_with(runsc, 0);
    assert_eq!(probe.gvisor(), Some(&Gvisor::Available));
    let (rt, lines) = be.runtime_lines(&case.plan);
    assert_eq!(rt, "runsc");
    assert!(lines.iter().all(|l| !l.contains("WARNING")), "{lines:?}");

    // registered but the container fails: runc, and the reason is kept
    let (be, probe) = probe_with(runsc, 125);
    let Some(Gvisor::Unavailable { why }) = probe.gvisor() else {
        panic!("{probe:?}")
    };
    assert!(why.contains("scripted failure"), "{why}");
    assert_eq!(be.runtime_lines(&case.plan).0, "runc");

    // not registered: runc, and gVisor is mentioned exactly once across
    // the probe's notes and the preflight's runtime lines
    let (be, probe) = probe_with(r#"{"runc":{"path":"runc"}}"#, 0);
    let bottle_core::Probe::Ready { notes, gvisor, .. } = &probe else {
        panic!("{probe:?}")
    };
    assert!(!gvisor.is_available());
    let (rt, lines) = be.runtime_lines(&case.plan);
    assert_eq!(rt, "runc");
    let said = notes
        .iter()
        .chain(&lines)
        .filter(|l| l.contains("gVisor"))
        .count();
    assert_eq!(said, 1, "notes {notes:?}, runtime lines {lines:?}");
    assert!(lines[0].starts_with("WARNING: gVisor (runsc) is not available (not registered"));
    // the DNS construction is reported with the engine's version
    assert!(
        notes
            .iter()
            .any(|n| n.contains("DNS: engine 20.10.24+dfsg1 forwards")
                && n.contains("--dns 127.0.0.1")),
        "{notes:?}"
    );
}

#[test]
fn engine_versions_with_the_dns_fix() {
    use bottle_docker::engine_forwards_internal_dns as f;
    for (v, want) in [
        ("20.10.24+dfsg1", Some(true)),
        ("23.0.10", Some(true)),
        ("23.0.11", Some(false)),
        ("24.0.9", Some(true)),
        ("25.0.3", Some(true)),
        ("25.0.4", Some(false)),
        ("26.0.0", Some(false)),
        ("28.1.1", Some(false)),
        ("dev", None),
    ] {
        assert_eq!(f(v), want, "{v}");
    }
}

/// Issue 13.8: the bundle container has memory and process limits
/// (defaults, or what the operator configured), no swap beyond memory.
#[test]
fn bundle_has_memory_and_pids_limits() {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shell-basic.case");
    let case = load(&p);
    let bundle_args = |be: DockerBackend| {
        be.render(input(&case))
            .unwrap()
            .steps
            .into_iter()
            .find(|s| s.name == "create bundle container")
            .unwrap()
            .run
            .args
    };
    let flag = |args: &[String], f: &str| {
        args.windows(2)
            .find(|w| w[0] == f)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| panic!("no {f} in {args:?}"))
    };
    let d =
        bundle_args(backend(&case.root).with_bundle_limits(bottle_docker::BundleLimits::default()));
    assert_eq!(flag(&d, "--memory"), (512u64 << 20).to_string());
    assert_eq!(flag(&d, "--memory-swap"), (512u64 << 20).to_string());
    assert_eq!(flag(&d, "--pids-limit"), "512");
    let c = bundle_args(
        backend(&case.root).with_bundle_limits(bottle_docker::BundleLimits {
            memory_bytes: 1 << 30,
            pids: 128,
        }),
    );
    assert_eq!(flag(&c, "--memory"), (1u64 << 30).to_string());
    assert_eq!(flag(&c, "--pids-limit"), "128");
}

/// Skills (README "Skills") reach the agent in the agent-files archive,
/// under Codex's `~/.agents/skills/<name>/`, owned by the agent with every
/// directory on the way: a repo skill and an operator skill.
#[test]
fn skills_are_copied_into_the_agent_home() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/codex-repo-skills.case");
    let case = load(&p);
    let names: Vec<(&str, bottle_core::skills::SkillOrigin)> = case
        .plan
        .provider
        .skills
        .iter()
        .map(|s| (s.name.as_str(), s.origin))
        .collect();
    assert_eq!(
        names,
        vec![
            ("review", bottle_core::skills::SkillOrigin::Repo),
            ("shared", bottle_core::skills::SkillOrigin::Home)
        ]
    );
    let be = backend(&case.root);
    let script = be.render(input(&case)).unwrap();
    let copy = script
        .steps
        .iter()
        .find(|s| s.name == "copy agent files")
        .unwrap();
    let bytes = match &copy.run.stdin {
        Some(Stdin::Bytes(b)) => b.as_slice(),
        Some(Stdin::SecretBytes(b)) => b.expose(),
        _ => panic!("no archive on stdin"),
    };
    let tar = case.root.join("agent-files.tar");
    fs::write(&tar, bytes).unwrap();
    let list = duct::cmd!("tar", "-tvf", tar.as_str()).read().unwrap() + "\n";
    for want in [
        "drwxr-xr-x 1000/1000         0 1970-01-01 00:00 home/agent/.agents/\n",
        "drwxr-xr-x 1000/1000         0 1970-01-01 00:00 home/agent/.agents/skills/review/checklist/\n",
        "-rw-r--r-- 1000/1000        17 1970-01-01 00:00 home/agent/.agents/skills/review/checklist/steps.md\n",
        "home/agent/.agents/skills/review/SKILL.md\n",
        "home/agent/.agents/skills/shared/SKILL.md\n",
    ] {
        assert!(list.contains(want), "missing {want:?} in\n{list}");
    }
    // codex only: Claude Code's location stays empty
    assert!(!list.contains(".claude/skills"), "{list}");
}
