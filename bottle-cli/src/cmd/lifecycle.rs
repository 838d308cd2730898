//! Lifecycle commands of existing bottles: `ls`, `attach`, `exec`,
//! `stop`, `resume`, `rm` (`logs`, `gc` and `inspect` have their own
//! modules). Each finds the bottle's state dir, reads its `metadata.json`
//! and talks to the backend that launched it.

use bottle_core::backend::Running;
use bottle_core::{DuctRunner, Result};

use crate::events::Term;
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

/// `bottle ls`.
pub fn ls(cli: &Cli, a: &LsArgs) -> Result<u8> {
    let (rows, unreachable) = super::lifecycle(cli)?.list()?;
    // The table is printed either way; a backend whose engine does not
    // answer then fails the command (exit 3) with the reason and the fix.
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
    let lc = super::lifecycle(cli)?;
    let f = lc.find(&a.id)?;
    f.refuse_stopped("there is no agent to attach to")?;
    lc.engine_answers(&*f.backend)?;
    let h = f.handle();
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
    let lc = super::lifecycle(cli)?;
    let f = lc.find(&a.id)?;
    f.refuse_stopped("there is no agent to run a command in")?;
    // The engine is asked whether it answers only after a failure (its
    // exit code may be the engine's, not the command's): one `docker
    // version` less on every exec (docs/benchmarks.md "start").
    let result = f.handle().exec(&a.cmd, &DuctRunner);
    if !matches!(result, Ok(0)) {
        lc.engine_answers(&*f.backend)?;
    }
    Ok(code(result?))
}

/// `bottle stop`.
pub fn stop(cli: &Cli, a: &IdArgs) -> Result<u8> {
    let id = super::lifecycle(cli)?.stop(&a.id)?;
    if !cli.quiet {
        eprintln!("stopped {id} (state and home kept; `bottle resume {id}`)");
    }
    Ok(0)
}

/// `bottle resume`: relaunch from metadata with the same identity,
/// workspace and home volume.
pub fn resume(cli: &Cli, a: &IdArgs) -> Result<u8> {
    let id =
        super::lifecycle(cli)?.resume(&a.id, &super::start::TtyPrompt, &Term::new(cli.quiet))?;
    if !cli.quiet {
        eprintln!("resumed {id}");
    }
    Ok(0)
}

fn code(c: i32) -> u8 {
    u8::try_from(c).unwrap_or(1)
}
