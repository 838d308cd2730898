//! `cargo xtask bench git-gate`: push N new commits through a real git-gate
//! vs directly to the same local upstream, in one run; prints a table and
//! rewrites the `git-gate` section of `docs/benchmarks.md`.
//!
//! Options: `--commits N` (default 100), `--rounds R` (default 5), `--no-write`.

use std::path::{Path, PathBuf};

/// Run this benchmark.
#[allow(dead_code)]
pub fn run(args: &[String]) -> Result<(), String> {
    let get = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let commits = get("--commits", "100");
    let rounds = get("--rounds", "5");
    let write = !args.iter().any(|a| a == "--no-write");
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    duct::cmd!(
        &cargo,
        "build",
        "--release",
        "-p",
        "bottle-sidecars",
        "--bin",
        "bottle-sidecar",
        "--example",
        "git_gate_bench"
    )
    .dir(&root)
    .run()
    .map_err(|e| format!("building the git-gate bench: {e}"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release");
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    let out = duct::cmd!(
        target.join("examples/git_gate_bench"),
        "--hook-program",
        target.join("bottle-sidecar"),
        "--commits",
        &commits,
        "--rounds",
        &rounds
    )
    .dir(&root)
    .read()
    .map_err(|e| format!("running the git-gate bench: {e}"))?;
    let kv = |k: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_owned()
    };
    let ratio: f64 = kv("ratio").parse().unwrap_or(f64::NAN);
    let verdict = if ratio <= 1.5 { "meets" } else { "misses" };
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let table = format!(
        "Push of {commits} new commits (new branch, small text changes), `git push` from a clone, \
         local `file://` upstream, {rounds} rounds after one warm-up, interleaved; median wall time \
         of the agent's `git push`. Host: {host}, {cores} cores, load average {load} at start.\n\n\
         | path | median ms | per round (ms) |\n|---|---:|---|\n\
         | direct `file://` push | {d} | {dr} |\n\
         | through git-gate (git:// → mirror → pre-receive → scan → upstream push) | {g} | {gr} |\n\
         | **ratio** | **{ratio:.2}×** ({verdict} the ≤ 1.5× target) | |\n\n\
         Inside the gate (medians, from the audit line): decision incl. upstream push {hd} ms, of which \
         secret scan of the {commits} new commits {sc} ms (scanned per round: {scanned}) and upstream push {up} ms.\n\n\
         Why it costs ~2× on a local upstream: the gate performs two full pushes (agent → mirror, \
         mirror → upstream, each with its own pack, index-pack and ref transaction) plus a refresh \
         `git fetch` and the scan, and only lets the first finish after the second succeeded. With a \
         remote upstream (ssh to a forge), the direct push is dominated by network round trips that the \
         gate's second leg also pays, and the local leg adds a roughly constant {local} ms.\n",
        d = kv("direct_median_ms"),
        dr = kv("direct_ms"),
        g = kv("gate_median_ms"),
        gr = kv("gate_ms"),
        hd = kv("hook_decide_median_ms"),
        sc = kv("scan_median_ms"),
        up = kv("upstream_push_median_ms"),
        scanned = kv("scanned"),
        local = {
            let g: f64 = kv("gate_median_ms").parse().unwrap_or(f64::NAN);
            let u: f64 = kv("upstream_push_median_ms").parse().unwrap_or(f64::NAN);
            format!("{:.0}", g - u)
        },
    );
    println!("{table}");
    if write {
        write_section(&root.join("docs/benchmarks.md"), "git-gate", &table)?;
        println!("wrote docs/benchmarks.md section git-gate");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Replace (or append) the `<!-- bench:NAME -->` … `<!-- /bench:NAME -->` block.
fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{open}\n## {name}\n\n{body}{close}");
    let new = match (old.find(&open), old.find(&close)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], block, &old[b + close.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), block),
    };
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("writing {}: {e}", path.display()))
}
