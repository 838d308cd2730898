//! The `bottle` binary end to end for the commands that need no engine:
//! init, plan, check, backend selection, errors and exit codes, completions.

use std::path::Path;
use std::process::Output;

fn bottle(home: &Path, args: &[&str], path_env: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bottle"));
    cmd.arg("--home").arg(home).args(args);
    cmd.env_remove("BOTTLE_SMOLVM").env_remove("RUST_LOG");
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    cmd.output().expect("bottle runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fresh() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn init_then_plan_json_prints_a_plan() {
    let dir = fresh();
    let home = dir.path().join("home");
    let o = bottle(&home, &["init"], None);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(home.join("bottles/dev.toml").is_file());
    assert!(home.join("agents/demo.toml").is_file());

    let o = bottle(
        &home,
        &["plan", "demo", "--json", "--backend", "docker"],
        None,
    );
    let (out, err) = text(&o);
    if !cfg!(feature = "docker") {
        // a build without the docker backend says which feature to enable
        assert!(err.contains("enable feature `docker`"), "{err}");
        return;
    }
    assert!(o.status.success(), "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("plan is JSON");
    assert_eq!(plan["schema_version"], 1);
    assert_eq!(plan["agent"], "demo");
    assert_eq!(plan["bottle"], "dev");
    assert_eq!(plan["backend"], "docker");
    let id = plan["identity"].as_str().unwrap();
    assert!(
        id.starts_with("demo-dev-") && id.len() == "demo-dev-".len() + 6,
        "{id}"
    );
    assert_eq!(plan["names"]["agent"], format!("bottle-{id}-agent"));
    assert_eq!(plan["labels"]["dev.bottle.identity"], id);
    assert_eq!(plan["egress"]["routes"][0]["host"], "api.github.com");
    // plan has no side effects: no state was created
    assert_eq!(std::fs::read_dir(home.join("state")).unwrap().count(), 0);
}

#[test]
fn init_never_overwrites() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    std::fs::write(home.join("bottles/dev.toml"), "# mine\n").unwrap();
    let o = bottle(home, &["init"], None);
    assert!(o.status.success());
    assert!(text(&o).0.contains("kept"), "{:?}", text(&o));
    assert_eq!(
        std::fs::read_to_string(home.join("bottles/dev.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn check_prints_a_table_and_fails_without_a_usable_backend() {
    let dir = fresh();
    let home = dir.path().join("home");
    assert!(bottle(&home, &["init"], None).status.success());
    // an empty PATH: neither docker nor smolvm can be found
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let o = bottle(&home, &["check"], Some(empty.to_str().unwrap()));
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("STATUS  KIND    FILE"), "{out}");
    assert!(out.contains("ok      bottle  dev.toml"), "{out}");
    assert!(out.contains("docker"), "{out}");
    assert!(out.contains("fix:"), "{out}");
    assert!(out.contains("no backend is usable here"), "{out}");

    let o = bottle(&home, &["check", "--json"], Some(empty.to_str().unwrap()));
    assert_eq!(o.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["schema_version"], 1);
    let backends = report["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert!(backends.iter().all(|b| b["status"] != "ready"));
    assert!(backends
        .iter()
        .all(|b| b["fix"].as_str().is_some_and(|f| !f.is_empty())));
}

#[test]
fn check_reports_a_broken_manifest_with_file_and_fix() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    std::fs::write(home.join("bottles/broken.toml"), "[egress]\nroutez = []\n").unwrap();
    let o = bottle(home, &["check", "--json"], None);
    assert_eq!(o.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let broken = report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"].as_str().unwrap().ends_with("broken.toml"))
        .unwrap()
        .clone();
    assert_eq!(broken["status"], "error");
    let msg = broken["message"].as_str().unwrap();
    assert!(
        msg.contains("broken.toml:2:1: unknown field `routez`"),
        "{msg}"
    );
    assert!(
        msg.contains("expected one of `routes`, `dlp`, `max_body_scan`"),
        "{msg}"
    );
}

#[test]
fn check_warns_about_routes_that_send_credentials_in_clear_text() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    std::fs::write(
        home.join("bottles/clear.toml"),
        "[[egress.routes]]\nhost = \"legacy.example.com\"\nport = 8080\nplaintext = true\nauth = { scheme = \"bearer\", token = \"?token\" }\n",
    )
    .unwrap();
    let o = bottle(home, &["check", "--json"], None);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let clear: Vec<_> = report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["path"].as_str().unwrap().ends_with("clear.toml"))
        .cloned()
        .collect();
    assert_eq!(clear.len(), 1, "{clear:?}");
    assert_eq!(clear[0]["status"], "warning");
    let msg = clear[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("legacy.example.com:8080") && msg.contains("plain HTTP"),
        "{msg}"
    );
    assert!(clear[0]["fix"].as_str().unwrap().contains("https"));
}

#[test]
fn unknown_backend_lists_the_known_ones() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    let o = bottle(home, &["--backend", "nosuch", "plan", "demo"], None);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: unknown backend `nosuch` (known: docker, smolmachines)"),
        "{err}"
    );
    assert!(
        err.contains("fix: use one of: docker, smolmachines"),
        "{err}"
    );
}

#[test]
fn missing_host_variable_names_it() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    std::fs::write(
        home.join("bottles/dev.toml"),
        "[env]\nTOKEN_FROM_HOST = { secret = \"${BOTTLE_TEST_SURELY_UNSET_VAR}\" }\n",
    )
    .unwrap();
    let o = bottle(home, &["plan", "demo"], None);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("needs host environment variable `BOTTLE_TEST_SURELY_UNSET_VAR`"),
        "{err}"
    );
    assert!(
        err.contains("export BOTTLE_TEST_SURELY_UNSET_VAR=..."),
        "{err}"
    );
}

