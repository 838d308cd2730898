//! Credential pattern rules in gitleaks' TOML format.
//!
//! The built-in set is gitleaks' default configuration (`rules/gitleaks.toml`,
//! MIT, vendored as data; see `rules/LICENSE-gitleaks`) followed by bottle's
//! own rules (`rules/bottle.toml`, same format). Operators add or override
//! rules (same `id` = replace) with gitleaks-format files; a bottle disables
//! rules by id. See docs/security.md ("DLP rules").
//!
//! Semantics follow gitleaks' detector: a rule runs only when one of its
//! `keywords` occurs (case-insensitive; Aho-Corasick prefilter over the
//! scanned view); each regex match yields a secret (`secretGroup`, else the
//! first non-empty capture group, else the whole match); a secret whose
//! Shannon entropy is not above `entropy` is skipped, and so is one allowed
//! by a global or rule allowlist (`regexes` against the secret, match or
//! line per `regexTarget`, `stopwords` contained in the secret, `condition`
//! OR/AND). Traffic has no file names, so `paths` allowlist entries never
//! allow anything, and rules scoped to a `path` are not used (listed by
//! [`RuleSet::dropped`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

/// gitleaks' default rule set, vendored as data (MIT; see
/// `rules/LICENSE-gitleaks`).
pub const GITLEAKS_DEFAULT: &str = include_str!("../rules/gitleaks.toml");

/// bottle's own rules, applied after gitleaks' (same id = override).
pub const BOTTLE_RULES: &str = include_str!("../rules/bottle.toml");

/// A rule file that cannot be used: names the file, the line and the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// The file (or built-in source name).
    pub file: String,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The rule id, when the error is inside a rule.
    pub rule: Option<String>,
    /// What is wrong (never contains scanned data).
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule `{rule}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RuleError {}

// ---------------------------------------------------------------- file format

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FileCfg {
    #[serde(default)]
    extend: Option<ExtendCfg>,
    /// Old single global allowlist.
    #[serde(default)]
    allowlist: Option<AllowCfg>,
    /// New global allowlists.
    #[serde(default)]
    allowlists: Vec<AllowCfg>,
    #[serde(default)]
    rules: Vec<RuleCfg>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExtendCfg {
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleCfg {
    id: Spanned<String>,
    #[serde(default)]
    regex: Option<Spanned<String>>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    path: Option<String>,
    /// Old single rule allowlist.
    #[serde(default)]
    allowlist: Option<AllowCfg>,
    #[serde(default)]
    allowlists: Vec<AllowCfg>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct AllowCfg {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<Spanned<String>>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
    /// Global allowlists only: the rules it applies to (empty = all).
    #[serde(default)]
    target_rules: Vec<String>,
}

// ---------------------------------------------------------------- compiled

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Secret,
    Match,
    Line,
}

#[derive(Debug)]
struct Allowlist {
    and: bool,
    target: Target,
    regexes: Vec<RuleRegex>,
    /// Lower-cased stopwords (ASCII case-insensitive automaton).
    stopwords: Option<AhoCorasick>,
    /// `paths` / `commits` present: under AND they can never hold for traffic.
    has_unmatchable: bool,
    /// Rule ids this (global) allowlist is limited to; empty = all.
    target_rules: Vec<String>,
}

impl Allowlist {
    fn allows(&self, secret: &[u8], whole: &[u8], line: &[u8]) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => whole,
            Target::Line => line,
        };
        let regex = !self.regexes.is_empty()
            && self
                .regexes
                .iter()
                .any(|r| r.get(Fallback::Nothing).is_match(target));
        let stop = self
            .stopwords
            .as_ref()
            .is_some_and(|ac| ac.is_match(secret));
        if self.and {
            if self.has_unmatchable {
                return false;
            }
            let mut checks = Vec::with_capacity(2);
            if !self.regexes.is_empty() {
                checks.push(regex);
            }
            if self.stopwords.is_some() {
                checks.push(stop);
            }
            !checks.is_empty() && checks.iter().all(|c| *c)
        } else {
            regex || stop
        }
    }
}

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    id: String,
    re: RuleRegex,
    secret_group: usize,
    entropy: f64,
    keywords: Vec<String>,
    allowlists: Vec<Allowlist>,
}

/// Where a rule came from, for error messages and `bottle check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSource {
    /// File name (or `built-in gitleaks` / `built-in bottle`).
    pub file: String,
}

