//! [`resolve`]: manifests + host env + CLI flags → an immutable [`BottlePlan`].
//!
//! Owns naming (identity, container/network/volume names, labels) and every
//! default. Reads nothing but the loaded manifests, the prompt file and the
//! host environment (through [`HostEnv`]); `?prompt` answers come through
//! [`Prompter`]. Maps are `BTreeMap`s so JSON output and hashes are stable;
//! secrets are [`Secret`]s, redacted in every rendering.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{
    AgentSource, EnvValue, GitUser, LoadedAgent, LoadedBottle, Runtime, Template, KNOWN_BACKENDS,
};
use crate::secret::Secret;
use crate::units;

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

/// The slug naming one bottle instance: `<agent>-<bottle>-<random>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Identity(String);

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').chars().take(20).collect()
}

impl Identity {
    /// A fresh identity with a random 6-character suffix.
    pub fn generate(agent: &str, bottle: &str) -> Self {
        use rand::Rng;
        const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let suffix: String = (0..6)
            .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
            .collect();
        Identity(format!("{}-{}-{suffix}", slug(agent), slug(bottle)))
    }

    /// Parse a user-supplied identity (rejects anything that is not a slug,
    /// so an identity can never escape the state dir).
    pub fn parse(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && !s.starts_with('-');
        if ok {
            Ok(Identity(s.to_owned()))
        } else {
            Err(Error::NoSuchBottle {
                identity: s.to_owned(),
            })
        }
    }

