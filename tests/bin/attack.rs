//! `bottle-test-attack`: the security suite's attack client for what curl
//! in the agent cannot send: WebSocket control frames and request trailers
//! (docs/security.md, S4). The harness copies it into the agent; it goes
//! out the way every client in a bottle does: `HTTPS_PROXY` (with the
//! bottle's access credential), CONNECT, TLS trusting `SSL_CERT_FILE` (the
//! bottle's CA).
//!
//! ```text
//! bottle-test-attack ws <host> <path> <payload>       Ping, Pong and Close(reason) carrying <payload>
//! bottle-test-attack ws-ping|ws-pong|ws-close ...     only that frame, on its own connection
//! bottle-test-attack trailer-h1 <host> <path> <payload>   chunked POST, trailer `x-note: <payload>`
//! bottle-test-attack trailer-h2 <host> <path> <payload>   HTTP/2 POST, trailer `x-note: <payload>`
//! ```
//!
//! Exit status: 0 when every frame or the whole request went through as
//! sent (WebSocket: no policy close came back; trailers: a 2xx answer),
//! 1 when the proxy refused it, 97 when the attack could not be carried
//! out as designed (no proxy, CONNECT or TLS failed, the protocol asked
//! for was not negotiated). It prints what it saw, never the payload.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const INCONCLUSIVE: i32 = 97;

fn inconclusive(why: impl std::fmt::Display) -> ! {
    eprintln!("INCONCLUSIVE: {why}");
    std::process::exit(INCONCLUSIVE)
}

/// `http://user:pass@host:port` → (host:port, Some("user:pass")).
fn proxy() -> (String, Option<String>) {
    let url = std::env::var("HTTPS_PROXY")
        .or_else(|_| std::env::var("https_proxy"))
        .unwrap_or_else(|_| inconclusive("no HTTPS_PROXY in the environment"));
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| inconclusive("HTTPS_PROXY is not an http:// URL"));
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once('@') {
        Some((cred, addr)) => (addr.to_owned(), Some(cred.to_owned())),
        None => (rest.to_owned(), None),
    }
}

/// CONNECT through the proxy, then TLS to `host` with `alpn`.
async fn tunnel(host: &str, alpn: &[u8]) -> TlsStream<TcpStream> {
    let (addr, cred) = proxy();
    let mut tcp = TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| inconclusive(format!("proxy {addr}: {e}")));
    let auth = cred
        .map(|c| {
            format!(
                "Proxy-Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(c)
            )
        })
        .unwrap_or_default();
    tcp.write_all(
        format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n{auth}\r\n").as_bytes(),
    )
    .await
    .unwrap_or_else(|e| inconclusive(format!("CONNECT: {e}")));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => inconclusive("the proxy closed during CONNECT"),
        }
    }
    let status = String::from_utf8_lossy(&head);
    let line = status.lines().next().unwrap_or_default().to_owned();
    println!("CONNECT: {line}");
    if !line.contains(" 200") {
        inconclusive(format!("CONNECT refused: {line}"));
    }
    let ca = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| inconclusive("no SSL_CERT_FILE (the bottle's CA)"));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca).unwrap_or_else(|e| inconclusive(format!("{ca}: {e}")));
    for c in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| inconclusive("bad host name"));
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| inconclusive(format!("TLS through the proxy: {e}")));
    if tls.get_ref().1.alpn_protocol() != Some(alpn) {
        inconclusive(format!(
            "ALPN {} was not negotiated",
            String::from_utf8_lossy(alpn)
        ));
    }
    tls
}

