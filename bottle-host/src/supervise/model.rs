//! The data the queue holds: requests, decisions, request ids, and the input
//! validation both the daemon (on the way in) and the operator API (on the
//! way out, again) apply to everything an agent wrote.

use std::time::{Duration, SystemTime};

use once_cell::sync::Lazy;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// Longest accepted `reason` (characters).
pub const MAX_REASON: usize = 2000;
/// Longest accepted capability `detail` (characters).
pub const MAX_DETAIL: usize = 1000;
/// Most path globs one egress request may name.
pub const MAX_PATHS: usize = 16;
/// Longest accepted path glob or ref pattern.
pub const MAX_PATTERN: usize = 256;

/// What a request asks for (serialized as `"kind": …, "details": {…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "details", rename_all = "snake_case")]
pub enum RequestKind {
    /// A new egress route.
    Egress {
        /// Exact host or `*.example.com`.
        host: String,
        /// Port; absent = the scheme default (443 / 80).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// Path globs; empty = all paths.
        #[serde(default)]
        paths: Vec<String>,
        /// Upper-case methods; empty = all methods.
        #[serde(default)]
        methods: Vec<String>,
        /// Operator-only: let the route reach private/loopback addresses.
        /// A request can never carry it; only [`Narrowing::allow_private`] sets it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_private: bool,
    },
    /// Permission to push refs matching a pattern to a configured remote.
    GitPush {
        /// Remote name as configured in the bottle.
        remote: String,
        /// Ref pattern under `refs/` (`*` globs allowed).
        ref_pattern: String,
    },
    /// Anything else (a package, more memory, a tool); recorded, applied on resume.
    Capability {
        /// Short category, e.g. `package`, `memory`, `tool`.
        kind: String,
        /// What exactly.
        detail: String,
    },
}

impl RequestKind {
    /// `egress`, `git_push` or `capability`.
    pub fn name(&self) -> &'static str {
        match self {
            RequestKind::Egress { .. } => "egress",
            RequestKind::GitPush { .. } => "git_push",
            RequestKind::Capability { .. } => "capability",
        }
    }

    /// One-line human summary (no reason), e.g. `egress api.example.com:443 GET /v1/**`.
    pub fn summary(&self) -> String {
        match self {
            RequestKind::Egress {
                host,
                port,
                paths,
                methods,
                allow_private,
            } => {
                let mut s = format!("egress {host}");
                if *allow_private {
                    s.push_str(" (private addresses allowed)");
                }
                if let Some(p) = port {
                    s.push_str(&format!(":{p}"));
                }
                if !methods.is_empty() {
                    s.push_str(&format!(" {}", methods.join(",")));
                }
                if !paths.is_empty() {
                    s.push_str(&format!(" {}", paths.join(" ")));
                }
                s
            }
            RequestKind::GitPush {
                remote,
                ref_pattern,
            } => format!("git push {remote} {ref_pattern}"),
            RequestKind::Capability { kind, detail } => format!("capability {kind}: {detail}"),
        }
    }

    /// Validate every field (the same rules for the daemon and the operator API).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            RequestKind::Egress {
                host,
                port,
                paths,
                methods,
                ..
            } => {
                validate_host(host)?;
                if *port == Some(0) {
                    return Err("port 0 is not a port".into());
                }
                validate_paths(paths)?;
                validate_methods(methods)
            }
            RequestKind::GitPush {
                remote,
                ref_pattern,
            } => {
                validate_remote(remote)?;
                validate_ref_pattern(ref_pattern)
            }
            RequestKind::Capability { kind, detail } => {
                static KIND: Lazy<Regex> =
                    Lazy::new(|| Regex::new("^[a-z][a-z0-9_-]{0,31}$").unwrap());
                if !KIND.is_match(kind) {
                    return Err(format!(
                        "capability kind must be 1-32 chars of a-z 0-9 _ - (e.g. `package`, `memory`, `tool`), got {:?}",
                        truncate(kind, 40)
                    ));
                }
                validate_text("detail", detail, MAX_DETAIL)
            }
        }
    }
}

