//! Test harness for the egress proxy: a real loopback upstream (TLS with
//! HTTP/1.1 + HTTP/2, plain HTTP, WebSocket echo) that records what it
//! received, a running proxy, and clients that trust the bottle CA.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_sidecars::audit::AuditLog;
use bottle_sidecars::egress;
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt, Full};
use hudsucker::tokio_tungstenite::tungstenite::protocol::Role;
use hudsucker::tokio_tungstenite::tungstenite::Message;
use hudsucker::tokio_tungstenite::WebSocketStream;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The route credential the proxy injects (a held secret).
pub const ROUTE_TOKEN: &str = "rt-9c1f4e7a2b6d8035-live";
/// Another held secret (e.g. a `?prompt` answer) the agent must never send out.
pub const PROMPT_ANSWER: &str = "hunter2-correct-horse-battery";
/// Names the tests map to 127.0.0.1.
pub const NAMES: &[&str] = &[
    "allowed.test",
    "other.test",
    "internal.test",
    "ws.test",
    "grant.test",
];

/// What the upstream saw for one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Request trailers, if any arrived.
    pub trailers: Option<HeaderMap>,
}

/// The loopback upstream.
pub struct Upstream {
    pub tls_addr: SocketAddr,
    pub plain_addr: SocketAddr,
    pub ca_pem: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted (TLS + plain).
    pub conns: Arc<AtomicUsize>,
    /// WebSocket messages received.
    pub ws_seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    /// Every byte the upstream ever received, as text (for "never reached upstream").
    pub fn everything(&self) -> String {
        let mut s = String::new();
        for r in self.seen() {
            s.push_str(&r.method);
            s.push(' ');
            s.push_str(&r.uri);
            for (k, v) in &r.headers {
                s.push_str(&format!("\n{k}: {}", String::from_utf8_lossy(v.as_bytes())));
            }
            s.push('\n');
            s.push_str(&String::from_utf8_lossy(&r.body));
            for (k, v) in r.trailers.iter().flatten() {
                s.push_str(&format!("\n{k}: {}", String::from_utf8_lossy(v.as_bytes())));
            }
        }
        for m in self.ws_seen.lock().unwrap().iter() {
            s.push_str(m);
        }
        s
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_handler(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    ws_seen: Arc<Mutex<Vec<String>>>,
) -> Result<Response<UpBody>, Infallible> {
    if req.uri().path() == "/ws" {
        seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            uri: "/ws".into(),
            version: req.version(),
            headers: req.headers().clone(),
            body: Vec::new(),
            trailers: None,
        });
        return Ok(ws_echo(req, ws_seen).map(|b| b.boxed()));
    }
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(c) => {
            let t = c.trailers().cloned();
            (c.to_bytes(), t)
        }
        Err(_) => (Bytes::new(), None),
    };
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.to_vec(),
        trailers,
    });
    if parts.uri.path() == "/chunked-secret" {
        // The token split over many small, separately flushed frames.
        let text = format!("start {ROUTE_TOKEN} middle {ROUTE_TOKEN} end");
        let chunks: Vec<Bytes> = text
            .as_bytes()
            .chunks(5)
            .map(Bytes::copy_from_slice)
            .collect();
        let stream = futures::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, Infallible>(hyper::body::Frame::data(c))
        });
        return Ok(Response::new(BodyExt::boxed(
            http_body_util::StreamBody::new(stream),
        )));
    }
    if parts.uri.path() == "/gzip-secret" {
        // Compressed although the proxy did not ask for it.
        let plain = format!("gz {ROUTE_TOKEN} gz");
        let mut resp = Response::new(Full::new(Bytes::from(gzip_stored(plain.as_bytes()))).boxed());
        resp.headers_mut().insert(
            "content-encoding",
            hyper::header::HeaderValue::from_static("gzip"),
        );
        return Ok(resp);
    }
    let text = match parts.uri.path() {
        "/echo-secret" => {
            format!("the route token is {ROUTE_TOKEN} and the answer is {PROMPT_ANSWER}. bye")
        }
        p => format!("ok {p} {:?}", parts.version),
    };
    Ok(Response::new(Full::new(Bytes::from(text)).boxed()))
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    let crc = !crc;
    let len = data.len() as u16;
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn ws_echo(mut req: Request<Incoming>, ws_seen: Arc<Mutex<Vec<String>>>) -> Response<Full<Bytes>> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = hudsucker::tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(t) => {
                    ws_seen.lock().unwrap().push(t.to_string());
                    let reply = if t.as_str() == "say-secret" {
                        format!("secret: {ROUTE_TOKEN}")
                    } else {
                        format!("echo: {t}")
                    };
                    if ws.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
                // Control frames are recorded too (their payloads are bytes
                // the agent sent).
                Message::Ping(p) => {
                    ws_seen
                        .lock()
                        .unwrap()
                        .push(format!("ping:{}", String::from_utf8_lossy(&p)));
                }
                Message::Pong(p) => {
                    ws_seen
                        .lock()
                        .unwrap()
                        .push(format!("pong:{}", String::from_utf8_lossy(&p)));
                }
                Message::Close(f) => {
                    if let Some(f) = f {
                        ws_seen.lock().unwrap().push(format!("close:{}", f.reason));
                    }
                    break;
                }
                _ => {}
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Start the upstream (TLS + plain listeners on 127.0.0.1).
pub async fn start_upstream(dir: &Path) -> Upstream {
    egress::install_crypto_provider();
    // A CA for the upstream, and a leaf for every test name + 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test upstream CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let ca_pem = dir.join("upstream-ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    names.push("127.0.0.1".into());
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let certs = vec![leaf.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let mut server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    server_cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let ws_seen = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicUsize::new(0));
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    let plain_addr = plain_listener.local_addr().unwrap();

    for (listener, tls) in [(tls_listener, Some(acceptor)), (plain_listener, None)] {
        let seen = seen.clone();
        let ws_seen = ws_seen.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                let ws_seen = ws_seen.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        upstream_handler(req, seen.clone(), ws_seen.clone())
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
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
        });
    }
    Upstream {
        tls_addr,
        plain_addr,
        ca_pem,
        seen,
        conns,
        ws_seen,
    }
}

