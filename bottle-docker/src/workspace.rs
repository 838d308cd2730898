//! The `--cwd` copy: which files go into the derived image layer.
//!
//! In a git work tree: tracked and untracked files that `.gitignore` does not
//! exclude (`git ls-files -co --exclude-standard`), plus the `.git` directory
//! itself (the agent needs history to commit and push through the gate).
//! Elsewhere: every file. Then `.bottleignore` (gitignore-like patterns: `*`
//! globs, a leading `/` anchors to the root, a trailing `/` means a
//! directory, `#` comments) removes more. Symlinks are copied as links.
//! Listing and hashing only read; staging copies into a build context.

use std::collections::BTreeSet;
use std::fs;

use bottle_core::{Error, Result};
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

    /// Copy every file into `dest` (created), keeping links and modes.
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
        Ok(())
    }
}

/// The directories `git init` creates that a repository needs even empty.
const GIT_SKELETON: [&str; 4] = ["objects/info", "objects/pack", "refs/heads", "refs/tags"];

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().to_path_buf()).unwrap();
        (d, p)
    }

    #[test]
    fn git_tree_respects_gitignore_and_bottleignore() {
        let (_d, root) = tmp();
        let git = |args: &[&str]| {
            duct::cmd("git", args)
                .dir(root.as_std_path())
                .stdout_null()
                .stderr_null()
                .run()
                .unwrap();
        };
        git(&["init", "-q"]);
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
        git(&["add", "src/main.rs"]);
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

    #[test]
    fn an_empty_repo_stays_a_repo() {
        let (_d, root) = tmp();
        duct::cmd!("git", "init", "-q", root.as_str())
            .stdout_null()
            .run()
            .unwrap();
        fs::write(root.join("notes.txt"), "not committed").unwrap();
        let (_d2, dest) = tmp();
        let ws = dest.join("ws");
        list(&root).unwrap().stage(&ws).unwrap();
        let o = duct::cmd!(
            "git",
            "-C",
            ws.as_str(),
            "rev-parse",
            "--is-inside-work-tree"
        )
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
        assert!(
            o.status.success(),
            "not a git repository: {}",
            String::from_utf8_lossy(&o.stderr)
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
