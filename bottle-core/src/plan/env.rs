//! Values from the host: the [`HostEnv`] and [`Prompter`] seams, the
//! `${NAME}` syntax of manifest values ([`env_refs`]) and its expansion,
//! `~` in host paths, and the "looks like a credential" heuristic.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Host environment lookup (tests supply a map).
pub trait HostEnv {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl HostEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl HostEnv for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Answers `?prompt` values.
pub trait Prompter {
    /// Ask for `key` with this question; the answer is a secret.
    fn ask(&self, key: &str, question: &str) -> Result<Secret>;
}

/// A prompter that refuses (non-interactive use).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPrompt;

impl Prompter for NoPrompt {
    fn ask(&self, key: &str, _question: &str) -> Result<Secret> {
        Err(Error::Prompt {
            key: key.into(),
            why: "bottle is not running interactively".into(),
        })
    }
}

/// A prompter that answers every question with a fixed placeholder; used by
/// `bottle plan`, which must not ask or store anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlaceholderPrompt;

impl Prompter for PlaceholderPrompt {
    fn ask(&self, _key: &str, _question: &str) -> Result<Secret> {
        Ok(Secret::new("<asked at start>"))
    }
}

/// The `${NAME}` references in a value, or why the value is malformed.
pub fn env_refs(value: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{value}` has an unclosed `${{`"))?;
        let name = &after[..end];
        if !crate::manifest::valid_env_name(name) {
            return Err(format!("`${{{name}}}` is not a valid variable reference"));
        }
        out.push(name.to_owned());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Expand every `${NAME}` in `value` from the host env.
pub(super) fn interpolate(
    value: &str,
    key: &str,
    file: &Utf8Path,
    env: &dyn HostEnv,
) -> Result<String> {
    let mut out = value.to_owned();
    for name in env_refs(value).map_err(|why| Error::Manifest {
        file: file.to_owned(),
        line: None,
        column: None,
        message: why,
        fix: "write host variables as ${NAME}".into(),
    })? {
        let v = env.var(&name).ok_or_else(|| Error::MissingHostVar {
            file: file.to_owned(),
            key: key.into(),
            var: name.clone(),
        })?;
        out = out.replace(&format!("${{{name}}}"), &v);
    }
    Ok(out)
}

/// `~/…` under the host's `$HOME`.
pub(super) fn expand_tilde(p: &str, host: &dyn HostEnv) -> Utf8PathBuf {
    match (p.strip_prefix("~/"), host.var("HOME")) {
        (Some(rest), Some(home)) => Utf8PathBuf::from(home).join(rest),
        _ => Utf8PathBuf::from(p),
    }
}

/// Does this env value look like a credential? (`bottle check` warns.)
pub fn looks_like_secret(key: &str, value: &str) -> bool {
    let k = key.to_ascii_uppercase();
    let name_hint = [
        "TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE",
    ]
    .iter()
    .any(|h| k.contains(h));
    let literal = !value.starts_with('?') && env_refs(value).map(|r| r.is_empty()).unwrap_or(true);
    let value_hint = [
        "ghp_",
        "github_pat_",
        "glpat-",
        "sk-",
        "xoxb-",
        "AKIA",
        "-----BEGIN",
    ]
    .iter()
    .any(|h| value.contains(h));
    (name_hint && literal && !value.is_empty()) || value_hint
}
