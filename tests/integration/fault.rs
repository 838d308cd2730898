//! Fault injection (issue 10): what happens when things break mid-flight.
//! Every test drives the real `bottle` binary; the docker-backed ones run
//! against the real engine (skipped locally without one, required in CI).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottle_tests::gate::{trial, Trial, DOCKER, ROOT};
use bottle_tests::support_docker::{docker, labelled, BottleHome, BASE_IMAGE};
use bottle_tests::{workspace_bin, SEEDED_BASE};

fn home() -> BottleHome {
    BottleHome::new(
        workspace_bin("bottle-cli", "bottle"),
        workspace_bin("bottle-sidecars", "bottle-sidecar"),
    )
}

fn small_bottle(h: &BottleHome, name: &str) {
    h.write(
        &format!("bottles/{name}.toml"),
        "[agent_provider]\ntemplate = \"shell\"\n[resources]\ncpus = 0.5\nmemory = \"256MiB\"\n",
    );
    h.write(
        &format!("agents/{name}.toml"),
        &format!("bottle = \"{name}\"\n"),
    );
}

/// `bottle <args>` in its own process group (so a signal reaches it and its
/// children, as a terminal's Ctrl-C would), stderr piped.
fn spawn(h: &BottleHome, args: &[&str]) -> Child {
    let mut cmd = Command::new(&h.bottle);
    cmd.arg("--home").arg(h.path()).args(args);
    cmd.env("BOTTLE_SIDECAR_BIN", &h.sidecar);
    for (k, v) in &h.env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    cmd.spawn().expect("spawn bottle")
}

fn signal_group(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the child's own process group.
    unsafe {
        libc::kill(-(child.id() as libc::pid_t), sig);
    }
}

/// Read stderr lines until one contains `needle`; returns every line read.
fn wait_line(child: &mut Child, needle: &str) -> Vec<String> {
    let err = child.stderr.take().expect("stderr piped");
    let mut reader = BufReader::new(err);
    let mut seen = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap_or(0);
        if n == 0 {
            panic!("bottle ended before `{needle}`: {seen:?}");
        }
        seen.push(line.trim_end().to_owned());
        if line.contains(needle) {
            // keep draining in the background so the child never blocks
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            return seen;
        }
    }
}