/// A request's effective status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the operator.
    Pending,
    /// Approved by the operator and (for egress/git) in effect until `expires_at`.
    Approved,
    /// Denied by the operator, or auto-denied after `auto_deny_after`.
    Denied,
    /// Approved, but the grant's TTL has passed.
    Expired,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
        })
    }
}

/// A request as the operator and the agent see it: the agent's request plus
/// its effective status (computed from a *verified* decision, the auto-deny
/// deadline and the grant's expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// `req-<UTC timestamp>-<16 hex random>`; globally unique and unguessable.
    pub id: String,
    /// What is asked for.
    #[serde(flatten)]
    pub kind: RequestKind,
    /// The agent's reason.
    pub reason: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Effective status.
    pub status: Status,
    /// Why it is denied (operator reason or the auto-deny note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When an approved grant stops (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The verified operator decision, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// The status a request file may carry. Only the daemon writes these; an
/// "approved" here is impossible by construction (approval lives only in a
/// signed decision + the policy files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Pending,
    Denied,
}

/// `queue/<id>.json` as written by the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestFile {
    pub id: String,
    #[serde(flatten)]
    pub kind: RequestKind,
    pub reason: String,
    pub status: FileStatus,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

impl RequestFile {
    /// Check everything an agent (or a forger) could have put in the file.
    pub fn validate(&self) -> Result<(), String> {
        if !is_request_id(&self.id) {
            return Err("bad request id".into());
        }
        self.kind.validate()?;
        if matches!(
            self.kind,
            RequestKind::Egress {
                allow_private: true,
                ..
            }
        ) {
            return Err("a request cannot ask for allow_private; only the operator sets it".into());
        }
        validate_text("reason", &self.reason, MAX_REASON)?;
        let created = parse_time(&self.created).ok_or("bad created time")?;
        if created > SystemTime::now() + Duration::from_secs(120) {
            return Err("created time in the future".into());
        }
        Ok(())
    }
}

/// The operator's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Approved (possibly narrowed) with a TTL.
    Approved,
    /// Denied with a reason.
    Denied,
}

/// `queue/<id>.decision.json`: written only by the operator API, signed with
/// the bottle's operator key (see the module docs of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The request id this decides.
    pub id: String,
    /// Approved or denied.
    pub verdict: Verdict,
    /// RFC 3339.
    pub decided_at: String,
    /// Deny reason (or an operator note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For approvals: when the grant ends (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// For approvals: exactly what was granted (the request, possibly narrowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<RequestKind>,
    /// Hex Ed25519 signature over [`Decision::signed_bytes`].
    pub signature: String,
}

impl Decision {
    /// The canonical bytes the signature covers (every field but the signature).
    pub fn signed_bytes(&self) -> Vec<u8> {
        // serde_json::Map is a BTreeMap here: keys are sorted, output is deterministic.
        let body = serde_json::json!({
            "id": self.id,
            "verdict": self.verdict,
            "decided_at": self.decided_at,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "grant": self.grant,
        });
        let mut out = b"bottle-supervise-decision-v1\n".to_vec();
        out.extend_from_slice(body.to_string().as_bytes());
        out
    }
}

/// What the operator may narrow when approving (`None` = keep the request's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Egress only: replace the path globs.
    pub paths: Option<Vec<String>>,
    /// Egress only: replace the methods.
    pub methods: Option<Vec<String>>,
    /// Git push only: replace the ref pattern.
    pub ref_pattern: Option<String>,
    /// Egress only: let the granted route reach private/loopback addresses
    /// (an operator decision, e.g. for an internal service).
    pub allow_private: bool,
}

impl Narrowing {
    /// Apply to a request's kind; errors when a field does not fit the kind.
    pub fn apply(&self, kind: &RequestKind) -> Result<RequestKind, String> {
        let mut out = kind.clone();
        match &mut out {
            RequestKind::Egress {
                paths,
                methods,
                allow_private,
                ..
            } => {
                *allow_private = self.allow_private;
                if self.ref_pattern.is_some() {
                    return Err("--ref-pattern applies only to git push requests".into());
                }
                if let Some(p) = &self.paths {
                    *paths = p.clone();
                }
                if let Some(m) = &self.methods {
                    *methods = m.iter().map(|m| m.to_ascii_uppercase()).collect();
                }
            }
            RequestKind::GitPush { ref_pattern, .. } => {
                if self.paths.is_some() || self.methods.is_some() || self.allow_private {
                    return Err(
                        "--paths/--methods/--allow-private apply only to egress requests".into(),
                    );
                }
                if let Some(r) = &self.ref_pattern {
                    *ref_pattern = r.clone();
                }
            }
            RequestKind::Capability { .. } => {
                if *self != Narrowing::default() {
                    return Err("capability requests cannot be narrowed".into());
                }
            }
        }
        out.validate()?;
        Ok(out)
    }
}

