//! `bottle-test-upstream`: the HTTP(S) echo upstream of the security suite
//! and the end-to-end tests. It runs inside a test container started from
//! the seeded base image (the binary is bind-mounted; nothing is pulled).
//!
//! Listens on `0.0.0.0:443` (TLS with a test-CA-signed certificate, ALPN
//! `h2` and `http/1.1`) and on `0.0.0.0:80` and `0.0.0.0:8080` (plain
//! HTTP/1.1, and HTTP/2 with prior knowledge). Every request it receives is
//! written to stdout (what the harness reads with `docker logs`):
//!
//! ```text
//! REQUEST <METHOD> <URI> <VERSION> port=<PORT>
//! <header>: <value>           (one line per header, names lower-case)
//! TRAILER <name>: <value>    (one line per request trailer)
//! BODY <body bytes, lossy UTF-8>
//! END
//! ```
//!
//! A WebSocket upgrade is answered 101; every message the client then
//! sends is logged as `WSFRAME <text|binary|ping|pong|close> <payload>`.
//!
//! and answered `200` with `echo from <NAME>`, the request line and the
//! headers as the body. `listening` is printed once every port is bound.
//!
//! Usage: `bottle-test-upstream --name NAME --cert CERT.pem --key KEY.pem`.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn arg(args: &[String], flag: &str) -> String {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| {
            eprintln!("usage: bottle-test-upstream --name NAME --cert CERT.pem --key KEY.pem");
            std::process::exit(2)
        })
}

async fn handle(
    req: Request<Incoming>,
    name: Arc<str>,
    port: u16,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut req = req;
    if let Some(resp) = websocket(&mut req, port) {
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(c) => {
            let t = c.trailers().cloned();
            (c.to_bytes(), t)
        }
        Err(_) => (Bytes::new(), None),
    };
    let line = format!("{} {} {:?}", parts.method, parts.uri, parts.version);
    let mut headers = String::new();
    for (k, v) in &parts.headers {
        headers.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    for (k, v) in trailers.iter().flatten() {
        headers.push_str(&format!(
            "TRAILER {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "REQUEST {line} port={port}\n{headers}BODY {}\nEND\n",
            String::from_utf8_lossy(&body)
        );
        let _ = out.flush();
    }
    let reply = format!("echo from {name}\n{line}\n{headers}");
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(reply)))
        .expect("static response"))
}

/// A WebSocket upgrade: answer 101, then log every message the client
/// sends (`WSFRAME <kind> <payload, lossy UTF-8>`), answering pings.
fn websocket(req: &mut Request<Incoming>, port: u16) -> Option<Response<Full<Bytes>>> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY)?;
    if !upgrade {
        return None;
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "REQUEST WEBSOCKET {} port={port}\nEND", req.uri());
        let _ = out.flush();
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = socket.next().await {
            let (kind, data): (&str, Vec<u8>) = match &msg {
                Message::Text(t) => ("text", t.as_bytes().to_vec()),
                Message::Binary(b) => ("binary", b.to_vec()),
                Message::Ping(b) => ("ping", b.to_vec()),
                Message::Pong(b) => ("pong", b.to_vec()),
                Message::Close(f) => (
                    "close",
                    f.as_ref()
                        .map(|f| f.reason.as_bytes().to_vec())
                        .unwrap_or_default(),
                ),
                Message::Frame(f) => ("frame", f.payload().to_vec()),
            };
            {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "WSFRAME {kind} {}", String::from_utf8_lossy(&data));
                let _ = out.flush();
            }
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    });
    Some(
        Response::builder()
            .status(hyper::StatusCode::SWITCHING_PROTOCOLS)
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, "websocket")
            .header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Full::new(Bytes::new()))
            .expect("static response"),
    )
}

fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert).expect("cert").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert PEM");
    let key = rustls_pemfile::private_key(&mut std::fs::read(key).expect("key").as_slice())
        .expect("key PEM")
        .expect("a private key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("cert and key match");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name: Arc<str> = arg(&args, "--name").into();
    let acceptor = tls_acceptor(&arg(&args, "--cert"), &arg(&args, "--key"));
    let mut tasks = Vec::new();
    for (port, tls) in [(443u16, true), (80, false), (8080, false)] {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .unwrap_or_else(|e| panic!("bind {port}: {e}"));
        let acceptor = tls.then(|| acceptor.clone());
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| handle(req, name.clone(), port));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acc) => {
                            if let Ok(stream) = acc.accept(tcp).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .await;
                        }
                    }
                });
            }
        }));
    }
    println!("listening");
    for t in tasks {
        let _ = t.await;
    }
}
