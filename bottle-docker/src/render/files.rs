//! The archive of files copied into the agent container: the sidecars'
//! (CA, git config, MCP config) and the agent's skills.

use bottle_core::prepare::AGENT_CA_PATH;
use bottle_core::{Error, Result, Secret, Wiring};

use super::{AGENT_ENV_FILE, SYSTEM_CA_BUNDLE};
use crate::images::{AGENT_HOME, AGENT_UID};
use crate::tar;

/// `~` and `~/…` under the agent's home.
fn guest_path(p: &str) -> String {
    if p == "~" {
        AGENT_HOME.to_owned()
    } else if let Some(rest) = p.strip_prefix("~/") {
        format!("{AGENT_HOME}/{rest}")
    } else {
        p.to_owned()
    }
}

/// The archive of agent files (`docker cp - <agent>:/`: without `-a` docker keeps the archive's owners): files under the
/// home are owned by the agent, others by root; the bottle CA also replaces
/// the system trust store. `env_file`, when given, is the agent's secret
/// env file ([`AGENT_ENV_FILE`], the agent's, mode 600).
pub fn agent_files_archive(wiring: &Wiring, env_file: Option<&Secret>) -> Result<Option<Vec<u8>>> {
    if wiring.agent_files.is_empty() && env_file.is_none() {
        return Ok(None);
    }
    let mut dirs = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for f in &wiring.agent_files {
        let guest = guest_path(&f.guest);
        if !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
            return Err(Error::other(
                format!("agent file target `{}` is not an absolute path", f.guest),
                "agent files go to absolute paths or under ~/",
            ));
        }
        let data = std::fs::read(&f.host).map_err(|e| Error::io("reading", f.host.clone(), e))?;
        let rel = guest.trim_start_matches('/').to_owned();
        let home_rel = AGENT_HOME.trim_start_matches('/');
        let owner = if rel.starts_with(&format!("{home_rel}/")) {
            let mut d = std::path::Path::new(&rel).parent();
            while let Some(p) = d {
                let s = p.to_string_lossy().into_owned();
                if s.len() <= home_rel.len() {
                    break;
                }
                dirs.insert(s);
                d = p.parent();
            }
            AGENT_UID
        } else {
            0
        };
        if guest == AGENT_CA_PATH {
            files.push(tar::Entry::File {
                path: SYSTEM_CA_BUNDLE.trim_start_matches('/').to_owned(),
                mode: 0o644,
                owner: 0,
                data: data.clone(),
            });
        }
        files.push(tar::Entry::File {
            path: rel,
            mode: f.mode,
            owner,
            data,
        });
    }
    if let Some(env) = env_file {
        files.push(tar::Entry::File {
            path: AGENT_ENV_FILE.trim_start_matches('/').to_owned(),
            mode: 0o600,
            owner: AGENT_UID,
            data: env.expose().as_bytes().to_vec(),
        });
    }
    let mut entries: Vec<tar::Entry> = dirs
        .into_iter()
        .map(|path| tar::Entry::Dir {
            path,
            mode: 0o755,
            owner: AGENT_UID,
        })
        .collect();
    entries.extend(files);
    tar::archive(&entries)
        .map(Some)
        .map_err(|e| Error::other(e, "shorten the agent file paths"))
}
