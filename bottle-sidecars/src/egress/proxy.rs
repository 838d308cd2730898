//! The request path: CONNECT (decided before any TLS), interception of
//! allowed hosts, per-request route/path/method/DLP checks, credential
//! injection, forwarding, response masking, WebSocket relay.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::BodyExt as _;
use hudsucker::tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hudsucker::tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use hudsucker::tokio_tungstenite::tungstenite::Message;
use hudsucker::tokio_tungstenite::WebSocketStream;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tower_service::Service as _;

use super::body::{
    content_codings, decode_bounded, full, read_prefix, take_budget, DecodeError, MaskBody,
    PrefixError, PrefixedBody, ProxyBody, MAX_CODINGS,
};
use super::net::{checked_addrs, find_refused, normalize_host, GuardedConnector, Refused};
use super::policy::{Auth, Denial};
use super::Shared;
use crate::audit::AuditLog;
use crate::dlp::Detector;

/// Everything a connection handler needs.
pub(crate) struct Proxy {
    pub shared: Arc<Shared>,
    pub audit: AuditLog,
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
}

impl Target {
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

/// Where a body being scanned is going (for the refusal's audit line).
struct BodyFacts<'a> {
    method: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    t0: Instant,
}

/// Header lines as scanned text (`name: value\r\n`).
fn header_text(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One audit decision (never a value, body, query or header value).
struct Decision<'a> {
    decision: &'a str,
    rule: &'a str,
    method: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    status: u16,
    bytes: u64,
    t0: Instant,
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

impl Proxy {
    fn record(&self, d: Decision<'_>) {
        self.audit.record(
            "egress",
            json!({
                "decision": d.decision,
                "rule": d.rule,
                "method": d.method,
                "host": d.host,
                "port": d.port,
                "path": d.path,
                "status": d.status,
                "bytes": d.bytes,
                "ms": d.t0.elapsed().as_millis() as u64,
            }),
        );
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

    /// Only the bottle's own agent may use the proxy: it holds the access
    /// credential (`crate::access`) as the password of its proxy URL, so
    /// every request and CONNECT carries `Proxy-Authorization`. Anyone else
    /// gets 407 and an audit line (the target is recorded, redacted if
    /// secret-shaped; the header never is).
    fn access_denied(&self, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
        let key = self.access.as_ref()?;
        if req
            .headers()
            .get_all(header::PROXY_AUTHORIZATION)
            .iter()
            .any(|v| key.matches_basic(v.as_bytes()))
        {
            return None;
        }
        let live = self.shared.live();
        let host = req
            .uri()
            .host()
            .map(|h| Self::safe(&live.detector, h))
            .unwrap_or_default();
        let mut resp = self.deny(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "access-credential",
            req.method().as_str(),
            &host,
            req.uri().port_u16().unwrap_or(0),
            "",
            Instant::now(),
            "bottle egress: access denied: this proxy serves only its own bottle's agent (use the proxy URL from the agent's environment)\n".into(),
        );
        resp.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"bottle\""),
        );
        Some(resp)
    }

    /// Entry point for requests on the proxy port (HTTP/1.1).
    pub async fn outer(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Some(refused) = self.access_denied(&req) {
            return Ok(refused);
        }
        if req.method() == Method::CONNECT {
            return Ok(self.connect(req).await);
        }
        let uri = req.uri().clone();
        match (uri.scheme_str(), uri.host()) {
            (Some("http"), Some(host)) => {
                let target = Target {
                    https: false,
                    host: normalize_host(host),
                    port: uri.port_u16().unwrap_or(80),
                };
                Ok(self.handle(target, req).await)
            }
            _ => {
                let live = self.shared.live();
                let host = uri
                    .host()
                    .map(|h| Self::safe(&live.detector, h))
                    .unwrap_or_default();
                Ok(self.deny(
                    StatusCode::BAD_REQUEST,
                    "not-proxy-request",
                    req.method().as_str(),
                    &host,
                    uri.port_u16().unwrap_or(0),
                    "",
                    Instant::now(),
                    "bottle egress: this is an HTTP proxy; send absolute-form http:// requests or CONNECT host:port\n"
                        .into(),
                ))
            }
        }
    }

    /// CONNECT: decided before any TLS byte is read.
    async fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let t0 = Instant::now();
        let live = self.shared.live();
        let Some(authority) = req.uri().authority().cloned() else {
            return self.deny(
                StatusCode::BAD_REQUEST,
                "bad-connect",
                "CONNECT",
                "",
                0,
                "",
                t0,
                "bottle egress: CONNECT needs host:port\n".into(),
            );
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(443);
        let audit_host = Self::safe(&live.detector, &host);
        let found = live
            .matching_at(&host, port, 443, SystemTime::now())
            .map(|rs| (rs[0].rule(), rs.iter().any(|r| r.allow_private)));
        let (rule, allow_private) = match found {
            Ok(x) => x,
            Err(why) => {
                return self.deny(
                    StatusCode::FORBIDDEN,
                    &why.rule(),
                    "CONNECT",
                    &audit_host,
                    port,
                    "",
                    t0,
                    format!(
                        "bottle egress: CONNECT to {audit_host}:{port} refused: no route allows this host and port.\n\
                         Ask the operator for access with the supervise tool `request_egress` (host, paths, methods, reason).\n"
                    ),
                );
            }
        };
        drop(live);
        if let Err(refused) = checked_addrs(&self.shared, &host, port, allow_private).await {
            return self.refused(refused, "CONNECT", &audit_host, port, "", t0);
        }
        self.record(Decision {
            decision: "allow",
            rule: &rule,
            method: "CONNECT",
            host: &audit_host,
            port,
            path: "",
            status: 200,
            bytes: 0,
            t0,
        });
        let this = self.clone();
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => this.tunnel(upgraded, host, port).await,
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        });
        Response::new(full(Bytes::new()))
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

    /// Inside an allowed CONNECT: TLS with a leaf for exactly the CONNECT
    /// host (SNI must agree), then HTTP/1.1 or HTTP/2 per ALPN.
    async fn tunnel(self: Arc<Self>, upgraded: hyper::upgrade::Upgraded, host: String, port: u16) {
        let t0 = Instant::now();
        let io = TokioIo::new(upgraded);
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match tokio::time::timeout(Duration::from_secs(30), acceptor).await {
            Ok(Ok(start)) => start,
            _ => {
                self.record(Decision {
                    decision: "deny",
                    rule: "tunnel-not-tls",
                    method: "CONNECT",
                    host: &host,
                    port,
                    path: "",
                    status: 0,
                    bytes: 0,
                    t0,
                });
                return;
            }
        };
        if let Some(sni) = start.client_hello().server_name() {
            if normalize_host(sni) != host {
                let live = self.shared.live();
                let sni = Self::safe(&live.detector, sni);
                tracing::warn!(%host, %sni, "TLS SNI does not match the CONNECT host");
                self.record(Decision {
                    decision: "deny",
                    rule: "sni-mismatch",
                    method: "CONNECT",
                    host: &host,
                    port,
                    path: "",
                    status: 0,
                    bytes: 0,
                    t0,
                });
                return;
            }
        }
        let config = match self.ca.server_config(&host) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, %host, "could not sign a leaf certificate");
                return;
            }
        };
        let tls = match start.into_stream(config).await {
            Ok(tls) => tls,
            Err(e) => {
                tracing::debug!(error = %e, %host, "client TLS handshake failed");
                return;
            }
        };
        let target = Target {
            https: true,
            host,
            port,
        };
        let this = self.clone();
        let svc = service_fn(move |req| {
            let this = this.clone();
            let target = target.clone();
            async move { Ok::<_, Infallible>(this.handle(target, req).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60));
        if let Err(e) = builder
            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
            .await
        {
            tracing::debug!(error = %e, "intercepted connection ended with an error");
        }
    }

    /// One request to `target` (inside a tunnel, or plain http).
    async fn handle(
        self: Arc<Self>,
        target: Target,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let t0 = Instant::now();
        let live = self.shared.live();
        let method = req.method().as_str().to_owned();
        let raw_path = req.uri().path().to_owned();
        let path = Self::safe(&live.detector, &raw_path);
        let host = target.host.as_str();
        let port = target.port;

        let dest = super::head::Destination {
            tls: target.https,
            host: host.to_owned(),
            port,
        };
        let decision = super::head::decide(
            &live,
            &dest,
            req.method(),
            req.uri(),
            req.headers(),
            SystemTime::now(),
        );
        let decision = match decision {
            Ok(c) => Ok(c.allowed),
            Err(super::head::HeadDenial::HostMismatch(h)) => {
                let shown = Self::safe(&live.detector, &h);
                return self.deny(
                    StatusCode::FORBIDDEN,
                    "host-mismatch",
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    format!("bottle egress: request names host `{shown}` but goes to {host}:{port}; refused\n"),
                );
            }
            Err(super::head::HeadDenial::NestedConnect) => {
                return self.deny(
                    StatusCode::FORBIDDEN,
                    "nested-connect",
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    "bottle egress: CONNECT inside an intercepted connection is refused\n".into(),
                );
            }
            Err(super::head::HeadDenial::PathUnsafe) => {
                return self.deny(
                    StatusCode::FORBIDDEN,
                    "path-unsafe",
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    "bottle egress: path with dot segments or backslashes refused\n".into(),
                );
            }
            Err(super::head::HeadDenial::Policy(d)) => Err(d),
        };
        let (route, auth) = match decision {
            Ok(a) => (a.route, a.auth.cloned()),
            Err(denial) => {
                let msg = match &denial {
                    Denial::NoRoute(_) => format!(
                        "bottle egress: no route allows {host}:{port}. Ask with the supervise tool `request_egress`.\n"
                    ),
                    Denial::Path => format!(
                        "bottle egress: path {path} is not allowed on {host}. Ask with `request_egress`.\n"
                    ),
                    Denial::Method => format!(
                        "bottle egress: method {method} is not allowed on {host}. Ask with `request_egress`.\n"
                    ),
                    Denial::Expired(g) => format!(
                        "bottle egress: grant {g} for {host} has expired. Ask again with `request_egress`.\n"
                    ),
                    Denial::AuthNeedsTls => format!(
                        "bottle egress: {host}:{port} has a credential the proxy injects, and it is only sent inside TLS.\n\
                         Use https://{host}/... (the proxy intercepts it with the bottle's CA). If this upstream has no TLS,\n\
                         the operator can set `plaintext = true` (with an explicit `port`) on its route.\n"
                    ),
                };
                return self.deny(
                    StatusCode::FORBIDDEN,
                    &denial.rule(),
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    msg,
                );
            }
        };
        let rule = route.rule();

        // DLP on the request line and headers.
        if live.dlp {
            let mut head = Vec::with_capacity(512);
            head.extend_from_slice(method.as_bytes());
            head.push(b' ');
            head.extend_from_slice(
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
                    .as_bytes(),
            );
            head.extend_from_slice(b"\r\n");
            // Headers the proxy drops never leave, so they are not scanned
            // (an agent-side placeholder key must not trip a pattern).
            let dropped = |name: &HeaderName| {
                *name == header::PROXY_AUTHORIZATION
                    || auth.as_ref().is_some_and(|a| {
                        *name == header::AUTHORIZATION
                            || *name == header::COOKIE
                            || *name == a.header_name()
                    })
            };
            for (name, value) in req.headers() {
                if dropped(name) {
                    continue;
                }
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            if let Some(f) = live.detector.scan(&head) {
                let rule = format!("dlp:{}", f.rule);
                // The secret may sit in the path: keep it out of the audit.
                let shown = if live.detector.scan(raw_path.as_bytes()).is_some() {
                    "[redacted]".to_owned()
                } else {
                    path.clone()
                };
                return self.deny(
                    StatusCode::FORBIDDEN,
                    &rule,
                    &method,
                    host,
                    port,
                    &shown,
                    t0,
                    format!("bottle egress: request blocked: it contains a secret ({rule})\n"),
                );
            }
        }

        let websocket = req.version() == Version::HTTP_11
            && req.method() == Method::GET
            && header_has_token(req.headers(), header::CONNECTION, "upgrade")
            && header_has_token(req.headers(), header::UPGRADE, "websocket");
        let detector = live.detector.clone();
        let dlp = live.dlp;
        let max_scan = live.max_body_scan;
        drop(live);

        if websocket {
            return self
                .websocket(target, req, auth, rule, method, path, dlp, detector, t0)
                .await;
        }

        // DLP on the first `max_body_scan` bytes of the body (decoded when
        // it has a Content-Encoding) and on trailers that end within them.
        let (mut parts, body) = req.into_parts();
        let body: ProxyBody = if dlp {
            let facts = BodyFacts {
                method: &method,
                host,
                port,
                path: &path,
                t0,
            };
            match self
                .scan_body(&parts.headers, body, &detector, max_scan, &facts)
                .await
            {
                Ok(b) => b,
                Err(resp) => return resp,
            }
        } else {
            body.map_err(|e| Box::new(e) as super::net::BoxError)
                .boxed()
        };

        // Upstream request: absolute URI to the target, hop-by-hop headers
        // gone, agent credentials replaced by the route's.
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let scheme = if target.https { "https" } else { "http" };
        let uri: Uri = match format!("{scheme}://{}{pq}", authority_with_port(&target)).parse() {
            Ok(u) => u,
            Err(_) => {
                return self.deny(
                    StatusCode::BAD_REQUEST,
                    "bad-uri",
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    "bottle egress: invalid request URI\n".into(),
                )
            }
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        prepare_headers(
            &mut parts.headers,
            auth.as_ref(),
            detector.held_count() > 0,
            false,
        );
        parts.headers.remove(header::HOST);
        let upstream_req = Request::from_parts(parts, body);

        match self.client.request(upstream_req).await {
            Ok(resp) => self.respond(resp, detector, rule, method, target, path, t0),
            Err(e) => self.upstream_error(&e, &method, &target, &path, t0),
        }
    }

    /// Read, decode and scan the request body prefix; `Err` is the
    /// response that refuses the request (already audited).
    async fn scan_body(
        &self,
        headers: &HeaderMap,
        mut body: Incoming,
        detector: &Detector,
        max_scan: usize,
        f: &BodyFacts<'_>,
    ) -> Result<ProxyBody, Response<ProxyBody>> {
        let deny = |status: StatusCode, rule: &str, msg: String| {
            self.deny(status, rule, f.method, f.host, f.port, f.path, f.t0, msg)
        };
        let codings = content_codings(headers).map_err(|name| {
            let shown = Self::safe(detector, &name.chars().take(40).collect::<String>());
            deny(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "body-encoding",
                format!(
                    "bottle egress: request body has Content-Encoding `{shown}`, which the proxy cannot decode to inspect.\n\
                     Send it uncompressed, or as gzip, deflate, br or zstd (at most {MAX_CODINGS} stacked).\n"
                ),
            )
        })?;
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(full(Bytes::new()));
        }
        let busy = |what: &str| {
            deny(
                StatusCode::SERVICE_UNAVAILABLE,
                "buffer-limit",
                format!(
                    "bottle egress: too many request bodies are being inspected right now ({what}); retry shortly\n"
                ),
            )
        };
        let (prefix, trailers, ended, mut permit) =
            match read_prefix(&mut body, max_scan, &self.budget).await {
                Ok(x) => x,
                Err(PrefixError::Busy) => return Err(busy("body")),
                Err(PrefixError::Body(e)) => {
                    tracing::debug!(error = %e, "reading request body failed");
                    return Err(deny(
                        StatusCode::BAD_REQUEST,
                        "body-error",
                        "bottle egress: could not read the request body\n".into(),
                    ));
                }
            };
        let mut hit = None;
        if !codings.is_empty() {
            if !ended {
                return Err(deny(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    format!(
                        "bottle egress: a compressed request body must fit in max_body_scan ({max_scan} bytes) to be inspected; \
                         send it uncompressed or in smaller parts\n"
                    ),
                ));
            }
            // The decoded copy is buffered too: it takes up to `max_scan`.
            if take_budget(&self.budget, &mut permit, max_scan).is_err() {
                return Err(busy("decoding"));
            }
            match decode_bounded(&prefix, &codings, max_scan) {
                Ok(plain) => hit = detector.scan(&plain),
                Err(DecodeError::TooLarge) => {
                    return Err(deny(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "decompression-limit",
                        format!(
                            "bottle egress: the request body decompresses to more than max_body_scan ({max_scan} bytes); refused \
                             (send it uncompressed or in smaller parts)\n"
                        ),
                    ));
                }
                Err(DecodeError::Corrupt(c)) => {
                    return Err(deny(
                        StatusCode::BAD_REQUEST,
                        "body-encoding",
                        format!(
                            "bottle egress: the request body is not valid {c:?} data as its Content-Encoding says; refused\n"
                        ),
                    ));
                }
            }
        }
        let hit = hit.or_else(|| detector.scan(&prefix)).or_else(|| {
            trailers
                .as_ref()
                .and_then(|t| detector.scan(&header_text(t)))
        });
        if let Some(found) = hit {
            let rule = format!("dlp:{}", found.rule);
            return Err(deny(
                StatusCode::FORBIDDEN,
                &rule,
                format!("bottle egress: request blocked: its body contains a secret ({rule})\n"),
            ));
        }
        let rest = if ended { None } else { Some(body) };
        Ok(PrefixedBody::new(prefix, trailers, rest, permit).boxed())
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

    /// Turn the upstream response into the agent's: hop-by-hop headers gone,
    /// body masked, audit line written when the body ends.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        resp: Response<Incoming>,
        detector: Arc<Detector>,
        rule: String,
        method: String,
        target: Target,
        path: String,
        t0: Instant,
    ) -> Response<ProxyBody> {
        let mask = (detector.held_count() > 0).then_some(detector);
        let (mut parts, body) = resp.into_parts();
        // Masking needs the plain bytes: a compressed response (sent although
        // the proxy asked for identity) is decoded; an encoding that cannot
        // be decoded is refused rather than passed through unmasked.
        let encoded = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let body: ProxyBody = if mask.is_some() && encoded {
            let r = Response::from_parts(parts, hudsucker::Body::from(body));
            match hudsucker::decode_response(r) {
                Ok(r) => {
                    let (p, b) = r.into_parts();
                    parts = p;
                    b.map_err(|e| Box::new(e) as super::net::BoxError).boxed()
                }
                Err(_) => {
                    return self.deny(
                        StatusCode::BAD_GATEWAY,
                        "response-encoding",
                        &method,
                        &target.host,
                        target.port,
                        &path,
                        t0,
                        "bottle egress: upstream response uses an encoding the proxy cannot inspect\n"
                            .into(),
                    );
                }
            }
        } else {
            body.map_err(|e| Box::new(e) as super::net::BoxError)
                .boxed()
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        let status = parts.status.as_u16();
        let audit = self.audit.clone();
        let on_done = Box::new(move |bytes: u64| {
            audit.record(
                "egress",
                json!({
                    "decision": "allow",
                    "rule": rule,
                    "method": method,
                    "host": target.host,
                    "port": target.port,
                    "path": path,
                    "status": status,
                    "bytes": bytes,
                    "ms": t0.elapsed().as_millis() as u64,
                }),
            );
        });
        Response::from_parts(parts, MaskBody::new(body, mask, on_done).boxed())
    }

    /// WebSocket upgrade on an allowed route: handshake with upstream over a
    /// checked connection, then relay messages, scanning agent→upstream
    /// messages and masking upstream→agent ones.
    #[allow(clippy::too_many_arguments)]
    async fn websocket(
        self: Arc<Self>,
        target: Target,
        mut req: Request<Incoming>,
        auth: Option<Auth>,
        rule: String,
        method: String,
        path: String,
        dlp: bool,
        detector: Arc<Detector>,
        t0: Instant,
    ) -> Response<ProxyBody> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let scheme = if target.https { "https" } else { "http" };
        let Ok(conn_uri) = format!("{scheme}://{}/", authority_with_port(&target)).parse::<Uri>()
        else {
            return self.deny(
                StatusCode::BAD_REQUEST,
                "bad-uri",
                &method,
                &target.host,
                target.port,
                &path,
                t0,
                "bottle egress: invalid URI\n".into(),
            );
        };
        let stream = match self.ws_connector.clone().call(conn_uri).await {
            Ok(s) => s,
            Err(e) => return self.upstream_error(e.as_ref(), &method, &target, &path, t0),
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake::<_, ProxyBody>(stream).await {
                Ok(x) => x,
                Err(e) => return self.upstream_error(&e, &method, &target, &path, t0),
            };
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "websocket upstream connection ended");
            }
        });
        let (mut parts, _body) = req.into_parts();
        parts.uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        prepare_headers(&mut parts.headers, auth.as_ref(), false, true);
        if let Ok(v) = HeaderValue::from_str(&target.authority()) {
            parts.headers.insert(header::HOST, v);
        }
        let upstream_req = Request::from_parts(parts, full(Bytes::new()));
        let mut resp = match sender.send_request(upstream_req).await {
            Ok(r) => r,
            Err(e) => return self.upstream_error(&e, &method, &target, &path, t0),
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self.respond(resp, detector, rule, method, target, path, t0);
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let mut out = Response::new(full(Bytes::new()));
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for name in [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_ACCEPT,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            if let Some(v) = resp.headers().get(&name) {
                out.headers_mut().insert(name, v.clone());
            }
        }
        self.record(Decision {
            decision: "allow",
            rule: &rule,
            method: &method,
            host: &target.host,
            port: target.port,
            path: &path,
            status: 101,
            bytes: 0,
            t0,
        });
        let this = self.clone();
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let client =
                WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
            let upstream =
                WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
            this.relay(client, upstream, dlp, detector, target, path)
                .await;
        });
        out
    }

    async fn relay<C, U>(
        &self,
        client: WebSocketStream<C>,
        upstream: WebSocketStream<U>,
        dlp: bool,
        detector: Arc<Detector>,
        target: Target,
        path: String,
    ) where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut c_tx, mut c_rx) = client.split();
        let (mut u_tx, mut u_rx) = upstream.split();
        let t0 = Instant::now();
        let outbound = async {
            while let Some(Ok(msg)) = c_rx.next().await {
                // Every payload the agent sends is scanned: control frames
                // (Ping/Pong payloads, the Close reason) carry bytes too.
                let data: Option<&[u8]> = match &msg {
                    Message::Text(t) => Some(t.as_bytes()),
                    Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => Some(b),
                    Message::Close(Some(frame)) => Some(frame.reason.as_bytes()),
                    Message::Close(None) => None,
                    Message::Frame(f) => Some(f.payload()),
                };
                if let (true, Some(data)) = (dlp, data) {
                    if let Some(f) = detector.scan(data) {
                        return Some(format!("dlp:{}", f.rule));
                    }
                }
                let close = matches!(msg, Message::Close(_));
                if u_tx.send(msg).await.is_err() || close {
                    break;
                }
            }
            None
        };
        let inbound = async {
            while let Some(Ok(msg)) = u_rx.next().await {
                let msg = match msg {
                    Message::Text(t) => match detector.mask(t.as_bytes()) {
                        Some(m) => Message::text(String::from_utf8_lossy(&m).into_owned()),
                        None => Message::Text(t),
                    },
                    Message::Binary(b) => match detector.mask(&b) {
                        Some(m) => Message::binary(m),
                        None => Message::Binary(b),
                    },
                    Message::Ping(b) => match detector.mask(&b) {
                        Some(m) => Message::Ping(m.into()),
                        None => Message::Ping(b),
                    },
                    Message::Pong(b) => match detector.mask(&b) {
                        Some(m) => Message::Pong(m.into()),
                        None => Message::Pong(b),
                    },
                    Message::Close(Some(mut f)) => {
                        if let Some(m) = detector.mask(f.reason.as_bytes()) {
                            f.reason = String::from_utf8_lossy(&m).into_owned().into();
                        }
                        Message::Close(Some(f))
                    }
                    other => other,
                };
                let close = matches!(msg, Message::Close(_));
                if c_tx.send(msg).await.is_err() || close {
                    break;
                }
            }
        };
        let blocked = tokio::select! {
            b = outbound => b,
            _ = inbound => None,
        };
        if let Some(rule) = blocked {
            self.record(Decision {
                decision: "deny",
                rule: &rule,
                method: "WEBSOCKET",
                host: &target.host,
                port: target.port,
                path: &path,
                status: 1008,
                bytes: 0,
                t0,
            });
            let frame = CloseFrame {
                code: CloseCode::Policy,
                reason: "bottle egress: message contains a secret".into(),
            };
            let _ = c_tx.send(Message::Close(Some(frame))).await;
            let _ = u_tx.send(Message::Close(None)).await;
        }
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .map(|t| t.trim_ascii().to_vec())
                .collect::<Vec<_>>()
        })
        .filter_map(|t| HeaderName::from_bytes(&t).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Outbound headers: hop-by-hop removed (kept for a WebSocket handshake),
/// agent credentials dropped and the route's injected when it has `auth`,
/// `Accept-Encoding` dropped when held secrets must be masked in responses.
fn prepare_headers(
    headers: &mut HeaderMap,
    auth: Option<&Auth>,
    identity_encoding: bool,
    websocket: bool,
) {
    if websocket {
        headers.remove("proxy-authorization");
        headers.remove("proxy-connection");
        headers.remove("keep-alive");
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    } else {
        strip_hop_by_hop(headers);
    }
    if identity_encoding {
        headers.remove(header::ACCEPT_ENCODING);
    }
    if let Some(auth) = auth {
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::COOKIE);
        let name = auth.header_name();
        headers.remove(&name);
        headers.insert(name, auth.header_value.clone());
    }
}

