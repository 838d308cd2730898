//! `bottle dashboard`: bottles, a live tail of egress/git decisions, and the
//! permission queue with approve / approve-narrowed / deny keys.
//!
//! [`App`] is the whole UI state and key handling, rendered by [`App::draw`]
//! (tested against ratatui's `TestBackend`). Data arrives from a background
//! collector thread as [`model::Snapshot`]s, so a slow engine never blocks
//! input; actions go through the [`Operator`] trait.

pub mod model;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use model::Snapshot;

/// What the dashboard's keys do (the CLI's real impl and a test recorder).
///
/// Every method returns at once: what takes an engine (stop, rm, start,
/// resume, logs) runs in the background and reports through [`Done`];
/// the `Ok` text is the status line meanwhile.
pub trait Operator {
    /// Approve a request, optionally narrowed to these path globs.
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String>;
    /// Deny a request.
    fn deny(&self, req: &str, reason: &str) -> Result<String, String>;
    /// Start an agent in the background (a bad agent name fails here).
    fn start(&self, agent: &str) -> Result<String, String>;
    /// Stop a bottle in the background.
    fn stop(&self, identity: &str) -> Result<String, String>;
    /// Relaunch a stopped bottle in the background.
    fn resume(&self, identity: &str) -> Result<String, String>;
    /// Remove a bottle (state and home volume) in the background.
    fn remove(&self, identity: &str) -> Result<String, String>;
    /// Fetch a bottle's recent log lines in the background ([`Done::Logs`]);
    /// `stopped`: its agent output is gone, show the sidecars' log.
    fn logs(&self, identity: &str, stopped: bool) -> Result<String, String>;
    /// A shell in the bottle, on this terminal (the dashboard has handed it
    /// over); returns when the shell ends.
    fn shell(&self, identity: &str) -> Result<String, String>;
}

/// What background work reports when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// For the status line (`error: …` when it failed).
    Status(String),
    /// A bottle's log lines, for the logs pane.
    Logs {
        /// The bottle.
        identity: String,
        /// Its lines, oldest first.
        lines: Vec<String>,
    },
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
    /// Filter text (applied as it is typed).
    Filter,
}

/// Screen mode. Esc always goes back to [`Mode::Normal`] (and from there
/// clears the filter); only `q` and Ctrl-C quit.
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
    /// Confirm removing this bottle.
    ConfirmRemove(String),
    /// Confirm approving this request as asked; `what` it grants.
    ConfirmApprove {
        /// Request id.
        req: String,
        /// Bottle identity.
        identity: String,
        /// What will be granted ([`model::grant_text`]).
        what: String,
        /// Why the agent asked.
        reason: String,
    },
    /// The logs pane of this bottle.
    Logs(String),
}

/// The dashboard state.
#[derive(Debug)]
pub struct App {
    /// Latest data.
    pub snap: Snapshot,
    /// Focused list.
    pub focus: Focus,
    /// Selected bottle (index into the filtered list).
    pub bottle: usize,
    /// Selected request (index into the filtered list).
    pub req: usize,
    /// Mode.
    pub mode: Mode,
    /// Last action's message.
    pub status: String,
    /// Bottles and requests shown contain this (case-insensitive).
    pub filter: String,
    /// The logs pane's lines.
    pub logs: Vec<String>,
    /// Lines scrolled up from the end of the logs.
    pub scroll: usize,
    /// A shell to open once the terminal is handed over (the run loop).
    pub shell: Option<String>,
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
            filter: String::new(),
            logs: Vec::new(),
            scroll: 0,
            shell: None,
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

/// The keys of the focused list, for the footer.
const KEYS_BOTTLES: &str =
    "n new  s shell  l logs  r resume  x stop  R rm  / filter  tab  ? help  q quit";
const KEYS_QUEUE: &str = "a approve  m narrow  d deny  / filter  tab  ? help  q quit";

impl App {
    /// Take a new snapshot, keeping selections in range.
    pub fn update(&mut self, snap: Snapshot) {
        self.snap = snap;
        self.clamp();
        if self.snap.bottles.is_empty() && !self.snap.queue.is_empty() {
            self.focus = Focus::Queue;
        }
    }

