//! Fuzz the manifest loader: TOML → `BottleFile`/`AgentFile`, validation,
//! `extends` merging, and `resolve` into a plan.
//!
//! Input: either one bottle file (the agent `main` is `bottle = "dev"`), or
//! several files in the fixture format of `bottle-core/tests/fixtures`:
//!
//! ```text
//! # --- bottles/dev.toml
//! ...
//! # --- agents/main.toml
//! bottle = "dev"
//! ```
//!
//! Oracles besides "never panics":
//! - a resolved plan (its `Debug`, JSON and hash) and every error message
//!   never contain a host-variable value or a `?prompt` answer: resolution
//!   runs twice with different secret values, and output that carries the
//!   value of the run that produced it is a leak.

#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bottle_core::manifest::{agent_from_text, AgentFile, AgentSource, BottleFile};
use bottle_core::plan::{HostEnv, Prompter};
use bottle_core::{resolve, Home, Identity, Loader, ResolveOptions, Secret};
use camino::{Utf8Path, Utf8PathBuf};
use libfuzzer_sys::fuzz_target;

/// Two distinct secret markers; every host variable and prompt answer of
/// run `i` contains `MARKERS[i]`.
const MARKERS: [&str; 2] = ["FzSeKrEtOne7", "FzSeKrEtTwo9"];

/// A host environment where every variable is set to a secret value
/// (except `HOME`, used for `~/` expansion, and `FUZZ_UNSET`).
struct SecretEnv(&'static str);

impl HostEnv for SecretEnv {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/fuzz".into()),
            "FUZZ_UNSET" => None,
            _ => Some(format!("{}-{name}", self.0)),
        }
    }
}

/// Answers every `?prompt` with a secret value.
struct SecretPrompt(&'static str);

impl Prompter for SecretPrompt {
    fn ask(&self, key: &str, _question: &str) -> bottle_core::Result<Secret> {
        Ok(Secret::new(format!("{}-answer-{key}", self.0)))
    }
}

/// The per-process scratch home, reused across iterations.
fn home_root() -> &'static Utf8Path {
    static ROOT: OnceLock<Utf8PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Utf8PathBuf::from_path_buf(scratch::dir("manifest")).expect("utf-8 temp dir")
    })
}

/// Where a section goes: `bottles/<file>`, `agents/<file>` or
/// `repo/.bottle/agents/<file>` with a harmless file name, else `None` (the
/// fuzzer must never write outside the scratch home).
fn safe_rel(path: &str) -> Option<(&'static str, String)> {
    let path = path.trim();
    let (kind, file) = if let Some(r) = path.strip_prefix("bottles/") {
        ("bottles", r)
    } else if let Some(r) = path.strip_prefix("agents/") {
        ("agents", r)
    } else if let Some(r) = path.strip_prefix("repo/.bottle/agents/") {
        ("repo/.bottle/agents", r)
    } else {
        return None;
    };
    let ok = !file.is_empty()
        && file.len() <= 64
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| (kind, file.to_owned()))
}

/// Split the input into (dir, file name, contents).
fn files(text: &str) -> Vec<(&'static str, String, String)> {
    if !text.contains("# --- ") {
        return vec![
            ("bottles", "dev.toml".into(), text.to_owned()),
            ("agents", "main.toml".into(), "bottle = \"dev\"\n".into()),
        ];
    }
    let mut out: Vec<(&'static str, String, String)> = Vec::new();
    let mut current: Option<(&'static str, String, String)> = None;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# --- ") {
            if let Some(f) = current.take() {
                out.push(f);
            }
            current = safe_rel(rest).map(|(k, n)| (k, n, String::new()));
        } else if let Some((_, _, body)) = current.as_mut() {
            body.push_str(line);
        }
    }
    out.extend(current);
    out
}

fn render(r: &bottle_core::Result<bottle_core::BottlePlan>) -> String {
    match r {
        Ok(plan) => {
            let json = serde_json::to_string(plan).expect("plan serializes");
            let mut s = format!("{plan:?}\n{json}\n{}\n", plan.hash());
            for (name, secret) in plan.held_secrets() {
                s.push_str(&format!("{name}={secret:?} {secret}\n"));
            }
            s
        }
        Err(e) => format!("{e}\n{e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 16 * 1024 {
        return;
    }
    let text = String::from_utf8_lossy(data);

    // The raw models on the whole input.
    let _ = toml::from_str::<BottleFile>(&text);
    let _ = toml::from_str::<AgentFile>(&text);

    let root = home_root();
    let home = Home::new(root.to_owned());
    // Agent validation straight from text (repo and home agents differ).
    let agent_path = root.join("agents").join("fuzz.toml");
    let _ = agent_from_text(&agent_path, &text, AgentSource::Repo);
    let _ = agent_from_text(&agent_path, &text, AgentSource::Home);

    // The loader on a fresh home (and repo) holding the input's files.
    let _ = std::fs::remove_dir_all(root.join("repo"));
    for dir in ["bottles", "agents", "repo/.bottle/agents"] {
        let d = root.join(dir);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
    }
    let files = files(&text);
    // The agent to load: `main` if present, else the first agent file.
    let agents: Vec<&str> = files
        .iter()
        .filter(|f| f.0 != "bottles")
        .filter_map(|f| f.1.strip_suffix(".toml"))
        .collect();
    let agent = if agents.contains(&"main") || agents.is_empty() {
        "main".to_owned()
    } else {
        agents[0].to_owned()
    };
    for (dir, file, body) in &files {
        std::fs::write(root.join(dir).join(file), body).expect("write");
    }
    let loader = Loader::new(home, Some(root.join("repo")));
    let _ = loader.all_files();
    let _ = loader.agent_names();
    let Ok((a, b)) = loader.load(&agent) else {
        return;
    };

    let opts = ResolveOptions {
        identity: Some(Identity::parse("fuzz-dev-000000").expect("identity")),
        ..ResolveOptions::default()
    };
    let out: Vec<String> = MARKERS
        .iter()
        .map(|m| render(&resolve(&a, &b, &opts, &SecretEnv(m), &SecretPrompt(m))))
        .collect();
    let leaked = out[0].contains(MARKERS[0])
        && out[1].contains(MARKERS[1])
        && !out[0].contains(MARKERS[1])
        && !out[1].contains(MARKERS[0]);
    assert!(
        !leaked,
        "a secret value reached the plan output or an error:\n{}",
        out[0]
    );

    // Host-env maps behave like any other HostEnv.
    let map: BTreeMap<String, String> = BTreeMap::new();
    let _ = resolve(&a, &b, &opts, &map, &SecretPrompt(MARKERS[0]));
});
