//! [`Loader`]: finds manifests by name and loads them, enforcing where each
//! kind may come from (bottles only from `$BOTTLE_HOME/bottles`, agents
//! from `$BOTTLE_HOME/agents` then `<repo>/.bottle/agents`).

use std::collections::BTreeSet;
use std::fs;

use camino::{Utf8Path, Utf8PathBuf};

use super::agent::agent_from_text_in;
use super::diagnostics::bad_name;
use super::{AgentSource, LoadedAgent, LoadedBottle};
use crate::error::{Error, Result};
use crate::state::Home;

/// Finds and loads manifests, enforcing where each kind may come from.
#[derive(Debug, Clone)]
pub struct Loader {
    pub(super) home: Home,
    repo: Option<Utf8PathBuf>,
}

/// Check a manifest name: lowercase letters, digits, `-` and `_`, starting
/// with a letter or digit. Names become paths, so nothing else is allowed.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Loader {
    /// A loader for this home; `repo` is the directory whose `.bottle/agents`
    /// may ship agents (usually `--cwd`).
    pub fn new(home: Home, repo: Option<Utf8PathBuf>) -> Self {
        Self { home, repo }
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    fn repo_agents_dir(&self) -> Option<Utf8PathBuf> {
        self.repo.as_ref().map(|r| r.join(".bottle").join("agents"))
    }

    /// Paths where agent `name` may live, in lookup order (home wins).
    pub fn agent_candidates(&self, name: &str) -> Vec<(Utf8PathBuf, AgentSource)> {
        let mut v = vec![(
            self.home.agents_dir().join(format!("{name}.toml")),
            AgentSource::Home,
        )];
        if let Some(d) = self.repo_agents_dir() {
            v.push((d.join(format!("{name}.toml")), AgentSource::Repo));
        }
        v
    }

    /// Names of every agent (home and repo), sorted, deduplicated.
    pub fn agent_names(&self) -> Vec<String> {
        let mut names = names_in(&self.home.agents_dir());
        if let Some(d) = self.repo_agents_dir() {
            names.extend(names_in(&d));
        }
        names
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Names of every bottle, sorted.
    pub fn bottle_names(&self) -> Vec<String> {
        names_in(&self.home.bottles_dir())
    }

    /// Every manifest file that exists: (kind, path).
    pub fn all_files(&self) -> Vec<(&'static str, Utf8PathBuf)> {
        let mut out = Vec::new();
        for n in self.bottle_names() {
            out.push(("bottle", self.home.bottles_dir().join(format!("{n}.toml"))));
        }
        for n in names_in(&self.home.agents_dir()) {
            out.push(("agent", self.home.agents_dir().join(format!("{n}.toml"))));
        }
        if let Some(d) = self.repo_agents_dir() {
            for n in names_in(&d) {
                out.push(("agent", d.join(format!("{n}.toml"))));
            }
        }
        out
    }

    /// Load and validate agent `name`.
    pub fn load_agent(&self, name: &str) -> Result<LoadedAgent> {
        if !valid_name(name) {
            return Err(bad_name("agent", name, None));
        }
        let candidates = self.agent_candidates(name);
        for (path, source) in &candidates {
            if path.is_file() {
                return self.load_agent_file(path, *source);
            }
        }
        Err(Error::NotFound {
            kind: "agent",
            name: name.into(),
            searched: candidates.into_iter().map(|(p, _)| p).collect(),
            available: self.agent_names(),
        })
    }

    /// Load and validate one agent file.
    pub fn load_agent_file(&self, path: &Utf8Path, source: AgentSource) -> Result<LoadedAgent> {
        let text = read(path)?;
        agent_from_text_in(path, &text, source, Some(&self.home.skills_dir()))
    }

    /// Load bottle `name` with its `extends` chain merged (maps merge by key,
    /// lists and scalars replace). Cycles and missing parents are errors.
    pub fn load_bottle(&self, name: &str) -> Result<LoadedBottle> {
        self.load_bottle_from(name, None)
    }

    /// Load an agent and its bottle; `bottle_from` errors name the agent file.
    pub fn load(&self, agent: &str) -> Result<(LoadedAgent, LoadedBottle)> {
        let a = self.load_agent(agent)?;
        let b = self.load_bottle_from(&a.file.bottle, Some(&a.path))?;
        Ok((a, b))
    }
}

/// The names of the `*.toml` files in `dir`, sorted (none if it is absent).
pub(super) fn names_in(dir: &Utf8Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

/// The text of a manifest file.
pub(super) fn read(path: &Utf8Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("reading", path.to_owned(), e))
}
