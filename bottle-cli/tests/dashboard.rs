//! The dashboard in a real terminal (tmux). With a real engine: a bottle
//! started, stopped, resumed, its logs read and removed from the dashboard,
//! in its own process. Without one, run from a copy of the binary
//! that is replaced while it runs (a rebuild): `n` still launches (the
//! error of the launch itself reaches the status line, not a bare "No such
//! file or directory"), a bad agent name is said in the status line, Esc
//! does not quit, `q` does. No real engine: `PATH` holds a fake `docker`
//! whose daemon is down.

use std::process::Command;
use std::time::Duration;

use bottle_test_gate::{run_with, trial, Arguments, DOCKER, TMUX};

mod tmux;

use tmux::{fake_docker, init_home, Session};

fn main() {
    // One at a time: the first test copies the binary and runs the copy;
    // a process the other test forks meanwhile would inherit the copy's
    // open write descriptor, and running it would fail with "Text file
    // busy" (ETXTBSY).
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    run_with(
        &args,
        vec![
            trial!(
                launches_survive_a_rebuilt_binary_and_errors_reach_the_status_line,
                &TMUX
            ),
            trial!(
                start_stop_resume_logs_and_rm_run_in_process_on_a_real_engine,
                &TMUX,
                &DOCKER
            ),
        ],
    )
}

/// `bottle --home <home> <args>` with the test's binary, its stdout.
fn bottle(home: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "bottle {args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// The one bottle of `home` and its state, from `bottle ls --json`.
fn only_bottle(home: &std::path::Path) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(&bottle(home, &["ls", "--json"])).unwrap();
    let rows = v["bottles"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    (
        rows[0]["identity"].as_str().unwrap().to_owned(),
        rows[0]["state"].as_str().unwrap().to_owned(),
    )
}

/// Wait until the bottles table shows `id` in `state`.
fn wait_for_row(s: &Session, id: &str, state: &str) {
    s.wait_for_line(&format!("the row of {id} {state}"), |l| {
        l.starts_with(&format!("│{id} ")) && l.split_whitespace().any(|w| w == state)
    });
}

/// The dashboard drives a real bottle through the lifecycle library in its
/// own process (no `bottle` child): `n` starts it with its launch steps on
/// the status line, `x` stops it, `r` resumes it, `l` shows the agent's
/// output, `R` removes it; `bottle ls` and the engine agree at each step.
fn start_stop_resume_logs_and_rm_run_in_process_on_a_real_engine() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    bottle(&home, &["init", "-q"]);
    std::fs::write(
        home.join("agents/tick.toml"),
        "bottle = \"dev\"\ncommand = [\"sh\", \"-c\", \"echo dashboard-tick-ok; exec sleep infinity\"]\n",
    )
    .unwrap();
    let cmdline = format!(
        "{exe} --home {home} dashboard; sleep 30",
        exe = env!("CARGO_BIN_EXE_bottle"),
        home = home.display(),
    );
    let s = Session::start("bottle-cli-dash-real", (160, 40), &cmdline);
    s.wait_for("n new  s shell  l logs");
    // a first start may build the sidecar and agent images
    let long = Duration::from_secs(300);

    s.keys(&["n"]);
    s.type_text("tick");
    s.keys(&["Enter"]);
    s.wait_for_within("started tick", long);
    let (id, state) = only_bottle(&home);
    assert_eq!(state, "running");
    s.wait_for(&id);

    s.keys(&["x", "y"]);
    s.wait_for_within(&format!("stopped {id}"), long);
    assert_eq!(only_bottle(&home).1, "stopped");
    // the table refreshes on its own, after the status line (`r` on a row
    // still shown running is refused)
    wait_for_row(&s, &id, "stopped");

    s.keys(&["r"]);
    s.wait_for_within(&format!("resumed {id}"), long);
    assert_eq!(only_bottle(&home).1, "running");
    wait_for_row(&s, &id, "running");

    s.keys(&["l"]);
    let screen = s.wait_for("dashboard-tick-ok");
    assert!(!screen.contains("error:"), "{screen}");
    s.keys(&["Escape"]);

    s.keys(&["R", "y"]);
    s.wait_for_within(&format!("removed {id}"), long);
    s.keys(&["q"]);
    // no bottle's state is left (the home's own lock and caches stay)
    let left: Vec<_> = std::fs::read_dir(home.join("state"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let o = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.bottle.identity={id}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "",
        "containers left"
    );
}

fn launches_survive_a_rebuilt_binary_and_errors_reach_the_status_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = fake_docker(
        d,
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n",
    );
    let exe = d.join("bottle");
    std::fs::copy(env!("CARGO_BIN_EXE_bottle"), &exe).unwrap();
    let home = d.join("home");
    init_home(&exe, &home);

    let rc = d.join("rc");
    let cmdline = format!(
        "cd {d} && PATH={bin}:/usr/bin:/bin {exe} --home {home} dashboard; echo $? > {rc}; sleep 30",
        d = d.display(),
        bin = bin.display(),
        exe = exe.display(),
        home = home.display(),
        rc = rc.display(),
    );
    let s = Session::start("bottle-cli-dash", (120, 30), &cmdline);
    s.wait_for("n new  s shell  l logs");

    // a rebuild replaces the file the dashboard runs from
    std::fs::remove_file(&exe).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_bottle"), &exe).unwrap();

    s.keys(&["n"]);
    s.type_text("demo");
    s.keys(&["Enter"]);
    let screen = s.wait_for("error: start demo:");
    assert!(screen.contains("unreachable"), "{screen}");
    assert!(!screen.contains("No such file"), "{screen}");

    s.keys(&["n"]);
    s.type_text("nosuch");
    s.keys(&["Enter"]);
    let screen = s.wait_for("error: no agent named `nosuch`");
    assert!(!screen.contains("dashboard.log"), "{screen}");

    // Esc goes back, it does not quit; q quits
    s.keys(&["Escape"]);
    s.wait_for("q quits");
    assert!(!rc.exists());
    s.keys(&["q"]);
    s.wait_for_file(&rc, "q did not quit", Duration::from_secs(10));
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    // the failed start left no bottle behind
    let left: Vec<_> = std::fs::read_dir(home.join("state"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
