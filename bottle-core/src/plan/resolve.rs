//! [`resolve`] in named steps: backend, provider (image, prompt, entry
//! command, skills), env, egress routes and the provider's key, git,
//! supervise, resources; naming is in `identity`.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};

use super::env::{expand_tilde, interpolate};
use super::identity::{labels, names};
use super::{
    AuthScheme, BottlePlan, EgressPlan, EnvEntry, GitPlan, HostEnv, Identity, ImageSource, Ports,
    Prompter, ProviderPlan, RemotePlan, ResolveOptions, Resources, RouteAuthPlan, RoutePlan,
    Sources, SupervisePlan, AGENT_PROMPT_FILE, DEFAULT_BASE_IMAGE, PLACEHOLDER_TOKEN, PLAN_SCHEMA,
};
use crate::error::{Error, Result};
use crate::manifest::{
    BottleFile, EgressSection, EnvValue, GitSection, GitUser, LoadedAgent, LoadedBottle,
    ProviderAuth, ProviderSection, ResourcesSection, SuperviseSection, Template, KNOWN_BACKENDS,
};
use crate::secret::Secret;
use crate::units;

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
    let backend = backend(opts, b)?;
    let identity = opts
        .identity
        .clone()
        .unwrap_or_else(|| Identity::generate(&agent.name, &bottle.name));
    let id = identity.as_str();
    let secrets = Secrets { host, prompter };
    // the order of the steps is the order of `?prompt` questions
    let prov = b.agent_provider.clone().unwrap_or_default();
    let mut provider = provider(agent, bottle, &prov)?;
    let (mut env, mut held_env) = env(agent, bottle, &opts.env, &secrets)?;
    let eg = b.egress.clone().unwrap_or_default();
    let mut routes = routes(bottle.path(), &eg, &secrets)?;
    if let Some(a) = &prov.auth {
        let token = secrets.value("agent_provider.auth.token", &a.token, bottle.path())?;
        provider_auth(a, token, &mut routes);
        provider.auth_host = Some(a.host.clone());
        // the agent sees a placeholder; egress holds the real key
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
    let egress = egress(&eg, routes)?;
    let git = git(b.git.clone().unwrap_or_default(), &agent.name, id, host);
    let supervise = supervise(&b.supervise.clone().unwrap_or_default());
    let resources = resources(&b.resources.clone().unwrap_or_default());
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
        names: names(id),
        labels: labels(id, &agent.name, &bottle.name),
        provider,
        env,
        held_env,
        workspace: opts.cwd.clone(),
        egress,
        git,
        supervise,
        resources,
        ports: Ports {
            egress: 8888,
            git_gate: 9418,
            supervise: 9100,
        },
    })
}

/// `--backend`, else the bottle's, else the default; it must be known.
fn backend(opts: &ResolveOptions, b: &BottleFile) -> Result<String> {
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
    Ok(backend)
}

/// Where held values come from: `${VAR}` from the host, `?question` from
/// the prompter.
struct Secrets<'a> {
    host: &'a dyn HostEnv,
    prompter: &'a dyn Prompter,
}

impl Secrets<'_> {
    /// The value of `key` (written `token` in `file`): asked, or expanded
    /// from the host env.
    fn value(&self, key: &str, token: &str, file: &Utf8Path) -> Result<Secret> {
        if let Some(q) = token.strip_prefix('?') {
            let q = if q.is_empty() || q == "prompt" {
                format!("value for {key}")
            } else {
                q.to_owned()
            };
            self.prompter.ask(key, &q)
        } else {
            Ok(Secret::new(interpolate(token, key, file, self.host)?))
        }
    }
}

/// A manifest error with no position (`file` may be `<command line>`).
fn unplaced(file: impl Into<Utf8PathBuf>, message: String, fix: impl Into<String>) -> Error {
    Error::Manifest {
        file: file.into(),
        line: None,
        column: None,
        message,
        fix: fix.into(),
    }
}

/// The agent image and entry (its `auth_host` is set with the provider's
/// auth, if any).
fn provider(
    agent: &LoadedAgent,
    bottle: &LoadedBottle,
    prov: &ProviderSection,
) -> Result<ProviderPlan> {
    let image = match (&prov.template, &prov.dockerfile) {
        (_, Some(df)) => ImageSource::Dockerfile(
            bottle
                .path()
                .parent()
                .unwrap_or(Utf8Path::new("."))
                .join(df),
        ),
        (Some(t), None) => ImageSource::Template(*t),
        (None, None) => ImageSource::Template(Template::Shell),
    };
    let prompt = prompt(agent)?;
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
    Ok(ProviderPlan {
        image,
        base_image: prov
            .base_image
            .clone()
            .unwrap_or_else(|| DEFAULT_BASE_IMAGE.into()),
        command,
        prompt,
        auth_host: None,
        permission_prompts,
        skills,
    })
}

/// The agent's prompt text: inline, or read from its `prompt_file`.
fn prompt(agent: &LoadedAgent) -> Result<Option<String>> {
    Ok(match (&agent.file.prompt, &agent.file.prompt_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(pf)) => {
            // checked again here: the file may have changed since loading
            let p = crate::manifest::prompt_path(&agent.path, pf, agent.source)
                .map_err(|(message, fix)| unplaced(agent.path.clone(), message, fix))?;
            Some(std::fs::read_to_string(&p).map_err(|e| Error::io("reading", p, e))?)
        }
        _ => None,
    })
}

