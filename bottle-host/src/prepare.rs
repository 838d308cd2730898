//! Host side of the sidecars: the [`Prepare`] impls that turn a
//! [`BottlePlan`] into files in the bottle's state dir and the [`Wiring`] a
//! backend needs.
//!
//! Layout in the bundle: [`crate::layout`] (state dir pieces mounted under
//! `/bottle` at the same relative path).
//!
//! The operator's decision-signing key (`operator/`) is never mounted.
//! Held secrets are one file each under `secrets/` (mode 600): route tokens,
//! the provider key, git deploy keys and `?prompt`/host-variable env values
//! (which the agent holds but egress refuses to let out). The agent gets
//! only non-secret wiring: proxy and CA env, a git config that rewrites each
//! remote to the gate, the supervise MCP config, and the CA certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bottle_core::plan::{BottlePlan, ImageSource};
use bottle_core::prepare::{
    AgentFile, Mount, Prepare, PrepareContext, Wiring, AGENT_CA_PATH, BUNDLE_ROOT,
};
use bottle_core::state::{atomic_write, create_private_dir};
use bottle_core::{Error, Result, Secret, StateDir, Template};
use camino::{Utf8Path, Utf8PathBuf};

use crate::access::{AccessKey, PROXY_USER};
use crate::bundle::{BundleConfig, DlpSection, EgressSection, GitGateSection, SuperviseSection};
use crate::gate::{GateConfig, Grant, PushRule, RemoteConfig};
use crate::routes::{AuthFile, RouteFile, RoutesFile};
use crate::supervise::SvConfig;

use crate::layout::{self, in_bundle as bundle_path};

fn ro(host: Utf8PathBuf, rel: &str) -> Mount {
    Mount {
        host,
        target: format!("{BUNDLE_ROOT}/{rel}"),
        read_only: true,
    }
}

fn rw(host: Utf8PathBuf, rel: &str) -> Mount {
    Mount {
        host,
        target: format!("{BUNDLE_ROOT}/{rel}"),
        read_only: false,
    }
}

/// Remove `path`; a missing one is fine.
fn remove_if_present(path: &Utf8Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("removing", path.to_owned(), e))
        }
        _ => Ok(()),
    }
}

fn io_err(action: &'static str, path: &Utf8Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |e| Error::io(action, path, e)
}

/// The held-secret files: route tokens, provider key, `?prompt`/host env
/// values, git deploy keys. Written mode 600 under `secrets/`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SecretsPrepare;

impl Prepare for SecretsPrepare {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn prepare(&self, plan: &BottlePlan, ctx: &PrepareContext<'_>) -> Result<Wiring> {
        let dir = ctx.state.secrets_dir();
        create_private_dir(&dir)?;
        let mut wanted = std::collections::BTreeSet::new();
        for (name, secret) in plan.held_secrets() {
            atomic_write(&dir.join(&name), secret.expose().as_bytes(), Some(0o600))?;
            wanted.insert(name);
        }
        for r in &plan.git.remotes {
            if let Some(key) = &r.identity_file {
                wanted.insert(git_key_name(&r.name));
                let bytes = std::fs::read(key).map_err(|e| {
                    Error::other(
                        format!("cannot read identity_file {key} of git remote `{}`: {e}", r.name),
                        "fix the path in the bottle's [[git.remotes]] (the gate holds this key; the agent never sees it)",
                    )
                })?;
                atomic_write(&dir.join(git_key_name(&r.name)), &bytes, Some(0o600))?;
            }
        }
        // resume: a secret the manifests no longer name is not held any more
        remove_stale(&dir, &wanted)?;
        Ok(Wiring {
            bundle_mounts: vec![ro(dir, layout::SECRETS_DIR)],
            ..Wiring::default()
        })
    }
}

