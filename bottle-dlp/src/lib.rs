#![deny(missing_docs)]

//! The one secret detector shared by egress, git-gate and host-side checks
//! ([`pattern_hit`]). Sync only: no tokio, no network.
//!
//! A [`Detector`] knows two kinds of things to look for:
//!
//! 1. **Held secrets** — the exact values the bottle holds (route tokens, git
//!    deploy keys, provider keys, `?prompt` answers): every file in the
//!    bundle's `secrets/` dir. Each value is searched in several encodings:
//!    - plain bytes (a trailing `\n`/`\r\n` in the file is ignored);
//!    - base64, standard and URL-safe alphabets, with or without padding, at
//!      all three byte alignments, so a secret embedded in the middle of a
//!      larger base64 blob is still caught (we search for the run of base64
//!      characters that depends only on the secret's bytes);
//!    - URL percent-encoding (upper- and lower-case hex, `+` for space), plus a
//!      percent-decoded view of the input so any mix of encoded/unencoded
//!      characters is caught;
//!    - base32 (RFC 4648 alphabet, upper and lower case, padded or not) at
//!      all five byte alignments, like base64;
//!    - hex (lower and upper case; a run of hex digits mixing the cases is
//!      lower-cased in a view of its own) and JSON string escaping;
//!    - the value reversed (searched in every view like any form);
//!    - for multi-line values (key material), each line of at least
//!      [`MIN_LINE_FRAGMENT`] bytes on its own, except lines every key of
//!      its kind shares (PEM armour and headers, OpenSSH's fixed first line):
//!      a held hit means THIS value (or a part only it has) was sent.
//!
//!    Values shorter than [`MIN_HELD_LEN`] bytes are ignored (they would match
//!    random traffic); a warning naming the secret (never its value) is logged.
//! 2. **Credential pattern rules** ([`rules`]) — gitleaks' default rule set
//!    plus bottle's own, in gitleaks' TOML format, with keyword prefilter,
//!    entropy thresholds and allowlists; operators add rules, bottles
//!    disable them by id.
//!
//! Every scan looks at several views of the data: as sent, percent-decoded
//! (once, and again when an escape is left), HTML numeric character
//! references decoded (only when `&#` occurs), quoted-printable decoded
//! (only when an `=HH` escape occurs), JSON-unescaped, and in each of these
//! the runs of hex digits that mix cases lower-cased, and every run of base64 characters
//! decoded in place (at every character offset, the final partial group
//! included). Held values and patterns are searched in every view.
//!
//! A [`Finding`] names the rule (`held:<name>` or `pattern:<id>`) and an
//! offset; nothing in this module ever prints, logs or returns a secret value.
//!
//! [`Detector::stream_window`] says how much of a stream must be scanned
//! again with the next piece so nothing spanning the boundary is missed.
//!
//! Known limits: double encodings (base64 of base64, hex of base64, …),
//! compression, encryption and line-wrapped base64 of a held value are not
//! detected; a secret split across two requests is not detected.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder};

pub mod rules;

pub use rules::{RuleError, RuleSet};

/// Held values shorter than this many bytes are ignored.
pub const MIN_HELD_LEN: usize = 8;

/// Lines of a multi-line held value at least this long are searched on their own.
pub const MIN_LINE_FRAGMENT: usize = 20;

/// How far a credential pattern match reaches, in bytes, for
/// [`Detector::stream_window`]: longer pattern matches across a streamed
/// body's scan windows are not guaranteed to be seen.
pub const PATTERN_REACH: usize = 4096;

/// Bytes an encoded held value may take per byte of the value, for
/// [`Detector::stream_window`] (JSON `\u00XX` of base64 is 8; HTML entities
/// with a few leading zeros fit too).
const ENCODED_GROWTH: usize = 12;

/// Shortest run of base64 characters that is decoded in place to look for
/// credential patterns inside it.
const MIN_B64_RUN: usize = 16;

/// A secret value the bottle holds. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldSecret {
    /// The secret's name (its file name in the secrets dir).
    pub name: String,
    /// The raw value.
    pub value: String,
}

impl fmt::Debug for HeldSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// One detection: which rule fired and where. Never contains the matched bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `held:<name>` for a held secret, `pattern:<id>` for a curated pattern.
    pub rule: String,
    /// Byte offset in the scanned data where the match (or the encoded run
    /// containing it) starts.
    pub offset: usize,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.rule, self.offset)
    }
}

/// The id of a credential pattern rule (e.g. `github-token`), without the
/// `pattern:` prefix a [`Finding`] carries. Never contains matched bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(String);

impl RuleId {
    /// The bare rule id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Host-side check (no held values): the credential pattern rule that
/// matches `value` in any view the detector decodes (raw, percent-decoded,
/// base64 runs), or `None`. Used to refuse literal credentials where bottle
/// expects a reference to a secret (e.g. in manifests). The returned id
/// never contains the matched text.
pub fn pattern_hit(value: &str) -> Option<RuleId> {
    static PATTERNS_ONLY: std::sync::LazyLock<Detector> =
        std::sync::LazyLock::new(|| Detector::new(Vec::new()));
    let finding = PATTERNS_ONLY.scan(value.as_bytes())?;
    let id = finding.rule.strip_prefix("pattern:")?;
    Some(RuleId(id.to_owned()))
}

/// The secret detector. Cheap to share (`Arc<Detector>`); scanning is `&self`.
pub struct Detector {
    /// One alternation of every encoded form of every held value (None when
    /// nothing is held).
    held_re: Option<Regex>,
    /// Encoded form → secret name, to name a held match.
    held_names: HashMap<Vec<u8>, String>,
    /// Credential pattern rules (gitleaks format; see [`rules`]).
    rules: Arc<RuleSet>,
    /// Every held form, longest first.
    forms: Vec<Vec<u8>>,
    /// The same forms in byte order, for [`Detector::pending_tail_len`].
    sorted_forms: Vec<Vec<u8>>,
    /// Bytes some form starts with.
    first_bytes: [bool; 256],
    /// Number of held secrets in use (after dropping short ones).
    held_count: usize,
    /// Length of the longest held value.
    longest_value: usize,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("held_secrets", &self.held_count)
            .field("held_forms", &self.held_names.len())
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Detector {
    /// A detector for the given held values plus the curated patterns.
    /// Values shorter than [`MIN_HELD_LEN`] bytes are ignored (with a warning
    /// naming the secret).
    pub fn new(held: Vec<HeldSecret>) -> Detector {
        Self::from_held_bytes(
            held.into_iter()
                .map(|h| (h.name, h.value.into_bytes()))
                .collect(),
        )
    }

    /// A detector holding every regular file in `dir` (a missing dir is an
    /// error: the caller decides whether "no secrets" is acceptable).
    /// Directories inside `dir` are skipped; symlinks are followed.
    pub fn load_dir(dir: &Path) -> std::io::Result<Detector> {
        let mut held = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            if !meta.is_file() {
                continue;
            }
            let value = std::fs::read(&path)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            held.push((name, value));
        }
        Ok(Self::from_held_bytes(held))
    }

