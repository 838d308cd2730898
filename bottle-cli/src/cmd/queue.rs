//! The permission queue: `bottle queue`, `approve`, `deny`.
//!
//! Thin over `bottle_host::supervise::queue` (sync, no tokio): requests
//! are found across every bottle's `state/<id>/queue/`; approving writes the
//! grant into the live policy file the bundle reloads and signs the decision
//! with the operator key that never leaves the host.

use std::path::Path;

use bottle_core::{Error, Identity, Result};
use bottle_host::supervise::queue;
use bottle_host::supervise::{Narrowing, Request, Status};
use serde::Serialize;

use crate::ui::table;
use crate::Cli;

/// `bottle queue` args.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// JSON output (schema_version 1).
    #[arg(long)]
    pub json: bool,
    /// Include decided requests, not only pending ones.
    #[arg(long, short)]
    pub all: bool,
}

/// `bottle approve` args.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// Request id (see `bottle queue`).
    #[arg(add = super::completions::requests())]
    pub req: String,
    /// How long the grant lasts, e.g. 30m (default: the bottle's grant_ttl).
    #[arg(long)]
    pub ttl: Option<String>,
    /// Narrow an egress request to these path globs.
    #[arg(long, num_args = 1..)]
    pub paths: Vec<String>,
    /// Narrow an egress request to these methods.
    #[arg(long, num_args = 1..)]
    pub methods: Vec<String>,
    /// Narrow a git push request to this ref pattern.
    #[arg(long = "ref")]
    pub ref_pattern: Option<String>,
    /// Let an egress grant reach private/loopback addresses (internal services).
    #[arg(long)]
    pub allow_private: bool,
}

/// `bottle deny` args.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    /// Request id.
    #[arg(add = super::completions::requests())]
    pub req: String,
    /// Reason shown to the agent.
    #[arg(long)]
    pub reason: Option<String>,
}

/// One row of `bottle queue --json`.
#[derive(Debug, Serialize)]
pub struct QueueEntry {
    /// Bottle identity.
    pub identity: String,
    /// The request with its effective status.
    #[serde(flatten)]
    pub request: Request,
}

/// `bottle queue --json` output.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    /// Schema version (1).
    pub schema_version: u32,
    /// Requests, oldest first per bottle.
    pub requests: Vec<QueueEntry>,
}

fn queue_err(e: queue::QueueError) -> Error {
    Error::other(
        e.to_string(),
        "check `bottle queue` for the request's current state",
    )
}

fn entries(cli: &Cli, all: bool) -> Result<Vec<QueueEntry>> {
    let home = super::home(cli)?;
    let mut out = Vec::new();
    for id in home.identities()? {
        let st = home.state(&id);
        let dir = st.path().as_std_path();
        if !dir.join("queue").is_dir() {
            continue;
        }
        // expired grants leave the policy files (the proxy ignores them already)
        let _ = queue::sweep_expired(dir);
        for r in queue::list(dir).map_err(queue_err)? {
            if all || r.status == Status::Pending {
                out.push(QueueEntry {
                    identity: id.to_string(),
                    request: r,
                });
            }
        }
    }
    Ok(out)
}

/// `bottle queue`.
pub fn queue(cli: &Cli, a: &QueueArgs) -> Result<u8> {
    let list = entries(cli, a.all)?;
    if a.json {
        let report = QueueReport {
            schema_version: 1,
            requests: list,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("queue serializes")
        );
        return Ok(0);
    }
    if list.is_empty() {
        println!("no {}requests", if a.all { "" } else { "pending " });
        return Ok(0);
    }
    let mut header = vec!["REQUEST", "BOTTLE", "STATUS", "ASKS FOR"];
    if a.all {
        header.extend(["GRANTED", "EXPIRES"]);
    }
    header.push("REASON");
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let r = &e.request;
            let mut row = vec![
                r.id.clone(),
                e.identity.clone(),
                r.status.to_string(),
                r.kind.summary(),
            ];
            if a.all {
                row.push(granted(r));
                row.push(r.expires_at.clone().unwrap_or_else(|| "-".into()));
            }
            row.push(r.reason.clone());
            row
        })
        .collect();
    print!("{}", table(&header, &rows));
    println!("\napprove: bottle approve <REQUEST> [--ttl 30m] [--paths ...]   deny: bottle deny <REQUEST> --reason ...");
    Ok(0)
}

