//! The request path, one module per concern (ARCHITECTURE.md "The
//! sidecars"):
//! - [`accept`]: the proxy port — connection slots, CONNECT (decided before
//!   any TLS), the intercepted tunnel (leaf certificate, SNI check, ALPN);
//! - [`handler`]: one request — the pure head decision
//!   ([`super::head::decide`]), DLP on the head and the body prefix;
//! - [`upstream`]: the upstream request (credential injection, hop-by-hop
//!   headers) and the response back (masking, the audit line at its end);
//! - [`websocket`]: upgrades relayed message by message.
//!
//! This module holds what they share: the [`Proxy`] state, the audit
//! [`Decision`] and the refusal responses.

mod accept;
mod handler;
mod upstream;
mod websocket;

pub(crate) use accept::{over_capacity, serve_conn};

use std::sync::Arc;
use std::time::Instant;

use hyper::header::{self, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;

use super::audit_queue::{AuditQueue, Line};
use super::body::{full, ProxyBody};
use super::net::{find_refused, GuardedConnector, Refused};
use super::Shared;
use crate::dlp::Detector;

/// Everything a connection handler needs.
pub(crate) struct Proxy {
    pub shared: Arc<Shared>,
    pub audit: AuditQueue,
    pub ca: super::ca::LeafSigner,
    pub client: Client<HttpsConnector<GuardedConnector>, ProxyBody>,
    pub ws_connector: HttpsConnector<GuardedConnector>,
    /// The bottle's access credential (None: no check, tests of egress alone).
    pub access: Option<crate::access::AccessKey>,
    /// Proxy-wide budget of buffered request-body bytes (one permit a byte).
    pub budget: Arc<tokio::sync::Semaphore>,
}

/// Where a request is going.
#[derive(Clone, Debug)]
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// Scheme and `host:port` of upstream URIs, parsed once per tunnel
    /// (`None`: the host makes no valid authority).
    origin: Option<(Scheme, Authority)>,
}

impl Target {
    fn new(https: bool, host: String, port: u16) -> Target {
        let mut t = Target {
            https,
            host,
            port,
            origin: None,
        };
        let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
        t.origin = authority_with_port(&t)
            .parse::<Authority>()
            .ok()
            .map(|a| (scheme, a));
        t
    }

    /// The absolute upstream URI for `path_and_query` (`/` when absent).
    fn upstream_uri(&self, path_and_query: Option<PathAndQuery>) -> Option<Uri> {
        let (scheme, authority) = self.origin.clone()?;
        let mut parts = hyper::http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query =
            Some(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")));
        Uri::from_parts(parts).ok()
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// One audit decision (never a value, body, query or header value).
struct Decision<'a> {
    decision: &'static str,
    rule: &'a str,
    method: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    status: u16,
    bytes: u64,
    t0: Instant,
}

impl Proxy {
    /// Write one audit line. Every line's host goes through `Self::safe`
    /// here, whichever path (CONNECT, plain HTTP, inside a tunnel) refused
    /// or allowed it: the agent chooses the host it names.
    fn record(&self, d: Decision<'_>) {
        let host = if d.host.is_empty() || d.host.starts_with("[redacted:") {
            d.host.to_owned()
        } else {
            Self::safe(&self.shared.live().detector, d.host)
        };
        self.audit.decision(Line {
            decision: d.decision,
            rule: d.rule.to_owned(),
            method: d.method.to_owned(),
            host,
            port: d.port,
            path: d.path.to_owned(),
            status: d.status,
            bytes: d.bytes,
            t0: d.t0,
        });
    }

    /// Text that goes into the audit log: a value that looks like a secret
    /// (held or pattern) is replaced by the rule name.
    fn safe(detector: &Detector, s: &str) -> String {
        match detector.scan(s.as_bytes()) {
            Some(f) => format!("[redacted:{}]", f.rule),
            None => s.to_owned(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deny(
        &self,
        status: StatusCode,
        rule: &str,
        method: &str,
        host: &str,
        port: u16,
        path: &str,
        t0: Instant,
        message: String,
    ) -> Response<ProxyBody> {
        self.record(Decision {
            decision: "deny",
            rule,
            method,
            host,
            port,
            path,
            status: status.as_u16(),
            bytes: 0,
            t0,
        });
        Self::refusal(status, message)
    }

    /// The refusal response the agent gets (the audit line is written by
    /// the caller).
    fn refusal(status: StatusCode, message: String) -> Response<ProxyBody> {
        let mut resp = Response::new(full(message));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp.headers_mut()
            .insert("x-bottle-egress", HeaderValue::from_static("denied"));
        resp
    }

    fn refused(
        &self,
        refused: Refused,
        method: &str,
        host: &str,
        port: u16,
        path: &str,
        t0: Instant,
    ) -> Response<ProxyBody> {
        let (status, rule) = match &refused {
            Refused::Private { .. } => (StatusCode::FORBIDDEN, "ssrf-private"),
            Refused::NoRoute { .. } => (StatusCode::FORBIDDEN, "no-route"),
            Refused::Resolve { .. } => (StatusCode::BAD_GATEWAY, "resolve-failed"),
        };
        let msg = match &refused {
            Refused::Private { .. } => format!(
                "bottle egress: {host} resolves only to loopback/private/link-local addresses; refused\n"
            ),
            Refused::NoRoute { .. } => format!("bottle egress: no route allows {host}:{port}\n"),
            Refused::Resolve { .. } => format!("bottle egress: could not resolve {host}\n"),
        };
        self.deny(status, rule, method, host, port, path, t0, msg)
    }

    fn upstream_error(
        &self,
        e: &(dyn std::error::Error + 'static),
        method: &str,
        target: &Target,
        path: &str,
        t0: Instant,
    ) -> Response<ProxyBody> {
        if let Some(refused) = find_refused(e) {
            let refused = match refused {
                Refused::Private { host } => Refused::Private { host: host.clone() },
                Refused::NoRoute { host, port } => Refused::NoRoute {
                    host: host.clone(),
                    port: *port,
                },
                Refused::Resolve { host } => Refused::Resolve { host: host.clone() },
            };
            return self.refused(refused, method, &target.host, target.port, path, t0);
        }
        tracing::warn!(error = %error_chain(e), host = %target.host, "upstream request failed");
        self.record(Decision {
            decision: "error",
            rule: "upstream",
            method,
            host: &target.host,
            port: target.port,
            path,
            status: 502,
            bytes: 0,
            t0,
        });
        let mut resp = Response::new(full(format!(
            "bottle egress: upstream {}:{} failed\n",
            target.host, target.port
        )));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        resp
    }
}

fn authority_with_port(t: &Target) -> String {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    format!("{host}:{}", t.port)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
