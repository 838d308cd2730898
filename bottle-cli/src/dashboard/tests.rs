//! The dashboard's keys and screens against a recording operator (screens
//! as ratatui `TestBackend` snapshots), and the real operator on a temp home.

use std::cell::RefCell;
use std::sync::mpsc;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::Focus;
use super::model::{self, BottleRow, DecisionRow, QueueRow, Snapshot};
use super::view::{KEYS_BOTTLES, KEYS_QUEUE};
use super::{App, CliOperator, Done, Mode, Operator};
use bottle_host::supervise::{Request, RequestKind, Status};

#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<String>>,
}

impl Recorder {
    /// Note the call; the operator's answer is `Ok(reply)`.
    fn log(&self, call: String, reply: String) -> Result<String, String> {
        self.calls.borrow_mut().push(call);
        Ok(reply)
    }
}

impl Operator for Recorder {
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String> {
        self.log(
            format!("approve {req} {paths:?}"),
            format!("approved {req}"),
        )
    }
    fn deny(&self, req: &str, reason: &str) -> Result<String, String> {
        self.log(format!("deny {req} {reason}"), format!("denied {req}"))
    }
    fn start(&self, agent: &str) -> Result<String, String> {
        self.log(format!("start {agent}"), format!("starting {agent}"))
    }
    fn stop(&self, id: &str) -> Result<String, String> {
        self.log(format!("stop {id}"), format!("stopping {id}"))
    }
    fn resume(&self, id: &str) -> Result<String, String> {
        self.log(format!("resume {id}"), format!("resuming {id}"))
    }
    fn remove(&self, id: &str) -> Result<String, String> {
        self.log(format!("rm {id}"), format!("removing {id}"))
    }
    fn logs(&self, id: &str, stopped: bool) -> Result<String, String> {
        self.log(format!("logs {id} stopped={stopped}"), String::new())
    }
    fn shell(&self, id: &str) -> Result<String, String> {
        self.log(format!("shell {id}"), format!("shell in {id} ended"))
    }
}

fn screen(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_owned())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn bottles() -> Vec<BottleRow> {
    vec![
        BottleRow {
            identity: "demo-dev-k3x9qa".into(),
            agent: "demo".into(),
            backend: "docker".into(),
            state: "running".into(),
            age: "5m".into(),
            pending: 1,
        },
        BottleRow {
            identity: "fix-dev-77abcd".into(),
            agent: "fix".into(),
            backend: "smolmachines".into(),
            state: "degraded".into(),
            age: "2h".into(),
            pending: 0,
        },
    ]
}

fn request() -> QueueRow {
    QueueRow {
        identity: "demo-dev-k3x9qa".into(),
        request: Request {
            id: "req-20261124T050000Z-a1b2c3d4e5f60718".into(),
            kind: RequestKind::Egress {
                host: "pypi.org".into(),
                port: None,
                paths: vec!["/simple/**".into()],
                methods: vec!["GET".into()],
                allow_private: false,
            },
            reason: "install requests".into(),
            created: "2026-11-24T05:00:00Z".into(),
            status: Status::Pending,
            status_reason: None,
            expires_at: None,
            decision: None,
        },
        grant_ttl: Duration::from_secs(3600),
    }
}

fn decisions() -> Vec<DecisionRow> {
    vec![
        DecisionRow {
            time: "05:00:01".into(),
            ts: "2026-11-24T05:00:01Z".into(),
            identity: "demo-dev-k3x9qa".into(),
            sidecar: "egress".into(),
            decision: "allow".into(),
            what: "GET api.github.com/repos/x".into(),
        },
        DecisionRow {
            time: "05:00:02".into(),
            ts: "2026-11-24T05:00:02Z".into(),
            identity: "demo-dev-k3x9qa".into(),
            sidecar: "egress".into(),
            decision: "deny".into(),
            what: "CONNECT pypi.org".into(),
        },
    ]
}

#[test]
fn empty_screen() {
    insta::assert_snapshot!(screen(&App::default()));
}

#[test]
fn bottles_running_with_decisions() {
    let mut app = App::default();
    app.update(Snapshot {
        bottles: bottles(),
        decisions: decisions(),
        ..Default::default()
    });
    insta::assert_snapshot!(screen(&app));
}

