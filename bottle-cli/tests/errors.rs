//! Every command that takes an identity (`exec`, `attach`, `logs`, `stop`,
//! `resume`, `rm`) fails with "what went wrong" + a `fix:` line and the
//! documented exit code for: a non-existent identity, a stopped bottle
//! (where it matters) and an unreachable engine. No real engine is used:
//! `PATH` holds only a fake `docker` that answers like a docker CLI whose
//! daemon is down and records every call it gets.

use bottle_core::state::Phase;

mod common;
use common::Env;

impl Env {
    /// Run `bottle --home <home> ARGS` with only the fake docker on PATH;
    /// returns the exit code and stderr, temp paths redacted.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let o = self
            .command(&self.dir.path().join("bin"), args)
            .output()
            .expect("bottle runs");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (o.status.code().unwrap_or(-1), err)
    }

    fn docker_calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("docker-calls")).unwrap_or_default()
    }
}

/// The identity-taking commands, with `{id}` for the identity.
const COMMANDS: &[(&str, &[&str])] = &[
    ("exec", &["exec", "{id}", "--", "true"]),
    ("attach", &["attach", "{id}"]),
    ("logs", &["logs", "{id}"]),
    ("stop", &["stop", "{id}"]),
    ("resume", &["resume", "{id}"]),
    ("rm", &["rm", "-f", "{id}"]),
];

fn args<'a>(template: &[&'a str], id: &'a str) -> Vec<&'a str> {
    template
        .iter()
        .map(|a| if *a == "{id}" { id } else { a })
        .collect()
}

fn report(code: i32, stderr: &str) -> String {
    format!("exit: {code}\n{stderr}")
}

fn assert_says_what_to_do(what: &str, stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("error: ")),
        "{what}: no error line: {stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("fix: ") && l.len() > 12),
        "{what}: no fix line: {stderr}"
    );
}

#[test]
fn non_existent_identity() {
    let env = Env::new();
    let settings = env.settings();
    for (name, template) in COMMANDS {
        let (code, err) = env.run(&args(template, "demo-dev-nope00"));
        assert_eq!(code, 2, "{name}: {err}");
        assert_says_what_to_do(name, &err);
        settings.bind(|| insta::assert_snapshot!(format!("missing_{name}"), report(code, &err)));
    }
    assert_eq!(env.docker_calls(), "", "a missing bottle needs no engine");
}

#[test]
fn stopped_bottle() {
    let env = Env::new();
    let settings = env.settings();
    let id = "demo-dev-stop01";
    env.bottle(id, Phase::Stopped);
    for (name, template) in COMMANDS
        .iter()
        .filter(|(n, _)| ["exec", "attach", "logs"].contains(n))
    {
        let (code, err) = env.run(&args(template, id));
        assert_ne!(code, 0, "{name}: {err}");
        assert_says_what_to_do(name, &err);
        assert!(
            err.contains(&format!("bottle resume {id}")),
            "{name}: {err}"
        );
        settings.bind(|| insta::assert_snapshot!(format!("stopped_{name}"), report(code, &err)));
    }
    assert_eq!(
        env.docker_calls(),
        "",
        "a stopped bottle is refused before asking the engine"
    );
    // its decision log stays readable
    let (code, err) = env.run(&["logs", id, "--audit"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unreachable_engine() {
    let env = Env::new();
    let settings = env.settings();
    let id = "demo-dev-run001";
    env.bottle(id, Phase::Running);
    for (name, template) in COMMANDS {
        let (code, err) = env.run(&args(template, id));
        assert_eq!(code, 3, "{name}: backend unavailable: {err}");
        assert_says_what_to_do(name, &err);
        settings
            .bind(|| insta::assert_snapshot!(format!("unreachable_{name}"), report(code, &err)));
    }
    assert!(
        !env.docker_calls().is_empty(),
        "the engine was asked (and did not answer)"
    );
    // nothing was lost: the state is still there for a retry
    assert!(env
        .home()
        .join("state")
        .join(id)
        .join("metadata.json")
        .is_file());
}
