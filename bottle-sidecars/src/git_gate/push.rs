//! The push decision: ref names, ref policy, fast-forward/delete rules,
//! secret scan of every object the push adds, and the upstream push. Runs in the daemon when the
//! mirror's pre-receive hook calls back, with git's quarantine env so the
//! pushed (not yet accepted) objects are visible.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use crate::dlp::Detector;

use super::config::{compile_glob, GateConfig, PushRule, RemoteConfig};
use super::git::{git, short_stderr, upstream_env};
use super::hook::RefUpdate;

/// What the daemon decided about one push.
#[derive(Debug)]
pub struct Outcome {
    /// Accepted and landed upstream.
    pub ok: bool,
    /// The deciding rule (`push:<pattern>`, `grant:<id>`, `ref-not-allowed`,
    /// `held:<name>`, `pattern:<id>`, `upstream-push-failed`, …).
    pub rule: String,
    /// The ref a refusal is about, if any.
    pub refname: Option<String>,
    /// Number of new commits scanned.
    pub scanned: usize,
    /// Lines for the agent's terminal.
    pub messages: Vec<String>,
    /// Time spent scanning (ms).
    pub scan_ms: u64,
    /// Time spent pushing upstream (ms).
    pub upstream_ms: u64,
}

impl Outcome {
    fn deny(rule: impl Into<String>, refname: Option<&str>, messages: Vec<String>) -> Self {
        Self {
            ok: false,
            rule: rule.into(),
            refname: refname.map(str::to_owned),
            scanned: 0,
            messages,
            scan_ms: 0,
            upstream_ms: 0,
        }
    }
}

/// Where the push happens.
pub struct PushContext<'a> {
    /// The live config (re-read for this push).
    pub cfg: &'a GateConfig,
    /// The remote pushed to.
    pub remote: &'a RemoteConfig,
    /// Its mirror.
    pub mirror: &'a Path,
    /// git's quarantine env from the hook.
    pub env: &'a [(String, String)],
    /// The secret detector (held values of this bottle + patterns).
    pub detector: &'a Detector,
}

/// `name` as an audit line may carry it: itself when the detector finds
/// nothing secret-shaped in it, else `[redacted:<rule>]`; `[redacted]` when
/// there is no detector to ask (docs/security.md, S10).
pub fn audit_name(det: Option<&Detector>, name: &str) -> String {
    match det.map(|d| d.scan(name.as_bytes())) {
        Some(None) => name.to_owned(),
        Some(Some(f)) => format!("[redacted:{}]", f.rule),
        None => "[redacted]".to_owned(),
    }
}

impl PushContext<'_> {
    fn git(&self) -> Command {
        let mut c = git();
        c.arg("--git-dir").arg(self.mirror);
        for (k, v) in self.env {
            c.env(k, v);
        }
        c
    }
}

const PREFIX: &str = "git-gate:";

fn ask_line(remote: &str, refname: &str) -> String {
    format!(
        "{PREFIX} to ask the operator for it, call the supervise tool request_git_push with remote=\"{remote}\", ref_pattern=\"{refname}\" and a reason."
    )
}

/// What the ref policy may ask git about one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// The new object is a commit, or an annotated tag of a commit.
    PushesACommit,
    /// The new object descends from the old one.
    FastForward,
}

/// Why the ref policy refuses an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefDenial {
    /// No rule or live grant matches the ref (the patterns that do exist).
    NotAllowed {
        refname: String,
        allowed: Vec<String>,
    },
    /// A delete no matching rule allows.
    DeleteNotAllowed { refname: String },
    /// Not a commit (nor a tag of one).
    NonCommit { refname: String },
    /// Not a fast-forward, and no matching rule allows force.
    NonFastForward { refname: String },
    /// git could not answer.
    Git { refname: String, error: String },
}