#[test]
fn pending_request_then_approve() {
    let mut app = App::default();
    app.update(Snapshot {
        bottles: bottles(),
        queue: vec![request()],
        decisions: decisions(),
        ..Default::default()
    });
    app.on_key(
        KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE),
        &Recorder::default(),
    );
    insta::assert_snapshot!("pending", screen(&app));

    let op = Recorder::default();
    // `a` asks first, saying what will be granted and for how long
    assert!(!app.on_key(key('a'), &op));
    assert!(op.calls.borrow().is_empty());
    insta::assert_snapshot!("confirm_approve", screen(&app));
    assert!(!app.on_key(key('y'), &op));
    assert_eq!(
        op.calls.borrow().as_slice(),
        ["approve req-20261124T050000Z-a1b2c3d4e5f60718 None"]
    );
    // the next snapshot no longer has it pending; the decisions pane
    // shows what the approval granted (the audit line of the approve)
    let mut d = decisions();
    d.push(model::decision_row(APPROVE_LINE).unwrap());
    app.update(Snapshot {
        bottles: bottles(),
        decisions: d,
        ..Default::default()
    });
    insta::assert_snapshot!("after_approve", screen(&app));
}

/// What `queue::approve` writes to the audit log.
const APPROVE_LINE: &str = r#"{"ts":"2026-11-24T05:00:09Z","identity":"demo-dev-k3x9qa","sidecar":"supervise","event":"decision","actor":"operator","id":"req-20261124T050000Z-a1b2c3d4e5f60718","decision":"approve","kind":"egress","grant":{"kind":"egress","details":{"host":"pypi.org","paths":["/simple/**"],"methods":["GET"]}},"expires_at":"2026-11-24T06:00:09Z"}"#;

#[test]
fn any_other_key_than_y_cancels_an_approve() {
    let mut app = App::default();
    app.update(Snapshot {
        queue: vec![request()],
        ..Default::default()
    });
    let op = Recorder::default();
    app.on_key(key('a'), &op);
    let shown = screen(&app);
    for want in [
        "bottle  demo-dev-k3x9qa",
        "grants  egress to pypi.org paths /simple/** methods GET, for 1h",
        "reason  install requests",
        "approve a1b2c3? y/N",
    ] {
        assert!(shown.contains(want), "{want}:\n{shown}");
    }
    // Esc goes back: no approval, no quit
    assert!(!app.on_key(esc(), &op));
    assert!(op.calls.borrow().is_empty());
    assert!(screen(&app).contains("approve cancelled"));
}

#[test]
fn the_grant_text_names_everything_granted() {
    let mut q = request();
    assert_eq!(
        model::grant_text(&q),
        "egress to pypi.org paths /simple/** methods GET, for 1h"
    );
    q.request.kind = RequestKind::Egress {
        host: "x.test".into(),
        port: Some(8443),
        paths: vec![],
        methods: vec![],
        allow_private: false,
    };
    assert_eq!(
        model::grant_text(&q),
        "egress to x.test:8443 paths all paths methods all methods, for 1h"
    );
    q.request.kind = RequestKind::GitPush {
        remote: "origin".into(),
        ref_pattern: "refs/heads/bot/*".into(),
    };
    q.grant_ttl = Duration::from_secs(600);
    assert_eq!(
        model::grant_text(&q),
        "git push to origin refs refs/heads/bot/*, for 10m"
    );
    q.request.kind = RequestKind::Capability {
        kind: "package".into(),
        detail: "ripgrep".into(),
    };
    assert_eq!(
        model::grant_text(&q),
        "capability package: ripgrep (applied on resume), for 10m"
    );
}

#[test]
fn decisions_show_what_was_granted_or_refused() {
    let d = model::decision_row(APPROVE_LINE).unwrap();
    assert_eq!(d.decision, "approve");
    assert_eq!(d.what, "egress pypi.org GET /simple/** until 06:00:09");
    let d = model::decision_row(r#"{"ts":"2026-11-24T05:00:09Z","identity":"a-b-c","sidecar":"supervise","event":"decision","actor":"operator","id":"req-20261124T050000Z-ffeeddccbbaa0011","decision":"revoke","kind":"git_push"}"#).unwrap();
    assert_eq!(
        (d.decision.as_str(), d.what.as_str()),
        ("revoke", "git_push (ffeedd)")
    );
}

fn esc() -> KeyEvent {
    KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)
}