fn identities(h: &BottleHome) -> Vec<String> {
    std::fs::read_dir(h.path().join("state"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn lock_is_free(h: &BottleHome) -> bool {
    let path = h.path().join("state/.lock");
    if !path.exists() {
        return true;
    }
    let f = std::fs::File::open(&path).unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on an fd we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    r == 0
}

fn temp_leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(temp_leftovers(&p));
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

fn kill_9_after_each_launch_step_then_gc_leaves_nothing() {
    let h = home();
    small_bottle(&h, "k9");
    // learn the steps from a dry run
    let (code, script, err) = h.run(&["start", "k9", "--yes", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let steps = script
        .lines()
        .filter(|l| l.starts_with("# ") && l.contains(". "))
        .count();
    assert!(steps >= 5, "dry run shows {steps} steps:\n{script}");
    // Steps run concurrently where they can and their lines come out in
    // order, so the last few may be reported together: a kill after such a
    // line can land after the launch finished. That bottle is running, not
    // debris: `gc` must keep it and `rm` must remove it all. Every other
    // kill lands mid-launch.
    let mut finished = 0;
    for k in 1..=steps {
        let mut child = spawn(&h, &["start", "k9", "--yes", "--detach"]);
        let seen = wait_line(&mut child, &format!("[{k}/"));
        signal_group(&child, libc::SIGKILL);
        let _ = child.wait();
        let ids = identities(&h);
        assert_eq!(ids.len(), 1, "after step {k}: {ids:?} ({seen:?})");
        let phase =
            std::fs::read_to_string(h.path().join(format!("state/{}/metadata.json", ids[0])))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|m| m.get("phase").and_then(|p| p.as_str()).map(str::to_owned));
        if phase.as_deref() == Some("running") {
            finished += 1;
            let (code, out, err) = h.run(&["gc"]);
            assert_eq!(code, 0, "gc failed: {out}{err}");
            assert!(!labelled(&ids[0]).is_empty(), "gc removed a running bottle");
            let (code, out, err) = h.run(&["rm", "-f", &ids[0]]);
            assert_eq!(code, 0, "rm of the finished bottle failed: {out}{err}");
            assert!(
                labelled(&ids[0]).is_empty(),
                "rm left {:?}",
                labelled(&ids[0])
            );
            assert!(identities(&h).is_empty(), "rm left the state dir");
            continue;
        }
        let (code, out, err) = h.run(&["gc"]);
        assert_eq!(code, 0, "gc after a kill at step {k} failed: {out}{err}");
        assert!(
            labelled(&ids[0]).is_empty(),
            "gc after step {k} left {:?}",
            labelled(&ids[0])
        );
        assert!(
            identities(&h).is_empty(),
            "gc after step {k} left the state dir"
        );
        assert!(lock_is_free(&h), "a stale state lock after step {k}");
    }
    assert!(
        finished <= 3,
        "{finished} of {steps} kills landed after the launch finished: the test no longer kills mid-launch"
    );
}

fn ctrl_c_during_build_removes_everything() {
    let h = home();
    // a Dockerfile whose build takes long enough to be interrupted
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    h.write(
        "bottles/Dockerfile",
        &format!("FROM {BASE_IMAGE}\nRUN echo {nonce} && sleep 60\n"),
    );
    h.write(
        "bottles/slow.toml",
        "[agent_provider]\ndockerfile = \"Dockerfile\"\n",
    );
    h.write(
        "agents/slow.toml",
        "bottle = \"slow\"\ncommand = [\"sleep\", \"infinity\"]\n",
    );
    let started = Instant::now();
    let mut child = spawn(&h, &["start", "slow", "--yes", "--detach"]);
    // progress lines print when a step finishes: after "[1/" the build runs
    let seen = wait_line(&mut child, "[1/");
    std::thread::sleep(Duration::from_millis(1500));
    signal_group(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut rest);
    }
    assert_eq!(
        status.code(),
        Some(130),
        "Ctrl-C mid-start exits 130, the shell convention ({seen:?})"
    );
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "Ctrl-C did not stop the 60 s build"
    );
    let ids = identities(&h);
    for id in &ids {
        assert!(labelled(id).is_empty(), "Ctrl-C left {:?}", labelled(id));
    }
    assert!(ids.is_empty(), "Ctrl-C left state: {ids:?}");
    assert!(lock_is_free(&h));
}

fn ctrl_c_at_the_preflight_prompt_creates_nothing() {
    let h = home();
    small_bottle(&h, "pf");
    // a real terminal via script(1), so the y/N prompt waits for an answer
    let cmdline = format!(
        "BOTTLE_SIDECAR_BIN={} {} --home {} start pf",
        h.sidecar.display(),
        h.bottle.display(),
        h.path().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("script(1) runs");
    let out = child.stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while !text.contains("[y/N]") && !text.contains("y/N") {
        assert!(Instant::now() < deadline, "no preflight prompt: {text}");
        use std::io::Read;
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).unwrap_or(0) == 0 {
            panic!("bottle ended before the prompt: {text}");
        }
        text.push(byte[0] as char);
    }
    signal_group(&child, libc::SIGINT);
    let _ = child.wait();
    assert!(
        identities(&h).is_empty(),
        "Ctrl-C at the prompt created state"
    );
    let (_, ls, _) = h.run(&["ls", "--json"]);
    assert!(!ls.contains("pf-pf-"), "{ls}");
}

fn corrupted_metadata_fails_resume_clearly_and_gc_still_works() {
    let h = home();
    let dir = h.path().join("state/broken-dev-abc123");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("metadata.json"),
        "{ \"schema_version\": 1, \"identity\": ",
    )
    .unwrap();
    let (code, _, err) = h.run(&["resume", "broken-dev-abc123"]);
    assert_ne!(code, 0);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains("fix:"), "{err}");
    let (code, out, err) = h.run(&["gc"]);
    assert_eq!(code, 0, "gc failed on a corrupt state: {out}{err}");
    let (code, out, err) = h.run(&["ls"]);
    assert_eq!(code, 0, "ls failed on a corrupt state: {out}{err}");
}

