//! `bottle logs`: the agent's output (from the backend), a sidecar's log or
//! the audit log (both files in the bottle's state dir, so they outlive the
//! containers and work on a stopped bottle).
//!
//! The bundle writes its log as JSON lines ([`bottle_host::bundle::LOG_FILE`]
//! next to the audit log); this module filters it to one daemon and renders
//! it, in colour only on a terminal without `NO_COLOR`.

use std::io::{IsTerminal, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bottle_core::state::Phase;
use bottle_core::{DuctRunner, Error, LogOptions, Result, StateDir};
use serde_json::Value;

use crate::Cli;

/// A daemon of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sidecar {
    /// The HTTPS egress proxy.
    Egress,
    /// The git gate.
    GitGate,
    /// The supervise MCP server.
    Supervise,
    /// The supervisor that runs them (and lines of no single daemon).
    Bundle,
}

impl Sidecar {
    /// The name the audit log and `--sidecar` use.
    pub fn name(self) -> &'static str {
        match self {
            Sidecar::Egress => "egress",
            Sidecar::GitGate => "git-gate",
            Sidecar::Supervise => "supervise",
            Sidecar::Bundle => "bundle",
        }
    }

    /// The daemon a bundle log line's tracing `target` belongs to.
    pub fn of_target(target: &str) -> Sidecar {
        // the daemons' modules, and the bottle-host modules they call
        let module = target
            .strip_prefix("bottle_sidecars::")
            .or_else(|| target.strip_prefix("bottle_host::"))
            .unwrap_or(target);
        let head = module.split("::").next().unwrap_or("");
        match head {
            "egress" | "routes" => Sidecar::Egress,
            "git_gate" | "gate" => Sidecar::GitGate,
            "supervise" => Sidecar::Supervise,
            _ => Sidecar::Bundle,
        }
    }
}

/// `bottle logs` args.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Bottle identity.
    pub id: String,
    /// One sidecar's log instead of the agent's output (with --audit: only
    /// that sidecar's decisions).
    #[arg(long, value_enum)]
    pub sidecar: Option<Sidecar>,
    /// Print the JSONL decision log.
    #[arg(long)]
    pub audit: bool,
    /// Keep printing new lines until Ctrl-C or the bottle stops.
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines since a time: a duration ago (`10m`, `2h`) or RFC 3339
    /// (`2026-11-30T02:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<SystemTime>,
}

/// `--since`: a duration ago, or an RFC 3339 instant.
fn parse_since(s: &str) -> std::result::Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        format!("`{s}` is neither a duration (10m, 2h) nor an RFC 3339 time (2026-11-30T02:00:00Z)")
    })?;
    Ok(SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH))
}

/// Whether to colour stdout: a terminal, and `NO_COLOR` unset or empty.
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `bottle logs`.
pub fn run(cli: &Cli, a: &LogsArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let id = super::ids::bottle(&home, &a.id)?;
    let state = home.state(&id);
    if !state.path().is_dir() {
        return Err(Error::NoSuchBottle {
            identity: id.to_string(),
        });
    }
    let render = Render {
        sidecar: a.sidecar,
        since: a.since,
        colour: colour(),
    };
    if a.audit {
        return follow_file(&state, state.audit_path().as_std_path(), a, &|l| {
            render.audit(l)
        });
    }
    if a.sidecar.is_some() {
        let path = bottle_host::bundle::log_path(state.audit_path().as_std_path());
        if !path.exists() && !a.follow {
            return Err(Error::other(
                format!("{id} has no sidecar log yet ({} is missing)", path.display()),
                format!(
                    "bottles started before this version log only to their container: `bottle resume {id}` (after a stop) starts writing it"
                ),
            ));
        }
        return follow_file(&state, &path, a, &|l| render.bundle(l));
    }
    agent(cli, a)
}

fn agent(cli: &Cli, a: &LogsArgs) -> Result<u8> {
    let lc = super::lifecycle(cli)?;
    let f = lc.find(&a.id)?;
    f.refuse_stopped(
        "its agent container and its output are gone (the sidecar and audit logs are kept: --sidecar egress, --audit)",
    )?;
    lc.engine_answers(&*f.backend)?;
    let opts = LogOptions {
        follow: a.follow,
        tail: a.tail,
        since: a
            .since
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
    };
    let code = f.handle().logs(&opts, &DuctRunner)?;
    Ok(u8::try_from(code).unwrap_or(1))
}

/// How lines are selected and shown.
struct Render {
    sidecar: Option<Sidecar>,
    since: Option<SystemTime>,
    colour: bool,
}

