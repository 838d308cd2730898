//! Claude Code and Codex in a bottle, on a real docker engine, with a
//! stand-in CLI (issue 17): the real CLIs need the npm registry, so the
//! test builds each template's image with `tests/integration/standin/agent-cli.sh`
//! at the path the template's `npm install -g` puts the real CLI, and runs
//! the template through `bottle start` with the `BOTTLE_TEST_AGENT_IMAGE`
//! hook (test-only, README "Testing"). The stand-in records what the real
//! CLI would get (argv, env names, config files, skills), calls the
//! supervise MCP server's `list_policy` with the URL and headers of the MCP
//! config it finds, and makes one HTTPS call to the provider's host through
//! egress, where a test upstream (TLS from a test CA) shows the injected key.
//! Skips when docker is unreachable unless `CI=true`.
//!
//! The templates' real entry commands are snapshotted without an engine.

use bottle_tests::gate::{trial, Trial, DOCKER};
use bottle_tests::support_docker::{docker, docker_ok, BottleHome, TestTls, Upstreams, BASE_IMAGE};
use bottle_tests::{workspace_bin, workspace_root, SEEDED_BASE};

const STANDIN: &str = include_str!("standin/agent-cli.sh");
const TOKEN: &str = "standin-provider-TOKEN-8c2e51d7";
const PROMPT: &str = "Explore the workspace and report what you find.";

fn home() -> BottleHome {
    BottleHome::new(
        workspace_bin("bottle-cli", "bottle"),
        workspace_bin("bottle-sidecars", "bottle-sidecar"),
    )
}

fn tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{t:x}", std::process::id())
}

/// A template's Dockerfile with its install step (Node.js and the CLI from
/// npm) replaced by the stand-in at `/usr/local/bin/<cli>`: npm's global
/// prefix on Debian is `/usr/local`, so that is where `npm install -g`
/// puts the real one. Everything else (user, workspace, HOME, CMD) is the
/// template's own.
fn standin_dockerfile(template: &str) -> String {
    let path = workspace_root().join(format!("bottle-docker/templates/{template}.Dockerfile"));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("RUN apt-get update"))
        .expect("the template installs with apt-get");
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.contains("npm cache clean"))
            .expect("the template installs with npm");
    let install = lines[start..=end].join("\n");
    let package = match template {
        "claude" => "@anthropic-ai/claude-code",
        _ => "@openai/codex",
    };
    assert!(
        install.contains(&format!("npm install -g {package}")),
        "the {template} template no longer installs {package} with npm -g:\n{install}"
    );
    let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    out.push(format!("COPY agent-cli.sh /usr/local/bin/{template}"));
    out.extend(lines[end + 1..].iter().map(|l| l.to_string()));
    out.join("\n").replace("{{base_image}}", BASE_IMAGE) + "\n"
}

/// Removes what the test created, whatever happens.
struct Cleanup<'a> {
    home: &'a BottleHome,
    id: Option<String>,
    image: String,
}
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            let _ = self.home.run(&["rm", "-f", id]);
        }
        let _ = docker(&["image", "rm", "-f", &self.image]);
    }
}

fn report_lines<'a>(report: &'a str, prefix: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

