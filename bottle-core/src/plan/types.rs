//! The plan's types: [`BottlePlan`] and its parts, and the
//! [`ResolveOptions`] that go in. Plain data; serialized as
//! `bottle plan --json` (schema [`PLAN_SCHEMA`]).

use std::collections::{BTreeMap, BTreeSet};

use camino::Utf8PathBuf;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Identity;
use crate::manifest::{AgentSource, GitUser, Runtime, Template};
use crate::secret::Secret;

/// Current `bottle plan --json` schema version.
pub const PLAN_SCHEMA: u32 = 1;
/// Default base image of agent and bundle images: the project's own tag,
/// built by `cargo xtask seed-base` (never an official image's name, never
/// pulled).
pub const DEFAULT_BASE_IMAGE: &str = "bottle-base:bookworm";
/// Label carrying the identity on every resource.
pub const LABEL_IDENTITY: &str = "dev.bottle.identity";
/// Placeholder the agent sees instead of a provider API key.
pub const PLACEHOLDER_TOKEN: &str = "bottle-held-by-egress";

/// How an env value reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum EnvEntry {
    /// Written in the manifest (or `--env`).
    Literal(String),
    /// Copied from a host variable or answered at a prompt: redacted in
    /// every rendering and delivered to the agent privately. Held by the
    /// sidecars only when the key is in [`BottlePlan::held_env`].
    Secret(Secret),
}

impl EnvEntry {
    /// The value to hand to the agent.
    pub fn expose(&self) -> &str {
        match self {
            EnvEntry::Literal(s) => s,
            EnvEntry::Secret(s) => s.expose(),
        }
    }
}

/// Where the agent image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ImageSource {
    /// A built-in template.
    Template(Template),
    /// A user Dockerfile.
    Dockerfile(Utf8PathBuf),
}

/// The agent image and entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderPlan {
    /// Template or Dockerfile.
    pub image: ImageSource,
    /// Base image.
    pub base_image: String,
    /// Entry command (template default or agent override).
    pub command: Vec<String>,
    /// The agent's prompt text, if any.
    pub prompt: Option<String>,
    /// Host whose API key egress holds, if any.
    pub auth_host: Option<String>,
    /// Whether the agent CLI keeps its own permission prompts.
    pub permission_prompts: bool,
    /// Skills copied into the agent (README "Skills").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<crate::skills::SkillPlan>,
}

/// How a route's credential is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `Authorization: Bearer <t>`.
    Bearer,
    /// `Authorization: Basic <t>` (t is `user:pass`).
    Basic,
    /// `x-api-key: <t>`.
    XApiKey,
    /// `<Name>: <t>`.
    Header(String),
}

impl AuthScheme {
    /// Parse a validated scheme string.
    pub fn parse(s: &str) -> Self {
        match s {
            "bearer" => AuthScheme::Bearer,
            "basic" => AuthScheme::Basic,
            "x-api-key" => AuthScheme::XApiKey,
            other => AuthScheme::Header(other.trim_start_matches("header:").to_owned()),
        }
    }

    /// The manifest spelling.
    pub fn as_manifest(&self) -> String {
        match self {
            AuthScheme::Bearer => "bearer".into(),
            AuthScheme::Basic => "basic".into(),
            AuthScheme::XApiKey => "x-api-key".into(),
            AuthScheme::Header(n) => format!("header:{n}"),
        }
    }
}

/// A route's credential.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteAuthPlan {
    /// Scheme.
    pub scheme: AuthScheme,
    /// File name of the secret in the bundle's secrets dir.
    pub secret_name: String,
    /// The token.
    pub token: Secret,
}

/// One allowed egress route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutePlan {
    /// Host or `*.domain`.
    pub host: String,
    /// Port, if not the scheme's default.
    pub port: Option<u16>,
    /// Path globs (empty: all).
    pub paths: Vec<String>,
    /// Methods (empty: all).
    pub methods: Vec<String>,
    /// Private targets allowed.
    pub allow_private: bool,
    /// `auth` may be sent over plain HTTP (needs `port`).
    pub plaintext: bool,
    /// Credential to inject.
    pub auth: Option<RouteAuthPlan>,
}

/// Egress policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EgressPlan {
    /// Routes.
    pub routes: Vec<RoutePlan>,
    /// DLP on.
    pub dlp: bool,
    /// Bytes of body scanned.
    pub max_body_scan: u64,
    /// DLP pattern rule ids turned off for this bottle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dlp_disable: Vec<String>,
}

/// A gated git remote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemotePlan {
    /// Name (gate path `<name>.git`).
    pub name: String,
    /// The real URL (the agent uses it; the gate rewrites it).
    pub url: String,
    /// Host path of the deploy key.
    pub identity_file: Option<Utf8PathBuf>,
    /// Pinned host key line.
    pub known_host_key: Option<String>,
    /// Pushable ref globs.
    pub push: Vec<String>,
    /// Fetch allowed.
    pub fetch: bool,
}

