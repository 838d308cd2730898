//! `bottle start`: preflight summary and y/N, then allocate an identity,
//! resolve the plan (asking `?prompt` values), let the sidecars' `Prepare`
//! fill the state dir, launch on the backend and attach (or `--detach`).
//!
//! `--dry-run` prints the exact commands (secrets redacted) and removes the
//! state it prepared. Without a TTY, `--yes` is required (exit 4 otherwise).

use std::io::{BufRead, IsTerminal, Write};

use bottle_core::plan::{BottlePlan, Prompter};
use bottle_core::{DuctRunner, Error, Result, Secret};
use bottle_lifecycle::Started;

use super::PlanFlags;
use crate::events::{Preflight, Term};
use crate::Cli;

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent name.
    #[arg(add = super::completions::agents())]
    pub agent: String,
    #[command(flatten)]
    pub flags: PlanFlags,
    /// Skip the y/N preflight.
    #[arg(long, short)]
    pub yes: bool,
    /// Print the commands that would run (secrets redacted) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not attach the agent's terminal.
    #[arg(long, short)]
    pub detach: bool,
}

/// Asks `?prompt` values on the terminal (never echoed, never stored).
pub struct TtyPrompt;

impl Prompter for TtyPrompt {
    fn ask(&self, key: &str, question: &str) -> Result<Secret> {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Prompt {
                key: key.into(),
                why: "stdin is not a terminal".into(),
            });
        }
        eprint!("{question} ({key}): ");
        let _ = std::io::stderr().flush();
        let echo_off = set_echo(false);
        let mut line = String::new();
        let r = std::io::stdin().lock().read_line(&mut line);
        if echo_off {
            set_echo(true);
            eprintln!();
        }
        r.map_err(|e| Error::Prompt {
            key: key.into(),
            why: e.to_string(),
        })?;
        Ok(Secret::new(line.trim_end_matches(['\n', '\r'])))
    }
}

fn set_echo(on: bool) -> bool {
    // SAFETY: termios calls on fd 0 with a zeroed, then filled, struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return false;
        }
        if on {
            t.c_lflag |= libc::ECHO;
        } else {
            t.c_lflag &= !libc::ECHO;
        }
        libc::tcsetattr(0, libc::TCSANOW, &t) == 0
    }
}

/// What the agent can reach, one line per channel.
pub fn reach_lines(plan: &BottlePlan) -> Vec<String> {
    let mut v = Vec::new();
    if plan.egress.routes.is_empty() {
        v.push("http(s)   nothing (every host refused; the agent can ask via supervise)".into());
    }
    for r in &plan.egress.routes {
        let mut s = format!("http(s)   {}", r.host);
        if let Some(p) = r.port {
            s.push_str(&format!(":{p}"));
        }
        if !r.paths.is_empty() {
            s.push_str(&format!(" paths {}", r.paths.join(",")));
        }
        if !r.methods.is_empty() {
            s.push_str(&format!(" methods {}", r.methods.join(",")));
        }
        if let Some(a) = &r.auth {
            s.push_str(&format!(
                " (credential injected: {})",
                a.scheme.as_manifest()
            ));
        }
        v.push(s);
    }
    for g in &plan.git.remotes {
        v.push(format!(
            "git       {} {} (push {})",
            g.name,
            g.url,
            if g.push.is_empty() {
                "none".to_owned()
            } else {
                g.push.join(",")
            }
        ));
    }
    if plan.supervise.enabled {
        v.push("supervise requests go to `bottle queue` for you to approve".into());
    }
    v.push("else      nothing: no DNS, no direct TCP/UDP, no host".into());
    v
}

/// What a template's image needs at build time, said before any build.
pub fn template_build_note(t: bottle_core::Template) -> Option<String> {
    let package = match t {
        bottle_core::Template::Claude => "@anthropic-ai/claude-code",
        bottle_core::Template::Codex => "@openai/codex",
        bottle_core::Template::Shell => return None,
    };
    Some(format!(
        "the `{}` image installs Node.js and {package}: its first build needs a Debian mirror and the npm registry",
        t.as_str()
    ))
}

