//! A WebSocket handshake nonce (RFC 6455: 16 random bytes, base64) must never
//! read as a generic API key in any view of the request head (the
//! percent-decoded view turns its `+` into spaces), or handshakes fail at
//! random (about one in ten before the allowlist covered that view).

use base64::Engine;

#[test]
fn websocket_nonces_are_not_generic_secrets_in_any_view() {
    let det = bottle_dlp::Detector::new(vec![]);
    let mut blocked = Vec::new();
    for i in 0u32..3000 {
        let mut b = [0u8; 16];
        for (j, x) in b.iter_mut().enumerate() {
            *x = (i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(j as u32 * 40_503))
            .rotate_left(j as u32) as u8
                ^ (i >> 3) as u8;
        }
        let key = base64::engine::general_purpose::STANDARD.encode(b);
        let req = format!(
            "GET /ws HTTP/1.1\r\nhost: allowed.test:443\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n\r\n"
        );
        if let Some(f) = det.scan(req.as_bytes()) {
            blocked.push((key, f.rule));
        }
    }
    assert!(
        blocked.is_empty(),
        "{} nonces blocked, e.g. {:?}",
        blocked.len(),
        &blocked[..blocked.len().min(3)]
    );
    // The allowlist is that narrow: a real key in the same header is still caught.
    let req =
        "GET /ws HTTP/1.1\r\nsec-websocket-key: ghp_0123456789abcdefABCDEF0123456789abcd\r\n\r\n";
    assert!(det.scan(req.as_bytes()).is_some());
}
