//! The bottle lifecycle as a library (ARCHITECTURE.md, "Lifecycle"): start,
//! resume, stop, rm and gc over `&dyn Backend`, with the host-side Prepare
//! impls of `bottle-host`, a [`Prompter`](bottle_core::plan::Prompter) for
//! `?prompt` values and an [`Events`] observer for the preflight, launch
//! progress and result lines.
//!
//! One operation per module (`start`, `resume`, `stop`, `rm`, `gc`), as
//! youki's `libcontainer` does; the `bottle` CLI commands, the dashboard
//! and `examples/embed.rs` are thin callers. Nothing here touches a
//! terminal or names a backend: backends come from a [`Registry`] the
//! caller builds (the CLI's is feature-gated).

#![warn(missing_docs)]

use bottle_core::{CommandRunner, Home};

mod events;
mod find;
mod gc;
mod registry;
mod request;
mod resume;
mod rm;
mod start;
mod status;
mod stop;

pub use events::{Events, Silent};
pub use find::{pid_alive, Found};
pub use gc::{GcOptions, GcOutcome};
pub use registry::{Entry, Registry};
pub use request::PlanRequest;
pub use start::{metadata, Started, PLAN_FILE};
pub use status::LsRow;

/// A home, the backends it may use and the runner every external command
/// goes through: the receiver of every lifecycle operation.
pub struct Lifecycle<'a> {
    home: Home,
    registry: Registry,
    runner: &'a dyn CommandRunner,
}

impl<'a> Lifecycle<'a> {
    /// The lifecycle of `home`'s bottles.
    pub fn new(home: Home, registry: Registry, runner: &'a dyn CommandRunner) -> Self {
        Self {
            home,
            registry,
            runner,
        }
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The backends.
    pub fn registry(&self) -> Registry {
        self.registry
    }

    /// The runner.
    pub fn runner(&self) -> &'a dyn CommandRunner {
        self.runner
    }
}
