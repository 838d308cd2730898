//! The `--cwd` copy: which files go into the derived image layer.
//!
//! In a git work tree: tracked and untracked files that `.gitignore` does not
//! exclude (`git ls-files -co --exclude-standard`), plus the `.git` directory
//! itself (the agent needs history to commit and push through the gate).
//! Elsewhere: every file. Then `.bottleignore` (gitignore-like patterns: `*`
//! globs, a leading `/` anchors to the root, a trailing `/` means a
//! directory, `#` comments) removes more. Symlinks are copied as links.
//! Listing and hashing only read; staging copies into a build context and
//! strips git credentials from the copy's git config (docs/security.md S1).

use std::collections::BTreeSet;
use std::fs;

use crate::{Error, Result};
use camino::{Utf8Path, Utf8PathBuf};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

/// The files of a workspace, relative paths, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList {
    /// Root directory.
    pub root: Utf8PathBuf,
    /// Relative paths (files and symlinks).
    pub files: Vec<Utf8PathBuf>,
}

fn ignore_set(root: &Utf8Path) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    let path = root.join(".bottleignore");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let dir_only = line.ends_with('/');
        let pat = line.trim_end_matches('/');
        let anchored = pat.starts_with('/') || pat.contains('/');
        let pat = pat.trim_start_matches('/');
        let base = if anchored {
            pat.to_owned()
        } else {
            format!("**/{pat}")
        };
        let mut globs = vec![format!("{base}/**")];
        if !dir_only {
            globs.push(base);
        }
        for g in globs {
            let glob = GlobBuilder::new(&g)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    Error::other(
                        format!("{path}: bad pattern `{line}`: {e}"),
                        "fix the pattern in .bottleignore",
                    )
                })?;
            b.add(glob);
        }
    }
    b.build()
        .map_err(|e| Error::other(format!("{path}: {e}"), "fix .bottleignore"))
}

