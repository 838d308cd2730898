//! `bottle inspect <id>`: the policy a bottle runs under right now — its
//! egress routes (the bottle's own and the operator's grants, with expiry),
//! its git remotes with push rules and grants, its limits, and what its
//! agent asked for — read from the live files the sidecars enforce (the
//! state dir), not from the manifests (which may have changed since).

use std::time::SystemTime;

use bottle_core::{Error, Result};
use bottle_host::gate::GateConfig;
use bottle_host::routes::{self, PolicyView};
use bottle_host::supervise::{queue, Status};
use serde::Serialize;

use crate::Cli;

/// `bottle inspect` args.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Bottle identity.
    pub id: String,
    /// JSON output (schema_version 1).
    #[arg(long)]
    pub json: bool,
}

/// The plan a bottle was launched from, as `start`/`resume` save it
/// (`plan.json` in the state dir; secrets redacted).
pub const PLAN_FILE: &str = "plan.json";

/// `bottle inspect --json`.
#[derive(Debug, Serialize)]
pub struct Inspect {
    /// Schema version (1).
    pub schema_version: u32,
    /// Identity.
    pub identity: String,
    /// Agent.
    pub agent: String,
    /// Bottle (policy) name.
    pub bottle: String,
    /// Backend.
    pub backend: String,
    /// Runtime chosen at launch (`runc`, `runsc`, `vm`).
    pub runtime: String,
    /// `launching`, `running` or `stopped` (as recorded; `bottle ls` asks
    /// the engine).
    pub phase: String,
    /// Limits of the agent, from the launch plan (`None` for a bottle
    /// launched before plans were saved).
    pub limits: Option<Limits>,
    /// The live egress policy.
    pub egress: PolicyView,
    /// Git remotes and their push rules.
    pub git: Vec<Remote>,
    /// Live push grants.
    pub git_grants: Vec<GitGrant>,
    /// Capabilities approved and applied at the last resume.
    pub capabilities: Vec<String>,
    /// Requests waiting for the operator.
    pub pending_requests: Vec<String>,
}

/// Resource limits.
#[derive(Debug, Serialize)]
pub struct Limits {
    /// CPUs.
    pub cpus: f64,
    /// Memory bytes.
    pub memory_bytes: u64,
    /// Max processes.
    pub pids: u64,
}

/// One git remote.
#[derive(Debug, Serialize)]
pub struct Remote {
    /// Name.
    pub name: String,
    /// Upstream URL.
    pub url: String,
    /// May fetch.
    pub fetch: bool,
    /// Push rules: ref globs, with `force`/`delete` when allowed.
    pub push: Vec<String>,
}

/// One live push grant.
#[derive(Debug, Serialize)]
pub struct GitGrant {
    /// Remote.
    pub remote: String,
    /// Ref glob.
    pub pattern: String,
    /// Request id that granted it.
    pub grant: String,
    /// RFC 3339 expiry.
    pub expires_at: Option<String>,
}

