//! Manifests (SPEC §2): the raw TOML model of bottles and agents, where they
//! may come from, `extends`, and validation with file/line/column errors.
//!
//! Owns trust: bottles are read ONLY from `$BOTTLE_HOME/bottles`; agents from
//! `$BOTTLE_HOME/agents` and `<repo>/.bottle/agents`, and an agent file can
//! never carry bottle keys. Does no I/O beyond reading manifest files.
//!
//! By concern: `types` (the TOML model), `env` (`[env]` values and their
//! checks), `loader` ([`Loader`]: where manifests come from), `extends`
//! (parent chains and their merge), `agent` and `bottle` (each kind parsed
//! and checked), `values` (single-value checks), `diagnostics` (positions,
//! messages and "did you mean" hints). Everything public is re-exported
//! here.

mod agent;
mod bottle;
mod diagnostics;
mod env;
mod extends;
mod loader;
mod types;
mod values;

pub use agent::agent_from_text;
pub(crate) use agent::prompt_path;
pub use bottle::bottle_from_text;
pub use diagnostics::line_col;
pub use env::{credential_like_name, valid_env_name, EnvValue};
pub use loader::{valid_name, Loader};
pub use types::{
    AgentFile, AgentSource, BottleFile, EgressSection, GitSection, GitUser, LoadedAgent,
    LoadedBottle, ProviderAuth, ProviderSection, RemoteSection, ResourcesSection, RouteAuth,
    RouteSection, Runtime, SuperviseSection, Template, BOTTLE_KEYS, DEFAULT_BACKEND,
    KNOWN_BACKENDS,
};
pub use values::{is_ssh_url, valid_route_host, METHODS};