fn walk(root: &Utf8Path, rel: &Utf8Path, out: &mut BTreeSet<Utf8PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let entries = fs::read_dir(&dir).map_err(|e| Error::io("reading", dir.clone(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading", dir.clone(), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let child = rel.join(name);
        let ft = entry
            .file_type()
            .map_err(|e| Error::io("reading", root.join(&child), e))?;
        if ft.is_dir() {
            walk(root, &child, out)?;
        } else if ft.is_file() || ft.is_symlink() {
            out.insert(child);
        }
    }
    Ok(())
}

/// List the files of `root` that go into the agent.
pub fn list(root: &Utf8Path) -> Result<FileList> {
    let mut files = BTreeSet::new();
    if root.join(".git").exists() {
        let out = duct::cmd!(
            "git",
            "-C",
            root.as_str(),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard"
        )
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|source| Error::Spawn {
            program: "git".into(),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::other(
                format!(
                    "git ls-files in {root} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "check that --cwd is a healthy git work tree",
            ));
        }
        for p in out.stdout.split(|&b| b == 0).filter(|p| !p.is_empty()) {
            let p = Utf8PathBuf::from(String::from_utf8_lossy(p).into_owned());
            // ls-files lists deleted-but-tracked files too; keep what exists.
            if fs::symlink_metadata(root.join(&p)).is_ok_and(|m| !m.is_dir()) {
                files.insert(p);
            }
        }
        if root.join(".git").is_dir() {
            walk(root, Utf8Path::new(".git"), &mut files)?;
        }
    } else {
        walk(root, Utf8Path::new(""), &mut files)?;
    }
    let ignore = ignore_set(root)?;
    let files = files
        .into_iter()
        .filter(|p| !ignore.is_match(p.as_std_path()))
        .collect();
    Ok(FileList {
        root: root.to_owned(),
        files,
    })
}

impl FileList {
    /// Content hash: paths, link targets, exec bits and contents.
    pub fn hash(&self) -> Result<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut h = Sha256::new();
        for rel in &self.files {
            let p = self.root.join(rel);
            let meta = fs::symlink_metadata(&p).map_err(|e| Error::io("reading", p.clone(), e))?;
            h.update(rel.as_str().as_bytes());
            h.update([0]);
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(|e| Error::io("reading", p.clone(), e))?;
                h.update(b"L");
                h.update(t.to_string_lossy().as_bytes());
            } else {
                h.update(if meta.permissions().mode() & 0o111 != 0 {
                    b"X"
                } else {
                    b"F"
                });
                let data = fs::read(&p).map_err(|e| Error::io("reading", p.clone(), e))?;
                h.update((data.len() as u64).to_le_bytes());
                h.update(&data);
            }
            h.update([0]);
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The git credentials [`FileList::stage`] removes from the copy's git
    /// config files (what and where, never a value); the source is not
    /// touched. The preflight shows them.
    pub fn git_credentials(&self) -> Result<Vec<StrippedCredential>> {
        let mut out = Vec::new();
        let tmp = tempfile::tempdir().map_err(|e| Error::io("creating", "a temp dir", e))?;
        let scratch = Utf8Path::from_path(tmp.path())
            .ok_or_else(|| Error::other("temp dir is not UTF-8", "set TMPDIR to a UTF-8 path"))?
            .join("config");
        for rel in self.files.iter().filter(|r| is_git_config(r, &self.root)) {
            let src = self.root.join(rel);
            fs::copy(&src, &scratch).map_err(|e| Error::io("copying", src.clone(), e))?;
            for what in strip_config(&scratch)? {
                out.push(StrippedCredential {
                    file: rel.clone(),
                    what,
                });
            }
        }
        Ok(out)
    }

    /// Copy every file into `dest` (created), keeping links and modes, then
    /// remove git credentials from the copy's git config files
    /// (`http.*.extraheader`, credential helpers, include directives,
    /// userinfo in URLs): the agent gets the history, not the operator's
    /// access to the remote.
    pub fn stage(&self, dest: &Utf8Path) -> Result<()> {
        fs::create_dir_all(dest).map_err(|e| Error::io("creating", dest.to_owned(), e))?;
        for rel in &self.files {
            let src = self.root.join(rel);
            let dst = dest.join(rel);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io("creating", parent.to_owned(), e))?;
            }
            let meta =
                fs::symlink_metadata(&src).map_err(|e| Error::io("reading", src.clone(), e))?;
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&src).map_err(|e| Error::io("reading", src.clone(), e))?;
                std::os::unix::fs::symlink(t, &dst).map_err(|e| Error::io("linking", dst, e))?;
            } else {
                fs::copy(&src, &dst).map_err(|e| Error::io("copying", src.clone(), e))?;
            }
        }
        // Only files are listed: a repo with no commits has empty `refs/`
        // and `objects/`, without which git does not see a repository.
        if self.files.iter().any(|f| f.starts_with(".git")) {
            for d in GIT_SKELETON {
                let dir = dest.join(".git").join(d);
                fs::create_dir_all(&dir).map_err(|e| Error::io("creating", dir, e))?;
            }
        }
        for rel in self.files.iter().filter(|r| is_git_config(r, &self.root)) {
            let dst = dest.join(rel);
            if !fs::symlink_metadata(&dst).is_ok_and(|m| m.is_file()) {
                // a linked config would be edited at its target: drop it
                fs::remove_file(&dst).map_err(|e| Error::io("removing", dst.clone(), e))?;
                continue;
            }
            strip_config(&dst)?;
        }
        Ok(())
    }
}

/// The directories `git init` creates that a repository needs even empty.
const GIT_SKELETON: [&str; 4] = ["objects/info", "objects/pack", "refs/heads", "refs/tags"];

/// A credential the copy removes from a git config file: where, and what
/// kind. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrippedCredential {
    /// The config file, relative to the workspace root.
    pub file: Utf8PathBuf,
    /// What it was (`http.<url>.extraheader`, `credential helper`, `userinfo in remote.origin.url`…).
    pub what: String,
}

impl std::fmt::Display for StrippedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.file)
    }
}

/// Git config files of the copy: the repository's own (`.git/config`,
/// `.git/config.worktree`) and those of submodules and linked worktrees
/// kept under `.git/`.
fn is_git_config(rel: &Utf8Path, root: &Utf8Path) -> bool {
    let name = rel.file_name().unwrap_or_default();
    if !matches!(name, "config" | "config.worktree") {
        return false;
    }
    let Some(parent) = rel.parent() else {
        return false;
    };
    parent == ".git"
        || ((parent.starts_with(".git/modules") || parent.starts_with(".git/worktrees"))
            && root.join(parent).join("HEAD").is_file())
}

/// Userinfo in URLs: `scheme://user:pass@` or `scheme://token@`.
fn userinfo_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*)://([^/@\s?#]*)@").expect("regex compiles")
    })
}