/// The preflight: the plan's summary, its notes and what the agent can reach.
pub fn preflight_text(plan: &BottlePlan, runtime_note: &[String]) -> String {
    let mut s = super::plan::summary(plan);
    for n in runtime_note {
        s.push_str(&format!("{:<11}{n}\n", "note"));
    }
    if let bottle_core::plan::ImageSource::Template(t) = &plan.provider.image {
        if let Some(n) = template_build_note(*t) {
            s.push_str(&format!("{:<11}{n}\n", "note"));
        }
    }
    s.push_str("reach\n");
    for l in reach_lines(plan) {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// Ask y/N on the terminal (refused without one).
pub fn confirm() -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused {
            why: "no terminal to confirm the preflight on".into(),
            fix: "pass --yes to start without asking".into(),
        });
    }
    let line = read_answer("start this bottle? [y/N] ")?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::Refused {
            why: "declined at the preflight".into(),
            fix: "run it again and answer y, or adjust the bottle".into(),
        })
    }
}

static PROMPT_INTERRUPTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_prompt_sigint(_: libc::c_int) {
    PROMPT_INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// One line from the terminal. Ctrl-C while waiting is `Error::Interrupted`
/// (exit 130) instead of killing the process, so the caller can give the
/// identity it allocated for the preflight back: a SIGINT handler without
/// `SA_RESTART` makes the blocking `read` return `EINTR`.
fn read_answer(prompt: &str) -> Result<String> {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); the
    // previous disposition is restored before returning.
    // SIGHUP and SIGTERM too: a terminal that goes away (or script(1)
    // passing the signal on) must not kill us before the allocation is
    // given back.
    // The handlers go in before the prompt is shown: a Ctrl-C the moment it
    // appears must find them (it would kill the process otherwise).
    const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    PROMPT_INTERRUPTED.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut old: [libc::sigaction; 3] = unsafe { std::mem::zeroed() };
    for (sig, old) in SIGNALS.iter().zip(old.iter_mut()) {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_prompt_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(*sig, &sa, old);
        }
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = Vec::new();
    let result = loop {
        if PROMPT_INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            break Err(Error::Interrupted {
                step: "the preflight prompt".into(),
            });
        }
        let mut byte = 0u8;
        // SAFETY: reads one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
        if PROMPT_INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            break Err(Error::Interrupted {
                step: "the preflight prompt".into(),
            });
        }
        match n {
            1 if byte == b'\n' => break Ok(()),
            1 => line.push(byte),
            0 => break Ok(()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    break Err(Error::other(e.to_string(), "answer y or n"));
                }
            }
        }
    };
    // SAFETY: restores the disposition saved above; after an interruption
    // the three signals are ignored instead, until the process exits (130):
    // the terminal that sent Ctrl-C may hang up right after (SIGHUP), and
    // that must not kill us before the caller has given the allocation
    // back.
    let interrupted = matches!(result, Err(Error::Interrupted { .. }));
    for (sig, old) in SIGNALS.iter().zip(old.iter()) {
        unsafe {
            if interrupted {
                libc::signal(*sig, libc::SIG_IGN);
            } else {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
    result.map(|()| String::from_utf8_lossy(&line).into_owned())
}

/// Run `bottle start`: the lifecycle's start with the terminal's
/// preflight, prompter and progress, then attach (or `--detach`).
pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let lc = super::lifecycle(cli)?;
    let req = a.flags.request(cli, &a.agent)?;
    let events = Term::new(cli.quiet).with_preflight(Preflight {
        show: !cli.quiet || !a.yes,
        confirm: !a.yes && !a.dry_run,
    });
    let (plan, running) = match lc.start(&req, a.dry_run, &TtyPrompt, &events)? {
        Started::DryRun { script } => {
            print!("{script}");
            return Ok(0);
        }
        Started::Running { plan, running } => (plan, running),
    };
    let id = &plan.identity;
    if a.detach {
        println!("{id}");
        if !cli.quiet {
            eprintln!(
                "started {id} (detached): `bottle exec {id} -- CMD`, `bottle attach {id}`, `bottle stop {id}`"
            );
        }
        return Ok(0);
    }
    // An agent whose command already finished cannot be attached: show
    // its output instead.
    let code = if running.health(&DuctRunner)? == bottle_core::Health::Running {
        super::lifecycle::attach_and_say(&*running, cli.quiet)?
    } else {
        running.logs(&bottle_core::LogOptions::default(), &DuctRunner)?;
        0
    };
    // The agent's session ended: stop the bottle (state and home kept) so
    // no bundle is left running without its agent.
    if running.health(&DuctRunner)? != bottle_core::Health::Running {
        lc.stop(id.as_str())?;
        if !cli.quiet {
            eprintln!("agent exited; stopped {id} (`bottle resume {id}` continues it)");
        }
    }
    Ok(u8::try_from(code).unwrap_or(1))
}
