//! Placing what `bottle cp <id>:<path> <host path>` copied out of a bottle
//! onto the host, without letting the agent choose where it lands
//! (docs/security.md, "Work out").
//!
//! The backend copies into a fresh private staging directory; [`place`]
//! then moves it to the operator's destination under two rules:
//! - nothing the agent made may be a symlink or a special file: a symlink
//!   copied out would point the operator (or a later copy) at a host path
//!   of the agent's choosing, so the whole copy is refused;
//! - nothing is written through a link at the destination: a file is
//!   opened with `O_NOFOLLOW`, and an existing symlink where a file or
//!   directory would go refuses the copy (an earlier copy, or anyone, may
//!   have left it there).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use camino::{Utf8Path, Utf8PathBuf};

use crate::{Error, Result};

/// Move the staged copy `staged` (named `name` in the bottle) to `dst`:
/// into it when `dst` is a directory, else to `dst` itself. Returns where
/// it landed.
pub fn place(staged: &Utf8Path, name: &str, dst: &Utf8Path) -> Result<Utf8PathBuf> {
    refuse_links(staged, Utf8Path::new(name))?;
    let meta = std::fs::symlink_metadata(dst);
    let target = match meta {
        Ok(m) if m.file_type().is_symlink() => return Err(link_at(dst)),
        Ok(m) if m.is_dir() => dst.join(name),
        _ => dst.to_owned(),
    };
    copy(staged, &target)?;
    Ok(target)
}

/// Every entry of the staged tree is a regular file or a directory.
fn refuse_links(path: &Utf8Path, shown: &Utf8Path) -> Result<()> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if m.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map_err(|e| Error::io("listing", path, e))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            refuse_links(&path.join(&n), &shown.join(&n))?;
        }
        Ok(())
    } else if m.is_file() {
        Ok(())
    } else {
        Err(Error::Refused {
            why: format!(
                "the bottle's `{shown}` is a symlink or special file: copied out, it could point at a host path the agent chose"
            ),
            fix: "copy the file it points to (or a directory without links) instead".into(),
        })
    }
}

fn link_at(path: &Utf8Path) -> Error {
    Error::Refused {
        why: format!("{path} is a symlink: `bottle cp` does not write through links"),
        fix: format!("remove {path} or copy to another path"),
    }
}

/// Copy the checked tree `from` to `to`, never following a link at `to`.
fn copy(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    let m = std::fs::symlink_metadata(from).map_err(|e| Error::io("reading", from, e))?;
    let existing = std::fs::symlink_metadata(to).ok();
    if existing
        .as_ref()
        .is_some_and(|e| e.file_type().is_symlink())
    {
        return Err(link_at(to));
    }
    if m.is_dir() {
        match existing {
            Some(e) if e.is_dir() => {}
            Some(_) => {
                return Err(Error::other(
                    format!("{to} exists and is not a directory"),
                    "copy to another path",
                ))
            }
            None => std::fs::create_dir(to).map_err(|e| Error::io("creating", to, e))?,
        }
        for entry in std::fs::read_dir(from).map_err(|e| Error::io("listing", from, e))? {
            let entry = entry.map_err(|e| Error::io("listing", from, e))?;
            let n = entry.file_name().to_string_lossy().into_owned();
            copy(&from.join(&n), &to.join(&n))?;
        }
        return Ok(());
    }
    let data = std::fs::read(from).map_err(|e| Error::io("reading", from, e))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(m.permissions().mode() & 0o777)
        .open(to)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => link_at(to),
            _ => Error::io("writing", to, e),
        })?;
    f.write_all(&data).map_err(|e| Error::io("writing", to, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().to_owned()).unwrap();
        (d, p)
    }

    #[test]
    fn a_file_lands_at_the_path_or_in_the_directory() {
        let (_d, p) = dir();
        std::fs::write(p.join("staged"), "work").unwrap();
        let to = place(&p.join("staged"), "out.txt", &p.join("copy.txt")).unwrap();
        assert_eq!(std::fs::read_to_string(to).unwrap(), "work");
        std::fs::create_dir(p.join("into")).unwrap();
        let to = place(&p.join("staged"), "out.txt", &p.join("into")).unwrap();
        assert_eq!(to, p.join("into/out.txt"));
        assert_eq!(std::fs::read_to_string(to).unwrap(), "work");
    }

    #[test]
    fn a_link_the_agent_made_is_refused_and_nothing_lands() {
        let (_d, p) = dir();
        std::fs::create_dir_all(p.join("staged/sub")).unwrap();
        std::fs::write(p.join("staged/a.txt"), "a").unwrap();
        symlink("/etc/passwd", p.join("staged/sub/link")).unwrap();
        let e = place(&p.join("staged"), "ws", &p.join("out")).unwrap_err();
        assert!(e.to_string().contains("`ws/sub/link` is a symlink"), "{e}");
        assert!(!p.join("out").exists());
    }

    #[test]
    fn nothing_is_written_through_a_link_at_the_destination() {
        let (_d, p) = dir();
        std::fs::write(p.join("victim"), "host file").unwrap();
        std::fs::write(p.join("staged"), "agent text").unwrap();
        // the destination itself
        symlink(p.join("victim"), p.join("out.txt")).unwrap();
        let e = place(&p.join("staged"), "out.txt", &p.join("out.txt")).unwrap_err();
        assert!(
            e.to_string().contains("does not write through links"),
            "{e}"
        );
        // a link inside a destination directory
        std::fs::create_dir(p.join("into")).unwrap();
        symlink(p.join("victim"), p.join("into/out.txt")).unwrap();
        let e = place(&p.join("staged"), "out.txt", &p.join("into")).unwrap_err();
        assert!(
            e.to_string().contains("does not write through links"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(p.join("victim")).unwrap(),
            "host file"
        );
    }
}
