//! `bottle init`: create `$BOTTLE_HOME` with a commented example bottle and
//! a `demo` agent. Never overwrites a file.

use bottle_core::state::create_private_dir;
use bottle_core::{Error, Result};

use crate::Cli;

/// The example bottle written by `bottle init`.
pub const EXAMPLE_BOTTLE: &str = r#"# A bottle is a sandbox policy: what the agent runs in, what it may reach,
# which git refs it may push. Only files in $BOTTLE_HOME/bottles/ are bottles:
# a repository can never widen its own sandbox.

# backend = "docker"          # or "smolmachines" (micro-VM; needs smolvm >= 1.8)
# runtime = "auto"            # docker: gVisor (runsc) when the engine has it, else runc
# extends = "base"            # inherit another bottle (maps merge, lists replace)

[agent_provider]
template = "shell"            # "shell", "claude" or "codex"; or dockerfile = "Dockerfile"
# base_image = "bottle-base:bookworm"   # the default; `cargo xtask seed-base` builds it
# The provider's own API key is held by the egress proxy and injected; the
# agent only ever sees a placeholder:
# auth = { host = "api.anthropic.com", scheme = "x-api-key", token = "${ANTHROPIC_API_KEY}" }

[env]
# Literal values, "${HOST_VAR}" (copied from your environment at start) or
# "?question" (asked at start, never stored). Mark a host value that is a
# secret so the bottle holds it (egress and the git gate refuse to let it
# out): DB_PASSWORD = { secret = "${DB_PASSWORD}" }. "?question" answers are
# always held. API tokens belong in egress route auth, deploy keys in git
# identity files; a literal credential here is refused.
EDITOR = "vi"
# TZ = "${TZ}"
# DB_PASSWORD = { secret = "${DB_PASSWORD}" }

[git]
user = { name = "bottle agent", email = "agent@bottle.invalid" }
# [[git.remotes]]
# name = "origin"
# url = "git@github.com:you/project.git"
# identity_file = "~/.ssh/bottle_deploy_key"      # held by the git gate only
# known_host_key = "ssh-ed25519 AAAA..."          # pinned; required for ssh
# push = ["refs/heads/bot/*"]                     # default: refs/heads/<identity>/*

[egress]
dlp = true                    # block requests that carry a held secret
max_body_scan = "1MiB"

[[egress.routes]]
host = "api.github.com"
paths = ["/repos/**"]
methods = ["GET"]
# auth = { scheme = "bearer", token = "${GITHUB_TOKEN}" }

[supervise]
enabled = true                # the agent may ask for more through MCP; only you grant it
grant_ttl = "1h"
auto_deny_after = "10m"

[resources]
cpus = 2
memory = "4GiB"
pids = 1024
"#;

/// The demo agent written by `bottle init`.
pub const DEMO_AGENT: &str = r#"# An agent names its bottle and says what to run.
bottle = "dev"
prompt = "Explore the workspace and report what you find."
# command = ["bash", "-l"]    # overrides the template's entry command
# [env]
# LOG_LEVEL = "debug"
"#;

/// `bottle init` args.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Also write a ready bottle + agent for Claude Code (`claude`) or
    /// Codex (`codex`): its API host routed, the key held by egress.
    #[arg(long, value_parser = ["claude", "codex"])]
    pub template: Option<String>,
}

/// The bottle and agent `bottle init --template <t>` writes.
pub fn template_files(t: &str) -> (String, String) {
    let (host, scheme, var, what) = match t {
        "codex" => ("api.openai.com", "bearer", "OPENAI_API_KEY", "Codex"),
        _ => (
            "api.anthropic.com",
            "x-api-key",
            "ANTHROPIC_API_KEY",
            "Claude Code",
        ),
    };
    let bottle = format!(
        r#"# {what} in a bottle. The image needs a Debian mirror and the npm
# registry at build time (`bottle check` says so up front).
[agent_provider]
template = "{t}"
# The provider's key is held by the egress proxy and injected on the way to
# {host}; the agent sees only a placeholder ${var}. A subscription login
# works the same way with a long-lived token (see the README, "Run Claude
# Code or Codex in a bottle").
auth = {{ host = "{host}", scheme = "{scheme}", token = "${{{var}}}" }}

[supervise]
enabled = true                # the agent asks through the bottle-supervise MCP server
grant_ttl = "1h"
auto_deny_after = "10m"

[resources]
cpus = 2
memory = "4GiB"
pids = 1024
"#
    );
    let agent = format!(
        r#"# {what}: started with the prompt below, the supervise MCP server
# registered, the workspace trusted, and its own permission prompts off
# (the bottle is the boundary). `permission_prompts = true` keeps them.
bottle = "{t}"
prompt = "Explore the workspace and report what you find."
# prompt_file = "task.md"
# permission_prompts = true
"#
    );
    (bottle, agent)
}

/// Run `bottle init`.
pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let home = super::home(cli)?;
    create_private_dir(home.root())?;
    create_private_dir(&home.bottles_dir())?;
    create_private_dir(&home.agents_dir())?;
    create_private_dir(&home.state_root())?;
    let mut files = vec![
        (
            home.bottles_dir().join("dev.toml"),
            EXAMPLE_BOTTLE.to_owned(),
        ),
        (home.agents_dir().join("demo.toml"), DEMO_AGENT.to_owned()),
    ];
    if let Some(t) = &a.template {
        let (bottle, agent) = template_files(t);
        files.push((home.bottles_dir().join(format!("{t}.toml")), bottle));
        files.push((home.agents_dir().join(format!("{t}.toml")), agent));
    }
    for (path, text) in files {
        if path.exists() {
            if !cli.quiet {
                println!("kept     {path} (already exists)");
            }
            continue;
        }
        std::fs::write(&path, text).map_err(|e| Error::io("writing", path.clone(), e))?;
        if !cli.quiet {
            println!("created  {path}");
        }
    }
    if !cli.quiet {
        match &a.template {
            Some(t) => {
                println!("\nnext: `bottle check`, then `bottle plan {t}` and `bottle start {t}`")
            }
            None => println!("\nnext: `bottle check`, then `bottle plan demo`"),
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_core::manifest::{bottle_from_text, EnvValue};

    /// The example's commented env forms parse as the README says: a plain
    /// `${VAR}` is not held, `{ secret = "${VAR}" }` is.
    #[test]
    fn example_env_forms_parse_as_documented() {
        let text: String = EXAMPLE_BOTTLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with("TZ =") || rest.starts_with("DB_PASSWORD =") => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let b = bottle_from_text("dev", "init/dev.toml".into(), &text).unwrap();
        let env = b.file.env.unwrap();
        assert_eq!(env["TZ"], EnvValue::Plain("${TZ}".into()));
        assert!(!env["TZ"].is_held());
        assert!(env["DB_PASSWORD"].is_held());
        assert!(!env["EDITOR"].is_held());
    }
}