impl RefDenial {
    /// The audit rule.
    pub fn rule(&self) -> &'static str {
        match self {
            RefDenial::NotAllowed { .. } => "ref-not-allowed",
            RefDenial::DeleteNotAllowed { .. } => "delete-not-allowed",
            RefDenial::NonCommit { .. } => "non-commit-object",
            RefDenial::NonFastForward { .. } => "non-fast-forward",
            RefDenial::Git { .. } => "git-error",
        }
    }

    fn into_outcome(self, remote: &str) -> Outcome {
        let rule = self.rule();
        match self {
            RefDenial::NotAllowed { refname: r, allowed } => {
                let allowed = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                Outcome::deny(
                    rule,
                    Some(&r),
                    vec![
                        format!("{PREFIX} push refused: {r} is not a pushable ref on remote \"{remote}\" (pushable: {allowed})."),
                        ask_line(remote, &r),
                    ],
                )
            }
            RefDenial::DeleteNotAllowed { refname: r } => Outcome::deny(
                rule,
                Some(&r),
                vec![
                    format!("{PREFIX} push refused: deleting {r} on remote \"{remote}\" is not allowed."),
                    ask_line(remote, &r),
                ],
            ),
            RefDenial::NonCommit { refname: r } => non_commit(&r),
            RefDenial::NonFastForward { refname: r } => Outcome::deny(
                rule,
                Some(&r),
                vec![
                    format!("{PREFIX} push refused: {r} on remote \"{remote}\" is not a fast-forward and force-pushing it is not allowed."),
                    format!("{PREFIX} rebase onto the current {r} (git pull --rebase) and push again, or ask for force with request_git_push."),
                ],
            ),
            RefDenial::Git { refname: r, error } => {
                Outcome::deny(rule, Some(&r), vec![format!("{PREFIX} push refused: {error}")])
            }
        }
    }
}

/// The ref policy of one remote at one instant: its push rules and live
/// grants, compiled. [`RefPolicy::decide`] is pure: what it needs from git
/// it asks through `facts`, and only when the answer matters.
pub struct RefPolicy<'a> {
    compiled: Vec<(&'a str, &'a PushRule, globset::GlobMatcher)>,
}

impl<'a> RefPolicy<'a> {
    /// Compile `rules` (label, rule) — a pattern that does not compile
    /// allows nothing.
    pub fn new(_remote: &str, rules: &'a [(String, PushRule)]) -> Self {
        let compiled = rules
            .iter()
            .filter_map(|(label, rule)| {
                compile_glob(&rule.pattern)
                    .ok()
                    .map(|g| (label.as_str(), rule, g))
            })
            .collect();
        Self { compiled }
    }

    /// The label of the rule that allows `u`, or why none does.
    pub fn decide(
        &self,
        u: &RefUpdate,
        mut facts: impl FnMut(Fact) -> Result<bool, String>,
    ) -> Result<String, RefDenial> {
        let r = u.refname.as_str();
        let refname = || r.to_owned();
        let matching: Vec<_> = self
            .compiled
            .iter()
            .filter(|(_, _, g)| g.is_match(r))
            .collect();
        if matching.is_empty() {
            return Err(RefDenial::NotAllowed {
                refname: refname(),
                allowed: self
                    .compiled
                    .iter()
                    .map(|(_, rule, _)| rule.pattern.clone())
                    .collect(),
            });
        }
        if u.is_delete() {
            return matching
                .iter()
                .find(|(_, rule, _)| rule.delete)
                .map(|(label, _, _)| label.to_string())
                .ok_or(RefDenial::DeleteNotAllowed { refname: refname() });
        }
        let git_err = |error: String| RefDenial::Git {
            refname: refname(),
            error,
        };
        if !facts(Fact::PushesACommit).map_err(git_err)? {
            return Err(RefDenial::NonCommit { refname: refname() });
        }
        if u.is_create() || facts(Fact::FastForward).map_err(git_err)? {
            return Ok(matching[0].0.to_owned());
        }
        matching
            .iter()
            .find(|(_, rule, _)| rule.force)
            .map(|(label, _, _)| label.to_string())
            .ok_or(RefDenial::NonFastForward { refname: refname() })
    }
}

