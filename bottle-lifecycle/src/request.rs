//! What to resolve: an agent name and the caller's flags, turned into a
//! [`BottlePlan`] (load, backend check, `bottle_core::resolve`).

use bottle_core::manifest::{AgentSource, Runtime};
use bottle_core::plan::{HostEnv, ProcessEnv, Prompter};
use bottle_core::{resolve, BottlePlan, Error, Identity, Loader, ResolveOptions, Result};
use camino::Utf8PathBuf;

use crate::Lifecycle;

/// An agent to plan or start, with the caller's overrides.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// The agent's name.
    pub agent: String,
    /// Directory copied into the agent (its `.bottle/agents` may define the
    /// agent); the process's current directory is the repo when absent.
    pub cwd: Option<Utf8PathBuf>,
    /// Runtime override (`--runtime`).
    pub runtime: Option<Runtime>,
    /// Extra env for the agent, NAME and VALUE.
    pub env: Vec<(String, String)>,
    /// Backend override (`--backend`).
    pub backend: Option<String>,
}

impl PlanRequest {
    /// A request for `agent` with no overrides.
    pub fn agent(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            ..Default::default()
        }
    }

    /// `cwd` made absolute, if given (an error when it is not a directory).
    pub fn cwd_abs(&self) -> Result<Option<Utf8PathBuf>> {
        let Some(c) = &self.cwd else { return Ok(None) };
        let abs =
            std::fs::canonicalize(c).map_err(|e| Error::io("resolving --cwd", c.clone(), e))?;
        let abs = Utf8PathBuf::from_path_buf(abs)
            .map_err(|_| Error::other("--cwd is not UTF-8", "use a UTF-8 path"))?;
        if !abs.is_dir() {
            return Err(Error::other(
                format!("--cwd {abs} is not a directory"),
                "pass a directory",
            ));
        }
        Ok(Some(abs))
    }

    /// The repository the agent may come from: `cwd`, else the process's
    /// current directory.
    fn repo(&self, cwd: &Option<Utf8PathBuf>) -> Option<Utf8PathBuf> {
        match cwd {
            Some(c) => Some(c.clone()),
            None => std::env::current_dir()
                .ok()
                .and_then(|p| Utf8PathBuf::from_path_buf(p).ok()),
        }
    }
}

impl Lifecycle<'_> {
    /// Load the agent and its bottle, check the backend, and resolve a
    /// plan. `identity` is `(identity, slot)` from an allocation, or `None`
    /// for a preview.
    pub fn resolve(
        &self,
        req: &PlanRequest,
        identity: Option<(Identity, u32)>,
        prompter: &dyn Prompter,
    ) -> Result<BottlePlan> {
        let cwd = req.cwd_abs()?;
        let loader = Loader::new(self.home.clone(), req.repo(&cwd));
        if let Some(b) = &req.backend {
            self.registry.get(b)?;
        }
        let (a, b) = loader.load(&req.agent)?;
        let (identity, slot) = match identity {
            Some((i, s)) => (Some(i), s),
            None => (None, 0),
        };
        let opts = ResolveOptions {
            backend: req.backend.clone(),
            runtime: req.runtime,
            cwd,
            env: req.env.clone(),
            identity,
            slot,
        };
        let host: &dyn HostEnv = &ProcessEnv;
        let plan = resolve(&a, &b, &opts, host, prompter)?;
        self.registry.get(&plan.backend)?;
        Ok(plan)
    }

    /// Notes on where the agent came from: a home agent shadowing the
    /// repo's, a repo agent whose repo is not copied in.
    pub fn source_notes(&self, req: &PlanRequest, plan: &BottlePlan) -> Vec<String> {
        let mut notes = Vec::new();
        let repo = req.repo(&req.cwd_abs().ok().flatten());
        let loader = Loader::new(self.home.clone(), repo.clone());
        let found: Vec<_> = loader
            .agent_candidates(&plan.agent)
            .into_iter()
            .filter(|(p, _)| p.is_file())
            .collect();
        if let [(home_file, AgentSource::Home), (repo_file, AgentSource::Repo)] = &found[..] {
            notes.push(format!(
                "WARNING: {home_file} shadows the repo's agent {repo_file} (the home's wins; rename one to use the other)"
            ));
        }
        if plan.sources.agent_source == AgentSource::Repo && plan.workspace.is_none() {
            let dir = repo.map(|r| r.to_string()).unwrap_or_else(|| ".".into());
            notes.push(format!(
                "the agent comes from the repo {dir}, but the repo is not copied into the bottle: add --cwd {dir} to copy it"
            ));
        }
        notes
    }
}
