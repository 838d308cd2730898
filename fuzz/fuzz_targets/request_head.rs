//! Fuzz the egress proxy's request-head handling.
//!
//! The proxy's decisions live inside its async handlers (`egress/proxy.rs`),
//! which need a live connection; this target drives the same public pieces
//! in the same order on parsed request heads: httparse (hyper's HTTP/1
//! parser) → `http::Uri`/`Authority` → `net::normalize_host` →
//! for a CONNECT `Live::matching_at` (host, port, expiry); for each request
//! `egress::head::decide` — the very function the proxy's handler calls
//! (Host agreement, nested CONNECT, path safety, `Live::decide` over every
//! unexpired route) → the rebuilt upstream URI → the connector's lookup.
//!
//! Input: one request head (`CONNECT host:port HTTP/1.1` or an absolute-form
//! `GET http://host/path HTTP/1.1`, headers, blank line); after an allowed
//! CONNECT, the rest of the input is the first request inside the tunnel.
//! An origin-form head alone is treated as a request inside a tunnel to
//! `api.example.com:443`.
//!
//! Oracles besides "never panics":
//! - an allowed request's route really matches its host, port, path (glob on
//!   the percent-decoded path, no dot segments) and method;
//! - the rebuilt upstream URI names exactly the checked host and port and
//!   the checked path;
//! - the connector, normalising the upstream URI's host again, finds the
//!   very same route (so `allow_private` and the injected credential belong
//!   to the route that was checked).

#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::sync::OnceLock;

use bottle_sidecars::egress::net::normalize_host;
use bottle_sidecars::egress::head::{decide, Destination};
use bottle_sidecars::egress::policy::{Live, Route};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

const ROUTES: &str = r#"
dlp = true
[[routes]]
host = "api.example.com"
paths = ["/v1/**", "/repos/*/pulls"]
methods = ["GET", "POST"]
auth = { scheme = "bearer", secret = "token" }
[[routes]]
host = "*.example.org"
[[routes]]
host = "internal.example.com"
port = 8443
allow_private = true
[[routes]]
host = "plain.example.net"
port = 80
[[routes]]
host = "[::1]"
port = 8080
allow_private = true
[[routes]]
host = "127.0.0.1"
port = 9000
allow_private = true
methods = ["GET"]
[[routes]]
host = "old.example.com"
grant = "g-expired"
expires_at = "2000-01-01T00:00:00Z"
"#;

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| {
        let dir = scratch::dir("request_head");
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).expect("secrets dir");
        std::fs::write(secrets.join("token"), "fuzz-route-token-value\n").expect("secret");
        let routes = dir.join("routes.toml");
        std::fs::write(&routes, ROUTES).expect("routes.toml");
        Live::load(&routes, Some(&secrets)).expect("fixed routes load")
    })
}

/// A parsed head, as hyper hands it to the service.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// Parse one head; returns it and the bytes after it.
fn parse(data: &[u8]) -> Option<(Head, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri: Uri = req.path?.parse().ok()?;
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        map.append(name, value);
    }
    Some((
        Head {
            method,
            uri,
            headers: map,
        },
        &data[n..],
    ))
}

#[derive(Clone, Debug)]
struct Target {
    https: bool,
    host: String,
    port: u16,
}


/// `proxy.rs` `authority_with_port`.
fn authority_with_port(t: &Target) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    format!("{host}:{}", t.port)
}

