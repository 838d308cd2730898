//! The documented `--json` shapes, pinned: `ls`, `check`, `queue`, `plan`.
//! Each document carries `schema_version: 1`; a change to a snapshot here is
//! a change to a public interface (bump `schema_version` if it breaks
//! readers). Temp paths, generated identities and ages are redacted. No
//! real engine is used: `PATH` holds only a fake `docker` whose daemon is
//! down (or nothing at all).

use std::path::Path;

use bottle_core::state::Phase;

mod common;
use common::Env;

impl Env {
    /// Run `bottle --home <home> ARGS` from an empty dir with `PATH` set to
    /// `path` (`bin`: the fake docker, `empty`: nothing); (exit, stdout).
    fn run(&self, path: &str, args: &[&str]) -> (i32, String) {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
            .arg("--home")
            .arg(self.home())
            .args(args)
            .current_dir(self.dir.path().join("cwd"))
            .env("PATH", self.dir.path().join(path))
            .env_remove("BOTTLE_HOME")
            .env_remove("BOTTLE_SMOLVM")
            .env_remove("RUST_LOG")
            .env_remove("DOCKER_HOST")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bottle runs");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8(o.stdout).expect("UTF-8 JSON"),
        )
    }

    /// Redact the temp dir, generated identities and ages.
    fn settings(&self) -> insta::Settings {
        let mut s = insta::Settings::clone_current();
        s.add_filter(&regex_escape(self.dir.path()), "[TMP]");
        s.add_filter(r"demo-dev-[0-9a-z]{6}\b", "demo-dev-[ID]");
        s.add_filter(r#""age_secs": \d+"#, r#""age_secs": "[AGE]""#);
        s.set_prepend_module_to_snapshot(false);
        s
    }
}

fn regex_escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if !c.is_ascii_alphanumeric() && c != '/' && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parse, check `schema_version: 1`, and snapshot the text as printed.
fn pin(env: &Env, name: &str, out: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(out).expect("stdout is one JSON document");
    assert_eq!(v["schema_version"], 1, "{name}: {out}");
    env.settings()
        .bind(|| insta::assert_snapshot!(format!("json_{name}"), out.trim_end()));
    v
}

#[test]
fn ls_json() {
    let env = Env::new();
    env.bottle("demo-dev-stopped", Phase::Stopped);
    let (code, out) = env.run("bin", &["ls", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v = pin(&env, "ls", &out);
    assert_eq!(v["bottles"][0]["state"], "stopped");

    // a running bottle whose engine does not answer is "unknown", not
    // "stopped" (the JSON is still printed; the command fails with 3)
    env.bottle("demo-dev-running", Phase::Running);
    let (code, out) = env.run("bin", &["ls", "--json"]);
    assert_eq!(code, 3, "{out}");
    let v = pin(&env, "ls_engine_down", &out);
    let states: Vec<&str> = v["bottles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unknown", "stopped"]);
}

#[test]
fn ls_json_empty_home() {
    let env = Env::new();
    let (code, out) = env.run("bin", &["ls", "--json"]);
    assert_eq!(code, 0, "{out}");
    pin(&env, "ls_empty", &out);
}

#[test]
fn check_json() {
    let env = Env::new();
    assert_eq!(env.run("empty", &["init"]).0, 0);
    let (code, out) = env.run("empty", &["check", "--json"]);
    assert_eq!(code, 3, "no backend is usable with an empty PATH: {out}");
    pin(&env, "check", &out);
}

#[test]
fn queue_json() {
    let env = Env::new();
    assert_eq!(env.run("empty", &["init"]).0, 0);
    let (code, out) = env.run("empty", &["queue", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v = pin(&env, "queue", &out);
    assert_eq!(v["requests"], serde_json::json!([]));
}

#[test]
fn plan_json() {
    let env = Env::new();
    assert_eq!(env.run("empty", &["init"]).0, 0);
    let (code, out) = env.run("empty", &["plan", "demo", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v = pin(&env, "plan", &out);
    assert_eq!(v["agent"], "demo");
}