/// A tmpfs mounted over the state dir (needs root); `None` when mounting is
/// not possible here.
struct Mount(std::path::PathBuf);
impl Mount {
    fn tmpfs(at: &Path, opts: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Mount(at.to_path_buf()))
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn full_disk_and_read_only_state_fail_clearly_and_write_nothing_half() {
    for (opts, needle) in [
        ("size=8k", "No space left on device"),
        ("ro,size=64k", "Read-only file system"),
    ] {
        let h = home();
        small_bottle(&h, "fd");
        // ROOT is met (the trial's requirement): mounting must work
        let _m = Mount::tmpfs(&h.path().join("state"), opts)
            .expect("mounting a tmpfs failed although running as root");
        let (code, out, err) = h.run(&["start", "fd", "--yes", "--detach"]);
        assert_ne!(code, 0, "start succeeded on a {opts} state dir: {out}");
        assert!(err.contains(needle), "{opts}: {err}");
        assert!(err.contains("fix:"), "{opts}: {err}");
        assert!(
            temp_leftovers(&h.path().join("state")).is_empty(),
            "{opts}: temp files left"
        );
        for id in identities(&h) {
            assert!(labelled(&id).is_empty(), "{opts}: resources left for {id}");
            let meta = h.path().join("state").join(&id).join("metadata.json");
            if let Ok(text) = std::fs::read_to_string(&meta) {
                assert!(
                    serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                    "half-written metadata: {text:?}"
                );
            }
        }
    }
}

fn eight_concurrent_bottles_get_distinct_slots_and_cannot_reach_each_other() {
    let h = home();
    small_bottle(&h, "many");
    let children: Vec<_> = (0..8)
        .map(|_| {
            h.cmd(&["start", "many", "--yes", "--detach"])
                .stdout_capture()
                .stderr_capture()
                .unchecked()
                .start()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let o = c.wait().unwrap();
        assert!(
            o.status.success(),
            "a concurrent start failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        ids.push(String::from_utf8_lossy(&o.stdout).trim().to_owned());
    }
    struct RmAll<'a>(&'a BottleHome, Vec<String>);
    impl Drop for RmAll<'_> {
        fn drop(&mut self) {
            for id in &self.1 {
                let _ = self.0.run(&["rm", "-f", id]);
            }
        }
    }
    let _cleanup = RmAll(&h, ids.clone());
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 8, "identity collision: {ids:?}");
    let slots: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| std::fs::read_to_string(h.path().join("state").join(id).join("slot")).unwrap())
        .collect();
    assert_eq!(slots.len(), 8, "slot collision");
    let subnets: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| {
            docker(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
                &format!("bottle-{id}-int"),
            ])
            .1
        })
        .collect();
    assert_eq!(subnets.len(), 8, "subnet collision: {subnets:?}");
    let bundle_ip = |id: &str| {
        docker(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"bottle-{id}-int\").IPAddress}}}}"),
            &format!("bottle-{id}-bundle"),
        ])
        .1
    };
    for (i, a) in ids.iter().enumerate() {
        // control: its own bundle answers
        let (code, out) = h.exec(a, "timeout 5 bash -c 'echo > /dev/tcp/bundle/8888'");
        assert_eq!(code, 0, "{a} cannot reach its own bundle: {out}");
        for (j, b) in ids.iter().enumerate() {
            if i == j {
                continue;
            }
            let ip = bundle_ip(b);
            let (code, _) = h.exec(a, &format!("timeout 5 bash -c 'echo > /dev/tcp/{ip}/8888'"));
            assert_ne!(code, 0, "{a} reached the bundle of {b} at {ip}");
        }
    }
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![
        trial!(
            kill_9_after_each_launch_step_then_gc_leaves_nothing,
            &DOCKER,
            &SEEDED_BASE
        ),
        trial!(
            ctrl_c_during_build_removes_everything,
            &DOCKER,
            &SEEDED_BASE
        ),
        trial!(
            ctrl_c_at_the_preflight_prompt_creates_nothing,
            &DOCKER,
            &SEEDED_BASE
        ),
        trial!(
            corrupted_metadata_fails_resume_clearly_and_gc_still_works,
            &DOCKER,
            &SEEDED_BASE
        ),
        trial!(
            full_disk_and_read_only_state_fail_clearly_and_write_nothing_half,
            &DOCKER,
            &SEEDED_BASE,
            &ROOT
        ),
        trial!(
            eight_concurrent_bottles_get_distinct_slots_and_cannot_reach_each_other,
            &DOCKER,
            &SEEDED_BASE
        ),
    ]
}
