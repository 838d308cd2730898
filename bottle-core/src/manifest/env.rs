//! `[env]` values: the [`EnvValue`] syntax (literal, `${HOST_VAR}`,
//! `?question`, `{ secret = ... }`) and the checks on an env map, which
//! depend on who wrote it ([`EnvAuthor`]).

use std::collections::BTreeMap;

use camino::Utf8Path;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::diagnostics::Checker;
use crate::error::Result;

/// One `[env]` value as written (README "Env values", SPEC §2).
///
/// A plain string is a literal, `"${HOST_VAR}"` (copied from the host at
/// start, **not** held) or `"?question"` (asked at start, held). The table
/// form `{ secret = "${HOST_VAR}" }` marks a host value as a secret the
/// bottle holds: the sidecars refuse to let it out and mask it in replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// `KEY = "..."`.
    Plain(String),
    /// `KEY = { secret = "${HOST_VAR}" }` (or `"?question"`).
    Secret {
        /// The host variable reference(s) or `?question`.
        secret: String,
    },
}

impl EnvValue {
    /// The string as written (without the table around a secret).
    pub fn raw(&self) -> &str {
        match self {
            EnvValue::Plain(s) => s,
            EnvValue::Secret { secret } => secret,
        }
    }

    /// Whether the bottle holds the resolved value: marked secret, or a
    /// `?prompt` answer.
    pub fn is_held(&self) -> bool {
        matches!(self, EnvValue::Secret { .. }) || self.raw().starts_with('?')
    }

    /// Whether the value comes from the host (a `${VAR}` or a `?prompt`)
    /// rather than being written in the file.
    pub fn from_host(&self) -> bool {
        let raw = self.raw();
        raw.starts_with('?') || crate::plan::env_refs(raw).is_ok_and(|r| !r.is_empty())
    }
}

impl From<&str> for EnvValue {
    fn from(s: &str) -> Self {
        EnvValue::Plain(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string (\"literal\", \"${HOST_VAR}\", \"?question\") or a table { secret = \"${HOST_VAR}\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<EnvValue, E> {
                Ok(EnvValue::Plain(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<EnvValue, A::Error> {
                let mut secret: Option<String> = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k != "secret" {
                        return Err(de::Error::unknown_field(&k, &["secret"]));
                    }
                    if secret.is_some() {
                        return Err(de::Error::duplicate_field("secret"));
                    }
                    secret = Some(m.next_value()?);
                }
                secret
                    .map(|secret| EnvValue::Secret { secret })
                    .ok_or_else(|| de::Error::missing_field("secret"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Is this a valid env var name?
pub fn valid_env_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Does this env var name say it carries a credential?
pub fn credential_like_name(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
    ]
    .iter()
    .any(|h| k.contains(h))
}

/// Who wrote an env map: the operator (a bottle or a home agent) or a
/// repository (a repo agent, which may set only literal values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvAuthor {
    /// A bottle or a home agent.
    Operator,
    /// A repo agent.
    Repo,
}

pub(super) fn validate_env(
    path: &Utf8Path,
    text: &str,
    env: &BTreeMap<String, EnvValue>,
    author: EnvAuthor,
) -> Result<()> {
    let ck = Checker { path, text };
    for (k, v) in env {
        if !valid_env_name(k) {
            return Err(ck.fail(
                k,
                format!("`env.{k}` is not a valid environment variable name"),
                "use letters, digits and `_`, not starting with a digit",
            ));
        }
        let raw = v.raw();
        let refs = crate::plan::env_refs(raw).map_err(|why| {
            ck.fail(
                k,
                format!("`env.{k}`: {why}"),
                "write host variables as ${NAME}",
            )
        })?;
        if author == EnvAuthor::Repo && (v.from_host() || matches!(v, EnvValue::Secret { .. })) {
            let what = if raw.starts_with('?') {
                "asks the operator a question (`?...`)".to_owned()
            } else if refs.is_empty() {
                "is marked secret".to_owned()
            } else {
                format!("reads host variable `{}`", refs[0])
            };
            return Err(ck.fail(
                k,
                format!("`env.{k}` {what}, but this agent comes from the repository, which may set only literal values"),
                format!("host variables and ?prompt come only from $BOTTLE_HOME: set {k} in the bottle ($BOTTLE_HOME/bottles/) or in a home agent ($BOTTLE_HOME/agents/), or write a literal value"),
            ));
        }
        if !v.from_host() {
            if let Some(rule) = bottle_dlp::pattern_hit(raw) {
                return Err(ck.fail(
                    k,
                    format!("`env.{k}` is a literal credential (matches `{rule}`); the agent would hold it and anyone who reads this file has it"),
                    format!("export it on the host and write {k} = {{ secret = \"${{{k}}}\" }} in $BOTTLE_HOME; better, let an egress route's auth hold an API token so the agent never sees it"),
                ));
            }
        }
        match v {
            EnvValue::Secret { secret } if !secret.starts_with('?') && refs.is_empty() => {
                return Err(ck.fail(
                    k,
                    format!("`env.{k} = {{ secret = ... }}` holds a literal value, not a host variable"),
                    format!("keep secrets out of manifests: export it on the host and write {k} = {{ secret = \"${{{k}}}\" }}"),
                ));
            }
            EnvValue::Plain(_) if !refs.is_empty() && credential_like_name(k) => {
                return Err(ck.fail(
                    k,
                    format!("`env.{k}` looks like a credential but is not marked secret, so the bottle would not hold it (it could be sent out)"),
                    format!("write {k} = {{ secret = \"{raw}\" }} to hold it, or rename the variable if it is not a secret"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
