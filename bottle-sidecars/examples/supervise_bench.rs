//! Load generator for `cargo xtask bench supervise`: policy-change latency.
//!
//! Runs a real egress proxy, the supervise MCP server and a plain-HTTP
//! loopback upstream in one process. Each round: a GET through the proxy to a
//! fresh host is refused (403); the agent asks with `request_egress` over MCP
//! (rmcp streamable-HTTP client); the operator approves with
//! `supervise::queue::approve`; the client polls every 2 ms until the GET
//! passes (approve → allowed). Then the operator revokes (`queue::deny` on the
//! approved request) and the client polls until refused again (revoke →
//! refused). Prints a markdown table on stdout.
//!
//! Usage: `supervise_bench [rounds]` (default 30). Traffic stays on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bottle_sidecars::audit::AuditLog;
use bottle_sidecars::egress;
use bottle_sidecars::supervise::{self, queue, Narrowing};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

fn stats(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!(
        "| {name} | {} | {} | {} | {} |",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(*v.last().unwrap()),
        v.len()
    )
}

async fn poll(http: &reqwest::Client, url: &str, want: u16, since: Instant) -> Duration {
    loop {
        let code = http
            .get(url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if code == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{url}: never {want}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("bench-bottle");
    std::fs::create_dir_all(state.join("egress")).unwrap();
    std::fs::create_dir_all(state.join("secrets")).unwrap();
    std::fs::write(
        state.join("egress/routes.toml"),
        "identity = \"bench-bottle\"\n",
    )
    .unwrap();
    egress::ca::generate_ca(&state.join("ca")).unwrap();
    let key = queue::init(&state).unwrap();
    let sv = supervise::SvConfig {
        operator_key: Some(key),
        routes: Some(state.join("egress/routes.toml")),
        rate_limit: supervise::RateLimit {
            burst: 1000,
            refill: Duration::from_millis(1),
            max_pending: 1000,
        },
        ..Default::default()
    };
    sv.save(&supervise::sv_path(&state)).unwrap();
    let audit = AuditLog::open(&queue::audit_path(&state), "bench-bottle").unwrap();

    let up = upstream().await;
    let mut eopts = egress::Options::new(
        state.join("egress/routes.toml"),
        state.join("ca"),
        "127.0.0.1:0".parse().unwrap(),
    );
    eopts.secrets_dir = Some(state.join("secrets"));
    for i in 0..rounds {
        eopts
            .resolve_overrides
            .insert(format!("h{i}.bench.test"), Ipv4Addr::LOCALHOST.into());
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(egress::serve(eopts, audit.clone(), tx));
    let proxy = rx.await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sopts = supervise::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        config: supervise::sv_path(&state),
        queue: state.join("queue"),
        access_key: None,
    };
    tokio::spawn(supervise::serve(sopts, audit, tx));
    let mcp = rx.await.unwrap();

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://{mcp}/mcp")),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let (mut request, mut approve_call, mut to_allowed, mut to_refused) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let host = format!("h{i}.bench.test");
        let url = format!("http://{host}:{}/x", up.port());
        assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 403);
        let args = serde_json::json!({"host": format!("{host}:{}", up.port()), "reason": "bench"});
        let t = Instant::now();
        let result = client
            .call_tool(
                CallToolRequestParams::new("request_egress")
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .unwrap();
        request.push(t.elapsed());
        let text = &result.content[0].as_text().unwrap().text;
        let id = serde_json::from_str::<serde_json::Value>(text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let narrowing = Narrowing {
            allow_private: true,
            ..Default::default()
        };
        let t = Instant::now();
        queue::approve(&state, &id, Some(Duration::from_secs(3600)), &narrowing).unwrap();
        approve_call.push(t.elapsed());
        to_allowed.push(poll(&http, &url, 200, t).await);
        let t = Instant::now();
        queue::deny(&state, &id, Some("bench revoke")).unwrap();
        to_refused.push(poll(&http, &url, 403, t).await);
    }
    let _ = client.cancel().await;

    println!("| measurement (ms) | p50 | p90 | max | n |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        stats("`request_egress` MCP call (agent → queued)", request)
    );
    println!(
        "{}",
        stats(
            "`queue::approve` call (routes.toml + signed decision)",
            approve_call
        )
    );
    println!(
        "{}",
        stats(
            "**approve → next request allowed** through egress",
            to_allowed
        )
    );
    println!(
        "{}",
        stats(
            "revoke (`deny` of an approval) → next request refused",
            to_refused
        )
    );
}