    /// Wrap a name read from the state dir.
    pub(crate) fn from_existing(s: &str) -> Self {
        Identity(s.to_owned())
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Host environment lookup (tests supply a map).
pub trait HostEnv {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl HostEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl HostEnv for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Answers `?prompt` values.
pub trait Prompter {
    /// Ask for `key` with this question; the answer is a secret.
    fn ask(&self, key: &str, question: &str) -> Result<Secret>;
}

/// A prompter that refuses (non-interactive use).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPrompt;

impl Prompter for NoPrompt {
    fn ask(&self, key: &str, _question: &str) -> Result<Secret> {
        Err(Error::Prompt {
            key: key.into(),
            why: "bottle is not running interactively".into(),
        })
    }
}

/// A prompter that answers every question with a fixed placeholder; used by
/// `bottle plan`, which must not ask or store anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlaceholderPrompt;

impl Prompter for PlaceholderPrompt {
    fn ask(&self, _key: &str, _question: &str) -> Result<Secret> {
        Ok(Secret::new("<asked at start>"))
    }
}

/// The `${NAME}` references in a value, or why the value is malformed.
pub fn env_refs(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{value}` has an unclosed `${{`"))?;
        let name = &after[..end];
        if !crate::manifest::valid_env_name(name) {
            return Err(format!("`${{{name}}}` is not a valid variable reference"));
        }
        out.push(name.to_owned());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Expand every `${NAME}` in `value` from the host env.
fn interpolate(value: &str, key: &str, file: &Utf8Path, env: &dyn HostEnv) -> Result<String> {
    let mut out = value.to_owned();
    for name in env_refs(value).map_err(|why| Error::Manifest {
        file: file.to_owned(),
        line: None,
        column: None,
        message: why,
        fix: "write host variables as ${NAME}".into(),
    })? {
        let v = env.var(&name).ok_or_else(|| Error::MissingHostVar {
            file: file.to_owned(),
            key: key.into(),
            var: name.clone(),
        })?;
        out = out.replace(&format!("${{{name}}}"), &v);
    }
    Ok(out)
}

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

/// A template's entry command. Claude Code: `--mcp-config` names the
/// supervise server's config, `--dangerously-skip-permissions` unless the
/// agent keeps permission prompts, the prompt as the positional initial
/// prompt. Codex: `--dangerously-bypass-approvals-and-sandbox` (its mode for
/// an externally sandboxed environment) unless prompts are kept, the prompt
/// positional; its MCP servers and the trusted workspace are in
/// `~/.codex/config.toml`. The prompt is read from the file prepare writes,
/// so long prompts never reach the container config.
fn template_command(t: Template, has_prompt: bool, permission_prompts: bool) -> Vec<String> {
    let prompt = if has_prompt {
        format!(" -- \"$(cat \"{AGENT_PROMPT_FILE}\")\"")
    } else {
        String::new()
    };
    let script = match t {
        Template::Shell => return vec!["bash".into(), "-l".into()],
        Template::Claude => format!(
            "exec claude --mcp-config \"$HOME/.bottle/mcp.json\"{}{prompt}",
            if permission_prompts {
                ""
            } else {
                " --dangerously-skip-permissions"
            }
        ),
        Template::Codex => format!(
            "exec codex{}{prompt}",
            if permission_prompts {
                ""
            } else {
                " --dangerously-bypass-approvals-and-sandbox"
            }
        ),
    };
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// Resolve an agent + bottle into a plan.
///
/// ```
/// use std::collections::BTreeMap;
/// use bottle_core::manifest::{agent_from_text, bottle_from_text, AgentSource};
/// use bottle_core::plan::{resolve, NoPrompt, ResolveOptions};
///
/// let bottle = bottle_from_text("dev", "mem/dev.toml".into(), r#"
/// [[egress.routes]]
/// host = "api.github.com"
/// auth = { scheme = "bearer", token = "${GH_TOKEN}" }
/// "#)?;
/// let agent = agent_from_text("mem/demo.toml".into(), "bottle = \"dev\"\n", AgentSource::Home)?;
/// let host_env = BTreeMap::from([("GH_TOKEN".to_string(), "ghp_example".to_string())]);
/// let plan = resolve(&agent, &bottle, &ResolveOptions::default(), &host_env, &NoPrompt)?;
/// assert_eq!(plan.backend, "docker");
/// assert_eq!(plan.egress.routes[0].auth.as_ref().unwrap().token.expose(), "ghp_example");
/// // printing the plan never shows the token
/// assert!(!serde_json::to_string(&plan).unwrap().contains("ghp_example"));
/// # Ok::<(), bottle_core::Error>(())
/// ```
pub fn resolve(
    agent: &LoadedAgent,
    bottle: &LoadedBottle,
    opts: &ResolveOptions,
    host: &dyn HostEnv,
    prompter: &dyn Prompter,
) -> Result<BottlePlan> {
    let b = &bottle.file;
    let bottle_file = bottle.path();
    let backend = opts
        .backend
        .clone()
        .or_else(|| b.backend.clone())
        .unwrap_or_else(|| crate::manifest::DEFAULT_BACKEND.into());
    if !KNOWN_BACKENDS.contains(&backend.as_str()) {
        return Err(Error::UnknownBackend {
            name: backend,
            known: KNOWN_BACKENDS.iter().map(|s| s.to_string()).collect(),
        });
    }
    let identity = opts
        .identity
        .clone()
        .unwrap_or_else(|| Identity::generate(&agent.name, &bottle.name));
    let id = identity.as_str();

    // provider
    let prov = b.agent_provider.clone().unwrap_or_default();
    let image = match (&prov.template, &prov.dockerfile) {
        (_, Some(df)) => {
            ImageSource::Dockerfile(bottle_file.parent().unwrap_or(Utf8Path::new(".")).join(df))
        }
        (Some(t), None) => ImageSource::Template(*t),
        (None, None) => ImageSource::Template(Template::Shell),
    };
    let prompt = match (&agent.file.prompt, &agent.file.prompt_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(pf)) => {
            // checked again here: the file may have changed since loading
            let p = crate::manifest::prompt_path(&agent.path, pf, agent.source).map_err(
                |(message, fix)| Error::Manifest {
                    file: agent.path.clone(),
                    line: None,
                    column: None,
                    message,
                    fix,
                },
            )?;
            Some(std::fs::read_to_string(&p).map_err(|e| Error::io("reading", p, e))?)
        }
        _ => None,
    };
    let permission_prompts = agent.file.permission_prompts.unwrap_or(false);
    let skills = agent
        .skills
        .iter()
        .map(|s| crate::skills::SkillPlan {
            name: s.name.clone(),
            source: s.dir.clone(),
            origin: s.origin,
            targets: crate::skills::targets(&image, &s.name),
            confine: s.confine.clone(),
        })
        .collect();
    let command = match (&agent.file.command, &image) {
        (Some(c), _) => c.clone(),
        (None, ImageSource::Template(t)) => {
            template_command(*t, prompt.is_some(), permission_prompts)
        }
        (None, ImageSource::Dockerfile(_)) => Vec::new(),
    };

    let secret_value = |key: &str, token: &str, file: &Utf8Path| -> Result<Secret> {
        if let Some(q) = token.strip_prefix('?') {
            let q = if q.is_empty() || q == "prompt" {
                format!("value for {key}")
            } else {
                q.to_owned()
            };
            prompter.ask(key, &q)
        } else {
            Ok(Secret::new(interpolate(token, key, file, host)?))
        }
    };

    // env: bottle, then agent over it, then --env
    let mut env = BTreeMap::new();
    let mut held_env = BTreeSet::new();
    let sources: [(Option<&BTreeMap<String, EnvValue>>, &Utf8Path); 2] = [
        (b.env.as_ref(), bottle_file),
        (agent.file.env.as_ref(), &agent.path),
    ];
    for (map, file) in sources {
        for (k, v) in map.into_iter().flatten() {
            let raw = v.raw();
            let entry = if v.from_host() {
                EnvEntry::Secret(secret_value(k, raw, file)?)
            } else {
                EnvEntry::Literal(raw.to_owned())
            };
            if v.is_held() {
                held_env.insert(k.clone());
            } else {
                held_env.remove(k);
            }
            env.insert(k.clone(), entry);
        }
    }
    for (k, v) in &opts.env {
        if !crate::manifest::valid_env_name(k) {
            return Err(Error::Manifest {
                file: "<command line>".into(),
                line: None,
                column: None,
                message: format!("`--env {k}=...`: not a valid variable name"),
                fix: "use --env NAME=VALUE".into(),
            });
        }
        if let Some(rule) = bottle_dlp::pattern_hit(v) {
            return Err(Error::Manifest {
                file: "<command line>".into(),
                line: None,
                column: None,
                message: format!(
                    "`--env {k}=...` is a literal credential (matches `{rule}`); a secret on a command line ends up in shell history and process lists, and the agent would hold it"
                ),
                fix: format!(
                    "export {k} on the host and reference it from the bottle: {k} = {{ secret = \"${{{k}}}\" }}"
                ),
            });
        }
        held_env.remove(k);
        env.insert(k.clone(), EnvEntry::Literal(v.clone()));
    }

    // egress
    let eg = b.egress.clone().unwrap_or_default();
    let mut routes = Vec::new();
    for r in eg.routes.iter().flatten() {
        if r.plaintext == Some(true) && r.port.is_none() {
            return Err(Error::Manifest {
                file: bottle_file.to_owned(),
                line: None,
                column: None,
                message: format!(
                    "egress route `{}`: plaintext = true needs an explicit `port`",
                    r.host
                ),
                fix: "name the plain-HTTP port (e.g. `port = 8080`), or drop `plaintext` and use https".into(),
            });
        }
        let auth = match &r.auth {
            Some(a) => Some(RouteAuthPlan {
                scheme: AuthScheme::parse(&a.scheme),
                secret_name: format!("route-{}", r.host.replace('*', "_")),
                token: secret_value(
                    &format!("egress.routes[{}].auth.token", r.host),
                    &a.token,
                    bottle_file,
                )?,
            }),
            None => None,
        };
        routes.push(RoutePlan {
            host: r.host.clone(),
            port: r.port,
            paths: r.paths.clone().unwrap_or_default(),
            methods: r.methods.clone().unwrap_or_default(),
            allow_private: r.allow_private.unwrap_or(false),
            plaintext: r.plaintext.unwrap_or(false),
            auth,
        });
    }
    let mut auth_host = None;
    if let Some(a) = &prov.auth {
        let token = secret_value("agent_provider.auth.token", &a.token, bottle_file)?;
        let auth = RouteAuthPlan {
            scheme: AuthScheme::parse(&a.scheme),
            secret_name: "provider".into(),
            token,
        };
        match routes.iter_mut().find(|r| r.host == a.host) {
            Some(r) => r.auth = Some(auth),
            None => routes.push(RoutePlan {
                host: a.host.clone(),
                port: None,
                paths: Vec::new(),
                methods: Vec::new(),
                allow_private: false,
                plaintext: false,
                auth: Some(auth),
            }),
        }
        auth_host = Some(a.host.clone());
        let placeholder_var = match prov.template {
            Some(Template::Codex) => "OPENAI_API_KEY",
            _ => "ANTHROPIC_API_KEY",
        };
        held_env.remove(placeholder_var);
        env.insert(
            placeholder_var.into(),
            EnvEntry::Literal(PLACEHOLDER_TOKEN.into()),
        );
    }
    let egress = EgressPlan {
        routes,
        dlp: eg.dlp.unwrap_or(true),
        max_body_scan: eg
            .max_body_scan
            .as_deref()
            .map(units::parse_bytes)
            .transpose()
            .map_err(|e| Error::other(e, "fix egress.max_body_scan"))?
            .unwrap_or(1 << 20),
        dlp_disable: eg.dlp_disable.clone().unwrap_or_default(),
    };

    // git
    let g = b.git.clone().unwrap_or_default();
    let user = g.user.clone().unwrap_or(GitUser {
        name: format!("bottle agent {}", agent.name),
        email: format!("{id}@bottle.invalid"),
    });
    let remotes = g
        .remotes
        .iter()
        .flatten()
        .map(|r| RemotePlan {
            name: r.name.clone(),
            url: r.url.clone(),
            identity_file: r.identity_file.as_deref().map(|p| expand_tilde(p, host)),
            known_host_key: r.known_host_key.clone(),
            push: r
                .push
                .clone()
                .unwrap_or_else(|| vec![format!("refs/heads/{id}/*")]),
            fetch: r.fetch.unwrap_or(true),
        })
        .collect();

    let sv = b.supervise.clone().unwrap_or_default();
    let dur = |v: &Option<String>, default: u64| -> u64 {
        v.as_deref()
            .and_then(|s| units::parse_duration(s).ok())
            .map(|d| d.as_secs())
            .unwrap_or(default)
    };
    let supervise = SupervisePlan {
        enabled: sv.enabled.unwrap_or(true),
        grant_ttl_secs: dur(&sv.grant_ttl, 3600),
        auto_deny_after_secs: dur(&sv.auto_deny_after, 600),
    };
    let res = b.resources.clone().unwrap_or_default();
    let resources = Resources {
        cpus: res.cpus.unwrap_or(2.0),
        memory_bytes: res
            .memory
            .as_deref()
            .and_then(|m| units::parse_bytes(m).ok())
            .unwrap_or(4 << 30),
        pids: res.pids.unwrap_or(1024),
    };

    let names = Names {
        bundle: format!("bottle-{id}-bundle"),
        agent: format!("bottle-{id}-agent"),
        internal_network: format!("bottle-{id}-int"),
        egress_network: format!("bottle-{id}-egress"),
        home_volume: format!("bottle-{id}-home"),
    };
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_IDENTITY.to_owned(), id.to_owned());
    labels.insert("dev.bottle.agent".to_owned(), agent.name.clone());
    labels.insert("dev.bottle.bottle".to_owned(), bottle.name.clone());

    Ok(BottlePlan {
        schema_version: PLAN_SCHEMA,
        identity: identity.clone(),
        agent: agent.name.clone(),
        bottle: bottle.name.clone(),
        sources: Sources {
            agent: agent.path.clone(),
            agent_source: agent.source,
            bottle: bottle.chain.clone(),
        },
        backend,
        runtime: opts.runtime.or(b.runtime).unwrap_or_default(),
        slot: opts.slot,
        names,
        labels,
        provider: ProviderPlan {
            image,
            base_image: prov
                .base_image
                .clone()
                .unwrap_or_else(|| DEFAULT_BASE_IMAGE.into()),
            command,
            prompt,
            auth_host,
            permission_prompts,
            skills,
        },
        env,
        held_env,
        workspace: opts.cwd.clone(),
        egress,
        git: GitPlan { user, remotes },
        supervise,
        resources,
        ports: Ports {
            egress: 8888,
            git_gate: 9418,
            supervise: 9100,
        },
    })
}

fn expand_tilde(p: &str, host: &dyn HostEnv) -> Utf8PathBuf {
    match (p.strip_prefix("~/"), host.var("HOME")) {
        (Some(rest), Some(home)) => Utf8PathBuf::from(home).join(rest),
        _ => Utf8PathBuf::from(p),
    }
}

/// Does this env value look like a credential? (`bottle check` warns.)
pub fn looks_like_secret(key: &str, value: &str) -> bool {
    let k = key.to_ascii_uppercase();
    let name_hint = [
        "TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE",
    ]
    .iter()
    .any(|h| k.contains(h));
    let literal = !value.starts_with('?') && env_refs(value).map(|r| r.is_empty()).unwrap_or(true);
    let value_hint = [
        "ghp_",
        "github_pat_",
        "glpat-",
        "sk-",
        "xoxb-",
        "AKIA",
        "-----BEGIN",
    ]
    .iter()
    .any(|h| value.contains(h));
    (name_hint && literal && !value.is_empty()) || value_hint
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real entry command of each template (what `docker run` gets),
    /// with and without a prompt and permission prompts.
    #[test]
    fn template_entry_commands() {
        let mut out = String::new();
        for t in [Template::Claude, Template::Codex, Template::Shell] {
            for (prompt, prompts_on) in [(true, false), (false, false), (true, true)] {
                out.push_str(&format!(
                    "{} prompt={prompt} permission_prompts={prompts_on}\n  {:?}\n",
                    t.as_str(),
                    template_command(t, prompt, prompts_on)
                ));
            }
        }
        insta::assert_snapshot!(out);
    }
}