/// A compiled rule set: the patterns side of the detector. Cheap to share
/// (`Arc<RuleSet>`); scanning is `&self`.
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Keyword automaton (ASCII case-insensitive) and, per keyword, the
    /// rules it enables.
    keywords: Option<AhoCorasick>,
    keyword_rules: Vec<Vec<u32>>,
    /// Rules with no keyword: always run.
    unkeyed: Vec<u32>,
    global: Vec<Allowlist>,
    dropped: Vec<(String, String)>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("dropped", &self.dropped.len())
            .finish()
    }
}

/// A pattern hit: the rule id and the offset of the whole regex match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternHit {
    /// Rule id.
    pub rule: String,
    /// Byte offset of the secret (the rule's secret group) in the scanned view.
    pub offset: usize,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Go RE2 → Rust regex: the one difference the gitleaks rules hit is a
/// `{` that does not start a repetition (`{{`, `${x}`), a literal in RE2
/// and an error in Rust; escape it. Everything else in RE2's syntax means
/// the same in Rust's `regex`.
pub fn translate_go_regex(re: &str) -> String {
    let b = re.as_bytes();
    let mut out = String::with_capacity(re.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        if !c.is_ascii() {
            let ch = re[i..].chars().next().expect("char boundary");
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        if c == b'\\' {
            // copy the escape and the escaped character as they are
            let end = (i + 2).min(b.len());
            out.push_str(&re[i..end]);
            i = end;
            continue;
        }
        if in_class {
            if c == b'[' && b.get(i + 1) == Some(&b':') {
                if let Some(len) = re[i..].find(":]") {
                    out.push_str(&re[i..i + len + 2]);
                    i += len + 2;
                    continue;
                }
            }
            if c == b']' {
                in_class = false;
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        match c {
            b'[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if b.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                // a `]` first in a class is a literal
                if b.get(i) == Some(&b']') {
                    out.push(']');
                    i += 1;
                }
                continue;
            }
            b'{' => {
                let rest = &re[i + 1..];
                let close = rest.find('}');
                let is_rep = close.is_some_and(|n| {
                    let body = &rest[..n];
                    let mut parts = body.splitn(2, ',');
                    let lo = parts.next().unwrap_or("");
                    let hi = parts.next();
                    !lo.is_empty()
                        && lo.bytes().all(|d| d.is_ascii_digit())
                        && hi.is_none_or(|h| h.bytes().all(|d| d.is_ascii_digit()))
                });
                if is_rep {
                    out.push('{');
                } else {
                    out.push_str("\\{");
                }
            }
            _ => out.push(c as char),
        }
        i += 1;
    }
    out
}

/// What a regex that cannot be compiled on first use stands for (only a
/// built-in's can be compiled late, and `RuleSet::compile_all`, run by the
/// tests, proves each compiles): fail closed either way.
#[derive(Clone, Copy)]
enum Fallback {
    /// A rule: match anything (the data is flagged).
    Everything,
    /// An allowlist: match nothing (nothing is let through).
    Nothing,
}

/// A rule or allowlist regex. Operator rules are compiled when loaded, so
/// their errors name file and line then; the built-in ones (about 120 ms
/// for all of them) are compiled on first use, off the bundle's start
/// (docs/benchmarks.md "start"): most never meet their keyword.
struct RuleRegex {
    pattern: String,
    compiled: OnceLock<Regex>,
}

impl fmt::Debug for RuleRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleRegex")
            .field("pattern", &self.pattern)
            .field("compiled", &self.compiled.get().is_some())
            .finish()
    }
}

impl RuleRegex {
    fn eager(pattern: &str) -> Result<RuleRegex, String> {
        let compiled = OnceLock::new();
        let _ = compiled.set(build_regex(pattern)?);
        Ok(RuleRegex {
            pattern: pattern.to_owned(),
            compiled,
        })
    }

