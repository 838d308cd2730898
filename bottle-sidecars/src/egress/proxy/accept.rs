//! The proxy port: connection slots, CONNECT (decided before any TLS byte
//! is read) and the intercepted tunnel (a leaf for exactly the CONNECT
//! host, SNI checked, HTTP/1.1 or HTTP/2 per ALPN).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::super::body::{full, ProxyBody};
use super::super::net::{checked_addrs, normalize_host};
use super::{Decision, Proxy, Target};

impl Proxy {
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
    async fn outer(
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
                let target = Target::new(false, normalize_host(host), uri.port_u16().unwrap_or(80));
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

    /// A tunnel refused before any request inside it is read (no TLS, or
    /// SNI naming another host): its audit line; the caller drops it.
    fn refuse_tunnel(&self, rule: &str, host: &str, port: u16, t0: Instant) {
        self.record(Decision {
            decision: "deny",
            rule,
            method: "CONNECT",
            host,
            port,
            path: "",
            status: 0,
            bytes: 0,
            t0,
        });
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
                self.refuse_tunnel("tunnel-not-tls", &host, port, t0);
                return;
            }
        };
        if let Some(sni) = start.client_hello().server_name() {
            if normalize_host(sni) != host {
                let live = self.shared.live();
                let sni = Self::safe(&live.detector, sni);
                tracing::warn!(%host, %sni, "TLS SNI does not match the CONNECT host");
                self.refuse_tunnel("sni-mismatch", &host, port, t0);
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
        let target = Target::new(true, host, port);
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
