//! `cargo xtask`: the project's automation.
//!
//! - `test`: fmt check, clippy `-D warnings`, the whole test suite. A test
//!   that needs a real engine/tool it lacks here is reported ignored with
//!   the reason (`tests/gate`), never ok; with `CI=true` it fails.
//! - `tidy`: the tidy checks (`tidy::` trials of the integration binary).
//! - `demo`: a built-in demo agent in a real bottle.
//! - `seed-base`: build the base image locally on registry-less hosts.
//! - `security-table`: docs/security.md's per-backend table from the
//!   security suite's reports.
//! - `bench <egress|git-gate|supervise|start|scale>`: benchmarks → docs/benchmarks.md.
//! - `integration --backend smolmachines`: e2e + security on a VM-capable runner.
//! - `fuzz --seconds N`: every cargo-fuzz target (fuzz/ is outside the workspace).

mod bench_egress;
mod bench_git_gate;
mod bench_scale;
mod bench_start;
mod bench_supervise;
mod demo;
mod fuzz;
mod integration;
mod security_table;
mod seed_base;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match task {
        "test" => test(rest),
        "tidy" => tidy(),
        "features" => feature_matrix(),
        "demo" => demo::run(rest),
        "seed-base" => seed_base::run(rest),
        "security-table" => security_table::run(rest),
        "integration" => integration::run(rest),
        "fuzz" => fuzz::run(rest),
        "bench" => bench(rest),
        "help" | "--help" | "-h" => {
            println!("{}", HELP);
            Ok(())
        }
        other => Err(format!("unknown task `{other}`\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const HELP: &str = "usage: cargo xtask <task>
  test                      fmt check, clippy -D warnings, every test
  tidy                      the tidy checks
  features                  check a docker-only build names the missing smolmachines feature
  demo                      run the demo agent in a real bottle (needs docker)
  seed-base                 build the base image locally (debootstrap + docker import)
  security-table [--check]  docs/security.md's per-backend table from the security suite's reports
  bench <name>              egress | git-gate | supervise | start | scale (writes docs/benchmarks.md)
  integration --backend B   e2e + security suites on a VM-capable runner
  fuzz --seconds N          run every cargo-fuzz target for N seconds";

fn bench(args: &[String]) -> Result<(), String> {
    let (name, rest) = args
        .split_first()
        .ok_or("usage: cargo xtask bench <egress|git-gate|supervise|start|scale>")?;
    match name.as_str() {
        "egress" => bench_egress::run(rest),
        "git-gate" => bench_git_gate::run(rest),
        "supervise" => bench_supervise::run(rest),
        "start" => bench_start::run(rest),
        "scale" => bench_scale::run(rest),
        other => Err(format!(
            "unknown benchmark `{other}` (egress, git-gate, supervise, start, scale)"
        )),
    }
}

fn cargo(args: &[&str]) -> Result<(), String> {
    println!("$ cargo {}", args.join(" "));
    let status = duct::cmd("cargo", args)
        .unchecked()
        .run()
        .map_err(|e| format!("could not run cargo: {e}"))?
        .status;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn test(args: &[String]) -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    if in_ci() {
        // real-engine tests are required in CI: make sure the images they
        // build FROM exist (cached; a warm run does nothing)
        if duct::cmd!("docker", "info")
            .stdout_null()
            .stderr_null()
            .run()
            .is_ok()
        {
            seed_base::run(&[])?;
        }
    }
    // the docs build clean (rustdoc warnings are errors)
    println!("$ RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps");
    let doc = duct::cmd!("cargo", "doc", "--workspace", "--no-deps", "-q")
        .env("RUSTDOCFLAGS", "-D warnings")
        .unchecked()
        .run()
        .map_err(|e| format!("could not run cargo doc: {e}"))?;
    if !doc.status.success() {
        return Err("`cargo doc` has warnings".into());
    }
    feature_matrix()?;
    let mut test_args = vec!["test", "--workspace", "--no-fail-fast"];
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    test_args.extend(extra);
    cargo(&test_args)
}

/// A build with only the docker backend must name the missing feature when
/// asked for smolmachines (object_store style), and exit 3.
fn feature_matrix() -> Result<(), String> {
    // same target dir: only bottle-cli itself rebuilds (dependency features
    // are unchanged), and `cargo test` rebuilds it with default features
    let target = "target";
    cargo(&[
        "build",
        "-q",
        "-p",
        "bottle-cli",
        "--no-default-features",
        "--features",
        "docker",
    ])?;
    let home = std::env::temp_dir().join(format!("bottle-feature-check-{}", std::process::id()));
    let bin = format!("{target}/debug/bottle");
    let run = |args: &[&str]| {
        duct::cmd(&bin, args)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|e| format!("could not run {bin}: {e}"))
    };
    let home_s = home.to_string_lossy().into_owned();
    run(&["--home", &home_s, "init", "-q"])?;
    let out = run(&[
        "--home",
        &home_s,
        "--backend",
        "smolmachines",
        "plan",
        "demo",
    ])?;
    let _ = std::fs::remove_dir_all(&home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want =
        "backend `smolmachines` is not compiled into this build (enable feature `smolmachines`)";
    if out.status.code() != Some(3) || !stderr.contains(want) {
        return Err(format!(
            "docker-only build: expected exit 3 and `{want}`, got {:?}: {stderr}",
            out.status.code()
        ));
    }
    println!(
        "feature matrix: docker-only build refuses smolmachines with the feature name (exit 3)"
    );
    Ok(())
}

fn tidy() -> Result<(), String> {
    cargo(&[
        "test",
        "-p",
        "bottle-tests",
        "--test",
        "integration",
        "tidy::",
    ])
}
