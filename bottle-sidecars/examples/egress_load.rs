//! Load generator and loopback upstream for `cargo xtask bench egress`.
//!
//! Subcommands (all traffic stays on 127.0.0.1):
//! - `gen-ca <dir>`: write a bottle CA (`ca.pem`, `ca.key`) into `<dir>`.
//! - `upstream <dir> <token-file> [--h2]`: serve HTTPS on 127.0.0.1 with a
//!   certificate for `bench.test` signed by `<dir>/upstream-ca.pem` (written
//!   here); ALPN offers HTTP/1.1 only, or h2 and HTTP/1.1 with `--h2`;
//!   answers 200 only when `Authorization: Bearer <token>` is present
//!   (proves injection), else 401. Prints `port <n>` once listening.
//! - `client <url> <requests> <concurrency> <ca-pem> [--proxy URL]
//!   [--resolve NAME=IP] [--bearer-file FILE] [--post-bytes N] [--http2]`:
//!   keep-alive HTTP/1.1 load (or HTTP/2 with `--http2`: every request a
//!   stream on one connection); GET, or POST with an N-byte body of
//!   ordinary source text (this file repeated, no credential in it); prints
//!   one JSON line: `{"rps", "mbps", "p50_us", "p99_us", "ok", "errors"}`
//!   (`mbps`: request body MB/s).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bottle_sidecars::egress::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        match args.first().map(String::as_str) {
            Some("gen-ca") if args.len() == 2 => {
                match bottle_sidecars::egress::ca::generate_ca(std::path::Path::new(&args[1])) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("gen-ca: {e}");
                        1
                    }
                }
            }
            Some("upstream") if args.len() == 3 || (args.len() == 4 && args[3] == "--h2") => {
                upstream(&args[1], &args[2], args.len() == 4).await
            }
            Some("client") if args.len() >= 5 => client(&args[1..]).await,
            _ => {
                eprintln!("usage: egress_load gen-ca DIR | upstream DIR TOKEN_FILE | client URL N C CA_PEM [--proxy URL] [--resolve NAME=IP] [--bearer-file F]");
                2
            }
        }
    });
    std::process::exit(code);
}

async fn upstream(dir: &str, token_file: &str, h2: bool) -> i32 {
    let dir = std::path::Path::new(dir);
    let token = std::fs::read_to_string(token_file).expect("token file");
    let expected = format!("Bearer {}", token.trim_end());
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        // Distinct names: a client given both upstreams' CAs in one file
        // (mitmproxy's OpenSSL) looks an issuer up by its name.
        .push(
            rcgen::DnType::CommonName,
            if h2 {
                "bench upstream CA (h2)"
            } else {
                "bench upstream CA"
            },
        );
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("upstream-ca.pem"), ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["bench.test".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("port {}", listener.local_addr().unwrap().port());
    let expected = Arc::new(expected);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let ok = req
                    .headers()
                    .get("authorization")
                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                async move {
                    // read the whole request body (POST runs) before answering
                    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                    let mut resp = Response::new(Full::new(Bytes::from_static(
                        b"{\"ok\":true,\"payload\":\"0123456789abcdef0123456789abcdef\"}\n",
                    )));
                    if !ok {
                        *resp.status_mut() = StatusCode::UNAUTHORIZED;
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

async fn client(args: &[String]) -> i32 {
    let url = args[0].clone();
    let n: usize = args[1].parse().expect("requests");
    let c: usize = args[2].parse().expect("concurrency");
    let ca = std::fs::read(&args[3]).expect("ca pem");
    let http2 = args.iter().any(|a| a == "--http2");
    let builder = reqwest::Client::builder();
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    let mut builder = builder
        .pool_max_idle_per_host(c.max(1) * 2)
        .timeout(Duration::from_secs(30))
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("ca pem")]);
    let mut bearer = None;
    let mut body: Option<Bytes> = None;
    let mut i = 4;
    while i < args.len() {
        match args[i].as_str() {
            "--proxy" => {
                builder = builder.proxy(reqwest::Proxy::all(&args[i + 1]).expect("proxy url"));
            }
            "--resolve" => {
                let (name, ip) = args[i + 1].split_once('=').expect("NAME=IP");
                let port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(443);
                builder = builder.resolve(name, SocketAddr::new(ip.parse().expect("ip"), port));
            }
            "--bearer-file" => {
                let t = std::fs::read_to_string(&args[i + 1]).expect("bearer file");
                bearer = Some(format!("Bearer {}", t.trim_end()));
            }
            "--post-bytes" => {
                let n: usize = args[i + 1].parse().expect("post bytes");
                let text = include_str!("egress_load.rs").as_bytes();
                body = Some(Bytes::from(
                    text.iter().copied().cycle().take(n).collect::<Vec<u8>>(),
                ));
            }
            "--http2" => {
                i += 1;
                continue;
            }
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    let client = builder.build().expect("client");
    let body_len = body.as_ref().map_or(0, Bytes::len);
    let send = move |client: reqwest::Client, url: String, bearer: Option<String>| {
        let body = body.clone();
        async move {
            // Through a proxy the agent holds only a placeholder, which the
            // proxy must replace; the direct baseline sends the real token.
            let auth = bearer.as_deref().unwrap_or("Bearer agent-placeholder");
            let req = match body {
                Some(b) => client.post(&url).body(b),
                None => client.get(&url),
            }
            .header("authorization", auth);
            match req.send().await {
                Ok(r) => {
                    let ok = r.status() == StatusCode::OK;
                    let _ = r.bytes().await;
                    ok
                }
                Err(_) => false,
            }
        }
    };
    // Warm up: open the keep-alive connections.
    let warm: Vec<_> = (0..c.max(1) * 2)
        .map(|_| tokio::spawn(send(client.clone(), url.clone(), bearer.clone())))
        .collect();
    for w in warm {
        let _ = w.await;
    }
    let per = n / c.max(1);
    let start = Instant::now();
    let workers: Vec<_> = (0..c.max(1))
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let bearer = bearer.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let mut errors = 0usize;
                for _ in 0..per {
                    let t = Instant::now();
                    if send(client.clone(), url.clone(), bearer.clone()).await {
                        lat.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.await.expect("worker");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            0
        } else {
            all[((all.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    println!(
        "{{\"rps\":{:.1},\"mbps\":{:.2},\"p50_us\":{},\"p99_us\":{},\"ok\":{},\"errors\":{}}}",
        all.len() as f64 / elapsed,
        (all.len() * body_len) as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99),
        all.len(),
        errors
    );
    0
}