/// `text` with credentials removed from every URL's userinfo: for http(s)
/// and ftp(s) the whole userinfo goes (a token is often the user name); for
/// other schemes (ssh) the user name stays and only a password goes.
fn strip_userinfo(text: &str) -> String {
    userinfo_re()
        .replace_all(text, |c: &regex::Captures<'_>| {
            let scheme = &c[1];
            let info = &c[2];
            let web = matches!(
                scheme.to_ascii_lowercase().as_str(),
                "http" | "https" | "ftp" | "ftps"
            );
            match (web, info.split_once(':')) {
                (true, _) => format!("{scheme}://"),
                (false, Some((user, _))) => format!("{scheme}://{user}@"),
                (false, None) => format!("{scheme}://{info}@"),
            }
        })
        .into_owned()
}

fn git_config(file: &Utf8Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = duct::cmd(
        "git",
        ["config", "--file", file.as_str()].iter().chain(args),
    )
    .stdout_capture()
    .stderr_capture()
    .unchecked()
    .run()
    .map_err(|source| Error::Spawn {
        program: "git".into(),
        source,
    })?;
    // `--unset-all` of nothing exits 5; `--list` of an empty file exits 0.
    if !out.status.success() && out.status.code() != Some(5) {
        return Err(Error::other(
            format!(
                "git config --file {file} {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "fix the repository's git config, or add .git to .bottleignore",
        ));
    }
    Ok(out.stdout)
}

/// `(key, value)` entries of a config file, as git reads it.
fn config_entries(file: &Utf8Path) -> Result<Vec<(String, Option<String>)>> {
    let out = git_config(file, &["--null", "--list"])?;
    Ok(out
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let e = String::from_utf8_lossy(e);
            match e.split_once('\n') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (e.into_owned(), None),
            }
        })
        .collect())
}

/// What must go from one config file; the key or section to act on.
enum Strip {
    /// A whole `[credential]`/`[include]`-like section.
    Section(String, String),
    /// Every value of a key.
    Key(String, String),
    /// A section whose name carries userinfo: old, new.
    Rename(String, String, String),
    /// A key whose values carry userinfo.
    Values(String, String),
}

fn findings(entries: &[(String, Option<String>)]) -> Vec<Strip> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (key, value) in entries {
        let (section_sub, name) = key.rsplit_once('.').unwrap_or((key, ""));
        let section = section_sub.split('.').next().unwrap_or("");
        let strip = if section == "credential" {
            Strip::Section(section_sub.into(), "credential helper settings".into())
        } else if matches!(section, "include" | "includeif") {
            Strip::Section(
                section_sub.into(),
                "include directives (they name host files)".into(),
            )
        } else if section == "http" && name == "extraheader" {
            Strip::Key(key.clone(), "http extraheader".into())
        } else if let Some(sub) = section_sub
            .split_once('.')
            .map(|(_, sub)| sub)
            .filter(|sub| strip_userinfo(sub) != *sub)
        {
            Strip::Rename(
                section_sub.into(),
                format!("{section}.{}", strip_userinfo(sub)),
                format!("userinfo in a [{section} \"…\"] section name"),
            )
        } else if value.as_deref().is_some_and(|v| strip_userinfo(v) != v) {
            Strip::Values(key.clone(), format!("userinfo in {key}"))
        } else {
            continue;
        };
        let id = match &strip {
            Strip::Section(s, _) | Strip::Rename(s, _, _) => format!("s:{s}"),
            Strip::Key(k, _) | Strip::Values(k, _) => format!("k:{k}"),
        };
        if seen.insert(id) {
            out.push(strip);
        }
    }
    out
}

fn describe(s: &Strip) -> String {
    match s {
        Strip::Section(_, d) | Strip::Key(_, d) | Strip::Rename(_, _, d) | Strip::Values(_, d) => {
            d.clone()
        }
    }
}

