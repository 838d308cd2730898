//! Issue 13 item 4: base64 decoding keeps the final partial group.
//!
//! A credential (held or pattern-shaped) base64-encoded at the END of a
//! blob, with or without `=` padding, at every byte alignment and for every
//! length mod 3, is found. Before the fix the decoder dropped the last
//! partial 4-character group, so a `ghp_` token whose encoding ended in
//! `=`/`==` lost its last byte and no longer matched.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bottle_dlp::Detector;
use proptest::prelude::*;

fn engine(i: usize) -> &'static base64::engine::GeneralPurpose {
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD][i]
}

/// Bytes placed before/after the credential: never word characters, so
/// `\b` in a rule behaves as it would around a credential in a JSON value.
fn filler() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(b"{}\" :,\n\t[]".to_vec()), 0..6)
}

fn alnum(n: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".to_vec(),
        ),
        n,
    )
    .prop_map(|v| String::from_utf8(v).unwrap())
}

fn encode(engine_ix: usize, prefix: &[u8], value: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut payload = prefix.to_vec();
    payload.extend_from_slice(value);
    payload.extend_from_slice(suffix);
    engine(engine_ix).encode(&payload).into_bytes()
}

/// Every alignment (prefix length mod 3) and every value length mod 3 is
/// exercised explicitly, not left to chance.
#[test]
fn pattern_at_end_of_base64_every_alignment_and_length() {
    let det = Detector::new(Vec::new());
    let token_body: String = "U8JZpDE0iGXlD6gNCFbaEPFjbD0kH8Oool8Dq7x".into();
    for extra in 0..3 {
        // ghp_ + 36..=38 characters: total lengths 40, 41, 42 (every mod 3).
        let token = format!("ghp_{}", &token_body[..36 + extra]);
        for prefix in 0..3 {
            for e in 0..4 {
                let blob = encode(e, &b"{\"t\":\""[..prefix], token.as_bytes(), b"");
                let mut sent = b"Authorization: Basic ".to_vec();
                sent.extend_from_slice(&blob);
                let f = det.scan(&sent).unwrap_or_else(|| {
                    panic!("len {} align {prefix} engine {e}: not found", token.len())
                });
                assert_eq!(f.rule, "pattern:github-pat");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn held_value_in_base64_any_alignment_length_and_tail(
        value in prop::collection::vec(any::<u8>(), 8..48),
        prefix in prop::collection::vec(any::<u8>(), 0..6),
        suffix in prop::collection::vec(any::<u8>(), 0..4),
        e in 0usize..4,
    ) {
        let det = Detector::from_held_bytes(vec![("held".into(), value.clone())]);
        prop_assume!(det.held_count() == 1);
        let blob = encode(e, &prefix, &value, &suffix);
        let f = det.scan(&blob);
        prop_assert_eq!(f.map(|f| f.rule), Some("held:held".to_string()));
    }

    #[test]
    fn pattern_in_base64_any_alignment_length_and_tail(
        body in (36usize..42).prop_flat_map(alnum),
        prefix in filler(),
        suffix in filler(),
        e in 0usize..4,
    ) {
        let det = Detector::new(Vec::new());
        let token = format!("ghp_{body}");
        let blob = encode(e, &prefix, token.as_bytes(), &suffix);
        let f = det.scan(&blob);
        prop_assert_eq!(f.map(|f| f.rule), Some("pattern:github-pat".to_string()));
    }
}
