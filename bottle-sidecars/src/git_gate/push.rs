//! The push decision: ref policy, fast-forward/delete rules, secret scan of
//! the new commits only, and the upstream push. Runs in the daemon when the
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
    let rules = ctx.cfg.push_rules(remote, SystemTime::now());
    let compiled: Vec<(&str, &PushRule, globset::GlobMatcher)> = rules
        .iter()
        .filter_map(|(label, rule)| {
            compile_glob(&rule.pattern)
                .ok()
                .map(|g| (label.as_str(), rule, g))
        })
        .collect();
    let mut labels = Vec::new();
    let mut tags = Vec::new();
    for u in updates {
        let r = u.refname.as_str();
        let matching: Vec<_> = compiled.iter().filter(|(_, _, g)| g.is_match(r)).collect();
        if matching.is_empty() {
            let allowed: Vec<&str> = compiled
                .iter()
                .map(|(_, rule, _)| rule.pattern.as_str())
                .collect();
            let allowed = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            return Outcome::deny(
                "ref-not-allowed",
                Some(r),
                vec![
                    format!("{PREFIX} push refused: {r} is not a pushable ref on remote \"{remote}\" (pushable: {allowed})."),
                    ask_line(remote, r),
                ],
            );
        }
        if u.is_delete() {
            match matching.iter().find(|(_, rule, _)| rule.delete) {
                Some((label, _, _)) => labels.push(label.to_string()),
                None => {
                    return Outcome::deny(
                        "delete-not-allowed",
                        Some(r),
                        vec![
                            format!("{PREFIX} push refused: deleting {r} on remote \"{remote}\" is not allowed."),
                            ask_line(remote, r),
                        ],
                    )
                }
            }
            continue;
        }
        // Only commits (or annotated tags of commits) may be pushed.
        match object_type(ctx, &u.new).as_deref() {
            Ok("commit") => {}
            Ok("tag") => {
                if object_type(ctx, &format!("{}^{{}}", u.new)).as_deref() != Ok("commit") {
                    return non_commit(r);
                }
                tags.push(u.new.clone());
            }
            Ok(_) => return non_commit(r),
            Err(e) => {
                return Outcome::deny(
                    "git-error",
                    Some(r),
                    vec![format!("{PREFIX} push refused: {e}")],
                )
            }
        }
        if u.is_create() {
            labels.push(matching[0].0.to_owned());
            continue;
        }
        match is_ancestor(ctx, &u.old, &u.new) {
            Ok(true) => labels.push(matching[0].0.to_owned()),
            Ok(false) => match matching.iter().find(|(_, rule, _)| rule.force) {
                Some((label, _, _)) => labels.push(label.to_string()),
                None => {
                    return Outcome::deny(
                        "non-fast-forward",
                        Some(r),
                        vec![
                            format!("{PREFIX} push refused: {r} on remote \"{remote}\" is not a fast-forward and force-pushing it is not allowed."),
                            format!("{PREFIX} rebase onto the current {r} (git pull --rebase) and push again, or ask for force with request_git_push."),
                        ],
                    )
                }
            },
            Err(e) => return Outcome::deny("git-error", Some(r), vec![format!("{PREFIX} push refused: {e}")]),
        }
    }

    // Secret scan of the new commits only.
    let detector = match Detector::load_dir(&ctx.cfg.secrets_dir) {
        Ok(d) => d,
        Err(e) => {
            return Outcome::deny(
                "scanner-unavailable",
                None,
                vec![format!(
                    "{PREFIX} push refused: the secret scanner could not load its secrets ({})",
                    e.kind()
                )],
            )
        }
    };
    let news: Vec<&str> = updates
        .iter()
        .filter(|u| !u.is_delete())
        .map(|u| u.new.as_str())
        .collect();
    let scan_started = std::time::Instant::now();
    let scan = match scan_new(ctx, &detector, &news, &tags) {
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
        let place = match &hit.path {
            Some(p) => format!("in {p} "),
            None => String::from("in its message/metadata "),
        };
        let mut out = Outcome::deny(
            hit.rule.clone(),
            None,
            vec![
                format!(
                    "{PREFIX} push refused: {} {} {place}contains a secret (rule {}).",
                    hit.kind, hit.object, hit.rule
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
}

struct ScanResult {
    commits: usize,
    hit: Option<Hit>,
}

/// Largest per-commit buffer scanned in one piece.
const MAX_CHUNK: usize = 64 << 20;

/// Scan the commits reachable from `news` but from no ref the gate already
/// has (`--not --all`): author/committer/message, then every added line of
/// each commit's diff (combined diff for merges, binary files as text), and
/// the text of pushed annotated tags.
fn scan_new(
    ctx: &PushContext<'_>,
    det: &Detector,
    news: &[&str],
    tags: &[String],
) -> Result<ScanResult, String> {
    for t in tags {
        let out = ctx
            .git()
            .args(["cat-file", "tag", t])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if let Some(f) = det.scan(&out.stdout) {
            return Ok(ScanResult {
                commits: 0,
                hit: Some(Hit {
                    rule: f.rule,
                    kind: "tag",
                    object: short(t),
                    path: None,
                }),
            });
        }
    }
    if news.is_empty() {
        return Ok(ScanResult {
            commits: 0,
            hit: None,
        });
    }
    // 1. Metadata and messages.
    let out = ctx
        .git()
        .args([
            "log",
            "--no-patch",
            "--no-color",
            "--format=%x01%H%n%an <%ae>%n%cn <%ce>%n%B",
        ])
        .args(news)
        .args(["--not", "--all", "--"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(short_stderr(&out.stderr));
    }
    if let Some(f) = det.scan(&out.stdout) {
        let before = &out.stdout[..f.offset.min(out.stdout.len())];
        let object = before
            .iter()
            .rposition(|&b| b == 1)
            .map(|i| {
                String::from_utf8_lossy(&out.stdout[i + 1..(i + 13).min(out.stdout.len())])
                    .into_owned()
            })
            .unwrap_or_default();
        return Ok(ScanResult {
            commits: count_new(ctx, news)?,
            hit: Some(Hit {
                rule: f.rule,
                kind: "commit",
                object,
                path: None,
            }),
        });
    }
    // 2. Added lines, one commit at a time (streamed).
    let mut child = ctx
        .git()
        .args([
            "log",
            "-p",
            "--cc",
            "--text",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--submodule=short",
            "--format=%x01%H",
        ])
        .args(news)
        .args(["--not", "--all", "--"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    let mut commits = 0usize;
    let mut current = String::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut paths: Vec<(usize, String)> = Vec::new();
    let mut line = Vec::new();
    let mut hit = None;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| e.to_string())?;
        let eof = n == 0;
        let header = !eof && line.first() == Some(&1);
        if eof || header || buf.len() > MAX_CHUNK {
            if let Some(f) = det.scan(&buf) {
                let path = paths
                    .iter()
                    .rev()
                    .find(|(o, _)| *o <= f.offset)
                    .map(|(_, p)| p.clone());
                hit = Some(Hit {
                    rule: f.rule,
                    kind: "commit",
                    object: short(&current),
                    path,
                });
                break;
            }
            buf.clear();
            paths.clear();
        }
        if eof {
            break;
        }
        if header {
            commits += 1;
            current = String::from_utf8_lossy(&line[1..]).trim().to_owned();
            continue;
        }
        match line.first() {
            // Removed and context lines: content the gate already has.
            Some(b'-') | Some(b' ') => {}
            Some(b'+') => {
                if let Some(p) = line.strip_prefix(b"+++ b/") {
                    paths.push((buf.len(), String::from_utf8_lossy(p).trim_end().to_owned()));
                }
                buf.extend_from_slice(&line);
            }
            _ => buf.extend_from_slice(&line),
        }
    }
    if hit.is_some() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if hit.is_none() && !status.success() {
        return Err("git log failed".into());
    }
    // Without a hit every new commit passed through the loop above (its
    // marker line cannot be forged: diff lines always carry a +/-/space
    // prefix); with one, count them all for the audit line.
    let commits = if hit.is_some() {
        count_new(ctx, news)?
    } else {
        commits
    };
    Ok(ScanResult { commits, hit })
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
