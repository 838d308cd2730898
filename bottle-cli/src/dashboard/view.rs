//! Drawing the dashboard: title, bottles, requests, decisions or a
//! bottle's logs, the status line, the keys footer and the overlays (help,
//! approve). Pure: it reads the [`App`] and draws into a ratatui frame
//! (tested against ratatui's `TestBackend`).

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::app::{App, Focus, Input, Mode};
use super::model;

/// The keys of the focused list, for the footer.
pub(super) const KEYS_BOTTLES: &str =
    "n new  s shell  l logs  r resume  x stop  R rm  / filter  tab  ? help  q quit";
pub(super) const KEYS_QUEUE: &str = "a approve  m narrow  d deny  / filter  tab  ? help  q quit";

impl App {
    /// Render the whole screen.
    pub fn draw(&self, f: &mut Frame<'_>) {
        let area = f.area();
        let status = self.status_line();
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
        f.render_widget(
            Paragraph::new(self.title()).style(Style::default().add_modifier(Modifier::BOLD)),
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
        f.render_widget(Paragraph::new(self.footer()), rows[5]);
        if let Mode::ConfirmApprove {
            identity,
            what,
            reason,
            ..
        } = &self.mode
        {
            draw_confirm_approve(f, identity, what, reason);
        }
        if self.mode == Mode::Help {
            draw_help(f);
        }
    }

    /// The top line: counts, and the filter when one is set.
    fn title(&self) -> String {
        let mut title = format!(
            " bottle dashboard — {} bottle(s), {} pending request(s)",
            self.snap.bottles.len(),
            self.snap.queue.len()
        );
        if !self.filter.is_empty() {
            title.push_str(&format!(" — filter: {}", self.filter));
        }
        title
    }

    /// The status line: the prompt or question of the mode, else the last
    /// action's message, else the collector's problem.
    fn status_line(&self) -> String {
        match &self.mode {
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
        }
    }

    /// The footer: the keys that work now.
    fn footer(&self) -> &'static str {
        match (&self.mode, self.focus) {
            (Mode::Logs(_), _) => "↑/↓ scroll  pgup/pgdn page  esc back",
            (Mode::Typing(..), _) => "enter ok  esc back",
            (Mode::ConfirmStop(_) | Mode::ConfirmRemove(_) | Mode::ConfirmApprove { .. }, _) => {
                "y yes  any other key: no"
            }
            (_, Focus::Bottles) => KEYS_BOTTLES,
            (_, Focus::Queue) => KEYS_QUEUE,
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
        let focused = self.focus == Focus::Bottles;
        let block = self.block(
            self.count_title("bottles", shown.len(), self.snap.bottles.len()),
            focused,
        );
        if shown.is_empty() {
            let text = if self.snap.bottles.is_empty() {
                "no bottles — press n to start an agent"
            } else {
                "no bottle matches the filter — esc clears it"
            };
            f.render_widget(Paragraph::new(text).block(block), area);
            return;
        }
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
        // IDENTITY and AGENT as wide as their longest value
        let width = |f: fn(&model::BottleRow) -> &str, head: &str| {
            let w = shown.iter().map(|b| f(b).chars().count());
            u16::try_from(w.chain([head.len()]).max().unwrap_or(0)).unwrap_or(u16::MAX)
        };
        draw_table(
            f,
            area,
            ["IDENTITY", "AGENT", "BACKEND", "STATE", "AGE", "REQ"],
            [
                Constraint::Length(width(|b| &b.identity, "IDENTITY")),
                Constraint::Length(width(|b| &b.agent, "AGENT")),
                Constraint::Length(12),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Length(3),
            ],
            rows,
            block,
            focused.then_some(self.bottle),
        );
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
        let focused = self.focus == Focus::Queue;
        draw_table(
            f,
            area,
            ["REQ", "BOTTLE", "ASKS FOR", "REASON"],
            [
                Constraint::Length(6),
                Constraint::Length(18),
                Constraint::Min(20),
                Constraint::Min(10),
            ],
            rows,
            self.block(title, focused),
            focused.then_some(self.req),
        );
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

/// A list as a table: `head` underlined over `rows`, in `block`; the
/// `selected` row reversed (none while the list has no focus).
fn draw_table<const N: usize>(
    f: &mut Frame<'_>,
    area: Rect,
    head: [&str; N],
    widths: [Constraint; N],
    rows: Vec<Row<'_>>,
    block: Block<'_>,
    selected: Option<usize>,
) {
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(Style::default().add_modifier(Modifier::UNDERLINED)))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(block);
    let mut state = TableState::default();
    state.select(selected);
    f.render_stateful_widget(table, area, &mut state);
}

/// A box of at most `w`x`h` in the middle of the screen, over what is there.
fn popup(f: &mut Frame<'_>, w: u16, h: u16, title: &str, text: Vec<Line<'_>>) {
    let area = f.area();
    let w = area.width.min(w);
    let h = area.height.min(h);
    let r = Rect::new((area.width - w) / 2, (area.height - h) / 2, w, h);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(title)),
        r,
    );
}

/// What approving as asked grants, before `y`.
fn draw_confirm_approve(f: &mut Frame<'_>, identity: &str, what: &str, reason: &str) {
    let text = vec![
        Line::from(format!("bottle  {identity}")),
        Line::from(format!("grants  {what}")),
        Line::from(format!("reason  {reason}")),
        Line::from(""),
        Line::from("y approves; any other key cancels (m narrows, d denies)"),
    ];
    popup(f, 72, 9, " approve? ", text);
}

/// The help overlay (any key closes it).
fn draw_help(f: &mut Frame<'_>) {
    let help = [
        "↑/↓ j/k  move in the focused list",
        "tab      switch between bottles and requests",
        "a        approve the selected request as asked (y/N)",
        "m        approve narrowed to the paths you type",
        "d        deny the selected request (with a reason)",
        "n        start a new agent (detached)",
        "s        a shell in the selected bottle",
        "l        the selected bottle's logs",
        "r        resume the selected (stopped) bottle",
        "x        stop the selected bottle (y/N)",
        "R        remove the selected bottle (y/N)",
        "/        filter bottles and requests",
        "esc      back (closes a pane, prompt or filter)",
        "q        quit",
        "",
        "approvals last the bottle's grant_ttl",
    ];
    popup(
        f,
        64,
        20,
        " help (any key closes) ",
        help.into_iter().map(Line::from).collect(),
    );
}
