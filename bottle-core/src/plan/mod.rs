//! [`resolve`]: manifests + host env + CLI flags → an immutable [`BottlePlan`].
//!
//! Owns naming (identity, container/network/volume names, labels) and every
//! default. Reads nothing but the loaded manifests, the prompt file and the
//! host environment (through [`HostEnv`]); `?prompt` answers come through
//! [`Prompter`]. Maps are `BTreeMap`s so JSON output and hashes are stable;
//! secrets are [`Secret`](crate::secret::Secret)s, redacted in every rendering.
//!
//! By concern: `identity` (the identity and resource names), `env` (host
//! values and the `${NAME}` syntax), `types` (the plan and its options),
//! `resolve` (the steps). Everything public is re-exported here.

mod env;
mod identity;
mod resolve;
mod types;

#[cfg(test)]
mod tests;

pub use env::{
    env_refs, looks_like_secret, HostEnv, NoPrompt, PlaceholderPrompt, ProcessEnv, Prompter,
};
pub use identity::Identity;
pub use resolve::resolve;
pub use types::{
    AuthScheme, BottlePlan, EgressPlan, EnvEntry, GitPlan, ImageSource, Names, Ports, ProviderPlan,
    RemotePlan, ResolveOptions, Resources, RouteAuthPlan, RoutePlan, Sources, SupervisePlan,
    AGENT_PROMPT_FILE, DEFAULT_BASE_IMAGE, LABEL_IDENTITY, PLACEHOLDER_TOKEN, PLAN_SCHEMA,
};