/// Decide on `updates`; on pass push them upstream. Never returns Ok for a
/// push that did not land upstream.
pub fn decide(ctx: &PushContext<'_>, updates: &[RefUpdate]) -> Outcome {
    let remote = ctx.remote.name.as_str();
    if updates.is_empty() {
        return Outcome::deny(
            "empty-push",
            None,
            vec![format!("{PREFIX} nothing to push")],
        );
    }
    // Ref names first: a name is pushed upstream and shown in messages and
    // the record, so one that carries a secret goes nowhere.
    for u in updates {
        if let Some(f) = ctx.detector.scan(u.refname.as_bytes()) {
            return Outcome::deny(
                f.rule.clone(),
                Some(&format!("[redacted:{}]", f.rule)),
                vec![
                    format!("{PREFIX} push refused: the name of a ref you pushed contains a secret (rule {}).", f.rule),
                    format!("{PREFIX} push under another ref name; secrets never leave the bottle."),
                ],
            );
        }
    }
    let rules = ctx.cfg.push_rules(remote, SystemTime::now());
    let policy = RefPolicy::new(remote, &rules);
    let mut labels = Vec::new();
    for u in updates {
        // git is asked only what the policy needs (no object type for a
        // delete, no ancestry for a create)
        let facts = |q: Fact| -> Result<bool, String> {
            match q {
                Fact::PushesACommit => match object_type(ctx, &u.new)?.as_str() {
                    "commit" => Ok(true),
                    "tag" => {
                        Ok(object_type(ctx, &format!("{}^{{}}", u.new)).as_deref() == Ok("commit"))
                    }
                    _ => Ok(false),
                },
                Fact::FastForward => is_ancestor(ctx, &u.old, &u.new),
            }
        };
        match policy.decide(u, facts) {
            Ok(label) => labels.push(label),
            Err(d) => return d.into_outcome(remote),
        }
    }

    // Secret scan of every object the push adds.
    let news: Vec<&str> = updates
        .iter()
        .filter(|u| !u.is_delete())
        .map(|u| u.new.as_str())
        .collect();
    let scan_started = std::time::Instant::now();
    let scan = match scan_new(ctx, ctx.detector, &news) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::deny(
                "git-error",
                None,
                vec![format!("{PREFIX} push refused: scanning failed: {e}")],
            )
        }
    };
    let scan_ms = scan_started.elapsed().as_millis() as u64;
    if let Some(hit) = scan.hit {
        // The path is the agent's own text, but one carrying the secret is
        // not repeated.
        let place = match (&hit.path, hit.kind) {
            _ if hit.gitlink => String::from("in a submodule (gitlink) id "),
            (Some(p), "blob" | "tree") if ctx.detector.scan(p.as_bytes()).is_none() => {
                format!("in {p} ")
            }
            (_, "commit") => String::from("in its message/metadata "),
            (_, "tree") => String::from("in a file or directory name "),
            _ => String::new(),
        };
        let mut out = Outcome::deny(
            hit.rule.clone(),
            None,
            vec![
                format!(
                    "{PREFIX} push refused: {} {place}contains a secret (rule {}).",
                    format!("{} {}", hit.kind, hit.object).trim_end(),
                    hit.rule
                ),
                format!("{PREFIX} remove it from the commit (rewrite the commit, e.g. git commit --amend / git rebase -i) and push again; secrets never leave the bottle."),
            ],
        );
        out.scanned = scan.commits;
        out.scan_ms = scan_ms;
        return out;
    }

    // Land it upstream; only then may the mirror accept it.
    let push_started = std::time::Instant::now();
    let pushed = push_upstream(ctx, updates);
    let upstream_ms = push_started.elapsed().as_millis() as u64;
    if let Err(e) = pushed {
        let mut out = Outcome::deny(
            "upstream-push-failed",
            None,
            vec![format!("{PREFIX} push refused: the upstream push to remote \"{remote}\" failed, nothing was accepted: {e}")],
        );
        out.scanned = scan.commits;
        out.scan_ms = scan_ms;
        out.upstream_ms = upstream_ms;
        return out;
    }
    labels.dedup();
    Outcome {
        ok: true,
        rule: labels.join(","),
        refname: None,
        scanned: scan.commits,
        scan_ms,
        upstream_ms,
        messages: vec![format!(
            "{PREFIX} pushed to upstream \"{remote}\" ({} new commit{} scanned).",
            scan.commits,
            if scan.commits == 1 { "" } else { "s" }
        )],
    }
}

