//! bottle's sidecars: the three daemons that are a bottle's only ways out.
//! The files they read, the operator queue API and the host-side
//! [`bottle_core::Prepare`] impls are in `bottle-host` (no tokio), re-exported
//! here under their old paths.
//!
//! Module ownership:
//! - [`dlp`]: the one secret detector shared by egress and git-gate (the
//!   `bottle-dlp` crate, re-exported).
//! - [`access`]: the bundle's access credential (`bottle_host::access`).
//! - [`audit`]: the JSONL decision log every daemon writes (`bottle_host::audit`).
//! - [`egress`]: default-deny HTTPS proxy (port 8888).
//! - [`git_gate`]: gated git fetch/push (port 9418).
//! - [`supervise`]: MCP server for permission requests (port 9100); the
//!   operator-side queue API it shares with the CLI is `bottle_host::supervise`.
//! - [`bundle`]: `bottle-sidecar run`, all daemons under one supervisor.
//! - [`prepare`]: the host-side `Prepare` impls (`bottle_host::prepare`).
//!
//! Sidecars never depend on a backend crate.

pub use bottle_host::{access, audit, prepare};
pub mod bundle;
pub use bottle_dlp as dlp;
pub mod egress;
pub mod git_gate;
pub mod supervise;