fn run_template(template: &str) {
    let host = match template {
        "claude" => "api.anthropic.com",
        _ => "api.openai.com",
    };
    let key_var = match template {
        "claude" => "ANTHROPIC_API_KEY",
        _ => "OPENAI_API_KEY",
    };
    let tag = tag();

    // `bottle init --template <t>` as a user would, then: the provider's
    // address is the test container's private one, a skill from the home
    let mut h = home();
    let (code, out, err) = h.run(&["init", "--template", template]);
    assert_eq!(code, 0, "{out}{err}");
    let bottle_file = h.path().join(format!("bottles/{template}.toml"));
    let mut bottle = std::fs::read_to_string(&bottle_file).unwrap();
    bottle.push_str(&format!(
        "\n# test: the provider is a test container on a private address\n[[egress.routes]]\nhost = \"{host}\"\nallow_private = true\n"
    ));
    std::fs::write(&bottle_file, bottle).unwrap();
    let agent_file = h.path().join(format!("agents/{template}.toml"));
    let mut agent = std::fs::read_to_string(&agent_file).unwrap();
    agent.push_str("skills = [\"review\"]\n");
    std::fs::write(&agent_file, agent).unwrap();
    let skill = h.path().join("skills/review");
    std::fs::create_dir_all(skill.join("scripts")).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: review\ndescription: how this team reviews a change\n---\nRead the diff first.\n",
    )
    .unwrap();
    std::fs::write(skill.join("scripts/lint.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            skill.join("scripts/lint.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    // the provider: the HTTPS echo upstream with a test CA egress trusts
    let tls = TestTls::new(&[host]);
    let mut ups = Upstreams::new(&format!("standin-{template}-{tag}"));
    let upstream_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_bottle-test-upstream"));
    let provider = ups.https_echo(
        &format!("bottle-standin-{template}-{tag}"),
        &upstream_bin,
        &tls,
    );

    let image = format!("bottle-test-standin-{template}:{tag}");
    h.env.push((key_var.into(), TOKEN.into()));
    h.env
        .push(("BOTTLE_TEST_AGENT_IMAGE".into(), image.clone()));
    h.env.push((
        "BOTTLE_TEST_UPSTREAM_CA".into(),
        tls.ca_pem().display().to_string(),
    ));

    // the stand-in image, FROM the seeded base like the template
    let mut cleanup = Cleanup {
        home: &h,
        id: None,
        image: image.clone(),
    };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), standin_dockerfile(template)).unwrap();
    let script = ctx.path().join("agent-cli.sh");
    std::fs::write(&script, STANDIN).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    docker_ok(&[
        "build",
        "-q",
        "--label",
        "dev.bottle.test",
        "-t",
        &image,
        &ctx.path().display().to_string(),
    ]);

    let id = h.start(template);
    cleanup.id = Some(id.clone());
    ups.attach(&provider, &format!("bottle-{id}-egress"), host);

    // the stand-in's report (it retries the provider until the upstream is
    // attached; bounded wait)
    let start = std::time::Instant::now();
    let report = loop {
        let (_, out) = h.exec(&id, "cat \"$HOME/standin.report\" 2>/dev/null");
        if out.contains("\nDONE") {
            break out;
        }
        assert!(
            start.elapsed().as_secs() < 180,
            "the stand-in never finished: {out}\n{}",
            docker(&["logs", &format!("bottle-{id}-agent")]).2
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    eprintln!("stand-in report ({template}):\n{report}");
    assert!(
        !report.contains(TOKEN),
        "the provider key reached the agent:\n{report}"
    );

    // argv: the template's entry command as the CLI receives it
    let mut want_argv: Vec<String> = match template {
        "claude" => vec![
            "--mcp-config".into(),
            "/home/agent/.bottle/mcp.json".into(),
            "--dangerously-skip-permissions".into(),
        ],
        _ => vec!["--dangerously-bypass-approvals-and-sandbox".into()],
    };
    want_argv.extend(["--".to_owned(), PROMPT.to_owned()]);
    assert_eq!(report_lines(&report, "ARG "), want_argv, "{report}");

    // env: names only; the placeholder key, the proxy and the access key
    let env = report_lines(&report, "ENV ");
    for name in [
        key_var,
        "HTTPS_PROXY",
        "BOTTLE_ACCESS_KEY",
        "BOTTLE_MCP_URL",
        "CURL_CA_BUNDLE",
    ] {
        assert!(
            env.contains(&name),
            "{name} missing from the env:\n{report}"
        );
    }

    // the CLI's own config: MCP server registered, workspace trusted
    let files = report_lines(&report, "FILE ");
    let (present, absent) = match template {
        "claude" => (
            ["/home/agent/.claude.json", "/home/agent/.bottle/mcp.json"],
            "/home/agent/.codex/config.toml",
        ),
        _ => (
            [
                "/home/agent/.codex/config.toml",
                "/home/agent/.bottle/prompt.md",
            ],
            "/home/agent/.claude.json",
        ),
    };
    for f in present {
        assert!(files.contains(&format!("{f} present").as_str()), "{report}");
    }
    assert!(
        files.contains(&format!("{absent} absent").as_str()),
        "{report}"
    );
    assert_eq!(report_lines(&report, "TRUSTED "), ["yes"], "{report}");

    // the skill, where this CLI reads skills, owned by the agent
    let skills_dir = match template {
        "claude" => "/home/agent/.claude/skills/review",
        _ => "/home/agent/.agents/skills/review",
    };
    assert_eq!(
        report_lines(&report, "SKILLFILE "),
        [
            format!("644 agent {skills_dir}/SKILL.md"),
            format!("755 agent {skills_dir}/scripts/lint.sh"),
        ],
        "{report}"
    );

    // MCP: the config's URL and its Authorization header; without the
    // header the server refuses
    assert_eq!(
        report_lines(&report, "MCP_URL "),
        ["http://bundle:9100/mcp"],
        "{report}"
    );
    assert_eq!(
        report_lines(&report, "MCP_HEADERS "),
        ["Authorization "],
        "{report}"
    );
    let noauth = report_lines(&report, "MCP_NOAUTH ");
    assert!(
        noauth == ["401"] || noauth == ["403"],
        "the MCP server answered without the credential: {report}"
    );
    let result = report_lines(&report, "MCP_RESULT ").join("");
    assert!(
        result.contains("\"result\"")
            && result.contains(host)
            && !result.contains("\"isError\":true"),
        "list_policy did not answer with the policy: {result}"
    );

    // the provider through egress: the agent sent a placeholder, the
    // upstream got the held key
    assert_eq!(report_lines(&report, "PROVIDER "), ["200"], "{report}");
    let (_, up_log, _) = docker(&["logs", &provider]);
    let want_header = match template {
        "claude" => format!("x-api-key: {TOKEN}"),
        _ => format!("authorization: Bearer {TOKEN}"),
    };
    assert!(
        up_log.contains(&want_header),
        "the provider did not get the injected key: {up_log}"
    );
    let audit = h.audit(&id);
    assert!(
        audit
            .lines()
            .any(|l| l.contains(host) && l.contains("\"allow\"")),
        "no allow audit line for {host}: {audit}"
    );
    assert!(!audit.contains(TOKEN), "the key is in the audit log");
    drop(cleanup);
}

fn claude_template_runs_a_stand_in_cli_with_its_wiring() {
    run_template("claude");
}

fn codex_template_runs_a_stand_in_cli_with_its_wiring() {
    run_template("codex");
}

/// What each template's real entry command will be, as `bottle plan`
/// renders it (no engine needed).
fn template_entry_commands() {
    let h = home();
    for template in ["claude", "codex"] {
        let (code, out, err) = h.run(&["init", "--template", template]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let mut h = h;
    h.env.push(("ANTHROPIC_API_KEY".into(), TOKEN.into()));
    h.env.push(("OPENAI_API_KEY".into(), TOKEN.into()));
    for template in ["claude", "codex"] {
        let (code, out, err) = h.run(&["plan", template, "--json", "--backend", "docker"]);
        assert_eq!(code, 0, "{out}{err}");
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        let argv = serde_json::to_string_pretty(&plan["provider"]["command"]).unwrap();
        insta::assert_snapshot!(format!("entry_command_{template}"), argv);
    }
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![
        trial!(
            claude_template_runs_a_stand_in_cli_with_its_wiring,
            &DOCKER,
            &SEEDED_BASE
        ),
        trial!(
            codex_template_runs_a_stand_in_cli_with_its_wiring,
            &DOCKER,
            &SEEDED_BASE
        ),
        trial!(template_entry_commands),
    ]
}
