//! A minimal ustar writer: regular files and directories with explicit
//! owner and mode, fed to `docker cp - <container>:/` (without `-a`, which would chown to the container user, docker keeps the archive's owners) so files land in the
//! agent owned by the right uid without a shell, a temp dir or a `chown`.

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory (path relative to `/`, no trailing slash).
    Dir {
        /// Path.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Owner uid/gid.
        owner: u32,
    },
    /// A regular file.
    File {
        /// Path.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Owner uid/gid.
        owner: u32,
        /// Content.
        data: Vec<u8>,
    },
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    let bytes = s.as_bytes();
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

fn header(path: &str, mode: u32, owner: u32, size: u64, typeflag: u8) -> Result<[u8; 512], String> {
    let mut h = [0u8; 512];
    let (prefix, name) = if path.len() <= 100 {
        ("", path)
    } else {
        let split = path[..path.len().min(155)]
            .rfind('/')
            .filter(|&i| path.len() - i - 1 <= 100)
            .ok_or_else(|| format!("path too long for the archive: {path}"))?;
        (&path[..split], &path[split + 1..])
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode & 0o7777));
    octal(&mut h[108..116], u64::from(owner));
    octal(&mut h[116..124], u64::from(owner));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    Ok(h)
}

/// Serialize entries into a tar archive.
pub fn archive(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            Entry::Dir { path, mode, owner } => {
                out.extend_from_slice(&header(&format!("{path}/"), *mode, *owner, 0, b'5')?);
            }
            Entry::File {
                path,
                mode,
                owner,
                data,
            } => {
                out.extend_from_slice(&header(path, *mode, *owner, data.len() as u64, b'0')?);
                out.extend_from_slice(data);
                let pad = (512 - data.len() % 512) % 512;
                out.extend(std::iter::repeat_n(0u8, pad));
            }
        }
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_tar_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = archive(&[
            Entry::Dir {
                path: "home/agent/.config".into(),
                mode: 0o755,
                owner: 1000,
            },
            Entry::File {
                path: "home/agent/.config/x.toml".into(),
                mode: 0o600,
                owner: 1000,
                data: b"hello".to_vec(),
            },
        ])
        .unwrap();
        let tar = dir.path().join("a.tar");
        std::fs::write(&tar, &bytes).unwrap();
        let list = duct::cmd!("tar", "-tvf", &tar).read().unwrap();
        assert!(list.contains("1000/1000"), "{list}");
        assert!(list.contains("-rw------- 1000/1000         5"), "{list}");
        assert!(list.contains("home/agent/.config/x.toml"), "{list}");
    }
}
