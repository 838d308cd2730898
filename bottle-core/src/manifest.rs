//! Manifests (SPEC §2): the raw TOML model of bottles and agents, where they
//! may come from, `extends`, and validation with file/line/column errors.
//!
//! Owns trust: bottles are read ONLY from `$BOTTLE_HOME/bottles`; agents from
//! `$BOTTLE_HOME/agents` and `<repo>/.bottle/agents`, and an agent file can
//! never carry bottle keys. Does no I/O beyond reading manifest files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use camino::{Utf8Path, Utf8PathBuf};
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::Home;
use crate::units;

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

/// One `[env]` value as written (README "Env values", SPEC §2).
///
/// A plain string is a literal, `"${HOST_VAR}"` (copied from the host at
/// start, **not** held) or `"?question"` (asked at start, held). The table
/// form `{ secret = "${HOST_VAR}" }` marks a host value as a secret the
/// bottle holds: the sidecars refuse to let it out and mask it in replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// `KEY = "..."`.
    Plain(String),
    /// `KEY = { secret = "${HOST_VAR}" }` (or `"?question"`).
    Secret {
        /// The host variable reference(s) or `?question`.
        secret: String,
    },
}

impl EnvValue {
    /// The string as written (without the table around a secret).
    pub fn raw(&self) -> &str {
        match self {
            EnvValue::Plain(s) => s,
            EnvValue::Secret { secret } => secret,
        }
    }

    /// Whether the bottle holds the resolved value: marked secret, or a
    /// `?prompt` answer.
    pub fn is_held(&self) -> bool {
        matches!(self, EnvValue::Secret { .. }) || self.raw().starts_with('?')
    }

    /// Whether the value comes from the host (a `${VAR}` or a `?prompt`)
    /// rather than being written in the file.
    pub fn from_host(&self) -> bool {
        let raw = self.raw();
        raw.starts_with('?') || crate::plan::env_refs(raw).is_ok_and(|r| !r.is_empty())
    }
}

impl From<&str> for EnvValue {
    fn from(s: &str) -> Self {
        EnvValue::Plain(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string (\"literal\", \"${HOST_VAR}\", \"?question\") or a table { secret = \"${HOST_VAR}\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<EnvValue, A::Error> {
                let mut secret: Option<String> = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k != "secret" {
                        return Err(de::Error::unknown_field(&k, &["secret"]));
                    }
                    if secret.is_some() {
                        return Err(de::Error::duplicate_field("secret"));
                    }
                    secret = Some(m.next_value()?);
                }
                secret
                    .map(|secret| EnvValue::Secret { secret })
                    .ok_or_else(|| de::Error::missing_field("secret"))
            }
        }
        d.deserialize_any(V)
    }
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

