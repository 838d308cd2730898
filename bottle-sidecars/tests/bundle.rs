//! The bundle supervisor: all daemons up → one `ready`; any daemon exits →
//! every daemon stops (their ports close) and the process fails.
//!
//! The bundle with a git-gate needs git: without it that test is reported
//! ignored with the reason, and failed with `CI=true` (`bottle-test-gate`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bottle_sidecars::audit::AuditLog;
use bottle_sidecars::bundle::{
    BundleConfig, EgressSection, Exit, GitGateSection, SuperviseSection, Supervisor,
};
use bottle_sidecars::supervise::{self, queue};
use bottle_test_gate::{gated, run, trial, Trial, GIT};

fn main() {
    run(vec![
        trial!(config_round_trips_and_is_checked),
        on_tokio(
            "one_daemon_exiting_stops_all_of_them",
            one_daemon_exiting_stops_all_of_them,
        ),
        on_tokio(
            "a_daemon_failing_at_start_means_never_ready",
            a_daemon_failing_at_start_means_never_ready,
        ),
        trial!(
            binary_prints_ready_passes_health_and_health_fails_when_killed,
            &GIT
        ),
        trial!(binary_refuses_to_run_when_a_daemon_cannot_start),
        trial!(the_ready_file_exists_exactly_while_every_daemon_listens),
    ])
}

/// The async test `test` on a two-worker runtime of its own, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` runs one.
fn on_tokio<F: std::future::Future<Output = ()> + 'static>(name: &str, test: fn() -> F) -> Trial {
    gated(name, &[], move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(test())
    })
}

const BIN: &str = env!("CARGO_BIN_EXE_bottle-sidecar");

/// A state dir with a valid sv.toml; returns the supervise section.
fn supervise_section(state: &Path, listen: SocketAddr) -> SuperviseSection {
    std::fs::create_dir_all(state.join("supervise")).unwrap();
    let key = queue::init(state).unwrap();
    let sv = supervise::SvConfig {
        operator_key: Some(key),
        ..Default::default()
    };
    sv.save(&supervise::sv_path(state)).unwrap();
    SuperviseSection {
        listen,
        config: supervise::sv_path(state),
        queue: state.join("queue"),
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A daemon that binds, reports ready, and fails after `after`.
async fn flaky_daemon(
    ready: tokio::sync::oneshot::Sender<SocketAddr>,
    after: Duration,
    fail: bool,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let _ = ready.send(listener.local_addr().unwrap());
    tokio::time::sleep(after).await;
    if fail {
        Err("boom".into())
    } else {
        Ok(())
    }
}

fn config_round_trips_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.toml");
    let config: BundleConfig = toml::from_str(
        r#"
identity = "demo-dev-a1b2"
audit = "/bottle/audit/audit.jsonl"
[egress]
routes = "/bottle/egress/routes.toml"
ca_dir = "/bottle/ca"
secrets_dir = "/bottle/secrets"
[supervise]
config = "/bottle/supervise/sv.toml"
queue = "/bottle/queue"
"#,
    )
    .unwrap();
    assert!(config.git_gate.is_none());
    assert_eq!(config.egress.as_ref().unwrap().listen.port(), 8888);
    assert_eq!(config.supervise.as_ref().unwrap().listen.port(), 9100);
    config.save(&path).unwrap();
    assert_eq!(BundleConfig::load(&path).unwrap(), config);

    let empty = BundleConfig {
        identity: "x".into(),
        audit: "/a".into(),
        audit_rotation: None,
        egress: None,
        git_gate: None,
        supervise: None,
        access_key: None,
        dlp: None,
        ready_file: None,
    };
    assert!(empty.save(&path).unwrap_err().contains("no daemon"));
    let mut clash = config.clone();
    clash.supervise.as_mut().unwrap().listen = "0.0.0.0:8888".parse().unwrap();
    assert!(clash.check().unwrap_err().contains("8888"));
    std::fs::write(&path, "identity = \"x\"\naudit = \"/a\"\n[supervise]\nconfig = \"/s\"\nqueue = \"/q\"\ntypo = 1\n").unwrap();
    assert!(BundleConfig::load(&path).is_err());
}

async fn one_daemon_exiting_stops_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let section = supervise_section(&state, "127.0.0.1:0".parse().unwrap());
    let audit = AuditLog::open(&dir.path().join("audit.jsonl"), "t").unwrap();
    for fail in [true, false] {
        let mut sup = Supervisor::new();
        let opts = supervise::Options {
            listen: section.listen,
            config: section.config.clone(),
            queue: section.queue.clone(),
            access_key: None,
        };
        let a = audit.clone();
        sup.add("supervise", move |ready| supervise::serve(opts, a, ready));
        sup.add("test", move |ready| {
            flaky_daemon(ready, Duration::from_millis(500), fail)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let exit = sup
            .run(move |addrs| {
                // Both are bound and answering when ready fires.
                for (_, addr) in addrs {
                    assert!(accepts(*addr), "{addr}");
                }
                tx.send(addrs.to_vec()).unwrap();
            })
            .await;
        let addrs = rx.recv().unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(
            exit,
            Exit::DaemonExited {
                daemon: "test".into(),
                reason: if fail { "boom".into() } else { "exited".into() },
                after_ready: true,
            }
        );
        // Fail closed: the healthy daemon is gone too.
        let sv = addrs.iter().find(|(n, _)| n == "supervise").unwrap().1;
        assert!(
            !accepts(sv),
            "supervise still listening on {sv} after the bundle stopped"
        );
    }
}

async fn a_daemon_failing_at_start_means_never_ready() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let section = supervise_section(&state, "127.0.0.1:0".parse().unwrap());
    let mut sup = Supervisor::new();
    let opts = supervise::Options {
        listen: section.listen,
        config: section.config.clone(),
        queue: section.queue.clone(),
        access_key: None,
    };
    sup.add("supervise", move |ready| {
        supervise::serve(opts, AuditLog::discard("t"), ready)
    });
    sup.add("broken", |_ready| async { Err::<(), _>("config invalid") });
    let exit = sup.run(|_| panic!("must not be ready")).await;
    assert_eq!(
        exit,
        Exit::DaemonExited {
            daemon: "broken".into(),
            reason: "config invalid".into(),
            after_ready: false
        }
    );

    let mut sup = Supervisor::new().ready_timeout(Duration::from_millis(300));
    sup.add("slow", |ready| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ready);
        Ok::<(), String>(())
    });
    let exit = sup.run(|_| panic!("must not be ready")).await;
    assert_eq!(
        exit,
        Exit::NotReady {
            missing: vec!["slow".into()]
        }
    );
}

