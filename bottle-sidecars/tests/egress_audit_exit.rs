//! egress writes its audit lines off the request path (a queue and a writer
//! thread); stopping the daemon must still append every line it decided.
//!
//! Each test holds the audit log's lock (`audit.jsonl.lock`, the `flock`
//! every writer takes) so the writer cannot append anything, makes requests
//! that are each refused with an audit line, stops the process with SIGTERM
//! and only then lets the lock go: every line must be in the file once the
//! process has exited, and it must exit 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bottle_sidecars::bundle::{BundleConfig, EgressSection, SuperviseSection};
use bottle_sidecars::supervise::{self, queue};

const BIN: &str = env!("CARGO_BIN_EXE_bottle-sidecar");
/// Refused requests per test (each one audit line).
const REQUESTS: usize = 40;

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The audit log's lock file, held exclusively until dropped (closing the
/// descriptor releases the `flock`).
struct HeldLock {
    _file: std::fs::File,
}

impl HeldLock {
    fn take(audit: &Path) -> HeldLock {
        let mut p = audit.as_os_str().to_owned();
        p.push(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(p))
            .unwrap();
        // SAFETY: flock on a file descriptor this struct owns.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        HeldLock { _file: f }
    }
}

/// An egress state dir: CA, secrets dir, routes.toml with no route (every
/// request is refused), audit dir apart as in a bundle.
fn egress_state(state: &Path) -> PathBuf {
    bottle_sidecars::egress::ca::generate_ca(&state.join("ca")).unwrap();
    std::fs::create_dir_all(state.join("egress")).unwrap();
    std::fs::create_dir_all(state.join("secrets")).unwrap();
    std::fs::create_dir_all(state.join("audit")).unwrap();
    let routes = state.join("egress/routes.toml");
    std::fs::write(&routes, "identity = \"exit-test\"\n").unwrap();
    routes
}

/// `REQUESTS` plain-HTTP requests to a host no route names: each is
/// answered 403 (and audited) although the audit writer is blocked.
fn refused_requests(proxy: SocketAddr) {
    for i in 0..REQUESTS {
        let mut s = TcpStream::connect(proxy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET http://denied-{i}.test/x HTTP/1.1\r\nHost: denied-{i}.test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    }
}

/// SIGTERM `child`, let the audit lock go a little later, wait for the
/// exit; then every refused request must have its line.
fn stop_and_check(mut child: Child, lock: HeldLock, audit: &Path) {
    // SAFETY: kill(2) on the pid of a child this test started.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    // Give the process time to reach its exit path while the writer is
    // still blocked; a process that dies without flushing is gone by now.
    std::thread::sleep(Duration::from_millis(300));
    drop(lock);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let refused: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON line"))
        .filter(|l| l["sidecar"] == "egress" && l["rule"] == "no-route")
        .map(|l| l["host"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: Vec<String> = (0..REQUESTS).map(|i| format!("denied-{i}.test")).collect();
    assert_eq!(refused, want, "every refusal audited once, in order");
}

#[test]
fn standalone_egress_appends_every_queued_line_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let routes = egress_state(state);
    let audit = state.join("audit/audit.jsonl");
    let listen = free_port();
    let mut child = Command::new(BIN)
        .args(["egress", "--config"])
        .arg(&routes)
        .arg("--ca-dir")
        .arg(state.join("ca"))
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--audit")
        .arg(&audit)
        .arg("--secrets-dir")
        .arg(state.join("secrets"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let lock = HeldLock::take(&audit);
    refused_requests(listen);
    stop_and_check(child, lock, &audit);
}

#[test]
fn bundle_appends_every_queued_egress_line_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let routes = egress_state(&state);
    let audit = dir.path().join("audit/audit.jsonl");
    let egress_listen = free_port();
    std::fs::create_dir_all(state.join("supervise")).unwrap();
    let key = queue::init(&state).unwrap();
    supervise::SvConfig {
        operator_key: Some(key),
        ..Default::default()
    }
    .save(&supervise::sv_path(&state))
    .unwrap();
    let config = BundleConfig {
        identity: "exit-test".into(),
        audit: audit.clone(),
        audit_rotation: None,
        egress: Some(EgressSection {
            listen: egress_listen,
            routes,
            ca_dir: state.join("ca"),
            secrets_dir: Some(state.join("secrets")),
            max_connections: None,
            max_buffered_bytes: None,
            upstream_ca: None,
        }),
        git_gate: None,
        supervise: Some(SuperviseSection {
            listen: free_port(),
            config: supervise::sv_path(&state),
            queue: state.join("queue"),
        }),
        access_key: None,
        dlp: None,
        ready_file: None,
    };
    let path = dir.path().join("bundle.toml");
    config.save(&path).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "bottle-sidecar: ready\n");
    let lock = HeldLock::take(&audit);
    refused_requests(egress_listen);
    stop_and_check(child, lock, &audit);
}
