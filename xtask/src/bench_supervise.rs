//! `cargo xtask bench supervise`: policy-change latency.
//!
//! Builds and runs `bottle-sidecars/examples/supervise_bench.rs` (release):
//! a real egress proxy + supervise MCP server + loopback upstream in one
//! process; per round the agent asks over MCP, the operator API approves, and
//! the client polls until the proxy lets the next request through (target
//! < 1 s), then revokes and polls until refused. Rewrites the `supervise`
//! section of docs/benchmarks.md and prints the same table.
//!
//! Flags: `--rounds N` (default 30), `--no-write` (print only).

use std::path::{Path, PathBuf};

use crate::bench_start::write_section;

/// Run this benchmark.
pub fn run(args: &[String]) -> Result<(), String> {
    let write = !args.iter().any(|a| a == "--no-write");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|n| {
            n.parse::<usize>()
                .map_err(|_| format!("--rounds {n}: not a number"))
        })
        .transpose()?
        .unwrap_or(30);
    let root = workspace_root()?;
    eprintln!("bench supervise: building the load generator (release)…");
    duct::cmd!(
        "cargo",
        "build",
        "--release",
        "-p",
        "bottle-sidecars",
        "--example",
        "supervise_bench"
    )
    .dir(&root)
    .run()
    .map_err(|e| format!("cargo build failed: {e}"))?;
    let exe = root.join("target/release/examples/supervise_bench");
    eprintln!("bench supervise: {rounds} rounds…");
    let table = duct::cmd(&exe, [rounds.to_string()])
        .dir(&root)
        .read()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let section = format!(
        "## supervise\n\n\
         Policy-change latency: the agent calls `request_egress` over MCP (rmcp \
         streamable HTTP), the operator approves with `supervise::queue::approve` \
         (what `bottle approve` calls), and a client polls a running egress proxy \
         every 2 ms until the next request to that host passes. Then the approval \
         is revoked (`bottle deny` on an approved request) and the client polls \
         until refused. Target: approve → allowed < 1 s. Plain HTTP to a loopback \
         upstream, {rounds} rounds, one process, release build \
         (`bottle-sidecars/examples/supervise_bench.rs`). Machine: {}.\n\n{}\n",
        machine(),
        table.trim()
    );
    println!("{section}");
    if write {
        let path = root.join("docs/benchmarks.md");
        write_section(&path, "supervise", &section)?;
        eprintln!("bench supervise: wrote {}", path.display());
    }
    Ok(())
}

fn workspace_root() -> Result<PathBuf, String> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| "no workspace root".into())
}

fn machine() -> String {
    format!(
        "{}, {}",
        crate::bench_start::machine(),
        std::env::consts::OS
    )
}
