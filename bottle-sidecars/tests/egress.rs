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
plaintext = true
auth = { scheme = "x-api-key", secret = "route-token" }

[[routes]]
host = "internal.test"
port = {TLS}

[[routes]]
host = "127.0.0.1"
port = {TLS}
"#;

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
        let raw = b.raw_get("allowed.test", path).await;
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
    let r = b.get("allowed.test", "/x").await;
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
    let r = b.get("allowed.test", "/echo-secret").await;
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
    let r = b.get("allowed.test", "/v1/h2").await;
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
    let r = b.get("allowed.test", "/v1/after-hup").await;
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
    let denials = b
        .settled_audit(3, |l| l["rule"] == "access-credential")
        .await;
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
// ---- issue 13 item 1: credentials never travel in clear text ----

const CLEARTEXT: &str = r#"
identity = "test-bottle"
[[routes]]
host = "allowed.test"
port = {TLS}
paths = ["/v1/**"]
allow_private = true
auth = { scheme = "bearer", secret = "route-token" }

[[routes]]
host = "allowed.test"
port = {PLAIN}
paths = ["/v1/**"]
allow_private = true
auth = { scheme = "bearer", secret = "route-token" }

[[routes]]
host = "grant.test"
paths = ["/v1/**"]
allow_private = true
auth = { scheme = "x-api-key", secret = "route-token" }
"#;

