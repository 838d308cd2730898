//! A per-process scratch directory shared by the targets (tmpfs when there is
//! one: the targets write files on every iteration). Directories left by
//! earlier runs whose process is gone are removed on first use.

use std::path::{Path, PathBuf};

/// `<tmp>/bottle-fuzz-<target>-<pid>`, created once per process.
pub fn dir(target: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let prefix = format!("bottle-fuzz-{target}-");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            let gone = pid
                .parse::<u32>()
                .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists());
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
