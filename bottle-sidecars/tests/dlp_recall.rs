//! DLP recall against gitleaks' default rule set (the reference; see
//! docs/security.md "DLP rules"), measured through a real egress proxy.
//!
//! The corpus is generated from the vendored rules' own regexes
//! (`rand_regex`): at least [`SAMPLES`] samples per rule, each one retried
//! until it satisfies the rule as gitleaks reads it — the regex matches in
//! the context it is sent in, one of the rule's keywords occurs, the secret
//! (the `secretGroup`, else the first non-empty group, else the match) has
//! more Shannon entropy than the rule's `entropy`, and no rule or global
//! allowlist (regexes on their target, stopwords in the secret) allows it.
//! That check is done here, independently of the detector under test.
//!
//! Each sample is POSTed once as the request body and once as a request
//! header through the proxy (HTTPS upstream, intercepted with the bottle CA).
//! A rule counts as blocked on a channel when every one of its samples was
//! answered 403 with a `dlp:` rule and the upstream never saw it. The test
//! asserts at least 95% of the rules blocked, for body and header
//! separately, and prints the per-family table (docs/security.md quotes it).

mod egress_support;

use std::collections::{BTreeMap, BTreeSet};

use bottle_sidecars::dlp::rules::{translate_go_regex, GITLEAKS_DEFAULT};
use egress_support::*;
use rand10::SeedableRng as _;
use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange};
use regex_syntax::hir::{Hir, HirKind};

/// Samples per rule.
const SAMPLES: usize = 3;
/// Generation attempts per rule before it counts as "cannot produce a sample".
const ATTEMPTS: usize = 4000;
/// Required share of (non-dropped) rules blocked, per channel.
const REQUIRED: f64 = 0.95;

/// Rules left out of the corpus, with the reason. Every entry must be a
/// rule of the vendored set, and every rule the generator cannot satisfy
/// must be listed here (the test fails otherwise), so the list stays true.
const DROPPED: &[(&str, &str)] = &[
    // Rules scoped to a `path`: gitleaks applies them only to files whose
    // name matches, and traffic carries no file names (the detector leaves
    // them out too; `RuleSet::dropped`).
    (
        "freemius-secret-key",
        "path-scoped (`*.php`): traffic has no file names",
    ),
    (
        "hashicorp-tf-password",
        "path-scoped (`*.tf`, `*.hcl`): traffic has no file names",
    ),
    (
        "kubernetes-secret-yaml",
        "path-scoped (`*.yaml`): traffic has no file names",
    ),
    (
        "nuget-config-password",
        "path-scoped (`nuget.config`): traffic has no file names",
    ),
    (
        "pkcs12-file",
        "path only (a `.p12`/`.pfx` file name), no regex",
    ),
];

const ROUTES: &str = r#"
identity = "test-bottle"
[[routes]]
host = "allowed.test"
port = {TLS}
paths = ["/v1/**"]
methods = ["POST"]
allow_private = true
"#;

/// One rule of the reference set, as the generator needs it.
struct RefRule {
    id: String,
    source: String,
    re: Regex,
    secret_group: usize,
    entropy: f64,
    keywords: Vec<String>,
    allow: Vec<Allow>,
}

/// An allowlist, read conservatively: a sample is rejected when any of its
/// regexes matches its target or any stopword occurs in the secret.
struct Allow {
    target: String,
    regexes: Vec<Regex>,
    stopwords: Vec<String>,
    only_rules: Vec<String>,
}

fn build(re: &str) -> Regex {
    let re = translate_go_regex(re);
    RegexBuilder::new(&re)
        .unicode(false)
        .size_limit(64 << 20)
        .build()
        .or_else(|_| RegexBuilder::new(&re).size_limit(64 << 20).build())
        .unwrap_or_else(|e| panic!("reference regex does not compile: {e}"))
}

