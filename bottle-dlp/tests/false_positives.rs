//! Issue 15: the pattern rules do not block ordinary source text.
//!
//! At least 8 MiB of Rust source — the crates in the cargo registry (present
//! after any build, locally and in CI) and bottle's own `src/` trees — cut
//! into 4 KiB chunks, each scanned as an agent would send it: fewer than
//! 0.1 % of chunks may be blocked. Project tests, xtask (its demo pushes a
//! key-shaped file to show the gate refusing it) and the detector's own
//! crate are left out, and so are in-file `#[cfg(test)]` modules: they
//! carry credential-shaped samples on purpose.
//!
//! With less source than that on the machine (no build has filled the cargo
//! registry) the test is reported ignored with the reason, and failed with
//! `CI=true` (`bottle-test-gate`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bottle_dlp::Detector;
use bottle_test_gate::{run, trial, Requirement};

fn main() {
    run(vec![trial!(ordinary_source_text_is_not_blocked, &CORPUS)])
}

/// At least [`WANT_BYTES`] of source text to scan.
static CORPUS: Requirement = Requirement::new("source corpus", || {
    let have = corpus().len();
    if have >= WANT_BYTES {
        Ok(())
    } else {
        Err(format!(
            "only {have} bytes of Rust source found (want {WANT_BYTES}); build the workspace first so the cargo registry holds crate sources"
        ))
    }
});

const CHUNK: usize = 4096;
const WANT_BYTES: usize = 8 << 20;

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            // test fixtures and benches hold keys/tokens on purpose
            if matches!(
                name,
                "tests"
                    | "test"
                    | "testdata"
                    | "benches"
                    | "examples"
                    | "target"
                    | "fuzz"
                    | "bottle-dlp"
            ) {
                continue;
            }
            rs_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// The file up to its `#[cfg(test)]` module (by convention the file's
/// tail): in-file tests carry key and token fixtures on purpose, like the
/// `tests/` dirs left out above.
fn without_test_module(src: &[u8]) -> &[u8] {
    let marker = b"#[cfg(test)]";
    src.windows(marker.len())
        .position(|w| w == marker)
        .map_or(src, |i| &src[..i])
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Source text: bottle's own trees first, then registry crates in name
/// order (read once per process).
fn corpus() -> &'static [u8] {
    static TEXT: OnceLock<Vec<u8>> = OnceLock::new();
    TEXT.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut files = Vec::new();
    for krate in [
        "bottle-core",
        "bottle-sidecars",
        "bottle-cli",
        "bottle-docker",
        "bottle-smolmachines",
    ] {
        rs_files(&root.join(krate).join("src"), &mut files);
    }
    if let Some(home) = cargo_home() {
        let src = home.join("registry").join("src");
        if let Ok(indexes) = std::fs::read_dir(&src) {
            let mut indexes: Vec<_> = indexes.filter_map(Result::ok).map(|e| e.path()).collect();
            indexes.sort();
            for index in indexes {
                rs_files(&index, &mut files);
            }
        }
    }
    let mut text = Vec::with_capacity(WANT_BYTES + CHUNK);
    for f in files {
        if text.len() >= WANT_BYTES {
            break;
        }
        if let Ok(bytes) = std::fs::read(&f) {
            text.extend_from_slice(without_test_module(&bytes));
        }
    }
    text
}

fn ordinary_source_text_is_not_blocked() {
    let text = corpus();
    let det = Detector::new(Vec::new());
    let chunks: Vec<&[u8]> = text.chunks(CHUNK).collect();
    let mut blocked: Vec<String> = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        if let Some(f) = det.scan(chunk) {
            if let Some(dump) = std::env::var_os("DLP_FP_DUMP") {
                let at = f.offset.min(chunk.len());
                let from = at.saturating_sub(200);
                let to = (at + 200).min(chunk.len());
                let mut old = std::fs::read(&dump).unwrap_or_default();
                old.extend_from_slice(format!("\n==== chunk {i} {} at {at}\n", f.rule).as_bytes());
                old.extend_from_slice(&chunk[from..to]);
                std::fs::write(&dump, old).unwrap();
            }
            blocked.push(format!("chunk {i}: {}", f.rule));
        }
    }
    let rate = blocked.len() as f64 / chunks.len() as f64;
    eprintln!(
        "false positives: {} of {} chunks ({:.3} %) over {} bytes",
        blocked.len(),
        chunks.len(),
        rate * 100.0,
        text.len()
    );
    for b in &blocked {
        eprintln!("  {b}");
    }
    assert!(chunks.len() * CHUNK >= WANT_BYTES);
    assert!(
        rate < 0.001,
        "{} of {} chunks blocked: {blocked:?}",
        blocked.len(),
        chunks.len()
    );
}
