//! Egress against the red team's findings (docs/security.md S4, S5, S10):
//! bodies past `max_body_scan`, reversible encodings, a value split across
//! headers, path parameters and double encoding, a plain-HTTP host spelling
//! a held value. A real loopback TLS upstream, the real proxy, h1 and h2
//! clients; each test asserts the client's answer, what the upstream got
//! and the audit line (rule named, value never written).

mod egress_support;

use base64::Engine as _;
use egress_support::*;

const ROUTES: &str = r#"
identity = "test-bottle"
max_body_scan = 4096
[[routes]]
host = "allowed.test"
port = {TLS}
paths = ["/v1/**"]
methods = ["GET", "POST"]
allow_private = true
auth = { scheme = "bearer", secret = "route-token" }
"#;

/// h1-only and h2 (ALPN) clients through the proxy.
fn clients(b: &Bottle) -> [(&'static str, reqwest::Client); 2] {
    [
        ("h1", b.client_builder().http1_only().build().unwrap()),
        ("h2", b.client()),
    ]
}

fn refused_as(text: &str, rule: &str) -> bool {
    text.contains(rule) && !text.contains(PROMPT_ANSWER)
}

#[tokio::test]
async fn bodies_past_max_body_scan_are_scanned_as_they_stream() {
    let b = Bottle::start(ROUTES).await;
    for (v, c) in clients(&b) {
        // Far past the 4 KiB prefix, in one buffer.
        let mut body = vec![b'a'; 64 << 10];
        body.extend_from_slice(format!("\np={PROMPT_ANSWER}\n").as_bytes());
        let r = c
            .post(b.url("allowed.test", &format!("/v1/far-{v}")))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{v}");
        assert!(refused_as(
            &r.text().await.unwrap(),
            "dlp:held:prompt-answer"
        ));
        // Split across two streamed chunks, both past the prefix, base64
        // encoded (a view, not the raw bytes).
        let enc = base64::engine::general_purpose::STANDARD.encode(PROMPT_ANSWER);
        let (x, y) = enc.split_at(enc.len() / 2);
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(vec![b'a'; 20 << 10]),
            Ok(format!("data={x}").into_bytes()),
            Ok(format!("{y}&z=1").into_bytes()),
            Ok(vec![b'b'; 10 << 10]),
        ];
        let r = c
            .post(b.url("allowed.test", &format!("/v1/split-{v}")))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{v}");
        assert!(refused_as(
            &r.text().await.unwrap(),
            "dlp:held:prompt-answer"
        ));
        // A large clean body still goes through whole.
        let clean: Vec<u8> = (0..(3 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
        let r = c
            .post(b.url("allowed.test", &format!("/v1/big-{v}")))
            .body(clean.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{v}");
        let seen = b.upstream.seen();
        let got = seen
            .iter()
            .find(|s| s.uri == format!("/v1/big-{v}"))
            .expect("big body reached the upstream");
        assert!(got.body == clean, "{v}: the clean body arrived altered");
    }
    assert!(!b.upstream.everything().contains(PROMPT_ANSWER));
    // The upstream may have got the head and clean bytes before the hit;
    // the request was aborted there, never completed.
    for s in b.upstream.seen() {
        if s.uri.starts_with("/v1/far") || s.uri.starts_with("/v1/split") {
            assert!(s.body.is_empty(), "{}: completed at the upstream", s.uri);
        }
    }
    for p in ["/v1/far-h1", "/v1/far-h2", "/v1/split-h1", "/v1/split-h2"] {
        b.expect_audit(p, |l| is(l, "deny", "dlp:held:prompt-answer", p))
            .await;
    }
    b.assert_audit_clean();
}

#[tokio::test]
async fn held_value_split_across_two_headers_is_refused() {
    let b = Bottle::start(ROUTES).await;
    let (x, y) = PROMPT_ANSWER.split_at(PROMPT_ANSWER.len() / 2);
    for (v, c) in clients(&b) {
        let r = c
            .get(b.url("allowed.test", &format!("/v1/hdr-{v}")))
            .header("x-part-a", x)
            .header("x-part-b", y)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{v}");
        assert!(refused_as(
            &r.text().await.unwrap(),
            "dlp:held:prompt-answer"
        ));
        // Each half alone is not a value.
        let r = c
            .get(b.url("allowed.test", &format!("/v1/half-{v}")))
            .header("x-part-a", x)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{v}");
    }
    assert!(b.upstream.seen().iter().all(|s| !s.uri.contains("hdr")));
    for p in ["/v1/hdr-h1", "/v1/hdr-h2"] {
        b.expect_audit(p, |l| is(l, "deny", "dlp:held:prompt-answer", p))
            .await;
    }
    b.assert_audit_clean();
}

#[tokio::test]
async fn path_parameters_and_double_encoding_cannot_leave_the_route() {
    let b = Bottle::start(ROUTES).await;
    let cases = [
        ("/v1/..;/admin", "path-unsafe"),
        ("/v1/%252e%252e/admin", "path-encoded"),
        ("/v1%2fadmin", "path-encoded"),
    ];
    for (path, rule) in cases {
        let raw = b.raw_get("allowed.test", path).await;
        assert!(raw.starts_with("HTTP/1.1 403"), "{path}: {raw}");
        b.expect_audit(path, |l| l["decision"] == "deny" && l["rule"] == rule)
            .await;
    }
    // A refused path that also spells a held value (encoded twice, with an
    // encoded slash after it) is recorded as the DLP hit, path redacted.
    let twice: String = ROUTE_TOKEN.bytes().map(|b| format!("%25{b:02x}")).collect();
    let raw = b
        .raw_get("allowed.test", &format!("/v1/{twice}%252f"))
        .await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    b.expect_audit("double-encoded secret path", |l| {
        l["rule"] == "dlp:held:route-token" && l["path"] == "[redacted:held:route-token]"
    })
    .await;
    // h2 (the client keeps these paths as they are).
    for path in ["/v1/..;/admin-h2", "/v1/%252e%252e/admin-h2"] {
        let r = b.get("allowed.test", path).await;
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 403, "{path}");
    }
    assert!(
        b.upstream.seen().is_empty(),
        "upstream got a refused request"
    );
    b.assert_audit_clean();
    // A single encoded dot inside a name is still fine.
    let r = b.get("allowed.test", "/v1/file%2ejson").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn plain_http_refusal_masks_a_host_spelling_a_held_value() {
    let b = Bottle::start(ROUTES).await;
    let hex = hex::encode(PROMPT_ANSWER);
    let r = b
        .client()
        .get(format!("http://{hex}.test/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let line = b
        .expect_audit("plain no-route", |l| {
            l["decision"] == "deny" && l["rule"] == "no-route"
        })
        .await;
    let host = line["host"].as_str().unwrap_or_default();
    assert!(host.starts_with("[redacted:held:prompt-answer"), "{host}");
    let log = std::fs::read_to_string(&b.audit).unwrap();
    assert!(
        !log.contains(&hex),
        "hex of the held value in the audit log"
    );
    b.assert_audit_clean();
}

/// RFC 4648 base32 (what `base32` on the command line writes).
fn base32(data: &[u8], pad: bool) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(A[((n >> (35 - 5 * i)) & 31) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Quoted-printable as a mail encoder writes it: `=XX` for `=`, and here
/// for every other non-alphanumeric byte too.
fn quoted_printable(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn reversible_encodings_of_a_held_value_are_refused() {
    let b = Bottle::start(ROUTES).await;
    let v = PROMPT_ANSWER;
    let b32 = base32(v.as_bytes(), true);
    let b32_nopad = base32(format!("xy{v}").as_bytes(), false);
    let mut mixhex = hex::encode(v);
    mixhex.replace_range(0..1, &mixhex[0..1].to_uppercase());
    let mixhex = mixhex.replacen('e', "E", 1);
    let dec: String = v.bytes().map(|b| format!("&#{b};")).collect();
    let hexent: String = v.bytes().map(|b| format!("&#x{b:X};")).collect();
    let rev: String = v.chars().rev().collect();
    let qp = format!(
        "--XYZ\r\nContent-Disposition: form-data; name=\"f\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n--XYZ--\r\n",
        quoted_printable(v)
    );
    let bodies = [
        ("b32", format!("x={b32}")),
        ("b32-nopad", format!("x={b32_nopad}")),
        ("mixhex", format!("x={mixhex}")),
        ("dec-entities", format!("x={dec}")),
        ("hex-entities", format!("<p>{hexent}</p>")),
        ("reversed", format!("x={rev}")),
        ("qp", qp),
    ];
    let dpct: String = v.bytes().map(|b| format!("%25{b:02x}")).collect();
    for (ver, c) in clients(&b) {
        for (name, body) in &bodies {
            let path = format!("/v1/enc-{name}-{ver}");
            let r = c
                .post(b.url("allowed.test", &path))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
            assert!(refused_as(
                &r.text().await.unwrap(),
                "dlp:held:prompt-answer"
            ));
            b.expect_audit(&path, |l| {
                l["decision"] == "deny"
                    && l["rule"] == "dlp:held:prompt-answer"
                    && l["path"] == path.as_str()
            })
            .await;
        }
        let r = c
            .get(b.url("allowed.test", &format!("/v1/{dpct}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{ver} double-percent");
    }
    assert!(
        b.upstream.seen().is_empty(),
        "upstream got a refused request"
    );
    let log = std::fs::read_to_string(&b.audit).unwrap();
    assert!(!log.contains(&rev) && !log.contains(&b32));
    b.assert_audit_clean();
}
