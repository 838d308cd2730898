//! The decision on one request head, pure: which host it names, whether it
//! tunnels again, whether its path is safe, and what the live policy says
//! ([`Live::decide`]). The proxy's handler calls it and turns a refusal
//! into a response and an audit line; the `request_head` fuzz target calls
//! the very same function (ARCHITECTURE.md "The sidecars").

use std::time::SystemTime;

use hyper::http::header;
use hyper::http::uri::Authority;
use hyper::http::{HeaderMap, Method, Uri};

use super::net::normalize_host;
use super::policy::{Allowed, Denial, Live, RequestFacts};

/// Where the request goes: the CONNECT target inside a tunnel, or the
/// absolute URI's host for plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Inside TLS (an intercepted CONNECT).
    pub tls: bool,
    /// Normalised host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Destination {
    /// 443 inside TLS, else 80.
    pub fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }
}

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadDenial {
    /// The URI or a Host header names another host or port than the
    /// destination (the name it claimed, raw).
    HostMismatch(String),
    /// A CONNECT inside an intercepted connection.
    NestedConnect,
    /// Dot segments (also with path parameters: `..;x`), a backslash or a
    /// NUL in the path, or a relative path.
    PathUnsafe,
    /// An encoded slash or backslash (`%2f`, `%5c`), or an encoded dot,
    /// slash or backslash that is still there after one percent-decoding
    /// (double encoding): an upstream may decode it into a path separator
    /// or dot segment the route's globs never saw.
    PathEncoded,
    /// The policy refuses it.
    Policy(Denial),
}

impl HeadDenial {
    /// The audit rule.
    pub fn rule(&self) -> String {
        match self {
            HeadDenial::HostMismatch(_) => "host-mismatch".into(),
            HeadDenial::NestedConnect => "nested-connect".into(),
            HeadDenial::PathUnsafe => "path-unsafe".into(),
            HeadDenial::PathEncoded => "path-encoded".into(),
            HeadDenial::Policy(d) => d.rule(),
        }
    }
}

/// The request as the policy checked it.
#[derive(Debug)]
pub struct Checked<'a> {
    /// The route that allows it and the credential to inject.
    pub allowed: Allowed<'a>,
    /// The percent-decoded path the route's globs matched.
    pub decoded_path: String,
}

/// Decide on one request head going to `dest`, at `now`.
pub fn decide<'a>(
    live: &'a Live,
    dest: &Destination,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Checked<'a>, HeadDenial> {
    // The request must name the host it was CONNECTed to (or, for plain
    // http, the same host in the URI and the Host header). Compared without
    // allocating; a mismatch names the claimed host normalised.
    let names_dest = |host: &str, port: Option<u16>| {
        let h = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.');
        h.eq_ignore_ascii_case(&dest.host) && port.unwrap_or(dest.default_port()) == dest.port
    };
    if let Some(a) = uri.authority() {
        if !names_dest(a.host(), a.port_u16()) {
            return Err(HeadDenial::HostMismatch(normalize_host(a.host())));
        }
    }
    if let Some(h) = headers.get(header::HOST) {
        match h.to_str().ok().and_then(|s| s.parse::<Authority>().ok()) {
            Some(a) if names_dest(a.host(), a.port_u16()) => {}
            Some(a) => return Err(HeadDenial::HostMismatch(normalize_host(a.host()))),
            None => return Err(HeadDenial::HostMismatch(String::new())),
        }
    }
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(HeadDenial::HostMismatch(String::new()));
    }
    // No tunnels inside tunnels (HTTP/2 CONNECT or CONNECT inside TLS).
    if method == Method::CONNECT {
        return Err(HeadDenial::NestedConnect);
    }
    // Path: matched on the percent-decoded path; dot segments refused so
    // `/v1/../admin` cannot escape a `/v1/**` route (a host no route
    // names is refused as such first: the record says no-route).
    let decoded = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let unsafe_path = !decoded.starts_with('/')
        || decoded.contains('\\')
        || decoded.contains('\0')
        || decoded.split('/').any(is_dot_segment);
    let encoded_path =
        has_encoded_separator(uri.path(), false) || has_encoded_separator(&decoded, true);
    let facts = RequestFacts {
        host: &dest.host,
        port: dest.port,
        tls: dest.tls,
        method: method.as_str(),
        path: &decoded,
    };
    let decision = live.decide(&facts, now);
    if unsafe_path && !matches!(decision, Err(Denial::NoRoute(_))) {
        return Err(HeadDenial::PathUnsafe);
    }
    if encoded_path && !matches!(decision, Err(Denial::NoRoute(_))) {
        return Err(HeadDenial::PathEncoded);
    }
    match decision {
        Ok(allowed) => Ok(Checked {
            allowed,
            decoded_path: decoded,
        }),
        Err(d) => Err(HeadDenial::Policy(d)),
    }
}