/// Remove credentials from one git config file in place; what was removed.
/// Fails (rather than copy a credential) when one is still there after.
fn strip_config(file: &Utf8Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    // Sections first (renames change key names), then values.
    for _round in 0..4 {
        let entries = config_entries(file)?;
        let todo = findings(&entries);
        if todo.is_empty() {
            return Ok(removed);
        }
        for s in &todo {
            match s {
                Strip::Section(sec, _) => {
                    git_config(file, &["--remove-section", sec])?;
                }
                Strip::Key(k, _) => {
                    git_config(file, &["--unset-all", k])?;
                }
                Strip::Rename(old, new, _) => {
                    git_config(file, &["--rename-section", old, new])?;
                }
                Strip::Values(k, _) => {
                    let values: Vec<String> = entries
                        .iter()
                        .filter(|(ek, _)| ek == k)
                        .filter_map(|(_, v)| v.as_deref().map(strip_userinfo))
                        .collect();
                    git_config(file, &["--unset-all", k])?;
                    for v in &values {
                        git_config(file, &["--add", k, v])?;
                    }
                }
            }
            let d = describe(s);
            if !removed.contains(&d) {
                removed.push(d);
            }
        }
    }
    if findings(&config_entries(file)?).is_empty() {
        return Ok(removed);
    }
    Err(Error::other(
        format!("could not remove every credential from {file}"),
        "remove credentials from the repository's git config by hand, or add .git to .bottleignore",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().to_path_buf()).unwrap();
        (d, p)
    }

    /// `git args…` in `dir` without the machine's git config, which must
    /// succeed; its stdout.
    fn git(dir: &Utf8Path, args: &[&str]) -> String {
        let o = duct::cmd("git", args)
            .dir(dir.as_std_path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn git_tree_respects_gitignore_and_bottleignore() {
        let (_d, root) = tmp();
        git(&root, &["init", "-q"]);
        fs::write(root.join(".gitignore"), "target/\n*.log\n").unwrap();
        fs::write(root.join(".bottleignore"), "# no secrets\n.env\nprivate/\n").unwrap();
        fs::create_dir_all(root.join("src")).unwrap();
        fs::create_dir_all(root.join("target")).unwrap();
        fs::create_dir_all(root.join("private")).unwrap();
        fs::write(root.join("src/main.rs"), "fn main(){}").unwrap();
        fs::write(root.join("untracked.txt"), "u").unwrap();
        fs::write(root.join("target/big.bin"), "x").unwrap();
        fs::write(root.join("debug.log"), "x").unwrap();
        fs::write(root.join(".env"), "TOKEN=x").unwrap();
        fs::write(root.join("private/key"), "k").unwrap();
        git(&root, &["add", "src/main.rs"]);
        let l = list(&root).unwrap();
        let names: Vec<&str> = l.files.iter().map(|p| p.as_str()).collect();
        assert!(names.contains(&"src/main.rs"));
        assert!(names.contains(&"untracked.txt"));
        assert!(names.contains(&".gitignore"));
        assert!(names.iter().any(|n| n.starts_with(".git/")));
        for gone in ["target/big.bin", "debug.log", ".env", "private/key"] {
            assert!(!names.contains(&gone), "{gone} copied: {names:?}");
        }
        let h1 = l.hash().unwrap();
        fs::write(root.join("untracked.txt"), "changed").unwrap();
        assert_ne!(h1, list(&root).unwrap().hash().unwrap());
        fs::write(root.join("debug.log"), "ignored change").unwrap();
        let h2 = list(&root).unwrap().hash().unwrap();
        assert_eq!(h2, list(&root).unwrap().hash().unwrap());

        let (_d2, dest) = tmp();
        l.stage(&dest.join("ws")).unwrap();
        assert!(dest.join("ws/src/main.rs").is_file());
        assert!(!dest.join("ws/.env").exists());
    }

    /// The copy of a real repository carries no git credential: extraheaders,
    /// credential helpers (global and per-URL), include directives, and
    /// userinfo in remote URLs, push URLs, `insteadOf` section names and
    /// proxies are gone from `.git/config` (and a submodule's config); the
    /// rest of the config, and the repository, still work.
    #[test]
    fn staged_git_config_carries_no_credentials() {
        let (_d, root) = tmp();
        git(&root, &["init", "-q", "-b", "main"]);
        fs::write(root.join("a.txt"), "a").unwrap();
        git(&root, &["add", "a.txt"]);
        git(
            &root,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@x",
                "commit",
                "-qm",
                "one",
            ],
        );
        let set = |k: &str, v: &str| git(&root, &["config", "--add", k, v]);
        set("user.name", "Keep Me");
        set(
            "remote.origin.url",
            "https://bob:SECRET-pw-1@git.example.invalid/team/x.git",
        );
        set(
            "remote.origin.pushurl",
            "https://SECRET-token-2@git.example.invalid/team/x.git",
        );
        set("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*");
        set(
            "remote.ssh.url",
            "ssh://git:SECRET-pw-3@git.example.invalid/team/x.git",
        );
        set(
            "remote.plainssh.url",
            "ssh://git@git.example.invalid/team/x.git",
        );
        set("http.extraheader", "AUTHORIZATION: basic SECRET-header-4");
        set(
            "http.https://git.example.invalid/.extraheader",
            "AUTHORIZATION: bearer SECRET-header-5",
        );
        set("http.https://git.example.invalid/.sslVerify", "true");
        set(
            "http.proxy",
            "http://proxyuser:SECRET-proxy-6@proxy.example.invalid:3128",
        );
        set("credential.helper", "store --file /home/op/SECRET-store-7");
        set(
            "credential.https://git.example.invalid.username",
            "SECRET-user-8",
        );
        set(
            "url.https://SECRET-token-9@git.example.invalid/.insteadOf",
            "https://git.example.invalid/",
        );
        set("include.path", "/home/op/SECRET-include-10");
        // a submodule's own gitdir under .git/modules
        let sub = root.join(".git/modules/lib");
        git(&root, &["init", "-q", "--bare", sub.as_str()]);
        git(
            &sub,
            &[
                "config",
                "remote.origin.url",
                "https://SECRET-token-11@git.example.invalid/lib.git",
            ],
        );

        let l = list(&root).unwrap();
        let found = l.git_credentials().unwrap();
        let shown: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        for want in [
            "http extraheader (.git/config)",
            "credential helper settings (.git/config)",
            "userinfo in remote.origin.url (.git/config)",
            "userinfo in remote.origin.url (.git/modules/lib/config)",
        ] {
            assert!(
                shown.iter().any(|s| s == want),
                "{want} missing from {shown:?}"
            );
        }
        assert!(shown.iter().all(|s| !s.contains("SECRET")), "{shown:?}");
        // listing changed nothing in the source
        assert!(fs::read_to_string(root.join(".git/config"))
            .unwrap()
            .contains("SECRET-header-4"));

        let (_d2, dest) = tmp();
        let ws = dest.join("ws");
        l.stage(&ws).unwrap();
        for cfg in [".git/config", ".git/modules/lib/config"] {
            let text = fs::read_to_string(ws.join(cfg)).unwrap();
            assert!(
                !text.contains("SECRET"),
                "{cfg} still carries a credential:\n{text}"
            );
        }
        let get = |k: &str| git(&ws, &["config", "--get-all", k]);
        assert_eq!(
            get("remote.origin.url").trim(),
            "https://git.example.invalid/team/x.git"
        );
        assert_eq!(
            get("remote.ssh.url").trim(),
            "ssh://git@git.example.invalid/team/x.git"
        );
        assert_eq!(
            get("remote.plainssh.url").trim(),
            "ssh://git@git.example.invalid/team/x.git"
        );
        assert_eq!(
            get("http.proxy").trim(),
            "http://proxy.example.invalid:3128"
        );
        assert_eq!(get("user.name").trim(), "Keep Me");
        assert_eq!(
            get("http.https://git.example.invalid/.sslverify").trim(),
            "true"
        );
        assert_eq!(
            get("url.https://git.example.invalid/.insteadof").trim(),
            "https://git.example.invalid/"
        );
        // the copy is still a working repository
        assert_eq!(git(&ws, &["log", "--format=%s"]).trim(), "one");
    }

    #[test]
    fn an_empty_repo_stays_a_repo() {
        let (_d, root) = tmp();
        git(&root, &["init", "-q"]);
        fs::write(root.join("notes.txt"), "not committed").unwrap();
        let (_d2, dest) = tmp();
        let ws = dest.join("ws");
        list(&root).unwrap().stage(&ws).unwrap();
        // still a repository
        assert_eq!(
            git(&ws, &["rev-parse", "--is-inside-work-tree"]).trim(),
            "true"
        );
        assert!(ws.join("notes.txt").is_file());
    }

    #[test]
    fn plain_dir_copies_everything_but_bottleignore() {
        let (_d, root) = tmp();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(root.join(".bottleignore"), "/a.txt\n").unwrap();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a.txt"), "nested a stays").unwrap();
        let l = list(&root).unwrap();
        let names: Vec<&str> = l.files.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, vec![".bottleignore", "sub/a.txt"]);
    }
}