/// Remove every entry of `dir` whose name is not in `wanted` (stale held
/// secrets after the manifests changed, and temp files of an interrupted
/// write).
fn remove_stale(dir: &Utf8Path, wanted: &std::collections::BTreeSet<String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io_err("listing", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if wanted.contains(&name) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            return Err(Error::io("removing a stale secret", dir.join(&name), e));
        }
    }
    Ok(())
}

fn git_key_name(remote: &str) -> String {
    format!("git-{remote}.key")
}

/// The egress proxy: per-bottle CA, `egress/routes.toml`, and the agent's
/// proxy and CA env.
#[derive(Debug, Default, Clone, Copy)]
pub struct EgressPrepare;

/// The `routes.toml` a plan says (no secret values: auth names a file in
/// the secrets dir; no grants).
pub fn routes_file(plan: &BottlePlan) -> RoutesFile {
    let listed = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    RoutesFile {
        identity: Some(plan.identity.to_string()),
        dlp: plan.egress.dlp,
        max_body_scan: usize::try_from(plan.egress.max_body_scan).unwrap_or(usize::MAX),
        secrets_dir: Some(bundle_path(layout::SECRETS_DIR)),
        routes: plan
            .egress
            .routes
            .iter()
            .map(|r| RouteFile {
                host: r.host.clone(),
                port: r.port,
                paths: listed(&r.paths),
                methods: listed(&r.methods),
                allow_private: r.allow_private,
                plaintext: r.plaintext,
                auth: r.auth.as_ref().map(|a| AuthFile {
                    scheme: a.scheme.as_manifest(),
                    secret: a.secret_name.clone(),
                }),
                ..RouteFile::default()
            })
            .collect(),
    }
}

/// The `routes.toml` text for a plan ([`routes_file`]).
pub fn routes_toml(plan: &BottlePlan) -> String {
    routes_file(plan).to_toml()
}

impl Prepare for EgressPrepare {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn prepare(&self, plan: &BottlePlan, ctx: &PrepareContext<'_>) -> Result<Wiring> {
        let ca = ctx.state.ca_dir();
        create_private_dir(&ca)?;
        crate::ca::generate_ca(ca.as_std_path()).map_err(io_err("writing the CA in", &ca))?;
        let routes = ctx.state.routes_path();
        // Every prepare (start and resume) writes the policy the manifests
        // say now; only the operator's unexpired grants are carried over.
        let mut file = routes_file(plan);
        file.routes.extend(live_route_grants(&routes));
        atomic_write(&routes, file.to_toml().as_bytes(), Some(0o644))?;
        copy_dlp_rules(plan, ctx.state)?;
        test_upstream_ca(ctx.state)?;
        let proxy = format!("http://{}:{}", ctx.bundle_host, plan.ports.egress);
        // The agent's proxy URL carries the access credential as its
        // password (off every command line: secret env); the plain URL
        // without it stays in the visible env, so a process that skips the
        // secret env gets a clear 407, never a way around the check.
        let key = access_key(ctx.state)?;
        let authed = Secret::new(format!(
            "http://{PROXY_USER}:{}@{}:{}",
            key.expose(),
            ctx.bundle_host,
            plan.ports.egress
        ));
        let mut env = BTreeMap::new();
        let mut secret_env = BTreeMap::new();
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.insert(k.to_owned(), proxy.clone());
            secret_env.insert(k.to_owned(), authed.clone());
        }
        // only the bundle itself bypasses the proxy (git-gate, supervise)
        env.insert("NO_PROXY".into(), ctx.bundle_host.clone());
        env.insert("no_proxy".into(), ctx.bundle_host.clone());
        for k in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "CURL_CA_BUNDLE",
        ] {
            env.insert(k.to_owned(), AGENT_CA_PATH.to_owned());
        }
        Ok(Wiring {
            bundle_mounts: vec![
                ro(ca.clone(), layout::CA_DIR),
                ro(ctx.state.egress_dir(), layout::EGRESS_DIR),
            ],
            agent_env: env,
            agent_secret_env: secret_env,
            agent_files: vec![AgentFile {
                host: ca.join(crate::ca::CERT_FILE),
                guest: AGENT_CA_PATH.to_owned(),
                mode: 0o644,
            }],
            ports: vec![plan.ports.egress],
            ..Wiring::default()
        })
    }
}