/// Finds and loads manifests, enforcing where each kind may come from.
#[derive(Debug, Clone)]
pub struct Loader {
    home: Home,
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

fn bad_name(kind: &'static str, name: &str, file: Option<&Utf8Path>) -> Error {
    Error::Manifest {
        file: file
            .map(Utf8Path::to_owned)
            .unwrap_or_else(|| Utf8PathBuf::from("<command line>")),
        line: None,
        column: None,
        message: format!("`{name}` is not a valid {kind} name"),
        fix: "names use lowercase letters, digits, `-` and `_` (at most 48)".into(),
    }
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

    fn load_bottle_from(&self, name: &str, referrer: Option<&Utf8Path>) -> Result<LoadedBottle> {
        let mut chain: Vec<Utf8PathBuf> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut tables: Vec<toml::Table> = Vec::new();
        let mut next = Some((name.to_owned(), referrer.map(Utf8Path::to_owned)));
        while let Some((n, from)) = next.take() {
            if !valid_name(&n) {
                return Err(bad_name("bottle", &n, from.as_deref()));
            }
            let path = self.home.bottles_dir().join(format!("{n}.toml"));
            if names.contains(&n) {
                let mut cycle = names.clone();
                cycle.push(n.clone());
                return Err(Error::Manifest {
                    file: from.unwrap_or(path),
                    line: None,
                    column: None,
                    message: format!("`extends` forms a cycle: {}", cycle.join(" -> ")),
                    fix: "remove `extends` from one bottle in the cycle".into(),
                });
            }
            if !path.is_file() {
                if let Some(from) = from {
                    let key = if chain.is_empty() {
                        "bottle"
                    } else {
                        "extends"
                    };
                    let (line, column) = {
                        let text = fs::read_to_string(&from).unwrap_or_default();
                        key_position(&text, key)
                    };
                    let names = self.bottle_names();
                    return Err(Error::Manifest {
                        file: from,
                        line,
                        column,
                        message: format!(
                            "`{key} = \"{n}\"` names a bottle that does not exist ({path})"
                        ),
                        fix: if names.is_empty() {
                            format!("create {path} (bottles live only in $BOTTLE_HOME/bottles/)")
                        } else {
                            format!("create {path} or use one of: {}", names.join(", "))
                        },
                    });
                }
                return Err(Error::NotFound {
                    kind: "bottle",
                    name: n,
                    searched: vec![path],
                    available: self.bottle_names(),
                });
            }
            let text = read(&path)?;
            let file: BottleFile = parse(&path, &text)?;
            validate_bottle(&path, &text, &file)?;
            let table: toml::Table = parse(&path, &text)?;
            next = file.extends.clone().map(|p| (p, Some(path.clone())));
            names.push(n);
            chain.push(path);
            tables.push(table);
        }
        let mut merged = toml::Table::new();
        for t in tables.into_iter().rev() {
            merge(&mut merged, t);
        }
        merged.remove("extends");
        let file: BottleFile = merged
            .try_into()
            .map_err(|e: toml::de::Error| Error::Manifest {
                file: chain[0].clone(),
                line: None,
                column: None,
                message: format!("after merging `extends`: {}", e.message()),
                fix: "check the parent bottles".into(),
            })?;
        validate_merged(&chain[0], &file)?;
        Ok(LoadedBottle {
            name: name.to_owned(),
            chain,
            file,
        })
    }

    /// Load an agent and its bottle; `bottle_from` errors name the agent file.
    pub fn load(&self, agent: &str) -> Result<(LoadedAgent, LoadedBottle)> {
        let a = self.load_agent(agent)?;
        let b = self.load_bottle_from(&a.file.bottle, Some(&a.path))?;
        Ok((a, b))
    }
}

/// Parse and validate a self-contained bottle from text (no `extends`):
/// for tools that embed bottle and keep policy in memory. `path` names it in
/// errors and anchors a relative `dockerfile`.
///
/// ```
/// use bottle_core::manifest::bottle_from_text;
/// let b = bottle_from_text("ci", "memory/ci.toml".into(), r#"
/// [[egress.routes]]
/// host = "api.github.com"
/// methods = ["GET"]
/// "#).unwrap();
/// assert_eq!(b.file.egress.unwrap().routes.unwrap()[0].host, "api.github.com");
///
/// let err = bottle_from_text("ci", "memory/ci.toml".into(), "egres = {}").unwrap_err();
/// assert!(err.to_string().starts_with("memory/ci.toml:1:1: unknown field `egres`"));
/// ```
pub fn bottle_from_text(name: &str, path: Utf8PathBuf, text: &str) -> Result<LoadedBottle> {
    if !valid_name(name) {
        return Err(bad_name("bottle", name, Some(&path)));
    }
    let file: BottleFile = parse(&path, text)?;
    validate_bottle(&path, text, &file)?;
    if file.extends.is_some() {
        return Err(Error::Manifest {
            file: path,
            line: None,
            column: None,
            message: "an in-memory bottle cannot `extends` another".into(),
            fix: "merge the parent's keys into it, or load bottles from a home with `Loader`"
                .into(),
        });
    }
    validate_merged(&path, &file)?;
    Ok(LoadedBottle {
        name: name.to_owned(),
        chain: vec![path],
        file,
    })
}

/// Parse and validate an agent from text; `path` names it in errors and
/// anchors a relative `prompt_file` (used for files and in-memory manifests).
/// Its `skills` are looked for only in the repository (an in-memory agent
/// has no `$BOTTLE_HOME`; [`Loader`] also looks in `$BOTTLE_HOME/skills`).
pub fn agent_from_text(path: &Utf8Path, text: &str, source: AgentSource) -> Result<LoadedAgent> {
    agent_from_text_in(path, text, source, None)
}

fn agent_from_text_in(
    path: &Utf8Path,
    text: &str,
    source: AgentSource,
    home_skills: Option<&Utf8Path>,
) -> Result<LoadedAgent> {
    let table: toml::Table = parse(path, text)?;
    let bottle_keys: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| BOTTLE_KEYS.contains(k) && *k != "env")
        .collect();
    if !bottle_keys.is_empty() {
        let (line, column) = key_position(text, bottle_keys[0]);
        let fix = match source {
            AgentSource::Repo => "a repo agent may only name a bottle (`bottle = \"<name>\"`); policy lives in $BOTTLE_HOME/bottles/<name>.toml, which only the operator writes",
            AgentSource::Home => "move these keys into a bottle file in $BOTTLE_HOME/bottles/ and reference it with `bottle = \"<name>\"`",
        };
        return Err(Error::Manifest {
            file: path.to_owned(),
            line,
            column,
            message: format!(
                "an agent file cannot carry bottle keys ({})",
                bottle_keys.join(", ")
            ),
            fix: fix.into(),
        });
    }
    let file: AgentFile = parse(path, text)?;
    let name = path.file_stem().unwrap_or_default().to_owned();
    let err = |message: String, fix: &str| Error::Manifest {
        file: path.to_owned(),
        line: None,
        column: None,
        message,
        fix: fix.into(),
    };
    if !valid_name(&name) {
        return Err(bad_name("agent", &name, Some(path)));
    }
    if !valid_name(&file.bottle) {
        return Err(bad_name("bottle", &file.bottle, Some(path)));
    }
    if file.prompt.is_some() && file.prompt_file.is_some() {
        return Err(err(
            "`prompt` and `prompt_file` are both set".into(),
            "keep one of them",
        ));
    }
    if let Some(pf) = &file.prompt_file {
        if let Err((message, fix)) = prompt_path(path, pf, source) {
            let (line, column) = key_position(text, "prompt_file");
            return Err(Error::Manifest {
                file: path.to_owned(),
                line,
                column,
                message,
                fix,
            });
        }
    }
    if let Some(cmd) = &file.command {
        if let Some(rule) = cmd.iter().find_map(|a| bottle_dlp::pattern_hit(a)) {
            let (line, column) = key_position(text, "command");
            return Err(Error::Manifest {
                file: path.to_owned(),
                line,
                column,
                message: format!("`command` carries a literal credential (matches `{rule}`)"),
                fix: "never put a secret in a command: hold it with an egress route's auth (token = \"${VAR}\") or a bottle env entry { secret = \"${VAR}\" }".into(),
            });
        }
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(err(
                "`command` is empty".into(),
                "write the program and its arguments, e.g. command = [\"bash\", \"-lc\", \"./run.sh\"]",
            ));
        }
    }
    if let Some(env) = &file.env {
        let author = match source {
            AgentSource::Home => EnvAuthor::Operator,
            AgentSource::Repo => EnvAuthor::Repo,
        };
        validate_env(path, text, env, author)?;
    }
    let skills = crate::skills::find_all(
        path,
        source,
        file.skills.as_deref().unwrap_or_default(),
        home_skills,
    )
    .map_err(|(message, fix)| {
        let (line, column) = key_position(text, "skills");
        Error::Manifest {
            file: path.to_owned(),
            line,
            column,
            message,
            fix,
        }
    })?;
    Ok(LoadedAgent {
        name,
        path: path.to_owned(),
        source,
        file,
        skills,
    })
}

