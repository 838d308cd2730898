//! `bottle dashboard`: bottles, a live tail of egress/git decisions, and the
//! permission queue with approve / approve-narrowed / deny keys.
//!
//! [`App`] is the whole UI state and key handling, rendered by [`App::draw`]
//! (tested against ratatui's `TestBackend`). Data arrives from a background
//! collector thread as [`model::Snapshot`]s, so a slow engine never blocks
//! input; actions go through the [`Operator`] trait.

pub mod model;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use model::Snapshot;

/// What the dashboard's keys do (the CLI's real impl and a test recorder).
pub trait Operator {
    /// Approve a request, optionally narrowed to these path globs.
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String>;
    /// Deny a request.
    fn deny(&self, req: &str, reason: &str) -> Result<String, String>;
    /// Start an agent in the background.
    fn start(&self, agent: &str) -> Result<String, String>;
    /// Stop a bottle in the background.
    fn stop(&self, identity: &str) -> Result<String, String>;
}

/// Which list the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Bottles.
    Bottles,
    /// Requests.
    Queue,
}

/// What typed text is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Path globs for approve-narrowed of this request.
    Narrow(String),
    /// Deny reason for this request.
    Deny(String),
    /// Agent name to start.
    NewAgent,
}

/// Screen mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Lists.
    Normal,
    /// Help overlay.
    Help,
    /// A one-line prompt.
    Typing(Input, String),
    /// Confirm stopping this bottle.
    ConfirmStop(String),
}

/// The dashboard state.
#[derive(Debug)]
pub struct App {
    /// Latest data.
    pub snap: Snapshot,
    /// Focused list.
    pub focus: Focus,
    /// Selected bottle.
    pub bottle: usize,
    /// Selected request.
    pub req: usize,
    /// Mode.
    pub mode: Mode,
    /// Last action's message.
    pub status: String,
}

impl Default for App {
    fn default() -> Self {
        Self {
            snap: Snapshot::default(),
            focus: Focus::Bottles,
            bottle: 0,
            req: 0,
            mode: Mode::Normal,
            status: String::new(),
        }
    }
}

fn clamp(i: usize, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        i.min(len - 1)
    }
}

impl App {
    /// Take a new snapshot, keeping selections in range.
    pub fn update(&mut self, snap: Snapshot) {
        self.snap = snap;
        self.bottle = clamp(self.bottle, self.snap.bottles.len());
        self.req = clamp(self.req, self.snap.queue.len());
        if self.snap.bottles.is_empty() && !self.snap.queue.is_empty() {
            self.focus = Focus::Queue;
        }
    }

    fn selected_req(&self) -> Option<String> {
        self.snap.queue.get(self.req).map(|q| q.request.id.clone())
    }

    fn report(&mut self, r: Result<String, String>) {
        self.status = match r {
            Ok(m) => m,
            Err(e) => format!("error: {e}"),
        };
    }