/// Test hook (host side only): the environment variable naming an extra
/// PEM trust root for egress's upstream TLS connections. The security suite
/// uses it to put a test-CA-signed HTTPS upstream behind the bottle's CA
/// (docs/security.md, "Test hooks"). The agent cannot set the operator's
/// environment nor reach `bundle.toml` (S8).
pub const TEST_UPSTREAM_CA_ENV: &str = "BOTTLE_TEST_UPSTREAM_CA";

/// File name of the test upstream trust root in the state's `egress/` dir.
const TEST_UPSTREAM_CA_FILE: &str = "test-upstream-ca.pem";

/// Copy `$BOTTLE_TEST_UPSTREAM_CA` into the state's `egress/` dir (or remove
/// a copy a previous prepare left when the variable is unset now).
fn test_upstream_ca(state: &StateDir) -> Result<()> {
    let dest = state.egress_dir().join(TEST_UPSTREAM_CA_FILE);
    match std::env::var_os(TEST_UPSTREAM_CA_ENV) {
        Some(src) if !src.is_empty() => {
            let src = PathBuf::from(src);
            let pem = std::fs::read(&src).map_err(|e| {
                Error::other(
                    format!("cannot read {TEST_UPSTREAM_CA_ENV}={}: {e}", src.display()),
                    format!(
                        "unset {TEST_UPSTREAM_CA_ENV} (a test-only hook) or point it at a PEM file"
                    ),
                )
            })?;
            eprintln!(
                "warning: {TEST_UPSTREAM_CA_ENV} is set: this bottle's egress also trusts {} for upstream TLS (a test-only hook)",
                src.display()
            );
            atomic_write(&dest, &pem, Some(0o644))
        }
        _ => match std::fs::remove_file(&dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", dest, e)),
        },
    }
}

/// The operator's DLP rule files (`$BOTTLE_HOME/dlp/*.toml`), checked with
/// the bottle's `dlp_disable`, copied into `egress/dlp/` for the bundle
/// (which loads them for egress and git-gate alike). A broken file or an
/// unknown id refuses the start with the file, line and rule.
fn copy_dlp_rules(plan: &BottlePlan, state: &StateDir) -> Result<()> {
    let dest = state.dlp_rules_dir();
    let src = state.home_root().map(|h| h.join("dlp"));
    check_dlp_rules(src.as_deref(), &plan.egress.dlp_disable)?;
    create_private_dir(&dest)?;
    // a restart copies afresh: drop files the operator removed
    if let Ok(old) = bottle_dlp::rules::rule_files(dest.as_std_path()) {
        for f in old {
            let _ = std::fs::remove_file(f);
        }
    }
    let files = match &src {
        Some(src) => bottle_dlp::rules::rule_files(src.as_std_path()).map_err(dlp_error)?,
        None => Vec::new(),
    };
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read(&f).map_err(|e| {
            Error::io(
                "reading",
                Utf8PathBuf::from(f.to_string_lossy().into_owned()),
                e,
            )
        })?;
        atomic_write(&dest.join(name), &text, Some(0o644))?;
    }
    Ok(())
}

/// Check the rule files in `dir` (built-ins + `*.toml`) and `disable`
/// (`bottle check` and start use this). The error names file, line, rule.
pub fn check_dlp_rules(dir: Option<&Utf8Path>, disable: &[String]) -> Result<()> {
    let no_files = match dir {
        None => true,
        Some(d) => bottle_dlp::rules::rule_files(d.as_std_path())
            .map_err(dlp_error)?
            .is_empty(),
    };
    if no_files && disable.is_empty() {
        // the built-in set alone, which its own tests compile
        return Ok(());
    }
    bottle_dlp::RuleSet::load(dir.map(Utf8Path::as_std_path), disable)
        .map(|_| ())
        .map_err(dlp_error)
}