    fn lazy(pattern: &str) -> RuleRegex {
        RuleRegex {
            pattern: pattern.to_owned(),
            compiled: OnceLock::new(),
        }
    }

    fn new(pattern: &str, lazy: bool) -> Result<RuleRegex, String> {
        if lazy {
            Ok(RuleRegex::lazy(pattern))
        } else {
            RuleRegex::eager(pattern)
        }
    }

    fn get(&self, fallback: Fallback) -> &Regex {
        self.compiled.get_or_init(|| {
            build_regex(&self.pattern).unwrap_or_else(|_| {
                let re = match fallback {
                    Fallback::Everything => r"(?s-u)^.*",
                    Fallback::Nothing => r"(?-u)[^\x00-\xFF]",
                };
                Regex::new(re).expect("fallback regex")
            })
        })
    }

    /// Compile now; the error text on failure.
    fn check(&self) -> Result<&Regex, String> {
        if let Some(re) = self.compiled.get() {
            return Ok(re);
        }
        let re = build_regex(&self.pattern)?;
        Ok(self.compiled.get_or_init(|| re))
    }
}

fn build_regex(re: &str) -> Result<Regex, String> {
    let re = &translate_go_regex(re);
    RegexBuilder::new(re)
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .or_else(|_| {
            // Some rules need Unicode classes; try again with Unicode on.
            RegexBuilder::new(re)
                .size_limit(64 << 20)
                .dfa_size_limit(16 << 20)
                .build()
        })
        .map_err(|e| {
            // regex's message is multi-line with a caret diagram: keep the
            // last line (the reason).
            let msg = e.to_string();
            msg.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid regex")
                .trim()
                .trim_start_matches("error: ")
                .to_owned()
        })
}

/// A parsed (not yet compiled) file's worth of rules, with positions.
struct Parsed {
    file: String,
    text: String,
    cfg: FileCfg,
}

fn parse(file: &str, text: &str) -> Result<Parsed, RuleError> {
    let cfg: FileCfg = toml::from_str(text).map_err(|e| RuleError {
        file: file.to_owned(),
        line: e.span().map(|s| line_of(text, s.start)),
        rule: None,
        message: e.message().to_owned(),
    })?;
    Ok(Parsed {
        file: file.to_owned(),
        text: text.to_owned(),
        cfg,
    })
}

fn compile_allowlist(
    p: &Parsed,
    rule: Option<&str>,
    a: &AllowCfg,
    lazy: bool,
) -> Result<Allowlist, RuleError> {
    let err = |line: Option<usize>, message: String| RuleError {
        file: p.file.clone(),
        line,
        rule: rule.map(str::to_owned),
        message,
    };
    let and = match a
        .condition
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("OR") | Some("") => false,
        Some("AND") => true,
        Some(other) => {
            return Err(err(
                None,
                format!("allowlist condition `{other}` is not OR or AND"),
            ))
        }
    };
    let target = match a.regex_target.as_deref() {
        None | Some("") | Some("secret") => Target::Secret,
        Some("match") => Target::Match,
        Some("line") => Target::Line,
        Some(other) => {
            return Err(err(
                None,
                format!("allowlist regexTarget `{other}` is not secret, match or line"),
            ))
        }
    };
    let mut regexes = Vec::with_capacity(a.regexes.len());
    for r in &a.regexes {
        regexes.push(RuleRegex::new(r.get_ref(), lazy).map_err(|m| {
            err(
                Some(line_of(&p.text, r.span().start)),
                format!("allowlist regex: {m}"),
            )
        })?);
    }
    let stopwords = if a.stopwords.is_empty() {
        None
    } else {
        Some(
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .build(&a.stopwords)
                .map_err(|e| err(None, format!("stopwords: {e}")))?,
        )
    };
    Ok(Allowlist {
        and,
        target,
        regexes,
        stopwords,
        has_unmatchable: !a.paths.is_empty() || !a.commits.is_empty(),
        target_rules: a.target_rules.clone(),
    })
}

