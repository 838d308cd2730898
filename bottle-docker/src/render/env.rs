//! The agent's environment: what goes into the container config (plain)
//! and what only into the env file the launch writes after start (secret),
//! with the entry wrapper that waits for it.

use std::collections::BTreeMap;

use bottle_core::plan::{BottlePlan, EnvEntry};
use bottle_core::prepare::AGENT_CA_PATH;
use bottle_core::{Secret, Wiring};

use super::BUNDLE_ALIAS;
use crate::images::AGENT_HOME;

/// The agent's environment: plan env, then the sidecar wiring, then what the
/// backend enforces (proxy, CA trust, home). Returns (plain, secret).
pub fn agent_env(
    plan: &BottlePlan,
    wiring: &Wiring,
) -> (BTreeMap<String, String>, BTreeMap<String, Secret>) {
    let mut plain = BTreeMap::new();
    let mut secret = BTreeMap::new();
    for (k, v) in &plan.env {
        match v {
            EnvEntry::Literal(s) => {
                plain.insert(k.clone(), s.clone());
            }
            EnvEntry::Secret(s) => {
                secret.insert(k.clone(), s.clone());
            }
        }
    }
    for (k, v) in &wiring.agent_env {
        secret.remove(k);
        plain.insert(k.clone(), v.clone());
    }
    let proxy = format!("http://{BUNDLE_ALIAS}:{}", plan.ports.egress);
    let enforced = [
        ("HTTP_PROXY", proxy.as_str()),
        ("HTTPS_PROXY", &proxy),
        ("http_proxy", &proxy),
        ("https_proxy", &proxy),
        ("NO_PROXY", BUNDLE_ALIAS),
        ("no_proxy", BUNDLE_ALIAS),
        ("SSL_CERT_FILE", AGENT_CA_PATH),
        ("NODE_EXTRA_CA_CERTS", AGENT_CA_PATH),
        ("REQUESTS_CA_BUNDLE", AGENT_CA_PATH),
        ("GIT_SSL_CAINFO", AGENT_CA_PATH),
        ("CURL_CA_BUNDLE", AGENT_CA_PATH),
        ("HOME", AGENT_HOME),
        ("BOTTLE_IDENTITY", plan.identity.as_str()),
    ];
    for (k, v) in enforced {
        secret.remove(k);
        plain.insert(k.to_owned(), v.to_owned());
    }
    // Wiring the agent holds off the container config (the proxy URL with
    // the bundle access credential): it overrides the plain value inside
    // the agent once the env file is loaded.
    for (k, v) in &wiring.agent_secret_env {
        secret.insert(k.clone(), v.clone());
    }
    (plain, secret)
}

/// Stands for the agent image's own ENTRYPOINT + CMD in a rendered
/// `docker create` (replaced at launch; see [`super::Action::WithImageCommand`]).
pub const IMAGE_COMMAND: &str = "<image ENTRYPOINT and CMD>";
/// Where the agent's secret env lives (container layer, agent-owned, 0600;
/// never in the container config, never on the home volume).
pub const AGENT_ENV_FILE: &str = "/tmp/.bottle-env";
/// Where the agent sees the state's `run/` dir (read-only): the bundle's
/// readiness marker appears there once every sidecar listens.
pub const AGENT_RUN_DIR: &str = "/run/bottle";
/// Entry wrapper of an agent whose files (the secret env file among them)
/// are copied in before it starts: wait for the bundle's readiness marker,
/// load the env file, run the real command. ARCHITECTURE.md "Data flow of
/// `bottle start <agent>`".
/// The wait is bounded (60 s): a marker the agent cannot see must not hang
/// it; without the bundle its traffic is refused anyway (fail closed).
pub(super) const AWAIT_BUNDLE: &str = "i=0; while [ ! -e /run/bottle/bundle.ready ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; if [ -r /tmp/.bottle-env ]; then . /tmp/.bottle-env; fi; exec \"$@\"";
/// Entry wrapper: wait for the env file, load it, run the real command.
pub(super) const AWAIT_ENV: &str =
    "while [ ! -e /tmp/.bottle-env.ready ]; do sleep 0.05; done; . /tmp/.bottle-env; exec \"$@\"";
/// Writes the env file from stdin (run as the agent user).
pub(super) const WRITE_ENV: &str =
    "umask 077 && cat > /tmp/.bottle-env && touch /tmp/.bottle-env.ready";
/// Prefix for `bottle exec`: the same env as the agent's main process.
pub const EXEC_WITH_ENV: &str = "[ -r /tmp/.bottle-env ] && . /tmp/.bottle-env; exec \"$@\"";

/// `export NAME='value'` lines for the secret env (single-quote escaped).
pub(super) fn secret_env_file(secret: &BTreeMap<String, Secret>) -> Secret {
    let mut text = String::new();
    for (k, v) in secret {
        text.push_str(&format!(
            "export {k}='{}'\n",
            v.expose().replace('\'', "'\\''")
        ));
    }
    Secret::new(text)
}