/// Git settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GitPlan {
    /// Commit identity.
    pub user: GitUser,
    /// Remotes.
    pub remotes: Vec<RemotePlan>,
}

/// Supervise settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisePlan {
    /// Server on.
    pub enabled: bool,
    /// Default approval lifetime, seconds.
    pub grant_ttl_secs: u64,
    /// Auto-deny after, seconds.
    pub auto_deny_after_secs: u64,
}

/// Limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    /// CPUs.
    pub cpus: f64,
    /// Memory bytes.
    pub memory_bytes: u64,
    /// Max processes.
    pub pids: u32,
}

/// Names of every resource of one bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Names {
    /// Bundle container.
    pub bundle: String,
    /// Agent container or VM.
    pub agent: String,
    /// Agent+bundle network (internal).
    pub internal_network: String,
    /// Bundle's outside network.
    pub egress_network: String,
    /// Agent home volume.
    pub home_volume: String,
}

/// Ports the bundle listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// egress.
    pub egress: u16,
    /// git-gate.
    pub git_gate: u16,
    /// supervise.
    pub supervise: u16,
}

/// Which files produced this plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sources {
    /// Agent file.
    pub agent: Utf8PathBuf,
    /// Whether the agent came from the repo.
    pub agent_source: AgentSource,
    /// Bottle files, leaf first.
    pub bottle: Vec<Utf8PathBuf>,
}

/// The fully resolved, immutable description of one launch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BottlePlan {
    /// `bottle plan --json` schema version.
    pub schema_version: u32,
    /// Instance identity.
    pub identity: Identity,
    /// Agent name.
    pub agent: String,
    /// Bottle name.
    pub bottle: String,
    /// Manifest files.
    pub sources: Sources,
    /// Backend id.
    pub backend: String,
    /// Docker runtime request.
    pub runtime: Runtime,
    /// Allocated slot (subnet/alias index).
    pub slot: u32,
    /// Resource names.
    pub names: Names,
    /// Labels on every resource.
    pub labels: BTreeMap<String, String>,
    /// Agent image + entry.
    pub provider: ProviderPlan,
    /// Agent env.
    pub env: BTreeMap<String, EnvEntry>,
    /// Env keys whose values the bottle holds (`{ secret = "${VAR}" }` and
    /// `?prompt` answers): the sidecars refuse to send them out and mask
    /// them in replies. A plain `"${VAR}"` is not held.
    pub held_env: BTreeSet<String>,
    /// Directory copied into the agent image.
    pub workspace: Option<Utf8PathBuf>,
    /// Egress policy.
    pub egress: EgressPlan,
    /// Git.
    pub git: GitPlan,
    /// Supervise.
    pub supervise: SupervisePlan,
    /// Limits.
    pub resources: Resources,
    /// Bundle ports.
    pub ports: Ports,
}

impl BottlePlan {
    /// Every secret the bottle holds, by file name in the secrets dir:
    /// route tokens, the provider key and the env entries in
    /// [`BottlePlan::held_env`] (deploy keys are files referenced by path,
    /// see [`RemotePlan::identity_file`]).
    pub fn held_secrets(&self) -> BTreeMap<String, Secret> {
        let mut out = BTreeMap::new();
        for r in &self.egress.routes {
            if let Some(a) = &r.auth {
                out.insert(a.secret_name.clone(), a.token.clone());
            }
        }
        for (k, v) in &self.env {
            if let (true, EnvEntry::Secret(s)) = (self.held_env.contains(k), v) {
                out.insert(format!("env-{k}"), s.clone());
            }
        }
        out
    }

    /// Stable hash of the plan (secrets redacted, so it never encodes them).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("plan serializes");
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Template or dockerfile name for display.
    pub fn image_label(&self) -> String {
        match &self.provider.image {
            ImageSource::Template(t) => format!("template {}", t.as_str()),
            ImageSource::Dockerfile(p) => format!("dockerfile {p}"),
        }
    }
}

/// Inputs from the command line and the state allocation.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// `--backend`.
    pub backend: Option<String>,
    /// `--runtime`.
    pub runtime: Option<Runtime>,
    /// `--cwd`: copied into the agent image.
    pub cwd: Option<Utf8PathBuf>,
    /// `--env K=V` (literal, override manifests).
    pub env: Vec<(String, String)>,
    /// Identity to use (from [`crate::state::Home::allocate`], or a
    /// preview identity for `bottle plan`).
    pub identity: Option<Identity>,
    /// Slot from the allocation.
    pub slot: u32,
}

/// Where prepare writes the prompt and the MCP config inside the agent
/// (`~` is the agent's home).
pub const AGENT_PROMPT_FILE: &str = "$HOME/.bottle/prompt.md";