/// The file an agent's `prompt_file` names, checked: it must exist, and for
/// a repo agent it must be a relative path without `..` whose real location
/// (symlinks resolved) is inside the repository (SPEC §1, S11 in
/// docs/security.md). Errors are `(message, fix)`.
pub(crate) fn prompt_path(
    agent_file: &Utf8Path,
    prompt_file: &str,
    source: AgentSource,
) -> std::result::Result<Utf8PathBuf, (String, String)> {
    let dir = agent_file.parent().unwrap_or(Utf8Path::new("."));
    let rel = Utf8Path::new(prompt_file);
    let repo_fix = || {
        "keep the prompt in the repository under .bottle/agents/ and name it relative to the agent file, e.g. prompt_file = \"prompt.md\"".to_owned()
    };
    if source == AgentSource::Repo {
        if rel.has_root() || rel.is_absolute() {
            return Err((
                format!("`prompt_file = \"{prompt_file}\"` is an absolute path; a repo agent may only use files inside the repository"),
                repo_fix(),
            ));
        }
        if rel
            .components()
            .any(|c| matches!(c, camino::Utf8Component::ParentDir))
        {
            return Err((
                format!("`prompt_file = \"{prompt_file}\"` climbs with `..`; a repo agent may only use files inside the repository"),
                repo_fix(),
            ));
        }
    }
    let p = dir.join(rel);
    if !p.is_file() {
        return Err((
            format!("`prompt_file` {p} does not exist"),
            "create the file or fix the path (relative to the agent file)".into(),
        ));
    }
    if source == AgentSource::Repo {
        // The repository is two levels above `.bottle/agents/`; anything
        // else (an in-memory agent) is confined to its own directory.
        let root = match dir.parent().and_then(Utf8Path::parent) {
            Some(r) if dir.ends_with(".bottle/agents") => r,
            _ => dir,
        };
        let real = |p: &Utf8Path| fs::canonicalize(p).ok();
        match (real(root), real(&p)) {
            (Some(root), Some(target)) if target.starts_with(&root) => {
                return Ok(Utf8PathBuf::from_path_buf(target).unwrap_or(p));
            }
            _ => {
                return Err((
                    format!("`prompt_file = \"{prompt_file}\"` resolves (through a symlink) to a file outside the repository"),
                    repo_fix(),
                ))
            }
        }
    }
    Ok(p)
}