#[test]
fn esc_goes_back_and_never_quits() {
    let op = Recorder::default();
    let mut app = App::default();
    app.update(Snapshot {
        bottles: bottles(),
        ..Default::default()
    });
    assert!(!app.on_key(esc(), &op));
    assert_eq!(app.mode, Mode::Normal);
    for open in ['?', 'x', 'R', 'n', '/', 'l'] {
        app.on_key(key(open), &op);
        assert_ne!(app.mode, Mode::Normal, "{open}");
        assert!(!app.on_key(esc(), &op), "{open}");
        assert_eq!(app.mode, Mode::Normal, "esc after {open}");
    }
    // nothing was stopped, removed or started
    assert_eq!(
        op.calls.borrow().as_slice(),
        ["logs demo-dev-k3x9qa stopped=false"]
    );
    assert!(app.on_key(key('q'), &op));
}

#[test]
fn slash_filters_bottles_and_esc_clears_it() {
    let op = Recorder::default();
    let mut app = App::default();
    app.update(Snapshot {
        bottles: bottles(),
        queue: vec![request()],
        ..Default::default()
    });
    app.on_key(key('/'), &op);
    for c in "smol".chars() {
        app.on_key(key(c), &op);
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &op);
    insta::assert_snapshot!("filtered", screen(&app));
    // keys act on the bottle shown, not the first of all
    app.on_key(key('x'), &op);
    assert!(screen(&app).contains("stop fix-dev-77abcd? y/N"));
    app.on_key(esc(), &op);
    app.on_key(esc(), &op);
    assert!(app.filter.is_empty());
    assert!(screen(&app).contains(" bottles (2) "));
}

#[test]
fn bottle_keys_logs_shell_resume_rm() {
    let op = Recorder::default();
    let mut app = App::default();
    let mut b = bottles();
    b[1].state = "stopped".into();
    app.update(Snapshot {
        bottles: b,
        ..Default::default()
    });
    // l: the logs pane, filled when the fetch ends
    app.on_key(key('l'), &op);
    assert_eq!(app.mode, Mode::Logs("demo-dev-k3x9qa".into()));
    app.on_done(Done::Logs {
        identity: "demo-dev-k3x9qa".into(),
        lines: vec!["$ make test".into(), "ok: 12 passed".into()],
    });
    insta::assert_snapshot!("logs_pane", screen(&app));
    app.on_key(esc(), &op);
    // s: a shell, once the run loop hands the terminal over
    app.on_key(key('s'), &op);
    assert_eq!(app.shell.as_deref(), Some("demo-dev-k3x9qa"));
    // r on a running bottle says why not; on a stopped one resumes
    app.on_key(key('r'), &op);
    assert!(screen(&app).contains("demo-dev-k3x9qa is running: r resumes a stopped bottle"));
    app.on_key(key('j'), &op);
    app.shell = None;
    app.on_key(key('s'), &op);
    assert_eq!(app.shell, None);
    assert!(screen(&app).contains("a shell needs a running bottle"));
    app.on_key(key('r'), &op);
    // R asks, y removes
    app.on_key(key('R'), &op);
    assert!(screen(&app).contains("rm fix-dev-77abcd? its state, audit log and home volume"));
    app.on_key(key('y'), &op);
    assert_eq!(
        op.calls.borrow().as_slice(),
        [
            "logs demo-dev-k3x9qa stopped=false",
            "resume fix-dev-77abcd",
            "rm fix-dev-77abcd",
        ]
    );
    // the status line follows background work to its end
    app.on_done(Done::Status("removed fix-dev-77abcd".into()));
    assert!(screen(&app).contains("removed fix-dev-77abcd"));
}

