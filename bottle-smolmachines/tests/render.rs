//! The whole launch and teardown of fixture plans, rendered and
//! snapshotted (secrets redacted), plus the checks that make a secret on a
//! command line or a missing allowlist a test failure (SPEC §7.1, §7.2).

mod common;

use bottle_core::backend::{Backend, LaunchInput};
use bottle_core::command::{CommandSpec, EnvValue};
use bottle_smolmachines::hv::HostOs;
use bottle_smolmachines::plan::SECRET_ENV_PREFIX;
use bottle_smolmachines::render;
use bottle_smolmachines::smolvm::Smolvm;
use bottle_smolmachines::{SmolmachinesBackend, SmolmachinesPlan};
use common::{fixture, fixture_from, fixture_os, Fixture};

fn backend(os: HostOs) -> SmolmachinesBackend {
    SmolmachinesBackend::with(Smolvm::new("smolvm"), os)
}

fn smol_plan(f: &Fixture, os: HostOs) -> SmolmachinesPlan {
    backend(os)
        .plan(LaunchInput {
            plan: &f.plan,
            state: &f.state,
            wiring: &f.wiring,
        })
        .unwrap()
}

/// Launch script + teardown + attach, as the operator's `--dry-run` shows.
fn transcript(f: &Fixture, os: HostOs) -> String {
    let b = backend(os);
    let input = LaunchInput {
        plan: &f.plan,
        state: &f.state,
        wiring: &f.wiring,
    };
    let script = b.render(input).unwrap();
    let p = smol_plan(f, os);
    let mut out = format!("## launch ({os:?})\n{script}\n## teardown (LIFO)\n");
    for c in render::teardown(&p, &b.cli()) {
        out.push_str(&format!("{c}\n"));
    }
    out.push_str(&format!("\n## attach\n{}\n", render::attach(&p, &b.cli())));
    out.push_str(&format!(
        "\n## agent Dockerfile\n{}",
        p.build.dockerfile_text
    ));
    f.scrub(&out)
}

/// Every command of a launch: steps, undos, teardown, attach.
fn all_commands(f: &Fixture, os: HostOs) -> Vec<CommandSpec> {
    let p = smol_plan(f, os);
    let s = Smolvm::new("smolvm");
    let mut v = Vec::new();
    for st in render::steps(&p, &s) {
        v.push(st.step.run);
        v.extend(st.step.undo);
    }
    v.extend(render::teardown(&p, &s));
    v.push(render::attach(&p, &s));
    v
}

#[test]
fn launch_and_teardown_snapshots() {
    insta::glob!("fixtures/*.case", |path| {
        let f = fixture_from(path, 7);
        let t = transcript(&f, HostOs::Linux);
        for s in f.secrets() {
            assert!(
                !t.contains(&s),
                "secret in rendered commands of {}",
                path.display()
            );
        }
        insta::assert_snapshot!(t);
    });
}

#[test]
fn macos_adds_and_removes_the_loopback_alias() {
    let f = fixture_os("full", HostOs::Macos);
    let t = transcript(&f, HostOs::Macos);
    assert!(t.contains("sudo -n ifconfig lo0 alias 127.77.1.8 up"));
    assert!(t.contains("sudo -n ifconfig lo0 -alias 127.77.1.8"));
    // macOS publishes the bundle's ports on the alias (container IPs are
    // not routable from a macOS host) and allows exactly the alias
    for port in [8888, 9418, 9100] {
        assert!(
            t.contains(&format!("--publish 127.77.1.8:{port}:{port}")),
            "{t}"
        );
    }
    assert!(t.contains("--allow-cidr 127.77.1.8/32"));
    insta::assert_snapshot!("full_macos", t);
}