    /// Number of held secrets actually searched for.
    pub fn held_count(&self) -> usize {
        self.held_count
    }

    /// A detector for held values given as raw bytes (`(name, value)`), as
    /// [`Detector::load_dir`] reads them.
    pub fn from_held_bytes(held: Vec<(String, Vec<u8>)>) -> Detector {
        let mut held_names: HashMap<Vec<u8>, String> = HashMap::new();
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut held_count = 0;
        let mut longest_value = 0;
        for (name, raw) in held {
            let value = trim_trailing_newlines(&raw);
            if value.len() < MIN_HELD_LEN {
                tracing::warn!(
                    secret = %name,
                    "held secret shorter than {MIN_HELD_LEN} bytes is not searched for"
                );
                continue;
            }
            held_count += 1;
            longest_value = longest_value.max(value.len());
            let mut forms = encoded_forms(value);
            // Multi-line values (key material): each long line on its own.
            if value.contains(&b'\n') {
                for line in value.split(|b| *b == b'\n') {
                    let line = trim_trailing_newlines(line);
                    if line.len() >= MIN_LINE_FRAGMENT && !is_shared_key_line(line) {
                        forms.push(line.to_vec());
                    }
                }
            }
            for form in forms {
                if form.len() < MIN_HELD_LEN {
                    continue;
                }
                if !held_names.contains_key(&form) {
                    held_names.insert(form.clone(), name.clone());
                    order.push(form);
                }
            }
        }
        // Longest first so that leftmost-first alternation prefers the most
        // specific form at a given position.
        order.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let forms = order.clone();
        let mut sorted_forms = order.clone();
        sorted_forms.sort();
        let mut first_bytes = [false; 256];
        for f in &order {
            if let Some(&b) = f.first() {
                first_bytes[b as usize] = true;
            }
        }
        let held_re = if order.is_empty() {
            None
        } else {
            let alternation = order
                .iter()
                .map(|form| escape_bytes(form))
                .collect::<Vec<_>>()
                .join("|");
            match RegexBuilder::new(&alternation)
                .unicode(false)
                .size_limit(256 << 20)
                .dfa_size_limit(64 << 20)
                .build()
            {
                Ok(re) => Some(re),
                Err(err) => {
                    // Fail closed: a detector that cannot search for held
                    // values would silently allow them. Match everything.
                    tracing::error!(%err, "could not build the held-secret matcher; blocking everything");
                    held_names.insert(Vec::new(), "unbuildable".into());
                    Some(Regex::new("").expect("empty regex"))
                }
            }
        };
        Detector {
            held_re,
            held_names,
            rules: rules::current(),
            forms,
            sorted_forms,
            first_bytes,
            held_count,
            longest_value,
        }
    }

    /// For scanning a stream in pieces: how many bytes of what was already
    /// scanned must be scanned again with the next piece (and so must not
    /// be forwarded before it), so that any held value in any view, or a
    /// credential pattern up to [`PATTERN_REACH`] bytes, that spans the
    /// boundary is seen whole.
    pub fn stream_window(&self) -> usize {
        PATTERN_REACH.max(self.longest_value * ENCODED_GROWTH + 64)
    }

    /// The first finding in `data`, held secrets before patterns, raw view
    /// before decoded views.
    pub fn scan(&self, data: &[u8]) -> Option<Finding> {
        // Base64 runs already decoded and scanned in an earlier view: a
        // decoded view leaves most runs as they were, and the same run
        // decodes to the same bytes.
        let mut seen = HashSet::new();
        if let Some(f) = self.scan_view(data, &mut seen) {
            return Some(f);
        }
        // Percent-decoded view: catches any mix of encoded characters.
        let pct = data.contains(&b'%');
        let plus = data.contains(&b'+');
        if pct || plus {
            let (decoded, map) = percent_decode_mapped(data, true);
            if decoded != data {
                if let Some(f) = self.scan_view(&decoded, &mut seen) {
                    return Some(remap(f, &map));
                }
                // Encoded twice (`%2541`): decode once more.
                if has_percent_escape(&decoded) {
                    let (twice, map2) = percent_decode_mapped(&decoded, false);
                    if let Some(f) = self.scan_view(&twice, &mut seen) {
                        return Some(remap(remap(f, &map2), &map));
                    }
                }
            }
        }
        // `+` is a space only in form encoding; a percent-encoded header or
        // path keeps a base64 `+` as it is.
        if pct && plus {
            let (decoded, map) = percent_decode_mapped(data, false);
            if decoded != data {
                if let Some(f) = self.scan_view(&decoded, &mut seen) {
                    return Some(remap(f, &map));
                }
            }
        }
        // HTML character references (`&#65;`, `&#x41;`), only when present.
        if has_pair(b'&', b'#', data) {
            let (decoded, map) = html_entities_mapped(data, false);
            if decoded != data {
                if let Some(f) = self.scan_view(&decoded, &mut seen) {
                    return Some(remap(f, &map));
                }
                // References to single bytes (`&#195;&#187;`, as a byte-wise
                // encoder writes UTF-8), when read so they differ.
                let (bytes, map) = html_entities_mapped(data, true);
                if bytes != decoded {
                    if let Some(f) = self.scan_view(&bytes, &mut seen) {
                        return Some(remap(f, &map));
                    }
                }
            }
        }
        // Quoted-printable (`=3D`, soft line breaks), only when an `=XX`
        // escape is there.
        if has_qp_escape(data) {
            let (decoded, map) = quoted_printable_mapped(data);
            if decoded != data {
                if let Some(f) = self.scan_view(&decoded, &mut seen) {
                    return Some(remap(f, &map));
                }
            }
        }
        // JSON-unescaped view (`\uXXXX`, `\n`, `\/`, ...).
        if data.contains(&b'\\') {
            let (decoded, map) = json_unescape_mapped(data);
            if decoded != data {
                if let Some(f) = self.scan_view(&decoded, &mut seen) {
                    return Some(remap(f, &map));
                }
            }
        }
        None
    }

