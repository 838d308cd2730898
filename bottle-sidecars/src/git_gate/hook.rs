//! The pre-receive hook: a thin client. `git receive-pack` runs
//! `bottle-sidecar git-gate --pre-receive-hook` in the mirror; it forwards the
//! ref updates (and git's quarantine env, so the daemon can see the pushed
//! objects) to the daemon over a private unix socket, prints the daemon's
//! messages on stderr (the agent's git shows them as `remote: ...`) and exits
//! 0 only when the daemon accepted the push *and* pushed it upstream.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::git::{ENV_SOCKET, ENV_TOKEN};

/// One `<old> <new> <ref>` line of pre-receive input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    /// Old object id (all zeros: ref is created).
    pub old: String,
    /// New object id (all zeros: ref is deleted).
    pub new: String,
    /// Full ref name.
    pub refname: String,
}

impl RefUpdate {
    /// The ref is being created.
    pub fn is_create(&self) -> bool {
        is_zero(&self.old)
    }
    /// The ref is being deleted.
    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }
}

/// An all-zero object id.
pub fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// Hook → daemon.
#[derive(Debug, Serialize, Deserialize)]
pub struct HookRequest {
    /// Session token the daemon gave this receive-pack.
    pub token: String,
    /// The updates git asks to make.
    pub updates: Vec<RefUpdate>,
    /// git's quarantine env (`GIT_OBJECT_DIRECTORY`, …).
    pub env: Vec<(String, String)>,
}

/// Daemon → hook.
#[derive(Debug, Serialize, Deserialize)]
pub struct HookReply {
    /// Accept the push (it already landed upstream).
    pub ok: bool,
    /// Lines for the agent's terminal.
    pub messages: Vec<String>,
}

/// Quarantine-related env the daemon needs to see the pushed objects.
pub const FORWARDED_ENV: &[&str] = &[
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
];

/// Parse pre-receive stdin.
pub fn parse_updates(text: &str) -> Result<Vec<RefUpdate>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut it = line.split(' ');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(old), Some(new), Some(refname), None)
                if is_oid(old) && is_oid(new) && refname.starts_with("refs/") =>
            {
                out.push(RefUpdate {
                    old: old.into(),
                    new: new.into(),
                    refname: refname.into(),
                })
            }
            _ => return Err("malformed pre-receive input".into()),
        }
    }
    Ok(out)
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Entry point of `bottle-sidecar git-gate --pre-receive-hook`.
pub fn run_hook() -> i32 {
    match hook_inner() {
        Ok(reply) => {
            for m in &reply.messages {
                eprintln!("{m}");
            }
            if reply.ok {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("git-gate: push refused: the gate could not check it ({e})");
            1
        }
    }
}

fn hook_inner() -> Result<HookReply, String> {
    let socket = std::env::var(ENV_SOCKET).map_err(|_| format!("{ENV_SOCKET} not set"))?;
    let token = std::env::var(ENV_TOKEN).map_err(|_| format!("{ENV_TOKEN} not set"))?;
    let mut input = String::new();
    std::io::stdin()
        .take(16 << 20)
        .read_to_string(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let updates = parse_updates(&input)?;
    let env = FORWARDED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    let req = HookRequest {
        token,
        updates,
        env,
    };
    let mut stream =
        UnixStream::connect(&socket).map_err(|e| format!("connecting to the gate: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30 * 60)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("talking to the gate: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(4 << 20)
        .read_line(&mut reply)
        .map_err(|e| format!("waiting for the gate: {e}"))?;
    serde_json::from_str(&reply)
        .map_err(|_| "the gate closed the connection without a decision".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pre_receive_input() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let u = parse_updates(&format!("{z} {a} refs/heads/x\n{a} {z} refs/heads/y\n")).unwrap();
        assert!(u[0].is_create() && !u[0].is_delete());
        assert!(u[1].is_delete());
        assert!(parse_updates("x y z\n").is_err());
        assert!(parse_updates(&format!("{z} {a} HEAD\n")).is_err());
    }
}
