//! The host side of supervise: the request / decision model, `sv.toml`, the
//! signed decision store, the policy edits a grant makes, and the
//! operator-side queue API the CLI calls. The MCP server (the daemon side)
//! lives in `bottle-sidecars` and uses these types; the trust argument (who
//! may write which file) is in its module docs and in ARCHITECTURE.md.

pub mod capability;
pub mod config;
pub mod model;
pub mod policy;
pub mod queue;
pub mod store;

pub use capability::{parse_capability, CapabilityChange};
pub use config::{sv_path, RateLimit, SvConfig};
pub use model::{is_request_id, Decision, Narrowing, Request, RequestKind, Status, Verdict};
pub use policy::{RemoteView, RouteView};
pub use queue::QueueError;
pub use store::{atomic_write, auto_deny_note, Verifier};

/// Default port of the supervise MCP server.
pub const DEFAULT_PORT: u16 = 9100;