    /// Handle one key; returns true to quit.
    pub fn on_key(&mut self, key: KeyEvent, op: &dyn Operator) -> bool {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return true;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => {}
            Mode::ConfirmStop(id) => {
                if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                    let r = op.stop(&id);
                    self.report(r);
                } else {
                    self.status = "stop cancelled".into();
                }
            }
            Mode::Typing(what, mut buf) => match key.code {
                KeyCode::Esc => self.status = "cancelled".into(),
                KeyCode::Enter => {
                    let text = buf.trim().to_owned();
                    let r = match &what {
                        Input::Narrow(req) => {
                            let paths: Vec<String> =
                                text.split_whitespace().map(str::to_owned).collect();
                            op.approve(req, (!paths.is_empty()).then_some(paths))
                        }
                        Input::Deny(req) => op.deny(
                            req,
                            if text.is_empty() {
                                "denied by the operator"
                            } else {
                                &text
                            },
                        ),
                        Input::NewAgent if text.is_empty() => Err("no agent name given".into()),
                        Input::NewAgent => op.start(&text),
                    };
                    self.report(r);
                }
                KeyCode::Backspace => {
                    buf.pop();
                    self.mode = Mode::Typing(what, buf);
                }
                KeyCode::Char(c) => {
                    buf.push(c);
                    self.mode = Mode::Typing(what, buf);
                }
                _ => self.mode = Mode::Typing(what, buf),
            },
            Mode::Normal => match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return true,
                KeyCode::Char('?') => self.mode = Mode::Help,
                KeyCode::Tab => {
                    self.focus = match self.focus {
                        Focus::Bottles => Focus::Queue,
                        Focus::Queue => Focus::Bottles,
                    }
                }
                KeyCode::Down | KeyCode::Char('j') => match self.focus {
                    Focus::Bottles => self.bottle = clamp(self.bottle + 1, self.snap.bottles.len()),
                    Focus::Queue => self.req = clamp(self.req + 1, self.snap.queue.len()),
                },
                KeyCode::Up | KeyCode::Char('k') => match self.focus {
                    Focus::Bottles => self.bottle = self.bottle.saturating_sub(1),
                    Focus::Queue => self.req = self.req.saturating_sub(1),
                },
                KeyCode::Char('a') => match self.selected_req() {
                    Some(req) => {
                        let r = op.approve(&req, None);
                        self.report(r);
                    }
                    None => self.status = "no pending request to approve".into(),
                },
                KeyCode::Char('m') => match self.selected_req() {
                    Some(req) => self.mode = Mode::Typing(Input::Narrow(req), String::new()),
                    None => self.status = "no pending request to narrow".into(),
                },
                KeyCode::Char('d') => match self.selected_req() {
                    Some(req) => self.mode = Mode::Typing(Input::Deny(req), String::new()),
                    None => self.status = "no pending request to deny".into(),
                },
                KeyCode::Char('n') => self.mode = Mode::Typing(Input::NewAgent, String::new()),
                KeyCode::Char('x') => match self.snap.bottles.get(self.bottle) {
                    Some(b) => self.mode = Mode::ConfirmStop(b.identity.clone()),
                    None => self.status = "no bottle selected".into(),
                },
                _ => {}
            },
        }
        false
    }

    /// Render the whole screen.
    pub fn draw(&self, f: &mut Frame<'_>) {
        let area = f.area();
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Percentage(35),
                Constraint::Percentage(25),
                Constraint::Min(3),
                Constraint::Length(1),
            ])
            .split(area);
        let pending = self.snap.queue.len();
        let title = format!(
            " bottle dashboard — {} bottle(s), {} pending request(s)",
            self.snap.bottles.len(),
            pending
        );
        f.render_widget(
            Paragraph::new(title).style(Style::default().add_modifier(Modifier::BOLD)),
            rows[0],
        );
        self.draw_bottles(f, rows[1]);
        self.draw_queue(f, rows[2]);
        self.draw_decisions(f, rows[3]);
        let status = match &self.mode {
            Mode::Typing(Input::Narrow(_), buf) => {
                format!("approve only paths (space-separated globs): {buf}_")
            }
            Mode::Typing(Input::Deny(_), buf) => format!("deny reason: {buf}_"),
            Mode::Typing(Input::NewAgent, buf) => format!("start agent: {buf}_"),
            Mode::ConfirmStop(id) => format!("stop {id}? y/N"),
            _ if !self.status.is_empty() => self.status.clone(),
            _ => match &self.snap.problem {
                Some(p) => format!("problem: {p}"),
                None => {
                    "a approve  m narrow  d deny  n new  x stop  tab switch  ? help  q quit".into()
                }
            },
        };
        f.render_widget(Paragraph::new(status), rows[4]);
        if self.mode == Mode::Help {
            let w = area.width.min(60);
            let h = area.height.min(14);
            let r = Rect::new((area.width - w) / 2, (area.height - h) / 2, w, h);
            f.render_widget(Clear, r);
            let help = vec![
                Line::from("↑/↓ j/k  move in the focused list"),
                Line::from("tab      switch between bottles and requests"),
                Line::from("a        approve the selected request as asked"),
                Line::from("m        approve narrowed to the paths you type"),
                Line::from("d        deny the selected request (with a reason)"),
                Line::from("n        start a new agent (detached)"),
                Line::from("x        stop the selected bottle"),
                Line::from("q / esc  quit"),
                Line::from(""),
                Line::from("approvals last the bottle's grant_ttl"),
            ];
            f.render_widget(
                Paragraph::new(help).wrap(Wrap { trim: false }).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" help (any key closes) "),
                ),
                r,
            );
        }
    }

    fn block(&self, title: String, focused: bool) -> Block<'static> {
        let b = Block::default().borders(Borders::ALL).title(title);
        if focused {
            b.border_style(Style::default().add_modifier(Modifier::BOLD))
        } else {
            b
        }
    }

    fn draw_bottles(&self, f: &mut Frame<'_>, area: Rect) {
        let rows: Vec<Row> = self
            .snap
            .bottles
            .iter()
            .map(|b| {
                Row::new(vec![
                    Cell::from(b.identity.clone()),
                    Cell::from(b.agent.clone()),
                    Cell::from(b.backend.clone()),
                    Cell::from(b.state.clone()),
                    Cell::from(b.age.clone()),
                    Cell::from(if b.pending > 0 {
                        b.pending.to_string()
                    } else {
                        "-".into()
                    }),
                ])
            })
            .collect();
        let empty = rows.is_empty();
        // IDENTITY and AGENT as wide as their longest value
        let width = |f: fn(&model::BottleRow) -> &str, head: &str| {
            let w = self.snap.bottles.iter().map(|b| f(b).chars().count());
            u16::try_from(w.chain([head.len()]).max().unwrap_or(0)).unwrap_or(u16::MAX)
        };
        let table = Table::new(
            rows,
            [
                Constraint::Length(width(|b| &b.identity, "IDENTITY")),
                Constraint::Length(width(|b| &b.agent, "AGENT")),
                Constraint::Length(12),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Length(3),
            ],
        )
        .header(
            Row::new(vec!["IDENTITY", "AGENT", "BACKEND", "STATE", "AGE", "REQ"])
                .style(Style::default().add_modifier(Modifier::UNDERLINED)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(self.block(
            format!(" bottles ({}) ", self.snap.bottles.len()),
            self.focus == Focus::Bottles,
        ));
        if empty {
            f.render_widget(
                Paragraph::new("no bottles — press n to start an agent")
                    .block(self.block(" bottles (0) ".into(), self.focus == Focus::Bottles)),
                area,
            );
            return;
        }
        let mut state = TableState::default();
        if self.focus == Focus::Bottles {
            state.select(Some(self.bottle));
        }
        f.render_stateful_widget(table, area, &mut state);
    }

    fn draw_queue(&self, f: &mut Frame<'_>, area: Rect) {
        let title = format!(" requests ({} pending) ", self.snap.queue.len());
        if self.snap.queue.is_empty() {
            f.render_widget(
                Paragraph::new("nothing to decide")
                    .block(self.block(title, self.focus == Focus::Queue)),
                area,
            );
            return;
        }
        let rows: Vec<Row> = self
            .snap
            .queue
            .iter()
            .map(|q| {
                let short = q
                    .request
                    .id
                    .rsplit('-')
                    .next()
                    .unwrap_or(&q.request.id)
                    .chars()
                    .take(6)
                    .collect::<String>();
                Row::new(vec![
                    Cell::from(short),
                    Cell::from(q.identity.clone()),
                    Cell::from(q.request.kind.summary()),
                    Cell::from(q.request.reason.clone()),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(6),
                Constraint::Length(18),
                Constraint::Min(20),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec!["REQ", "BOTTLE", "ASKS FOR", "REASON"])
                .style(Style::default().add_modifier(Modifier::UNDERLINED)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(self.block(title, self.focus == Focus::Queue));
        let mut state = TableState::default();
        if self.focus == Focus::Queue {
            state.select(Some(self.req));
        }
        f.render_stateful_widget(table, area, &mut state);
    }

    fn draw_decisions(&self, f: &mut Frame<'_>, area: Rect) {
        let height = area.height.saturating_sub(2) as usize;
        let lines: Vec<Line> = self
            .snap
            .decisions
            .iter()
            .rev()
            .take(height)
            .rev()
            .map(|d| {
                let style = if d.decision == "deny" || d.decision == "refused" {
                    Style::default().add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                Line::from(vec![
                    Span::raw(format!("{} ", d.time)),
                    Span::styled(format!("{:<6}", d.decision), style),
                    Span::raw(format!(" {:<9} {} ", d.sidecar, d.what)),
                    Span::raw(format!("[{}]", d.identity)),
                ])
            })
            .collect();
        let body = if lines.is_empty() {
            vec![Line::from("no decisions yet")]
        } else {
            lines
        };
        f.render_widget(
            Paragraph::new(body).block(self.block(" decisions ".into(), false)),
            area,
        );
    }
}

/// The real operator: the queue API for decisions, child `bottle`
/// processes for start/stop (so the screen never waits on an engine).
pub struct CliOperator {
    home: bottle_core::Home,
}

impl CliOperator {
    fn spawn(&self, args: &[&str]) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let log_dir = self.home.root().join("logs");
        std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("dashboard.log"))
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        std::process::Command::new(exe)
            .arg("--home")
            .arg(self.home.root().as_std_path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn find(&self, req: &str) -> Result<std::path::PathBuf, String> {
        bottle_sidecars::supervise::queue::find_request(self.home.state_root().as_std_path(), req)
            .map(|(d, _)| d)
            .ok_or_else(|| format!("request {req} is gone"))
    }
}

impl Operator for CliOperator {
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String> {
        let dir = self.find(req)?;
        let n = bottle_sidecars::supervise::Narrowing {
            paths,
            ..Default::default()
        };
        bottle_sidecars::supervise::queue::approve(&dir, req, None, &n)
            .map_err(|e| e.to_string())?;
        Ok(format!("approved {req}"))
    }
    fn deny(&self, req: &str, reason: &str) -> Result<String, String> {
        let dir = self.find(req)?;
        bottle_sidecars::supervise::queue::deny(&dir, req, Some(reason))
            .map_err(|e| e.to_string())?;
        Ok(format!("denied {req}"))
    }
    fn start(&self, agent: &str) -> Result<String, String> {
        self.spawn(&["start", agent, "--yes", "--detach"])?;
        Ok(format!(
            "starting {agent} (log: {}/logs/dashboard.log)",
            self.home.root()
        ))
    }
    fn stop(&self, identity: &str) -> Result<String, String> {
        self.spawn(&["stop", identity])?;
        Ok(format!("stopping {identity}"))
    }
}

/// Best-effort desktop notification (silent when the host has no notifier).
fn notify(summary: &str, body: &str) {
    let _ = std::process::Command::new("notify-send")
        .args(["--app-name=bottle", summary, body])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Run the dashboard until the operator quits.
pub fn run(home: bottle_core::Home) -> bottle_core::Result<()> {
    let (tx, rx) = mpsc::channel::<Snapshot>();
    let collector_home = home.clone();
    std::thread::spawn(move || loop {
        let snap = model::collect(&collector_home, &model::backend_health);
        if tx.send(snap).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    });
    let op = CliOperator { home };
    let mut app = App::default();
    let mut seen = BTreeSet::new();
    let mut first = true;
    let mut terminal = ratatui::init();
    let result = (|| -> std::io::Result<()> {
        loop {
            while let Ok(snap) = rx.try_recv() {
                for q in model::new_requests(&snap, &mut seen) {
                    if !first {
                        notify(
                            "bottle: permission request",
                            &format!("{}: {}", q.identity, q.request.kind.summary()),
                        );
                    }
                }
                first = false;
                app.update(snap);
            }
            terminal.draw(|f| app.draw(f))?;
            if event::poll(Duration::from_millis(200))? {
                if let Event::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press && app.on_key(k, &op) {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result.map_err(|e| {
        bottle_core::Error::other(format!("terminal: {e}"), "run the dashboard in a terminal")
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::model::{BottleRow, DecisionRow, QueueRow};
    use super::*;
    use bottle_sidecars::supervise::{Request, RequestKind, Status};

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Operator for Recorder {
        fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String> {
            self.calls
                .borrow_mut()
                .push(format!("approve {req} {paths:?}"));
            Ok(format!("approved {req}"))
        }
        fn deny(&self, req: &str, reason: &str) -> Result<String, String> {
            self.calls.borrow_mut().push(format!("deny {req} {reason}"));
            Ok(format!("denied {req}"))
        }
        fn start(&self, agent: &str) -> Result<String, String> {
            self.calls.borrow_mut().push(format!("start {agent}"));
            Ok(format!("starting {agent}"))
        }
        fn stop(&self, id: &str) -> Result<String, String> {
            self.calls.borrow_mut().push(format!("stop {id}"));
            Ok(format!("stopping {id}"))
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
        assert!(!app.on_key(key('a'), &op));
        assert_eq!(
            op.calls.borrow().as_slice(),
            ["approve req-20261124T050000Z-a1b2c3d4e5f60718 None"]
        );
        // the next snapshot no longer has it pending
        app.update(Snapshot {
            bottles: bottles(),
            decisions: decisions(),
            ..Default::default()
        });
        insta::assert_snapshot!("after_approve", screen(&app));
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
        assert!(screen(&app)
            .contains("approve only paths (space-separated globs): /simple/requests/**_"));
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
}