    /// One view: held values and patterns on it, then on its base64 runs
    /// decoded in place (every character offset, the final partial group
    /// included). The decoded runs of one offset are scanned as one buffer,
    /// separated by NUL bytes, so the per-scan cost is paid four times per
    /// view rather than four times per run. A run whose bytes are in `seen`
    /// (decoded in an earlier view or earlier in this one) is not decoded
    /// again.
    fn scan_view(&self, data: &[u8], seen: &mut HashSet<Vec<u8>>) -> Option<Finding> {
        if let Some(f) = self.scan_direct(data) {
            return Some(f);
        }
        // Hex with upper- and lower-case digits mixed: those runs only,
        // lowercased (the lower-case hex form then matches).
        if self.held_re.is_some() {
            let runs = mixed_case_hex_runs(data);
            if !runs.is_empty() {
                let mut buf = Vec::new();
                let mut starts: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
                for &(start, end) in &runs {
                    starts.push((buf.len(), start));
                    buf.extend(data[start..end].iter().map(u8::to_ascii_lowercase));
                    buf.push(0);
                }
                if let Some(f) = self.scan_direct(&buf) {
                    let i = starts.partition_point(|(b, _)| *b <= f.offset).max(1) - 1;
                    return Some(Finding {
                        rule: f.rule,
                        offset: starts[i].1,
                    });
                }
            }
        }
        let mut runs = base64_runs(data);
        runs.retain(|&(start, end)| seen.insert(data[start..end].to_vec()));
        if runs.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        let mut starts: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
        for skip in 0..4 {
            buf.clear();
            starts.clear();
            for &(start, end) in &runs {
                if let Some(decoded) = decode_base64_at(&data[start..end], skip) {
                    starts.push((buf.len(), start));
                    buf.extend_from_slice(&decoded);
                    buf.push(0);
                }
            }
            if buf.is_empty() {
                continue;
            }
            if let Some(f) = self.scan_direct(&buf) {
                let i = starts.partition_point(|(b, _)| *b <= f.offset).max(1) - 1;
                return Some(Finding {
                    rule: f.rule,
                    offset: starts[i].1,
                });
            }
        }
        None
    }

    /// Held values and patterns on one view, leftmost of each kind.
    fn scan_direct(&self, data: &[u8]) -> Option<Finding> {
        if let Some(m) = self.held_re.as_ref().and_then(|re| re.find(data)) {
            let name = self
                .held_names
                .get(m.as_bytes())
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            return Some(Finding {
                rule: format!("held:{name}"),
                offset: m.start(),
            });
        }
        self.rules.scan(data).map(|hit| Finding {
            rule: format!("pattern:{}", hit.rule),
            offset: hit.offset,
        })
    }

    /// `Some(masked copy)` when `data` contains a held value in any searched
    /// form; every such occurrence is replaced by `*` of the same length (so
    /// lengths and offsets are preserved). `None` when nothing matched.
    pub fn mask(&self, data: &[u8]) -> Option<Vec<u8>> {
        let re = self.held_re.as_ref()?;
        let mut out: Option<Vec<u8>> = None;
        for m in re.find_iter(data) {
            if m.is_empty() {
                continue;
            }
            let buf = out.get_or_insert_with(|| data.to_vec());
            buf[m.range()].fill(b'*');
        }
        out
    }
}

impl Detector {
    /// For streaming masking: the length of the longest suffix of `data` that
    /// is a proper prefix of some held form (a value that may be completed by
    /// the next chunk). A streaming masker keeps that many bytes back.
    pub fn pending_tail_len(&self, data: &[u8]) -> usize {
        let longest = self.forms.first().map_or(0, Vec::len);
        let from = data.len().saturating_sub(longest.saturating_sub(1));
        for start in from..data.len() {
            if self.first_bytes[data[start] as usize] && self.is_proper_prefix(&data[start..]) {
                return data.len() - start;
            }
        }
        0
    }

