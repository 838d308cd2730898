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