/// A fresh request id: `req-YYYYMMDDTHHMMSSZ-<16 hex from the OS RNG>`.
pub fn new_request_id() -> String {
    let ts = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = ts.chars().filter(|c| *c != '-' && *c != ':').collect();
    let bytes: [u8; 8] = rand::random();
    format!("req-{compact}-{}", hex::encode(bytes))
}

/// Whether `id` has the exact shape of a request id (also rules out any path trickery).
pub fn is_request_id(id: &str) -> bool {
    static ID: Lazy<Regex> =
        Lazy::new(|| Regex::new("^req-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$").unwrap());
    ID.is_match(id)
}

/// Parse an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Whether a policy entry's `expires_at` has passed at `now` (unparsable =
/// passed: fail closed; absent = never).
pub fn is_expired(expires_at: Option<&str>, now: SystemTime) -> bool {
    expires_at.is_some_and(|s| parse_time(s).is_none_or(|t| t <= now))
}

/// Format a time as RFC 3339 (seconds, UTC) — the form written into policy files.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `host`, `*.example.com` or an IPv4 literal; lower-case ASCII; no port.
pub fn validate_host(host: &str) -> Result<(), String> {
    static LABEL: Lazy<Regex> =
        Lazy::new(|| Regex::new("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$").unwrap());
    let shown = truncate(host, 80);
    if host.is_empty() || host.len() > 253 {
        return Err(format!("host must be 1-253 characters, got {shown:?}"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let (wild, rest) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| !LABEL.is_match(l)) {
        return Err(format!(
            "host must be a lower-case DNS name (labels of a-z 0-9 -), optionally `*.` + a domain; got {shown:?}"
        ));
    }
    if wild && labels.len() < 2 {
        return Err(format!(
            "wildcard {shown:?} is too broad: name at least `*.example.com`"
        ));
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "host {shown:?} is neither a DNS name nor an IPv4 address"
        ));
    }
    Ok(())
}

/// Path globs: each starts with `/`, no whitespace or control characters, a valid glob.
pub fn validate_paths(paths: &[String]) -> Result<(), String> {
    if paths.len() > MAX_PATHS {
        return Err(format!("at most {MAX_PATHS} paths per request"));
    }
    for p in paths {
        let shown = truncate(p, 80);
        if !p.starts_with('/') || p.len() > MAX_PATTERN {
            return Err(format!(
                "path must start with `/` and be at most {MAX_PATTERN} characters: {shown:?}"
            ));
        }
        if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "path must not contain whitespace or control characters: {shown:?}"
            ));
        }
        globset::Glob::new(p).map_err(|e| format!("path {shown:?} is not a valid glob: {e}"))?;
    }
    Ok(())
}

/// HTTP methods (case-insensitive on input; stored upper-case).
pub fn validate_methods(methods: &[String]) -> Result<(), String> {
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    if methods.len() > KNOWN.len() {
        return Err("too many methods".into());
    }
    for m in methods {
        if !KNOWN.contains(&m.to_ascii_uppercase().as_str()) {
            return Err(format!(
                "method {:?} is not one of {}",
                truncate(m, 20),
                KNOWN.join(", ")
            ));
        }
    }
    Ok(())
}

/// A remote name: 1-64 of `A-Za-z0-9._-`.
pub fn validate_remote(remote: &str) -> Result<(), String> {
    static REMOTE: Lazy<Regex> = Lazy::new(|| Regex::new("^[A-Za-z0-9._-]{1,64}$").unwrap());
    if !REMOTE.is_match(remote) || remote.starts_with('.') {
        return Err(format!(
            "remote must be a configured remote name (1-64 of A-Za-z0-9._-), got {:?}",
            truncate(remote, 40)
        ));
    }
    Ok(())
}