    /// Is `tail` a proper prefix of some held form? The forms that start
    /// with `tail` sit together in byte order, from the first form not
    /// below `tail`; only one form can equal `tail`, so the next one then
    /// decides.
    fn is_proper_prefix(&self, tail: &[u8]) -> bool {
        let i = self.sorted_forms.partition_point(|f| f.as_slice() < tail);
        self.sorted_forms[i..]
            .iter()
            .take(2)
            .any(|f| f.len() > tail.len() && f.starts_with(tail))
    }
}

/// Lines of key material that are the same in every key of a kind, so
/// finding them says nothing about WHICH key was sent: PEM armour
/// (`-----BEGIN … PRIVATE KEY-----`, `-----END …`), PEM headers
/// (`Proc-Type:`, `DEK-Info:`) and the first body line of an OpenSSH key
/// (`openssh-key-v1`, cipher, kdf, key count and type: base64 at offset 0
/// starts `b3BlbnNzaC1rZXktdjE`). Such a line is not a held fragment; any
/// private key header is still caught by the `private-key` pattern.
pub fn is_shared_key_line(line: &[u8]) -> bool {
    line.starts_with(b"-----")
        || line.starts_with(b"Proc-Type:")
        || line.starts_with(b"DEK-Info:")
        || line.starts_with(b"b3BlbnNzaC1rZXktdjE")
}

fn trim_trailing_newlines(mut v: &[u8]) -> &[u8] {
    while let [rest @ .., last] = v {
        if *last == b'\n' || *last == b'\r' {
            v = rest;
        } else {
            break;
        }
    }
    v
}

/// Regex-escape arbitrary bytes (non-ASCII as `\xHH`).
fn escape_bytes(form: &[u8]) -> String {
    let mut s = String::with_capacity(form.len() * 2);
    for &b in form {
        if b.is_ascii_alphanumeric() {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

/// Every encoded form of `value` that is searched for (deduplicated later).
fn encoded_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![value.to_vec()];
    // base64: the part of the encoding that depends only on the secret's
    // bytes, for each of the three alignments of the secret in the stream.
    for align in 0..3usize {
        let mut buf = vec![0u8; align];
        buf.extend_from_slice(value);
        let enc = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&buf);
        let start = (8 * align).div_ceil(6);
        let end = (8 * (align + value.len())) / 6;
        if end > start {
            let core = enc.as_bytes()[start..end].to_vec();
            let url: Vec<u8> = core
                .iter()
                .map(|b| match b {
                    b'+' => b'-',
                    b'/' => b'_',
                    other => *other,
                })
                .collect();
            forms.push(core);
            forms.push(url);
        }
    }
    // URL percent-encoding (upper/lower hex), and `+` for space.
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let upper = percent_encoding::percent_encode(value, SET).to_string();
    let lower = lowercase_percent_hex(&upper);
    let plus = upper.replace("%20", "+");
    let plus_lower = lower.replace("%20", "+");
    for f in [upper, lower, plus, plus_lower] {
        forms.push(f.into_bytes());
    }
    // base32 (RFC 4648 alphabet, upper and lower case): the part that
    // depends only on the secret's bytes, at each of the five alignments.
    for align in 0..5usize {
        let mut buf = vec![0u8; align];
        buf.extend_from_slice(value);
        let enc = base32_encode(&buf);
        let start = (8 * align).div_ceil(5);
        let end = (8 * (align + value.len())) / 5;
        if end > start {
            let core = enc[start..end].to_vec();
            forms.push(core.to_ascii_lowercase());
            forms.push(core);
        }
    }
    // The value reversed (searched in every view like the others).
    forms.push(value.iter().rev().copied().collect());
    // hex
    let hex_lower = hex::encode(value);
    forms.push(hex_lower.to_uppercase().into_bytes());
    forms.push(hex_lower.into_bytes());
    // JSON string escaping (and the `\/` variant some encoders emit).
    if let Ok(text) = std::str::from_utf8(value) {
        if let Ok(json) = serde_json::to_string(text) {
            let inner = &json[1..json.len() - 1];
            forms.push(inner.as_bytes().to_vec());
            forms.push(inner.replace('/', "\\/").into_bytes());
        }
    }
    forms
}

/// RFC 4648 base32 without padding.
fn base32_encode(data: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::with_capacity(data.len().div_ceil(5) * 8);
    for chunk in data.chunks(5) {
        let mut group = [0u8; 8];
        group[3..3 + chunk.len()].copy_from_slice(chunk);
        let bits = u64::from_be_bytes(group);
        for i in 0..(chunk.len() * 8).div_ceil(5) {
            out.push(ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize]);
        }
    }
    out
}

fn lowercase_percent_hex(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push('%');
            out.push((bytes[i + 1] as char).to_ascii_lowercase());
            out.push((bytes[i + 2] as char).to_ascii_lowercase());
            i += 3;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode (`%HH`, and `+` → space when `plus_is_space`) keeping, for each output byte, the
/// offset of the input byte it came from.
fn percent_decode_mapped(data: &[u8], plus_is_space: bool) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(data.len());
    let mut map = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b == b'%' && i + 2 < data.len() {
            if let (Some(h), Some(l)) = (hex_val(data[i + 1]), hex_val(data[i + 2])) {
                out.push(h * 16 + l);
                map.push(i);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' && plus_is_space { b' ' } else { b });
        map.push(i);
        i += 1;
    }
    (out, map)
}

/// Does `data` hold `a` immediately followed by `b` anywhere?
fn has_pair(a: u8, b: u8, data: &[u8]) -> bool {
    data.windows(2).any(|w| w[0] == a && w[1] == b)
}

/// Is there a `%HH` escape in `data`?
fn has_percent_escape(data: &[u8]) -> bool {
    data.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Is there an `=HH` (upper-case hex, as quoted-printable writes it)
/// escape in `data`?
fn has_qp_escape(data: &[u8]) -> bool {
    let up = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    data.windows(3)
        .any(|w| w[0] == b'=' && up(w[1]) && up(w[2]))
}

/// Maximal runs of hex digits, at least `2 * MIN_HELD_LEN` long, that hold
/// both upper- and lower-case letters.
fn mixed_case_hex_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if !data[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        let (mut upper, mut lower) = (false, false);
        while i < data.len() && data[i].is_ascii_hexdigit() {
            upper |= data[i].is_ascii_uppercase();
            lower |= data[i].is_ascii_lowercase();
            i += 1;
        }
        if upper && lower && i - start >= 2 * MIN_HELD_LEN {
            runs.push((start, i));
        }
    }
    runs
}

/// Decode HTML numeric character references (`&#65;`, `&#x41;`, the `;`
/// optional, leading zeros allowed) to UTF-8 — or, when `bytes`, a
/// reference below 256 to that one byte — keeping for each output byte the
/// offset of the input byte it came from. Named references are kept as
/// they are.
fn html_entities_mapped(data: &[u8], bytes: bool) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(data.len());
    let mut map = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'&' && data.get(i + 1) == Some(&b'#') {
            let hex = matches!(data.get(i + 2), Some(b'x' | b'X'));
            let digits_at = i + 2 + usize::from(hex);
            let mut j = digits_at;
            let mut cp: u32 = 0;
            while j < data.len() && j - digits_at < 16 {
                let d = match (hex, data[j]) {
                    (_, b @ b'0'..=b'9') => u32::from(b - b'0'),
                    (true, b) => match hex_val(b) {
                        Some(v) => u32::from(v),
                        None => break,
                    },
                    _ => break,
                };
                cp = cp
                    .saturating_mul(if hex { 16 } else { 10 })
                    .saturating_add(d);
                j += 1;
            }
            if j > digits_at && bytes && cp < 256 {
                out.push(cp as u8);
                map.push(i);
                i = if data.get(j) == Some(&b';') { j + 1 } else { j };
                continue;
            }
            if j > digits_at {
                if let Some(c) = char::from_u32(cp) {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push(b);
                        map.push(i);
                    }
                    i = if data.get(j) == Some(&b';') { j + 1 } else { j };
                    continue;
                }
            }
        }
        out.push(data[i]);
        map.push(i);
        i += 1;
    }
    (out, map)
}