    fn clamp(&mut self) {
        self.bottle = clamp(self.bottle, self.bottles().len());
        self.req = clamp(self.req, self.requests().len());
    }

    fn matches(&self, fields: &[&str]) -> bool {
        let f = self.filter.to_lowercase();
        f.is_empty() || fields.iter().any(|x| x.to_lowercase().contains(&f))
    }

    /// The bottles shown (the filter applied).
    pub fn bottles(&self) -> Vec<&model::BottleRow> {
        self.snap
            .bottles
            .iter()
            .filter(|b| self.matches(&[&b.identity, &b.agent, &b.state, &b.backend]))
            .collect()
    }

    /// The requests shown (the filter applied).
    pub fn requests(&self) -> Vec<&model::QueueRow> {
        self.snap
            .queue
            .iter()
            .filter(|q| self.matches(&[&q.identity, &q.request.kind.summary(), &q.request.reason]))
            .collect()
    }

    fn selected_req(&self) -> Option<model::QueueRow> {
        self.requests().get(self.req).map(|q| (*q).clone())
    }

    fn selected_bottle(&self) -> Option<model::BottleRow> {
        self.bottles().get(self.bottle).map(|b| (*b).clone())
    }

    fn report(&mut self, r: Result<String, String>) {
        self.status = match r {
            Ok(m) => m,
            Err(e) => format!("error: {e}"),
        };
    }

    /// Background work ended.
    pub fn on_done(&mut self, d: Done) {
        match d {
            Done::Status(s) => self.status = s,
            Done::Logs { identity, lines } => {
                if self.mode == Mode::Logs(identity) {
                    self.logs = if lines.is_empty() {
                        vec!["(no output yet)".into()]
                    } else {
                        lines
                    };
                }
            }
        }
    }

