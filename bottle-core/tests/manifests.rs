//! Snapshot tests over `fixtures/manifests/{valid,invalid}/*.case`.
//!
//! A `.case` file holds several files of a home, each after a
//! `# --- <relative path>` line (`repo/...` files form the repository whose
//! `.bottle/agents` may ship agents). The test loads agent `main`, resolves
//! it with a fixed identity and host env, and snapshots the plan JSON
//! (valid) or the user-visible error text (invalid).

use std::collections::BTreeMap;
use std::fs;

use bottle_core::plan::{Prompter, ResolveOptions};
use bottle_core::{resolve, Error, Home, Identity, Loader, Secret};
use camino::{Utf8Path, Utf8PathBuf};

/// Host env every case sees. The secret values must never reach a snapshot.
fn host_env(home: &Utf8Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HOME".into(), home.join("operator").to_string()),
        ("ANTHROPIC_API_KEY".into(), "sk-ant-test-SECRET-0001".into()),
        ("GITHUB_TOKEN".into(), "ghp_testSECRET0002".into()),
        ("API_TOKEN".into(), "tok-SECRET-0003".into()),
        ("PLAIN_VAR".into(), "plain-SECRET-0004".into()),
    ])
}

struct FixedAnswers;
impl Prompter for FixedAnswers {
    fn ask(&self, key: &str, _question: &str) -> bottle_core::Result<Secret> {
        Ok(Secret::new(format!("answer-SECRET-{}", key.len())))
    }
}

fn materialize(case: &str, root: &Utf8Path) {
    bottle_core::fixture::write_case(case, root).expect("fixture files are written");
}

fn run_case(path: &std::path::Path) -> Result<String, Error> {
    let case = fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    materialize(&case, &root);
    let loader = Loader::new(Home::new(&root), Some(root.join("repo")));
    let (agent, bottle) = loader.load("main")?;
    let opts = ResolveOptions {
        identity: Some(Identity::parse("main-dev-test01").unwrap()),
        slot: 7,
        ..Default::default()
    };
    let plan = resolve(&agent, &bottle, &opts, &host_env(&root), &FixedAnswers)?;
    let json = serde_json::to_string_pretty(&plan).unwrap();
    Ok(json.replace(root.as_str(), "[HOME]"))
}

fn error_text(e: &Error, root_hint: &str) -> String {
    let text = format!("error: {e}\n  fix: {}", e.fix().unwrap_or_default());
    text.replace(root_hint, "[HOME]")
}

#[test]
fn valid_manifests_resolve_to_plans() {
    insta::glob!("fixtures/manifests/valid/*.case", |path| {
        let json = run_case(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            !json.contains("SECRET"),
            "a secret leaked into the plan of {}:\n{json}",
            path.display()
        );
        insta::assert_snapshot!(json);
    });
}

