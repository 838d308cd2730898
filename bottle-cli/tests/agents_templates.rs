//! Claude Code / Codex agents without an engine: `bottle check` says up
//! front what their images need, and skills (README "Skills") show in
//! `plan` or fail `check` and `plan` with exit 2 naming the agent file, the
//! skill and where it was looked for.

use std::path::Path;
use std::process::Output;

fn bottle(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
        .arg("--home")
        .arg(home)
        .args(args)
        .current_dir(cwd)
        // no engine: a PATH without docker or smolvm
        .env("PATH", home.join("no-bin"))
        // the templates' provider keys (what egress would hold)
        .env("ANTHROPIC_API_KEY", "test-provider-key")
        .env("OPENAI_API_KEY", "test-provider-key")
        .env_remove("BOTTLE_HOME")
        .env_remove("BOTTLE_SMOLVM")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bottle runs")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn real(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

fn skill(dir: &Path) {
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(
        dir.join("SKILL.md"),
        "---\nname: review\ndescription: how we review\n---\n",
    )
    .unwrap();
    std::fs::write(dir.join("scripts/lint.sh"), "#!/bin/sh\n").unwrap();
}

/// The manifests table of `bottle check` (the backends part depends on the
/// host), temp paths redacted.
fn manifests_table(text: &str, tmp: &Path) -> String {
    text.lines()
        .take_while(|l| *l != "backends")
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&real(tmp), "[TMP]")
        .replace(&tmp.display().to_string(), "[TMP]")
}

#[test]
fn check_says_up_front_that_template_images_need_a_mirror_and_npm() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for t in ["claude", "codex"] {
        let o = bottle(&home, dir.path(), &["init", "--template", t]);
        assert!(o.status.success(), "{}", out(&o));
    }
    let o = bottle(&home, dir.path(), &["check"]);
    // no backend here (exit 3), but the manifests are fine
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    let table = manifests_table(&String::from_utf8_lossy(&o.stdout), dir.path());
    insta::assert_snapshot!("check_template_notes", table);
    assert!(
        table.contains("the `claude` image installs Node.js and @anthropic-ai/claude-code: its first build needs a Debian mirror and the npm registry"),
        "{table}"
    );
    assert!(table.contains("@openai/codex"), "{table}");

    let o = bottle(&home, dir.path(), &["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["manifests"].as_array().unwrap();
    let codex = rows
        .iter()
        .find(|m| m["kind"] == "agent" && m["path"].as_str().unwrap().ends_with("codex.toml"))
        .unwrap();
    assert_eq!(codex["status"], "ok");
    assert!(codex["message"].as_str().unwrap().contains("npm registry"));
    // the shell demo needs neither
    let demo = rows
        .iter()
        .find(|m| m["path"].as_str().unwrap().ends_with("demo.toml"))
        .unwrap();
    assert_eq!(demo["message"], serde_json::Value::Null);
}

#[test]
fn plan_shows_skills_and_where_they_land() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = bottle(&home, dir.path(), &["init", "--template", "claude"]);
    assert!(o.status.success(), "{}", out(&o));
    skill(&home.join("skills/review"));
    std::fs::write(
        home.join("agents/claude.toml"),
        "bottle = \"claude\"\nskills = [\"review\"]\n",
    )
    .unwrap();
    let o = bottle(
        &home,
        dir.path(),
        &["plan", "claude", "--backend", "docker"],
    );
    let text = out(&o);
    if !cfg!(feature = "docker") {
        // a build without the docker backend says which feature to enable
        assert!(text.contains("enable feature `docker`"), "{text}");
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{text}");
    let want = format!(
        "skills     review (home {}) -> ~/.claude/skills/review\n",
        real(&home.join("skills/review"))
    );
    assert!(text.contains(&want), "{text}");

    let o = bottle(
        &home,
        dir.path(),
        &["plan", "claude", "--backend", "docker", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["provider"]["skills"],
        serde_json::json!([{
            "name": "review",
            "source": real(&home.join("skills/review")),
            "origin": "home",
            "targets": ["~/.claude/skills/review"],
        }])
    );
}

#[test]
fn a_missing_skill_is_exit_2_at_check_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let repo = dir.path().join("repo");
    let o = bottle(&home, dir.path(), &["init", "--template", "codex"]);
    assert!(o.status.success(), "{}", out(&o));
    std::fs::create_dir_all(repo.join(".bottle/agents")).unwrap();
    // a home agent looks in $BOTTLE_HOME/skills only
    std::fs::write(
        home.join("agents/codex.toml"),
        "bottle = \"codex\"\nskills = [\"nope\"]\n",
    )
    .unwrap();
    // a repo agent looks in the repo's .bottle/skills first
    std::fs::write(
        repo.join(".bottle/agents/fix.toml"),
        "bottle = \"codex\"\nskills = [\"gone\"]\n",
    )
    .unwrap();

    let o = bottle(&home, dir.path(), &["plan", "codex", "--backend", "docker"]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(text.contains("agents/codex.toml:2:1"), "{text}");
    assert!(
        text.contains(&format!(
            "skill `nope` not found (looked in {})",
            home.join("skills/nope").display()
        )),
        "{text}"
    );

    let o = bottle(&home, &repo, &["plan", "fix", "--backend", "docker"]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(text.contains(".bottle/agents/fix.toml:2:1"), "{text}");
    assert!(
        text.contains(&format!(
            "skill `gone` not found (looked in {} and {})",
            repo.join(".bottle/skills/gone").display(),
            home.join("skills/gone").display()
        )),
        "{text}"
    );

    let o = bottle(&home, &repo, &["check", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let errors: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "error")
        .map(|m| {
            format!(
                "{} {}",
                Path::new(m["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                m["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].starts_with("codex.toml ") && errors[0].contains("skill `nope` not found"));
    assert!(errors[1].starts_with("fix.toml ") && errors[1].contains("skill `gone` not found"));
}