/// Decode quoted-printable (`=HH`, either case, and `=` line breaks),
/// keeping for each output byte the offset of the input byte it came from.
fn quoted_printable_mapped(data: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(data.len());
    let mut map = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'=' {
            if let (Some(h), Some(l)) = (
                data.get(i + 1).copied().and_then(hex_val),
                data.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(h * 16 + l);
                map.push(i);
                i += 3;
                continue;
            }
            if data.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if data.get(i + 1..i + 3) == Some(&b"\r\n"[..]) {
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        map.push(i);
        i += 1;
    }
    (out, map)
}

fn is_b64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Maximal runs of base64 characters at least [`MIN_B64_RUN`] long.
fn base64_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &b) in data.iter().enumerate() {
        if is_b64_char(b) {
            if start.is_none() {
                start = Some(i);
            }
        } else if let Some(s) = start.take() {
            if i - s >= MIN_B64_RUN {
                runs.push((s, i));
            }
        }
    }
    if let Some(s) = start {
        if data.len() - s >= MIN_B64_RUN {
            runs.push((s, data.len()));
        }
    }
    runs
}

/// The base64 engines used to decode runs: padding optional, non-zero
/// trailing bits allowed (a run cut from a longer stream ends anywhere).
fn lenient(alphabet: &base64::alphabet::Alphabet) -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        alphabet,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

static B64_STANDARD: std::sync::LazyLock<base64::engine::GeneralPurpose> =
    std::sync::LazyLock::new(|| lenient(&base64::alphabet::STANDARD));
static B64_URL: std::sync::LazyLock<base64::engine::GeneralPurpose> =
    std::sync::LazyLock::new(|| lenient(&base64::alphabet::URL_SAFE));

/// Decode a run of base64 characters (either alphabet) starting `skip`
/// characters in (0..4: the run may start mid-quantum when glued to other
/// base64-alphabet text such as a `/path/` prefix). The final partial group
/// is decoded too: 2 or 3 trailing characters carry 1 or 2 bytes; a single
/// leftover character carries none and is dropped. A run mixing the
/// alphabets is decoded with neither.
fn decode_base64_at(run: &[u8], skip: usize) -> Option<Vec<u8>> {
    let url = run.iter().any(|b| matches!(b, b'-' | b'_'));
    let std = run.iter().any(|b| matches!(b, b'+' | b'/'));
    if url && std {
        return None;
    }
    let engine: &base64::engine::GeneralPurpose = if url { &B64_URL } else { &B64_STANDARD };
    let part = run.get(skip..)?;
    let usable = if part.len() % 4 == 1 {
        part.len() - 1
    } else {
        part.len()
    };
    if usable < 2 {
        return None;
    }
    engine.decode(&part[..usable]).ok()
}

/// A finding in a decoded view, its offset mapped back to the input.
fn remap(f: Finding, map: &[usize]) -> Finding {
    Finding {
        offset: map.get(f.offset).copied().unwrap_or(0),
        rule: f.rule,
    }
}

