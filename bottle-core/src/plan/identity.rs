//! Naming: the [`Identity`] of one bottle instance, and the names and
//! labels of every resource it gets.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Names, LABEL_IDENTITY};
use crate::error::{Error, Result};

/// The slug naming one bottle instance: `<agent>-<bottle>-<random>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Identity(String);

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').chars().take(20).collect()
}

impl Identity {
    /// A fresh identity with a random 6-character suffix.
    pub fn generate(agent: &str, bottle: &str) -> Self {
        use rand::Rng;
        const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let suffix: String = (0..6)
            .map(|_| ALPHA[rng.random_range(0..ALPHA.len())] as char)
            .collect();
        Identity(format!("{}-{}-{suffix}", slug(agent), slug(bottle)))
    }

    /// Parse a user-supplied identity (rejects anything that is not a slug,
    /// so an identity can never escape the state dir).
    pub fn parse(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && !s.starts_with('-');
        if ok {
            Ok(Identity(s.to_owned()))
        } else {
            Err(Error::NoSuchBottle {
                identity: s.to_owned(),
            })
        }
    }

    /// Wrap a name read from the state dir.
    pub(crate) fn from_existing(s: &str) -> Self {
        Identity(s.to_owned())
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The names of every resource of the bottle `id`.
pub(super) fn names(id: &str) -> Names {
    Names {
        bundle: format!("bottle-{id}-bundle"),
        agent: format!("bottle-{id}-agent"),
        internal_network: format!("bottle-{id}-int"),
        egress_network: format!("bottle-{id}-egress"),
        home_volume: format!("bottle-{id}-home"),
    }
}

/// The labels on every resource of the bottle `id`.
pub(super) fn labels(id: &str, agent: &str, bottle: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_IDENTITY.to_owned(), id.to_owned());
    labels.insert("dev.bottle.agent".to_owned(), agent.to_owned());
    labels.insert("dev.bottle.bottle".to_owned(), bottle.to_owned());
    labels
}
