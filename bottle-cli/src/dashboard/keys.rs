//! What each key does, per [`Mode`]: it changes the [`App`] and asks the
//! [`Operator`] for anything that acts on a bottle or a request.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::actions::Operator;
use super::app::{clamp, App, Focus, Input, Mode};
use super::model;

impl App {
    /// Handle one key; returns true to quit.
    pub fn on_key(&mut self, key: KeyEvent, op: &dyn Operator) -> bool {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return true;
        }
        let yes = matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y'));
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => {}
            Mode::ConfirmStop(id) => self.confirm(yes, "stop", || op.stop(&id)),
            Mode::ConfirmRemove(id) => self.confirm(yes, "rm", || op.remove(&id)),
            Mode::ConfirmApprove { req, .. } => {
                self.confirm(yes, "approve", || op.approve(&req, None))
            }
            Mode::Logs(id) => self.on_logs_key(key.code, id),
            Mode::Typing(what, buf) => self.on_typing_key(key.code, what, buf, op),
            Mode::Normal => return self.on_normal_key(key, op),
        }
        false
    }

    /// A y/N question answered: `act` on yes, else say `what` was cancelled.
    fn confirm(&mut self, yes: bool, what: &str, act: impl FnOnce() -> Result<String, String>) {
        if yes {
            let r = act();
            self.report(r);
        } else {
            self.status = format!("{what} cancelled");
        }
    }

    /// The logs pane: scroll, or close it.
    fn on_logs_key(&mut self, code: KeyCode, id: String) {
        let top = self.logs.len().saturating_sub(1);
        self.scroll = match code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('l') => {
                self.logs.clear();
                self.scroll = 0;
                return;
            }
            KeyCode::Up | KeyCode::Char('k') => (self.scroll + 1).min(top),
            KeyCode::Down | KeyCode::Char('j') => self.scroll.saturating_sub(1),
            KeyCode::PageUp => (self.scroll + 10).min(top),
            KeyCode::PageDown => self.scroll.saturating_sub(10),
            _ => self.scroll,
        };
        self.mode = Mode::Logs(id);
    }

    /// A one-line prompt: edit `buf`, submit it, or go back. The filter
    /// applies as it is typed; Esc clears it.
    fn on_typing_key(&mut self, code: KeyCode, what: Input, mut buf: String, op: &dyn Operator) {
        match code {
            KeyCode::Esc if what == Input::Filter => {
                self.filter.clear();
                self.clamp();
            }
            KeyCode::Esc => self.status = "cancelled".into(),
            KeyCode::Enter => self.submit(&what, buf.trim(), op),
            _ => {
                let edited = match code {
                    KeyCode::Backspace => {
                        buf.pop();
                        true
                    }
                    KeyCode::Char(c) => {
                        buf.push(c);
                        true
                    }
                    _ => false,
                };
                if edited && what == Input::Filter {
                    self.filter = buf.clone();
                    if matches!(code, KeyCode::Char(_)) {
                        // a longer filter shows fewer: start from the top
                        self.bottle = 0;
                        self.req = 0;
                    }
                    self.clamp();
                }
                self.mode = Mode::Typing(what, buf);
            }
        }
    }

    /// Enter on a prompt: act on the typed `text`.
    fn submit(&mut self, what: &Input, text: &str, op: &dyn Operator) {
        let r = match what {
            // applied as it was typed
            Input::Filter => return,
            Input::Narrow(req) => {
                let paths: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
                op.approve(req, (!paths.is_empty()).then_some(paths))
            }
            Input::Deny(req) => op.deny(
                req,
                if text.is_empty() {
                    "denied by the operator"
                } else {
                    text
                },
            ),
            Input::NewAgent if text.is_empty() => Err("no agent name given".into()),
            Input::NewAgent => op.start(text),
        };
        self.report(r);
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
            KeyCode::Char(c @ ('a' | 'm' | 'd')) => self.on_request_key(c),
            KeyCode::Char('n') => self.mode = Mode::Typing(Input::NewAgent, String::new()),
            KeyCode::Char(c @ ('x' | 'R' | 'r' | 'l' | 's')) => self.on_bottle_key(c, op),
            _ => {}
        }
        false
    }

    /// `a` approve (asks first), `m` narrow, `d` deny: the selected request.
    fn on_request_key(&mut self, c: char) {
        let Some(q) = self.selected_req() else {
            let what = match c {
                'a' => "approve",
                'm' => "narrow",
                _ => "deny",
            };
            self.status = format!("no pending request to {what}");
            return;
        };
        self.mode = match c {
            'a' => Mode::ConfirmApprove {
                req: q.request.id.clone(),
                identity: q.identity.clone(),
                what: model::grant_text(&q),
                reason: q.request.reason.clone(),
            },
            'm' => Mode::Typing(Input::Narrow(q.request.id), String::new()),
            _ => Mode::Typing(Input::Deny(q.request.id), String::new()),
        };
    }

    /// `x` stop and `R` rm (both ask first), `r` resume, `l` logs, `s`
    /// shell: the selected bottle.
    fn on_bottle_key(&mut self, c: char, op: &dyn Operator) {
        let Some(b) = self.selected_bottle() else {
            self.status = "no bottle selected".into();
            return;
        };
        let id = b.identity.clone();
        let live = matches!(b.state.as_str(), "running" | "degraded" | "launching");
        match c {
            'x' => self.mode = Mode::ConfirmStop(id),
            'R' => self.mode = Mode::ConfirmRemove(id),
            'r' if live => self.status = format!("{id} is {}: r resumes a stopped bottle", b.state),
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
}