/// Item: the VM must reach exactly the bundle's ports. On Linux all of
/// 127/8 is the host, so an allowlisted loopback alias would reach every
/// host service bound to 0.0.0.0. The allowlist is the bundle container's
/// own IP instead (only the bundle listens in its network namespace), not a
/// host address (not loopback, not the bridge gateway), and nothing is
/// published on the host.
#[test]
fn linux_allows_only_the_bundle_container_ip_and_publishes_nothing() {
    let f = fixture("full");
    let p = smol_plan(&f, HostOs::Linux);
    let t = transcript(&f, HostOs::Linux);
    let ip = p.addresses.bundle_ip;
    assert_eq!(p.machine.allow_cidrs, vec![format!("{ip}/32")]);
    assert!(!ip.is_loopback() && ip != p.addresses.gateway);
    assert!(
        t.contains(&format!("--ip {ip}")),
        "the bundle is pinned to {ip}: {t}"
    );
    assert!(
        !t.contains("--publish"),
        "nothing may be published on the host: {t}"
    );
    assert!(!t.contains("--allow-cidr 127."), "{t}");
    assert_eq!(p.bundle_host(), ip.to_string());
    // the proxy URL (with the bundle access credential) goes by reference
    assert!(
        t.contains(&format!("HTTPS_PROXY={SECRET_ENV_PREFIX}HTTPS_PROXY")),
        "{t}"
    );
    assert!(!t.contains("HTTPS_PROXY=http://"), "{t}");
}

/// Flags bottle may put on a smolvm command line. Anything else (e.g.
/// `--credential`, `--smolfile`, `--ssh-agent`, `--volume`, `--port`) is a
/// test failure: it could carry a secret or widen the sandbox.
const SAFE_SMOLVM_FLAGS: &[&str] = &[
    "--error-format",
    "--state-dir",
    "--name",
    "--image",
    "--net-backend",
    "--allow-cidr",
    "--label",
    "--cpus",
    "--mem",
    "--workdir",
    "--env",
    "--secret-env",
    "--secret-file",
    "--timeout",
    "--user",
    "--interactive",
    "--tty",
    "--force",
    "--json",
    "--uid",
    "--gid",
    "--mode",
    "--follow",
    "--version",
];

/// Fails (returns Err) when a smolvm command could leak a secret on argv or
/// open the network beyond the bundle alias.
fn check_smolvm(
    c: &CommandSpec,
    secrets: &[String],
    secret_keys: &[String],
    alias: &str,
) -> Result<(), String> {
    if c.program != "smolvm" {
        return Ok(());
    }
    let line = c.argv_line();
    for s in secrets {
        if line.contains(s.as_str()) {
            return Err(format!("secret value on argv: {c}"));
        }
    }
    let args: Vec<&str> = c
        .args
        .iter()
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect();
    for (i, a) in args.iter().enumerate() {
        if a.starts_with('-') && !SAFE_SMOLVM_FLAGS.contains(a) {
            return Err(format!("unexpected flag {a} in {c}"));
        }
        if *a == "--env" || *a == "-e" {
            let kv = args.get(i + 1).copied().unwrap_or_default();
            let key = kv.split('=').next().unwrap_or_default();
            if secret_keys.iter().any(|k| k == key) {
                return Err(format!("secret env `{key}` passed with --env: {c}"));
            }
        }
        if *a == "--secret-env" {
            let kv = args.get(i + 1).copied().unwrap_or_default();
            let host = kv.split_once('=').map(|(_, h)| h).unwrap_or_default();
            if !host.starts_with(SECRET_ENV_PREFIX) {
                return Err(format!(
                    "--secret-env must reference a BOTTLE_SECRET_ variable: {kv}"
                ));
            }
            if !c
                .env
                .get(host)
                .is_some_and(|v| matches!(v, EnvValue::Secret(_)))
            {
                return Err(format!(
                    "--secret-env {kv} has no secret value in smolvm's environment"
                ));
            }
        }
    }
    if args.contains(&"create") {
        let cidrs: Vec<&str> = args
            .iter()
            .enumerate()
            .filter(|(_, a)| **a == "--allow-cidr")
            .map(|(i, _)| args[i + 1])
            .collect();
        if cidrs != [format!("{alias}/32").as_str()] {
            return Err(format!(
                "allowlist must be exactly {alias}/32, got {cidrs:?}"
            ));
        }
        let nb = args
            .iter()
            .position(|a| *a == "--net-backend")
            .map(|i| args[i + 1]);
        if nb != Some("virtio-net") {
            return Err("create must pin --net-backend virtio-net (TSI ignores allowlists)".into());
        }
    }
    Ok(())
}

