//! Issue 13 item 9: a finding names the rule that matched what was sent.
//!
//! A held hit (`held:<name>`) only when the held value itself (or an
//! encoding of it, or one of its secret lines) is present; any other
//! private key is a pattern hit. Before the fix, the PEM armour line
//! `-----BEGIN OPENSSH PRIVATE KEY-----` and the fixed first body line of
//! every OpenSSH key were held fragments of the deploy key, so ANY OpenSSH
//! private key in a request was recorded as a leak of the deploy key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bottle_dlp::Detector;

/// The first body line of every unencrypted ed25519 OpenSSH key: the
/// format's fixed header (`openssh-key-v1`, cipher/kdf `none`, one key,
/// `ssh-ed25519`), identical for every key of the type.
const FIXED_FIRST_LINE: &str =
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";

/// A key-shaped text: armour, the fixed first line, then `seed`-specific
/// base64 lines (not a usable key; the detector only sees text).
fn openssh_key(seed: u8) -> String {
    let mut body = String::new();
    for line in 0..4u8 {
        let bytes: Vec<u8> = (0..52u8)
            .map(|i| {
                i.wrapping_mul(31)
                    .wrapping_add(seed.wrapping_mul(97))
                    .wrapping_add(line * 13)
            })
            .collect();
        body.push_str(&STANDARD.encode(bytes));
        body.push('\n');
    }
    format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{FIXED_FIRST_LINE}\n{body}-----END OPENSSH PRIVATE KEY-----\n"
    )
}

fn deploy_key_detector() -> Detector {
    Detector::from_held_bytes(vec![("git-origin.key".into(), openssh_key(1).into_bytes())])
}

fn rule(d: &Detector, data: &str) -> Option<String> {
    d.scan(data.as_bytes()).map(|f| f.rule)
}

#[test]
fn another_private_key_is_a_pattern_hit_not_the_deploy_key() {
    let d = deploy_key_detector();
    let other = openssh_key(2);
    assert_ne!(other, openssh_key(1));
    assert_eq!(
        rule(
            &d,
            &format!("{{\"file\":\"{}\"}}", other.replace('\n', "\\n"))
        )
        .as_deref(),
        Some("pattern:private-key")
    );
    assert_eq!(rule(&d, &other).as_deref(), Some("pattern:private-key"));
    assert_eq!(
        rule(&d, "-----BEGIN OPENSSH PRIVATE KEY-----").as_deref(),
        Some("pattern:private-key")
    );
    // Base64 of another key: still the pattern, not the held key.
    assert_eq!(
        rule(&d, &format!("data={}", STANDARD.encode(&other))).as_deref(),
        Some("pattern:private-key")
    );
}

#[test]
fn the_deploy_key_itself_is_a_held_hit() {
    let d = deploy_key_detector();
    let key = openssh_key(1);
    assert_eq!(rule(&d, &key).as_deref(), Some("held:git-origin.key"));
    assert_eq!(
        rule(&d, &format!("data={}", STANDARD.encode(&key))).as_deref(),
        Some("held:git-origin.key")
    );
    // One secret line of it, without the armour.
    let secret_line = key.lines().nth(3).unwrap();
    assert_eq!(
        rule(&d, &format!("x={secret_line}")).as_deref(),
        Some("held:git-origin.key")
    );
}

#[test]
fn the_fixed_openssh_header_line_alone_is_not_a_held_hit() {
    let d = deploy_key_detector();
    assert_ne!(
        rule(&d, &format!("blob {FIXED_FIRST_LINE} end")).as_deref(),
        Some("held:git-origin.key")
    );
}