/// A ref pattern under `refs/`, valid per `git check-ref-format` rules (plus `*`).
pub fn validate_ref_pattern(pattern: &str) -> Result<(), String> {
    let shown = truncate(pattern, 80);
    let bad =
        || format!("ref_pattern must look like `refs/heads/<name>` (`*` allowed), got {shown:?}");
    if !pattern.starts_with("refs/") || pattern.len() > MAX_PATTERN || pattern == "refs/" {
        return Err(bad());
    }
    if pattern.contains("..")
        || pattern.contains("//")
        || pattern.contains("@{")
        || pattern.ends_with('/')
        || pattern.ends_with('.')
        || pattern.ends_with(".lock")
        || pattern
            .split('/')
            .any(|c| c.is_empty() || c.starts_with('.'))
        || pattern
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?[\\".contains(c))
    {
        return Err(bad());
    }
    if pattern == "refs/*" || pattern == "refs/**" {
        return Err(format!(
            "ref_pattern {shown:?} is too broad: name a branch namespace"
        ));
    }
    Ok(())
}

/// Free text: non-empty, at most `max` chars, no control characters but newline/tab.
pub fn validate_text(field: &str, text: &str, max: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if text.chars().count() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// At most `n` chars of `s` (for echoing agent input in errors).
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert!(is_request_id(&a), "{a}");
        assert!(!is_request_id("req-20261124T050000Z-../../x"));
        assert!(!is_request_id(&format!("{a}.decision")));
    }

    #[test]
    fn hosts() {
        for ok in [
            "api.example.com",
            "*.example.com",
            "localhost",
            "10.0.0.1",
            "a-b.c",
        ] {
            validate_host(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "*.com",
            "API.example.com",
            "a..b",
            "-a.com",
            "a.com:443",
            "a.com/",
            "1.2.3.999",
            "*",
            "a b",
        ] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs() {
        validate_ref_pattern("refs/heads/bot/*").unwrap();
        validate_ref_pattern("refs/tags/v1.2").unwrap();
        for bad in [
            "heads/x",
            "refs/",
            "refs/*",
            "refs/heads/../x",
            "refs/heads/x.lock",
            "refs/heads/a b",
            "refs/heads/x~1",
            "refs//x",
        ] {
            assert!(validate_ref_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_file_round_trips_with_kind_and_details() {
        let f = RequestFile {
            id: new_request_id(),
            kind: RequestKind::Capability {
                kind: "package".into(),
                detail: "ripgrep".into(),
            },
            reason: "search".into(),
            status: FileStatus::Pending,
            created: format_time(SystemTime::now()),
            status_reason: None,
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["kind"], "capability");
        assert_eq!(v["details"]["kind"], "package");
        assert_eq!(v["status"], "pending");
        let back: RequestFile = serde_json::from_value(v).unwrap();
        assert_eq!(back.kind, f.kind);
        back.validate().unwrap();
        // An "approved" status can never come out of a request file.
        let mut forged = serde_json::to_value(&f).unwrap();
        forged["status"] = "approved".into();
        assert!(serde_json::from_value::<RequestFile>(forged).is_err());
    }

    #[test]
    fn narrowing_fits_the_kind() {
        let egress = RequestKind::Egress {
            host: "a.example.com".into(),
            port: None,
            paths: vec![],
            methods: vec![],
            allow_private: false,
        };
        let n = Narrowing {
            paths: Some(vec!["/v1/**".into()]),
            methods: Some(vec!["get".into()]),
            ..Default::default()
        };
        match n.apply(&egress).unwrap() {
            RequestKind::Egress { paths, methods, .. } => {
                assert_eq!(paths, vec!["/v1/**"]);
                assert_eq!(methods, vec!["GET"]);
            }
            other => panic!("{other:?}"),
        }
        let git = Narrowing {
            ref_pattern: Some("refs/heads/x".into()),
            ..Default::default()
        };
        assert!(git.apply(&egress).is_err());
    }
}
