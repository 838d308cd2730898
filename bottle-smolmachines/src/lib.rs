//! bottle's smolmachines backend: the agent runs in a smolvm micro-VM whose
//! only reachable peer is the bottle's sidecar bundle (which still runs in
//! docker, on a per-bottle bridge, published on a per-bottle loopback alias).
//!
//! Modules: [`smolvm`] (the CLI seam: argv and JSON shapes), [`hv`]
//! (hypervisor checks), [`launch`] (readiness and error classification).
#![deny(missing_docs)]

pub mod backend;
pub mod hv;
pub mod launch;
pub mod net;
pub mod plan;
pub mod probe;
pub mod render;
pub mod smolvm;

pub use backend::{SmolRunning, SmolmachinesBackend};
pub use plan::{bundle_host, SmolmachinesPlan};