    /// Handle one key; returns true to quit.
    pub fn on_key(&mut self, key: KeyEvent, op: &dyn Operator) -> bool {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return true;
        }
        let yes = matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y'));
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => {}
            Mode::ConfirmStop(id) if yes => {
                let r = op.stop(&id);
                self.report(r);
            }
            Mode::ConfirmStop(_) => self.status = "stop cancelled".into(),
            Mode::ConfirmRemove(id) if yes => {
                let r = op.remove(&id);
                self.report(r);
            }
            Mode::ConfirmRemove(_) => self.status = "rm cancelled".into(),
            Mode::ConfirmApprove { req, .. } if yes => {
                let r = op.approve(&req, None);
                self.report(r);
            }
            Mode::ConfirmApprove { .. } => self.status = "approve cancelled".into(),
            Mode::Logs(id) => match key.code {
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('l') => {
                    self.logs.clear();
                    self.scroll = 0;
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    self.scroll = (self.scroll + 1).min(self.logs.len().saturating_sub(1));
                    self.mode = Mode::Logs(id);
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    self.scroll = self.scroll.saturating_sub(1);
                    self.mode = Mode::Logs(id);
                }
                KeyCode::PageUp => {
                    self.scroll = (self.scroll + 10).min(self.logs.len().saturating_sub(1));
                    self.mode = Mode::Logs(id);
                }
                KeyCode::PageDown => {
                    self.scroll = self.scroll.saturating_sub(10);
                    self.mode = Mode::Logs(id);
                }
                _ => self.mode = Mode::Logs(id),
            },
            Mode::Typing(Input::Filter, mut buf) => match key.code {
                KeyCode::Esc => {
                    self.filter.clear();
                    self.clamp();
                }
                KeyCode::Enter => {}
                KeyCode::Backspace => {
                    buf.pop();
                    self.filter = buf.clone();
                    self.clamp();
                    self.mode = Mode::Typing(Input::Filter, buf);
                }
                KeyCode::Char(c) => {
                    buf.push(c);
                    self.filter = buf.clone();
                    self.bottle = 0;
                    self.req = 0;
                    self.mode = Mode::Typing(Input::Filter, buf);
                }
                _ => self.mode = Mode::Typing(Input::Filter, buf),
            },
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
                        Input::Filter => Ok(String::new()),
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
            Mode::Normal => return self.on_normal_key(key, op),
        }
        false
    }

    fn on_normal_key(&mut self, key: KeyEvent, op: &dyn Operator) -> bool {
        match key.code {
            KeyCode::Char('q') => return true,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.clamp();
                self.status = "filter cleared".into();
            }
            KeyCode::Esc => self.status = "q quits".into(),
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char('/') => self.mode = Mode::Typing(Input::Filter, self.filter.clone()),
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Bottles => Focus::Queue,
                    Focus::Queue => Focus::Bottles,
                }
            }
            KeyCode::Down | KeyCode::Char('j') => match self.focus {
                Focus::Bottles => self.bottle = clamp(self.bottle + 1, self.bottles().len()),
                Focus::Queue => self.req = clamp(self.req + 1, self.requests().len()),
            },
            KeyCode::Up | KeyCode::Char('k') => match self.focus {
                Focus::Bottles => self.bottle = self.bottle.saturating_sub(1),
                Focus::Queue => self.req = self.req.saturating_sub(1),
            },
            KeyCode::Char('a') => match self.selected_req() {
                Some(q) => {
                    self.mode = Mode::ConfirmApprove {
                        req: q.request.id.clone(),
                        identity: q.identity.clone(),
                        what: model::grant_text(&q),
                        reason: q.request.reason.clone(),
                    }
                }
                None => self.status = "no pending request to approve".into(),
            },
            KeyCode::Char('m') => match self.selected_req() {
                Some(q) => self.mode = Mode::Typing(Input::Narrow(q.request.id), String::new()),
                None => self.status = "no pending request to narrow".into(),
            },
            KeyCode::Char('d') => match self.selected_req() {
                Some(q) => self.mode = Mode::Typing(Input::Deny(q.request.id), String::new()),
                None => self.status = "no pending request to deny".into(),
            },
            KeyCode::Char('n') => self.mode = Mode::Typing(Input::NewAgent, String::new()),
            KeyCode::Char(c @ ('x' | 'R' | 'r' | 'l' | 's')) => {
                let Some(b) = self.selected_bottle() else {
                    self.status = "no bottle selected".into();
                    return false;
                };
                let id = b.identity.clone();
                let live = matches!(b.state.as_str(), "running" | "degraded" | "launching");
                match c {
                    'x' => self.mode = Mode::ConfirmStop(id),
                    'R' => self.mode = Mode::ConfirmRemove(id),
                    'r' if live => {
                        self.status = format!("{id} is {}: r resumes a stopped bottle", b.state)
                    }
                    'r' => {
                        let r = op.resume(&id);
                        self.report(r);
                    }
                    'l' => {
                        self.logs = vec!["loading …".into()];
                        self.scroll = 0;
                        let stopped = b.state == "stopped";
                        match op.logs(&id, stopped) {
                            Ok(_) => self.mode = Mode::Logs(id),
                            Err(e) => self.status = format!("error: {e}"),
                        }
                    }
                    _ if b.state != "running" && b.state != "degraded" => {
                        self.status = format!(
                            "{id} is {}: a shell needs a running bottle (r resumes a stopped one)",
                            b.state
                        )
                    }
                    _ => self.shell = Some(id),
                }
            }
            _ => {}
        }
        false
    }

    /// Render the whole screen.
    pub fn draw(&self, f: &mut Frame<'_>) {
        let area = f.area();
        let status = match &self.mode {
            Mode::Typing(Input::Narrow(_), buf) => {
                format!("approve only paths (space-separated globs): {buf}_")
            }
            Mode::Typing(Input::Deny(_), buf) => format!("deny reason: {buf}_"),
            Mode::Typing(Input::NewAgent, buf) => format!("start agent: {buf}_"),
            Mode::Typing(Input::Filter, buf) => {
                format!("filter: {buf}_   (enter keeps it, esc clears it)")
            }
            Mode::ConfirmStop(id) => format!("stop {id}? y/N"),
            Mode::ConfirmRemove(id) => format!(
                "rm {id}? its state, audit log and home volume (with any unsaved work) go: y/N"
            ),
            Mode::ConfirmApprove { req, .. } => {
                format!("approve {}? y/N", model::short_id(req))
            }
            _ if !self.status.is_empty() => self.status.clone(),
            _ => match &self.snap.problem {
                Some(p) => format!("problem: {p}"),
                None => String::new(),
            },
        };
        // a long message (an error with its fix) gets a second line
        let status_rows = if status.chars().count() > usize::from(area.width) {
            2
        } else {
            1
        };
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Percentage(35),
                Constraint::Percentage(25),
                Constraint::Min(3),
                Constraint::Length(status_rows),
                Constraint::Length(1),
            ])
            .split(area);
        let pending = self.snap.queue.len();
        let mut title = format!(
            " bottle dashboard — {} bottle(s), {} pending request(s)",
            self.snap.bottles.len(),
            pending
        );
        if !self.filter.is_empty() {
            title.push_str(&format!(" — filter: {}", self.filter));
        }
        f.render_widget(
            Paragraph::new(title).style(Style::default().add_modifier(Modifier::BOLD)),
            rows[0],
        );
        self.draw_bottles(f, rows[1]);
        if let Mode::Logs(id) = &self.mode {
            let pane = Rect::new(
                rows[2].x,
                rows[2].y,
                rows[2].width,
                rows[2].height + rows[3].height,
            );
            self.draw_logs(f, pane, id);
        } else {
            self.draw_queue(f, rows[2]);
            self.draw_decisions(f, rows[3]);
        }
        f.render_widget(
            Paragraph::new(status)
                .wrap(Wrap { trim: true })
                .style(Style::default().add_modifier(Modifier::BOLD)),
            rows[4],
        );
        let keys = match (&self.mode, self.focus) {
            (Mode::Logs(_), _) => "↑/↓ scroll  pgup/pgdn page  esc back",
            (Mode::Typing(..), _) => "enter ok  esc back",
            (Mode::ConfirmStop(_) | Mode::ConfirmRemove(_) | Mode::ConfirmApprove { .. }, _) => {
                "y yes  any other key: no"
            }
            (_, Focus::Bottles) => KEYS_BOTTLES,
            (_, Focus::Queue) => KEYS_QUEUE,
        };
        f.render_widget(Paragraph::new(keys), rows[5]);
        if let Mode::ConfirmApprove {
            identity,
            what,
            reason,
            ..
        } = &self.mode
        {
            let w = area.width.min(72);
            let h = area.height.min(9);
            let r = Rect::new((area.width - w) / 2, (area.height - h) / 2, w, h);
            f.render_widget(Clear, r);
            let text = vec![
                Line::from(format!("bottle  {identity}")),
                Line::from(format!("grants  {what}")),
                Line::from(format!("reason  {reason}")),
                Line::from(""),
                Line::from("y approves; any other key cancels (m narrows, d denies)"),
            ];
            f.render_widget(
                Paragraph::new(text)
                    .wrap(Wrap { trim: false })
                    .block(Block::default().borders(Borders::ALL).title(" approve? ")),
                r,
            );
        }
        if self.mode == Mode::Help {
            let w = area.width.min(64);
            let h = area.height.min(20);
            let r = Rect::new((area.width - w) / 2, (area.height - h) / 2, w, h);
            f.render_widget(Clear, r);
            let help = vec![
                Line::from("↑/↓ j/k  move in the focused list"),
                Line::from("tab      switch between bottles and requests"),
                Line::from("a        approve the selected request as asked (y/N)"),
                Line::from("m        approve narrowed to the paths you type"),
                Line::from("d        deny the selected request (with a reason)"),
                Line::from("n        start a new agent (detached)"),
                Line::from("s        a shell in the selected bottle"),
                Line::from("l        the selected bottle's logs"),
                Line::from("r        resume the selected (stopped) bottle"),
                Line::from("x        stop the selected bottle (y/N)"),
                Line::from("R        remove the selected bottle (y/N)"),
                Line::from("/        filter bottles and requests"),
                Line::from("esc      back (closes a pane, prompt or filter)"),
                Line::from("q        quit"),
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

    fn draw_logs(&self, f: &mut Frame<'_>, area: Rect, id: &str) {
        let height = area.height.saturating_sub(2) as usize;
        let end = self.logs.len().saturating_sub(self.scroll);
        let lines: Vec<Line> = self.logs[end.saturating_sub(height)..end]
            .iter()
            .map(|l| Line::from(l.clone()))
            .collect();
        let title = if self.scroll > 0 {
            format!(" logs: {id} ({} lines up) ", self.scroll)
        } else {
            format!(" logs: {id} ")
        };
        f.render_widget(Paragraph::new(lines).block(self.block(title, true)), area);
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
        let shown = self.bottles();
        let rows: Vec<Row> = shown
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
            let w = shown.iter().map(|b| f(b).chars().count());
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
            self.count_title("bottles", shown.len(), self.snap.bottles.len()),
            self.focus == Focus::Bottles,
        ));
        if empty {
            let text = if self.snap.bottles.is_empty() {
                "no bottles — press n to start an agent"
            } else {
                "no bottle matches the filter — esc clears it"
            };
            f.render_widget(
                Paragraph::new(text).block(self.block(
                    self.count_title("bottles", 0, self.snap.bottles.len()),
                    self.focus == Focus::Bottles,
                )),
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

    fn count_title(&self, what: &str, shown: usize, all: usize) -> String {
        if self.filter.is_empty() {
            format!(" {what} ({all}) ")
        } else {
            format!(" {what} ({shown} of {all} match /{}) ", self.filter)
        }
    }

    fn draw_queue(&self, f: &mut Frame<'_>, area: Rect) {
        let shown = self.requests();
        let title = if self.filter.is_empty() {
            format!(" requests ({} pending) ", self.snap.queue.len())
        } else {
            format!(
                " requests ({} of {} pending match /{}) ",
                shown.len(),
                self.snap.queue.len(),
                self.filter
            )
        };
        if shown.is_empty() {
            f.render_widget(
                Paragraph::new("nothing to decide")
                    .block(self.block(title, self.focus == Focus::Queue)),
                area,
            );
            return;
        }
        let rows: Vec<Row> = shown
            .iter()
            .map(|q| {
                let short = model::short_id(&q.request.id);
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
                    Span::styled(format!("{:<7}", d.decision), style),
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

/// The real operator. Decisions, stop and rm call the same library code
/// as `bottle approve`/`deny`/`stop`/`rm` (stop and rm on a background
/// thread); start and resume (a launch prints progress and may prompt) run
/// `bottle` as a child process whose error, if any, comes back to the
/// status line.
pub struct CliOperator {
    home: bottle_core::Home,
    done: mpsc::Sender<Done>,
}

/// The `bottle` binary to run for a launch: the one this dashboard runs
/// from. When that file is gone (rebuilt or removed since the dashboard
/// started: Linux then names it `… (deleted)`), the running image itself
/// (`/proc/self/exe`, the same version as the dashboard).
pub fn bottle_exe(current: std::io::Result<PathBuf>, running: &Path) -> Result<PathBuf, String> {
    match current {
        Ok(p) if p.is_file() => Ok(p),
        _ if running.exists() => Ok(running.to_owned()),
        Ok(p) => Err(format!(
            "the bottle binary {} is gone (rebuilt or removed since the dashboard started): restart `bottle dashboard`",
            p.display()
        )),
        Err(e) => Err(format!(
            "cannot find the bottle binary ({e}): restart `bottle dashboard`"
        )),
    }
}

/// The first `error:` line of a failed `bottle` run, with its `fix:`.
pub fn error_of(stderr: &str) -> String {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with("error:"));
    match lines.next() {
        Some(e) => {
            let e = e.trim_start_matches("error:").trim();
            match lines.next().map(str::trim) {
                Some(fix) if fix.starts_with("fix:") => format!("{e} ({fix})"),
                _ => e.to_owned(),
            }
        }
        None => stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_owned(),
    }
}

impl CliOperator {
    /// A `Cli` for calling the commands' code in-process (quiet: nothing
    /// may print over the screen).
    fn cli(&self) -> crate::Cli {
        crate::Cli {
            home: Some(self.home.root().to_owned()),
            backend: None,
            verbose: false,
            quiet: true,
            command: crate::cmd::Command::Dashboard,
        }
    }

    /// Run `f` on a background thread; its message goes to the status line.
    fn background(&self, f: impl FnOnce() -> Done + Send + 'static) {
        let tx = self.done.clone();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
    }

    /// Run `bottle <args>` in the background (stdin closed, its output
    /// appended to `logs/dashboard.log`); `ok` or its error goes to the
    /// status line when it ends.
    fn spawn(&self, args: Vec<String>, what: String, ok: String) -> Result<(), String> {
        let exe = bottle_exe(std::env::current_exe(), Path::new("/proc/self/exe"))?;
        let log_path = self.home.root().join("logs").join("dashboard.log");
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--home")
            .arg(self.home.root().as_std_path())
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
        self.background(move || {
            let out = child.wait_with_output();
            let _ = std::fs::create_dir_all(log_path.parent().expect("has a parent"));
            if let (Ok(o), Ok(mut log)) = (
                &out,
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path),
            ) {
                use std::io::Write;
                let _ = writeln!(log, "$ bottle {}", args.join(" "));
                let _ = log.write_all(&o.stdout);
                let _ = log.write_all(&o.stderr);
            }
            Done::Status(match out {
                Ok(o) if o.status.success() => ok,
                Ok(o) => format!(
                    "error: {what}: {}",
                    error_of(&String::from_utf8_lossy(&o.stderr))
                ),
                Err(e) => format!("error: {what}: {e}"),
            })
        });
        Ok(())
    }

    fn find(&self, req: &str) -> Result<std::path::PathBuf, String> {
        bottle_host::supervise::queue::find_request(self.home.state_root().as_std_path(), req)
            .map(|(d, _)| d)
            .ok_or_else(|| format!("request {req} is gone"))
    }
}

/// The last `max` lines of `text`, without terminal control sequences (an
/// agent's output is a terminal's: colours, `\r`, title changes).
pub fn last_lines(text: &str, max: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max)..]
        .iter()
        .map(|l| printable(l))
        .collect()
}

/// `line` without ANSI escape sequences and control characters (a tab is
/// four spaces; after a `\r` only what was written last stays).
fn printable(line: &str) -> String {
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl Operator for CliOperator {
    fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String> {
        let dir = self.find(req)?;
        let n = bottle_host::supervise::Narrowing {
            paths,
            ..Default::default()
        };
        let d = bottle_host::supervise::queue::approve(&dir, req, None, &n)
            .map_err(|e| e.to_string())?;
        let what = d.grant.map(|g| g.summary()).unwrap_or_default();
        let until = d.expires_at.unwrap_or_default();
        Ok(format!(
            "approved {}: {what} until {until}",
            model::short_id(req)
        ))
    }
    fn deny(&self, req: &str, reason: &str) -> Result<String, String> {
        let dir = self.find(req)?;
        bottle_host::supervise::queue::deny(&dir, req, Some(reason)).map_err(|e| e.to_string())?;
        Ok(format!("denied {}", model::short_id(req)))
    }
    fn start(&self, agent: &str) -> Result<String, String> {
        // what `bottle plan` checks, here and now: a bad name, a broken
        // manifest or a missing backend is said at once
        let flags = crate::cmd::PlanFlags {
            cwd: None,
            runtime: None,
            env: Vec::new(),
        };
        crate::cmd::resolve_plan(
            &self.cli(),
            agent,
            &flags,
            None,
            &bottle_core::plan::PlaceholderPrompt,
        )
        .map_err(|e| match e.fix() {
            Some(fix) => format!("{e} (fix: {fix})"),
            None => e.to_string(),
        })?;
        self.spawn(
            ["start", agent, "--yes", "--detach"]
                .map(String::from)
                .to_vec(),
            format!("start {agent}"),
            format!("started {agent}"),
        )?;
        Ok(format!("starting {agent} …"))
    }
    fn stop(&self, identity: &str) -> Result<String, String> {
        let cli = self.cli();
        let id = identity.to_owned();
        self.background(move || {
            let a = crate::cmd::lifecycle::IdArgs { id: id.clone() };
            Done::Status(match crate::cmd::lifecycle::stop(&cli, &a) {
                Ok(_) => format!("stopped {id} (state and home kept; r resumes it)"),
                Err(e) => format!("error: stop {id}: {e}"),
            })
        });
        Ok(format!("stopping {identity} …"))
    }
    fn resume(&self, identity: &str) -> Result<String, String> {
        self.spawn(
            vec!["resume".into(), identity.into()],
            format!("resume {identity}"),
            format!("resumed {identity}"),
        )?;
        Ok(format!("resuming {identity} …"))
    }
    fn remove(&self, identity: &str) -> Result<String, String> {
        let cli = self.cli();
        let id = identity.to_owned();
        self.background(move || {
            let a = crate::cmd::lifecycle::IdArgs { id: id.clone() };
            Done::Status(match crate::cmd::lifecycle::rm(&cli, &a) {
                Ok(_) => format!("removed {id}"),
                Err(e) => format!("error: rm {id}: {e}"),
            })
        });
        Ok(format!("removing {identity} …"))
    }
    fn logs(&self, identity: &str, stopped: bool) -> Result<String, String> {
        let id = identity.to_owned();
        if stopped {
            // the agent's output went with its container; the sidecars'
            // log is kept in the state dir
            let st = self
                .home
                .state(&crate::cmd::ids::bottle(&self.home, identity).map_err(|e| e.to_string())?);
            let path = bottle_host::bundle::log_path(st.audit_path().as_std_path());
            self.background(move || {
                let mut lines = vec![format!(
                    "{id} is stopped: its agent output is gone; the sidecars' log ({}):",
                    path.display()
                )];
                match std::fs::read_to_string(&path) {
                    Ok(t) => lines.extend(last_lines(&t, 500)),
                    Err(e) => lines.push(format!("(none: {e})")),
                }
                Done::Logs {
                    identity: id,
                    lines,
                }
            });
            return Ok(String::new());
        }
        let exe = bottle_exe(std::env::current_exe(), Path::new("/proc/self/exe"))?;
        let home = self.home.root().to_owned();
        self.background(move || {
            let out = std::process::Command::new(exe)
                .arg("--home")
                .arg(home.as_std_path())
                .args(["logs", &id, "--tail", "500"])
                .env("NO_COLOR", "1")
                .stdin(std::process::Stdio::null())
                .output();
            let lines = match out {
                Ok(o) if o.status.success() => {
                    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&o.stderr));
                    last_lines(&text, 500)
                }
                Ok(o) => vec![format!(
                    "error: {}",
                    error_of(&String::from_utf8_lossy(&o.stderr))
                )],
                Err(e) => vec![format!("error: bottle logs: {e}")],
            };
            Done::Logs {
                identity: id,
                lines,
            }
        });
        Ok(String::new())
    }
    fn shell(&self, identity: &str) -> Result<String, String> {
        let a = crate::cmd::lifecycle::ExecArgs {
            id: identity.to_owned(),
            cmd: [
                "sh",
                "-c",
                "command -v bash >/dev/null 2>&1 && exec bash -l || exec sh -l",
            ]
            .map(String::from)
            .to_vec(),
        };
        eprintln!("shell in {identity}: exit (or Ctrl-D) goes back to the dashboard");
        match crate::cmd::lifecycle::exec(&self.cli(), &a) {
            Ok(code) => Ok(format!("shell in {identity} ended (exit {code})")),
            Err(e) => Err(format!("shell in {identity}: {e}")),
        }
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
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let op = CliOperator {
        home,
        done: done_tx,
    };
    let mut app = App::default();
    let mut seen = BTreeSet::new();
    let mut first = true;
    let log_dir = op.home.root().join("logs");
    let trace = std::fs::create_dir_all(&log_dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("dashboard.log"))
    });
    if let (Ok(f), Ok(mut to)) = (trace, crate::TRACE_FILE.lock()) {
        *to = Some(f);
    }
    let mut terminal = ratatui::init();
    // the logs pane refreshes every 2 s while open, one fetch at a time
    let mut logs_asked = Instant::now();
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
            while let Ok(d) = done_rx.try_recv() {
                app.on_done(d);
            }
            if let Mode::Logs(id) = &app.mode {
                if logs_asked.elapsed() > Duration::from_secs(2) {
                    let stopped = app
                        .snap
                        .bottles
                        .iter()
                        .any(|b| &b.identity == id && b.state == "stopped");
                    let _ = op.logs(id, stopped);
                    logs_asked = Instant::now();
                }
            }
            if let Some(id) = app.shell.take() {
                // hand the terminal over to the shell, then take it back
                ratatui::restore();
                let r = op.shell(&id);
                terminal = ratatui::init();
                terminal.clear()?;
                app.report(r);
            }
            terminal.draw(|f| app.draw(f))?;
            if event::poll(Duration::from_millis(200))? {
                if let Event::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press {
                        if matches!(app.mode, Mode::Normal) && k.code == KeyCode::Char('l') {
                            logs_asked = Instant::now();
                        }
                        if app.on_key(k, &op) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    })();
    ratatui::restore();
    if let Ok(mut to) = crate::TRACE_FILE.lock() {
        *to = None;
    }
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
    use bottle_host::supervise::{Request, RequestKind, Status};

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Recorder {
        fn log(&self, s: String) {
            self.calls.borrow_mut().push(s);
        }
    }

    impl Operator for Recorder {
        fn approve(&self, req: &str, paths: Option<Vec<String>>) -> Result<String, String> {
            self.log(format!("approve {req} {paths:?}"));
            Ok(format!("approved {req}"))
        }
        fn deny(&self, req: &str, reason: &str) -> Result<String, String> {
            self.log(format!("deny {req} {reason}"));
            Ok(format!("denied {req}"))
        }
        fn start(&self, agent: &str) -> Result<String, String> {
            self.log(format!("start {agent}"));
            Ok(format!("starting {agent}"))
        }
        fn stop(&self, id: &str) -> Result<String, String> {
            self.log(format!("stop {id}"));
            Ok(format!("stopping {id}"))
        }
        fn resume(&self, id: &str) -> Result<String, String> {
            self.log(format!("resume {id}"));
            Ok(format!("resuming {id}"))
        }
        fn remove(&self, id: &str) -> Result<String, String> {
            self.log(format!("rm {id}"));
            Ok(format!("removing {id}"))
        }
        fn logs(&self, id: &str, stopped: bool) -> Result<String, String> {
            self.log(format!("logs {id} stopped={stopped}"));
            Ok(String::new())
        }
        fn shell(&self, id: &str) -> Result<String, String> {
            self.log(format!("shell {id}"));
            Ok(format!("shell in {id} ended"))
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
        (dir, CliOperator { home, done: tx }, rx)
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
    fn the_binary_to_run_survives_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("bottle");
        std::fs::write(&here, "").unwrap();
        let running = dir.path().join("running");
        std::fs::write(&running, "").unwrap();
        // the file on disk while it is there
        assert_eq!(bottle_exe(Ok(here.clone()), &running), Ok(here.clone()));
        // rebuilt: Linux names the old file `… (deleted)`; the running image
        let gone = dir.path().join("bottle (deleted)");
        assert_eq!(bottle_exe(Ok(gone.clone()), &running), Ok(running.clone()));
        let nowhere = dir.path().join("nowhere");
        let e = bottle_exe(Ok(gone), &nowhere).unwrap_err();
        assert!(e.contains("restart `bottle dashboard`"), "{e}");
        // the real one resolves
        let exe = bottle_exe(std::env::current_exe(), Path::new("/proc/self/exe")).unwrap();
        assert!(exe.exists());
    }

    #[test]
    fn log_lines_lose_terminal_control_sequences() {
        assert_eq!(
            last_lines(
                "one\n\x1b[1;32mgreen\x1b[0m\tx\n\x1b]0;title\x07$ ls\r\nprogress 10%\rprogress 99%\n",
                3
            ),
            ["green    x", "$ ls", "progress 99%"]
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
    fn a_failed_child_s_error_is_one_line() {
        assert_eq!(
            error_of("[1/3] x (2 ms)\nerror: no agent `nosuch`\n  fix: agents are: demo\n"),
            "no agent `nosuch` (fix: agents are: demo)"
        );
        assert_eq!(error_of("boom\n\n"), "boom");
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