/// `.` or `..`, also with path parameters (`..;x`, `.;x`): servlet
/// containers strip `;…` from a segment before resolving dot segments.
fn is_dot_segment(seg: &str) -> bool {
    let name = seg.split(';').next().unwrap_or(seg);
    name == "." || name == ".."
}

/// Does `path` hold `%2f` or `%5c` (any case), or also `%2e` when `dot`?
/// On the raw path an encoded `.` is harmless (decoding once is what the
/// globs see, and a dot segment is refused there), so only slash and
/// backslash count; on the once-decoded path any of the three means the
/// path was encoded twice.
fn has_encoded_separator(path: &str, dot: bool) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && match (w[1], w[2].to_ascii_lowercase()) {
                (b'2', b'f') | (b'5', b'c') => true,
                (b'2', b'e') => dot,
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = r#"
[[routes]]
host = "api.example.com"
paths = ["/allowed/**"]
"#;

    fn live() -> (tempfile::TempDir, Live) {
        let dir = tempfile::tempdir().expect("tempdir");
        let routes = dir.path().join("routes.toml");
        std::fs::write(&routes, ROUTES).expect("routes.toml");
        let live = Live::load(&routes, None).expect("routes load");
        (dir, live)
    }

    fn check(live: &Live, path: &str) -> Result<String, String> {
        let dest = Destination {
            tls: true,
            host: "api.example.com".into(),
            port: 443,
        };
        let uri: Uri = path.parse().expect("uri");
        decide(
            live,
            &dest,
            &Method::GET,
            &uri,
            &HeaderMap::new(),
            SystemTime::now(),
        )
        .map(|c| c.decoded_path)
        .map_err(|d| d.rule())
    }

    #[test]
    fn dot_segments_with_path_parameters_are_unsafe() {
        let (_d, live) = live();
        for p in [
            "/allowed/..;/forbidden",
            "/allowed/..;x=1/forbidden",
            "/allowed/.;/x",
            "/allowed/%2e%2e;/forbidden",
            "/allowed/../forbidden",
            "/allowed/a%5cb",
        ] {
            assert_eq!(check(&live, p), Err("path-unsafe".into()), "{p}");
        }
    }

    #[test]
    fn encoded_separators_and_double_encoding_are_refused() {
        let (_d, live) = live();
        for p in [
            "/allowed/%252e%252e/forbidden",
            "/allowed/%252E%252E/forbidden",
            "/allowed/x%252fy",
            "/allowed/x%255Cy",
            "/allowed%2fx",
            "/allowed/a%2Fb",
        ] {
            assert_eq!(check(&live, p), Err("path-encoded".into()), "{p}");
        }
    }

    #[test]
    fn ordinary_paths_and_single_encoded_dots_pass() {
        let (_d, live) = live();
        for (p, want) in [
            ("/allowed/x", "/allowed/x"),
            ("/allowed/file%2ejson", "/allowed/file.json"),
            ("/allowed/a;b=1/c", "/allowed/a;b=1/c"),
            ("/allowed/..x/.y", "/allowed/..x/.y"),
            ("/allowed/%25", "/allowed/%"),
        ] {
            assert_eq!(check(&live, p), Ok(want.to_owned()), "{p}");
        }
        assert_eq!(check(&live, "/forbidden"), Err("path".into()));
    }
}
