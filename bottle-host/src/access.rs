//! The bundle's access credential: only the bottle's own agent may use its
//! bundle (docs/security.md S11, ARCHITECTURE.md "Access credential").
//!
//! `prepare` generates one random credential per bottle (not a held secret:
//! it unlocks nothing outside the bundle, and it is never a route token) and
//! hands it to the agent only: in its proxy URL (egress checks
//! `Proxy-Authorization`), in its MCP config (supervise checks
//! `Authorization: Bearer`) and in the path of its git remotes
//! (`git://bundle:9418/<credential>/<remote>.git`; git:// has no auth of
//! its own). Every other process that reaches the bundle's address is
//! refused and audited. The value never goes into an audit line, a log or
//! an error message; [`AccessKey`]'s `Debug` hides it.

use std::path::Path;

use base64::Engine as _;
use subtle::ConstantTimeEq as _;

/// Length of the credential in bytes (hex-encoded: twice that in chars).
const KEY_BYTES: usize = 32;

/// The user name the agent's proxy URL carries (any name is accepted; only
/// the password is checked).
pub const PROXY_USER: &str = "bottle";

/// One bottle's access credential.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(String);

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessKey(<redacted>)")
    }
}

impl AccessKey {
    /// A fresh random credential (64 hex characters).
    pub fn generate() -> Self {
        let bytes: [u8; KEY_BYTES] = rand::random();
        Self(hex::encode(bytes))
    }

    /// Read it from `path` (surrounding whitespace ignored). A file that
    /// does not hold a credential of the generated shape is an error: the
    /// daemons fail closed rather than accept anyone.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(text.trim()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold an access credential", path.display()),
            )
        })
    }

    /// Accept exactly the generated shape: 64 lowercase hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == KEY_BYTES * 2
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(text.to_owned()))
    }

    /// The value, for the host side that writes the agent's wiring.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a client presented.
    pub fn matches(&self, presented: &[u8]) -> bool {
        presented.len() == self.0.len() && bool::from(presented.ct_eq(self.0.as_bytes()))
    }

    /// A `Proxy-Authorization: Basic base64(user:credential)` value that
    /// carries this credential as its password.
    pub fn matches_basic(&self, header: &[u8]) -> bool {
        let Some(b64) = strip_scheme(header, b"basic") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => self.matches(&decoded[i + 1..]),
            None => false,
        }
    }

    /// An `Authorization: Bearer <credential>` value.
    pub fn matches_bearer(&self, header: &[u8]) -> bool {
        strip_scheme(header, b"bearer").is_some_and(|t| self.matches(t.trim_ascii()))
    }

    /// The `user:credential@` part of the agent's proxy URL.
    pub fn proxy_userinfo(&self) -> String {
        format!("{PROXY_USER}:{}@", self.0)
    }
}

/// `value` without its case-insensitive auth `scheme` and the space after it.
fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let value = value.trim_ascii_start();
    (value.len() > scheme.len()
        && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        && value[scheme.len()] == b' ')
        .then(|| &value[scheme.len() + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_its_own_credential_in_each_form() {
        let k = AccessKey::generate();
        let other = AccessKey::generate();
        assert_ne!(k, other);
        assert!(AccessKey::parse(k.expose()).is_some());
        assert!(AccessKey::parse("short").is_none());
        assert!(AccessKey::parse(&k.expose().to_uppercase()).is_none());
        let basic = |user: &str, pass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            )
        };
        assert!(k.matches_basic(basic("bottle", k.expose()).as_bytes()));
        assert!(k.matches_basic(basic("anyone", k.expose()).as_bytes()));
        assert!(!k.matches_basic(basic("bottle", other.expose()).as_bytes()));
        assert!(!k.matches_basic(basic(k.expose(), "").as_bytes()));
        assert!(!k.matches_basic(b"Basic !!!"));
        assert!(!k.matches_basic(format!("Bearer {}", k.expose()).as_bytes()));
        assert!(k.matches_bearer(format!("Bearer {}", k.expose()).as_bytes()));
        assert!(k.matches_bearer(format!("bearer {}", k.expose()).as_bytes()));
        assert!(!k.matches_bearer(format!("Bearer {}", other.expose()).as_bytes()));
        assert!(!k.matches_bearer(b"Bearer "));
        assert!(!format!("{k:?}").contains(k.expose()));
    }
}
