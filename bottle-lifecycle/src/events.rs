//! What a lifecycle operation tells its caller while it runs.

use bottle_core::{BottlePlan, Result};

/// The observer of a lifecycle operation. Every method has a default that
/// says nothing and agrees, so [`Silent`] is an empty impl; the CLI prints
/// and asks on a terminal, the dashboard writes its status line.
pub trait Events {
    /// The preflight of `start`: the plan about to run (with the identity
    /// `start` really uses) and notes on it (runtime, agent source). An
    /// error declines: the allocation is given back and nothing is left.
    fn preflight(&self, plan: &BottlePlan, notes: &[String]) -> Result<()> {
        let _ = (plan, notes);
        Ok(())
    }

    /// Whether [`Events::launch_started`] should get the step names (asking
    /// the backend for them costs a render).
    fn wants_step_names(&self) -> bool {
        false
    }

    /// The launch begins; `names` are its steps when they were wanted.
    fn launch_started(&self, names: Vec<String>) {
        let _ = names;
    }

    /// Launch step `i` of `total` finished (`skipped` when there was
    /// nothing to do).
    fn step_done(&self, i: usize, total: usize, name: &str, skipped: bool) {
        let _ = (i, total, name, skipped);
    }

    /// The launch ended, well or not.
    fn launch_finished(&self) {}

    /// A result line (what `gc` removes, for instance): the CLI prints it
    /// on stdout.
    fn line(&self, line: &str) {
        let _ = line;
    }

    /// A remark on what happened (an approved capability applied, gc's
    /// summary): the CLI prints it on stderr unless `--quiet`.
    fn note(&self, line: &str) {
        let _ = line;
    }
}

/// Says nothing, agrees to every preflight.
pub struct Silent;

impl Events for Silent {}
