//! Running `git` for the gate: a fixed, config-free environment, the upstream
//! transport settings (held key, pinned host key) and the mirrors.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::config::{url_kind, RemoteConfig, UrlKind};

/// Env var naming the daemon's hook socket (set on `git receive-pack`).
pub const ENV_SOCKET: &str = "BOTTLE_GIT_GATE_SOCKET";
/// Env var carrying the per-push session token (set on `git receive-pack`).
pub const ENV_TOKEN: &str = "BOTTLE_GIT_GATE_TOKEN";

/// A `git` command with a config-free environment: no system/global config
/// (no `insteadOf` rewrites, no credential helpers), no prompts.
pub fn git() -> Command {
    let mut c = Command::new("git");
    base_env(&mut c);
    c
}

/// The same for tokio.
pub fn git_async() -> tokio::process::Command {
    let mut c = tokio::process::Command::new("git");
    for (k, v) in base_env_pairs() {
        c.env(k, v);
    }
    for k in CLEARED {
        c.env_remove(k);
    }
    c.kill_on_drop(true);
    c
}

const CLEARED: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_INDEX_FILE",
    "GIT_NAMESPACE",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_PROXY_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_PROTOCOL",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "SSH_AUTH_SOCK",
    ENV_SOCKET,
    ENV_TOKEN,
];

fn base_env_pairs() -> [(&'static str, &'static str); 5] {
    [
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GIT_ASKPASS", "/bin/false"),
        ("SSH_ASKPASS", "/bin/false"),
    ]
}

fn base_env(c: &mut Command) {
    for (k, v) in base_env_pairs() {
        c.env(k, v);
    }
    for k in CLEARED {
        c.env_remove(k);
    }
}

/// Single-quote for the shell that runs `GIT_SSH_COMMAND`.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

/// Env vars that make git reach `remote`'s upstream with the held key and the
/// pinned host key (`StrictHostKeyChecking=yes`, no agent, no user config).
/// Only paths are passed; the key material never leaves its file.
pub fn upstream_env(remote: &RemoteConfig) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if url_kind(&remote.url) == Ok(UrlKind::Ssh) {
        let mut cmd = String::from(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none",
        );
        cmd.push_str(
            " -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=15",
        );
        cmd.push_str(" -o UpdateHostKeys=no -o ServerAliveInterval=15 -o ServerAliveCountMax=4");
        match &remote.known_hosts {
            Some(kh) => cmd.push_str(&format!(" -o UserKnownHostsFile={}", sh_quote(kh))),
            None => cmd.push_str(" -o UserKnownHostsFile=/dev/null"),
        }
        if let Some(key) = &remote.identity_file {
            cmd.push_str(&format!(" -i {}", sh_quote(key)));
        }
        env.push(("GIT_SSH_COMMAND".into(), cmd));
        env.push(("GIT_SSH_VARIANT".into(), "ssh".into()));
    }
    env
}

/// The mirror of `remote` under `mirrors_dir`.
pub fn mirror_path(mirrors_dir: &Path, remote: &str) -> PathBuf {
    mirrors_dir.join(format!("{remote}.git"))
}

/// Create the bare mirror if needed and (re)install the pre-receive hook
/// that calls `hook_program`. Idempotent.
pub fn ensure_mirror(mirror: &Path, hook_program: &Path) -> Result<(), String> {
    if !mirror.join("objects").is_dir() {
        let parent = mirror.parent().ok_or("mirror path has no parent")?;
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.init-{:08x}",
            mirror
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("mirror"),
            rand::random::<u32>()
        ));
        run(git().args(["init", "--quiet", "--bare"]).arg(&tmp))?;
        for (k, v) in [
            ("receive.denyNonFastForwards", "false"),
            ("receive.denyDeletes", "false"),
            ("receive.autogc", "false"),
            ("receive.advertisePushOptions", "false"),
            ("gc.auto", "0"),
            ("core.logAllRefUpdates", "false"),
            ("uploadpack.allowFilter", "true"),
        ] {
            run(git().arg("--git-dir").arg(&tmp).args(["config", k, v]))?;
        }
        // Drop sample hooks; only ours lives here.
        let hooks = tmp.join("hooks");
        let _ = std::fs::remove_dir_all(&hooks);
        std::fs::create_dir_all(&hooks).map_err(|e| e.to_string())?;
        if let Err(e) = std::fs::rename(&tmp, mirror) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !mirror.join("objects").is_dir() {
                return Err(format!("creating mirror {}: {e}", mirror.display()));
            }
        }
    }
    install_hook(mirror, hook_program)
}

