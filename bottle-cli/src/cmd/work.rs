//! Getting work out of a bottle (and files in): `bottle cp`, `bottle diff`,
//! `bottle export`, through the bottle's `Running` handle (a backend that
//! cannot move files says so), while the agent runs (a stopped bottle has
//! no agent: `bottle resume` it first).
//!
//! Nothing here runs git on a repository the agent wrote: `diff` compares
//! plain copies in a fresh repository of our own, and `export` asks the
//! agent for a full bundle, fetches it (fsck'd) into a fresh bare repository
//! with no inherited config or hooks, scans the new commits with the same
//! DLP detector as a git-gate push (the bottle's held secrets plus the
//! curated patterns; see `docs/git-gate.md`), and only then writes the
//! bundle or patch series for the host.

use std::path::Path;

use bottle_core::state::Phase;
use bottle_core::{CommandRunner, CommandSpec, DuctRunner, Error, Home, Identity, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::Cli;

/// The workspace inside the agent; relative guest paths are relative to it.
const WORKSPACE: &str = "/home/agent/workspace";
/// The agent's uid/gid (the templates' `agent` user).
const AGENT_UID: u32 = 1000;

/// `bottle cp` args.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// `<id>:<path>` (a path in the agent; relative = under the workspace)
    /// or a host path.
    pub src: String,
    /// `<id>:<path>` or a host path (exactly one side is a bottle).
    pub dst: String,
}

/// `bottle diff` args.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Bottle identity (or a unique prefix).
    #[arg(add = super::completions::bottles())]
    pub id: String,
    /// Only list the changed files (`git diff --stat`).
    #[arg(long)]
    pub stat: bool,
}

/// `bottle export` args.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Bottle identity (or a unique prefix).
    #[arg(add = super::completions::bottles())]
    pub id: String,
    /// Where to write: a bundle file (default `<id>.bundle`), or with
    /// `--patches` a directory for the patch series.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<Utf8PathBuf>,
    /// A patch series of the agent's current branch (`git format-patch`)
    /// instead of a bundle of every new commit.
    #[arg(long)]
    pub patches: bool,
}

/// A bottle whose agent runs.
struct Agent {
    id: Identity,
    running: Box<dyn bottle_core::Running>,
    state: bottle_core::StateDir,
}

fn running_agent(home: &Home, arg: &str, what: &str) -> Result<Agent> {
    let f =
        bottle_lifecycle::Lifecycle::new(home.clone(), crate::registry::registry(), &DuctRunner)
            .find(arg)?;
    let running = f.handle();
    let (id, state) = (f.id, f.state);
    if !running.agent_running(&DuctRunner)? {
        let why = if f.meta.phase == Phase::Stopped {
            "is stopped"
        } else {
            "has no running agent"
        };
        return Err(Error::other(
            format!("{id} {why}: `bottle {what}` reads the running agent"),
            format!("`bottle resume {id}` first (its home volume kept the work)"),
        ));
    }
    Ok(Agent { id, running, state })
}

fn run_ok(spec: CommandSpec) -> Result<bottle_core::command::Output> {
    let out = DuctRunner.output(&spec.clone().allow_failure())?;
    if !out.success() {
        return Err(bottle_core::command::failure(&spec, &out));
    }
    Ok(out)
}

fn guest_path(p: &str) -> Result<String> {
    if p.is_empty() {
        return Ok(WORKSPACE.to_owned());
    }
    if p.split('/').any(|s| s == "..") {
        return Err(Error::other(
            format!("`{p}`: `..` is not allowed in a bottle path"),
            "write the path from / or from the workspace",
        ));
    }
    Ok(if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("{WORKSPACE}/{p}")
    })
}

/// `<id>:<path>` → (id, path), if `s` names a bottle of this home.
fn split_remote(home: &Home, s: &str) -> Result<Option<(String, String)>> {
    let Some((id, path)) = s.split_once(':') else {
        return Ok(None);
    };
    if id.is_empty() || id.contains('/') {
        return Ok(None);
    }
    // A host path like `./a:b` has a `/`; `name:path` must name a bottle.
    let ident = super::ids::bottle(home, id)?;
    Ok(Some((ident.to_string(), path.to_owned())))
}

