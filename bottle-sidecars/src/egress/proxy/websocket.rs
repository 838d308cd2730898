//! WebSocket upgrades on allowed routes: the handshake goes upstream over a
//! checked connection, then messages are relayed one by one — agent to
//! upstream scanned, upstream to agent masked.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use hudsucker::tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hudsucker::tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use hudsucker::tokio_tungstenite::tungstenite::Message;
use hudsucker::tokio_tungstenite::WebSocketStream;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tower_service::Service as _;

use super::super::body::{full, ProxyBody};
use super::super::policy::Auth;
use super::upstream::prepare_headers;
use super::{authority_with_port, Decision, Proxy, Target};
use crate::dlp::Detector;

impl Proxy {
    /// WebSocket upgrade on an allowed route: handshake with upstream over a
    /// checked connection, then relay messages, scanning agent→upstream
    /// messages and masking upstream→agent ones.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn websocket(
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