impl RuleSet {
    /// The built-in set: gitleaks' defaults, then bottle's rules.
    pub fn builtin() -> Arc<RuleSet> {
        static BUILTIN: LazyLock<Arc<RuleSet>> = LazyLock::new(|| {
            Arc::new(
                RuleSet::compile(&builtin_sources(), &[], BUILTIN_SOURCES)
                    .expect("the built-in rule files compile"),
            )
        });
        BUILTIN.clone()
    }

    /// Built-in rules, then every `*.toml` in `dir` in name order (a missing
    /// dir is no extra rules), minus the ids in `disable`. Errors name the
    /// file, line and rule; an unknown id in `disable` is an error too.
    pub fn load(dir: Option<&Path>, disable: &[String]) -> Result<RuleSet, RuleError> {
        let mut sources = builtin_sources();
        if let Some(dir) = dir {
            for path in rule_files(dir)? {
                let text = std::fs::read_to_string(&path).map_err(|e| RuleError {
                    file: path.display().to_string(),
                    line: None,
                    rule: None,
                    message: e.to_string(),
                })?;
                sources.push((path.display().to_string(), text));
            }
        }
        RuleSet::compile(&sources, disable, BUILTIN_SOURCES)
    }

    /// Check one operator rule file on top of the built-ins: the number of
    /// rules it defines, or what is wrong (file, line, rule).
    pub fn check_file(path: &Path) -> Result<usize, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: path.display().to_string(),
            line: None,
            rule: None,
            message: e.to_string(),
        })?;
        let n = parse(&path.display().to_string(), &text)?.cfg.rules.len();
        let mut sources = builtin_sources();
        sources.push((path.display().to_string(), text));
        RuleSet::from_sources(&sources, &[])?;
        Ok(n)
    }

    /// Every rule id known to this set: in use, disabled or path-scoped.
    pub fn known_ids(&self) -> impl Iterator<Item = &str> {
        self.ids()
            .chain(self.dropped.iter().map(|(id, _)| id.as_str()))
    }

    /// Compile `(file name, text)` sources in order (later ids replace
    /// earlier ones), minus `disable`.
    pub fn from_sources(
        sources: &[(String, String)],
        disable: &[String],
    ) -> Result<RuleSet, RuleError> {
        RuleSet::compile(sources, disable, 0)
    }

    /// Compile every regex not compiled yet (the built-ins' are compiled on
    /// first use), checking each rule's `secretGroup` against its groups.
    /// The tests run it on the built-in set.
    pub fn compile_all(&self) -> Result<(), RuleError> {
        let err = |rule: Option<&str>, message: String| RuleError {
            file: "built-in".into(),
            line: None,
            rule: rule.map(str::to_owned),
            message,
        };
        for a in &self.global {
            for r in &a.regexes {
                r.check()
                    .map_err(|m| err(None, format!("allowlist regex: {m}")))?;
            }
        }
        for rule in &self.rules {
            let re = rule
                .re
                .check()
                .map_err(|m| err(Some(&rule.id), format!("regex: {m}")))?;
            check_group(re, rule.secret_group).map_err(|m| err(Some(&rule.id), m))?;
            for a in &rule.allowlists {
                for r in &a.regexes {
                    r.check()
                        .map_err(|m| err(Some(&rule.id), format!("allowlist regex: {m}")))?;
                }
            }
        }
        Ok(())
    }

    /// [`RuleSet::from_sources`], with the regexes of the first
    /// `lazy_sources` sources (the built-ins) compiled on first use.
    fn compile(
        sources: &[(String, String)],
        disable: &[String],
        lazy_sources: usize,
    ) -> Result<RuleSet, RuleError> {
        let mut parsed = Vec::with_capacity(sources.len());
        for (file, text) in sources {
            parsed.push(parse(file, text)?);
        }
        // id -> (source index, rule index); later wins, order of first appearance kept.
        let mut order: Vec<String> = Vec::new();
        let mut by_id: HashMap<String, (usize, usize)> = HashMap::new();
        let mut disabled: Vec<String> = disable.to_vec();
        for (si, p) in parsed.iter().enumerate() {
            if let Some(ext) = &p.cfg.extend {
                disabled.extend(ext.disabled_rules.iter().cloned());
            }
            for (ri, r) in p.cfg.rules.iter().enumerate() {
                let id = r.id.get_ref().clone();
                if id.trim().is_empty() {
                    return Err(RuleError {
                        file: p.file.clone(),
                        line: Some(line_of(&p.text, r.id.span().start)),
                        rule: None,
                        message: "rule id is empty".into(),
                    });
                }
                if by_id.insert(id.clone(), (si, ri)).is_none() {
                    order.push(id);
                }
            }
        }
        for id in disable {
            if !by_id.contains_key(id) {
                return Err(RuleError {
                    file: "dlp_disable".into(),
                    line: None,
                    rule: Some(id.clone()),
                    message: "no rule has this id (see `bottle check` for the rule files in use)"
                        .into(),
                });
            }
        }
        let mut rules = Vec::new();
        let mut dropped = Vec::new();
        for id in &order {
            if disabled.contains(id) {
                dropped.push((id.clone(), "disabled".into()));
                continue;
            }
            let (si, ri) = by_id[id];
            let p = &parsed[si];
            let r = &p.cfg.rules[ri];
            // Lines are counted only for an error (counting them for every
            // rule of a large file is quadratic).
            let rule_line = || Some(line_of(&p.text, r.id.span().start));
            let err = |line: Option<usize>, message: String| RuleError {
                file: p.file.clone(),
                line,
                rule: Some(id.clone()),
                message,
            };
            if r.path.is_some() {
                dropped.push((
                    id.clone(),
                    "scoped to file paths; traffic carries no file names".into(),
                ));
                continue;
            }
            let Some(regex) = &r.regex else {
                return Err(err(
                    rule_line(),
                    "rule has neither `regex` nor `path`".into(),
                ));
            };
            let re_line = || Some(line_of(&p.text, regex.span().start));
            let lazy = si < lazy_sources;
            let re = RuleRegex::new(regex.get_ref(), lazy)
                .map_err(|m| err(re_line(), format!("regex: {m}")))?;
            let secret_group = r.secret_group.unwrap_or(0);
            if let Some(compiled) = re.compiled.get() {
                check_group(compiled, secret_group).map_err(|m| err(re_line(), m))?;
            }
            if let Some(e) = r.entropy {
                if !(0.0..=8.0).contains(&e) {
                    return Err(err(
                        rule_line(),
                        format!("entropy {e} is not between 0 and 8"),
                    ));
                }
            }
            let mut allowlists = Vec::new();
            for a in r.allowlist.iter().chain(r.allowlists.iter()) {
                allowlists.push(compile_allowlist(p, Some(id), a, lazy)?);
            }
            rules.push(Rule {
                id: id.clone(),
                re,
                secret_group,
                entropy: r.entropy.unwrap_or(0.0),
                keywords: r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
                allowlists,
            });
        }
        let mut global = Vec::new();
        for (si, p) in parsed.iter().enumerate() {
            for a in p.cfg.allowlist.iter().chain(p.cfg.allowlists.iter()) {
                global.push(compile_allowlist(p, None, a, si < lazy_sources)?);
            }
        }
        // Keyword prefilter.
        let mut kw_index: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut unkeyed = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.keywords.is_empty() {
                unkeyed.push(i as u32);
            }
            for k in &r.keywords {
                kw_index.entry(k.clone()).or_default().push(i as u32);
            }
        }
        let (words, keyword_rules): (Vec<String>, Vec<Vec<u32>>) = kw_index.into_iter().unzip();
        let keywords = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    // A DFA: every request head and body prefix goes
                    // through this automaton (a few hundred KiB, once).
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&words)
                    .map_err(|e| RuleError {
                        file: "keywords".into(),
                        line: None,
                        rule: None,
                        message: e.to_string(),
                    })?,
            )
        };
        Ok(RuleSet {
            rules,
            keywords,
            keyword_rules,
            unkeyed,
            global,
            dropped,
        })
    }

    /// Number of rules in use.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rule in use.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Ids of the rules in use, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Rules not in use, with the reason (`disabled`, path-scoped).
    pub fn dropped(&self) -> &[(String, String)] {
        &self.dropped
    }

    /// The leftmost hit in `data` (one view), or `None`.
    pub fn scan(&self, data: &[u8]) -> Option<PatternHit> {
        let n = self.rules.len();
        if n == 0 {
            return None;
        }
        // One bit per rule; on the stack for up to 512 rules (a scan runs
        // for every request head, so no allocation when nothing matches).
        let words = n.div_ceil(64);
        let mut small = [0u64; 8];
        let mut big = Vec::new();
        let candidate: &mut [u64] = if words <= small.len() {
            &mut small[..words]
        } else {
            big.resize(words, 0);
            &mut big
        };
        let mut any = false;
        let mut mark = |i: u32| {
            candidate[i as usize / 64] |= 1 << (i % 64);
            any = true;
        };
        for &i in &self.unkeyed {
            mark(i);
        }
        if let Some(ac) = &self.keywords {
            for m in ac.find_overlapping_iter(data) {
                for &i in &self.keyword_rules[m.pattern().as_usize()] {
                    mark(i);
                }
            }
        }
        if !any {
            return None;
        }
        let candidate = |i: usize| candidate[i / 64] & (1 << (i % 64)) != 0;
        // Leftmost secret wins; at the same offset a specific rule wins over
        // a `generic-*` one, then file order.
        let mut best: Option<(usize, bool, usize)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !candidate(i) {
                continue;
            }
            let generic = rule.id.starts_with("generic");
            let limit = best.map_or(data.len(), |(off, _, _)| off + 1);
            if let Some(off) = self.first_hit(rule, data, limit) {
                if best.is_none_or(|(b, bg, _)| off < b || (off == b && bg && !generic)) {
                    best = Some((off, generic, i));
                }
            }
        }
        best.map(|(offset, _, i)| PatternHit {
            rule: self.rules[i].id.clone(),
            offset,
        })
    }

    /// Offset of the secret of the first allowed match of `rule` whose
    /// whole match starts before `limit`.
    fn first_hit(&self, rule: &Rule, data: &[u8], limit: usize) -> Option<usize> {
        for caps in rule.re.get(Fallback::Everything).captures_iter(data) {
            let whole = caps.get(0).expect("group 0");
            if whole.start() >= limit {
                return None;
            }
            let secret = if rule.secret_group > 0 {
                caps.get(rule.secret_group).unwrap_or(whole)
            } else {
                caps.iter()
                    .skip(1)
                    .flatten()
                    .find(|m| !m.is_empty())
                    .unwrap_or(whole)
            };
            if rule.entropy > 0.0 && shannon_entropy(secret.as_bytes()) <= rule.entropy {
                continue;
            }
            let line = line_around(data, whole.start(), whole.end());
            let allowed = self
                .global
                .iter()
                .filter(|a| a.target_rules.is_empty() || a.target_rules.contains(&rule.id))
                .chain(rule.allowlists.iter())
                .any(|a| a.allows(secret.as_bytes(), whole.as_bytes(), line));
            if allowed {
                continue;
            }
            return Some(secret.start());
        }
        None
    }

    /// The keywords of rule `id` (for tests and `bottle check`).
    pub fn keywords_of(&self, id: &str) -> Option<&[String]> {
        self.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.keywords.as_slice())
    }
}

