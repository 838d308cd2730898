//! `cargo xtask fuzz --seconds N [--target T]... [--sanitizer S]`: build the
//! cargo-fuzz crate in `fuzz/` and run each target for N seconds, one after
//! another; fail if any target finds a crash (its input is left in
//! `fuzz/artifacts/<target>/`). Prints a summary with libFuzzer's final
//! stats (executions, new corpus entries) per target.
//!
//! Needs `cargo install cargo-fuzz`. On a stable toolchain the nightly-only
//! flags cargo-fuzz passes are enabled with `RUSTC_BOOTSTRAP=1`.
//!
//! Corpora: `fuzz/corpus/<target>/` is the committed seed corpus (read
//! only); new inputs go to `fuzz/corpus-gen/<target>/` (gitignored).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every fuzz target, in run order.
pub const TARGETS: &[&str] = &["manifest", "routes", "request_head", "dlp"];

const USAGE: &str = "usage: cargo xtask fuzz --seconds N [--target manifest|routes|request_head|dlp]... [--sanitizer none|address]";

#[derive(Debug)]
struct Opts {
    seconds: u64,
    targets: Vec<String>,
    sanitizer: String,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut seconds = None;
    let mut targets = Vec::new();
    let mut sanitizer = "none".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                seconds = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("--seconds: `{v}` is not a positive number"))?,
                );
            }
            "--target" => {
                let t = value("--target")?;
                if !TARGETS.contains(&t.as_str()) {
                    return Err(format!(
                        "unknown fuzz target `{t}` ({})",
                        TARGETS.join(", ")
                    ));
                }
                targets.push(t);
            }
            "--sanitizer" => sanitizer = value("--sanitizer")?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let seconds = seconds.ok_or_else(|| format!("--seconds is required\n{USAGE}"))?;
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(Opts {
        seconds,
        targets,
        sanitizer,
    })
}

/// libFuzzer's numbers for one run.
#[derive(Default, Debug)]
struct Stats {
    /// From `Done <runs> runs in <secs> second(s)`.
    fuzz_secs: Option<u64>,
    execs: Option<u64>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
    artifact: Option<String>,
}

fn stat(line: &str, key: &str) -> Option<u64> {
    line.trim()
        .strip_prefix(key)?
        .trim_start_matches(':')
        .trim()
        .parse()
        .ok()
}

fn scan_line(line: &str, s: &mut Stats) {
    if let Some(v) = stat(line, "stat::number_of_executed_units") {
        s.execs = Some(v);
    } else if let Some(v) = stat(line, "stat::new_units_added") {
        s.new_units = Some(v);
    } else if let Some(v) = stat(line, "stat::peak_rss_mb") {
        s.peak_rss_mb = Some(v);
    } else if let Some(rest) = line.trim().strip_prefix("Done ") {
        s.fuzz_secs = rest
            .split_once(" runs in ")
            .and_then(|(_, t)| t.split_whitespace().next())
            .and_then(|t| t.parse().ok());
    } else if let Some(i) = line.find("Test unit written to ") {
        s.artifact = Some(line[i + "Test unit written to ".len()..].trim().to_owned());
    }
}

