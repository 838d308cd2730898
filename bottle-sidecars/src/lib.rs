//! bottle's sidecars: the three daemons that are a bottle's only ways out, and
//! the host-side [`bottle_core::Prepare`] implementations that write their
//! configuration into a bottle's state dir.
//!
//! Module ownership:
//! - [`dlp`]: the one secret detector shared by egress and git-gate (the
//!   `bottle-dlp` crate, re-exported).
//! - [`audit`]: the JSONL decision log every daemon writes.
//! - [`egress`]: default-deny HTTPS proxy (port 8888).
//! - [`git_gate`]: gated git fetch/push (port 9418).
//! - [`supervise`]: MCP server for permission requests (port 9100) and the
//!   operator-side queue API the CLI uses.
//! - [`bundle`]: `bottle-sidecar run`, all daemons under one supervisor.
//! - [`prepare`]: the host-side `Prepare` impls (state dir files + wiring).
//!
//! Sidecars never depend on a backend crate.

pub mod audit;
pub mod bundle;
pub use bottle_dlp as dlp;
pub mod egress;
pub mod git_gate;
pub mod prepare;
pub mod supervise;
