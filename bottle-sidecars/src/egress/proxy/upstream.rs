//! The upstream leg: outbound headers (hop-by-hop gone, the agent's
//! credentials replaced by the route's) and the response back to the agent
//! (decoded if it must be masked, masked while streaming, audited when it
//! ends).

use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode, Version};

use super::super::audit_queue::Line;
use super::super::body::{MaskBody, ProxyBody};
use super::super::policy::Auth;
use super::{Proxy, Target};
use crate::dlp::Detector;

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
    /// Turn the upstream response into the agent's: hop-by-hop headers gone,
    /// body masked, audit line written when the body ends.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond(
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
                    b.map_err(|e| Box::new(e) as super::super::net::BoxError)
                        .boxed()
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
            body.map_err(|e| Box::new(e) as super::super::net::BoxError)
                .boxed()
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        let status = parts.status.as_u16();
        let audit = self.audit.clone();
        let on_done = Box::new(move |bytes: u64| {
            audit.decision(Line {
                decision: "allow",
                rule,
                method,
                host: target.host,
                port: target.port,
                path,
                status,
                bytes,
                t0,
            });
        });
        Response::from_parts(parts, MaskBody::new(body, mask, on_done).boxed())
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no lookups.
    // (`Connection` is itself hop-by-hop, so the names it lists only
    // matter when it is there.)
    if !headers.keys().any(|n| HOP_BY_HOP.contains(&n.as_str())) {
        return;
    }
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
pub(super) fn prepare_headers(
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