fn install_hook(mirror: &Path, hook_program: &Path) -> Result<(), String> {
    let hooks = mirror.join("hooks");
    std::fs::create_dir_all(&hooks).map_err(|e| e.to_string())?;
    let script = format!(
        "#!/bin/sh\n# installed by bottle git-gate: every push is checked by the gate daemon\nexec {} git-gate --pre-receive-hook\n",
        sh_quote(hook_program)
    );
    let path = hooks.join("pre-receive");
    if std::fs::read_to_string(&path).ok().as_deref() == Some(script.as_str()) {
        return Ok(());
    }
    bottle_core::state::atomic_write_io(&path, script.as_bytes(), Some(0o755))
        .map_err(|e| e.to_string())
}

/// Whether the mirror has at least one ref (something to serve stale).
pub fn has_refs(mirror: &Path) -> bool {
    git()
        .arg("--git-dir")
        .arg(mirror)
        .args(["for-each-ref", "--count=1", "--format=x"])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

/// Bring the mirror to exactly the upstream's refs (`fetch --prune
/// +refs/*:refs/*`), and point HEAD at the upstream's default branch when it
/// does not resolve yet.
pub async fn refresh(mirror: &Path, remote: &RemoteConfig, limit: Duration) -> Result<(), String> {
    let mut cmd = git_async();
    cmd.arg("--git-dir")
        .arg(mirror)
        .args([
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--",
        ])
        .arg(&remote.url)
        .arg("+refs/*:refs/*");
    for (k, v) in upstream_env(remote) {
        cmd.env(k, v);
    }
    run_async(cmd, limit).await?;
    let head_ok = git()
        .arg("--git-dir")
        .arg(mirror)
        .args(["rev-parse", "-q", "--verify", "HEAD"])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !head_ok {
        let mut cmd = git_async();
        cmd.arg("--git-dir")
            .arg(mirror)
            .args(["ls-remote", "--symref", "--"])
            .arg(&remote.url)
            .arg("HEAD");
        for (k, v) in upstream_env(remote) {
            cmd.env(k, v);
        }
        let out = run_async(cmd, limit).await?;
        if let Some(target) = out.lines().find_map(|l| {
            l.strip_prefix("ref: ")
                .and_then(|r| r.strip_suffix("\tHEAD"))
        }) {
            if target.starts_with("refs/heads/") {
                run(git()
                    .arg("--git-dir")
                    .arg(mirror)
                    .args(["symbolic-ref", "HEAD", target]))?;
            }
        }
    }
    Ok(())
}

/// Run to completion; Err carries a short, cleaned stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(short_stderr(&out.stderr))
    }
}

/// Async [`run`] with a deadline (the child is killed when it passes).
pub async fn run_async(
    mut cmd: tokio::process::Command,
    limit: Duration,
) -> Result<String, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!("timed out after {}s", limit.as_secs())),
        Ok(Err(e)) => Err(format!("git failed: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => Err(short_stderr(&out.stderr)),
    }
}

/// Last few non-empty stderr lines, control characters removed.
pub fn short_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    let joined = tail.join(" / ");
    if joined.is_empty() {
        "git failed without a message".into()
    } else {
        joined.chars().take(600).collect()
    }
}