#[tokio::test]
async fn credential_routes_refuse_plain_http_unless_marked_plaintext() {
    let b = Bottle::start(CLEARTEXT).await;
    let c = b.client();
    // Plain http to a route with auth (explicit port): refused before any
    // upstream connection, with a message naming the fix.
    let r = c
        .get(format!("http://allowed.test:{}/v1/clear", b.plain_port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("https://allowed.test") && body.contains("plaintext = true"),
        "{body}"
    );
    // A route without `port` matches plain http on :80: it never injects
    // either (refused before connecting; nothing listens on :80 here).
    let r = c
        .post("http://grant.test/v1/portless")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A plain WebSocket handshake (ws://) is refused the same way.
    let raw = b
        .raw(&format!(
            "GET http://allowed.test:{p}/v1/ws HTTP/1.1\r\nHost: allowed.test:{p}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            p = b.plain_port()
        ))
        .await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert_eq!(b.upstream.conns(), 0, "the proxy connected upstream");
    assert!(!b.upstream.everything().contains(ROUTE_TOKEN));
    let l = b
        .expect_audit("auth-needs-tls", |l| {
            is(l, "deny", "auth-needs-tls", "/v1/clear")
        })
        .await;
    assert_eq!(l["status"], 403);
    assert_eq!(l["port"], b.plain_port());
    b.expect_audit("portless auth-needs-tls", |l| {
        is(l, "deny", "auth-needs-tls", "/v1/portless") && l["port"] == 80
    })
    .await;

    // The same route over HTTPS through the bottle CA works, h2 and h1.
    for (client, version) in [
        (b.client(), reqwest::Version::HTTP_2),
        (
            b.client_builder().http1_only().build().unwrap(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let r = client
            .get(b.url("allowed.test", "/v1/tls"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
    }
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.uri, "/v1/tls");
        assert_eq!(
            s.headers.get("authorization").unwrap().as_bytes(),
            format!("Bearer {ROUTE_TOKEN}").as_bytes()
        );
    }

    // `plaintext = true` on the explicit-port route is the operator's opt-in.
    b.write_routes(&CLEARTEXT.replacen(
        "port = {PLAIN}\n",
        "port = {PLAIN}\nplaintext = true\n",
        1,
    ));
    let ok = poll_until(Duration::from_secs(3), || async {
        let r = c
            .get(format!("http://allowed.test:{}/v1/optin", b.plain_port()))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "plaintext = true route did not allow plain http"
    );
    let seen = b.upstream.seen();
    assert_eq!(seen.last().unwrap().uri, "/v1/optin");
    b.expect_audit("plaintext opt-in", |l| {
        is(l, "allow", "route:allowed.test", "/v1/optin")
    })
    .await;
    b.assert_audit_clean();
}

// ---- issue 13 item 6: a grant widens a host that already has a route ----

const WIDEN: &str = r#"
identity = "test-bottle"
[[routes]]
host = "allowed.test"
port = {TLS}
paths = ["/v1/a"]
methods = ["GET"]
allow_private = true
auth = { scheme = "bearer", secret = "route-token" }
"#;

/// The grant route `bottle approve` appends (see supervise's policy writer).
fn grant_b(expires_at: &str) -> String {
    format!(
        "{WIDEN}\n[[routes]]\nhost = \"allowed.test\"\nport = {{TLS}}\npaths = [\"/v1/b\"]\nmethods = [\"GET\", \"POST\"]\ngrant = \"req-20990101-b\"\nexpires_at = \"{expires_at}\"\n"
    )
}

#[tokio::test]
async fn grant_for_a_host_with_a_route_is_decided_over_every_route() {
    let b = Bottle::start(WIDEN).await;
    let h2 = b.client();
    let h1 = b.client_builder().http1_only().build().unwrap();
    for c in [&h2, &h1] {
        let r = c.get(b.url("allowed.test", "/v1/b")).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    b.expect_audit("before approval", |l| is(l, "deny", "path", "/v1/b"))
        .await;
    assert!(b.upstream.seen().is_empty());

    // Operator approves /v1/b.
    b.write_routes(&grant_b("2099-01-01T00:00:00Z"));
    let ok = poll_until(Duration::from_secs(3), || async {
        let r = h2.get(b.url("allowed.test", "/v1/b")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "approved grant still refused");
    for c in [&h2, &h1] {
        let r = c
            .post(b.url("allowed.test", "/v1/b"))
            .header("authorization", "Bearer agent-placeholder")
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = c.get(b.url("allowed.test", "/v1/a")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // Neither route allows /v1/c, and the route's method list still holds.
        let r = c.get(b.url("allowed.test", "/v1/c")).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let r = c.post(b.url("allowed.test", "/v1/a")).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    let seen = b.upstream.seen();
    let posts: Vec<_> = seen.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 2);
    for s in posts {
        assert_eq!(s.uri, "/v1/b");
        // The host's credential, never the agent's.
        let auths: Vec<_> = s.headers.get_all("authorization").iter().collect();
        assert_eq!(auths.len(), 1);
        assert_eq!(
            auths[0].as_bytes(),
            format!("Bearer {ROUTE_TOKEN}").as_bytes()
        );
    }
    assert!(!seen.iter().any(|s| s.uri == "/v1/c"));
    b.expect_audit("grant allow", |l| {
        is(l, "allow", "grant:req-20990101-b", "/v1/b") && l["method"] == "POST"
    })
    .await;
    b.expect_audit("route still allows /v1/a", |l| {
        is(l, "allow", "route:allowed.test", "/v1/a")
    })
    .await;
    b.expect_audit("method", |l| is(l, "deny", "method", "/v1/a"))
        .await;

    // The grant expires: /v1/b refused (naming the grant), /v1/a unaffected.
    b.write_routes(&grant_b("2001-01-01T00:00:00Z"));
    let refused = poll_until(Duration::from_secs(3), || async {
        let r = h2.get(b.url("allowed.test", "/v1/b")).send().await.ok()?;
        (r.status() == 403).then_some(())
    })
    .await;
    assert!(refused.is_some(), "expired grant still allowed");
    let before = b.upstream.seen().len();
    for c in [&h2, &h1] {
        let r = c.get(b.url("allowed.test", "/v1/b")).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("req-20990101-b"));
        let r = c.get(b.url("allowed.test", "/v1/a")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen = b.upstream.seen();
    assert_eq!(seen.len(), before + 2);
    assert!(seen[before..].iter().all(|s| s.uri == "/v1/a"));
    b.expect_audit("expired grant", |l| {
        is(l, "deny", "expired:req-20990101-b", "/v1/b")
    })
    .await;
    b.assert_audit_clean();
}

// ---- issue 13 item 2: encoded request bodies are decoded before scanning ----

fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        other => panic!("no encoder for {other}"),
    }
}

#[tokio::test]
async fn encoded_request_bodies_are_decoded_before_scanning() {
    let b = Bottle::start(BASIC).await;
    let secret_json = format!("{{\"note\":\"x\",\"p\":\"{PROMPT_ANSWER}\"}}");
    for (n, c) in [b.client(), b.client_builder().http1_only().build().unwrap()]
        .iter()
        .enumerate()
    {
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let path = format!("/v1/enc-{coding}-{n}");
            let r = c
                .post(b.url("allowed.test", &path))
                .header("content-encoding", coding)
                .body(encode(coding, secret_json.as_bytes()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{coding}");
            assert!(r.text().await.unwrap().contains("dlp:held:prompt-answer"));
            b.expect_audit(coding, |l| is(l, "deny", "dlp:held:prompt-answer", &path))
                .await;
        }
        // Stacked codings (gzip, then br) are undone in reverse order.
        let stacked = encode("br", &encode("gzip", secret_json.as_bytes()));
        let r = c
            .post(b.url("allowed.test", &format!("/v1/stacked-{n}")))
            .header("content-encoding", "gzip, br")
            .body(stacked)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // A coding the proxy cannot decode is refused, not passed.
        let r = c
            .post(b.url("allowed.test", &format!("/v1/unknown-{n}")))
            .header("content-encoding", "gzip, compress")
            .body(encode("gzip", b"whatever"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        assert!(r.text().await.unwrap().contains("`compress`"));
        // A decompression bomb (tiny on the wire, 8 MiB decoded) is refused.
        let bomb = encode("gzip", &vec![b'a'; 8 << 20]);
        assert!(bomb.len() < 64 << 10);
        let r = c
            .post(b.url("allowed.test", &format!("/v1/bomb-{n}")))
            .header("content-encoding", "gzip")
            .body(bomb)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert!(r.text().await.unwrap().contains("max_body_scan"));
        // A clean compressed body goes through unchanged.
        let clean = encode("gzip", b"{\"note\":\"nothing to see\"}");
        let r = c
            .post(b.url("allowed.test", &format!("/v1/clean-{n}")))
            .header("content-encoding", "gzip")
            .body(clean.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = b.upstream.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.uri, format!("/v1/clean-{n}"));
        assert_eq!(last.body, clean);
        assert_eq!(last.headers.get("content-encoding").unwrap(), "gzip");
    }
    // Nothing but the clean bodies reached the upstream.
    let uris: Vec<String> = b.upstream.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, vec!["/v1/clean-0", "/v1/clean-1"]);
    b.expect_audit("stacked", |l| {
        is(l, "deny", "dlp:held:prompt-answer", "/v1/stacked-0")
    })
    .await;
    b.expect_audit("unknown coding", |l| {
        is(l, "deny", "body-encoding", "/v1/unknown-1") && l["status"] == 415
    })
    .await;
    b.expect_audit("bomb", |l| {
        is(l, "deny", "decompression-limit", "/v1/bomb-0") && l["status"] == 413
    })
    .await;
    b.assert_audit_clean();
}

// ---- issue 13 item 3: WebSocket control frames and HTTP trailers ----

async fn open_ws(
    b: &Bottle,
) -> hudsucker::tokio_tungstenite::WebSocketStream<
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
> {
    let (s, head) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = rustls::pki_types::ServerName::try_from("allowed.test").unwrap();
    let tls = b.tls_client(&[b"http/1.1"]).connect(name, s).await.unwrap();
    let url = format!("wss://allowed.test:{}/ws", b.tls_port());
    let (ws, resp) = hudsucker::tokio_tungstenite::client_async(url, tls)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// Read until the connection ends: `Ok(close code)` (0 for a close without
/// one or a dropped connection), `Err(())` if it is still open after 5 s.
async fn close_code<S>(ws: &mut hudsucker::tokio_tungstenite::WebSocketStream<S>) -> Result<u16, ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return Ok(f.map_or(0, |f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return Ok(0),
            Err(_) => return Err(()),
        }
    }
}

#[tokio::test]
async fn websocket_control_frame_payloads_are_scanned() {
    use hudsucker::tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use hudsucker::tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let b = Bottle::start(BASIC).await;
    // Control: a clean Ping reaches the upstream.
    let mut ws = open_ws(&b).await;
    ws.send(Message::Ping(b"clean-ping".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::text("after-ping")).await.unwrap();
    let reply = loop {
        let m = ws.next().await.unwrap().unwrap();
        if !m.is_pong() {
            break m;
        }
    };
    assert_eq!(reply.to_text().unwrap(), "echo: after-ping");
    assert!(b
        .upstream
        .ws_seen
        .lock()
        .unwrap()
        .contains(&"ping:clean-ping".to_string()));

    let secret = PROMPT_ANSWER.as_bytes().to_vec();
    let cases: Vec<(&str, Message)> = vec![
        ("ping", Message::Ping(secret.clone().into())),
        ("pong", Message::Pong(secret.clone().into())),
        (
            "close",
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: PROMPT_ANSWER.into(),
            })),
        ),
    ];
    for (what, msg) in cases {
        let mut ws = open_ws(&b).await;
        ws.send(msg).await.unwrap();
        let code = close_code(&mut ws).await;
        if what == "close" {
            // The agent closed first: its stream only has to end.
            assert!(code.is_ok(), "{what}: connection left open");
        } else {
            assert_eq!(code, Ok(1008), "{what}");
        }
    }
    let n = b
        .settled_audit(3, |l| {
            l["decision"] == "deny"
                && l["rule"] == "dlp:held:prompt-answer"
                && l["method"] == "WEBSOCKET"
        })
        .await
        .len();
    assert_eq!(n, 3, "one audited refusal per control frame");
    let seen = b.upstream.ws_seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|m| m.contains(PROMPT_ANSWER)),
        "a control frame carried the secret upstream: {seen:?}"
    );
    b.assert_audit_clean();
}

/// Send POST `path` over h2 inside a tunnel with `data` then `trailers`.
async fn h2_post_with_trailers(
    b: &Bottle,
    path: &str,
    data: Vec<u8>,
    trailers: hyper::HeaderMap,
) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let (s, head) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = rustls::pki_types::ServerName::try_from("allowed.test").unwrap();
    let tls = b.tls_client(&[b"h2"]).connect(name, s).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let frames = vec![
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(data))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let req = hyper::Request::post(format!("https://allowed.test:{}{path}", b.tls_port()))
        .body(body)
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn request_trailers_are_scanned_or_dropped() {
    let b = Bottle::start(&BASIC.replace(
        "identity = \"test-bottle\"\n",
        "identity = \"test-bottle\"\nmax_body_scan = 4096\n",
    ))
    .await;
    let mut leak = hyper::HeaderMap::new();
    leak.insert("x-leak", PROMPT_ANSWER.parse().unwrap());
    // h2: a trailer with a held secret is refused.
    let (status, text) =
        h2_post_with_trailers(&b, "/v1/t-h2", b"hello".to_vec(), leak.clone()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("dlp:held:prompt-answer"));
    // h1 chunked with a trailer section.
    let raw = b
        .raw_tls(
            "allowed.test",
            b.tls_port(),
            &format!(
                "POST /v1/t-h1 HTTP/1.1\r\nHost: allowed.test:{}\r\nTransfer-Encoding: chunked\r\nTrailer: x-leak\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-leak: {PROMPT_ANSWER}\r\n\r\n",
                b.tls_port()
            ),
        )
        .await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    // A clean trailer still flows (so the refusals above are the scan).
    let mut ok = hyper::HeaderMap::new();
    ok.insert("x-checksum", "abc123".parse().unwrap());
    let (status, _) = h2_post_with_trailers(&b, "/v1/t-clean", b"hello".to_vec(), ok).await;
    assert_eq!(status, 200);
    // Trailers after the scanned prefix (body longer than max_body_scan)
    // cannot be scanned before the body is on its way: they are dropped.
    let (status, _) = h2_post_with_trailers(&b, "/v1/t-long", vec![b'a'; 16 << 10], leak).await;
    assert_eq!(status, 200);
    let seen = b.upstream.seen();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, vec!["/v1/t-clean", "/v1/t-long"]);
    assert_eq!(
        seen[0]
            .trailers
            .as_ref()
            .and_then(|t| t.get("x-checksum"))
            .map(|v| v.as_bytes()),
        Some(&b"abc123"[..])
    );
    assert!(seen[1]
        .trailers
        .as_ref()
        .is_none_or(|t| t.get("x-leak").is_none()));
    assert!(!b.upstream.everything().contains(PROMPT_ANSWER));
    b.expect_audit("h2 trailer", |l| {
        is(l, "deny", "dlp:held:prompt-answer", "/v1/t-h2")
    })
    .await;
    b.expect_audit("h1 trailer", |l| {
        is(l, "deny", "dlp:held:prompt-answer", "/v1/t-h1")
    })
    .await;
    b.assert_audit_clean();
}

// ---- issue 13 item 8: bounded connections and buffered bytes ----

#[tokio::test]
async fn connections_past_the_cap_get_503_and_are_audited() {
    let b = Bottle::start_with(BASIC, |o| o.max_connections = 2).await;
    let (t1, h1) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    let (_t2, h2) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(h1.starts_with("HTTP/1.1 200") && h2.starts_with("HTTP/1.1 200"));
    let raw = b
        .raw(&format!(
            "CONNECT allowed.test:{p} HTTP/1.1\r\nHost: allowed.test:{p}\r\n\r\n",
            p = b.tls_port()
        ))
        .await;
    assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(raw.contains("max_connections = 2"), "{raw}");
    b.expect_audit("conn-limit", |l| {
        l["decision"] == "deny" && l["rule"] == "conn-limit" && l["status"] == 503
    })
    .await;
    // Closing a tunnel frees its slot.
    drop(t1);
    let ok = poll_until(Duration::from_secs(5), || async {
        let (_s, head) = b
            .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
            .await;
        head.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(ok.is_some(), "slot not released after the tunnel closed");
}

#[tokio::test]
async fn buffered_body_bytes_past_the_budget_get_503() {
    let b = Bottle::start_with(BASIC, |o| o.max_buffered_bytes = 64 << 10).await;
    // Request 1: declares 200 KiB, sends 60 KiB and stalls (the proxy holds
    // what it read for scanning).
    let (s, head) = b
        .connect_tunnel(&format!("allowed.test:{}", b.tls_port()))
        .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = rustls::pki_types::ServerName::try_from("allowed.test").unwrap();
    let mut slow = b.tls_client(&[b"http/1.1"]).connect(name, s).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/slow HTTP/1.1\r\nHost: allowed.test:{}\r\nContent-Length: {}\r\n\r\n",
            b.tls_port(),
            200 << 10
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    slow.write_all(&vec![b'a'; 60 << 10]).await.unwrap();
    slow.flush().await.unwrap();
    // Request 2 (10 KiB) does not fit next to it.
    let c = b.client();
    let refused = poll_until(Duration::from_secs(5), || async {
        let r = c
            .post(b.url("allowed.test", "/v1/second"))
            .body(vec![b'b'; 10 << 10])
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(r.text().await.ok()?)
    })
    .await;
    let text = refused.expect("second body was not refused while the budget was used");
    assert!(text.contains("retry"), "{text}");
    b.expect_audit("buffer-limit", |l| {
        is(l, "deny", "buffer-limit", "/v1/second") && l["status"] == 503
    })
    .await;
    assert!(b.upstream.seen().iter().all(|s| s.uri != "/v1/second"));
    // The stalled request ends: its budget comes back.
    drop(slow);
    let ok = poll_until(Duration::from_secs(5), || async {
        let r = c
            .post(b.url("allowed.test", "/v1/second"))
            .body(vec![b'b'; 10 << 10])
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "budget not released");
}
