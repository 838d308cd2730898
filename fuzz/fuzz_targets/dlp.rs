//! Fuzz the DLP detector (`bottle_dlp::Detector`).
//!
//! Input (via `arbitrary`): up to three held values, how they are loaded
//! (`Detector::new` with strings, or `Detector::load_dir` with raw bytes),
//! free data, and optionally one held value embedded in the data in one of
//! the encodings the detector promises to catch.
//!
//! Oracles besides "`scan`, `mask` and `pending_tail_len` never panic":
//! - a held value (≥ `MIN_HELD_LEN` bytes after its trailing newlines are
//!   dropped) embedded verbatim, base64 (either alphabet, any alignment,
//!   inside a larger blob), percent-encoded (upper/lower hex, `+` for space),
//!   hex, JSON-escaped, or as one ≥ 20-byte line of a multi-line value (not
//!   a line every key of its kind shares, e.g. PEM armour) is
//!   found by `scan`; a value embedded with an arbitrary mix of
//!   percent-encoded and plain bytes is found too (values without `%`/`+`);
//! - `mask` returns a copy of the same length in which the embedded form no
//!   longer occurs (values without `*`, which masking itself writes);
//! - a `Finding` never carries the value (its `Display` names rule + offset).

#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use bottle_dlp::{is_shared_key_line, Detector, HeldSecret, MIN_HELD_LEN, MIN_LINE_FRAGMENT};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Encoding {
    Raw,
    Base64 {
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        url: bool,
        pad: bool,
    },
    Percent {
        lower: bool,
        plus: bool,
    },
    PercentMixed {
        mask: Vec<bool>,
    },
    Hex {
        upper: bool,
    },
    Json {
        escape_slash: bool,
    },
    Line {
        index: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    held: Vec<Vec<u8>>,
    from_dir: bool,
    data: Vec<u8>,
    embed: Option<(u8, u16, Encoding)>,
}

const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch::dir("dlp").join("secrets"))
}

fn trim_newlines(mut v: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = v {
        v = rest;
    }
    v
}

/// The bytes to embed and whether `mask` must remove them, or `None` when
/// this encoding does not apply to `value`.
fn encode(value: &[u8], enc: &Encoding) -> Option<(Vec<u8>, bool)> {
    let b64 = |bytes: &[u8], url: bool, pad: bool| {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        match (url, pad) {
            (false, true) => STANDARD.encode(bytes),
            (false, false) => STANDARD_NO_PAD.encode(bytes),
            (true, true) => URL_SAFE.encode(bytes),
            (true, false) => URL_SAFE_NO_PAD.encode(bytes),
        }
        .into_bytes()
    };
    Some(match enc {
        Encoding::Raw => (value.to_vec(), true),
        Encoding::Base64 {
            prefix,
            suffix,
            url,
            pad,
        } => {
            let prefix = &prefix[..prefix.len().min(8)];
            let suffix = &suffix[..suffix.len().min(8)];
            let blob = [prefix, value, suffix].concat();
            (b64(&blob, *url, *pad), true)
        }
        Encoding::Percent { lower, plus } => {
            let mut s = percent_encoding::percent_encode(value, SET).to_string();
            if *lower {
                s = lower_hex(&s);
            }
            if *plus {
                s = s.replace("%20", "+");
            }
            (s.into_bytes(), true)
        }
        Encoding::PercentMixed { mask } => {
            if value.iter().any(|b| matches!(b, b'%' | b'+')) {
                return None;
            }
            let mut out = Vec::new();
            for (i, b) in value.iter().enumerate() {
                if mask.get(i).copied().unwrap_or(false) {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                } else {
                    out.push(*b);
                }
            }
            // Mixed encodings are found through the decoded view only; mask
            // works on the forms and is not expected to catch them.
            (out, false)
        }
        Encoding::Hex { upper } => {
            let h = hex::encode(value);
            (if *upper { h.to_uppercase() } else { h }.into_bytes(), true)
        }
        Encoding::Json { escape_slash } => {
            let text = std::str::from_utf8(value).ok()?;
            let json = serde_json::to_string(text).ok()?;
            let inner = &json[1..json.len() - 1];
            let inner = if *escape_slash {
                inner.replace('/', "\\/")
            } else {
                inner.to_owned()
            };
            (inner.into_bytes(), true)
        }
        Encoding::Line { index } => {
            if !value.contains(&b'\n') {
                return None;
            }
            let lines: Vec<&[u8]> = value
                .split(|b| *b == b'\n')
                .map(trim_newlines)
                .filter(|l| l.len() >= MIN_LINE_FRAGMENT && !is_shared_key_line(l))
                .collect();
            if lines.is_empty() {
                return None;
            }
            (lines[*index as usize % lines.len()].to_vec(), true)
        }
    })
}

