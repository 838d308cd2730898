//! Lifecycle commands of existing bottles: `ls`, `attach`, `exec`,
//! `stop`, `resume`, `rm` (`logs`, `gc` and `inspect` have their own
//! modules). Each finds the bottle's state dir, reads its `metadata.json`
//! and talks to the backend that launched it.

use bottle_core::backend::Probe;
use bottle_core::backend::{Backend, Running};
use bottle_core::state::{Metadata, Phase};
use bottle_core::{DuctRunner, Error, Home, Identity, Result, StateDir};
use serde::Serialize;

use super::PlanFlags;
use crate::ui::table;
use crate::Cli;

/// An identity argument.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Bottle identity (see `bottle ls`).
    #[arg(add = super::completions::bottles())]
    pub id: String,
}

/// `bottle exec` args.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Bottle identity.
    #[arg(add = super::completions::bottles())]
    pub id: String,
    /// Command and arguments (after `--`).
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// `bottle ls` args.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// A bottle's state, metadata and the backend that launched it.
pub struct Found {
    /// Its identity.
    pub id: Identity,
    /// Its state dir.
    pub state: StateDir,
    /// Its metadata.
    pub meta: Metadata,
    /// The backend named in its metadata.
    pub backend: Box<dyn Backend>,
}

/// The bottle `id` of `home` (a usage error when there is none).
pub fn find(home: &Home, id: &str) -> Result<Found> {
    let id = super::ids::bottle(home, id)?;
    let state = home.state(&id);
    if !state.path().is_dir() {
        return Err(Error::NoSuchBottle {
            identity: id.to_string(),
        });
    }
    let meta = state.read_metadata()?;
    let backend = crate::registry::get(&meta.backend)?;
    Ok(Found {
        id,
        state,
        meta,
        backend,
    })
}

/// Whether the backend's engine answers (`Backend::engine_answers`, a
/// cheap question to the engine); when it does not answer, the
/// backend's probe says why and what to do (exit 3) instead of the
/// engine's raw error or a misleading cleanup report.
pub fn engine_answers(backend: &dyn Backend) -> Result<()> {
    let answered = backend.engine_answers(&DuctRunner);
    if answered {
        return Ok(());
    }
    match backend.probe(&DuctRunner) {
        Probe::Unavailable { why, fix } => Err(Error::Unavailable {
            backend: backend.id().into(),
            why,
            fix,
        }),
        Probe::Ready { .. } => Ok(()),
    }
}

/// A stopped bottle has no containers: say so (and how to go on) before
/// asking the engine for them.
pub fn refuse_stopped(f: &Found, what: &str) -> Result<()> {
    if f.meta.phase != Phase::Stopped {
        return Ok(());
    }
    Err(Error::other(
        format!("{} is stopped: {what}", f.id),
        format!(
            "`bottle resume {}` relaunches it (`bottle logs {} --audit` shows its decisions)",
            f.id, f.id
        ),
    ))
}

/// The backend's handle on a found bottle.
pub fn handle(f: &Found) -> Box<dyn Running> {
    f.backend.handle(&f.meta, &f.state)
}

fn code(c: i32) -> u8 {
    u8::try_from(c).unwrap_or(1)
}

/// Whether a pid is alive (signal 0).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie (killed, not yet reaped) is dead.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    exists && !zombie
}

/// One row of `bottle ls --json` (schema_version 1).
#[derive(Debug, Serialize)]
pub struct LsRow {
    /// Identity.
    pub identity: String,
    /// Agent.
    pub agent: String,
    /// Bottle.
    pub bottle: String,
    /// Backend.
    pub backend: String,
    /// running | stopped | degraded | launching | crashed | unknown.
    pub state: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Seconds since creation.
    pub age_secs: u64,
    /// Pending permission requests.
    pub pending_requests: usize,
}