#[test]
fn the_footer_lists_the_keys_and_fits_80_columns() {
    let mut app = App::default();
    app.update(Snapshot {
        bottles: bottles(),
        ..Default::default()
    });
    let s = screen(&app);
    assert!(s.lines().last().unwrap().starts_with(KEYS_BOTTLES), "{s}");
    assert!(KEYS_BOTTLES.chars().count() <= 80 && KEYS_QUEUE.chars().count() <= 80);
    for k in [
        "s shell", "l logs", "r resume", "x stop", "R rm", "/ filter",
    ] {
        assert!(KEYS_BOTTLES.contains(k), "{k}");
    }
    for k in ["a approve", "m narrow", "d deny"] {
        assert!(KEYS_QUEUE.contains(k), "{k}");
    }
}

/// A real operator on a temp home (`bottle init`'s files), its
/// background reports on `rx`.
fn real_operator() -> (tempfile::TempDir, CliOperator, mpsc::Receiver<Done>) {
    let dir = tempfile::tempdir().unwrap();
    let root = camino::Utf8PathBuf::from_path_buf(dir.path().join("home")).unwrap();
    for (p, text) in [
        ("bottles/dev.toml", crate::cmd::init::EXAMPLE_BOTTLE),
        ("agents/demo.toml", crate::cmd::init::DEMO_AGENT),
    ] {
        std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        std::fs::write(root.join(p), text).unwrap();
    }
    let home = bottle_core::Home::discover(Some(&root)).unwrap();
    let (tx, rx) = mpsc::channel();
    (dir, CliOperator::new(home, tx), rx)
}

#[test]
fn a_bad_agent_name_is_said_in_the_status_line() {
    let (_dir, op, _rx) = real_operator();
    let mut app = App::default();
    app.on_key(key('n'), &op);
    for c in "nosuch".chars() {
        app.on_key(key(c), &op);
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &op);
    let shown = screen(&app);
    let status = shown
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(status.contains("no agent named `nosuch`"), "{shown}");
    assert!(!shown.contains("dashboard.log"), "{shown}");
}

#[test]
fn a_stop_reports_when_it_ends() {
    let (_dir, op, rx) = real_operator();
    let mut app = App::default();
    app.report(op.stop("nosuch-dev-000000"));
    assert!(app.status.starts_with("stopping nosuch-dev-000000"));
    let d = rx.recv_timeout(Duration::from_secs(30)).expect("stop ends");
    app.on_done(d);
    assert!(
        app.status.starts_with("error: stop nosuch-dev-000000: "),
        "{}",
        app.status
    );
}

#[test]
fn a_long_status_wraps_onto_a_second_line() {
    let app = App {
        status: format!("error: {}(fix: the end)", "a word ".repeat(14)),
        ..Default::default()
    };
    let s = screen(&app);
    assert!(s.contains("(fix: the end)"), "{s}");
    assert!(s.lines().last().unwrap().starts_with(KEYS_BOTTLES), "{s}");
}

#[test]
fn narrow_deny_start_stop_and_help_keys() {
    let op = Recorder::default();
    let mut app = App::default();
    app.update(Snapshot {
        bottles: bottles(),
        queue: vec![request()],
        ..Default::default()
    });
    app.focus = Focus::Queue;
    app.on_key(key('m'), &op);
    for c in "/simple/requests/**".chars() {
        app.on_key(key(c), &op);
    }
    assert!(
        screen(&app).contains("approve only paths (space-separated globs): /simple/requests/**_")
    );
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &op);
    app.on_key(key('d'), &op);
    for c in "not now".chars() {
        app.on_key(key(c), &op);
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &op);
    app.on_key(key('n'), &op);
    for c in "demo".chars() {
        app.on_key(key(c), &op);
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), &op);
    app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE), &op);
    app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE), &op);
    app.on_key(key('x'), &op);
    assert!(screen(&app).contains("stop fix-dev-77abcd? y/N"));
    app.on_key(key('y'), &op);
    assert_eq!(
        op.calls.borrow().as_slice(),
        [
            "approve req-20261124T050000Z-a1b2c3d4e5f60718 Some([\"/simple/requests/**\"])",
            "deny req-20261124T050000Z-a1b2c3d4e5f60718 not now",
            "start demo",
            "stop fix-dev-77abcd",
        ]
    );
    app.on_key(key('?'), &op);
    assert!(screen(&app).contains("approve narrowed to the paths you type"));
    app.on_key(key('z'), &op);
    assert!(!app.on_key(key('j'), &op));
    assert!(app.on_key(key('q'), &op));
}