fn write_bundle(dir: &Path, supervise: SuperviseSection) -> PathBuf {
    write_bundle_with(dir, None, supervise)
}

/// An `[egress]` section with a generated CA and an empty routes.toml.
fn egress_section(state: &Path, listen: SocketAddr) -> EgressSection {
    let ca_dir = state.join("ca");
    bottle_sidecars::egress::ca::generate_ca(&ca_dir).unwrap();
    std::fs::create_dir_all(state.join("egress")).unwrap();
    std::fs::create_dir_all(state.join("secrets")).unwrap();
    std::fs::write(
        state.join("egress/routes.toml"),
        "identity = \"demo-dev-abc1\"\n",
    )
    .unwrap();
    EgressSection {
        listen,
        routes: state.join("egress/routes.toml"),
        ca_dir,
        secrets_dir: Some(state.join("secrets")),
        max_connections: None,
        max_buffered_bytes: None,
        upstream_ca: None,
    }
}

/// A `[git_gate]` section with one `file://` remote (a fresh bare repo).
fn git_gate_section(state: &Path, listen: SocketAddr) -> GitGateSection {
    let upstream = state.join("upstream.git");
    let st = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&upstream)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir_all(state.join("git")).unwrap();
    std::fs::create_dir_all(state.join("secrets")).unwrap();
    let gate = format!(
        "identity = \"demo-dev-abc1\"\nmirrors_dir = {:?}\nsecrets_dir = {:?}\n\n[[remotes]]\nname = \"origin\"\nurl = \"file://{}\"\npush = [\"refs/heads/bot/*\"]\n",
        state.join("git/mirrors"),
        state.join("secrets"),
        upstream.display()
    );
    std::fs::write(state.join("git/gate.toml"), gate).unwrap();
    GitGateSection {
        listen,
        config: state.join("git/gate.toml"),
        hook_program: None,
    }
}

fn write_bundle_with(
    dir: &Path,
    egress: Option<EgressSection>,
    supervise: SuperviseSection,
) -> PathBuf {
    write_bundle_full(dir, egress, None, supervise)
}