/// `bottle cp`.
pub fn cp(cli: &Cli, a: &CpArgs) -> Result<u8> {
    let home = super::home(cli)?;
    match (split_remote(&home, &a.src)?, split_remote(&home, &a.dst)?) {
        (Some((id, path)), None) => {
            let agent = running_agent(&home, &id, "cp")?;
            let from = guest_path(&path)?;
            // into a fresh private directory first, then placed with no
            // agent-made link and nothing written through a link
            // (bottle_core::copy_out)
            let stage = tmp()?;
            let staged = Utf8PathBuf::from(utf8(stage.path())?).join("copy");
            agent.running.copy_out(&from, &staged, &DuctRunner)?;
            let name = from.trim_end_matches('/').rsplit('/').next().unwrap_or("copy");
            let to = bottle_core::copy_out::place(&staged, name, Utf8Path::new(&a.dst))?;
            if !cli.quiet {
                eprintln!("copied {}:{from} to {to}", agent.id);
            }
            Ok(0)
        }
        (None, Some((id, path))) => {
            let agent = running_agent(&home, &id, "cp")?;
            let to = guest_path(&path)?;
            let tar = host_tar(Utf8Path::new(&a.src), &to)?;
            agent.running.copy_in(tar, &DuctRunner)?;
            if !cli.quiet {
                eprintln!("copied {} to {}:{to}", a.src, agent.id);
            }
            Ok(0)
        }
        (Some(_), Some(_)) | (None, None) => Err(Error::other(
            "exactly one side of `bottle cp` must be `<id>:<path>`",
            "e.g. `bottle cp demo-dev-abc:out.txt ./out.txt` or `bottle cp ./in.txt demo-dev-abc:in.txt`",
        )),
    }
}

/// A tar of host file/dir `src` placed at guest path `to`, owned by the
/// agent. Symlinks and special files are refused (they would point at host
/// paths the agent must not learn about, or mean nothing inside).
fn host_tar(src: &Utf8Path, to: &str) -> Result<Vec<u8>> {
    use bottle_core::tar::Entry;
    let mut entries = Vec::new();
    let rel = to.trim_start_matches('/').trim_end_matches('/').to_owned();
    // every parent of the target, so unpacking creates missing ones
    let parts: Vec<&str> = rel.split('/').collect();
    for i in 1..parts.len() {
        entries.push(Entry::Dir {
            path: parts[..i].join("/"),
            mode: 0o755,
            owner: AGENT_UID,
        });
    }
    fn walk(host: &Utf8Path, guest: &str, out: &mut Vec<Entry>) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(host).map_err(|e| Error::io("reading", host, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            out.push(Entry::Dir {
                path: guest.to_owned(),
                mode: mode | 0o700,
                owner: AGENT_UID,
            });
            let mut names: Vec<_> = std::fs::read_dir(host)
                .map_err(|e| Error::io("listing", host, e))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                walk(&host.join(&n), &format!("{guest}/{n}"), out)?;
            }
        } else if meta.is_file() {
            let data = std::fs::read(host).map_err(|e| Error::io("reading", host, e))?;
            out.push(Entry::File {
                path: guest.to_owned(),
                mode: mode | 0o600,
                owner: AGENT_UID,
                data,
            });
        } else {
            return Err(Error::other(
                format!(
                    "{host} is a symlink or special file; `bottle cp` copies files and directories"
                ),
                "copy what it points to instead",
            ));
        }
        Ok(())
    }
    walk(src, &rel, &mut entries)?;
    bottle_core::tar::archive(&entries)
        .map_err(|why| Error::other(format!("packing {src}: {why}"), "copy a smaller tree"))
}

/// A git command that reads no system or user config and runs no hook.
fn git(dir: &Path) -> CommandSpec {
    CommandSpec::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.autocrlf=false",
            "-c",
            "user.name=bottle",
            "-c",
            "user.email=bottle@localhost",
            "-c",
            "transfer.fsckObjects=true",
        ])
        .arg(format!("--git-dir={}", dir.display()))
}

fn tmp() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("bottle-work-")
        .tempdir()
        .map_err(|e| Error::io("creating a temp dir", Utf8PathBuf::from("$TMPDIR"), e))
}

fn utf8(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::other("temp dir is not UTF-8", "set TMPDIR to a UTF-8 path"))
}

/// The workspace as the bottle started: copied from the agent's image
/// (an image without a workspace: an empty directory, everything is new).
fn baseline(agent: &Agent, into: &Path) -> Result<()> {
    let dir = Utf8PathBuf::from(utf8(into)?);
    match agent
        .running
        .copy_out_baseline(WORKSPACE, &dir, &DuctRunner)
    {
        Ok(()) => Ok(()),
        Err(_) => std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", dir, e)),
    }
}