fn lower_hex(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push('%');
            out.push((b[i + 1] as char).to_ascii_lowercase());
            out.push((b[i + 2] as char).to_ascii_lowercase());
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn build(held: &[Vec<u8>], from_dir: bool) -> Detector {
    if from_dir {
        let dir = scratch();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("scratch dir");
        for (i, h) in held.iter().enumerate() {
            std::fs::write(dir.join(format!("s{i}")), h).expect("write secret");
        }
        Detector::load_dir(dir).expect("load_dir")
    } else {
        Detector::new(
            held.iter()
                .enumerate()
                .map(|(i, h)| HeldSecret {
                    name: format!("s{i}"),
                    value: String::from_utf8(h.clone()).expect("utf-8"),
                })
                .collect(),
        )
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(bytes)) else {
        return;
    };
    if input.held.len() > 3 || input.held.iter().any(|h| h.len() > 256) || input.data.len() > 8192 {
        return;
    }
    let held: Vec<Vec<u8>> = if input.from_dir {
        input.held.clone()
    } else {
        // `HeldSecret` holds text.
        input
            .held
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned().into_bytes())
            .collect()
    };
    // Building a detector compiles its regexes; the last one is reused
    // while mutations leave the held values alone.
    static LAST: Mutex<Option<(Vec<Vec<u8>>, bool, Arc<Detector>)>> = Mutex::new(None);
    let cached = LAST
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(h, d, _)| *h == held && *d == input.from_dir)
        .map(|(_, _, det)| det.clone());
    let detector = match cached {
        Some(det) => det,
        None => {
            let det = Arc::new(build(&held, input.from_dir));
            *LAST.lock().unwrap() = Some((held.clone(), input.from_dir, det.clone()));
            det
        }
    };

    let mut data = input.data.clone();
    let mut embedded: Option<(Vec<u8>, bool, Vec<u8>)> = None;
    if let Some((which, at, enc)) = &input.embed {
        if !held.is_empty() {
            let value = trim_newlines(&held[*which as usize % held.len()]).to_vec();
            if value.len() >= MIN_HELD_LEN {
                if let Some((form, must_mask)) = encode(&value, enc) {
                    let at = *at as usize % (data.len() + 1);
                    let mixed = matches!(enc, Encoding::PercentMixed { .. });
                    // A mixed encoding is decoded with its neighbours: keep
                    // a neutral byte on each side.
                    let piece = if mixed {
                        [b" ".as_slice(), &form, b" "].concat()
                    } else {
                        form.clone()
                    };
                    data.splice(at..at, piece);
                    embedded = Some((form, must_mask && !value.contains(&b'*'), value));
                }
            }
        }
    }

    let finding = detector.scan(&data);
    let _ = detector.pending_tail_len(&data);
    let masked = detector.mask(&data);
    if let Some(m) = &masked {
        assert_eq!(m.len(), data.len(), "mask changed the length");
    }
    if let Some(f) = &finding {
        assert!(f.offset <= data.len(), "finding offset out of range");
        let shown = format!("{f} {f:?}");
        for h in &held {
            let v = trim_newlines(h);
            if v.len() >= MIN_HELD_LEN {
                assert!(
                    !contains(shown.as_bytes(), v),
                    "a finding shows a held value"
                );
            }
        }
    }
    if let Some((form, must_mask, _value)) = embedded {
        assert!(
            finding.is_some(),
            "embedded held value not found ({:?})",
            input.embed
        );
        if must_mask {
            let out = masked.as_deref().unwrap_or(&data);
            assert!(
                !contains(out, &form),
                "mask left the held value in place ({:?})",
                input.embed
            );
        }
    }
});