/// `Proxy::outer` + `Proxy::connect`.
fn outer(data: &[u8]) {
    let Some((head, rest)) = parse(data) else {
        return;
    };
    let live = live();
    if head.method == Method::CONNECT {
        let Some(authority) = head.uri.authority() else {
            return; // bad-connect
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(443);
        let Ok(routes) = live.matching_at(&host, port, 443, std::time::SystemTime::now()) else {
            return; // no-route / port / expired
        };
        for route in &routes {
            check_route(route, &host, port);
        }
        // `Proxy::tunnel`: the leaf certificate is minted for the CONNECT
        // host; a client whose SNI is that host must pass the SNI check.
        let name = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        if name.parse::<Authority>().is_ok() {
            assert_eq!(
                normalize_host(&host),
                host,
                "SNI equal to the CONNECT host is refused"
            );
        }
        let target = Target {
            https: true,
            host,
            port,
        };
        if let Some((inner, _)) = parse(rest) {
            handle(&target, &inner);
        }
        return;
    }
    match (head.uri.scheme_str(), head.uri.host()) {
        (Some("http"), Some(host)) => {
            let target = Target {
                https: false,
                host: normalize_host(host),
                port: head.uri.port_u16().unwrap_or(80),
            };
            handle(&target, &head);
        }
        (None, None) => {
            // Origin-form: as inside a tunnel to api.example.com.
            let target = Target {
                https: true,
                host: "api.example.com".into(),
                port: 443,
            };
            handle(&target, &head);
        }
        _ => {} // not-proxy-request
    }
}

fn check_route(route: &Route, host: &str, port: u16) {
    assert!(
        route.host.matches(host),
        "route {} allowed host {host}",
        route.host
    );
    if let Some(p) = route.port {
        assert_eq!(p, port, "route {} allowed port {port}", route.host);
    }
    assert!(
        route
            .expires_at
            .is_none_or(|t| t > std::time::SystemTime::now()),
        "expired route {} allowed",
        route.rule()
    );
}

/// `Proxy::handle` up to the upstream request (the decision itself is
/// `egress::head::decide`, the function the handler calls), and the
/// connector's lookup.
fn handle(target: &Target, req: &Head) {
    let live = live();
    let host = target.host.as_str();
    let port = target.port;
    let raw_path = req.uri.path().to_owned();
    let dest = Destination {
        tls: target.https,
        host: target.host.clone(),
        port,
    };
    let now = std::time::SystemTime::now();
    let Ok(checked) = decide(live, &dest, &req.method, &req.uri, &req.headers, now) else {
        return; // refused: host-mismatch, nested-connect, path-unsafe, policy
    };
    let route = checked.allowed.route;
    check_route(route, host, port);
    // every name the request claims is the destination
    if let Some(a) = req.uri.authority() {
        assert_eq!(normalize_host(a.host()), host, "URI names another host");
    }
    for h in req.headers.get_all(http::header::HOST) {
        let a: Authority = h.to_str().unwrap().parse().expect("an allowed Host parses");
        assert_eq!(normalize_host(a.host()), host, "Host names another host");
    }
    assert_ne!(req.method, Method::CONNECT, "nested CONNECT allowed");
    let decoded = checked.decoded_path;
    assert!(
        decoded.starts_with('/')
            && !decoded.contains('\\')
            && !decoded.contains('\0')
            && !decoded.split('/').any(|seg| seg == "." || seg == ".."),
        "unsafe path {decoded:?} allowed"
    );
    if let Some(globs) = &route.paths {
        assert!(globs.is_match(&decoded), "path {decoded:?} outside route globs");
    }
    let method = req.method.as_str().to_owned();
    if let Some(methods) = &route.methods {
        assert!(methods.contains(&method), "method {method} outside the route");
        assert!(
            method.bytes().all(|b| b.is_ascii_uppercase()),
            "method {method:?} allowed by a method list"
        );
    }
    // a credential goes out only inside TLS, unless the route says plaintext
    if checked.allowed.auth.is_some() && !target.https {
        let routes = live
            .matching_at(host, port, 80, now)
            .expect("an allowed request has routes");
        assert!(
            routes.iter().any(|r| r.auth.is_some() && r.plaintext),
            "a credential would leave in the clear without `plaintext = true`"
        );
    }

    // The request is allowed: it goes upstream to the rebuilt URI.
    let pq = req
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let scheme = if target.https { "https" } else { "http" };
    let Ok(up) = format!("{scheme}://{}{pq}", authority_with_port(target)).parse::<Uri>() else {
        return; // bad-uri
    };
    let up_host = up.host().unwrap_or_default();
    assert_eq!(
        normalize_host(up_host),
        host,
        "upstream URI {up} does not name the checked host"
    );
    assert_eq!(
        up.port_u16(),
        Some(port),
        "upstream URI {up} names another port"
    );
    assert_eq!(
        up.path(),
        raw_path,
        "upstream URI {up} carries another path"
    );
    // `GuardedConnector::call`.
    let c_host = normalize_host(up.host().unwrap_or_default());
    let c_default = if up.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let c_port = up.port_u16().unwrap_or(c_default);
    match live.matching_at(&c_host, c_port, c_default, now) {
        Ok(rs) => assert!(
            rs.iter().any(|r| std::ptr::eq(*r, route)),
            "the connector's routes for {up} do not include the checked {}",
            route.rule()
        ),
        Err(why) => panic!("connector finds no route ({why:?}) for an allowed request to {up}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 8192 {
        return;
    }
    outer(data);
});