fn write_bundle_full(
    dir: &Path,
    egress: Option<EgressSection>,
    git_gate: Option<GitGateSection>,
    supervise: SuperviseSection,
) -> PathBuf {
    let config = BundleConfig {
        identity: "demo-dev-abc1".into(),
        audit: dir.join("audit/audit.jsonl"),
        audit_rotation: None,
        egress,
        git_gate,
        supervise: Some(supervise),
        access_key: None,
        dlp: None,
        ready_file: None,
    };
    let path = dir.join("bundle.toml");
    config.save(&path).unwrap();
    path
}

fn health(config: &Path) -> i32 {
    Command::new(BIN)
        .args(["health", "--config"])
        .arg(config)
        .args(["--timeout", "500ms"])
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

fn binary_prints_ready_passes_health_and_health_fails_when_killed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let egress = egress_section(&state, free_port());
    let egress_addr = egress.listen;
    let git = git_gate_section(&state, free_port());
    let git_addr = git.listen;
    let config = write_bundle_full(
        dir.path(),
        Some(egress),
        Some(git),
        supervise_section(&state, free_port()),
    );
    assert_eq!(health(&config), 1, "nothing listens yet");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "bottle-sidecar: ready\n");
    assert_eq!(health(&config), 0);
    assert!(accepts(egress_addr));
    // The gate in the bundle serves git for real.
    let ls = Command::new("git")
        .args(["ls-remote", &format!("git://{git_addr}/origin.git")])
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let audit = audit_lines(&dir.path().join("audit/audit.jsonl"));
    assert!(audit.iter().any(|l| l["sidecar"] == "bundle"
        && l["event"] == "ready"
        && l["identity"] == "demo-dev-abc1"));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&config) != 1 {
        assert!(Instant::now() < deadline, "port still open after kill");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `bottle-sidecar run --config <config>` to its end.
fn run_bundle(config: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn binary_refuses_to_run_when_a_daemon_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let section = supervise_section(&dir.path().join("state"), addr);
    // Invalid supervise config: no operator key → the daemon refuses, the bundle exits.
    std::fs::write(&section.config, "grant_ttl = \"1h\"\n").unwrap();
    let config = write_bundle(dir.path(), section);
    let out = run_bundle(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("supervise stopped") && stderr.contains("operator_key"),
        "{stderr}"
    );
    let audit = audit_lines(&dir.path().join("audit/audit.jsonl"));
    assert!(audit.iter().any(|l| l["event"] == "stop"
        && l["daemon"] == "supervise"
        && l["decision"] == "fail-closed"));

    // A port already taken: the bundle exits non-zero, never ready.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let section = supervise_section(&dir.path().join("state2"), taken.local_addr().unwrap());
    let config = write_bundle(dir.path(), section);
    let out = run_bundle(&config);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));

    // An invalid bundle.toml is a usage error.
    std::fs::write(&config, "identity = 1\n").unwrap();
    let out = run_bundle(&config);
    assert_eq!(out.status.code(), Some(2));
}

/// The host waits for `ready_file` instead of polling `health` over
/// `docker exec` (ARCHITECTURE.md "Data flow of `bottle start <agent>`"):
/// a stale one is removed at start, it appears only once every daemon
/// listens, and it is gone after a stop.
fn the_ready_file_exists_exactly_while_every_daemon_listens() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let egress = egress_section(&state, free_port());
    let egress_addr = egress.listen;
    let sv = supervise_section(&state, free_port());
    let sv_addr = sv.listen;
    let config = write_bundle_with(dir.path(), Some(egress), sv);
    let ready = dir.path().join("run/bundle.ready");
    std::fs::create_dir_all(ready.parent().unwrap()).unwrap();
    std::fs::write(&ready, "stale\n").unwrap();
    let mut c = BundleConfig::load(&config).unwrap();
    c.ready_file = Some(ready.clone());
    c.save(&config).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "bottle-sidecar: ready\n");
    let text = std::fs::read_to_string(&ready).expect("ready file written");
    assert_eq!(text, format!("ready {}\n", child.id()));
    assert!(accepts(egress_addr) && accepts(sv_addr));
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!ready.exists(), "ready file left after the bundle stopped");
    // A bundle whose daemon cannot start never says it is ready, and a
    // stale file does not survive it.
    std::fs::write(&ready, "stale\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = BundleConfig::load(&config).unwrap();
    c.egress.as_mut().unwrap().listen = taken.local_addr().unwrap();
    c.save(&config).unwrap();
    let out = run_bundle(&config);
    assert_ne!(out.status.code(), Some(0));
    assert!(!ready.exists(), "ready file after a failed start");
}
