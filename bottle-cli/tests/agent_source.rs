//! Where the agent came from is said, not guessed: a repo's agent used
//! without copying the repo, and a home agent shadowing a repo agent of the
//! same name, each get a note in `plan` (the same notes as `start`'s
//! preflight).

mod common;
use common::Env;

fn plan(env: &Env, args: &[&str]) -> (i32, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
        .arg("--home")
        .arg(env.home())
        .arg("plan")
        .args(args)
        .current_dir(env.dir.path().join("cwd"))
        .env("PATH", env.dir.path().join("bin"))
        .env_remove("BOTTLE_HOME")
        .output()
        .expect("bottle runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().unwrap_or(-1), format!("{out}{err}"))
}

#[test]
fn repo_agent_without_the_repo_and_shadowed_agents_are_said() {
    let env = Env::new();
    std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
        .arg("--home")
        .arg(env.home())
        .arg("init")
        .output()
        .unwrap();
    let agents = env.dir.path().join("cwd/.bottle/agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(agents.join("fromrepo.toml"), "bottle = \"dev\"\n").unwrap();
    std::fs::write(agents.join("demo.toml"), "bottle = \"dev\"\n").unwrap();

    let (code, out) = plan(&env, &["fromrepo"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("the repo is not copied into the bottle: add --cwd"),
        "{out}"
    );
    let (code, out) = plan(&env, &["fromrepo", "--cwd", "."]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("not copied"), "{out}");

    let (code, out) = plan(&env, &["demo"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("WARNING:") && out.contains("shadows the repo's agent"),
        "{out}"
    );
    // the home agent with no repo agent of that name: no note at all
    std::fs::remove_file(agents.join("demo.toml")).unwrap();
    let (_, out) = plan(&env, &["demo"]);
    assert!(!out.lines().any(|l| l.starts_with("note ")), "{out}");
}
