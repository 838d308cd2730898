//! `ls`: every bottle of the home with its state, asking each backend's
//! engine once for the health of all its bottles.

use std::collections::BTreeMap;

use bottle_core::backend::Health;
use bottle_core::state::Phase;
use bottle_core::{Error, Result};
use serde::Serialize;

use crate::{pid_alive, Lifecycle};

/// One row of `bottle ls --json` (schema_version 1).
#[derive(Debug, Clone, Serialize)]
pub struct LsRow {
    /// Identity.
    pub identity: String,
    /// Agent.
    pub agent: String,
    /// Bottle.
    pub bottle: String,
    /// Backend.
    pub backend: String,
    /// running | stopped | degraded | launching | crashed | unknown.
    pub state: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Seconds since creation.
    pub age_secs: u64,
    /// Pending permission requests.
    pub pending_requests: usize,
}

impl Lifecycle<'_> {
    /// Every bottle's row, and the first backend whose engine did not
    /// answer (its bottles are "unknown"; the caller shows the rows and
    /// then fails with that error).
    pub fn list(&self) -> Result<(Vec<LsRow>, Option<Error>)> {
        let mut rows = Vec::new();
        // per backend: whether its engine answers (asked once)
        let mut answers: BTreeMap<String, Option<Error>> = BTreeMap::new();
        // one question per backend for every bottle's health, where it can
        let mut all_health: BTreeMap<String, Option<BTreeMap<String, Health>>> = BTreeMap::new();
        for id in self.home.identities()? {
            let state = self.home.state(&id);
            let Ok(meta) = state.read_metadata() else {
                continue;
            };
            let st = match meta.phase {
                Phase::Stopped => "stopped".to_owned(),
                Phase::Launching if meta.owner_pid.is_some_and(pid_alive) => "launching".to_owned(),
                Phase::Launching => "crashed".to_owned(),
                _ => match self.registry.get(&meta.backend) {
                    // An engine that does not answer reports every
                    // container as absent: that is "unknown", not "stopped".
                    Ok(b)
                        if answers
                            .entry(meta.backend.clone())
                            .or_insert_with(|| self.engine_answers(&*b).err())
                            .is_some() =>
                    {
                        "unknown".to_owned()
                    }
                    Ok(b) => match all_health
                        .entry(meta.backend.clone())
                        .or_insert_with(|| b.health_of_all(self.runner))
                        .as_ref()
                        .map(|m| m.get(id.as_str()).copied().unwrap_or(Health::Stopped))
                        .map(Ok)
                        .unwrap_or_else(|| b.handle(&meta, &state).health(self.runner))
                    {
                        Ok(h) => serde_json::to_value(h)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        Err(_) => "unknown".to_owned(),
                    },
                    Err(_) => "unknown".to_owned(),
                },
            };
            rows.push(LsRow {
                identity: id.to_string(),
                agent: meta.agent.clone(),
                bottle: meta.bottle.clone(),
                backend: meta.backend.clone(),
                state: st,
                age_secs: age_secs(&meta.created),
                created: meta.created.clone(),
                pending_requests: bottle_host::supervise::queue::pending_count(
                    state.path().as_std_path(),
                ),
            });
        }
        Ok((rows, answers.into_values().flatten().next()))
    }
}

fn age_secs(created: &str) -> u64 {
    humantime::parse_rfc3339_weak(created)
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