fn non_commit(r: &str) -> Outcome {
    Outcome::deny(
        "non-commit-object",
        Some(r),
        vec![format!(
            "{PREFIX} push refused: {r} must point at a commit or an annotated tag of one."
        )],
    )
}

fn object_type(ctx: &PushContext<'_>, spec: &str) -> Result<String, String> {
    let out = ctx
        .git()
        .args(["cat-file", "-t", spec])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("unknown object {spec}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn is_ancestor(ctx: &PushContext<'_>, old: &str, new: &str) -> Result<bool, String> {
    let st = ctx
        .git()
        .args(["merge-base", "--is-ancestor", old, new])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    match st.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(format!("cannot compare {old} and {new}")),
    }
}

struct Hit {
    rule: String,
    kind: &'static str,
    object: String,
    path: Option<String>,
    /// Found in the ids of gitlink (submodule, mode 160000) entries.
    gitlink: bool,
}

struct ScanResult {
    commits: usize,
    hit: Option<Hit>,
}

/// Largest piece of one object scanned at once; bigger blobs are scanned in
/// windows that overlap by [`OVERLAP`] bytes.
const MAX_CHUNK: usize = 64 << 20;
/// Overlap of consecutive windows of a big blob (longer than any encoded
/// held value or credential pattern the detector looks for).
const OVERLAP: usize = 1 << 20;

/// Scan every object the push adds — every object reachable from `news` but
/// from no ref the gate already has (`rev-list --objects <news> --not
/// --all`), as raw `cat-file` content:
///
/// - commits whole: every header (`author`, `committer`, `gpgsig`,
///   `mergetag`, `encoding`, unknown ones) and the message;
/// - annotated tags whole (nested tags are objects of their own);
/// - trees by their entry names (file and directory names, also of entries
///   no diff shows, such as empty directories) and by the ids of their
///   gitlink (submodule, mode 160000) entries: git never checks that a
///   gitlink names an existing commit, so its 20 bytes are free data. Each
///   tree's gitlink ids are scanned as hex and as raw bytes, one after the
///   other, and so are the ids of all the gitlinks of the push together (a
///   value split over the gitlinks of several trees, in `rev-list` order);
///   see docs/git-gate.md;
/// - blobs whole (not only the lines a diff would add).
///
/// Notes refs are commits, trees and blobs like any other.
fn scan_new(ctx: &PushContext<'_>, det: &Detector, news: &[&str]) -> Result<ScanResult, String> {
    if news.is_empty() {
        return Ok(ScanResult {
            commits: 0,
            hit: None,
        });
    }
    let out = ctx
        .git()
        .args(["rev-list", "--objects"])
        .args(news)
        .args(["--not", "--all", "--"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(short_stderr(&out.stderr));
    }
    // `<oid>[ <path>]` per line. A path is cut at a newline by git, so only
    // lines that start with an object id count; a forged one only adds an
    // object to scan.
    let mut objects: Vec<(String, Option<String>)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (oid, path) = match line.split_once(' ') {
            Some((o, p)) => (o, Some(p)),
            None => (line, None),
        };
        if !((oid.len() == 40 || oid.len() == 64) && oid.bytes().all(|b| b.is_ascii_hexdigit())) {
            continue;
        }
        let path = path.filter(|p| !p.is_empty()).map(str::to_owned);
        objects.push((oid.to_owned(), path));
    }
    // Whole paths: a value containing `/` spans several trees' entry names.
    let paths: Vec<u8> = objects
        .iter()
        .filter_map(|(_, p)| p.as_deref())
        .flat_map(|p| p.bytes().chain(std::iter::once(b'\n')))
        .collect();
    if let Some(f) = det.scan(&paths) {
        return Ok(ScanResult {
            commits: count_new(ctx, news)?,
            hit: Some(Hit {
                rule: f.rule,
                kind: "tree",
                object: String::new(),
                path: None,
                gitlink: false,
            }),
        });
    }
    let mut child = ctx
        .git()
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let list: String = objects.iter().map(|(o, _)| format!("{o}\n")).collect();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(list.as_bytes());
    });
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    let scanned = scan_batch(&mut reader, det, &objects);
    let _ = child.kill();
    let _ = child.wait();
    let _ = feeder.join();
    let (commits, hit) = scanned?;
    let commits = if hit.is_some() {
        count_new(ctx, news)?
    } else {
        commits
    };
    Ok(ScanResult { commits, hit })
}

