//! Multi-file manifest fixtures, as the snapshot tests and fuzz targets use
//! them: one text holding several files of a home, each after a
//! `# --- <relative path>` line.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let root = camino::Utf8Path::from_path(dir.path()).unwrap();
//! bottle_core::fixture::write_case("# --- bottles/dev.toml\nbackend = \"docker\"\n# --- agents/demo.toml\nbottle = \"dev\"\n", root).unwrap();
//! assert_eq!(std::fs::read_to_string(root.join("agents/demo.toml")).unwrap(), "bottle = \"dev\"\n");
//! ```

use camino::{Utf8Path, Utf8PathBuf};

/// Write every `# --- <path>` section of `case` under `root` (creating
/// directories). Text before the first marker is ignored.
pub fn write_case(case: &str, root: &Utf8Path) -> std::io::Result<()> {
    let mut files: Vec<(Utf8PathBuf, String)> = Vec::new();
    for line in case.lines() {
        if let Some(rel) = line.strip_prefix("# --- ") {
            files.push((root.join(rel.trim()), String::new()));
        } else if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    for (path, text) in files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
    }
    Ok(())
}