fn dlp_error(e: bottle_dlp::RuleError) -> Error {
    if e.file == "dlp_disable" {
        return Error::other(
            format!("egress.dlp_disable: {e}"),
            "name a rule id from docs/security.md or from a file in $BOTTLE_HOME/dlp",
        );
    }
    Error::Manifest {
        file: Utf8PathBuf::from(e.file.clone()),
        line: e.line,
        column: None,
        message: match &e.rule {
            Some(r) => format!("DLP rule `{r}`: {}", e.message),
            None => format!("DLP rule file: {}", e.message),
        },
        fix: "fix or remove the file in $BOTTLE_HOME/dlp (gitleaks rule format; see docs/security.md)".into(),
    }
}

/// The unexpired grant routes of the `routes.toml` at `old`, without any
/// credential (a grant never carries one). A file that cannot be read
/// contributes nothing.
fn live_route_grants(old: &Utf8Path) -> Vec<RouteFile> {
    let now = std::time::SystemTime::now();
    match RoutesFile::read(old.as_std_path()) {
        Ok(file) => file
            .map(|f| f.routes)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.grant.is_some() && !r.is_expired(now))
            .map(|r| RouteFile { auth: None, ..r })
            .collect(),
        Err(e) => {
            tracing::warn!(%e, "previous policy unreadable; no grants carried over");
            Vec::new()
        }
    }
}

/// The unexpired `[[grants]]` of the `gate.toml` at `old`. A file that
/// cannot be read contributes nothing.
fn live_git_grants(old: &Utf8Path) -> Vec<Grant> {
    let now = std::time::SystemTime::now();
    match GateConfig::read(old.as_std_path()) {
        Ok(file) => file
            .map(|f| f.grants)
            .unwrap_or_default()
            .into_iter()
            .filter(|g| !g.is_expired(now))
            .collect(),
        Err(e) => {
            tracing::warn!(%e, "previous policy unreadable; no grants carried over");
            Vec::new()
        }
    }
}

/// The pinned `known_hosts` line for an ssh URL, if it is one.
pub fn known_hosts_line(url: &str, key: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit('@').next()?;
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
                (h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)
            }
            _ => (hostport.trim_matches(['[', ']']).to_owned(), 22u16),
        }
    } else if !url.contains("://") {
        let (userhost, _) = url.split_once(':')?;
        (userhost.rsplit('@').next()?.to_owned(), 22)
    } else {
        return None;
    };
    let key = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    Some(if port == 22 {
        format!("{host} {key}")
    } else {
        format!("[{host}]:{port} {key}")
    })
}

/// The git gate: `git/gate.toml`, `git/known_hosts` (only the pinned keys),
/// the mirrors dir, and the agent's git config.
#[derive(Debug, Default, Clone, Copy)]
pub struct GitGatePrepare;