/// `kinds`: which of ping, pong, close to send, in that order.
async fn ws(host: &str, path: &str, payload: &str, kinds: &[&str]) -> i32 {
    let tls = tunnel(host, b"http/1.1").await;
    let url = format!("wss://{host}{path}");
    let (mut socket, resp) = tokio_tungstenite::client_async(url.as_str(), tls)
        .await
        .unwrap_or_else(|e| inconclusive(format!("WebSocket handshake: {e}")));
    println!("handshake: {}", resp.status());
    let frames = [
        ("ping", Message::Ping(Bytes::from(payload.to_owned()))),
        ("pong", Message::Pong(Bytes::from(payload.to_owned()))),
        (
            "close",
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: payload.to_owned().into(),
            })),
        ),
    ];
    let mut sent = 0;
    let wanted = frames.len().min(kinds.len());
    for (kind, frame) in frames.into_iter().filter(|(k, _)| kinds.contains(k)) {
        if socket.send(frame).await.is_err() {
            println!("{kind}: the connection was closed before it could be sent");
            break;
        }
        sent += 1;
        println!("{kind}: sent");
        // what came back, briefly (the proxy closes with 1008 on a hit)
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(500), socket.next()).await
        {
            match msg {
                Ok(Message::Close(Some(f))) => {
                    println!(
                        "close from the other side: {} {}",
                        u16::from(f.code),
                        f.reason
                    );
                    if f.code == CloseCode::Policy {
                        return 1;
                    }
                }
                Ok(m) => println!("received: {} bytes ({})", m.len(), kind_of(&m)),
                Err(e) if kind == "close" => {
                    // our Close went out; the peer may end the stream
                    println!("connection ended after our close: {e}");
                    break;
                }
                Err(e) => {
                    println!("connection ended: {e}");
                    return 1;
                }
            }
        }
    }
    if sent == wanted {
        0
    } else {
        1
    }
}

fn kind_of(m: &Message) -> &'static str {
    match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
        Message::Frame(_) => "frame",
    }
}

/// A chunked HTTP/1.1 POST whose trailer carries the payload, written by
/// hand (hyper's HTTP/1 client does not send trailers).
async fn trailer_h1(host: &str, path: &str, payload: &str) -> i32 {
    let mut tls = tunnel(host, b"http/1.1").await;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTrailer: x-note\r\nTE: trailers\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-note: {payload}\r\n\r\n"
    );
    if let Err(e) = tls.write_all(req.as_bytes()).await {
        inconclusive(format!("writing the request: {e}"));
    }
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    let line = text.lines().next().unwrap_or_default().to_owned();
    println!("status: {line}");
    status_exit(&line)
}

async fn trailer_h2(host: &str, path: &str, payload: &str) -> i32 {
    let tls = tunnel(host, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap_or_else(|e| inconclusive(format!("HTTP/2 handshake: {e}")));
    tokio::spawn(conn);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("x-note", payload.parse().expect("header value"));
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures::stream::iter(frames));
    let req = hyper::Request::post(format!("https://{host}{path}"))
        .header("te", "trailers")
        .body(body)
        .expect("request");
    match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            println!("status: HTTP/2 {status}");
            status_exit(&format!("HTTP/2 {}", status.as_u16()))
        }
        Err(e) => {
            println!("request failed: {e}");
            1
        }
    }
}

fn status_exit(line: &str) -> i32 {
    match line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => 0,
        Some(_) => 1,
        None => inconclusive("no HTTP response came back"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, host, path, payload] = args.as_slice() else {
        eprintln!("usage: bottle-test-attack ws|ws-ping|ws-pong|ws-close|trailer-h1|trailer-h2 <host> <path> <payload>");
        std::process::exit(2)
    };
    let code = match mode.as_str() {
        "ws" => ws(host, path, payload, &["ping", "pong", "close"]).await,
        "ws-ping" => ws(host, path, payload, &["ping"]).await,
        "ws-pong" => ws(host, path, payload, &["pong"]).await,
        "ws-close" => ws(host, path, payload, &["close"]).await,
        "trailer-h1" => trailer_h1(host, path, payload).await,
        "trailer-h2" => trailer_h2(host, path, payload).await,
        other => {
            eprintln!("unknown mode {other}");
            2
        }
    };
    std::process::exit(code)
}