fn push_rule(pattern: &str, force: bool, delete: bool) -> String {
    let mut s = pattern.to_owned();
    let extra: Vec<&str> = [(force, "force"), (delete, "delete")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

/// Collect the effective policy of bottle `id`.
pub fn collect(cli: &Cli, id: &str) -> Result<Inspect> {
    let home = super::home(cli)?;
    let id = super::ids::bottle(&home, id)?;
    let state = home.state(&id);
    if !state.path().is_dir() {
        return Err(Error::NoSuchBottle {
            identity: id.to_string(),
        });
    }
    let meta = state.read_metadata()?;
    let dir = state.path().as_std_path();
    let egress = routes::view(&queue::routes_path(dir)).map_err(|why| Error::State {
        identity: id.to_string(),
        why,
    })?;
    let gate_path = queue::gate_path(dir);
    let (git, git_grants) = if gate_path.exists() {
        let gate = GateConfig::load(&gate_path).map_err(|e| Error::State {
            identity: id.to_string(),
            why: e.to_string(),
        })?;
        let now = SystemTime::now();
        let remotes = gate
            .remotes
            .iter()
            .map(|r| Remote {
                name: r.name.clone(),
                url: r.url.clone(),
                fetch: r.fetch,
                push: r
                    .push
                    .iter()
                    .map(|p| push_rule(&p.pattern, p.force, p.delete))
                    .collect(),
            })
            .collect();
        let grants = gate
            .grants
            .iter()
            .filter(|g| g.is_live(now))
            .map(|g| GitGrant {
                remote: g.remote.clone(),
                pattern: push_rule(&g.pattern, g.force, g.delete),
                grant: g.grant.clone(),
                expires_at: g.expires_at.clone(),
            })
            .collect();
        (remotes, grants)
    } else {
        (Vec::new(), Vec::new())
    };
    let limits = std::fs::read_to_string(state.path().join(PLAN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|p| {
            let r = p.get("resources")?;
            Some(Limits {
                cpus: r.get("cpus")?.as_f64()?,
                memory_bytes: r.get("memory_bytes")?.as_u64()?,
                pids: r.get("pids")?.as_u64()?,
            })
        });
    let pending_requests = queue::list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.status == Status::Pending)
        .map(|r| format!("{} {}", r.id, r.kind.summary()))
        .collect();
    Ok(Inspect {
        schema_version: 1,
        identity: id.to_string(),
        agent: meta.agent,
        bottle: meta.bottle,
        backend: meta.backend,
        runtime: meta.runtime,
        phase: serde_json::to_value(meta.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        limits,
        egress,
        git,
        git_grants,
        capabilities: meta.capabilities,
        pending_requests,
    })
}

/// "until T (in 12m)" or "until T (expired)".
fn until(expires_at: &Option<String>) -> String {
    let Some(t) = expires_at else {
        return String::new();
    };
    let left = humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
        .ok()
        .map(|e| match e.duration_since(SystemTime::now()) {
            Ok(d) => format!(
                "in {}",
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                    .to_string()
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Err(_) => "expired".to_owned(),
        })
        .unwrap_or_else(|| "unreadable".to_owned());
    format!(" until {t} ({left})")
}

/// The text form.
pub fn text(i: &Inspect) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<11}{v}\n"));
    line(
        "identity",
        format!("{} ({}, {} {})", i.identity, i.phase, i.backend, i.runtime),
    );
    line("agent", format!("{} (bottle {})", i.agent, i.bottle));
    line(
        "limits",
        match &i.limits {
            Some(l) => format!(
                "{} cpus, {} MiB memory, {} processes",
                l.cpus,
                l.memory_bytes >> 20,
                l.pids
            ),
            None => "not recorded (launched by an older bottle)".to_owned(),
        },
    );
    line(
        "egress",
        format!(
            "dlp {}, request bodies scanned up to {} KiB; every other host refused",
            if i.egress.dlp { "on" } else { "off" },
            i.egress.max_body_scan >> 10
        ),
    );
    if i.egress.routes.is_empty() {
        s.push_str("  (no routes)\n");
    }
    for r in &i.egress.routes {
        let mut l = format!(
            "  {} {}",
            if r.grant.is_some() { "grant" } else { "route" },
            r.host
        );
        if let Some(p) = r.port {
            l.push_str(&format!(":{p}"));
        }
        if let Some(m) = &r.methods {
            l.push_str(&format!(" methods {}", m.join(",")));
        }
        if let Some(p) = &r.paths {
            l.push_str(&format!(" paths {}", p.join(" ")));
        }
        if r.allow_private {
            l.push_str(" (private addresses allowed)");
        }
        if let Some(a) = &r.auth {
            l.push_str(&format!(" (injects {a})"));
        }
        if let Some(g) = &r.grant {
            l.push_str(&format!(" [{g}]"));
        }
        l.push_str(&until(&r.expires_at));
        s.push_str(&l);
        s.push('\n');
    }
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<11}{v}\n"));
    if i.git.is_empty() {
        line("git", "no remotes".into());
    }
    for r in &i.git {
        line(
            "git",
            format!(
                "{} {} (fetch {}, push {})",
                r.name,
                r.url,
                if r.fetch { "yes" } else { "no" },
                if r.push.is_empty() {
                    "none".to_owned()
                } else {
                    r.push.join(", ")
                }
            ),
        );
    }
    for g in &i.git_grants {
        s.push_str(&format!(
            "  grant {} {} [{}]{}\n",
            g.remote,
            g.pattern,
            g.grant,
            until(&g.expires_at)
        ));
    }
    for c in &i.capabilities {
        s.push_str(&format!("{:<11}{c}\n", "capability"));
    }
    for p in &i.pending_requests {
        s.push_str(&format!("{:<11}{p}\n", "pending"));
    }
    s
}

/// `bottle inspect`.
pub fn run(cli: &Cli, a: &InspectArgs) -> Result<u8> {
    let i = collect(cli, &a.id)?;
    if a.json {
        crate::ui::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&i).expect("inspect serializes")
        ));
    } else {
        crate::ui::out(&text(&i));
    }
    Ok(0)
}
