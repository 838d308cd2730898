//! Egress proxy end-to-end: a real loopback TLS upstream, the real proxy, a
//! real HTTP client that trusts only the bottle CA. Every test asserts what
//! the client saw, what the upstream received (or that it received nothing)
//! and the audit line.

mod egress_support;

use std::time::Duration;

use base64::Engine as _;
use egress_support::*;
use futures::{SinkExt as _, StreamExt as _};
use hudsucker::tokio_tungstenite::tungstenite::Message;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BASIC: &str = r#"
identity = "test-bottle"
[[routes]]
host = "allowed.test"
port = {TLS}
paths = ["/v1/**", "/echo-secret", "/chunked-secret", "/gzip-secret", "/ws"]
methods = ["GET", "POST"]
allow_private = true
auth = { scheme = "bearer", secret = "route-token" }

[[routes]]
host = "allowed.test"
port = {PLAIN}
paths = ["/v1/**"]
allow_private = true
auth = { scheme = "x-api-key", secret = "route-token" }

[[routes]]
host = "internal.test"
port = {TLS}

[[routes]]
host = "127.0.0.1"
port = {TLS}
"#;

fn is(line: &serde_json::Value, decision: &str, rule: &str, path: &str) -> bool {
    line["decision"] == decision && line["rule"] == rule && line["path"] == path
}