#[test]
fn missing_agent_says_what_exists() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    let o = bottle(home, &["plan", "nobody"], None);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("no agent named `nobody`"), "{err}");
    assert!(err.contains("available agents: demo"), "{err}");
}

#[test]
fn completions_are_generated_for_common_shells() {
    let dir = fresh();
    for shell in ["bash", "zsh", "fish"] {
        let o = bottle(dir.path(), &["completions", shell], None);
        assert!(o.status.success(), "{shell}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("bottle") && out.contains("approve") && out.len() > 500,
            "{shell}: {out}"
        );
    }
}

#[test]
fn empty_queue_says_so() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    let o = bottle(home, &["queue"], None);
    assert!(o.status.success());
    assert_eq!(text(&o).0.trim(), "no pending requests");
    // an unknown id is a usage error, like an unknown bottle id
    let o = bottle(home, &["approve", "req-nope"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no permission request `req-nope`"));
}

/// A literal credential (SPEC §2) in `--env`, a bottle's `[env]` or an
/// agent's env is refused with exit 2, pointing at the flag or the file and
/// line and suggesting `${VAR}`; `plan --json` prints nothing, and the value
/// appears in no output.
#[test]
fn literal_credentials_are_refused_and_never_printed() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    let key = "sk-ant-api03-Xq7vR2mK9pL4tW8zN3bH6cJ1fD5gS0yE";
    let flag = format!("ANTHROPIC_API_KEY={key}");
    let o = bottle(home, &["plan", "demo", "--json", "--env", &flag], None);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(out.is_empty(), "plan printed: {out}");
    assert!(err.contains("`--env ANTHROPIC_API_KEY=...`"), "{err}");
    assert!(err.contains("anthropic-key"), "{err}");
    assert!(err.contains("${ANTHROPIC_API_KEY}"), "{err}");
    assert!(!err.contains(key), "{err}");

    let dev = home.join("bottles/dev.toml");
    let text_before = std::fs::read_to_string(&dev).unwrap();
    let line = text_before
        .lines()
        .position(|l| l.starts_with("EDITOR = "))
        .unwrap()
        + 2;
    let openai = "sk-proj-Q8fZ2mR7kV4pX9tL3wN6bH1cJ5dG0sYe";
    std::fs::write(
        &dev,
        text_before.replace(
            "EDITOR = \"vi\"\n",
            &format!("EDITOR = \"vi\"\nOPENAI_API_KEY = \"{openai}\"\n"),
        ),
    )
    .unwrap();
    for args in [&["plan", "demo", "--json"][..], &["plan", "demo"][..]] {
        let o = bottle(home, args, None);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed: {out}");
        assert!(
            err.contains(&format!("dev.toml:{line}:")),
            "{args:?} does not point at line {line}: {err}"
        );
        assert!(err.contains("${OPENAI_API_KEY}"), "{err}");
        assert!(!err.contains(openai), "{err}");
    }
}

/// The preflight (and `plan`) of a `--cwd` repository whose `.git/config`
/// carries credentials says which ones the copy drops, never their values.
#[test]
fn plan_says_which_git_credentials_the_copy_drops() {
    let dir = fresh();
    let home = dir.path().join("home");
    assert!(bottle(&home, &["init"], None).status.success());
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&[
        "config",
        "http.extraheader",
        "AUTHORIZATION: basic c2VjcmV0LXZhbHVl",
    ]);
    git(&[
        "config",
        "remote.origin.url",
        "https://bob:pw-value-77@git.example.invalid/x.git",
    ]);
    let o = bottle(
        &home,
        &["plan", "demo", "--cwd", repo.to_str().unwrap()],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("git credentials removed from the copy: http extraheader (.git/config), userinfo in remote.origin.url (.git/config)"),
        "{out}"
    );
    assert!(
        !out.contains("pw-value-77") && !out.contains("c2VjcmV0"),
        "{out}"
    );
}

#[test]
fn check_reports_a_broken_dlp_rule_file_with_file_line_and_rule() {
    let dir = fresh();
    let home = dir.path();
    assert!(bottle(home, &["init"], None).status.success());
    std::fs::create_dir_all(home.join("dlp")).unwrap();
    std::fs::write(
        home.join("dlp/good.toml"),
        "[[rules]]\nid = \"acme-key\"\nregex = '''acme_[a-z0-9]{24}'''\nkeywords = [\"acme_\"]\n",
    )
    .unwrap();
    // Line 7: the regex of rule `widget-token` does not compile.
    std::fs::write(
        home.join("dlp/org.toml"),
        "[[rules]]\nid = \"acme-key-2\"\nregex = '''acme2_[a-z0-9]{24}'''\n\n[[rules]]\nid = \"widget-token\"\nregex = '''wdgt-([A-Za-z0-9]{22}'''\n",
    )
    .unwrap();
    let o = bottle(home, &["check", "--json"], None);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dlp: Vec<_> = report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "dlp-rules")
        .cloned()
        .collect();
    let good = dlp
        .iter()
        .find(|m| m["path"].as_str().unwrap().ends_with("good.toml"))
        .unwrap();
    assert_eq!(good["status"], "ok");
    let broken = dlp
        .iter()
        .find(|m| m["path"].as_str().unwrap().ends_with("org.toml"))
        .unwrap();
    assert_eq!(broken["status"], "error");
    let msg = broken["message"].as_str().unwrap();
    assert!(
        msg.contains("org.toml:7: rule `widget-token`: regex"),
        "{msg}"
    );
    assert!(broken["fix"].as_str().unwrap().contains("gitleaks format"));
}
