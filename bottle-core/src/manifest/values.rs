//! Checks of single values the bottle sections share: route hosts, HTTP
//! methods, auth schemes and tokens, globs, ssh URLs.

use super::diagnostics::Checker;
use crate::error::Result;

/// Is this a valid route host (`api.example.com` or `*.example.com`)?
pub fn valid_route_host(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.contains('.') | (name == "localhost")
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// HTTP methods a route may list.
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// An auth token: `?prompt` or exactly one `${HOST_VAR}`, never a literal.
pub(super) fn validate_token(ck: &Checker<'_>, key: &str, token: &str) -> Result<()> {
    if token.starts_with('?') {
        return Ok(());
    }
    match crate::plan::env_refs(token) {
        Ok(refs) if refs.len() == 1 && token.trim() == format!("${{{}}}", refs[0]) => Ok(()),
        _ => Err(ck.fail(
            key,
            format!("`{key}` must be a host variable reference like \"${{API_TOKEN}}\" or \"?prompt\", not a literal value"),
            "keep secrets out of manifests: export the token on the host and write token = \"${NAME}\"",
        )),
    }
}

/// An auth scheme a provider (`provider`) or a route supports.
pub(super) fn validate_scheme(ck: &Checker<'_>, scheme: &str, provider: bool) -> Result<()> {
    let ok = match scheme {
        "bearer" | "x-api-key" => true,
        "basic" => !provider,
        s => {
            !provider
                && s.strip_prefix("header:").is_some_and(|n| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
    };
    if ok {
        return Ok(());
    }
    let valid = if provider {
        "x-api-key, bearer"
    } else {
        "bearer, basic, x-api-key, header:<Name>"
    };
    Err(ck.fail(
        "scheme",
        format!("auth scheme `{scheme}` is not supported (valid: {valid})"),
        format!("use one of: {valid}"),
    ))
}

/// A path or ref glob that compiles.
pub(super) fn validate_glob(ck: &Checker<'_>, key: &str, pat: &str) -> Result<()> {
    globset::GlobBuilder::new(pat)
        .literal_separator(true)
        .build()
        .map(|_| ())
        .map_err(|e| {
            ck.fail(
                key,
                format!("`{pat}` is not a valid glob: {}", e.kind()),
                "fix the pattern (`*` within a segment, `**` across segments)",
            )
        })
}

/// `git@host:path` or `ssh://…`.
pub fn is_ssh_url(url: &str) -> bool {
    url.starts_with("ssh://") || (!url.contains("://") && url.contains('@') && url.contains(':'))
}