/// The agent's env: the bottle's, then the agent's over it, then `--env`;
/// and which keys the bottle holds.
fn env(
    agent: &LoadedAgent,
    bottle: &LoadedBottle,
    cli: &[(String, String)],
    secrets: &Secrets<'_>,
) -> Result<(BTreeMap<String, EnvEntry>, BTreeSet<String>)> {
    let mut env = BTreeMap::new();
    let mut held_env = BTreeSet::new();
    let sources: [(Option<&BTreeMap<String, EnvValue>>, &Utf8Path); 2] = [
        (bottle.file.env.as_ref(), bottle.path()),
        (agent.file.env.as_ref(), &agent.path),
    ];
    for (map, file) in sources {
        for (k, v) in map.into_iter().flatten() {
            let raw = v.raw();
            let entry = if v.from_host() {
                EnvEntry::Secret(secrets.value(k, raw, file)?)
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
    for (k, v) in cli {
        if !crate::manifest::valid_env_name(k) {
            return Err(unplaced(
                "<command line>",
                format!("`--env {k}=...`: not a valid variable name"),
                "use --env NAME=VALUE",
            ));
        }
        if let Some(rule) = bottle_dlp::pattern_hit(v) {
            return Err(unplaced(
                "<command line>",
                format!(
                    "`--env {k}=...` is a literal credential (matches `{rule}`); a secret on a command line ends up in shell history and process lists, and the agent would hold it"
                ),
                format!(
                    "export {k} on the host and reference it from the bottle: {k} = {{ secret = \"${{{k}}}\" }}"
                ),
            ));
        }
        held_env.remove(k);
        env.insert(k.clone(), EnvEntry::Literal(v.clone()));
    }
    Ok((env, held_env))
}

/// The bottle's egress routes, their credentials resolved.
fn routes(
    bottle_file: &Utf8Path,
    eg: &EgressSection,
    secrets: &Secrets<'_>,
) -> Result<Vec<RoutePlan>> {
    let mut routes = Vec::new();
    for r in eg.routes.iter().flatten() {
        if r.plaintext == Some(true) && r.port.is_none() {
            return Err(unplaced(
                bottle_file,
                format!(
                    "egress route `{}`: plaintext = true needs an explicit `port`",
                    r.host
                ),
                "name the plain-HTTP port (e.g. `port = 8080`), or drop `plaintext` and use https",
            ));
        }
        let auth = match &r.auth {
            Some(a) => Some(RouteAuthPlan {
                scheme: AuthScheme::parse(&a.scheme),
                secret_name: format!("route-{}", r.host.replace('*', "_")),
                token: secrets.value(
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
    Ok(routes)
}

/// The provider's API key (`token`) goes on the route to its host, a new
/// route when the bottle has none.
fn provider_auth(a: &ProviderAuth, token: Secret, routes: &mut Vec<RoutePlan>) {
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
}

/// The egress policy over `routes`, with its defaults.
fn egress(eg: &EgressSection, routes: Vec<RoutePlan>) -> Result<EgressPlan> {
    Ok(EgressPlan {
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
    })
}

/// Git identity (default: the agent's, at a `.invalid` address) and the
/// gated remotes (default push: `refs/heads/<identity>/*`).
fn git(g: GitSection, agent: &str, id: &str, host: &dyn HostEnv) -> GitPlan {
    let user = g.user.clone().unwrap_or(GitUser {
        name: format!("bottle agent {agent}"),
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
    GitPlan { user, remotes }
}

/// Supervise settings with their defaults (1h grants, auto-deny after 10m).
fn supervise(sv: &SuperviseSection) -> SupervisePlan {
    let dur = |v: &Option<String>, default: u64| -> u64 {
        v.as_deref()
            .and_then(|s| units::parse_duration(s).ok())
            .map(|d| d.as_secs())
            .unwrap_or(default)
    };
    SupervisePlan {
        enabled: sv.enabled.unwrap_or(true),
        grant_ttl_secs: dur(&sv.grant_ttl, 3600),
        auto_deny_after_secs: dur(&sv.auto_deny_after, 600),
    }
}

/// Limits with their defaults (2 CPUs, 4 GiB, 1024 processes).
fn resources(res: &ResourcesSection) -> Resources {
    Resources {
        cpus: res.cpus.unwrap_or(2.0),
        memory_bytes: res
            .memory
            .as_deref()
            .and_then(|m| units::parse_bytes(m).ok())
            .unwrap_or(4 << 30),
        pids: res.pids.unwrap_or(1024),
    }
}

/// A template's entry command. Claude Code: `--mcp-config` names the
/// supervise server's config, `--dangerously-skip-permissions` unless the
/// agent keeps permission prompts, the prompt as the positional initial
/// prompt. Codex: `--dangerously-bypass-approvals-and-sandbox` (its mode for
/// an externally sandboxed environment) unless prompts are kept, the prompt
/// positional; its MCP servers and the trusted workspace are in
/// `~/.codex/config.toml`. The prompt is read from the file prepare writes,
/// so long prompts never reach the container config.
pub(super) fn template_command(
    t: Template,
    has_prompt: bool,
    permission_prompts: bool,
) -> Vec<String> {
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