/// `bottle diff`: the workspace's changes since it was copied in, as a
/// patch on stdout (`.gitignore`d files left out, binary files as git
/// binary patches). Apply it on the host with `git apply`.
pub fn diff(cli: &Cli, a: &DiffArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let agent = running_agent(&home, &a.id, "diff")?;
    let t = tmp()?;
    let (base, cur, repo) = (t.path().join("a"), t.path().join("b"), t.path().join("g"));
    baseline(&agent, &base)?;
    agent
        .running
        .copy_out(WORKSPACE, Utf8Path::new(utf8(&cur)?), &DuctRunner)?;
    run_ok(git(&repo).args(["init", "-q", "--bare"]))?;
    let tree = |dir: &Path| -> Result<()> {
        run_ok(
            git(&repo)
                .arg(format!("--work-tree={}", dir.display()))
                .args(["add", "-A", "."])
                .cwd(Utf8PathBuf::from(utf8(dir)?)),
        )?;
        Ok(())
    };
    tree(&base)?;
    run_ok(
        git(&repo)
            .arg(format!("--work-tree={}", base.display()))
            .args([
                "commit",
                "-q",
                "--allow-empty",
                "--no-verify",
                "-m",
                "baseline",
            ]),
    )?;
    tree(&cur)?;
    let mut spec = git(&repo).args([
        "diff",
        "--cached",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
    ]);
    spec = if a.stat {
        spec.arg("--stat")
    } else {
        spec.args(["--binary", "--full-index"])
    };
    let out = run_ok(spec)?;
    print!("{}", out.stdout);
    if out.stdout.is_empty() && !cli.quiet {
        eprintln!("no changes in {WORKSPACE} since {} started", agent.id);
    }
    Ok(0)
}

/// `bottle export`: the agent's new commits (not in the workspace it was
/// given) as a git bundle or a patch series, refused if the DLP finds a
/// secret in them.
pub fn export(cli: &Cli, a: &ExportArgs) -> Result<u8> {
    let home = super::home(cli)?;
    let agent = running_agent(&home, &a.id, "export")?;
    let t = tmp()?;
    // 1. The agent's full history, as a bundle made inside the agent.
    // in the home volume: a copy out cannot see a tmpfs /tmp under gVisor
    let inside = "/home/agent/.bottle-export.bundle";
    let made = agent.running.exec_output(
        &[
            "git",
            "-C",
            WORKSPACE,
            "bundle",
            "create",
            "-q",
            inside,
            "--branches",
            "--tags",
        ]
        .map(String::from),
        &DuctRunner,
    )?;
    if !made.success() {
        return Err(Error::other(
            format!(
                "{}'s workspace has no commits to export ({})",
                agent.id,
                made.stderr.trim()
            ),
            "`bottle diff` shows uncommitted changes; `bottle cp` copies files",
        ));
    }
    let full = t.path().join("full.bundle");
    agent
        .running
        .copy_out(inside, Utf8Path::new(utf8(&full)?), &DuctRunner)?;
    let _ = agent
        .running
        .exec_output(&["rm", "-f", inside].map(String::from), &DuctRunner);
    // 2. Into a fresh bare repo of ours (objects fsck'd on the way in).
    let repo = t.path().join("r.git");
    run_ok(git(&repo).args(["init", "-q", "--bare"]))?;
    run_ok(git(&repo).args([
        "fetch",
        "-q",
        "--no-write-fetch-head",
        utf8(&full)?,
        "+refs/*:refs/*",
    ]))?;
    // 3. What the bottle started with: the baseline workspace's commits.
    let base_dir = t.path().join("base");
    baseline(&agent, &base_dir)?;
    let base = base_commits(&base_dir.join(".git"))?;
    let known: Vec<String> = base
        .into_iter()
        .filter(|c| {
            DuctRunner
                .output(
                    &git(&repo)
                        .args(["cat-file", "-e", &format!("{c}^{{commit}}")])
                        .allow_failure(),
                )
                .is_ok_and(|o| o.success())
        })
        .collect();
    let mut range: Vec<String> = vec!["--branches".into(), "--tags".into()];
    if !known.is_empty() {
        range.push("--not".into());
        range.extend(known.iter().cloned());
    }
    let count = run_ok(git(&repo).args(["rev-list", "--count"]).args(range.clone()))?
        .stdout
        .trim()
        .parse::<usize>()
        .unwrap_or(0);
    if count == 0 {
        if !cli.quiet {
            eprintln!("{} has no new commits since it started", agent.id);
        }
        return Ok(0);
    }
    // 4. The same DLP as a push: held secrets and curated patterns, over
    //    every new commit's metadata, message and patch, and tag texts.
    scan(&agent, &repo, &range)?;
    // 5. Write it for the host.
    if a.patches {
        let dir = a
            .output
            .clone()
            .unwrap_or_else(|| Utf8PathBuf::from(format!("{}-patches", agent.id)));
        let mut spec = git(&repo).args([
            "format-patch",
            "-q",
            "--no-color",
            "-o",
            dir.as_str(),
            "HEAD",
        ]);
        if !known.is_empty() {
            spec = spec.arg("--not").args(known.iter().cloned());
        } else {
            spec = spec.arg("--root");
        }
        let out = run_ok(spec)?;
        let n = out.stdout.lines().count();
        println!("{dir}");
        if !cli.quiet {
            eprintln!(
                "exported {n} patch(es) of {}'s current branch to {dir}/ (`git am {dir}/*.patch`)",
                agent.id
            );
        }
    } else {
        let file = a
            .output
            .clone()
            .unwrap_or_else(|| Utf8PathBuf::from(format!("{}.bundle", agent.id)));
        run_ok(
            git(&repo)
                .args(["bundle", "create", "-q", file.as_str()])
                .args(range),
        )?;
        println!("{file}");
        if !cli.quiet {
            eprintln!(
                "exported {count} new commit(s) of {} to {file} (`git fetch {file} 'refs/heads/*:refs/remotes/bottle/*'`)",
                agent.id
            );
        }
    }
    Ok(0)
}