/// A running proxy with its state dir.
pub struct Bottle {
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub proxy: SocketAddr,
    pub routes: PathBuf,
    pub audit: PathBuf,
    pub ca_pem: Vec<u8>,
}

impl Bottle {
    /// Start upstream + proxy with `routes` (the text may use `{TLS}` and
    /// `{PLAIN}` for the upstream ports).
    pub async fn start(routes: &str) -> Bottle {
        Self::start_with(routes, |_| {}).await
    }

    pub async fn start_with(routes: &str, tweak: impl FnOnce(&mut egress::Options)) -> Bottle {
        let dir = tempfile::tempdir().unwrap();
        let upstream = start_upstream(dir.path()).await;
        let ca_dir = dir.path().join("ca");
        egress::ca::generate_ca(&ca_dir).unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("route-token"), ROUTE_TOKEN).unwrap();
        std::fs::write(secrets.join("prompt-answer"), PROMPT_ANSWER).unwrap();
        std::fs::create_dir(dir.path().join("egress")).unwrap();
        let routes_path = dir.path().join("egress/routes.toml");
        let b = Bottle {
            ca_pem: std::fs::read(ca_dir.join("ca.pem")).unwrap(),
            audit: dir.path().join("audit.jsonl"),
            routes: routes_path.clone(),
            proxy: "127.0.0.1:0".parse().unwrap(),
            upstream,
            dir,
        };
        b.write_routes(routes);
        let mut opts = egress::Options::new(routes_path, ca_dir, "127.0.0.1:0".parse().unwrap());
        opts.secrets_dir = Some(secrets);
        opts.upstream_ca = Some(b.upstream.ca_pem.clone());
        opts.resolve_overrides = NAMES
            .iter()
            .map(|n| (n.to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST)))
            .collect::<BTreeMap<_, _>>();
        tweak(&mut opts);
        let audit = AuditLog::open(&b.audit, "test-bottle").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = egress::serve(opts, audit, tx).await {
                panic!("egress stopped: {e}");
            }
        });
        let proxy = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("proxy ready in time")
            .expect("proxy started");
        Bottle { proxy, ..b }
    }

    pub fn tls_port(&self) -> u16 {
        self.upstream.tls_addr.port()
    }
    pub fn plain_port(&self) -> u16 {
        self.upstream.plain_addr.port()
    }

    /// Expand `{TLS}` / `{PLAIN}` and write routes.toml atomically.
    pub fn write_routes(&self, text: &str) {
        let text = text
            .replace("{TLS}", &self.tls_port().to_string())
            .replace("{PLAIN}", &self.plain_port().to_string());
        let tmp = self.routes.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.routes).unwrap();
    }

    /// A client that uses the proxy and trusts only the bottle CA.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.proxy)).unwrap())
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca_pem).unwrap()])
            .timeout(Duration::from_secs(10))
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.tls_port())
    }

    /// `GET https://host:<tls port>path` through the proxy with a fresh
    /// [`Bottle::client`] (HTTP/2 where the upstream offers it).
    pub async fn get(&self, host: &str, path: &str) -> reqwest::Response {
        self.client()
            .get(self.url(host, path))
            .send()
            .await
            .unwrap()
    }

    /// `GET path` in HTTP/1.1 over a CONNECT tunnel to `host` on the
    /// upstream's TLS port, the path sent byte for byte (a client library
    /// would normalise dot segments and encodings away); everything read
    /// until close.
    pub async fn raw_get(&self, host: &str, path: &str) -> String {
        let port = self.tls_port();
        self.raw_tls(
            host,
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    /// Audit lines as JSON.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Wait (≤ 5 s) for an audit line matching `pred`; panic with the log otherwise.
    pub async fn expect_audit(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.audit_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "no audit line for {what}; log:\n{}",
                    std::fs::read_to_string(&self.audit).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The audit lines matching `pred` once at least `at_least` of them are
    /// written (≤ 5 s: egress appends its lines off the request path, a few
    /// ms after the decision) and the writer had time to append any more;
    /// the caller asserts the exact count.
    pub async fn settled_audit(
        &self,
        at_least: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.audit_lines().iter().filter(|l| pred(l)).count() < at_least
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // More than the writer's gathering time, so a line too many shows.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.audit_lines().into_iter().filter(|l| pred(l)).collect()
    }

    /// The audit file never contains a held secret value.
    pub fn assert_audit_clean(&self) {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        assert!(!text.contains(ROUTE_TOKEN), "route token in audit log");
        assert!(!text.contains(PROMPT_ANSWER), "held answer in audit log");
        assert!(!text.contains("q=1"), "query string in audit log");
    }

    /// Send a raw request to the proxy and return the response head+body text
    /// (reads until the peer closes or `Connection: close` body ends).
    pub async fn raw(&self, request: &str) -> String {
        let mut s = TcpStream::connect(self.proxy).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Open a CONNECT tunnel; returns the stream and the response head.
    pub async fn connect_tunnel(&self, authority: &str) -> (TcpStream, String) {
        let mut s = TcpStream::connect(self.proxy).await.unwrap();
        s.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        (s, String::from_utf8_lossy(&head).into_owned())
    }

    /// CONNECT to `host:port`, TLS (SNI `host`, HTTP/1.1), send `request`
    /// verbatim and return everything read until close.
    pub async fn raw_tls(&self, host: &str, port: u16, request: &str) -> String {
        let (s, head) = self.connect_tunnel(&format!("{host}:{port}")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
        let mut tls = self
            .tls_client(&[b"http/1.1"])
            .connect(name, s)
            .await
            .unwrap();
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// TLS client config trusting the bottle CA.
    pub fn tls_client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

/// Is `line` the audit line of a `decision` by `rule` on `path`?
pub fn is(line: &serde_json::Value, decision: &str, rule: &str, path: &str) -> bool {
    line["decision"] == decision && line["rule"] == rule && line["path"] == path
}

/// Poll `f` until it returns `Some`, for at most `within`.
pub async fn poll_until<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