/// The `cargo fuzz` invocation shared by build and run (same flags, so
/// `run` reuses the build).
fn cargo_fuzz(sub: &str, sanitizer: &str) -> Vec<String> {
    [
        "fuzz",
        sub,
        "--sanitizer",
        sanitizer,
        "--debug-assertions",
        "--codegen-units",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `<workspace>/fuzz`: next to xtask, else the nearest `fuzz/Cargo.toml`
/// above the current directory.
fn fuzz_dir() -> Result<PathBuf, String> {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("fuzz"));
    if let Some(dir) = beside.filter(|d| d.join("Cargo.toml").is_file()) {
        return Ok(dir);
    }
    let cwd = std::env::current_dir().map_err(|e| format!("current dir: {e}"))?;
    cwd.ancestors()
        .map(|a| a.join("fuzz"))
        .find(|d| d.join("Cargo.toml").is_file())
        .ok_or_else(|| "no fuzz/Cargo.toml found (run from the workspace)".into())
}

/// Run `cargo-fuzz`: build once, then each target for `--seconds`.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let dir = fuzz_dir()?;
    let have = duct::cmd!("cargo", "fuzz", "--version")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        return Err("cargo-fuzz is not installed: run `cargo install cargo-fuzz`".into());
    }

    let build = cargo_fuzz("build", &opts.sanitizer);
    println!("$ (cd fuzz && RUSTC_BOOTSTRAP=1 cargo {})", build.join(" "));
    let status = duct::cmd("cargo", &build)
        .dir(&dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .unchecked()
        .run()
        .map_err(|e| format!("could not run cargo fuzz: {e}"))?
        .status;
    if !status.success() {
        return Err(format!("building the fuzz targets failed ({status})"));
    }

    let mut rows = Vec::new();
    let mut crashed = Vec::new();
    for target in &opts.targets {
        let gen = format!("corpus-gen/{target}");
        let seeds = format!("corpus/{target}");
        std::fs::create_dir_all(dir.join(&gen)).map_err(|e| format!("{gen}: {e}"))?;
        std::fs::create_dir_all(dir.join(&seeds)).map_err(|e| format!("{seeds}: {e}"))?;
        let mut cmd = cargo_fuzz("run", &opts.sanitizer);
        cmd.extend([
            target.clone(),
            gen,
            seeds,
            "--".into(),
            format!("-max_total_time={}", opts.seconds),
            "-rss_limit_mb=2048".into(),
            "-timeout=30".into(),
            "-print_final_stats=1".into(),
        ]);
        println!("$ (cd fuzz && RUSTC_BOOTSTRAP=1 cargo {})", cmd.join(" "));
        let t0 = Instant::now();
        let (ok, stats) = run_streaming(&dir, &cmd)?;
        let elapsed = t0.elapsed();
        let corpus = std::fs::read_dir(dir.join("corpus-gen").join(target))
            .map(|d| d.count())
            .unwrap_or(0);
        let result = if ok {
            "no crash".to_owned()
        } else {
            crashed.push(target.clone());
            match &stats.artifact {
                Some(a) => format!("CRASH: {a}"),
                None => "FAILED (see output)".to_owned(),
            }
        };
        rows.push(row(target, elapsed, &stats, corpus, &result));
    }

    println!();
    println!(
        "| target | fuzzing seconds | executions | exec/s | new units | corpus | peak RSS MB | result |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz target(s) crashed: {} (reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>)",
            crashed.join(", ")
        ))
    }
}

fn row(target: &str, elapsed: Duration, s: &Stats, corpus: usize, result: &str) -> String {
    // libFuzzer's own run time (the wall time also covers a rebuild).
    let secs = s.fuzz_secs.map_or(elapsed.as_secs_f64(), |t| t as f64);
    let opt = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let rate = s.execs.map_or("?".to_owned(), |e| {
        format!("{:.0}", e as f64 / secs.max(1.0))
    });
    format!(
        "| {target} | {secs:.0} | {} | {rate} | {} | {corpus} | {} | {result} |",
        opt(s.execs),
        opt(s.new_units),
        opt(s.peak_rss_mb),
    )
}

/// Run cargo-fuzz, echoing its output while collecting the final stats.
fn run_streaming(dir: &Path, cmd: &[String]) -> Result<(bool, Stats), String> {
    let reader = duct::cmd("cargo", cmd)
        .dir(dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .map_err(|e| format!("could not run cargo fuzz: {e}"))?;
    let mut stats = Stats::default();
    let mut lines = BufReader::new(&reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lines.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                print!("{line}");
                scan_line(&line, &mut stats);
            }
            Err(e) => return Err(format!("reading cargo fuzz output: {e}")),
        }
    }
    let ok = match reader.try_wait() {
        Ok(Some(out)) => out.status.success(),
        Ok(None) => false,
        Err(e) => return Err(format!("cargo fuzz: {e}")),
    };
    Ok((ok, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_arguments() {
        let o = parse(&args("--seconds 300")).unwrap();
        assert_eq!(o.seconds, 300);
        assert_eq!(o.targets, TARGETS);
        assert_eq!(o.sanitizer, "none");
        let o = parse(&args(
            "--seconds 5 --target dlp --target routes --sanitizer address",
        ))
        .unwrap();
        assert_eq!(o.targets, ["dlp", "routes"]);
        assert_eq!(o.sanitizer, "address");
        assert!(parse(&args(""))
            .unwrap_err()
            .contains("--seconds is required"));
        assert!(parse(&args("--seconds 0")).is_err());
        assert!(parse(&args("--seconds 5 --target nope"))
            .unwrap_err()
            .contains("unknown fuzz target"));
        assert!(parse(&args("--seconds")).is_err());
    }

    #[test]
    fn reads_libfuzzer_final_stats() {
        let mut s = Stats::default();
        for line in [
            "Done 123456 runs in 301 second(s)",
            "stat::number_of_executed_units: 123456",
            "stat::average_exec_per_sec:     410",
            "stat::new_units_added:          87",
            "stat::peak_rss_mb:              95",
            "==1== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='fuzz/artifacts/dlp/'; Test unit written to fuzz/artifacts/dlp/crash-abc",
        ] {
            scan_line(line, &mut s);
        }
        assert_eq!(s.execs, Some(123456));
        assert_eq!(s.fuzz_secs, Some(301));
        assert_eq!(s.new_units, Some(87));
        assert_eq!(s.peak_rss_mb, Some(95));
        assert_eq!(s.artifact.as_deref(), Some("fuzz/artifacts/dlp/crash-abc"));
    }
}
