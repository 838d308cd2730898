//! [`Secret`]: a value that must never be printed.
//!
//! Owns redaction. A `Secret` renders as `[REDACTED]` in `Debug`, `Display`
//! and `Serialize`, so a plan, an error or a rendered command can be printed,
//! logged or snapshotted without leaking it. Only [`Secret::expose`] yields
//! the value, and only sidecar config writers call it.

use std::fmt;

/// The text every redacted value renders as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string (token, key material, `?prompt` answer).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret {
    value: String,
}

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
        }
    }

    /// The real value. Call only where it is written to a mode-600 file for
    /// the bundle; never format it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Replace every occurrence of this secret in `text` with [`REDACTED`].
    /// Used to scrub captured output (stderr tails) before it reaches an error.
    pub fn scrub(&self, text: &str) -> String {
        if self.value.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.value, REDACTED)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(
            format!("{:#?}", Some(&s)),
            format!("Some(\n    {REDACTED},\n)")
        );
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{REDACTED}\"")
        );
        assert_eq!(s.expose(), "hunter2-very-secret");
        assert_eq!(
            s.scrub("x hunter2-very-secret y"),
            format!("x {REDACTED} y")
        );
    }
}
