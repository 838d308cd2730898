//! The operator's view of one real bottle (issue 18), on the real engine:
//! `logs --sidecar` filters to one daemon with one copy per line and no
//! colour through a pipe, `logs --audit` filters, tails and follows, both
//! work after `stop`; `inspect` shows the live policy; a detach from
//! `attach` (Ctrl-P Ctrl-Q in a real terminal: tmux) is exit 0 with no
//! docker noise. One bottle serves every check.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bottle_tests::gate::{trial, Trial, DOCKER, TMUX};
use bottle_tests::support_docker::{labelled, BottleHome};
use bottle_tests::{workspace_bin, SEEDED_BASE};

/// Removes the bottle whatever happens.
struct Rm<'a>(&'a BottleHome, String);
impl Drop for Rm<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", &self.1]);
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn logs_inspect_and_detach_on_one_bottle() {
    let h = BottleHome::new(
        workspace_bin("bottle-cli", "bottle"),
        workspace_bin("bottle-sidecars", "bottle-sidecar"),
    );
    h.write(
        "bottles/ux.toml",
        "[agent_provider]\ntemplate = \"shell\"\n[resources]\ncpus = 0.5\nmemory = \"256MiB\"\n\
         [[egress.routes]]\nhost = \"allowed.test\"\nmethods = [\"GET\"]\n",
    );
    h.write("agents/ux.toml", "bottle = \"ux\"\n");
    let id = h.start("ux");
    let _rm = Rm(&h, id.clone());

    // one refused request: an egress decision and log lines
    let (_, out) = h.exec(
        &id,
        "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://refused.test/",
    );
    assert_eq!(out.trim(), "403", "{out}");

    // --sidecar egress: only egress lines, each once, no ANSI through a pipe
    let (code, out, err) = h.run(&["logs", &id, "--sidecar", "egress"]);
    assert_eq!(code, 0, "{err}");
    let eg = lines(&out);
    assert!(!eg.is_empty(), "no egress log lines: {err}");
    assert!(eg.iter().all(|l| l.contains(" egress: ")), "{out}");
    assert!(!out.contains('\x1b'), "colour through a pipe: {out:?}");
    for w in eg.windows(2) {
        assert_ne!(w[0], w[1], "a line twice: {out}");
    }
    // no git remote: no git-gate daemon, and none of egress's lines
    let (code, out, _) = h.run(&["logs", &id, "--sidecar", "git-gate"]);
    assert_eq!(code, 0);
    assert!(!out.contains(" egress: "), "{out}");

    // --audit filters by sidecar and tails
    let (code, out, _) = h.run(&["logs", &id, "--audit", "--sidecar", "egress"]);
    assert_eq!(code, 0);
    let audit = lines(&out);
    assert!(
        audit
            .iter()
            .any(|l| l.contains("refused.test") && l.contains("\"deny\"")),
        "{out}"
    );
    assert!(
        audit.iter().all(|l| l.contains("\"sidecar\":\"egress\"")),
        "{out}"
    );
    let (_, out, _) = h.run(&["logs", &id, "--audit", "--sidecar", "supervise"]);
    assert!(!out.contains("refused.test"), "{out}");
    let (_, out, _) = h.run(&["logs", &id, "--audit", "--tail", "1"]);
    assert_eq!(lines(&out).len(), 1, "{out}");

    // --audit -f follows: a decision made after it started shows up
    // (under timeout(1): a follower that never sees the line cannot hang the suite)
    let mut follow = Command::new("timeout")
        .arg("60")
        .arg(&h.bottle)
        .arg("--home")
        .arg(h.path())
        .args(["logs", &id, "--audit", "-f", "--tail", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let _ = h.exec(&id, "curl -sS -m 20 -o /dev/null http://followed.test/");
    let mut line = String::new();
    let found = loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        if line.contains("followed.test") {
            break true;
        }
    };
    assert!(found, "the followed decision never showed up");
    assert!(
        follow.try_wait().unwrap().is_none(),
        "-f exited instead of following"
    );
    // SIGTERM: timeout(1) passes it on to bottle
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(follow.id() as libc::pid_t, libc::SIGTERM) };
    let _ = follow.wait();

    // inspect: the live policy
    let (code, out, err) = h.run(&["inspect", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["egress"]["routes"][0]["host"], "allowed.test");
    assert_eq!(v["egress"]["routes"][0]["methods"][0], "GET");
    assert_eq!(v["limits"]["cpus"], 0.5);
    assert_eq!(v["limits"]["memory_bytes"], 256u64 << 20);
    let (code, out, _) = h.run(&["inspect", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("route allowed.test methods GET"), "{out}");

    // attach, then Ctrl-P Ctrl-Q in a real terminal: exit 0, no docker noise
    {
        let rc = h.path().join("attach-rc");
        let session = format!("bottle-ux-{}", std::process::id());
        let cmdline = format!(
            "{} --home {} attach {id} 2>&1; echo $? > {}; sleep 30",
            h.bottle.display(),
            h.path().display(),
            rc.display()
        );
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "150", "-y", "20"])
            .arg(&cmdline)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux session");
        let pane = || {
            let o = Command::new("tmux")
                .args(["capture-pane", "-p", "-t", &session])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pane().contains("Ctrl-P Ctrl-Q detaches") {
            assert!(Instant::now() < deadline, "no attach banner: {}", pane());
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", &session, "C-p", "C-q"])
            .status();
        while !rc.exists() {
            assert!(Instant::now() < deadline, "attach did not end: {}", pane());
            std::thread::sleep(Duration::from_millis(200));
        }
        let screen = pane();
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &session])
            .status();
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap().trim(),
            "0",
            "{screen}"
        );
        assert!(!screen.contains("read escape sequence"), "{screen}");
        assert!(
            screen.contains(&format!("`bottle attach {id}` reattaches")),
            "{screen}"
        );
        let (code, out) = h.exec(&id, "echo still-here");
        assert_eq!(code, 0, "the agent did not survive the detach: {out}");
    }

    // after stop the sidecar and audit logs are still there
    let (code, _, err) = h.run(&["stop", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = h.run(&["logs", &id, "--sidecar", "egress"]);
    assert_eq!(code, 0, "{err}");
    assert!(lines(&out).len() >= eg.len(), "{out}");
    assert!(out.contains(eg[0]), "{out}");
    let (code, out, _) = h.run(&["logs", &id, "--audit"]);
    assert_eq!(code, 0);
    assert!(out.contains("followed.test"), "{out}");

    // gc --dry-run says what it would do (here: nothing of this home)
    let (code, out, err) = h.run(&["gc", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.is_empty() || err.contains("nothing to remove"),
        "{out}{err}"
    );

    let (code, _, err) = h.run(&["rm", "-f", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(labelled(&id).is_empty(), "left: {:?}", labelled(&id));
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![trial!(
        logs_inspect_and_detach_on_one_bottle,
        &DOCKER,
        &SEEDED_BASE,
        &TMUX
    )]
}
