//! bottle's host contract: everything the host CLI and the sidecar daemons
//! share, with no async runtime (ARCHITECTURE.md, "Crates").
//!
//! Module ownership:
//! - [`layout`]: where each of these files lives, in the state dir and in
//!   the bundle.
//! - [`bundle`]: `bundle.toml` (which daemons run, with what files) and the
//!   bundle log's place next to the audit log.
//! - [`routes`]: `routes.toml`, egress policy (the file, its compiled form,
//!   and the read-only view `bottle inspect` shows).
//! - [`gate`]: `gate.toml`, git-gate policy.
//! - [`supervise`]: `sv.toml`, the request / decision model, the signed
//!   decision store, the grant edits and the operator queue API.
//! - [`access`]: the bundle's access credential.
//! - [`audit`]: the JSONL decision log every daemon writes.
//! - [`ca`]: the per-bottle egress CA (generation; the daemon signs leaves).
//! - [`prepare`]: the host-side `Prepare` impls that write all of the above
//!   into a bottle's state dir.
//!
//! Depends on bottle-core and bottle-dlp only (tidy test); never on tokio,
//! hyper or rmcp, so the CLI links none of them.

pub mod access;
pub mod audit;
pub mod bundle;
pub mod ca;
pub mod gate;
pub mod layout;
pub mod prepare;
pub mod routes;
pub mod supervise;

pub use bottle_dlp as dlp;