/// Read `cat-file --batch` answers for `objects` (in order) and scan each.
fn scan_batch(
    reader: &mut impl BufRead,
    det: &Detector,
    objects: &[(String, Option<String>)],
) -> Result<(usize, Option<Hit>), String> {
    let mut commits = 0usize;
    let mut header = Vec::new();
    // The gitlink ids of every tree so far, raw and as hex.
    let mut all_links = Gitlinks::default();
    for (oid, path) in objects {
        header.clear();
        reader
            .read_until(b'\n', &mut header)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&header);
        let mut fields = text.split_whitespace();
        let (Some(_), Some(kind), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("cannot read object {}", short(oid)));
        };
        let size: u64 = size
            .parse()
            .map_err(|_| format!("cannot read object {}", short(oid)))?;
        let kind: &'static str = match kind {
            "commit" => "commit",
            "tag" => "tag",
            "tree" => "tree",
            "blob" => "blob",
            _ => return Err(format!("unexpected object type of {}", short(oid))),
        };
        if kind == "commit" {
            commits += 1;
        }
        let mut remaining = size;
        let mut window: Vec<u8> = Vec::new();
        let mut found = None;
        while remaining > 0 || window.is_empty() {
            let want = (MAX_CHUNK - window.len()).min(remaining as usize);
            let start = window.len();
            window.resize(start + want, 0);
            reader
                .read_exact(&mut window[start..])
                .map_err(|e| e.to_string())?;
            remaining -= want as u64;
            let mut gitlink = false;
            let finding = if kind == "tree" {
                if remaining > 0 {
                    // A tree is parsed whole; one bigger than a window
                    // (about a million entries) is not pushed.
                    return Err(format!(
                        "tree {} is larger than {} MiB",
                        short(oid),
                        MAX_CHUNK >> 20
                    ));
                }
                let (names, links) = tree_entries(&window, oid.len() / 2, path.as_deref())
                    .map_err(|e| format!("tree {}: {e}", short(oid)))?;
                let f = det.scan(&names);
                if f.is_some() {
                    f
                } else {
                    gitlink = true;
                    let f = links.scan(det);
                    all_links.extend(&links);
                    f
                }
            } else {
                det.scan(&window)
            };
            if let Some(f) = finding {
                found = Some((f, gitlink));
                break;
            }
            if remaining == 0 {
                break;
            }
            // Keep an overlap so a value across the window edge is found.
            let keep = window.len().saturating_sub(OVERLAP);
            window.drain(..keep);
        }
        if let Some((f, gitlink)) = found {
            return Ok((
                commits,
                Some(Hit {
                    rule: f.rule,
                    kind,
                    object: short(oid),
                    path: path.clone(),
                    gitlink,
                }),
            ));
        }
        // The newline after each object's content.
        let mut nl = [0u8; 1];
        reader.read_exact(&mut nl).map_err(|e| e.to_string())?;
    }
    // A value split over the gitlinks of several trees.
    if let Some(f) = all_links.scan(det) {
        return Ok((
            commits,
            Some(Hit {
                rule: f.rule,
                kind: "tree",
                object: String::new(),
                path: None,
                gitlink: true,
            }),
        ));
    }
    Ok((commits, None))
}

/// The ids of gitlink entries (mode 160000), in order: their raw bytes
/// back to back, and their hex spelling back to back.
#[derive(Default)]
struct Gitlinks {
    raw: Vec<u8>,
    hex: Vec<u8>,
}

impl Gitlinks {
    fn push(&mut self, id: &[u8]) {
        self.raw.extend_from_slice(id);
        for b in id {
            self.hex.extend_from_slice(format!("{b:02x}").as_bytes());
        }
    }

    fn extend(&mut self, other: &Gitlinks) {
        self.raw.extend_from_slice(&other.raw);
        self.hex.extend_from_slice(&other.hex);
    }

