//! One request to an allowed destination: the pure head decision
//! ([`super::super::head::decide`]), DLP on the request line, headers and
//! body (prefix at once, the rest as it streams), then the upstream leg ([`super::upstream`]) or a WebSocket
//! relay ([`super::websocket`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::super::body::{
    content_codings, decode_bounded, full, read_prefix, take_budget, DecodeError, OnRefused,
    PrefixError, PrefixedBody, ProxyBody, StreamScan, MAX_CODINGS,
};
use super::super::policy::Denial;
use super::upstream::prepare_headers;
use super::{Decision, Proxy, Target};
use crate::dlp::Detector;

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

impl Proxy {
    /// One request to `target` (inside a tunnel, or plain http).
    pub(super) async fn handle(
        self: Arc<Self>,
        target: Target,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let t0 = Instant::now();
        let live = self.shared.live();
        let method = req.method().as_str().to_owned();
        let raw_path = req.uri().path().to_owned();
        // A path holding a secret is recorded (and refused) as that.
        let path_hit = live.detector.scan(raw_path.as_bytes());
        let path = match &path_hit {
            Some(f) => format!("[redacted:{}]", f.rule),
            None => raw_path.clone(),
        };
        let path_rule = |plain: &str| match &path_hit {
            Some(f) if live.dlp => format!("dlp:{}", f.rule),
            _ => plain.to_owned(),
        };
        let host = target.host.as_str();
        let port = target.port;

        let dest = super::super::head::Destination {
            tls: target.https,
            host: host.to_owned(),
            port,
        };
        let decision = super::super::head::decide(
            &live,
            &dest,
            req.method(),
            req.uri(),
            req.headers(),
            SystemTime::now(),
        );
        let decision = match decision {
            Ok(c) => Ok(c.allowed),
            Err(super::super::head::HeadDenial::HostMismatch(h)) => {
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
            Err(super::super::head::HeadDenial::NestedConnect) => {
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
            Err(super::super::head::HeadDenial::PathUnsafe) => {
                return self.deny(
                    StatusCode::FORBIDDEN,
                    &path_rule("path-unsafe"),
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    "bottle egress: path with dot segments or backslashes refused\n".into(),
                );
            }
            Err(super::super::head::HeadDenial::PathEncoded) => {
                return self.deny(
                    StatusCode::FORBIDDEN,
                    &path_rule("path-encoded"),
                    &method,
                    host,
                    port,
                    &path,
                    t0,
                    "bottle egress: path with an encoded slash or backslash, or encoded twice, refused \
                     (an upstream may decode it past the route's paths)\n"
                        .into(),
                );
            }
            Err(super::super::head::HeadDenial::Policy(d)) => Err(d),
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
            let mut joined = Vec::new();
            for (name, value) in req.headers() {
                if dropped(name) {
                    continue;
                }
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
                joined.extend_from_slice(value.as_bytes());
            }
            // Every header value again, in order, with no separator: a
            // receiver can join a value split across headers
            // (docs/security.md "DLP rules").
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(&joined);
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
        // it has a Content-Encoding), on trailers that end within them, and
        // on the rest of the body as it streams (a hit there aborts the
        // upstream request; `refused` then holds the audited rule).
        let (mut parts, body) = req.into_parts();
        // Set (and audited) when the body is refused while it streams.
        let refused: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let body: ProxyBody = if dlp {
            let facts = BodyFacts {
                method: &method,
                host,
                port,
                path: &path,
                t0,
            };
            let on_refused: OnRefused = {
                let this = self.clone();
                let refused = refused.clone();
                let (method, host, path) = (method.clone(), host.to_owned(), path.clone());
                Box::new(move |rule: &str| {
                    this.record(Decision {
                        decision: "deny",
                        rule,
                        method: &method,
                        host: &host,
                        port,
                        path: &path,
                        status: stream_refusal_status(rule).as_u16(),
                        bytes: 0,
                        t0,
                    });
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(rule.to_owned());
                })
            };
            match self
                .scan_body(
                    &parts.headers,
                    body,
                    &detector,
                    max_scan,
                    &facts,
                    on_refused,
                )
                .await
            {
                Ok(b) => b,
                Err(resp) => return resp,
            }
        } else {
            body.map_err(|e| Box::new(e) as super::super::net::BoxError)
                .boxed()
        };

        // Upstream request: absolute URI to the target, hop-by-hop headers
        // gone, agent credentials replaced by the route's.
        let Some(uri) = target.upstream_uri(parts.uri.path_and_query().cloned()) else {
            return self.deny(
                StatusCode::BAD_REQUEST,
                "bad-uri",
                &method,
                host,
                port,
                &path,
                t0,
                "bottle egress: invalid request URI\n".into(),
            );
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

        let result = self.client.request(upstream_req).await;
        let stream_refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rule) = stream_refused {
            // Already audited by the body.
            let status = stream_refusal_status(&rule);
            let msg = if status == StatusCode::FORBIDDEN {
                format!("bottle egress: request blocked: its body contains a secret ({rule}); the upstream request was aborted before it\n")
            } else {
                "bottle egress: too many request bodies are being inspected right now; retry shortly\n".into()
            };
            return Self::refusal(status, msg);
        }
        match result {
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
        detector: &Arc<Detector>,
        max_scan: usize,
        f: &BodyFacts<'_>,
        on_refused: OnRefused,
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
        if ended {
            return Ok(PrefixedBody::new(prefix, trailers, None, permit, None).boxed());
        }
        let scan = StreamScan {
            detector: detector.clone(),
            budget: self.budget.clone(),
            on_refused,
        };
        Ok(PrefixedBody::new(prefix, trailers, Some(body), permit, Some(scan)).boxed())
    }
}

/// The status a request refused while its body streamed gets: 503 when
/// the buffer budget ran out, else 403 (a DLP hit).
fn stream_refusal_status(rule: &str) -> StatusCode {
    if rule == "buffer-limit" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::FORBIDDEN
    }
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}
