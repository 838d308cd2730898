//! Manifest error messages: file/line/column positions, serde errors
//! turned into messages with a fix, and a "did you mean" for a mistyped key
//! or value.

use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// A manifest name that is not [`super::valid_name`], in `file` (or on the
/// command line).
pub(super) fn bad_name(kind: &'static str, name: &str, file: Option<&Utf8Path>) -> Error {
    Error::Manifest {
        file: file
            .map(Utf8Path::to_owned)
            .unwrap_or_else(|| Utf8PathBuf::from("<command line>")),
        line: None,
        column: None,
        message: format!("`{name}` is not a valid {kind} name"),
        fix: "names use lowercase letters, digits, `-` and `_` (at most 48)".into(),
    }
}

/// 1-based line and column of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Where `key = ...` (or a `[key]` table) first stands in `text`, if it does.
pub(super) fn key_position(text: &str, key: &str) -> (Option<usize>, Option<usize>) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let is_key = t.starts_with(key) && t[key.len()..].trim_start().starts_with('=');
        let is_table =
            t.starts_with('[') && t.trim_start_matches('[').trim_start().starts_with(key);
        if is_key || is_table {
            let (l, c) = line_col(text, offset + indent);
            return (Some(l), Some(c));
        }
        offset += line.len();
    }
    (None, None)
}

/// `text` parsed as `T`, a TOML or serde error placed at its line and
/// column, with a closest-key hint for a typo.
pub(super) fn parse<T: DeserializeOwned>(path: &Utf8Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let mut message = e.message().trim().to_owned();
        let suggestion = closest_expected(&message);
        if let Some((_, best)) = &suggestion {
            message.push_str(&format!("; did you mean `{best}`?"));
        }
        let fix = if let Some((wrong, best)) = suggestion {
            if message.starts_with("unknown variant") {
                format!("write `{best}` instead of `{wrong}`")
            } else {
                format!("rename `{wrong}` to `{best}`")
            }
        } else if message.contains("unknown field") {
            "remove or rename the key; the valid keys are listed above".to_owned()
        } else if message.contains("unknown variant") {
            "use one of the values listed above".to_owned()
        } else if message.contains("missing field") {
            "add the missing key".to_owned()
        } else {
            "fix the TOML at that position".to_owned()
        };
        Error::Manifest {
            file: path.to_owned(),
            line,
            column,
            message,
            fix,
        }
    })
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant ..."), the valid name closest to `x` when it is a likely typo:
/// `(x, closest)`.
fn closest_expected(message: &str) -> Option<(String, String)> {
    let rest = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("unknown variant "))?;
    let mut names = rest.split('`').skip(1).step_by(2);
    let wrong = names.next()?;
    let (dist, best) = names
        .map(|n| (strsim::damerau_levenshtein(wrong, n), n))
        .min_by_key(|(d, _)| *d)?;
    let len = wrong.chars().count();
    (dist > 0 && dist < len && dist <= (len / 3).max(2))
        .then(|| (wrong.to_owned(), best.to_owned()))
}

/// Errors placed at a key of one manifest file.
pub(super) struct Checker<'a> {
    pub(super) path: &'a Utf8Path,
    pub(super) text: &'a str,
}

impl Checker<'_> {
    /// An error at the first `key` in the file (no position when `key` is
    /// empty or absent).
    pub(super) fn fail(&self, key: &str, message: String, fix: impl Into<String>) -> Error {
        let (line, column) = if key.is_empty() {
            (None, None)
        } else {
            key_position(self.text, key)
        };
        Error::Manifest {
            file: self.path.to_owned(),
            line,
            column,
            message,
            fix: fix.into(),
        }
    }
}