fn age_secs(created: &str) -> u64 {
    humantime::parse_rfc3339_weak(created)
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `bottle ls`.
pub fn ls(cli: &Cli, a: &LsArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let mut rows = Vec::new();
    // per backend: whether its engine answers (asked once)
    let mut answers: std::collections::BTreeMap<String, Option<Error>> = Default::default();
    // one question per backend for every bottle's health, where it can
    let mut all_health: std::collections::BTreeMap<
        String,
        Option<std::collections::BTreeMap<String, bottle_core::backend::Health>>,
    > = Default::default();
    for id in home.identities()? {
        let state = home.state(&id);
        let Ok(meta) = state.read_metadata() else {
            continue;
        };
        let st = match meta.phase {
            Phase::Stopped => "stopped".to_owned(),
            Phase::Launching if meta.owner_pid.is_some_and(pid_alive) => "launching".to_owned(),
            Phase::Launching => "crashed".to_owned(),
            _ => match crate::registry::get(&meta.backend) {
                // An engine that does not answer reports every container
                // as absent: that is "unknown", not "stopped".
                Ok(b)
                    if answers
                        .entry(meta.backend.clone())
                        .or_insert_with(|| engine_answers(&*b).err())
                        .is_some() =>
                {
                    "unknown".to_owned()
                }
                Ok(b) => match all_health
                    .entry(meta.backend.clone())
                    .or_insert_with(|| b.health_of_all(&DuctRunner))
                    .as_ref()
                    .map(|m| {
                        m.get(id.as_str())
                            .copied()
                            .unwrap_or(bottle_core::backend::Health::Stopped)
                    })
                    .map(Ok)
                    .unwrap_or_else(|| b.handle(&meta, &state).health(&DuctRunner))
                {
                    Ok(h) => serde_json::to_value(h)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    Err(_) => "unknown".to_owned(),
                },
                Err(_) => "unknown".to_owned(),
            },
        };
        rows.push(LsRow {
            identity: id.to_string(),
            agent: meta.agent.clone(),
            bottle: meta.bottle.clone(),
            backend: meta.backend.clone(),
            state: st,
            age_secs: age_secs(&meta.created),
            created: meta.created.clone(),
            pending_requests: bottle_host::supervise::queue::pending_count(
                state.path().as_std_path(),
            ),
        });
    }
    // The table is printed either way; a backend whose engine does not
    // answer then fails the command (exit 3) with the reason and the fix.
    let unreachable = answers.into_values().flatten().next();
    let done = || unreachable.map_or(Ok(0), Err);
    if a.json {
        let doc = serde_json::json!({ "schema_version": 1, "bottles": rows });
        crate::ui::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("serializes")
        ));
        return done();
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.identity.clone(),
                r.agent.clone(),
                r.backend.clone(),
                r.state.clone(),
                humantime::format_duration(std::time::Duration::from_secs(r.age_secs))
                    .to_string()
                    .split(' ')
                    .next()
                    .unwrap_or("0s")
                    .to_owned(),
                r.pending_requests.to_string(),
            ]
        })
        .collect();
    crate::ui::out(&table(
        &["IDENTITY", "AGENT", "BACKEND", "STATE", "AGE", "PENDING"],
        &body,
    ));
    done()
}

/// `bottle attach`.
pub fn attach(cli: &Cli, a: &IdArgs) -> Result<u8> {
    let f = find(&super::home(cli)?, &a.id)?;
    refuse_stopped(&f, "there is no agent to attach to")?;
    engine_answers(&*f.backend)?;
    let h = handle(&f);
    Ok(code(attach_and_say(&*h, cli.quiet)?))
}

/// Attach, naming the detach keys before and saying how to come back after
/// a detach (which is exit 0, the agent still running).
pub fn attach_and_say(h: &dyn Running, quiet: bool) -> Result<i32> {
    let id = h.identity().clone();
    if !quiet {
        match h.detach_keys() {
            Some(keys) => eprintln!(
                "attached to {id}: {keys} detaches (the agent keeps running; `bottle attach {id}` comes back)"
            ),
            None => eprintln!("attached to {id}"),
        }
    }
    let code = h.attach(&DuctRunner)?;
    if code == 0 && matches!(h.health(&DuctRunner), Ok(bottle_core::Health::Running)) {
        if !quiet {
            eprintln!(
                "detached from {id}: it keeps running; `bottle attach {id}` reattaches, `bottle stop {id}` stops it"
            );
        }
        return Ok(0);
    }
    Ok(code)
}

/// `bottle exec`.
pub fn exec(cli: &Cli, a: &ExecArgs) -> Result<u8> {
    let f = find(&super::home(cli)?, &a.id)?;
    refuse_stopped(&f, "there is no agent to run a command in")?;
    engine_answers(&*f.backend)?;
    Ok(code(handle(&f).exec(&a.cmd, &DuctRunner)?))
}