fn allows(v: &toml::Value) -> Vec<Allow> {
    let strs = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    vec![Allow {
        target: v
            .get("regexTarget")
            .and_then(|t| t.as_str())
            .unwrap_or("secret")
            .to_owned(),
        regexes: strs("regexes").iter().map(|r| build(r)).collect(),
        stopwords: strs("stopwords")
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        only_rules: strs("targetRules"),
    }]
}

fn reference() -> (Vec<RefRule>, Vec<Allow>, Vec<String>) {
    let doc: toml::Value = toml::from_str(GITLEAKS_DEFAULT).unwrap();
    let mut global = Vec::new();
    for a in doc.get("allowlist").into_iter().chain(
        doc.get("allowlists")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten(),
    ) {
        global.extend(allows(a));
    }
    let mut rules = Vec::new();
    let mut all_ids = Vec::new();
    for r in doc["rules"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap().to_owned();
        all_ids.push(id.clone());
        if DROPPED.iter().any(|(d, _)| *d == id) {
            continue;
        }
        let source = r
            .get("regex")
            .and_then(|s| s.as_str())
            .unwrap_or_else(|| panic!("rule {id} has no regex and is not in DROPPED"))
            .to_owned();
        let mut allow = Vec::new();
        if let Some(a) = r.get("allowlist") {
            allow.extend(allows(a));
        }
        for a in r
            .get("allowlists")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            allow.extend(allows(a));
        }
        rules.push(RefRule {
            re: build(&source),
            source,
            secret_group: r
                .get("secretGroup")
                .and_then(|g| g.as_integer())
                .unwrap_or(0) as usize,
            entropy: r.get("entropy").and_then(|e| e.as_float()).unwrap_or(0.0),
            keywords: r
                .get("keywords")
                .and_then(|k| k.as_array())
                .map(|k| {
                    k.iter()
                        .map(|s| s.as_str().unwrap().to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default(),
            allow,
            id,
        });
    }
    (rules, global, all_ids)
}

fn entropy(data: &[u8]) -> f64 {
    let mut counts = [0usize; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Does `text` hold a finding of `rule` as gitleaks reads it? Returns the
/// secret's byte range.
fn satisfies(rule: &RefRule, global: &[Allow], text: &[u8]) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    if !rule.keywords.is_empty()
        && !rule
            .keywords
            .iter()
            .any(|k| lower.windows(k.len()).any(|w| w == k.as_bytes()))
    {
        return None;
    }
    for caps in rule.re.captures_iter(text) {
        let whole = caps.get(0).unwrap();
        let secret = if rule.secret_group > 0 {
            caps.get(rule.secret_group).unwrap_or(whole)
        } else {
            caps.iter()
                .skip(1)
                .flatten()
                .find(|m| !m.is_empty())
                .unwrap_or(whole)
        };
        if rule.entropy > 0.0 && entropy(secret.as_bytes()) <= rule.entropy {
            continue;
        }
        let line_start = text[..whole.start()]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = text[whole.start()..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| whole.start() + i);
        let line = &text[line_start..line_end];
        let secret_lower = secret.as_bytes().to_ascii_lowercase();
        let allowed = global
            .iter()
            .filter(|a| a.only_rules.is_empty() || a.only_rules.contains(&rule.id))
            .chain(rule.allow.iter())
            .any(|a| {
                let target = match a.target.as_str() {
                    "match" => whole.as_bytes(),
                    "line" => line,
                    _ => secret.as_bytes(),
                };
                a.regexes.iter().any(|r| r.is_match(target))
                    || a.stopwords
                        .iter()
                        .any(|s| secret_lower.windows(s.len()).any(|w| w == s.as_bytes()))
            });
        if allowed {
            continue;
        }
        return Some((secret.start(), secret.end()));
    }
    None
}

// ------------------------------------------------------------ generation

/// Printable ASCII plus tab and newline: what a credential in a text file
/// or a request looks like.
fn printable_unicode() -> ClassUnicode {
    ClassUnicode::new([
        ClassUnicodeRange::new('\t', '\n'),
        ClassUnicodeRange::new(' ', '~'),
    ])
}

fn printable_bytes() -> ClassBytes {
    ClassBytes::new([
        ClassBytesRange::new(b'\t', b'\n'),
        ClassBytesRange::new(b' ', b'~'),
    ])
}

/// The rule's regex as something `rand_regex` can sample: look-around
/// assertions (`\b`, `^`, `$`, which it does not support) become empty —
/// the sample is checked against the real regex afterwards — and every
/// class is narrowed to printable ASCII when it has any.
fn samplable(h: &Hir) -> Hir {
    match h.kind() {
        HirKind::Empty | HirKind::Literal(_) => h.clone(),
        HirKind::Look(_) => Hir::empty(),
        HirKind::Class(Class::Unicode(c)) => {
            let mut n = c.clone();
            n.intersect(&printable_unicode());
            Hir::class(Class::Unicode(if n.ranges().is_empty() {
                c.clone()
            } else {
                n
            }))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut n = c.clone();
            n.intersect(&printable_bytes());
            Hir::class(Class::Bytes(if n.ranges().is_empty() {
                c.clone()
            } else {
                n
            }))
        }
        HirKind::Repetition(r) => {
            let mut r = r.clone();
            r.sub = Box::new(samplable(&r.sub));
            Hir::repetition(r)
        }
        HirKind::Capture(c) => {
            let mut c = c.clone();
            c.sub = Box::new(samplable(&c.sub));
            Hir::capture(c)
        }
        HirKind::Concat(v) => Hir::concat(v.iter().map(samplable).collect()),
        HirKind::Alternation(v) => Hir::alternation(v.iter().map(samplable).collect()),
    }
}

fn sampler(source: &str) -> Result<rand_regex::Regex, String> {
    let translated = translate_go_regex(source);
    let hir = match regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&translated)
    {
        Ok(h) => h,
        Err(_) => regex_syntax::Parser::new()
            .parse(&translated)
            .map_err(|e| e.to_string())?,
    };
    rand_regex::Regex::with_hir(samplable(&hir), 24).map_err(|e| e.to_string())
}

/// The value as a header value: bytes a header cannot carry are
/// percent-encoded (as a client would), surrounding whitespace dropped.
fn header_value(sample: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sample.len());
    for &b in sample.trim_ascii() {
        if b == b'\t' || (b' '..=b'~').contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(v).collect()
}

struct Sample {
    body: Vec<u8>,
    header: Vec<u8>,
    /// The secret bytes (for "the upstream never saw it").
    secret: Vec<u8>,
}

/// Up to [`SAMPLES`] distinct samples of `rule` that satisfy it both as a
/// body and as a header line.
fn generate(rule: &RefRule, global: &[Allow], rng: &mut rand10::rngs::SmallRng) -> Vec<Sample> {
    let Ok(gen) = sampler(&rule.source) else {
        return Vec::new();
    };
    let mut out: Vec<Sample> = Vec::new();
    for attempt in 0..ATTEMPTS {
        if out.len() == SAMPLES {
            break;
        }
        let raw: Vec<u8> = rand10::RngExt::sample(rng, &gen);
        let Some(body) = with_keyword(rule, raw) else {
            continue;
        };
        // Distinct samples, unless the regex is (nearly) a fixed string.
        let dup = out.iter().any(|s| s.body == body);
        if body.iter().any(|b| !b.is_ascii()) || (dup && attempt < ATTEMPTS / 2) {
            continue;
        }
        let Some((s, e)) = satisfies(rule, global, &body) else {
            continue;
        };
        let header = header_value(&body);
        if header.is_empty() {
            continue;
        }
        // What the proxy scans for a header: `name: value\r\n`, as sent and
        // percent-decoded.
        let line = |v: &[u8]| [b"x-leak: ".as_slice(), v, b"\r\n"].concat();
        if satisfies(rule, global, &line(&header)).is_none()
            && satisfies(rule, global, &line(&percent_decode(&header))).is_none()
        {
            continue;
        }
        out.push(Sample {
            secret: body[s..e].to_vec(),
            header,
            body,
        });
    }
    out
}

/// A sample that holds one of the rule's keywords, as a real one would:
/// as generated if it already does; else with a keyword written over a
/// same-length stretch the regex still matches (a `.` in a host name the
/// sampler filled with another character); else with the keyword in front
/// on the same line, as in `airtable: pat…` (rules whose keyword is context,
/// not part of the token).
fn with_keyword(rule: &RefRule, sample: Vec<u8>) -> Option<Vec<u8>> {
    let lower = sample.to_ascii_lowercase();
    let has = |k: &String| lower.windows(k.len()).any(|w| w == k.as_bytes());
    if rule.keywords.is_empty() || rule.keywords.iter().any(has) {
        return Some(sample);
    }
    for k in &rule.keywords {
        for i in 0..sample.len().saturating_sub(k.len() - 1) {
            let mut c = sample.clone();
            c[i..i + k.len()].copy_from_slice(k.as_bytes());
            if rule.re.is_match(&c) {
                return Some(c);
            }
        }
    }
    let k = rule.keywords.first()?;
    Some([k.as_bytes(), b": ", &sample].concat())
}

/// The rule's family: its vendor, the first part of its id.
fn family(id: &str) -> String {
    for two in ["new-relic", "private-key"] {
        if id.starts_with(two) {
            return two.to_owned();
        }
    }
    id.split('-').next().unwrap_or(id).to_owned()
}

#[derive(Default)]
struct Tally {
    rules: usize,
    body: usize,
    header: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitleaks_rules_are_blocked_as_body_and_header() {
    let (rules, global, all_ids) = reference();
    for (id, _) in DROPPED {
        assert!(
            all_ids.iter().any(|i| i == id),
            "DROPPED lists `{id}`, which is not a rule of the vendored set"
        );
    }
    // Fixed seed (reproducible); `DLP_RECALL_SEED=<n>` tries another corpus.
    let seed = std::env::var("DLP_RECALL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0b07_71e5);
    let mut rng = rand10::rngs::SmallRng::seed_from_u64(seed);
    let mut corpus: Vec<(&RefRule, Vec<Sample>)> = Vec::new();
    let mut ungenerable = Vec::new();
    for rule in &rules {
        let samples = generate(rule, &global, &mut rng);
        if samples.len() < SAMPLES {
            ungenerable.push(rule.id.clone());
        } else {
            corpus.push((rule, samples));
        }
    }
    assert!(
        ungenerable.is_empty(),
        "no {SAMPLES} valid samples for these rules; list them in DROPPED with the reason: {ungenerable:?}"
    );

    let b = Bottle::start(ROUTES).await;
    let client = b.client();
    let mut seq = 0usize;
    let mut table: BTreeMap<String, Tally> = BTreeMap::new();
    let mut missed_body = Vec::new();
    let mut missed_header = Vec::new();
    let mut other_rule = BTreeSet::new();
    let mut blocked_requests = 0usize;
    let mut blocked_secrets: Vec<Vec<u8>> = Vec::new();
    let mut blocked_paths: Vec<String> = Vec::new();
    for (rule, samples) in &corpus {
        let mut body_ok = true;
        let mut header_ok = true;
        for s in samples {
            for as_header in [false, true] {
                seq += 1;
                let path = format!("/v1/leak/{seq}");
                let req = client.post(b.url("allowed.test", &path));
                let req = if as_header {
                    req.header(
                        "x-leak",
                        reqwest::header::HeaderValue::from_bytes(&s.header).unwrap(),
                    )
                    .body("{}")
                } else {
                    req.body(s.body.clone())
                };
                let r = req.send().await.expect("the proxy answers");
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let blocked = status == 403 && text.contains("(dlp:");
                if blocked {
                    blocked_requests += 1;
                    blocked_secrets.push(s.secret.clone());
                    blocked_paths.push(path);
                    if !text.contains(&format!("(dlp:pattern:{})", rule.id)) {
                        other_rule.insert(rule.id.clone());
                    }
                } else if std::env::var_os("DLP_RECALL_SHOW_MISSES").is_some() {
                    // Synthetic samples only; off by default.
                    let sent = if as_header { &s.header } else { &s.body };
                    eprintln!(
                        "missed {} ({}): {:?}",
                        rule.id,
                        if as_header { "header" } else { "body" },
                        String::from_utf8_lossy(sent)
                    );
                }
                if blocked {
                } else if as_header {
                    header_ok = false;
                } else {
                    body_ok = false;
                }
            }
        }
        let t = table.entry(family(&rule.id)).or_default();
        t.rules += 1;
        t.body += usize::from(body_ok);
        t.header += usize::from(header_ok);
        if !body_ok {
            missed_body.push(rule.id.clone());
        }
        if !header_ok {
            missed_header.push(rule.id.clone());
        }
    }

    // No blocked request reached the upstream; the audit has one deny line
    // per blocked request and never the secret itself.
    let reached: BTreeSet<String> = b.upstream.seen().into_iter().map(|r| r.uri).collect();
    for p in &blocked_paths {
        assert!(
            !reached.contains(p),
            "blocked request {p} reached the upstream"
        );
    }
    assert_eq!(
        reached.len(),
        seq - blocked_requests,
        "every request not blocked reached the upstream"
    );
    let lines = poll_until(std::time::Duration::from_secs(10), || async {
        let n = b
            .audit_lines()
            .iter()
            .filter(|l| {
                l["decision"] == "deny" && l["rule"].as_str().is_some_and(|r| r.starts_with("dlp:"))
            })
            .count();
        (n >= blocked_requests).then_some(n)
    })
    .await;
    assert_eq!(
        lines,
        Some(blocked_requests),
        "one dlp deny audit line per blocked request"
    );
    let audit = std::fs::read_to_string(&b.audit).unwrap();
    for s in &blocked_secrets {
        if s.len() >= 8 {
            assert!(
                !audit.contains(&*String::from_utf8_lossy(s)),
                "a secret in the audit log"
            );
        }
    }

    let n = corpus.len();
    let body_rate = (n - missed_body.len()) as f64 / n as f64;
    let header_rate = (n - missed_header.len()) as f64 / n as f64;
    println!(
        "\nDLP recall over gitleaks' default rules ({n} rules, {SAMPLES} samples each; {} dropped)\n",
        DROPPED.len()
    );
    println!("| family | rules | body blocked | header blocked |");
    println!("|---|---:|---:|---:|");
    for (f, t) in &table {
        println!("| {f} | {} | {} | {} |", t.rules, t.body, t.header);
    }
    println!(
        "| **all** | {n} | {} ({:.1}%) | {} ({:.1}%) |",
        n - missed_body.len(),
        body_rate * 100.0,
        n - missed_header.len(),
        header_rate * 100.0
    );
    println!("\nmissed as body: {missed_body:?}");
    println!("missed as header: {missed_header:?}");
    println!("blocked, but named another rule: {other_rule:?}");
    assert!(
        body_rate >= REQUIRED,
        "body recall {:.1}% < {:.0}%; missed: {missed_body:?}",
        body_rate * 100.0,
        REQUIRED * 100.0
    );
    assert!(
        header_rate >= REQUIRED,
        "header recall {:.1}% < {:.0}%; missed: {missed_header:?}",
        header_rate * 100.0,
        REQUIRED * 100.0
    );
}
