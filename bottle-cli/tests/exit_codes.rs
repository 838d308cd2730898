//! The README's exit-code table, one snapshot per code: 0 (also when the
//! reader of stdout went away, `| head`), 1 runtime, 2 usage, 3 backend
//! unavailable, 4 refused. (130, Ctrl-C mid-start, needs a real launch to
//! interrupt: `tests/integration/fault.rs`.) No real engine: `PATH` holds a
//! fake `docker` — one whose daemon is down, or one that answers.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use bottle_core::state::Phase;

mod common;
use common::Env;

/// A fake docker whose engine answers: `version` prints a version, every
/// other call succeeds with no output (no runsc, images "exist").
fn engine_up(env: &Env) -> std::path::PathBuf {
    let bin = env.dir.path().join("bin-up");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$1\" in version) echo 20.10.0;; esac\nexit 0\n",
            env.dir.path().join("docker-calls-up").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A pipe whose reading end is already closed: every write gets EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn bottle(env: &Env, path: &Path, args: &[&str], stdout: Stdio) -> Run {
    let o = env
        .command(path, args)
        .current_dir(env.dir.path().join("cwd"))
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("bottle runs");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn snapshot(env: &Env, name: &str, args: &[&str], r: &Run) {
    env.settings().bind(|| {
        insta::assert_snapshot!(
            name,
            format!(
                "$ bottle {}\nexit: {}\n{}",
                args.join(" "),
                r.code,
                r.stderr
            )
        )
    });
}

fn down(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("bin")
}

#[test]
fn exit_0_even_when_the_reader_went_away() {
    let env = Env::new();
    assert_eq!(bottle(&env, &down(&env), &["init"], Stdio::null()).code, 0);
    for args in [
        &["completions", "zsh"][..],
        &["plan", "demo", "--json"],
        &["plan", "demo"],
        &["ls"],
    ] {
        let r = bottle(&env, &down(&env), args, closed_pipe());
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr, "", "{args:?}: no panic, no message");
    }
    let args = ["completions", "zsh"];
    let r = bottle(&env, &down(&env), &args, closed_pipe());
    snapshot(&env, "exit_0_closed_pipe", &args, &r);
}

#[test]
fn exit_1_runtime_failure() {
    let env = Env::new();
    // A bottle whose state is corrupt: resuming it fails at run time (an
    // unknown id is a usage error, exit 2).
    let state = env.home().join("state/demo-dev-bad001");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("metadata.json"),
        "{ \"schema_version\": 1, \"identity\": ",
    )
    .unwrap();
    let args = ["resume", "demo-dev-bad001"];
    let r = bottle(&env, &down(&env), &args, Stdio::piped());
    assert_eq!(r.code, 1, "{}", r.stderr);
    snapshot(&env, "exit_1_runtime", &args, &r);
}

#[test]
fn exit_2_usage() {
    let env = Env::new();
    assert_eq!(bottle(&env, &down(&env), &["init"], Stdio::null()).code, 0);
    env.bottle("demo-dev-use001", Phase::Running);
    for (name, args) in [
        ("exit_2_env", &["plan", "demo", "--env", "FOO"][..]),
        (
            "exit_2_sidecar",
            &["logs", "demo-dev-use001", "--sidecar", "foo"],
        ),
        (
            "exit_2_exec_without_dashes",
            &["exec", "demo-dev-use001", "id"],
        ),
        ("exit_2_no_such_agent", &["plan", "nobody"]),
    ] {
        let r = bottle(&env, &down(&env), args, Stdio::piped());
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        snapshot(&env, name, args, &r);
    }
    assert_eq!(
        std::fs::read_to_string(env.dir.path().join("docker-calls")).unwrap_or_default(),
        "",
        "a usage error needs no engine"
    );
}

#[test]
fn exit_3_engine_unreachable() {
    let env = Env::new();
    env.bottle("demo-dev-run003", Phase::Running);
    // ls still prints what it knows, then says why the state is unknown
    let args = ["ls"];
    let r = bottle(&env, &down(&env), &args, Stdio::piped());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stdout.contains("demo-dev-run003"), "{}", r.stdout);
    assert!(r.stdout.contains("unknown"), "{}", r.stdout);
    snapshot(&env, "exit_3_ls", &args, &r);
    // gc does not claim it cleaned anything
    let args = ["gc"];
    let r = bottle(&env, &down(&env), &args, Stdio::piped());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!r.stderr.contains("cleaned"), "{}", r.stderr);
    snapshot(&env, "exit_3_gc", &args, &r);
    // nor does gc on a home with no bottle at all
    let empty = Env::new();
    let r = bottle(&empty, &down(&empty), &["gc", "--dry-run"], Stdio::piped());
    assert_eq!(r.code, 3, "{}", r.stderr);
}

#[test]
fn exit_4_refused() {
    let env = Env::new();
    assert_eq!(bottle(&env, &down(&env), &["init"], Stdio::null()).code, 0);
    let up = engine_up(&env);
    let args = ["start", "demo"];
    let r = bottle(&env, &up, &args, Stdio::piped());
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    let calls = std::fs::read_to_string(env.dir.path().join("docker-calls-up")).unwrap();
    assert!(
        calls
            .lines()
            .all(|c| !c.starts_with("create") && !c.starts_with("run ")),
        "refused before launching anything: {calls}"
    );
    // only the error and its fix (the preflight printed before it varies
    // with the host: runtime notes)
    let tail: String = r
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .map(|l| format!("{l}\n"))
        .collect();
    snapshot(
        &env,
        "exit_4_refused",
        &args,
        &Run {
            code: r.code,
            stdout: r.stdout,
            stderr: tail,
        },
    );
}