fn names_in(dir: &Utf8Path) -> Vec<String> {
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

fn read(path: &Utf8Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("reading", path.to_owned(), e))
}

/// 1-based line and column of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn key_position(text: &str, key: &str) -> (Option<usize>, Option<usize>) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let is_key = t.starts_with(key) && t[key.len()..].trim_start().starts_with('=');
        let is_table =
            t.starts_with('[') && t.trim_start_matches('[').trim_start().starts_with(key);
        if is_key || is_table {
            let (l, c) = line_col(text, offset + indent);
            return (Some(l), Some(c));
        }
        offset += line.len();
    }
    (None, None)
}

fn parse<T: DeserializeOwned>(path: &Utf8Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let mut message = e.message().trim().to_owned();
        let suggestion = closest_expected(&message);
        if let Some((_, best)) = &suggestion {
            message.push_str(&format!("; did you mean `{best}`?"));
        }
        let fix = if let Some((wrong, best)) = suggestion {
            if message.starts_with("unknown variant") {
                format!("write `{best}` instead of `{wrong}`")
            } else {
                format!("rename `{wrong}` to `{best}`")
            }
        } else if message.contains("unknown field") {
            "remove or rename the key; the valid keys are listed above".to_owned()
        } else if message.contains("unknown variant") {
            "use one of the values listed above".to_owned()
        } else if message.contains("missing field") {
            "add the missing key".to_owned()
        } else {
            "fix the TOML at that position".to_owned()
        };
        Error::Manifest {
            file: path.to_owned(),
            line,
            column,
            message,
            fix,
        }
    })
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant ..."), the valid name closest to `x` when it is a likely typo:
/// `(x, closest)`.
fn closest_expected(message: &str) -> Option<(String, String)> {
    let rest = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("unknown variant "))?;
    let mut names = rest.split('`').skip(1).step_by(2);
    let wrong = names.next()?;
    let (dist, best) = names
        .map(|n| (strsim::damerau_levenshtein(wrong, n), n))
        .min_by_key(|(d, _)| *d)?;
    let len = wrong.chars().count();
    (dist > 0 && dist < len && dist <= (len / 3).max(2))
        .then(|| (wrong.to_owned(), best.to_owned()))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

struct Checker<'a> {
    path: &'a Utf8Path,
    text: &'a str,
}

impl Checker<'_> {
    fn fail(&self, key: &str, message: String, fix: impl Into<String>) -> Error {
        let (line, column) = if key.is_empty() {
            (None, None)
        } else {
            key_position(self.text, key)
        };
        Error::Manifest {
            file: self.path.to_owned(),
            line,
            column,
            message,
            fix: fix.into(),
        }
    }
}

