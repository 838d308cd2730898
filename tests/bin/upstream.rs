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
//! BODY <body bytes, lossy UTF-8>
//! END
//! ```
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
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let line = format!("{} {} {:?}", parts.method, parts.uri, parts.version);
    let mut headers = String::new();
    for (k, v) in &parts.headers {
        headers.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
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
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
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