/// The line(s) of `data` holding `start..end`.
fn line_around(data: &[u8], start: usize, end: usize) -> &[u8] {
    let from = data[..start]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    // The line the match starts on: a match may end on the newline that
    // terminates it (the rule's trailing delimiter class holds `\s`), and
    // that must not pull the next line into an anchored line allowlist.
    let _ = end;
    let to = data[start..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(data.len(), |i| start + i);
    &data[from..to]
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// How many sources [`builtin_sources`] gives.
const BUILTIN_SOURCES: usize = 2;

/// `secretGroup` must name a group of the regex.
fn check_group(re: &Regex, secret_group: usize) -> Result<(), String> {
    let groups = re.captures_len() - 1;
    if secret_group > groups {
        return Err(format!(
            "secretGroup {secret_group} but the regex has {groups} group(s)"
        ));
    }
    Ok(())
}

fn builtin_sources() -> Vec<(String, String)> {
    vec![
        ("built-in gitleaks.toml".into(), GITLEAKS_DEFAULT.into()),
        ("built-in bottle.toml".into(), BOTTLE_RULES.into()),
    ]
}

/// `*.toml` files in `dir`, sorted by name; a missing dir has none.
pub fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(RuleError {
                file: dir.display().to_string(),
                line: None,
                rule: None,
                message: e.to_string(),
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------- rules in force

/// The installed set; `None` until [`install`] (then the built-in set is in
/// force, compiled on first use only: a bundle that installs its own set at
/// start never compiles the built-ins a second time).
static CURRENT: RwLock<Option<Arc<RuleSet>>> = RwLock::new(None);

/// The rule set new detectors use (the built-in set until [`install`]).
pub fn current() -> Arc<RuleSet> {
    let installed = CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone();
    installed.unwrap_or_else(RuleSet::builtin)
}

/// Put `rules` in force for detectors built from now on (the bundle calls
/// this at start and on reload; a failed load never gets here, so the
/// previous rules stay in force).
pub fn install(rules: Arc<RuleSet>) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(rules);
}

/// Load `dir` (+ built-ins, minus `disable`) and install it; on error the
/// rules in force are kept and the error returned. Either way `dir` and
/// `disable` are remembered for [`refresh`].
pub fn reload(dir: Option<&Path>, disable: &[String]) -> Result<Arc<RuleSet>, RuleError> {
    let stamp = dir.map(stamp).unwrap_or_default();
    *SOURCE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Source {
        dir: dir.map(Path::to_path_buf),
        disable: disable.to_vec(),
        stamp,
    });
    // No operator file and nothing disabled: that is the built-in set,
    // compiled once per process (start-up time, docs/benchmarks.md "start").
    let only_builtin = disable.is_empty()
        && match dir {
            None => true,
            Some(d) => rule_files(d)?.is_empty(),
        };
    let set = if only_builtin {
        RuleSet::builtin()
    } else {
        Arc::new(RuleSet::load(dir, disable)?)
    };
    install(set.clone());
    Ok(set)
}

/// What [`refresh`] did.
#[derive(Debug)]
pub enum Refresh {
    /// No rule file changed since the last load (or nothing was loaded
    /// from a directory).
    Unchanged,
    /// The files changed and the new rules are in force.
    Reloaded(Arc<RuleSet>),
    /// The files changed but do not load; the previous rules stay in force.
    /// Reported once per change.
    Failed(RuleError),
}

/// The operator rule files last given to [`reload`], with their state then.
struct Source {
    dir: Option<PathBuf>,
    disable: Vec<String>,
    stamp: Stamp,
}

/// Each rule file's name, mtime, size and inode (an atomic rename changes
/// the inode), in name order; and the dir listing error, if any.
type Stamp = Vec<(PathBuf, Option<std::time::SystemTime>, u64, u64)>;

static SOURCE: std::sync::Mutex<Option<Source>> = std::sync::Mutex::new(None);

fn stamp(dir: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    match rule_files(dir) {
        Ok(files) => files
            .into_iter()
            .map(|p| match std::fs::metadata(&p) {
                Ok(m) => (p, m.modified().ok(), m.len(), m.ino()),
                Err(_) => (p, None, 0, 0),
            })
            .collect(),
        Err(_) => vec![(dir.to_path_buf(), None, u64::MAX, 0)],
    }
}

/// Reload the operator rule files given to the last [`reload`] if any of
/// them changed (added, removed, rewritten). Cheap when nothing changed (a
/// directory listing and a `stat` per file): the bundle's egress daemon
/// calls it on its policy poll (ARCHITECTURE.md, "egress").
pub fn refresh() -> Refresh {
    let mut guard = SOURCE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(src) = guard.as_mut() else {
        return Refresh::Unchanged;
    };
    let Some(dir) = src.dir.clone() else {
        return Refresh::Unchanged;
    };
    let now = stamp(&dir);
    if now == src.stamp {
        return Refresh::Unchanged;
    }
    src.stamp = now;
    match RuleSet::load(Some(&dir), &src.disable) {
        Ok(set) => {
            let set = Arc::new(set);
            install(set.clone());
            Refresh::Reloaded(set)
        }
        Err(e) => Refresh::Failed(e),
    }
}
