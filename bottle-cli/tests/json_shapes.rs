//! The documented `--json` shapes, pinned: `ls`, `check`, `queue`, `plan`.
//! Each document carries `schema_version: 1`; a change to a snapshot here is
//! a change to a public interface (bump `schema_version` if it breaks
//! readers). Temp paths, generated identities and ages are redacted. No
//! real engine is used: `PATH` holds only a fake `docker` whose daemon is
//! down (or nothing at all).

use bottle_core::state::Phase;

mod common;
use common::Env;

impl Env {
    /// Run `bottle --home <home> ARGS` from an empty dir with `PATH` set to
    /// `path` (`bin`: the fake docker, `empty`: nothing); (exit, stdout).
    fn run(&self, path: &str, args: &[&str]) -> (i32, String) {
        let o = self
            .command(&self.dir.path().join(path), args)
            .current_dir(self.dir.path().join("cwd"))
            .output()
            .expect("bottle runs");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8(o.stdout).expect("UTF-8 JSON"),
        )
    }

    /// Redact the temp dir, generated identities and ages.
    fn redacted(&self) -> insta::Settings {
        let mut s = self.settings();
        s.add_filter(r"demo-dev-[0-9a-z]{6}\b", "demo-dev-[ID]");
        s.add_filter(r#""age_secs": \d+"#, r#""age_secs": "[AGE]""#);
        s
    }
}

/// Parse, check `schema_version: 1`, and snapshot the text as printed.
fn pin(env: &Env, name: &str, out: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(out).expect("stdout is one JSON document");
    assert_eq!(v["schema_version"], 1, "{name}: {out}");
    env.redacted()
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
