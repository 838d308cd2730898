//! The terminal's side of a lifecycle operation (`bottle_lifecycle::Events`):
//! the preflight printed and confirmed, launch progress as a bar or lines,
//! result lines on stdout, notes on stderr unless `--quiet`.

use std::cell::RefCell;

use bottle_core::{BottlePlan, Result};
use bottle_lifecycle::Events;

use crate::progress::{Mode, Steps};

/// What `start` does with its preflight.
#[derive(Debug, Clone, Copy, Default)]
pub struct Preflight {
    /// Print it.
    pub show: bool,
    /// Ask y/N after it (a terminal is required).
    pub confirm: bool,
}

/// Events on a terminal.
pub struct Term {
    quiet: bool,
    preflight: Preflight,
    steps: RefCell<Option<Steps>>,
}

impl Term {
    /// Progress, lines and notes; no preflight.
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            preflight: Preflight::default(),
            steps: RefCell::new(None),
        }
    }

    /// With `start`'s preflight.
    pub fn with_preflight(mut self, preflight: Preflight) -> Self {
        self.preflight = preflight;
        self
    }
}

impl Events for Term {
    fn preflight(&self, plan: &BottlePlan, notes: &[String]) -> Result<()> {
        if self.preflight.show {
            eprint!("{}", crate::cmd::start::preflight_text(plan, notes));
        }
        if self.preflight.confirm {
            crate::cmd::start::confirm()?;
        }
        Ok(())
    }

    fn wants_step_names(&self) -> bool {
        Mode::detect(self.quiet) == Mode::Bar
    }

    fn launch_started(&self, names: Vec<String>) {
        *self.steps.borrow_mut() = Some(Steps::new(Mode::detect(self.quiet), names));
    }

    fn step_done(&self, i: usize, total: usize, name: &str, skipped: bool) {
        if let Some(s) = &*self.steps.borrow() {
            s.step_done(i, total, name, skipped);
        }
    }

    fn launch_finished(&self) {
        if let Some(s) = self.steps.borrow_mut().take() {
            s.finish();
        }
    }

    fn line(&self, line: &str) {
        crate::ui::out(&format!("{line}\n"));
    }

    fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}