impl Prepare for GitGatePrepare {
    fn name(&self) -> &'static str {
        "git-gate"
    }

    fn prepare(&self, plan: &BottlePlan, ctx: &PrepareContext<'_>) -> Result<Wiring> {
        let dir = ctx.state.git_dir();
        let mirrors = dir.join("mirrors");
        create_private_dir(&dir)?;
        create_private_dir(&mirrors)?;
        let known_hosts: Vec<String> = plan
            .git
            .remotes
            .iter()
            .filter_map(|r| known_hosts_line(&r.url, r.known_host_key.as_deref()?))
            .collect();
        atomic_write(
            &ctx.state.path().join(layout::KNOWN_HOSTS),
            format!("{}\n", known_hosts.join("\n")).as_bytes(),
            Some(0o644),
        )?;
        let gate_path = dir.join("gate.toml");
        {
            let mut gate = GateConfig::new(
                bundle_path(layout::MIRRORS_DIR),
                bundle_path(layout::SECRETS_DIR),
            );
            gate.identity = Some(plan.identity.to_string());
            gate.remotes = plan
                .git
                .remotes
                .iter()
                .map(|r| RemoteConfig {
                    name: r.name.clone(),
                    url: r.url.clone(),
                    identity_file: r.identity_file.as_ref().map(|_| {
                        bundle_path(&format!(
                            "{}/{}",
                            layout::SECRETS_DIR,
                            git_key_name(&r.name)
                        ))
                    }),
                    known_hosts: r
                        .known_host_key
                        .as_ref()
                        .map(|_| bundle_path(layout::KNOWN_HOSTS)),
                    push: r.push.iter().map(PushRule::new).collect(),
                    fetch: r.fetch,
                    serve_stale: false,
                })
                .collect();
            gate.validate().map_err(|why| {
                Error::other(
                    format!("git gate config: {why}"),
                    "fix [[git.remotes]] in the bottle",
                )
            })?;
            // Every prepare (start and resume) writes the rules the
            // manifests say now, plus the unexpired grants for remotes that
            // still exist.
            let carried = live_git_grants(&gate_path);
            gate.grants.extend(
                carried
                    .into_iter()
                    .filter(|g| gate.remotes.iter().any(|r| r.name == g.remote)),
            );
            gate.validate().map_err(|why| {
                Error::other(format!("git gate config: {why}"), "this is a bug in bottle")
            })?;
            gate.save(gate_path.as_std_path())
                .map_err(io_err("writing", &gate_path))?;
        }

        // the agent's git config: every remote URL goes through the gate
        let mut gitconfig = format!(
            "[user]\n\tname = {}\n\temail = {}\n[push]\n\tdefault = current\n[init]\n\tdefaultBranch = main\n",
            plan.git.user.name, plan.git.user.email
        );
        // the gate's first path segment is the access credential (git://
        // has no auth of its own); the file is the agent's, never argv
        let key = access_key(ctx.state)?;
        for r in &plan.git.remotes {
            gitconfig.push_str(&format!(
                "[url \"git://{}:{}/{}/{}.git\"]\n\tinsteadOf = {}\n",
                ctx.bundle_host,
                plan.ports.git_gate,
                key.expose(),
                r.name,
                r.url
            ));
        }
        let agent_dir = ctx.state.agent_dir();
        create_private_dir(&agent_dir)?;
        let gc_path = agent_dir.join("gitconfig");
        atomic_write(&gc_path, gitconfig.as_bytes(), Some(0o600))?;
        let mut w = Wiring {
            bundle_mounts: vec![ro(dir, layout::GIT_DIR), rw(mirrors, layout::MIRRORS_DIR)],
            agent_files: vec![AgentFile {
                host: gc_path,
                guest: "~/.gitconfig".into(),
                mode: 0o644,
            }],
            ..Wiring::default()
        };
        if !plan.git.remotes.is_empty() {
            w.ports.push(plan.ports.git_gate);
        }
        Ok(w)
    }
}

/// Supervise: `supervise/sv.toml` (with the operator's public key), the
/// queue dir, and the agent's MCP client config.
#[derive(Debug, Default, Clone, Copy)]
pub struct SupervisePrepare;

