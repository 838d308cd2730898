//! The manifests' TOML model as written: a [`BottleFile`] and its sections,
//! an [`AgentFile`], and what loading makes of them ([`LoadedBottle`],
//! [`LoadedAgent`]). Plain data; [`super::EnvValue`] is in `env`.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::EnvValue;

/// Backends bottle knows about (compiled in or not).
pub const KNOWN_BACKENDS: &[&str] = &["docker", "smolmachines"];
/// The backend a bottle that names none runs on.
pub const DEFAULT_BACKEND: &str = "docker";

/// Top-level keys of a bottle file (used to refuse them in agent files).
pub const BOTTLE_KEYS: &[&str] = &[
    "extends",
    "backend",
    "runtime",
    "agent_provider",
    "env",
    "git",
    "egress",
    "supervise",
    "resources",
];

/// Container runtime for the docker backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// `runsc` when the engine has it, else `runc` (with a warning).
    #[default]
    Auto,
    /// The default OCI runtime (shares the host kernel).
    Runc,
    /// gVisor.
    Runsc,
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Runtime::Auto),
            "runc" => Ok(Runtime::Runc),
            "runsc" => Ok(Runtime::Runsc),
            _ => Err(format!("unknown runtime `{s}` (use auto, runc or runsc)")),
        }
    }
}

/// Built-in agent image templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// Claude Code.
    Claude,
    /// OpenAI Codex CLI.
    Codex,
    /// A plain shell (scripted agents, the demo).
    Shell,
}

impl Template {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Claude => "claude",
            Template::Codex => "codex",
            Template::Shell => "shell",
        }
    }
}

/// A bottle file, as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BottleFile {
    /// Parent bottle.
    pub extends: Option<String>,
    /// `docker` or `smolmachines`.
    pub backend: Option<String>,
    /// Docker runtime.
    pub runtime: Option<Runtime>,
    /// The agent image.
    pub agent_provider: Option<ProviderSection>,
    /// Env for the agent.
    pub env: Option<BTreeMap<String, EnvValue>>,
    /// Git identity and remotes.
    pub git: Option<GitSection>,
    /// Egress policy.
    pub egress: Option<EgressSection>,
    /// Supervise settings.
    pub supervise: Option<SuperviseSection>,
    /// Limits.
    pub resources: Option<ResourcesSection>,
}

/// `[agent_provider]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Built-in template.
    pub template: Option<Template>,
    /// Or a user Dockerfile (relative to the bottle file).
    pub dockerfile: Option<String>,
    /// Base image (default `bottle-base:bookworm`, from `cargo xtask seed-base`).
    pub base_image: Option<String>,
    /// The provider's own API key, held by egress.
    pub auth: Option<ProviderAuth>,
}

/// `agent_provider.auth`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAuth {
    /// API host, e.g. `api.anthropic.com`.
    pub host: String,
    /// `x-api-key` or `bearer`.
    pub scheme: String,
    /// `${HOST_VAR}` or `?prompt`.
    pub token: String,
}

/// `[git]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSection {
    /// Commit identity.
    pub user: Option<GitUser>,
    /// Gated remotes.
    pub remotes: Option<Vec<RemoteSection>>,
}

/// `git.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitUser {
    /// user.name
    pub name: String,
    /// user.email
    pub email: String,
}

/// `[[git.remotes]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// Remote name (also the gate path `<name>.git`).
    pub name: String,
    /// ssh or https URL.
    pub url: String,
    /// Host path of the deploy key (ssh).
    pub identity_file: Option<String>,
    /// Pinned host key line (`ssh-ed25519 AAAA…`); required for ssh.
    pub known_host_key: Option<String>,
    /// Ref globs the agent may push.
    pub push: Option<Vec<String>>,
    /// Whether fetch is allowed (default true).
    pub fetch: Option<bool>,
}