#[test]
fn audit_lines_flatten_for_the_tail() {
    let d = model::decision_row(r#"{"ts":"2026-11-24T05:00:02.123Z","identity":"a-b-c","sidecar":"egress","method":"GET","host":"x.test","path":"/p","decision":"deny","rule":"no-route"}"#).unwrap();
    assert_eq!(
        (d.time.as_str(), d.decision.as_str(), d.what.as_str()),
        ("05:00:02", "deny", "GET x.test/p")
    );
    let g = model::decision_row(r#"{"ts":"2026-11-24T05:00:03Z","identity":"a-b-c","sidecar":"git-gate","op":"push","remote":"origin","refs":["refs/heads/x"],"decision":"allow"}"#).unwrap();
    assert_eq!(g.what, "push origin refs/heads/x");
    assert!(model::decision_row("not json").is_none());
}

/// A running bottle's metadata in `home` (docker backend).
fn running_bottle(home: &bottle_core::Home, id: &str) {
    let state = home.state(&bottle_core::Identity::parse(id).unwrap());
    std::fs::create_dir_all(state.path()).unwrap();
    let meta = bottle_core::Metadata {
        schema_version: bottle_core::state::METADATA_SCHEMA,
        identity: id.into(),
        agent: "demo".into(),
        bottle: "dev".into(),
        backend: "docker".into(),
        runtime: "runc".into(),
        plan_hash: "0".repeat(64),
        images: Default::default(),
        created: "2025-01-01T00:00:00Z".into(),
        workspace: None,
        owner_pid: None,
        phase: bottle_core::state::Phase::Running,
        slot: 1,
        capabilities: Vec::new(),
    };
    std::fs::write(
        state.path().join("metadata.json"),
        serde_json::to_string_pretty(&meta).unwrap(),
    )
    .unwrap();
}

/// A refresh asks each engine twice (does it answer, every bottle's
/// health), however many bottles run: the dashboard stays current at scale
/// (docs/benchmarks.md "scale"). An engine that does not answer leaves its
/// bottles unknown, never "stopped".
#[cfg(feature = "docker")]
#[test]
fn a_refresh_asks_the_engine_once_for_every_bottle() {
    let dir = tempfile::tempdir().unwrap();
    let home = bottle_core::Home::new(camino::Utf8Path::from_path(dir.path()).unwrap());
    let ids = [
        "demo-dev-aaa001",
        "demo-dev-aaa002",
        "demo-dev-aaa003",
        "demo-dev-aaa004",
        "demo-dev-aaa005",
    ];
    for id in ids {
        running_bottle(&home, id);
    }
    let engine = bottle_core::RecordingRunner::new();
    engine.reply("docker version", 0, "20.10.24+dfsg1\n");
    let ps = "demo-dev-aaa001\tbottle-demo-dev-aaa001-agent\trunning\n\
              demo-dev-aaa001\tbottle-demo-dev-aaa001-bundle\trunning\n\
              demo-dev-aaa002\tbottle-demo-dev-aaa002-agent\trunning\n\
              demo-dev-aaa002\tbottle-demo-dev-aaa002-bundle\texited\n\
              demo-dev-aaa003\tbottle-demo-dev-aaa003-agent\trunning\n\
              demo-dev-aaa003\tbottle-demo-dev-aaa003-bundle\trunning\n";
    engine.reply("docker ps --all", 0, ps);
    let snap = model::collect(&home, &model::backend_health(&engine));
    let states: Vec<(&str, &str)> = snap
        .bottles
        .iter()
        .map(|b| (b.identity.as_str(), b.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("demo-dev-aaa001", "running"),
            ("demo-dev-aaa002", "degraded"),
            ("demo-dev-aaa003", "running"),
            ("demo-dev-aaa004", "stopped"),
            ("demo-dev-aaa005", "stopped"),
        ]
    );
    assert_eq!(engine.calls().len(), 2, "{}", engine.transcript());

    let down = bottle_core::RecordingRunner::new();
    down.reply("docker version", 1, "");
    let snap = model::collect(&home, &model::backend_health(&down));
    assert!(snap.bottles.iter().all(|b| b.state == "unknown"));
    assert_eq!(down.calls().len(), 1, "{}", down.transcript());
}