impl Prepare for SupervisePrepare {
    fn name(&self) -> &'static str {
        "supervise"
    }

    fn prepare(&self, plan: &BottlePlan, ctx: &PrepareContext<'_>) -> Result<Wiring> {
        let state = ctx.state.path().as_std_path();
        let queue = ctx.state.queue_dir();
        create_private_dir(&queue)?;
        create_private_dir(&ctx.state.supervise_dir())?;
        if !plan.supervise.enabled {
            return Ok(Wiring {
                bundle_mounts: vec![rw(queue, layout::QUEUE_DIR)],
                ..Wiring::default()
            });
        }
        let public = crate::supervise::queue::init(state).map_err(|e| {
            Error::other(
                format!("supervise operator key: {e}"),
                "check the state dir's permissions",
            )
        })?;
        let mut allowed_hosts = SvConfig::default().allowed_hosts;
        if !allowed_hosts.contains(&ctx.bundle_host) {
            allowed_hosts.push(ctx.bundle_host.clone());
        }
        allowed_hosts.push(format!("{}:{}", ctx.bundle_host, plan.ports.supervise));
        let sv = SvConfig {
            identity: Some(plan.identity.to_string()),
            operator_key: Some(public),
            routes: Some(bundle_path(layout::ROUTES)),
            gate: Some(bundle_path(layout::GATE)),
            secrets_dir: Some(bundle_path(layout::SECRETS_DIR)),
            grant_ttl: std::time::Duration::from_secs(plan.supervise.grant_ttl_secs),
            auto_deny_after: std::time::Duration::from_secs(plan.supervise.auto_deny_after_secs),
            allowed_hosts,
            ..SvConfig::default()
        };
        let sv_path = ctx.state.supervise_dir().join("sv.toml");
        sv.save(sv_path.as_std_path()).map_err(|e| {
            Error::other(
                format!("writing {sv_path}: {e}"),
                "check the state dir's permissions",
            )
        })?;

        let url = format!("http://{}:{}/mcp", ctx.bundle_host, plan.ports.supervise);
        let agent_dir = ctx.state.agent_dir();
        create_private_dir(&agent_dir)?;
        let mut files = Vec::new();
        let key = access_key(ctx.state)?;
        let claude = claude_user_config(&url, &key);
        let codex = codex_config(&url, &key, plan.provider.permission_prompts);
        let template = match &plan.provider.image {
            ImageSource::Template(t) => Some(*t),
            ImageSource::Dockerfile(_) => None,
        };
        if matches!(template, Some(Template::Claude) | None) {
            let p = agent_dir.join("claude-mcp.json");
            atomic_write(
                &p,
                serde_json::to_string_pretty(&claude)
                    .expect("json")
                    .as_bytes(),
                Some(0o600),
            )?;
            files.push(AgentFile {
                host: p.clone(),
                guest: "~/.claude.json".into(),
                mode: 0o644,
            });
            // the same servers again for the entry command's `--mcp-config`
            files.push(AgentFile {
                host: p,
                guest: "~/.bottle/mcp.json".into(),
                mode: 0o644,
            });
        }
        if matches!(template, Some(Template::Codex) | None) {
            let p = agent_dir.join("codex-config.toml");
            atomic_write(&p, codex.as_bytes(), Some(0o600))?;
            files.push(AgentFile {
                host: p,
                guest: "~/.codex/config.toml".into(),
                mode: 0o644,
            });
        }
        let mut env = BTreeMap::new();
        env.insert("BOTTLE_MCP_URL".to_owned(), url);
        // for the agent's own MCP clients: `Authorization: Bearer $BOTTLE_ACCESS_KEY`
        let secret_env = BTreeMap::from([(
            "BOTTLE_ACCESS_KEY".to_owned(),
            Secret::new(key.expose().to_owned()),
        )]);
        Ok(Wiring {
            bundle_mounts: vec![
                ro(ctx.state.supervise_dir(), layout::SUPERVISE_DIR),
                rw(queue, layout::QUEUE_DIR),
            ],
            agent_env: env,
            agent_secret_env: secret_env,
            agent_files: files,
            ports: vec![plan.ports.supervise],
            ..Wiring::default()
        })
    }
}

/// Claude Code's user config (`~/.claude.json`): the supervise MCP server,
/// and the workspace already trusted and onboarded so an unattended run
/// never stops at a trust dialog.
fn claude_user_config(url: &str, key: &AccessKey) -> serde_json::Value {
    let bearer = format!("Bearer {}", key.expose());
    serde_json::json!({
        "mcpServers": { "bottle-supervise": {
            "type": "http",
            "url": url,
            "headers": { "Authorization": bearer }
        } },
        "hasCompletedOnboarding": true,
        "projects": {
            WORKSPACE_IN_AGENT: {
                "hasTrustDialogAccepted": true,
                "hasCompletedProjectOnboarding": true
            }
        }
    })
}