/// `[egress]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    /// Allowed routes.
    pub routes: Option<Vec<RouteSection>>,
    /// Secret scanning (default true).
    pub dlp: Option<bool>,
    /// How much of a body to scan (default `1MiB`).
    pub max_body_scan: Option<String>,
    /// DLP pattern rules (by gitleaks/bottle rule id) this bottle turns off.
    pub dlp_disable: Option<Vec<String>>,
}

/// `[[egress.routes]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// `api.example.com` or `*.example.com`.
    pub host: String,
    /// Port (default 443 for https, 80 for http).
    pub port: Option<u16>,
    /// Path globs (default all).
    pub paths: Option<Vec<String>>,
    /// Methods (default all).
    pub methods: Option<Vec<String>>,
    /// Credential to inject.
    pub auth: Option<RouteAuth>,
    /// Allow private/loopback targets (default false).
    pub allow_private: Option<bool>,
    /// Let `auth` be sent over plain HTTP (default false; needs `port`;
    /// `bottle check` warns). Without it a plain-HTTP request to a route
    /// with `auth` is refused.
    pub plaintext: Option<bool>,
}

/// `egress.routes.auth`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// `bearer`, `basic`, `x-api-key` or `header:<Name>`.
    pub scheme: String,
    /// `${HOST_VAR}` or `?prompt`.
    pub token: String,
}

/// `[supervise]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuperviseSection {
    /// Run the supervise server (default true).
    pub enabled: Option<bool>,
    /// Default lifetime of an approval (default `1h`).
    pub grant_ttl: Option<String>,
    /// Auto-deny unanswered requests after (default `10m`).
    pub auto_deny_after: Option<String>,
}

/// `[resources]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSection {
    /// CPUs (fractional allowed).
    pub cpus: Option<f64>,
    /// Memory, e.g. `4GiB`.
    pub memory: Option<String>,
    /// Max processes.
    pub pids: Option<u32>,
}

/// An agent file, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The bottle it runs in (by name).
    pub bottle: String,
    /// Inline prompt.
    pub prompt: Option<String>,
    /// Or a prompt file, relative to the agent file.
    pub prompt_file: Option<String>,
    /// Entry command overriding the template's.
    pub command: Option<Vec<String>>,
    /// Env merged over the bottle's.
    pub env: Option<BTreeMap<String, EnvValue>>,
    /// Keep the agent CLI's own permission prompts (claude/codex templates).
    /// Default false: inside a bottle the sandbox is the boundary, so the
    /// agent starts in the mode its docs give for an outer sandbox.
    pub permission_prompts: Option<bool>,
    /// Skill directories copied into the agent (README "Skills"), by name:
    /// `$BOTTLE_HOME/skills/<name>/`, or for a repo agent first
    /// `<repo>/.bottle/skills/<name>/`.
    pub skills: Option<Vec<String>>,
}

/// Where an agent file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentSource {
    /// `$BOTTLE_HOME/agents`.
    Home,
    /// `<repo>/.bottle/agents` (untrusted: may only name a bottle).
    Repo,
}

/// A loaded, validated agent.
#[derive(Debug, Clone)]
pub struct LoadedAgent {
    /// Agent name.
    pub name: String,
    /// Its file.
    pub path: Utf8PathBuf,
    /// Where it came from.
    pub source: AgentSource,
    /// Contents.
    pub file: AgentFile,
    /// The skills `file.skills` names, found and checked.
    pub skills: Vec<crate::skills::SkillSource>,
}

/// A loaded, validated bottle with its `extends` chain merged.
#[derive(Debug, Clone)]
pub struct LoadedBottle {
    /// Bottle name.
    pub name: String,
    /// Files of the chain, leaf first.
    pub chain: Vec<Utf8PathBuf>,
    /// The merged contents.
    pub file: BottleFile,
}

impl LoadedBottle {
    /// The leaf file.
    pub fn path(&self) -> &Utf8Path {
        &self.chain[0]
    }
}
