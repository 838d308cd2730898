//! Docker-style ids: every command that takes a bottle or a request id
//! accepts any unique prefix of it. A request also matches by a prefix of
//! its random tail (what the dashboard shows, e.g. `62496e`). No match is
//! "no such …" and an ambiguous prefix lists the matches; both exit 2.

use std::path::PathBuf;

use bottle_core::{DuctRunner, Error, Home, Identity, Result};
use bottle_host::supervise::{queue, Request};

/// The bottle `arg` names: its exact identity or a unique prefix of one
/// (`bottle_lifecycle::Lifecycle::identity`).
pub fn bottle(home: &Home, arg: &str) -> Result<Identity> {
    bottle_lifecycle::Lifecycle::new(home.clone(), crate::registry::registry(), &DuctRunner)
        .identity(arg)
}

/// The random tail of a request id (`req-<time>-<hex>` → `<hex>`).
pub fn request_tail(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

/// Every request of every bottle of this home, with its bottle's state dir.
pub fn all_requests(home: &Home) -> Result<Vec<(PathBuf, Request)>> {
    let mut out = Vec::new();
    for id in home.identities()? {
        let dir = home.state(&id).path().as_std_path().to_owned();
        if !dir.join("queue").is_dir() {
            continue;
        }
        if let Ok(list) = queue::list(&dir) {
            out.extend(list.into_iter().map(|r| (dir.clone(), r)));
        }
    }
    Ok(out)
}

/// The request `arg` names: its exact id, a unique prefix of the id, or a
/// unique prefix of its random tail.
pub fn request(home: &Home, arg: &str) -> Result<(PathBuf, Request)> {
    let all = all_requests(home)?;
    let arg = arg.trim();
    if let Some(i) = all.iter().position(|(_, r)| r.id == arg) {
        return Ok(all.into_iter().nth(i).expect("position is in range"));
    }
    let mut matches: Vec<(PathBuf, Request)> = if arg.is_empty() {
        Vec::new()
    } else {
        all.into_iter()
            .filter(|(_, r)| r.id.starts_with(arg) || request_tail(&r.id).starts_with(arg))
            .collect()
    };
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Error::NoSuchRequest { id: arg.to_owned() }),
        _ => Err(ambiguous(
            "request",
            arg,
            matches.into_iter().map(|(_, r)| r.id).collect(),
        )),
    }
}

fn ambiguous(what: &'static str, prefix: &str, matches: Vec<String>) -> Error {
    Error::Ambiguous {
        what,
        prefix: prefix.to_owned(),
        matches,
    }
}