/// An accepted socket that holds its connection slot for as long as it
/// lives (through a CONNECT upgrade into the intercepted tunnel).
struct Slotted {
    tcp: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Slotted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Slotted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serve one accepted proxy connection; `slot` is its share of
/// `max_connections`, released when the socket closes.
pub(crate) async fn serve_conn(
    proxy: Arc<Proxy>,
    tcp: tokio::net::TcpStream,
    _peer: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let io = Slotted { tcp, _slot: slot };
    let svc = service_fn(move |req| proxy.clone().outer(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "proxy connection ended with an error");
    }
}

/// A connection past `max_connections`: answered 503 without reading a
/// request, audited, closed.
pub(crate) async fn over_capacity(proxy: Arc<Proxy>, mut tcp: tokio::net::TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt as _;
    proxy.record(Decision {
        decision: "deny",
        rule: "conn-limit",
        method: "",
        host: "",
        port: 0,
        path: "",
        status: 503,
        bytes: 0,
        t0: Instant::now(),
    });
    let body = format!(
        "bottle egress: too many open connections (max_connections = {max}); close some and retry\n"
    );
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nx-bottle-egress: denied\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt as _;
        let _ = tcp.write_all(resp.as_bytes()).await;
        let _ = tcp.shutdown().await;
        // Drain what the client already sent so closing does not reset
        // the connection before it read the answer.
        let mut sink = [0u8; 4096];
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}