#[tokio::test]
async fn allowed_route_injects_credential_and_drops_agent_auth() {
    let b = Bottle::start(BASIC).await;
    // The agent's placeholder looks like a provider key: it is dropped, so it
    // is neither forwarded nor a DLP hit.
    let resp = b
        .client()
        .get(b.url("allowed.test", "/v1/things?q=1"))
        .header(
            "authorization",
            "Bearer sk-ant-api03-placeholder-not-a-real-key",
        )
        .header("cookie", "session=agent")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().starts_with("ok /v1/things"));
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/v1/things?q=1");
    let auths: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auths.len(), 1);
    assert_eq!(
        auths[0].as_bytes(),
        format!("Bearer {ROUTE_TOKEN}").as_bytes()
    );
    assert!(seen[0].headers.get("cookie").is_none());
    assert!(seen[0].headers.get("proxy-authorization").is_none());
    let line = b
        .expect_audit("allowed GET", |l| {
            is(l, "allow", "route:allowed.test", "/v1/things")
        })
        .await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "allowed.test");
    assert_eq!(line["status"], 200);
    assert_eq!(line["identity"], "test-bottle");
    assert!(line["bytes"].as_u64().unwrap() > 0);
    assert!(line["ms"].is_u64());
    b.expect_audit("CONNECT allow", |l| {
        l["method"] == "CONNECT" && l["decision"] == "allow"
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn unlisted_host_and_other_port_refused_at_connect_before_tls() {
    let b = Bottle::start(BASIC).await;
    let (_s, head) = b
        .connect_tunnel(&format!("other.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // The client library sees a failure too.
    assert!(b
        .client()
        .get(b.url("other.test", "/v1/x"))
        .send()
        .await
        .is_err());
    // Body names the host and the supervise tool.
    let raw = b
        .raw(&format!(
            "CONNECT other.test:{p} HTTP/1.1\r\nHost: other.test:{p}\r\nConnection: close\r\n\r\n",
            p = b.tls_port()
        ))
        .await;
    assert!(
        raw.contains("other.test") && raw.contains("request_egress"),
        "{raw}"
    );
    // An allowed host on another port.
    let (_s, head) = b.connect_tunnel("allowed.test:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // The allowed host's address as an IPv6 literal (routes name hosts, not IPs).
    let (_s, head) = b.connect_tunnel(&format!("[::1]:{}", b.tls_port())).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(b.upstream.conns(), 0, "upstream must never be contacted");
    let l = b
        .expect_audit("no-route", |l| {
            l["rule"] == "no-route" && l["host"] == "other.test"
        })
        .await;
    assert_eq!(l["decision"], "deny");
    assert_eq!(l["method"], "CONNECT");
    assert_eq!(l["status"], 403);
    b.expect_audit("port", |l| l["rule"] == "port" && l["port"] == 443)
        .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn path_and_method_outside_route_refused() {
    let b = Bottle::start(BASIC).await;
    let c = b.client();
    let r = c.get(b.url("allowed.test", "/admin")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .delete(b.url("allowed.test", "/v1/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Dot segments (raw: client libraries would normalise them away).
    for path in ["/v1/%2e%2e/admin", "/v1/../admin", "/v1/..%2fadmin"] {
        let raw = b
            .raw_tls(
                "allowed.test",
                b.tls_port(),
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: allowed.test:{}\r\nConnection: close\r\n\r\n",
                    b.tls_port()
                ),
            )
            .await;
        assert!(raw.starts_with("HTTP/1.1 403"), "{path}: {raw}");
    }
    assert!(
        b.upstream.seen().is_empty(),
        "upstream got a refused request"
    );
    b.expect_audit("path", |l| is(l, "deny", "path", "/admin"))
        .await;
    b.expect_audit("method", |l| {
        is(l, "deny", "method", "/v1/x") && l["method"] == "DELETE"
    })
    .await;
    b.expect_audit("dot segments", |l| l["rule"] == "path-unsafe")
        .await;
    // The route still works.
    let r = c.get(b.url("allowed.test", "/v1/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    b.assert_audit_clean();
}

#[tokio::test]
async fn held_secrets_blocked_in_every_position_and_encoding() {
    let b = Bottle::start(BASIC).await;
    let c = b.client();
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("{{\"t\":\"{ROUTE_TOKEN}\"}}"));
    let b64url =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("xx{PROMPT_ANSWER}"));
    let urlenc: String = PROMPT_ANSWER.bytes().map(|b| format!("%{b:02X}")).collect();
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        (
            "query",
            c.get(b.url("allowed.test", &format!("/v1/a?k={ROUTE_TOKEN}"))),
            "dlp:held:route-token",
        ),
        (
            "header",
            c.get(b.url("allowed.test", "/v1/b"))
                .header("x-leak", PROMPT_ANSWER),
            "dlp:held:prompt-answer",
        ),
        (
            "json body",
            c.post(b.url("allowed.test", "/v1/c"))
                .header("content-type", "application/json")
                .body(format!("{{\"note\":\"{PROMPT_ANSWER}\"}}")),
            "dlp:held:prompt-answer",
        ),
        (
            "base64 body",
            c.post(b.url("allowed.test", "/v1/d")).body(b64),
            "dlp:held:route-token",
        ),
        (
            "base64url query",
            c.get(b.url("allowed.test", &format!("/v1/e?d={b64url}"))),
            "dlp:held:prompt-answer",
        ),
        (
            "url-encoded query",
            c.get(b.url("allowed.test", &format!("/v1/f?d={urlenc}"))),
            "dlp:held:prompt-answer",
        ),
        (
            "private key in body",
            c.post(b.url("allowed.test", "/v1/g"))
                .body("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"),
            "dlp:pattern:private-key",
        ),
        (
            "secret in path",
            c.get(b.url("allowed.test", &format!("/v1/{ROUTE_TOKEN}"))),
            "dlp:held:route-token",
        ),
    ];
    for (what, req, rule) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        let body = r.text().await.unwrap();
        assert!(body.contains(rule), "{what}: {body}");
        b.expect_audit(what, |l| l["decision"] == "deny" && l["rule"] == rule)
            .await;
    }
    assert!(
        b.upstream.seen().is_empty(),
        "a blocked request reached upstream"
    );
    assert!(!b.upstream.everything().contains(ROUTE_TOKEN));
    b.assert_audit_clean();
    let text = std::fs::read_to_string(&b.audit).unwrap();
    assert!(!text.contains(&urlenc) && !text.contains("b3BlbnNzaC1rZXktdjEAAAAA"));
}

#[tokio::test]
async fn private_and_loopback_addresses_refused_without_allow_private() {
    let b = Bottle::start(BASIC).await;
    // internal.test resolves (via the test map) to 127.0.0.1; its route has
    // no allow_private: refused at CONNECT, before any connection.
    let (_s, head) = b
        .connect_tunnel(&format!("internal.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // IP literal route without allow_private.
    let (_s, head) = b
        .connect_tunnel(&format!("127.0.0.1:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(
        b.upstream.conns(),
        0,
        "proxy connected to a private address"
    );
    b.expect_audit("ssrf", |l| {
        l["rule"] == "ssrf-private" && l["host"] == "internal.test"
    })
    .await;
    b.expect_audit("ssrf literal", |l| {
        l["rule"] == "ssrf-private" && l["host"] == "127.0.0.1"
    })
    .await;
    // The same name with allow_private = true does connect.
    b.write_routes(&BASIC.replace(
        "host = \"internal.test\"\nport = {TLS}\n",
        "host = \"internal.test\"\nport = {TLS}\nallow_private = true\npaths = [\"/v1/**\"]\n",
    ));
    let c = b.client();
    let ok = poll_until(Duration::from_secs(2), || async {
        let r = c.get(b.url("internal.test", "/v1/in")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "allow_private route did not work after reload"
    );
    assert!(b.upstream.conns() > 0);
    b.assert_audit_clean();
}

#[tokio::test]
async fn plain_http_absolute_form_follows_the_same_rules() {
    let b = Bottle::start(BASIC).await;
    let c = b.client();
    let url = format!("http://allowed.test:{}/v1/plain?q=1", b.plain_port());
    let r = c
        .get(&url)
        .header("x-api-key", "agent-guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("x-api-key").unwrap().as_bytes(),
        ROUTE_TOKEN.as_bytes()
    );
    b.expect_audit("plain allow", |l| {
        is(l, "allow", "route:allowed.test", "/v1/plain")
    })
    .await;
    // HTTP/1.0 absolute-form with a different Host header.
    let raw = b
        .raw(&format!(
            "GET http://allowed.test:{}/v1/x HTTP/1.0\r\nHost: other.test\r\n\r\n",
            b.plain_port()
        ))
        .await;
    assert!(
        raw.starts_with("HTTP/1.0 403") || raw.starts_with("HTTP/1.1 403"),
        "{raw}"
    );
    // Unlisted host over plain http.
    let r = c
        .get(format!("http://other.test:{}/v1/x", b.plain_port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A name whose route lacks allow_private, over plain http: refused by the
    // connector after resolving, without connecting.
    b.write_routes(&format!(
        "{BASIC}\n[[routes]]\nhost = \"grant.test\"\nport = {{PLAIN}}\n"
    ));
    let before = b.upstream.conns();
    let refused = poll_until(Duration::from_secs(2), || async {
        let r = c
            .get(format!("http://grant.test:{}/x", b.plain_port()))
            .send()
            .await
            .ok()?;
        (r.status() == 403 && r.text().await.ok()?.contains("loopback")).then_some(())
    })
    .await;
    assert!(refused.is_some());
    assert_eq!(b.upstream.conns(), before);
    assert_eq!(b.upstream.seen().len(), 1);
    b.expect_audit("host mismatch", |l| l["rule"] == "host-mismatch")
        .await;
    b.expect_audit("plain no-route", |l| {
        l["rule"] == "no-route" && l["host"] == "other.test"
    })
    .await;
    b.expect_audit("plain ssrf", |l| {
        l["rule"] == "ssrf-private" && l["host"] == "grant.test"
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn host_and_sni_must_match_the_connect_host() {
    let b = Bottle::start(BASIC).await;
    // Host header naming another host inside an allowed tunnel.
    let r = b
        .client()
        .get(b.url("allowed.test", "/v1/x"))
        .header("host", format!("other.test:{}", b.tls_port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    b.expect_audit("host-mismatch", |l| l["rule"] == "host-mismatch")
        .await;
    // SNI naming another host: handshake refused.
    let (s, head) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = rustls::pki_types::ServerName::try_from("other.test").unwrap();
    let res = b.tls_client(&[b"http/1.1"]).connect(name, s).await;
    assert!(res.is_err(), "TLS with a mismatched SNI must fail");
    b.expect_audit("sni-mismatch", |l| l["rule"] == "sni-mismatch")
        .await;
    // Raw TCP (not TLS) inside a tunnel goes nowhere.
    let (mut s, head) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 200"));
    s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n\r\n\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("ok"),
        "raw bytes reached upstream"
    );
    b.expect_audit("tunnel-not-tls", |l| l["rule"] == "tunnel-not-tls")
        .await;
    assert!(b.upstream.seen().is_empty());
    assert_eq!(b.upstream.conns(), 0);
    b.assert_audit_clean();
}

#[tokio::test]
async fn routes_file_change_applies_to_next_request_on_the_same_connection() {
    let b = Bottle::start(BASIC).await;
    let c = b
        .client_builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let r = c
        .get(b.url("allowed.test", "/v2/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let conns_before = b.upstream.conns();
    b.write_routes(&BASIC.replace(
        "\"/v1/**\", \"/echo-secret\"",
        "\"/v1/**\", \"/v2/**\", \"/echo-secret\"",
    ));
    let ok = poll_until(Duration::from_secs(2), || async {
        let r = c.get(b.url("allowed.test", "/v2/new")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "new rule not applied within 2 s");
    b.expect_audit("reload ok", |l| {
        l["event"] == "reload" && l["decision"] == "ok"
    })
    .await;
    b.expect_audit("allow v2", |l| {
        is(l, "allow", "route:allowed.test", "/v2/new")
    })
    .await;

    // A broken file keeps the previous policy (never widens, never narrows to nothing).
    let reloads = b
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "reload")
        .count();
    std::fs::write(b.routes.with_extension("tmp"), "[[routes]\nhost = \"*\"\n").unwrap();
    std::fs::rename(b.routes.with_extension("tmp"), &b.routes).unwrap();
    b.expect_audit("reload failed", |l| l["rule"] == "reload-failed")
        .await;
    assert!(
        b.audit_lines()
            .iter()
            .filter(|l| l["event"] == "reload")
            .count()
            > reloads
    );
    let r = c
        .get(b.url("allowed.test", "/v2/still"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(b.url("allowed.test", "/admin")).send().await.unwrap();
    assert_eq!(r.status(), 403);

    // Narrowing applies too: remove /v2 again.
    b.write_routes(BASIC);
    let denied = poll_until(Duration::from_secs(2), || async {
        let r = c
            .get(b.url("allowed.test", "/v2/again"))
            .send()
            .await
            .ok()?;
        (r.status() == 403).then_some(())
    })
    .await;
    assert!(denied.is_some());
    // Still the same upstream connection (the tunnel was not dropped).
    assert_eq!(b.upstream.conns(), conns_before.max(1));
    b.assert_audit_clean();
}

#[tokio::test]
async fn expired_grant_is_refused_and_live_grant_allowed() {
    let routes = r#"
[[routes]]
host = "grant.test"
port = {TLS}
allow_private = true
grant = "req-20010101-old"
expires_at = "2001-01-01T00:00:00Z"

[[routes]]
host = "allowed.test"
port = {TLS}
allow_private = true
grant = "req-20990101-new"
expires_at = "2099-01-01T00:00:00Z"
"#;
    let b = Bottle::start(routes).await;
    let (_s, head) = b
        .connect_tunnel(&format!("grant.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(b.upstream.conns(), 0);
    b.expect_audit("expired", |l| {
        l["decision"] == "deny" && l["rule"] == "expired:req-20010101-old"
    })
    .await;
    let r = b
        .client()
        .get(b.url("allowed.test", "/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.expect_audit("grant allow", |l| {
        is(l, "allow", "grant:req-20990101-new", "/x")
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn responses_carrying_held_secrets_are_masked() {
    let b = Bottle::start(BASIC).await;
    let r = b
        .client()
        .get(b.url("allowed.test", "/echo-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(ROUTE_TOKEN) && !text.contains(PROMPT_ANSWER),
        "{text}"
    );
    assert!(
        text.starts_with("the route token is ***") && text.ends_with(". bye"),
        "{text}"
    );
    assert_eq!(
        text.len(),
        format!("the route token is {ROUTE_TOKEN} and the answer is {PROMPT_ANSWER}. bye").len()
    );
    b.expect_audit("masked response", |l| {
        is(l, "allow", "route:allowed.test", "/echo-secret")
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn secrets_split_across_streamed_frames_are_masked() {
    let b = Bottle::start(BASIC).await;
    for client in [b.client(), b.client_builder().http1_only().build().unwrap()] {
        let r = client
            .get(b.url("allowed.test", "/chunked-secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let stars = "*".repeat(ROUTE_TOKEN.len());
        assert_eq!(text, format!("start {stars} middle {stars} end"));
    }
    b.expect_audit("chunked", |l| {
        is(l, "allow", "route:allowed.test", "/chunked-secret")
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn compressed_responses_are_decoded_then_masked() {
    let b = Bottle::start(BASIC).await;
    let r = b
        .client()
        .get(b.url("allowed.test", "/gzip-secret"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    let text = r.text().await.unwrap();
    assert_eq!(text, format!("gz {} gz", "*".repeat(ROUTE_TOKEN.len())));
    // The proxy asked upstream for identity encoding.
    let seen = b.upstream.seen();
    assert!(seen[0].headers.get("accept-encoding").is_none());
    b.expect_audit("gzip", |l| {
        is(l, "allow", "route:allowed.test", "/gzip-secret")
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn http2_end_to_end() {
    let b = Bottle::start(BASIC).await;
    let r = b
        .client()
        .get(b.url("allowed.test", "/v1/h2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "client↔proxy should negotiate h2"
    );
    let seen = b.upstream.seen();
    assert_eq!(
        seen[0].version,
        hyper::Version::HTTP_2,
        "proxy↔upstream should negotiate h2"
    );
    assert_eq!(
        seen[0].headers.get("authorization").unwrap().as_bytes(),
        format!("Bearer {ROUTE_TOKEN}").as_bytes()
    );
    // Many concurrent streams on one connection.
    let c = b.client();
    let futs = (0..20).map(|i| {
        let c = c.clone();
        let url = b.url("allowed.test", &format!("/v1/s{i}"));
        async move { c.get(url).send().await.unwrap().status() }
    });
    for s in futures::future::join_all(futs).await {
        assert_eq!(s, 200);
    }
    b.expect_audit("h2 allow", |l| {
        is(l, "allow", "route:allowed.test", "/v1/h2")
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn websocket_upgrade_on_allowed_route() {
    let b = Bottle::start(BASIC).await;
    let (s, head) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = rustls::pki_types::ServerName::try_from("allowed.test").unwrap();
    let tls = b.tls_client(&[b"http/1.1"]).connect(name, s).await.unwrap();
    let url = format!("wss://allowed.test:{}/ws", b.tls_port());
    let (mut ws, resp) = hudsucker::tokio_tungstenite::client_async(url, tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.to_text().unwrap(), "echo: hello");
    // Upstream→agent messages are masked.
    ws.send(Message::text("say-secret")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let text = reply.to_text().unwrap().to_owned();
    assert!(
        text.starts_with("secret: ***") && !text.contains(ROUTE_TOKEN),
        "{text}"
    );
    // Agent→upstream message with a held secret: connection closed (1008).
    ws.send(Message::text(format!("leak {PROMPT_ANSWER}")))
        .await
        .unwrap();
    let mut closed_by_policy = false;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(Some(f)) = m {
            closed_by_policy = u16::from(f.code) == 1008;
            break;
        }
    }
    assert!(closed_by_policy, "expected a 1008 close");
    assert_eq!(
        *b.upstream.ws_seen.lock().unwrap(),
        vec!["hello".to_string(), "say-secret".to_string()]
    );
    // The upstream saw the injected credential on the handshake.
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/ws");
    assert_eq!(
        seen[0].headers.get("authorization").unwrap().as_bytes(),
        format!("Bearer {ROUTE_TOKEN}").as_bytes()
    );
    b.expect_audit("ws allow", |l| {
        is(l, "allow", "route:allowed.test", "/ws") && l["status"] == 101
    })
    .await;
    b.expect_audit("ws dlp", |l| {
        l["rule"] == "dlp:held:prompt-answer" && l["method"] == "WEBSOCKET"
    })
    .await;
    b.assert_audit_clean();
}

#[tokio::test]
async fn sighup_reloads_the_policy() {
    let b = Bottle::start(BASIC).await;
    // SIGHUP alone (no file change) triggers a reload, audited with its trigger.
    // SAFETY: kill(2) on our own pid; the proxy registered a SIGHUP handler
    // before it reported ready.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    assert_eq!(rc, 0);
    b.expect_audit("sighup reload", |l| {
        l["event"] == "reload" && l["trigger"] == "sighup" && l["decision"] == "ok"
    })
    .await;
    let r = b
        .client()
        .get(b.url("allowed.test", "/v1/after-hup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn ip_literal_route_gets_an_ip_leaf_certificate() {
    let b = Bottle::start(
        "[[routes]]\nhost = \"127.0.0.1\"\nport = {TLS}\nallow_private = true\npaths = [\"/v1/**\"]\n",
    )
    .await;
    let url = format!("https://127.0.0.1:{}/v1/ip", b.tls_port());
    let r = b.client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(b.upstream.seen()[0].uri, "/v1/ip");
    b.expect_audit("ip allow", |l| is(l, "allow", "route:127.0.0.1", "/v1/ip"))
        .await;
}

#[tokio::test]
async fn only_the_holder_of_the_access_credential_uses_the_proxy() {
    let key = bottle_sidecars::access::AccessKey::generate();
    let other = bottle_sidecars::access::AccessKey::generate();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("access-key");
    std::fs::write(&key_file, key.expose()).unwrap();
    let b = Bottle::start_with(BASIC, |o| o.access_key = Some(key_file)).await;
    let basic = |k: &str| base64::engine::general_purpose::STANDARD.encode(format!("bottle:{k}"));
    let authority = format!("allowed.test:{}", b.tls_port());

    // Anyone else on the host: CONNECT without, or with a wrong, credential.
    let (_, head) = b.connect_tunnel(&authority).await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{head}"
    );
    let resp = b
        .raw(&format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {}\r\n\r\n",
            basic(other.expose())
        ))
        .await;
    assert!(resp.starts_with("HTTP/1.1 407"), "{resp}");
    // A plain-HTTP proxy request without it.
    let resp = b
        .raw(&format!(
            "GET http://allowed.test:{}/v1/x HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
            b.plain_port()
        ))
        .await;
    assert!(resp.starts_with("HTTP/1.1 407"), "{resp}");
    assert!(resp.contains("access denied"), "{resp}");
    let denials: Vec<_> = b
        .audit_lines()
        .into_iter()
        .filter(|l| l["rule"] == "access-credential")
        .collect();
    assert_eq!(denials.len(), 3, "{denials:?}");
    assert!(denials
        .iter()
        .all(|l| l["decision"] == "deny" && l["status"] == 407));
    assert!(
        b.upstream.seen().is_empty(),
        "a refused client reached upstream"
    );

    // The agent: its proxy URL carries the credential.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://bottle:{}@{}", key.expose(), b.proxy)).unwrap())
        .tls_certs_only([reqwest::Certificate::from_pem(&b.ca_pem).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client
        .get(b.url("allowed.test", "/v1/things"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("proxy-authorization").is_none());
    let audit = std::fs::read_to_string(&b.audit).unwrap();
    assert!(!audit.contains(key.expose()) && !audit.contains(other.expose()));
    b.assert_audit_clean();
}
