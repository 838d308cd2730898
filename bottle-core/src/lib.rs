//! bottle-core: manifests, plans, the `Backend` and `Prepare` seams, the
//! command seam, errors, the launch engine and state.
//!
//! No docker, no network, no async. Data flows
//! [`manifest::Loader`] → [`plan::resolve`] → [`plan::BottlePlan`] →
//! [`backend::Backend::render`] / [`backend::Backend::launch`].

#![deny(missing_docs)]

pub mod backend;
pub mod command;
pub mod copy_out;
pub mod error;
pub mod fixture;
pub mod launch;
pub mod manifest;
pub mod plan;
pub mod prepare;
pub mod secret;
pub mod skills;
pub mod state;
pub mod tar;
pub mod teardown;
pub mod units;
pub mod workspace;

pub use backend::{
    Backend, Health, LaunchInput, LaunchScript, LogOptions, Probe, Resource, Running, Step,
};
pub use command::{CommandRunner, CommandSpec, DuctRunner, Output, RecordingRunner};
pub use error::{Error, ErrorKind, Result};
pub use launch::{InterruptGuard, Launch, LaunchStep, Outcome, StepContext, Undo, UndoStack};
pub use manifest::{Loader, Runtime, Template};
pub use plan::{resolve, BottlePlan, Identity, ResolveOptions};
pub use prepare::{Prepare, PrepareContext, Wiring};
pub use secret::Secret;
pub use state::{Home, Metadata, StateDir};
