//! `bottle plan <agent>`: print the resolved plan. No side effects: nothing
//! is asked (`?prompt` values show as placeholders) and nothing is written.

use bottle_core::plan::{EnvEntry, PlaceholderPrompt};
use bottle_core::{BottlePlan, Result};

use super::PlanFlags;
use crate::Cli;

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent name.
    #[arg(add = super::completions::agents())]
    pub agent: String,
    #[command(flatten)]
    pub flags: PlanFlags,
    /// Print the plan as JSON (schema_version 1; secrets redacted).
    #[arg(long)]
    pub json: bool,
}

/// Run `bottle plan`.
pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let lc = super::lifecycle(cli)?;
    let req = a.flags.request(cli, &a.agent)?;
    let plan = lc.resolve(&req, None, &PlaceholderPrompt)?;
    if a.json {
        crate::ui::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&plan).expect("plan serializes")
        ));
    } else {
        let mut text = summary(&plan);
        for n in lc.source_notes(&req, &plan) {
            text.push_str(&format!("{:<11}{n}\n", "note"));
        }
        crate::ui::out(&text);
    }
    Ok(0)
}

/// The human summary of a plan (also the start preflight).
pub fn summary(p: &BottlePlan) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<11}{v}\n"));
    line("agent", format!("{} ({})", p.agent, p.sources.agent));
    line("bottle", format!("{} ({})", p.bottle, p.sources.bottle[0]));
    line(
        "identity",
        format!("{} (preview; `start` picks a fresh one)", p.identity),
    );
    line(
        "backend",
        format!("{} (runtime {:?})", p.backend, p.runtime).to_lowercase(),
    );
    line(
        "image",
        format!("{} on {}", p.image_label(), p.provider.base_image),
    );
    if !p.provider.command.is_empty() {
        line("command", p.provider.command.join(" "));
    }
    if let Some(w) = &p.workspace {
        line("workspace", format!("{w} (copied into the image)"));
        match bottle_core::workspace::list(w).and_then(|l| l.git_credentials()) {
            Ok(found) if found.is_empty() => {}
            Ok(found) => line(
                "",
                format!(
                    "git credentials removed from the copy: {}",
                    found
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Err(e) => line(
                "",
                format!("the copy's git config could not be checked: {e}"),
            ),
        }
    }
    for (i, sk) in p.provider.skills.iter().enumerate() {
        let origin = match sk.origin {
            bottle_core::skills::SkillOrigin::Home => "home",
            bottle_core::skills::SkillOrigin::Repo => "repo",
        };
        line(
            if i == 0 { "skills" } else { "" },
            format!(
                "{} ({origin} {}) -> {}",
                sk.name,
                sk.source,
                sk.targets.join(", ")
            ),
        );
    }
    let env: Vec<String> = p
        .env
        .iter()
        .map(|(k, v)| match v {
            EnvEntry::Literal(_) => k.clone(),
            EnvEntry::Secret(_) if p.held_env.contains(k) => format!("{k} (secret, held)"),
            EnvEntry::Secret(_) => format!("{k} (from host)"),
        })
        .collect();
    line(
        "env",
        if env.is_empty() {
            "-".into()
        } else {
            env.join(", ")
        },
    );
    if p.egress.routes.is_empty() {
        line("egress", "nothing (default deny)".into());
    }
    for (i, r) in p.egress.routes.iter().enumerate() {
        let methods = if r.methods.is_empty() {
            "any method".into()
        } else {
            r.methods.join(",")
        };
        let paths = if r.paths.is_empty() {
            "any path".into()
        } else {
            r.paths.join(" ")
        };
        let auth = r
            .auth
            .as_ref()
            .map(|a| format!(", injects {}", a.scheme.as_manifest()))
            .unwrap_or_default();
        let private = if r.allow_private {
            ", private targets allowed"
        } else {
            ""
        };
        line(
            if i == 0 { "egress" } else { "" },
            format!("{} {methods} {paths}{auth}{private}", r.host),
        );
    }
    if p.git.remotes.is_empty() {
        line("git", "no remotes".into());
    }
    for (i, r) in p.git.remotes.iter().enumerate() {
        line(
            if i == 0 { "git" } else { "" },
            format!("{} {} push {}", r.name, r.url, r.push.join(" ")),
        );
    }
    line(
        "supervise",
        if p.supervise.enabled {
            format!(
                "on (grants last {}, unanswered requests denied after {})",
                bottle_core::units::format_duration(std::time::Duration::from_secs(
                    p.supervise.grant_ttl_secs
                )),
                bottle_core::units::format_duration(std::time::Duration::from_secs(
                    p.supervise.auto_deny_after_secs
                ))
            )
        } else {
            "off".into()
        },
    );
    line(
        "resources",
        format!(
            "{} cpus, {} MiB, {} pids",
            p.resources.cpus,
            p.resources.memory_bytes >> 20,
            p.resources.pids
        ),
    );
    s
}