/// Codex's `~/.codex/config.toml`: the supervise MCP server, the workspace
/// trusted, and (unless the agent keeps permission prompts) no approvals and
/// no inner sandbox: the bottle is the boundary.
fn codex_config(url: &str, key: &AccessKey, permission_prompts: bool) -> String {
    let mut s = String::new();
    if !permission_prompts {
        s.push_str("approval_policy = \"never\"\nsandbox_mode = \"danger-full-access\"\n\n");
    }
    s.push_str(&format!(
        "[mcp_servers.bottle-supervise]\nurl = \"{url}\"\nhttp_headers = {{ \"Authorization\" = \"Bearer {}\" }}\n\n[projects.\"{WORKSPACE_IN_AGENT}\"]\ntrust_level = \"trusted\"\n",
        key.expose()
    ));
    s
}

/// The workspace inside the agent (the templates' `WORKDIR`).
const WORKSPACE_IN_AGENT: &str = "/home/agent/workspace";

/// The credential file's name in `access/`.
pub const ACCESS_KEY_FILE: &str = "key";

/// The bottle's access credential (`access/key`, mode 600): made on the
/// first prepare and kept on resume, since a resumed agent still carries
/// it in its wiring. A file that does not hold one is replaced.
pub fn access_key(state: &StateDir) -> Result<AccessKey> {
    let dir = state.access_dir();
    create_private_dir(&dir)?;
    let path = dir.join(ACCESS_KEY_FILE);
    if let Ok(key) = AccessKey::load(path.as_std_path()) {
        return Ok(key);
    }
    let key = AccessKey::generate();
    atomic_write(&path, key.expose().as_bytes(), Some(0o600))?;
    Ok(key)
}

/// Every sidecar's Prepare in order, then `bundle.toml` and the audit dir.
pub fn prepare_all(plan: &BottlePlan, ctx: &PrepareContext<'_>) -> Result<Wiring> {
    let mut wiring = Wiring::default();
    let steps: [&dyn Prepare; 4] = [
        &SecretsPrepare,
        &EgressPrepare,
        &GitGatePrepare,
        &SupervisePrepare,
    ];
    for p in steps {
        wiring.merge(p.prepare(plan, ctx)?);
    }
    access_key(ctx.state)?;
    wiring
        .bundle_mounts
        .push(ro(ctx.state.access_dir(), layout::ACCESS_DIR));
    let audit = ctx.state.audit_dir();
    create_private_dir(&audit)?;
    wiring.bundle_mounts.push(rw(audit, layout::AUDIT_DIR));
    // The readiness marker: a stale one (a resumed bottle) must not answer
    // for the bundle about to start.
    // Readable by the agent too (read-only `/run/bottle`, where its command
    // waits for the marker): it holds nothing but the marker.
    let run = ctx.state.run_dir();
    create_private_dir(&run)?;
    bottle_core::state::set_mode(&run, 0o755)?;
    remove_if_present(&ctx.state.bundle_ready_path())?;
    wiring.bundle_mounts.push(rw(run, layout::RUN_DIR));
    if let Some(prompt) = &plan.provider.prompt {
        let p = ctx.state.agent_dir().join("prompt.md");
        atomic_write(&p, prompt.as_bytes(), Some(0o644))?;
        wiring.agent_files.push(AgentFile {
            host: p,
            guest: "~/.bottle/prompt.md".into(),
            mode: 0o644,
        });
    }
    write_bundle_config(plan, ctx.state)?;
    wiring.bundle_mounts.push(Mount {
        host: ctx.state.bundle_config_path(),
        target: bundle_path(layout::BUNDLE).display().to_string(),
        read_only: true,
    });
    wiring.bundle_args = vec![
        "run".into(),
        "--config".into(),
        bundle_path(layout::BUNDLE).display().to_string(),
    ];
    Ok(wiring)
}