    /// The first finding in the hex, then in the raw bytes.
    fn scan(&self, det: &Detector) -> Option<crate::dlp::Finding> {
        if self.raw.is_empty() {
            return None;
        }
        det.scan(&self.hex).or_else(|| det.scan(&self.raw))
    }
}

/// The entry names of a raw tree object (`<mode> <name>\0<hash>` each), one
/// per line, each behind the tree's own path (`dir`, as `rev-list` found
/// it), so a value spelled across directories is whole on one line; and the
/// ids of its gitlink entries (mode `160000`). A tree that does not parse
/// is an error (git would not have accepted it either).
fn tree_entries(
    raw: &[u8],
    hash_len: usize,
    dir: Option<&str>,
) -> Result<(Vec<u8>, Gitlinks), String> {
    let mut out = Vec::with_capacity(raw.len() * 2);
    let mut links = Gitlinks::default();
    let mut rest = raw;
    while !rest.is_empty() {
        let bad = || "malformed tree entry".to_string();
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let mode = &rest[..sp];
        let after = &rest[sp + 1..];
        let nul = after.iter().position(|&b| b == 0).ok_or_else(bad)?;
        if let Some(d) = dir {
            out.extend_from_slice(d.as_bytes());
            out.push(b'/');
        }
        out.extend_from_slice(&after[..nul]);
        out.push(b'\n');
        let id = after.get(nul + 1..nul + 1 + hash_len).ok_or_else(bad)?;
        if mode == b"160000" {
            links.push(id);
        }
        rest = &after[nul + 1 + hash_len..];
    }
    Ok((out, links))
}

