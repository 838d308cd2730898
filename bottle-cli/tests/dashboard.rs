//! The dashboard in a real terminal (tmux), run from a copy of the binary
//! that is replaced while it runs (a rebuild): `n` still launches (the
//! error of the launch itself reaches the status line, not a bare "No such
//! file or directory"), a bad agent name is said in the status line, Esc
//! does not quit, `q` does. No real engine: `PATH` holds a fake `docker`
//! whose daemon is down.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use bottle_test_gate::{run, trial, TMUX};

mod tmux;

use tmux::Session;

fn typed(text: &str) -> Vec<String> {
    text.chars().map(String::from).collect()
}

fn main() {
    run(vec![trial!(
        launches_survive_a_rebuilt_binary_and_errors_reach_the_status_line,
        &TMUX
    )])
}

fn launches_survive_a_rebuilt_binary_and_errors_reach_the_status_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = d.join("bottle");
    std::fs::copy(env!("CARGO_BIN_EXE_bottle"), &exe).unwrap();
    let home = d.join("home");
    let o = Command::new(&exe)
        .arg("--home")
        .arg(&home)
        .args(["init", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");

    let rc = d.join("rc");
    let s = Session(format!("bottle-cli-dash-{}", std::process::id()));
    let cmdline = format!(
        "cd {d} && PATH={bin}:/usr/bin:/bin {exe} --home {home} dashboard; echo $? > {rc}; sleep 30",
        d = d.display(),
        bin = bin.display(),
        exe = exe.display(),
        home = home.display(),
        rc = rc.display(),
    );
    let ok = Command::new("tmux")
        .args(["new-session", "-d", "-s", &s.0, "-x", "120", "-y", "30"])
        .arg(&cmdline)
        .status()
        .unwrap()
        .success();
    assert!(ok, "tmux session");
    s.wait_for("n new  s shell  l logs");

    // a rebuild replaces the file the dashboard runs from
    std::fs::remove_file(&exe).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_bottle"), &exe).unwrap();

    s.keys(&["n"]);
    s.keys(&typed("demo").iter().map(String::as_str).collect::<Vec<_>>());
    s.keys(&["Enter"]);
    let screen = s.wait_for("error: start demo:");
    assert!(screen.contains("unreachable"), "{screen}");
    assert!(!screen.contains("No such file"), "{screen}");

    s.keys(&["n"]);
    s.keys(
        &typed("nosuch")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    s.keys(&["Enter"]);
    let screen = s.wait_for("error: no agent named `nosuch`");
    assert!(!screen.contains("dashboard.log"), "{screen}");

    // Esc goes back, it does not quit; q quits
    s.keys(&["Escape"]);
    s.wait_for("q quits");
    assert!(!rc.exists());
    s.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rc.exists() {
        assert!(Instant::now() < deadline, "q did not quit:\n{}", s.pane());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    // the failed start left no bottle behind
    let left: Vec<_> = std::fs::read_dir(home.join("state"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