fn secret_keys(f: &Fixture) -> Vec<String> {
    f.plan
        .env
        .iter()
        .filter(|(_, v)| matches!(v, bottle_core::plan::EnvEntry::Secret(_)))
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn no_secret_on_any_command_line_and_allowlist_always_present() {
    for name in ["full", "minimal", "dockerfile"] {
        for os in [HostOs::Linux, HostOs::Macos] {
            let f = fixture_os(name, os);
            let secrets = f.secrets();
            let keys = secret_keys(&f);
            let alias = smol_plan(&f, os).bundle_host();
            let cmds = all_commands(&f, os);
            assert!(cmds
                .iter()
                .any(|c| c.program == "smolvm" && c.args.contains(&"create".to_owned())));
            for c in &cmds {
                check_smolvm(c, &secrets, &keys, &alias)
                    .unwrap_or_else(|e| panic!("{name}/{os:?}: {e}"));
                // nothing anywhere (argv, Display, Debug, JSON) shows a value
                let shown = format!("{c} {c:?} {}", serde_json::to_string(c).unwrap());
                for s in &secrets {
                    assert!(!shown.contains(s.as_str()), "{name}: secret shown in {c}");
                    assert!(
                        !c.args.iter().any(|a| a.contains(s.as_str())),
                        "{name}: secret on argv"
                    );
                }
            }
        }
    }
}

fn vm_create(p: &SmolmachinesPlan, s: &Smolvm) -> CommandSpec {
    render::steps(p, s)
        .into_iter()
        .map(|st| st.step.run)
        .find(|c| c.program == "smolvm" && c.args.contains(&"create".to_owned()))
        .expect("a smolvm machine create step")
}

#[test]
fn secrets_reach_the_vm_only_by_reference() {
    let f = fixture("full");
    let p = smol_plan(&f, HostOs::Linux);
    let s = Smolvm::new("smolvm");
    let create = vm_create(&p, &s);
    // ASKED (?prompt) and FROM_HOST (${PLAIN_VAR}) are secrets: by reference
    for key in ["ASKED", "FROM_HOST"] {
        let r = format!("{key}={SECRET_ENV_PREFIX}{key}");
        let i = create
            .args
            .iter()
            .position(|a| *a == r)
            .expect("secret ref present");
        assert_eq!(create.args[i - 1], "--secret-env");
        assert!(matches!(
            create.env.get(&format!("{SECRET_ENV_PREFIX}{key}")),
            Some(EnvValue::Secret(_))
        ));
    }
    // literals and sidecar wiring go with --env
    assert!(create.args.contains(&"EDITOR=vi".to_owned()));
    assert!(create
        .args
        .contains(&"HTTP_PROXY=http://10.210.0.114:8888".to_owned()));
    // wiring the agent holds off argv (the proxy URL with the bundle access
    // credential) goes by reference, and replaces the plain value
    let r = format!("HTTPS_PROXY={SECRET_ENV_PREFIX}HTTPS_PROXY");
    let i = create.args.iter().position(|a| *a == r).expect("proxy ref");
    assert_eq!(create.args[i - 1], "--secret-env");
    assert!(!create
        .args
        .iter()
        .any(|a| a.starts_with("HTTPS_PROXY=http")));
    assert!(!create.args.iter().any(|a| a.contains("access-SECRET-key")));
    // route tokens and the provider key never reach the VM at all
    for c in all_commands(&f, HostOs::Linux) {
        for v in c.env.values() {
            if let EnvValue::Secret(sec) = v {
                assert!(!sec.expose().contains("ghp_") && !sec.expose().contains("sk-ant"));
            }
        }
    }
    // the agent sees the placeholder, not the provider key
    assert!(create
        .args
        .contains(&"ANTHROPIC_API_KEY=bottle-held-by-egress".to_owned()));
}

#[test]
fn the_checker_catches_a_leak() {
    // prove the guard fails when it should: a secret moved to --env
    let f = fixture("full");
    let p = smol_plan(&f, HostOs::Linux);
    let s = Smolvm::new("smolvm");
    let mut create = vm_create(&p, &s);
    let keys = secret_keys(&f);
    let secrets = f.secrets();
    let alias = p.bundle_host();
    assert!(check_smolvm(&create, &secrets, &keys, &alias).is_ok());
    let mut leaky = create.clone();
    leaky.args.insert(3, "--env".into());
    leaky.args.insert(4, "ASKED=whatever".into());
    assert!(check_smolvm(&leaky, &secrets, &keys, &alias)
        .unwrap_err()
        .contains("--env"));
    let mut cred = create.clone();
    cred.args.insert(3, "--credential".into());
    cred.args.insert(4, "X=Y@h".into());
    assert!(check_smolvm(&cred, &secrets, &keys, &alias)
        .unwrap_err()
        .contains("unexpected flag"));
    let i = create
        .args
        .iter()
        .position(|a| a == "--allow-cidr")
        .unwrap();
    create.args.drain(i..i + 2);
    assert!(check_smolvm(&create, &secrets, &keys, &alias)
        .unwrap_err()
        .contains("allowlist"));
}

#[test]
fn teardown_undoes_every_created_resource_newest_first() {
    let f = fixture("dockerfile");
    let p = smol_plan(&f, HostOs::Macos);
    let s = Smolvm::new("smolvm");
    let undo: Vec<String> = render::teardown(&p, &s)
        .iter()
        .map(|c| c.argv_line())
        .collect();
    let order = [
        "machine stop",
        "machine delete",
        "rm -f",
        "image rm --force bottle-agent:",
        "image rm --force bottle-agent-base:",
        "docker rm --force bottle-main-dev-test01-bundle",
        "network rm",
        "-alias",
    ];
    let mut last = 0;
    for o in order {
        let i = undo
            .iter()
            .position(|u| u.contains(o))
            .unwrap_or_else(|| panic!("no undo `{o}` in {undo:#?}"));
        assert!(i >= last, "`{o}` out of LIFO order: {undo:#?}");
        last = i;
    }
}

/// Skills (README "Skills") are uploaded file by file under Claude Code's
/// `~/.claude/skills/<name>/`, owned by the agent, and every directory the
/// upload creates below the home is the agent's too (Claude Code writes to
/// `~/.claude`); a file name from a skill is quoted for the guest shell.
#[test]
fn skills_are_uploaded_into_the_agent_home() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/skills/claude-skills.case");
    let f = fixture_from(&p, 7);
    let plan = smol_plan(&f, HostOs::Linux);
    let skill: Vec<(&str, Option<u32>, Option<u32>)> = plan
        .uploads
        .iter()
        .filter(|u| u.dst.contains("/skills/"))
        .map(|u| (u.dst.as_str(), u.uid, u.mode))
        .collect();
    assert_eq!(
        skill,
        vec![
            (
                "/home/agent/.claude/skills/review/SKILL.md",
                Some(1000),
                Some(0o644)
            ),
            (
                "/home/agent/.claude/skills/review/checklist/it's.md",
                Some(1000),
                Some(0o644)
            ),
        ]
    );
    let cmds: Vec<String> = all_commands(&f, HostOs::Linux)
        .iter()
        .map(|c| c.args.join(" "))
        .collect();
    let mk = cmds
        .iter()
        .find(|c| c.contains("mkdir -p '/home/agent/.claude/skills/review/checklist'"))
        .expect("a mkdir for the nested skill dir");
    assert!(
        mk.contains(
            "chown 1000:1000 '/home/agent/.claude' '/home/agent/.claude/skills' '/home/agent/.claude/skills/review' '/home/agent/.claude/skills/review/checklist'"
        ),
        "{mk}"
    );
    assert!(
        cmds.iter().any(|c| c.contains(
            r"main-dev-test01-agent:/home/agent/.claude/skills/review/checklist/it's.md"
        )),
        "{cmds:#?}"
    );
}