/// Number of commits reachable from `news` and from no ref the gate has.
fn count_new(ctx: &PushContext<'_>, news: &[&str]) -> Result<usize, String> {
    let out = ctx
        .git()
        .args(["rev-list", "--count"])
        .args(news)
        .args(["--not", "--all", "--"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(short_stderr(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| "bad rev-list count".to_string())
}

fn short(oid: &str) -> String {
    oid.chars().take(12).collect()
}

/// `git push --atomic` of exactly these updates, each with a lease on the old
/// value the gate saw (so a concurrent upstream change fails the push
/// instead of being overwritten).
fn push_upstream(ctx: &PushContext<'_>, updates: &[RefUpdate]) -> Result<(), String> {
    let mut cmd = ctx.git();
    cmd.args([
        "push",
        "--atomic",
        "--porcelain",
        "--no-verify",
        "--quiet",
        "--no-recurse-submodules",
    ]);
    for u in updates {
        let expect = if u.is_create() {
            String::new()
        } else {
            u.old.clone()
        };
        cmd.arg(format!("--force-with-lease={}:{}", u.refname, expect));
    }
    cmd.arg("--").arg(&ctx.remote.url);
    for u in updates {
        if u.is_delete() {
            cmd.arg(format!(":{}", u.refname));
        } else {
            cmd.arg(format!("{}:{}", u.new, u.refname));
        }
    }
    for (k, v) in upstream_env(ctx.remote) {
        cmd.env(k, v);
    }
    // A local (file://) upstream's receive-pack inherits our env; it must not
    // believe it is inside our quarantine.
    cmd.env_remove("GIT_QUARANTINE_PATH");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let mut why = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('!'))
        .map(|l| l.replace('\t', " "))
        .collect::<Vec<_>>()
        .join(" / ");
    let err = short_stderr(&out.stderr);
    if !why.is_empty() {
        why.push_str(" / ");
    }
    why.push_str(&err);
    Err(why.chars().take(600).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn update(refname: &str, old: &str, new: &str) -> RefUpdate {
        RefUpdate {
            old: old.into(),
            new: new.into(),
            refname: refname.into(),
        }
    }

    fn rules(list: &[(&str, bool, bool)]) -> Vec<(String, PushRule)> {
        list.iter()
            .map(|(p, force, delete)| {
                (
                    format!("push:{p}"),
                    PushRule {
                        pattern: (*p).into(),
                        force: *force,
                        delete: *delete,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_ref_policy_asks_git_only_what_matters() {
        let r = rules(&[
            ("refs/heads/bot/*", false, false),
            ("refs/heads/bot/f-*", true, true),
        ]);
        let p = RefPolicy::new("origin", &r);
        let never = |q: Fact| -> Result<bool, String> { panic!("asked {q:?}") };
        // a ref no rule matches: refused before git is asked
        assert_eq!(
            p.decide(&update("refs/heads/main", A, B), never),
            Err(RefDenial::NotAllowed {
                refname: "refs/heads/main".into(),
                allowed: vec!["refs/heads/bot/*".into(), "refs/heads/bot/f-*".into()],
            })
        );
        // a delete: only the rules say
        assert_eq!(
            p.decide(&update("refs/heads/bot/x", A, ZERO), never),
            Err(RefDenial::DeleteNotAllowed {
                refname: "refs/heads/bot/x".into()
            })
        );
        assert_eq!(
            p.decide(&update("refs/heads/bot/f-1", A, ZERO), never)
                .as_deref(),
            Ok("push:refs/heads/bot/f-*")
        );
        // a create: is it a commit? never "is it a fast-forward?"
        let only_commit = |q: Fact| -> Result<bool, String> {
            assert_eq!(q, Fact::PushesACommit);
            Ok(true)
        };
        assert_eq!(
            p.decide(&update("refs/heads/bot/x", ZERO, B), only_commit)
                .as_deref(),
            Ok("push:refs/heads/bot/*")
        );
        // not a fast-forward: only a force rule
        let rewind = |q: Fact| Ok(q == Fact::PushesACommit);
        assert_eq!(
            p.decide(&update("refs/heads/bot/x", A, B), rewind),
            Err(RefDenial::NonFastForward {
                refname: "refs/heads/bot/x".into()
            })
        );
        assert_eq!(
            p.decide(&update("refs/heads/bot/f-2", A, B), rewind)
                .as_deref(),
            Ok("push:refs/heads/bot/f-*")
        );
        // a blob is not pushed; a git failure is said
        assert_eq!(
            p.decide(&update("refs/heads/bot/x", A, B), |_| Ok(false)),
            Err(RefDenial::NonCommit {
                refname: "refs/heads/bot/x".into()
            })
        );
        let err = p.decide(&update("refs/heads/bot/x", A, B), |_| Err("gone".into()));
        assert_eq!(err.map_err(|d| d.rule()), Err("git-error"));
    }

    proptest! {
        /// Whatever the rules, the update and git's answers: an allowed
        /// update is matched by the rule whose label comes back, a delete
        /// needs a matching delete rule, a rewrite a matching force rule,
        /// and only commits (or tags of them) are pushed.
        #[test]
        fn the_ref_policy_never_allows_what_no_rule_allows(
            spec in proptest::collection::vec(
                (prop::sample::select(vec!["refs/heads/bot/*", "refs/heads/**", "refs/tags/v*", "refs/heads/main", "not-a-ref"]), any::<bool>(), any::<bool>()),
                0..4,
            ),
            refname in prop::sample::select(vec!["refs/heads/bot/a", "refs/heads/main", "refs/tags/v1", "refs/heads/bot/a/b", "refs/notes/x"]),
            kind in 0u8..3,
            is_commit in any::<bool>(),
            fast_forward in any::<bool>(),
        ) {
            let r = rules(&spec.iter().map(|(p, f, d)| (*p, *f, *d)).collect::<Vec<_>>());
            let p = RefPolicy::new("origin", &r);
            let (old, new) = match kind { 0 => (ZERO, B), 1 => (A, ZERO), _ => (A, B) };
            let u = update(refname, old, new);
            let got = p.decide(&u, |q| Ok(match q {
                Fact::PushesACommit => is_commit,
                Fact::FastForward => fast_forward,
            }));
            if let Ok(label) = got {
                // some rule of that label (two rules may share a pattern)
                // allows exactly this
                let allows = |rule: &PushRule| {
                    compile_glob(&rule.pattern).is_ok_and(|g| g.is_match(refname))
                        && if u.is_delete() {
                            rule.delete
                        } else {
                            is_commit && (u.is_create() || fast_forward || rule.force)
                        }
                };
                prop_assert!(
                    r.iter().any(|(l, rule)| *l == label && allows(rule)),
                    "{label} allowed {u:?}"
                );
            }
        }
    }
}