#[test]
fn invalid_manifests_fail_with_file_and_fix() {
    insta::glob!("fixtures/manifests/invalid/*.case", |path| {
        let err = match run_case(path) {
            Ok(plan) => panic!("{} resolved but must fail:\n{plan}", path.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(!msg.contains("SECRET"), "secret in error: {msg}");
        assert!(
            msg.contains(".toml") || matches!(err, Error::NotFound { .. }),
            "error of {} names no file: {msg}",
            path.display()
        );
        assert!(
            err.fix().is_some_and(|f| !f.is_empty()),
            "no fix for {}",
            path.display()
        );
        // the temp dir differs per run; snapshot with it replaced
        let tmp = std::env::temp_dir();
        let shown = error_text(&err, tmp.to_str().unwrap());
        let shown = regex_lite_replace_tmp(&shown);
        insta::assert_snapshot!(shown);
    });
}

/// Replace `[HOME]/.tmpXXXXXX` (tempfile's random dir) with `[HOME]`.
fn regex_lite_replace_tmp(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("[HOME]/.tmp") {
        out.push_str(&rest[..i]);
        out.push_str("[HOME]");
        let after = &rest[i + "[HOME]/.tmp".len()..];
        let end = after.find('/').unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn names_cannot_escape_their_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    let loader = Loader::new(Home::new(&root), None);
    for bad in ["../x", "a/b", "", "UPPER", ".hidden"] {
        let e = loader.load_agent(bad).unwrap_err();
        assert!(
            e.to_string().contains("not a valid agent name"),
            "{bad}: {e}"
        );
    }
    assert!(Identity::parse("../../etc").is_err());
    assert!(Identity::parse("demo-dev-abc123").is_ok());
}

#[test]
fn repo_agents_cannot_define_bottles() {
    // a repo that ships bottles/ is ignored: bottles come only from the home
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    materialize(
        "# --- repo/.bottle/agents/main.toml\nbottle = \"wide\"\n# --- repo/.bottle/bottles/wide.toml\n[[egress.routes]]\nhost = \"evil.example.com\"\n",
        &root,
    );
    let loader = Loader::new(Home::new(&root), Some(root.join("repo")));
    let e = loader.load("main").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("`bottle = \"wide\"` names a bottle that does not exist"),
        "{text}"
    );
    assert!(e
        .fix()
        .unwrap()
        .contains("bottles live only in $BOTTLE_HOME/bottles/"));
}

/// A repo agent's `prompt_file` that reaches out of the repository through a
/// symlink (a link to a file, or a path through a linked directory) is
/// refused at load time, naming the agent file and line; the target's
/// content never reaches the plan. A link that stays inside the repository
/// still works.
#[test]
fn repo_prompt_file_cannot_escape_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    materialize(
        "# --- bottles/dev.toml\n\
         # --- operator/.aws/credentials\naws_secret_access_key = SECRET-operator-file\n\
         # --- repo/README.md\nPrompt kept in the repository.\n\
         # --- repo/.bottle/agents/linkfile.toml\nbottle = \"dev\"\nprompt_file = \"prompt.md\"\n\
         # --- repo/.bottle/agents/linkdir.toml\nbottle = \"dev\"\n\nprompt_file = \"ctx/credentials\"\n\
         # --- repo/.bottle/agents/inside.toml\nbottle = \"dev\"\nprompt_file = \"readme.md\"\n",
        &root,
    );
    let agents = root.join("repo/.bottle/agents");
    std::os::unix::fs::symlink(
        root.join("operator/.aws/credentials"),
        agents.join("prompt.md"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root.join("operator/.aws"), agents.join("ctx")).unwrap();
    std::os::unix::fs::symlink("../../README.md", agents.join("readme.md")).unwrap();
    let loader = Loader::new(Home::new(&root), Some(root.join("repo")));

    for (agent, line) in [("linkfile", 2), ("linkdir", 3)] {
        let err = loader.load(agent).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), bottle_core::ErrorKind::Usage, "{msg}");
        assert!(
            msg.starts_with(&format!("{agents}/{agent}.toml:{line}:")),
            "{agent}: error does not point at the prompt_file line: {msg}"
        );
        assert!(msg.contains("outside the repository"), "{agent}: {msg}");
        assert!(!msg.contains("SECRET"), "{agent}: {msg}");
        assert!(err.fix().unwrap().contains(".bottle/agents"), "{agent}");
    }

    let (a, b) = loader
        .load("inside")
        .expect("a link inside the repo is fine");
    let opts = ResolveOptions {
        identity: Some(Identity::parse("inside-dev-test01").unwrap()),
        ..Default::default()
    };
    let plan = resolve(&a, &b, &opts, &host_env(&root), &FixedAnswers).unwrap();
    assert_eq!(
        plan.provider.prompt.as_deref(),
        Some("Prompt kept in the repository.\n")
    );
}

/// Only secrets are held (SPEC §2): a plain `"${VAR}"` reaches the agent but
/// is not held, so the sidecars do not block or mask it; an entry marked
/// `{ secret = "${VAR}" }` and a `?prompt` answer are held. A home agent's
/// plain value over a bottle's secret makes it plain; `--env` is literal.
#[test]
fn only_marked_env_values_are_held() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    materialize(
        "# --- bottles/dev.toml\n[env]\nTZ = \"${PLAIN_VAR}\"\nDB_PASSWORD = { secret = \"${API_TOKEN}\" }\nASKED = \"?your name\"\nLATER = { secret = \"${GITHUB_TOKEN}\" }\nFLAGGED = { secret = \"${GITHUB_TOKEN}\" }\n\
         # --- agents/main.toml\nbottle = \"dev\"\n[env]\nLATER = \"plain-now\"\n",
        &root,
    );
    let loader = Loader::new(Home::new(&root), None);
    let (a, b) = loader.load("main").unwrap();
    let opts = ResolveOptions {
        identity: Some(Identity::parse("main-dev-test01").unwrap()),
        env: vec![("FLAGGED".into(), "from-the-command-line".into())],
        ..Default::default()
    };
    let plan = resolve(&a, &b, &opts, &host_env(&root), &FixedAnswers).unwrap();
    let held = plan.held_secrets();
    let held_values: BTreeMap<&str, &str> =
        held.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(
        held_values,
        BTreeMap::from([
            ("env-ASKED", "answer-SECRET-5"),
            ("env-DB_PASSWORD", "tok-SECRET-0003"),
        ]),
        "held set"
    );
    // TZ still reaches the agent with the host's value
    assert_eq!(plan.env["TZ"].expose(), "plain-SECRET-0004");
    assert_eq!(plan.env["LATER"].expose(), "plain-now");
    let json = serde_json::to_string(&plan).unwrap();
    assert!(!json.contains("SECRET"), "{json}");
}