/// Every commit the refs of the baseline `.git` point at (none when the
/// workspace was not a repository). Read with our own git config only.
fn base_commits(git_dir: &Path) -> Result<Vec<String>> {
    if !git_dir.join("HEAD").is_file() {
        return Ok(Vec::new());
    }
    let out = DuctRunner.output(
        &git(git_dir)
            .args(["for-each-ref", "--format=%(objectname)"])
            .allow_failure(),
    )?;
    let mut v: Vec<String> = out.stdout.lines().map(|l| l.trim().to_owned()).collect();
    if let Ok(o) = DuctRunner.output(
        &git(git_dir)
            .args(["rev-parse", "--verify", "-q", "HEAD"])
            .allow_failure(),
    ) {
        if o.success() {
            v.push(o.stdout.trim().to_owned());
        }
    }
    v.retain(|s| s.len() >= 40 && s.chars().all(|c| c.is_ascii_hexdigit()));
    v.sort();
    v.dedup();
    Ok(v)
}

/// Refuse (exit 4) if the new commits carry a secret: names the rule and
/// the commit, never the value.
fn scan(agent: &Agent, repo: &Path, range: &[String]) -> Result<()> {
    let secrets = agent.state.secrets_dir();
    let det = if secrets.as_std_path().is_dir() {
        bottle_dlp::Detector::load_dir(secrets.as_std_path())
            .map_err(|e| Error::io("reading held secrets", secrets.clone(), e))?
    } else {
        bottle_dlp::Detector::default()
    };
    let texts = [
        git(repo)
            .args([
                "log",
                "--no-color",
                "--format=%x01%H%n%an <%ae>%n%cn <%ce>%n%B",
            ])
            .args(range.iter().cloned()),
        git(repo)
            .args([
                "log",
                "-p",
                "--cc",
                "--text",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                "--no-renames",
                "--format=%x01%H",
            ])
            .args(range.iter().cloned()),
        git(repo).args([
            "for-each-ref",
            "refs/tags",
            "--format=%x01%(objectname)%n%(contents)",
        ]),
    ];
    for spec in texts {
        let out = run_ok(spec)?;
        let data = out.stdout.as_bytes();
        if let Some(f) = det.scan(data) {
            let before = &out.stdout[..f.offset.min(out.stdout.len())];
            let object: String = before
                .rfind('\u{1}')
                .map(|i| out.stdout[i + 1..].chars().take(12).collect())
                .unwrap_or_default();
            return Err(Error::Refused {
                why: format!(
                    "export of {} refused: commit {object} carries a secret (rule {})",
                    agent.id, f.rule
                ),
                fix: "have the agent remove it from its history (rewrite the commit), then export again".into(),
            });
        }
    }
    Ok(())
}

/// `bottle rm` args.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Bottle identity (or a unique prefix).
    #[arg(add = super::completions::bottles())]
    pub id: String,
    /// Remove a running bottle without asking (its home volume and the
    /// work in it are lost).
    #[arg(long, short)]
    pub force: bool,
}

/// `bottle rm`: a running bottle is removed only after a yes on the
/// terminal, or with `-f`; either way the operator is told what is lost.
pub fn rm(cli: &Cli, a: &RmArgs) -> Result<u8> {
    let lc = super::lifecycle(cli)?;
    let id = lc.identity(&a.id)?;
    if lc.recorded_running(&id) && !a.force {
        let lost = format!(
            "{id} is running; removing it deletes its home volume bottle-{id}-home (the agent's \
             workspace {WORKSPACE} with any uncommitted or unexported work), its audit log and \
             its permission queue. Save work first with `bottle diff {id}`, `bottle export {id}` \
             or `bottle cp {id}:<path> <host path>`."
        );
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(Error::Refused {
                why: lost,
                fix: format!("`bottle rm -f {id}` removes it anyway"),
            });
        }
        eprintln!("{lost}");
        eprint!("remove {id}? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(Error::Refused {
                why: format!("kept {id}"),
                fix: format!("`bottle stop {id}` stops it and keeps its work"),
            });
        }
    }
    lc.rm(id.as_str())?;
    if !cli.quiet {
        eprintln!("removed {id}");
    }
    Ok(0)
}