/// What an approval granted: "as asked", the narrowed grant, or "-" for a
/// request that was not approved.
pub fn granted(r: &Request) -> String {
    match r.decision.as_ref().and_then(|d| d.grant.as_ref()) {
        Some(g) if r.status == Status::Approved || r.status == Status::Expired => {
            if *g == r.kind {
                "as asked".into()
            } else {
                g.summary()
            }
        }
        _ => "-".into(),
    }
}

fn find(cli: &Cli, req: &str) -> Result<(std::path::PathBuf, Request)> {
    super::ids::request(&super::home(cli)?, req)
}

fn identity_of(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .map(|s| {
            Identity::parse(s)
                .map(|i| i.to_string())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// `bottle approve`.
pub fn approve(cli: &Cli, a: &ApproveArgs) -> Result<u8> {
    let (dir, req) = find(cli, &a.req)?;
    let ttl = a
        .ttl
        .as_deref()
        .map(bottle_core::units::parse_duration)
        .transpose()
        .map_err(|why| Error::other(format!("--ttl: {why}"), "e.g. --ttl 30m"))?;
    let narrowing = Narrowing {
        paths: (!a.paths.is_empty()).then(|| a.paths.clone()),
        methods: (!a.methods.is_empty()).then(|| a.methods.clone()),
        ref_pattern: a.ref_pattern.clone(),
        allow_private: a.allow_private,
    };
    queue::approve(&dir, &req.id, ttl, &narrowing).map_err(queue_err)?;
    if !cli.quiet {
        let until = decision_expiry(&dir, &req.id);
        println!(
            "approved {} for {}: {}{}",
            req.id,
            identity_of(&dir),
            req.kind.summary(),
            until
                .as_ref()
                .map(|u| format!(" (until {u})"))
                .unwrap_or_default()
        );
        if let Some(what) = capability_effect(&req.kind, &identity_of(&dir), until.as_deref()) {
            println!("  {what}");
        }
    }
    Ok(0)
}

/// For a capability request: exactly what `resume` will do with it.
fn capability_effect(
    kind: &bottle_host::supervise::RequestKind,
    id: &str,
    until: Option<&str>,
) -> Option<String> {
    use bottle_host::supervise::{parse_capability, RequestKind};
    let RequestKind::Capability { kind, detail } = kind else {
        return None;
    };
    Some(match parse_capability(kind, detail) {
        Ok(Some(change)) => format!(
            "the next `bottle resume {id}`{} sets {} (stop it first if it is running)",
            until.map(|u| format!(" before {u}")).unwrap_or_default(),
            change.describe()
        ),
        Ok(None) => format!(
            "a `{kind}` is not applied automatically: add it to the bottle's image or manifest, then `bottle resume {id}`"
        ),
        Err(why) => format!(
            "`{}` cannot be applied ({why}): resume changes nothing; ask the agent to request it again",
            detail.trim()
        ),
    })
}

fn decision_expiry(dir: &Path, id: &str) -> Option<String> {
    queue::list(dir)
        .ok()?
        .into_iter()
        .find(|r| r.id == id)?
        .expires_at
}

/// `bottle deny`.
pub fn deny(cli: &Cli, a: &DenyArgs) -> Result<u8> {
    let (dir, req) = find(cli, &a.req)?;
    queue::deny(&dir, &req.id, a.reason.as_deref()).map_err(queue_err)?;
    if !cli.quiet {
        // denying an approved request takes its grant back at once
        let verb = if req.status == Status::Approved {
            "revoked"
        } else {
            "denied"
        };
        println!(
            "{verb} {} for {}: {}",
            req.id,
            identity_of(&dir),
            req.kind.summary()
        );
    }
    Ok(0)
}
