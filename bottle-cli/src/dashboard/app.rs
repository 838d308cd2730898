//! The dashboard's UI state: what is shown, what is selected, which mode
//! the screen is in. Keys change it ([`super::keys`]), [`App::draw`]
//! renders it ([`super::view`]).

use super::actions::Done;
use super::model::{self, Snapshot};

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

/// `i` kept inside a list of `len` (0 for an empty one).
pub(super) fn clamp(i: usize, len: usize) -> usize {
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
        self.clamp();
        if self.snap.bottles.is_empty() && !self.snap.queue.is_empty() {
            self.focus = Focus::Queue;
        }
    }

    /// Keep both selections inside the lists shown.
    pub(super) fn clamp(&mut self) {
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

    /// The selected request, if any is shown.
    pub(super) fn selected_req(&self) -> Option<model::QueueRow> {
        self.requests().get(self.req).map(|q| (*q).clone())
    }

    /// The selected bottle, if any is shown.
    pub(super) fn selected_bottle(&self) -> Option<model::BottleRow> {
        self.bottles().get(self.bottle).map(|b| (*b).clone())
    }

    /// An action's outcome, for the status line.
    pub(super) fn report(&mut self, r: Result<String, String>) {
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
}