/// `bottle stop`.
pub fn stop(cli: &Cli, a: &IdArgs) -> Result<u8> {
    let f = find(&super::home(cli)?, &a.id)?;
    engine_answers(&*f.backend)?;
    handle(&f).stop(&DuctRunner)?;
    forget_env_secrets(&f.state);
    let mut meta = f.meta;
    meta.phase = Phase::Stopped;
    meta.owner_pid = None;
    f.state.write_metadata(&meta)?;
    if !cli.quiet {
        eprintln!(
            "stopped {} (state and home kept; `bottle resume {}`)",
            f.id, f.id
        );
    }
    Ok(0)
}

/// `bottle resume`: relaunch from metadata with the same identity,
/// workspace and home volume.
pub fn resume(cli: &Cli, a: &IdArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let f = find(&home, &a.id)?;
    engine_answers(&*f.backend)?;
    let h = handle(&f);
    if matches!(h.health(&DuctRunner)?, bottle_core::Health::Running) {
        return Err(Error::other(
            format!("{} is already running", f.id),
            format!("`bottle attach {}` or `bottle stop {}` first", f.id, f.id),
        ));
    }
    // Whatever a crash left (a half bottle) goes first; the home stays.
    f.backend.remove_all(&f.id, true, &DuctRunner)?;
    let flags = PlanFlags {
        cwd: f.meta.workspace.clone(),
        runtime: None,
        env: Vec::new(),
    };
    let cli_backend = Cli {
        home: Some(home.root().to_owned()),
        backend: Some(f.meta.backend.clone()),
        verbose: cli.verbose,
        quiet: cli.quiet,
        command: super::Command::Init(Default::default()),
    };
    let mut plan = super::resolve_plan(
        &cli_backend,
        &f.meta.agent,
        &flags,
        Some((f.id.clone(), f.meta.slot)),
        &super::start::TtyPrompt,
    )?;
    let applied = apply_capabilities(&mut plan, f.state.path().as_std_path(), cli.quiet);
    let mut meta = f.meta.clone();
    meta.capabilities = applied;
    meta.phase = Phase::Launching;
    meta.owner_pid = Some(std::process::id());
    meta.plan_hash = plan.hash();
    f.state.write_metadata(&meta)?;
    let wiring = super::start::prepare(&*f.backend, &plan, &f.state)?;
    let result = super::start::launch(&*f.backend, &plan, &f.state, &wiring, cli.quiet, None);
    meta.owner_pid = None;
    meta.phase = if result.is_ok() {
        Phase::Running
    } else {
        Phase::Stopped
    };
    f.state.write_metadata(&meta)?;
    result?;
    if !cli.quiet {
        eprintln!("resumed {}", f.id);
    }
    Ok(0)
}

/// `bottle rm`: remove everything of a bottle, state included.
pub fn rm(cli: &Cli, a: &IdArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let id = super::ids::bottle(&home, &a.id)?;
    let state = home.state(&id);
    if !state.path().is_dir() {
        return Err(Error::NoSuchBottle {
            identity: id.to_string(),
        });
    }
    let backend_name = state
        .read_metadata()
        .map(|m| m.backend)
        .unwrap_or_else(|_| bottle_core::manifest::DEFAULT_BACKEND.into());
    if let Ok(b) = crate::registry::get(&backend_name) {
        engine_answers(&*b)?;
        b.remove_all(&id, false, &DuctRunner)?;
    }
    state.remove()?;
    if !cli.quiet {
        eprintln!("removed {id}");
    }
    Ok(0)
}

/// Apply the operator-approved capability requests on resume and say what
/// happened to each; returns their summaries for `metadata.json`.
pub fn apply_capabilities(
    plan: &mut bottle_core::BottlePlan,
    state: &std::path::Path,
    quiet: bool,
) -> Vec<String> {
    let applied = bottle_host::prepare::apply_capabilities(plan, state);
    for c in &applied {
        if quiet {
            continue;
        }
        match &c.outcome {
            Ok(set) => eprintln!(
                "applying approved capability {} ({}): {set}",
                c.id, c.summary
            ),
            Err(why) => eprintln!(
                "approved capability {} ({}) is recorded, not applied: {why}",
                c.id, c.summary
            ),
        }
    }
    applied.into_iter().map(|c| c.summary).collect()
}

/// A stopped bottle keeps no `?prompt` answer or host-variable env value:
/// `resume` asks / reads them again (only the bundle held them, for DLP).
fn forget_env_secrets(state: &bottle_core::StateDir) {
    if let Ok(rd) = std::fs::read_dir(state.secrets_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("env-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