/// Undo JSON string escapes (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
/// `\uXXXX` with surrogate pairs) anywhere in `data`, keeping for each
/// output byte the offset of the input byte it came from. Anything that is
/// not a valid escape is kept as it is.
fn json_unescape_mapped(data: &[u8]) -> (Vec<u8>, Vec<usize>) {
    fn hex4(d: &[u8]) -> Option<u32> {
        if d.len() < 4 {
            return None;
        }
        let mut v = 0u32;
        for &b in &d[..4] {
            v = v * 16 + u32::from(hex_val(b)?);
        }
        Some(v)
    }
    let mut out = Vec::with_capacity(data.len());
    let mut map = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\\' && i + 1 < data.len() {
            let simple = match data[i + 1] {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                _ => None,
            };
            if let Some(b) = simple {
                out.push(b);
                map.push(i);
                i += 2;
                continue;
            }
            if data[i + 1] == b'u' {
                if let Some(hi) = hex4(&data[i + 2..]) {
                    let mut len = 6;
                    let mut cp = Some(hi);
                    if (0xD800..0xDC00).contains(&hi) {
                        cp = None;
                        if data.get(i + 6..i + 8) == Some(&b"\\u"[..]) {
                            if let Some(lo) = hex4(&data[i + 8..]) {
                                if (0xDC00..0xE000).contains(&lo) {
                                    cp = Some(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
                                    len = 12;
                                }
                            }
                        }
                    }
                    if let Some(c) = cp.and_then(char::from_u32) {
                        let mut buf = [0u8; 4];
                        for b in c.encode_utf8(&mut buf).bytes() {
                            out.push(b);
                            map.push(i);
                        }
                        i += len;
                        continue;
                    }
                }
            }
        }
        out.push(data[i]);
        map.push(i);
        i += 1;
    }
    (out, map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    // Contains bytes that differ between the std and URL-safe alphabets
    // (0xfb 0xff encode to `+`/`/`), a space and reserved URL characters.
    const TOKEN: &str = "tok en/+?=&:\u{00fb}\u{00ff}-abcdef0123456789";

    fn det() -> Detector {
        Detector::new(vec![
            HeldSecret {
                name: "route-api".into(),
                value: TOKEN.into(),
            },
            HeldSecret {
                name: "short".into(),
                value: "abc".into(),
            },
        ])
    }

    fn assert_held(d: &Detector, data: &[u8]) {
        let f = d
            .scan(data)
            .unwrap_or_else(|| panic!("not detected: {}", String::from_utf8_lossy(data)));
        assert_eq!(f.rule, "held:route-api");
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let h = HeldSecret {
            name: "n".into(),
            value: "supersecretvalue".into(),
        };
        assert!(!format!("{h:?}").contains("supersecret"));
        let d = Detector::new(vec![h]);
        let f = d.scan(b"x supersecretvalue y").unwrap();
        assert_eq!(
            f,
            Finding {
                rule: "held:n".into(),
                offset: 2
            }
        );
        assert!(!f.to_string().contains("supersecret"));
        assert!(!format!("{d:?}").contains("supersecret"));
    }

    #[test]
    fn plain_value_anywhere() {
        let d = det();
        assert_held(&d, TOKEN.as_bytes());
        assert_held(&d, format!("GET /x?q={TOKEN} HTTP/1.1").as_bytes());
        assert!(d.scan(b"nothing to see here, tok en/ only").is_none());
    }

    #[test]
    fn short_values_are_ignored() {
        let d = det();
        assert_eq!(d.held_count(), 1);
        assert!(d.scan(b"abc abc abc").is_none());
    }

    #[test]
    fn base64_all_alphabets_paddings_and_alignments() {
        let d = det();
        let engines: [&base64::engine::GeneralPurpose; 4] =
            [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
        for engine in engines {
            for prefix_len in 0..6 {
                for suffix_len in 0..4 {
                    let mut payload = vec![b'{'; prefix_len];
                    payload.extend_from_slice(TOKEN.as_bytes());
                    payload.extend(std::iter::repeat_n(b'}', suffix_len));
                    let enc = engine.encode(&payload);
                    assert_held(&d, enc.as_bytes());
                    assert_held(&d, format!("{{\"data\":\"{enc}\"}}").as_bytes());
                }
            }
        }
    }

    #[test]
    fn url_encoded_upper_lower_plus_and_mixed() {
        let d = det();
        const SET: &percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC;
        let upper = percent_encoding::percent_encode(TOKEN.as_bytes(), SET).to_string();
        assert!(upper.contains("%2F"));
        assert_held(&d, format!("/p?a={upper}").as_bytes());
        assert_held(
            &d,
            format!("/p?a={}", lowercase_percent_hex(&upper)).as_bytes(),
        );
        assert_held(&d, format!("a={}", upper.replace("%20", "+")).as_bytes());
        // every single byte encoded
        let all: String = TOKEN.bytes().map(|b| format!("%{b:02x}")).collect();
        assert_held(&d, format!("x={all}&y=1").as_bytes());
        // form encoding of a value with a space
        let form = Detector::new(vec![HeldSecret {
            name: "route-api".into(),
            value: "pass word 12345".into(),
        }]);
        assert_held(&form, b"user=a&password=pass+word+12345");
    }

    #[test]
    fn hex_and_json_escaped() {
        let d = det();
        assert_held(&d, hex::encode(TOKEN).as_bytes());
        assert_held(&d, hex::encode_upper(TOKEN).as_bytes());
        let json = serde_json::to_string(&serde_json::json!({ "k": TOKEN })).unwrap();
        assert_held(&d, json.as_bytes());
        let slash = Detector::new(vec![HeldSecret {
            name: "route-api".into(),
            value: "abc/def/ghi/jkl".into(),
        }]);
        assert_held(&slash, br#"{"k":"abc\/def\/ghi\/jkl"}"#);
    }

    #[test]
    fn trailing_newline_in_file_is_ignored_and_lines_of_keys_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("route-api"), format!("{TOKEN}\n")).unwrap();
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDXbEy1BfDhl8B0bCBkHE9I1L4OOXNmmoVdNlp5L4yIxAAAAJg5U2zbOVNs\n-----END OPENSSH PRIVATE KEY-----\n";
        std::fs::write(dir.path().join("deploy-key"), key).unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let d = Detector::load_dir(dir.path()).unwrap();
        assert_eq!(d.held_count(), 2);
        assert_held(&d, format!("x{TOKEN}y").as_bytes());
        let f = d
            .scan(b"leak: QyNTUxOQAAACDXbEy1BfDhl8B0bCBkHE9I1L4OOXNmmoVdNlp5L4yIxAAAAJg5U2zbOVNs")
            .unwrap();
        assert_eq!(f.rule, "held:deploy-key");
        assert!(Detector::load_dir(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn mask_replaces_every_held_form_preserving_length() {
        let d = det();
        let b64 = STANDARD.encode(TOKEN);
        let body = format!("a {TOKEN} b {b64} c");
        let masked = d.mask(body.as_bytes()).unwrap();
        assert_eq!(masked.len(), body.len());
        assert!(
            d.scan(&masked).is_none(),
            "masked output still contains the secret"
        );
        assert!(String::from_utf8_lossy(&masked).starts_with("a *"));
        assert!(d.mask(b"clean body").is_none());
        assert!(Detector::new(vec![]).mask(TOKEN.as_bytes()).is_none());
    }

    #[test]
    fn pending_tail_len_keeps_back_a_possible_prefix() {
        let d = det();
        assert_eq!(d.pending_tail_len(b"hello, world!"), 0);
        assert_eq!(d.pending_tail_len(b"hello tok en/"), "tok en/".len());
        // The complete value is not pending; its last byte starts the
        // reversed value, so that one byte is.
        assert_eq!(d.pending_tail_len(TOKEN.as_bytes()), 1);
        assert_eq!(
            d.pending_tail_len(format!("{TOKEN}.").as_bytes()),
            0,
            "complete value is not pending"
        );
        assert_eq!(Detector::default().pending_tail_len(b"tok"), 0);
    }

    #[test]
    fn pending_tail_len_agrees_with_trying_every_form() {
        // Forms that share prefixes, one a prefix of another.
        let d = Detector::new(vec![
            HeldSecret {
                name: "a".into(),
                value: "abcdefgh-1234".into(),
            },
            HeldSecret {
                name: "b".into(),
                value: "abcdefgh-12345678".into(),
            },
            HeldSecret {
                name: "c".into(),
                value: "zz-other-value".into(),
            },
        ]);
        let naive = |data: &[u8]| -> usize {
            let longest = d.forms.first().map_or(0, Vec::len);
            let from = data.len().saturating_sub(longest.saturating_sub(1));
            (from..data.len())
                .find(|&i| {
                    d.forms
                        .iter()
                        .any(|f| f.len() > data.len() - i && f.starts_with(&data[i..]))
                })
                .map_or(0, |i| data.len() - i)
        };
        let pieces: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"ab",
            b"abcdefgh",
            b"abcdefgh-1234",
            b"abcdefgh-123456",
            b"x",
            b"z",
            b"zz-oth",
            b"YWJj",
            b"%2D",
            b"-12",
            b"abcdefgh-12345678",
            b"zz-other-value",
        ];
        for p in &pieces {
            for q in &pieces {
                let data = [b"body ".as_slice(), p, q].concat();
                assert_eq!(
                    d.pending_tail_len(&data),
                    naive(&data),
                    "{}",
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }

    /// RFC 4648 base32 with padding, written independently of the
    /// detector's encoder (bits taken one at a time).
    fn base32_padded(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let bits: Vec<u8> = data
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        let mut out: String = bits
            .chunks(5)
            .map(|c| {
                let v = (0..5).fold(0usize, |v, i| v * 2 + usize::from(*c.get(i).unwrap_or(&0)));
                A[v] as char
            })
            .collect();
        while out.len() % 8 != 0 {
            out.push('=');
        }
        out
    }

    #[test]
    fn base32_any_alignment_padded_or_not_either_case() {
        let d = det();
        for prefix_len in 0..6 {
            let mut payload = vec![b'{'; prefix_len];
            payload.extend_from_slice(TOKEN.as_bytes());
            let enc = base32_padded(&payload);
            assert_held(&d, format!("x={enc}").as_bytes());
            assert_held(&d, format!("x={}", enc.trim_end_matches('=')).as_bytes());
            assert_held(&d, format!("x={}", enc.to_ascii_lowercase()).as_bytes());
        }
        assert_eq!(base32_padded(b"foobar"), "MZXW6YTBOI======");
    }

    #[test]
    fn hex_with_mixed_case_digits() {
        let d = det();
        let mut hex: Vec<u8> = hex::encode(TOKEN).into_bytes();
        // Upper-case every third digit.
        for (i, b) in hex.iter_mut().enumerate() {
            if i % 3 == 0 {
                *b = b.to_ascii_uppercase();
            }
        }
        let hex = String::from_utf8(hex).unwrap();
        assert!(hex.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(hex.bytes().any(|b| b.is_ascii_lowercase()));
        assert_held(&d, format!("v={hex}").as_bytes());
        assert_held(&d, format!("id-{hex}-end").as_bytes());
    }

    #[test]
    fn html_entities_decimal_and_hex() {
        let d = det();
        let dec: String = TOKEN.bytes().map(|b| format!("&#{b};")).collect();
        let utf8_dec: String = TOKEN.chars().map(|c| format!("&#{};", c as u32)).collect();
        let hexent: String = TOKEN
            .chars()
            .map(|c| format!("&#x{:X}", c as u32))
            .collect();
        let zeros: String = TOKEN
            .chars()
            .map(|c| format!("&#00{};", c as u32))
            .collect();
        for v in [dec, utf8_dec, hexent, zeros] {
            assert_held(&d, format!("<p>{v}</p>").as_bytes());
        }
        // A partly encoded value.
        let half: String = TOKEN
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    format!("&#{};", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        assert_held(&d, half.as_bytes());
        assert!(d.scan(b"&#60;p&#62; &amp; &#x26; &#;").is_none());
    }

    #[test]
    fn quoted_printable_with_soft_line_breaks() {
        let d = det();
        let qp: String = TOKEN
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("={b:02X}")
                }
            })
            .collect();
        // Break the line before an escape (a soft break inside one is not QP).
        let mid = qp.len() / 2 + qp[qp.len() / 2..].find('=').unwrap();
        let (a, b) = qp.split_at(mid);
        let body = format!(
            "--XYZ\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{a}=\r\n{b}\r\n--XYZ--\r\n"
        );
        assert_held(&d, body.as_bytes());
    }

    #[test]
    fn percent_encoding_applied_twice() {
        let d = det();
        let twice: String = TOKEN.bytes().map(|b| format!("%25{b:02x}")).collect();
        assert_held(&d, format!("/p/{twice}").as_bytes());
        let upper: String = TOKEN.bytes().map(|b| format!("%25{b:02X}")).collect();
        assert_held(&d, format!("q={upper}").as_bytes());
    }

    #[test]
    fn reversed_value_in_any_view() {
        let d = det();
        let rev: Vec<u8> = TOKEN.bytes().rev().collect();
        let mut data = b"x=".to_vec();
        data.extend_from_slice(&rev);
        assert_held(&d, &data);
        assert_held(&d, STANDARD.encode(&rev).as_bytes());
        let pct: String = rev.iter().map(|b| format!("%{b:02x}")).collect();
        assert_held(&d, pct.as_bytes());
    }

    #[test]
    fn stream_window_covers_encoded_values_and_patterns() {
        let d = det();
        assert!(d.stream_window() >= PATTERN_REACH);
        let long = Detector::new(vec![HeldSecret {
            name: "k".into(),
            value: "v".repeat(4000),
        }]);
        assert!(long.stream_window() >= 8 * 4000);
    }

    fn pattern(data: &str) -> Option<String> {
        Detector::new(vec![]).scan(data.as_bytes()).map(|f| f.rule)
    }

    #[test]
    fn curated_patterns() {
        let cases = [
            ("key=AKIAIOSFODNN7EXAMPLE", "pattern:aws-access-key-id"),
            (
                "ghp_U8JZpDE0iGXlD6gNCFbaEPFjbD0kH8Oool8D",
                "pattern:github-pat",
            ),
            (
                "gho_klZDOCj2ISaJiHkTj0rLGlkoMXGjtEkDnNfr",
                "pattern:github-oauth",
            ),
            (
                "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",
                "pattern:github-fine-grained-pat",
            ),
            ("token: glpat-vQe1sKhBN88hXJsi6Bwh", "pattern:gitlab-pat"),
            ("xoxb-123456789012-Tp3Fs2QhX6", "pattern:slack-token"),
            (
                "x-api-key: sk-ant-api03-8dWKnHfDNxSIvPZZ63fFKcZjR4I0b3jRtaWr4Y9O",
                "pattern:anthropic-key",
            ),
            (
                "Bearer sk-proj-JFLJOqOAf1lLQSAJaiXnkU8Is2g8nprvDd53x83r",
                "pattern:openai-key",
            ),
            (
                "AIzaSyA-zjZZZZGeoZDMENcKHVmDGAkJiG8XnBE3",
                "pattern:google-api-key",
            ),
            ("sk_live_NnYJoQ9WmXeHH2fdeeTFJGvV", "pattern:stripe-access-token"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
                "pattern:private-key",
            ),
            ("-----BEGIN PRIVATE KEY-----", "pattern:private-key"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                "pattern:private-key",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----",
                "pattern:private-key",
            ),
            (
                "auth=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "pattern:jwt",
            ),
        ];
        let mut wrong = Vec::new();
        for (data, rule) in cases {
            let got = pattern(data);
            if got.as_deref() != Some(rule) {
                wrong.push(format!("{data}: want {rule}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        for clean in [
            "GET /v1/messages HTTP/1.1",
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----",
            "task-ant-colony",
            "AKIA short",
        ] {
            assert_eq!(pattern(clean), None, "{clean}");
        }
    }

    #[test]
    fn pattern_hit_names_the_rule_only() {
        let hit = pattern_hit("token = \"ghp_U8JZpDE0iGXlD6gNCFbaEPFjbD0kH8Oool8D\"").unwrap();
        assert_eq!(hit.as_str(), "github-pat");
        assert_eq!(hit.to_string(), "github-pat");
        assert!(!format!("{hit:?}").contains("ghp_"));
        assert_eq!(pattern_hit("token = \"${GITHUB_TOKEN}\""), None);
        assert_eq!(pattern_hit(""), None);
    }

    #[test]
    fn patterns_inside_base64_and_url_encoding() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n";
        assert_eq!(
            pattern(&format!("body={}", STANDARD.encode(pem))).as_deref(),
            Some("pattern:private-key")
        );
        let enc =
            percent_encoding::percent_encode(pem.as_bytes(), percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(
            pattern(&format!("k={enc}")).as_deref(),
            Some("pattern:private-key")
        );
    }

    #[test]
    fn percent_encoded_value_keeps_a_base64_plus() {
        // `+` is a space in form encoding only: a percent-encoded header
        // value keeps it, and the held value must still be found.
        let d = Detector::new(vec![HeldSecret {
            name: "k".into(),
            value: "ab+cdEFgh/ij+kl".into(),
        }]);
        assert_eq!(
            d.scan(b"x-v: ab+cd%45Fgh/ij+kl").map(|f| f.rule).as_deref(),
            Some("held:k")
        );
    }

    #[test]
    fn pem_header_in_any_case() {
        assert_eq!(
            pattern("-----begin rsa private key-----").as_deref(),
            Some("pattern:private-key")
        );
    }

    #[test]
    fn non_utf8_held_file() {
        let dir = tempfile::tempdir().unwrap();
        let value: Vec<u8> = (0u8..=255).rev().take(32).collect();
        std::fs::write(dir.path().join("bin"), &value).unwrap();
        let d = Detector::load_dir(dir.path()).unwrap();
        let mut data = b"prefix".to_vec();
        data.extend_from_slice(&value);
        assert_eq!(d.scan(&data).unwrap().rule, "held:bin");
        assert_eq!(
            d.scan(STANDARD.encode(&value).as_bytes()).unwrap().rule,
            "held:bin"
        );
    }
}
