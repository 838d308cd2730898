//! The LIFO teardown stack.
//!
//! Each launch step pushes its undo right after it succeeds. On failure (or
//! Ctrl-C) [`Teardown::unwind`] runs every undo in reverse order, keeps going
//! past failures and returns all of them. Dropping an armed stack unwinds it
//! too, so an early return cannot leak resources. `BOTTLE_KEEP=1` keeps
//! everything for debugging.

use crate::error::{Error, Result};

type Undo = Box<dyn FnOnce() -> Result<()> + Send>;

/// A stack of undo actions.
#[derive(Default)]
pub struct Teardown {
    steps: Vec<(String, Undo)>,
    armed: bool,
}

impl std::fmt::Debug for Teardown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Teardown {
    /// An empty, armed stack.
    pub fn new() -> Self {
        Self {
            steps: Vec::new(),
            armed: true,
        }
    }

    /// Push the undo of a step that just succeeded.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        undo: impl FnOnce() -> Result<()> + Send + 'static,
    ) {
        self.steps.push((name.into(), Box::new(undo)));
    }

    /// Names of the pending undos, oldest first.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Number of pending undos.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// No undo pending.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The launch succeeded: forget the undos (the resources now belong to
    /// the running bottle, whose `stop` removes them).
    pub fn disarm(mut self) {
        self.armed = false;
        self.steps.clear();
    }

    /// Run every undo, newest first; collect every failure.
    pub fn unwind(mut self) -> Vec<(String, Error)> {
        self.armed = false;
        run_all(std::mem::take(&mut self.steps))
    }
}

fn run_all(steps: Vec<(String, Undo)>) -> Vec<(String, Error)> {
    if std::env::var_os("BOTTLE_KEEP").is_some_and(|v| v == "1") {
        tracing::warn!(
            kept = steps.len(),
            "BOTTLE_KEEP=1: leaving resources in place"
        );
        return Vec::new();
    }
    let mut errors = Vec::new();
    for (name, undo) in steps.into_iter().rev() {
        if let Err(e) = undo() {
            errors.push((name, e));
        }
    }
    errors
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if self.armed && !self.steps.is_empty() {
            tracing::warn!(
                steps = self.steps.len(),
                "teardown dropped while armed: unwinding"
            );
            for (name, e) in run_all(std::mem::take(&mut self.steps)) {
                tracing::error!(step = %name, error = %e, "cleanup failed");
            }
        }
    }
}

/// Turn a list of teardown failures into a result.
pub fn into_result(errors: Vec<(String, Error)>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn unwinds_lifo_and_collects_every_error() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut t = Teardown::new();
        for name in ["network", "bundle", "agent"] {
            let log = log.clone();
            t.push(name, move || {
                log.lock().unwrap().push(name);
                if name == "network" || name == "agent" {
                    Err(Error::other(format!("{name} stuck"), "retry"))
                } else {
                    Ok(())
                }
            });
        }
        let errors = t.unwind();
        assert_eq!(*log.lock().unwrap(), vec!["agent", "bundle", "network"]);
        let names: Vec<_> = errors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["agent", "network"]);
        assert!(into_result(errors)
            .unwrap_err()
            .to_string()
            .contains("2 problem(s)"));
    }

    #[test]
    fn drop_unwinds_but_disarm_keeps() {
        let hit = Arc::new(Mutex::new(0));
        {
            let mut t = Teardown::new();
            let h = hit.clone();
            t.push("x", move || {
                *h.lock().unwrap() += 1;
                Ok(())
            });
        }
        assert_eq!(*hit.lock().unwrap(), 1);
        let mut t = Teardown::new();
        let h = hit.clone();
        t.push("y", move || {
            *h.lock().unwrap() += 1;
            Ok(())
        });
        t.disarm();
        assert_eq!(*hit.lock().unwrap(), 1);
    }
}