/// Write `bundle.toml`: which daemons run, where they listen, and where
/// their files are inside the bundle.
pub fn write_bundle_config(plan: &BottlePlan, state: &StateDir) -> Result<()> {
    let any = |port: u16| std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let config = BundleConfig {
        identity: plan.identity.to_string(),
        audit: bundle_path(layout::AUDIT),
        audit_rotation: None,
        egress: Some(EgressSection {
            listen: any(plan.ports.egress),
            routes: bundle_path(layout::ROUTES),
            ca_dir: bundle_path(layout::CA_DIR),
            secrets_dir: Some(bundle_path(layout::SECRETS_DIR)),
            max_connections: None,
            max_buffered_bytes: None,
            upstream_ca: state
                .egress_dir()
                .join(TEST_UPSTREAM_CA_FILE)
                .exists()
                .then(|| bundle_path(&format!("{}/{TEST_UPSTREAM_CA_FILE}", layout::EGRESS_DIR))),
        }),
        git_gate: (!plan.git.remotes.is_empty()).then(|| GitGateSection {
            listen: any(plan.ports.git_gate),
            config: bundle_path(layout::GATE),
            hook_program: None,
        }),
        supervise: plan.supervise.enabled.then(|| SuperviseSection {
            listen: any(plan.ports.supervise),
            config: bundle_path(layout::SV),
            queue: bundle_path(layout::QUEUE_DIR),
        }),
        access_key: Some(bundle_path(&format!(
            "{}/{ACCESS_KEY_FILE}",
            layout::ACCESS_DIR
        ))),
        dlp: Some(DlpSection {
            rules_dir: Some(bundle_path(layout::DLP_RULES_DIR)),
            disable: plan.egress.dlp_disable.clone(),
        }),
        ready_file: Some(bundle_path(layout::BUNDLE_READY)),
    };
    let path = state.bundle_config_path();
    config.save(path.as_std_path()).map_err(|e| {
        Error::other(
            format!("writing {path}: {e}"),
            "check the state dir's permissions",
        )
    })
}

/// One approved capability request and whether it changed the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedCapability {
    /// Request id.
    pub id: String,
    /// `kind: detail`.
    pub summary: String,
    /// What it set (`memory limit 8 GiB (… bytes)`), or why it was not
    /// applied (a package or a tool must be added to the bottle's image by
    /// the operator; a resource detail that does not parse).
    pub outcome: Result<String, String>,
}

/// Apply a bottle's approved capability requests to its plan (SPEC §5:
/// recorded, applied on resume). Resource kinds (`memory`, `cpu`, `pids`)
/// change the limits, read by [`crate::supervise::parse_capability`];
/// anything else is returned with `outcome: Err(..)`.
pub fn apply_capabilities(
    plan: &mut BottlePlan,
    state: &std::path::Path,
) -> Vec<AppliedCapability> {
    use crate::supervise::RequestKind;
    let approved = crate::supervise::queue::approved_capabilities(state).unwrap_or_default();
    let mut out = Vec::new();
    for req in approved {
        let RequestKind::Capability { kind, detail } = &req.kind else {
            continue;
        };
        let outcome = match crate::supervise::parse_capability(kind, detail) {
            Ok(Some(change)) => {
                change.apply(plan);
                Ok(change.describe())
            }
            Ok(None) => Err(format!(
                "a `{kind}` is not applied automatically: add it to the bottle's image or manifest"
            )),
            Err(why) => Err(format!("`{}` cannot be applied: {why}", detail.trim())),
        };
        out.push(AppliedCapability {
            id: req.id.clone(),
            summary: format!("{kind}: {}", detail.trim()),
            outcome,
        });
    }
    out
}