/// Is this a valid env var name?
pub fn valid_env_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Does this env var name say it carries a credential?
pub fn credential_like_name(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|h| k.contains(h))
}

/// Who wrote an env map: the operator (a bottle or a home agent) or a
/// repository (a repo agent, which may set only literal values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvAuthor {
    Operator,
    Repo,
}

fn validate_env(
    path: &Utf8Path,
    text: &str,
    env: &BTreeMap<String, EnvValue>,
    author: EnvAuthor,
) -> Result<()> {
    let ck = Checker { path, text };
    for (k, v) in env {
        if !valid_env_name(k) {
            return Err(ck.fail(
                k,
                format!("`env.{k}` is not a valid environment variable name"),
                "use letters, digits and `_`, not starting with a digit",
            ));
        }
        let raw = v.raw();
        let refs = crate::plan::env_refs(raw).map_err(|why| {
            ck.fail(
                k,
                format!("`env.{k}`: {why}"),
                "write host variables as ${NAME}",
            )
        })?;
        if author == EnvAuthor::Repo && (v.from_host() || matches!(v, EnvValue::Secret { .. })) {
            let what = if raw.starts_with('?') {
                "asks the operator a question (`?...`)".to_owned()
            } else if refs.is_empty() {
                "is marked secret".to_owned()
            } else {
                format!("reads host variable `{}`", refs[0])
            };
            return Err(ck.fail(
                k,
                format!("`env.{k}` {what}, but this agent comes from the repository, which may set only literal values"),
                format!("host variables and ?prompt come only from $BOTTLE_HOME: set {k} in the bottle ($BOTTLE_HOME/bottles/) or in a home agent ($BOTTLE_HOME/agents/), or write a literal value"),
            ));
        }
        if !v.from_host() {
            if let Some(rule) = bottle_dlp::pattern_hit(raw) {
                return Err(ck.fail(
                    k,
                    format!("`env.{k}` is a literal credential (matches `{rule}`); the agent would hold it and anyone who reads this file has it"),
                    format!("export it on the host and write {k} = {{ secret = \"${{{k}}}\" }} in $BOTTLE_HOME; better, let an egress route's auth hold an API token so the agent never sees it"),
                ));
            }
        }
        match v {
            EnvValue::Secret { secret } if !secret.starts_with('?') && refs.is_empty() => {
                return Err(ck.fail(
                    k,
                    format!("`env.{k} = {{ secret = ... }}` holds a literal value, not a host variable"),
                    format!("keep secrets out of manifests: export it on the host and write {k} = {{ secret = \"${{{k}}}\" }}"),
                ));
            }
            EnvValue::Plain(_) if !refs.is_empty() && credential_like_name(k) => {
                return Err(ck.fail(
                    k,
                    format!("`env.{k}` looks like a credential but is not marked secret, so the bottle would not hold it (it could be sent out)"),
                    format!("write {k} = {{ secret = \"{raw}\" }} to hold it, or rename the variable if it is not a secret"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Is this a valid route host (`api.example.com` or `*.example.com`)?
pub fn valid_route_host(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.contains('.') | (name == "localhost")
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// HTTP methods a route may list.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

fn validate_token(ck: &Checker<'_>, key: &str, token: &str) -> Result<()> {
    if token.starts_with('?') {
        return Ok(());
    }
    match crate::plan::env_refs(token) {
        Ok(refs) if refs.len() == 1 && token.trim() == format!("${{{}}}", refs[0]) => Ok(()),
        _ => Err(ck.fail(
            key,
            format!("`{key}` must be a host variable reference like \"${{API_TOKEN}}\" or \"?prompt\", not a literal value"),
            "keep secrets out of manifests: export the token on the host and write token = \"${NAME}\"",
        )),
    }
}

fn validate_scheme(ck: &Checker<'_>, scheme: &str, provider: bool) -> Result<()> {
    let ok = match scheme {
        "bearer" | "x-api-key" => true,
        "basic" => !provider,
        s => {
            !provider
                && s.strip_prefix("header:").is_some_and(|n| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
    };
    if ok {
        return Ok(());
    }
    let valid = if provider {
        "x-api-key, bearer"
    } else {
        "bearer, basic, x-api-key, header:<Name>"
    };
    Err(ck.fail(
        "scheme",
        format!("auth scheme `{scheme}` is not supported (valid: {valid})"),
        format!("use one of: {valid}"),
    ))
}

fn validate_glob(ck: &Checker<'_>, key: &str, pat: &str) -> Result<()> {
    globset::GlobBuilder::new(pat)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|e| {
            ck.fail(
                key,
                format!("`{pat}` is not a valid glob: {}", e.kind()),
                "fix the pattern (`*` within a segment, `**` across segments)",
            )
        })
}

fn validate_bottle(path: &Utf8Path, text: &str, b: &BottleFile) -> Result<()> {
    let ck = Checker { path, text };
    if let Some(backend) = &b.backend {
        if !KNOWN_BACKENDS.contains(&backend.as_str()) {
            return Err(ck.fail(
                "backend",
                format!("unknown backend `{backend}`"),
                format!("use one of: {}", KNOWN_BACKENDS.join(", ")),
            ));
        }
    }
    if let Some(p) = &b.agent_provider {
        if p.template.is_some() && p.dockerfile.is_some() {
            return Err(ck.fail(
                "dockerfile",
                "`agent_provider` sets both `template` and `dockerfile`".into(),
                "keep one: a built-in template or your own Dockerfile",
            ));
        }
        if let Some(df) = &p.dockerfile {
            let full = path.parent().unwrap_or(Utf8Path::new(".")).join(df);
            if !full.is_file() {
                return Err(ck.fail(
                    "dockerfile",
                    format!("`agent_provider.dockerfile` {full} does not exist"),
                    "fix the path (relative to the bottle file)",
                ));
            }
        }
        if let Some(a) = &p.auth {
            if !valid_route_host(&a.host) || a.host.starts_with("*.") {
                return Err(ck.fail(
                    "host",
                    format!("`agent_provider.auth.host` `{}` is not a host name", a.host),
                    "write a bare host like api.anthropic.com",
                ));
            }
            validate_scheme(&ck, &a.scheme, true)?;
            validate_token(&ck, "token", &a.token)?;
        }
    }
    if let Some(env) = &b.env {
        validate_env(path, text, env, EnvAuthor::Operator)?;
    }
    if let Some(g) = &b.git {
        let mut seen = BTreeSet::new();
        for r in g.remotes.iter().flatten() {
            if !valid_name(&r.name) {
                return Err(ck.fail(
                    "name",
                    format!("git remote name `{}` is not valid", r.name),
                    "use lowercase letters, digits, `-` and `_`",
                ));
            }
            if !seen.insert(r.name.clone()) {
                return Err(ck.fail(
                    "name",
                    format!("git remote `{}` is declared twice", r.name),
                    "give each remote a unique name",
                ));
            }
            let ssh = is_ssh_url(&r.url);
            if !ssh && !r.url.starts_with("https://") && !r.url.starts_with("file://") {
                return Err(ck.fail("url", format!("git remote `{}` has url `{}`, which is neither ssh nor https", r.name, r.url), "use ssh://git@host/owner/repo.git, git@host:owner/repo.git or https://host/owner/repo.git"));
            }
            if ssh && r.known_host_key.is_none() {
                return Err(ck.fail("url", format!("ssh remote `{}` has no `known_host_key`", r.name), "pin the server's host key: known_host_key = \"ssh-ed25519 AAAA...\" (from `ssh-keyscan <host>`, verified out of band)"));
            }
            if ssh && r.identity_file.is_none() {
                return Err(ck.fail("url", format!("ssh remote `{}` has no `identity_file`", r.name), "set identity_file = \"~/.ssh/deploy_key\" (the gate holds it; the agent never sees it)"));
            }
            if let Some(k) = &r.known_host_key {
                let parts: Vec<&str> = k.split_whitespace().collect();
                if parts.len() < 2
                    || !(parts[0].starts_with("ssh-") || parts[0].starts_with("ecdsa-"))
                {
                    return Err(ck.fail(
                        "known_host_key",
                        format!("`known_host_key` of `{}` is not a host key line", r.name),
                        "write it as \"ssh-ed25519 AAAA...\" (key type then base64)",
                    ));
                }
            }
            for p in r.push.iter().flatten() {
                if !p.starts_with("refs/") {
                    return Err(ck.fail(
                        "push",
                        format!(
                            "push pattern `{p}` of `{}` does not start with refs/",
                            r.name
                        ),
                        "write full ref globs, e.g. \"refs/heads/bot/*\"",
                    ));
                }
                validate_glob(&ck, "push", p)?;
            }
        }
    }
    if let Some(e) = &b.egress {
        if let Some(s) = &e.max_body_scan {
            units::parse_bytes(s)
                .map_err(|why| ck.fail("max_body_scan", why, "e.g. max_body_scan = \"1MiB\""))?;
        }
        for id in e.dlp_disable.iter().flatten() {
            let ok = !id.is_empty()
                && id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
            if !ok {
                return Err(ck.fail(
                    "dlp_disable",
                    format!("`{id}` is not a DLP rule id"),
                    "name rules by id, e.g. dlp_disable = [\"generic-api-key\"] (ids: docs/security.md)",
                ));
            }
        }
        for r in e.routes.iter().flatten() {
            if !valid_route_host(&r.host) {
                return Err(ck.fail(
                    "host",
                    format!(
                        "route host `{}` is not a host name or `*.domain` wildcard",
                        r.host
                    ),
                    "write a bare lowercase host like api.example.com (no scheme, port or path)",
                ));
            }
            for p in r.paths.iter().flatten() {
                if !p.starts_with('/') {
                    return Err(ck.fail(
                        "paths",
                        format!(
                            "path glob `{p}` of route `{}` does not start with /",
                            r.host
                        ),
                        "write paths like \"/v1/**\"",
                    ));
                }
                validate_glob(&ck, "paths", p)?;
            }
            for m in r.methods.iter().flatten() {
                if !METHODS.contains(&m.as_str()) {
                    return Err(ck.fail(
                        "methods",
                        format!("`{m}` is not an HTTP method"),
                        format!("use uppercase methods: {}", METHODS.join(", ")),
                    ));
                }
            }
            if let Some(a) = &r.auth {
                validate_scheme(&ck, &a.scheme, false)?;
                validate_token(&ck, "token", &a.token)?;
            }
        }
    }
    if let Some(s) = &b.supervise {
        for (k, v) in [
            ("grant_ttl", &s.grant_ttl),
            ("auto_deny_after", &s.auto_deny_after),
        ] {
            if let Some(v) = v {
                units::parse_duration(v).map_err(|why| {
                    ck.fail(
                        k,
                        format!("`supervise.{k}`: {why}"),
                        format!("e.g. {k} = \"30m\""),
                    )
                })?;
            }
        }
    }
    if let Some(r) = &b.resources {
        if let Some(c) = r.cpus {
            if !(c > 0.0 && c <= 1024.0) {
                return Err(ck.fail(
                    "cpus",
                    format!("`resources.cpus = {c}` is out of range"),
                    "use a positive number such as 2 or 0.5",
                ));
            }
        }
        if let Some(m) = &r.memory {
            let bytes = units::parse_bytes(m)
                .map_err(|why| ck.fail("memory", why, "e.g. memory = \"4GiB\""))?;
            if bytes < 64 << 20 {
                return Err(ck.fail(
                    "memory",
                    format!("`resources.memory = \"{m}\"` is below 64MiB"),
                    "give the agent at least 64MiB",
                ));
            }
        }
        if r.pids == Some(0) {
            return Err(ck.fail(
                "pids",
                "`resources.pids = 0` would forbid every process".into(),
                "use a limit such as 512",
            ));
        }
    }
    Ok(())
}

fn validate_merged(path: &Utf8Path, b: &BottleFile) -> Result<()> {
    let mut hosts = BTreeSet::new();
    for r in b.egress.iter().flat_map(|e| e.routes.iter().flatten()) {
        if !hosts.insert((r.host.clone(), r.port)) {
            return Err(Error::Manifest {
                file: path.to_owned(),
                line: None,
                column: None,
                message: format!("route host `{}` is listed twice", r.host),
                fix: "merge the two routes into one (list several paths/methods)".into(),
            });
        }
    }
    Ok(())
}

/// `git@host:path` or `ssh://…`.
pub fn is_ssh_url(url: &str) -> bool {
    url.starts_with("ssh://") || (!url.contains("://") && url.contains('@') && url.contains(':'))
}
