//! Ctrl-C during `bottle start` in a real terminal (tmux) leaves a clean
//! screen: the step lines and the error, no spinner line, exit 130. No real
//! engine: a fake `docker` hangs in `network create` so the spinner is up
//! when the key arrives. Also when the Ctrl-C comes before the launch
//! handles it (`resume` probing gVisor, a fake `docker info` that hangs):
//! the process dies of SIGINT, and the spinner's line goes with it.

use std::path::Path;
use std::time::Duration;

use bottle_test_gate::{run, trial, TMUX};

mod tmux;

use tmux::{fake_docker, init_home, Session};

fn main() {
    run(vec![
        trial!(ctrl_c_during_start_leaves_no_spinner_line, &TMUX),
        trial!(
            ctrl_c_before_the_launch_handles_it_leaves_no_spinner_line,
            &TMUX
        ),
    ])
}

const SPINNER: &str = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏";

fn assert_no_spinner(screen: &str) {
    for l in screen.lines() {
        assert!(!l.contains('…'), "spinner left: {l:?}\n{screen}");
        assert!(
            !l.chars().any(|c| SPINNER.contains(c)),
            "spinner left: {l:?}\n{screen}"
        );
    }
}

/// Once the screen shows `spinner`, Ctrl-C; the exit code the session's
/// command line wrote to `rc` when the command ended, and the screen then.
fn ctrl_c_at(session: &Session, spinner: &str, rc: &Path) -> (String, String) {
    session.wait_for(spinner);
    std::thread::sleep(Duration::from_millis(1200));
    session.keys(&["C-c"]);
    session.wait_for_file(rc, "no end after Ctrl-C", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let screen = session.pane();
    let code = std::fs::read_to_string(rc).unwrap().trim().to_owned();
    (code, screen)
}

fn ctrl_c_during_start_leaves_no_spinner_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("cwd")).unwrap();
    let bin = fake_docker(
        d,
        "case \"$1 $2\" in version*) echo 20.10.0;; 'network create') sleep 30;; esac\nexit 0\n",
    );
    let exe = env!("CARGO_BIN_EXE_bottle");
    let home = d.join("home");
    init_home(exe.as_ref(), &home);

    let rc = d.join("rc");
    // a width where the bar would fill the line to its last column
    let cmdline = format!(
        "cd {cwd} && PATH={bin}:/usr/bin:/bin {exe} --home {home} start demo --yes --backend docker; echo $? > {rc}; sleep 30",
        cwd = d.join("cwd").display(),
        bin = bin.display(),
        home = home.display(),
        rc = rc.display(),
    );
    let session = Session::start("bottle-cli-int", (100, 30), &cmdline);
    let (code, screen) = ctrl_c_at(&session, "create internal network …", &rc);
    assert_eq!(code, "130", "{screen}");
    assert!(
        screen.contains("error: interrupted during create internal network"),
        "{screen}"
    );
    // the finished step is a plain line; the spinner's line is gone
    assert!(screen.contains("] create internal network ("), "{screen}");
    assert_no_spinner(&screen);
}

fn ctrl_c_before_the_launch_handles_it_leaves_no_spinner_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = fake_docker(
        d,
        "case \"$1\" in version) echo 20.10.0;; info) sleep 30;; esac\nexit 0\n",
    );
    let exe = env!("CARGO_BIN_EXE_bottle");
    let home = d.join("home");
    init_home(exe.as_ref(), &home);
    // a stopped bottle to resume
    let id = "demo-dev-abcdef";
    let state = home.join("state").join(id);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("slot"), "1").unwrap();
    let meta = serde_json::json!({
        "schema_version": 1, "identity": id, "agent": "demo", "bottle": "dev",
        "backend": "docker", "runtime": "runc", "plan_hash": "0".repeat(64),
        "images": {}, "created": "2025-01-01T00:00:00Z", "workspace": null,
        "owner_pid": null, "phase": "stopped", "slot": 1, "capabilities": []
    });
    std::fs::write(state.join("metadata.json"), meta.to_string()).unwrap();

    let rc = d.join("rc");
    // the shell outlives the SIGINT (a trap, not an ignore: `bottle` gets
    // the default action) and records how `bottle` ended
    let cmdline = format!(
        "trap : INT; cd {d} && PATH={bin}:/usr/bin:/bin {exe} --home {home} resume {id}; echo $? > {rc}; sleep 30",
        d = d.display(),
        bin = bin.display(),
        home = home.display(),
        rc = rc.display(),
    );
    let session = Session::start("bottle-cli-int2", (100, 20), &cmdline);
    let (code, screen) = ctrl_c_at(&session, "check base image …", &rc);
    // died of SIGINT (128 + 2)
    assert_eq!(code, "130", "{screen}");
    assert_no_spinner(&screen);
}