fn time_of(v: &Value, key: &str) -> Option<SystemTime> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

impl Render {
    fn recent(&self, t: Option<SystemTime>) -> bool {
        match (self.since, t) {
            (Some(since), Some(t)) => t >= since,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// An audit line, as written (it is the machine-readable record), if
    /// selected.
    fn audit(&self, line: &str) -> Option<String> {
        let v: Value = serde_json::from_str(line).ok()?;
        if let Some(s) = self.sidecar {
            if v.get("sidecar").and_then(Value::as_str) != Some(s.name()) {
                return None;
            }
        }
        self.recent(time_of(&v, "ts")).then(|| line.to_owned())
    }

    /// A bundle log line rendered as `TIME LEVEL daemon: message k=v`, if
    /// selected. A line that is not JSON (never written by the bundle) is
    /// shown as is under `bundle`.
    fn bundle(&self, line: &str) -> Option<String> {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return matches!(self.sidecar, None | Some(Sidecar::Bundle)).then(|| line.to_owned());
        };
        let target = v.get("target").and_then(Value::as_str).unwrap_or("");
        // the supervisor names the daemon a line is about (`daemon = egress`)
        let named = v
            .pointer("/fields/daemon")
            .and_then(Value::as_str)
            .and_then(|d| <Sidecar as clap::ValueEnum>::from_str(d, false).ok());
        let daemon = named.unwrap_or_else(|| Sidecar::of_target(target));
        if self
            .sidecar
            .is_some_and(|s| s != Sidecar::Bundle && s != daemon)
        {
            return None;
        }
        if !self.recent(time_of(&v, "timestamp")) {
            return None;
        }
        let ts = v.get("timestamp").and_then(Value::as_str).unwrap_or("");
        // second precision is enough to read; the file keeps the rest
        let ts = ts.split('.').next().unwrap_or(ts).trim_end_matches('Z');
        let level = v.get("level").and_then(Value::as_str).unwrap_or("INFO");
        let mut msg = String::new();
        let mut extra = String::new();
        if let Some(Value::Object(fields)) = v.get("fields") {
            for (k, val) in fields {
                let val = match val {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if k == "message" {
                    msg = val;
                } else {
                    extra.push_str(&format!(" {k}={val}"));
                }
            }
        }
        let (lc, dim, reset) = if self.colour {
            let lc = match level {
                "ERROR" => "\x1b[31m",
                "WARN" => "\x1b[33m",
                "INFO" => "\x1b[32m",
                _ => "\x1b[34m",
            };
            (lc, "\x1b[2m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        Some(format!(
            "{dim}{ts}Z{reset} {lc}{level:>5}{reset} {}: {msg}{dim}{extra}{reset}",
            daemon.name()
        ))
    }
}

/// Print the selected lines of `path` (the last `--tail` of them), then with
/// `--follow` keep printing new ones until the bottle stops or is removed.
fn follow_file(
    state: &StateDir,
    path: &Path,
    a: &LogsArgs,
    select: &dyn Fn(&str) -> Option<String>,
) -> Result<u8> {
    let mut pos = 0u64;
    let mut pending = String::new();
    let mut first = true;
    loop {
        let chunk = read_from(path, &mut pos)?;
        pending.push_str(&chunk);
        // only complete lines; a partial last line waits for its newline
        let cut = pending.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let complete: String = pending.drain(..cut).collect();
        let mut lines: Vec<String> = complete.lines().filter_map(select).collect();
        if first {
            if let Some(n) = a.tail {
                let skip = lines.len().saturating_sub(n);
                lines.drain(..skip);
            }
            first = false;
        }
        if !lines.is_empty() {
            let mut text = lines.join("\n");
            text.push('\n');
            crate::ui::out(&text);
        }
        if !a.follow || !still_running(state) {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Read what `path` holds past `pos` (nothing if it does not exist yet); a
/// file that shrank (rotated by hand) is read again from the start.
fn read_from(path: &Path, pos: &mut u64) -> Result<String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io("reading", lossy(path), e)),
    };
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading", lossy(path), e))?
        .len();
    if len < *pos {
        *pos = 0;
    }
    f.seek(SeekFrom::Start(*pos))
        .map_err(|e| Error::io("reading", lossy(path), e))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io("reading", lossy(path), e))?;
    *pos += buf.len() as u64;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn lossy(p: &Path) -> camino::Utf8PathBuf {
    camino::Utf8PathBuf::from(PathBuf::from(p).to_string_lossy().into_owned())
}

/// A followed log ends when its bottle is stopped or removed.
fn still_running(state: &StateDir) -> bool {
    state
        .read_metadata()
        .is_ok_and(|m| m.phase != Phase::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(sidecar: Option<Sidecar>) -> Render {
        Render {
            sidecar,
            since: None,
            colour: false,
        }
    }

    const EGRESS: &str = r#"{"timestamp":"2026-11-30T02:00:01.123456Z","level":"INFO","fields":{"message":"allow","host":"echo.test"},"target":"bottle_sidecars::egress::proxy"}"#;
    const GATE: &str = r#"{"timestamp":"2026-11-30T02:00:02.5Z","level":"WARN","fields":{"message":"push refused"},"target":"bottle_sidecars::git_gate"}"#;
    const BUNDLE: &str = r#"{"timestamp":"2026-11-30T02:00:00Z","level":"INFO","fields":{"message":"egress listening on 0.0.0.0:8888","daemon":"egress"},"target":"bundle"}"#;

    #[test]
    fn a_sidecar_sees_only_its_lines() {
        let r = render(Some(Sidecar::Egress));
        assert_eq!(
            r.bundle(EGRESS).unwrap(),
            "2026-11-30T02:00:01Z  INFO egress: allow host=echo.test"
        );
        assert_eq!(r.bundle(GATE), None);
        assert_eq!(
            r.bundle(BUNDLE).unwrap(),
            "2026-11-30T02:00:00Z  INFO egress: egress listening on 0.0.0.0:8888 daemon=egress"
        );
        assert_eq!(render(Some(Sidecar::Supervise)).bundle(BUNDLE), None);
        let r = render(Some(Sidecar::GitGate));
        assert_eq!(
            r.bundle(GATE).unwrap(),
            "2026-11-30T02:00:02Z  WARN git-gate: push refused"
        );
        assert_eq!(r.bundle(EGRESS), None);
        // `bundle` is the whole log
        let r = render(Some(Sidecar::Bundle));
        assert!([EGRESS, GATE, BUNDLE].iter().all(|l| r.bundle(l).is_some()));
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(!render(Some(Sidecar::Egress))
            .bundle(EGRESS)
            .unwrap()
            .contains('\x1b'));
        let mut r = render(Some(Sidecar::Egress));
        r.colour = true;
        assert!(r.bundle(EGRESS).unwrap().contains("\x1b[32m"));
    }

    #[test]
    fn since_drops_older_lines() {
        let mut r = render(None);
        r.since = Some(humantime::parse_rfc3339("2026-11-30T02:00:02Z").unwrap());
        assert_eq!(r.bundle(EGRESS), None);
        assert!(r.bundle(GATE).is_some());
        let audit = r#"{"ts":"2026-11-30T02:00:03Z","sidecar":"egress","decision":"allow"}"#;
        assert!(r.audit(audit).is_some());
        r.sidecar = Some(Sidecar::Supervise);
        assert_eq!(r.audit(audit), None);
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let t = parse_since("10m").unwrap();
        let ago = SystemTime::now().duration_since(t).unwrap();
        assert!(ago >= Duration::from_secs(600) && ago < Duration::from_secs(3600));
        assert_eq!(
            parse_since("2026-11-30T02:00:00Z").unwrap(),
            humantime::parse_rfc3339("2026-11-30T02:00:00Z").unwrap()
        );
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn targets_map_to_daemons() {
        assert_eq!(
            Sidecar::of_target("bottle_sidecars::egress::proxy"),
            Sidecar::Egress
        );
        assert_eq!(
            Sidecar::of_target("bottle_sidecars::git_gate::push"),
            Sidecar::GitGate
        );
        assert_eq!(
            Sidecar::of_target("bottle_sidecars::supervise::server"),
            Sidecar::Supervise
        );
        // the sync halves the daemons call live in bottle-host
        assert_eq!(
            Sidecar::of_target("bottle_host::supervise::queue"),
            Sidecar::Supervise
        );
        assert_eq!(Sidecar::of_target("bottle_host::routes"), Sidecar::Egress);
        assert_eq!(Sidecar::of_target("bottle_host::gate"), Sidecar::GitGate);
        assert_eq!(Sidecar::of_target("bottle_host::audit"), Sidecar::Bundle);
        assert_eq!(Sidecar::of_target("bottle_sidecars::dlp"), Sidecar::Bundle);
        assert_eq!(Sidecar::of_target("bundle"), Sidecar::Bundle);
    }
}
