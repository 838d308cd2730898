//! Load generator for `cargo xtask bench git-gate`: pushes N new commits
//! through a real gate (git:// → mirror → pre-receive → scan → upstream push)
//! and the same number directly to the same local upstream, several rounds,
//! and prints `key=value` results on stdout.
//!
//! Usage: `git_gate_bench --hook-program <bottle-sidecar> [--commits 100] [--rounds 5]`

#[path = "../tests/git_gate_support/mod.rs"]
mod git_gate_support;

use std::path::PathBuf;
use std::time::Instant;

use git_gate_support::*;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hook = PathBuf::from(
        arg(&args, "--hook-program").expect("--hook-program <bottle-sidecar binary>"),
    );
    let commits: usize = arg(&args, "--commits")
        .map(|v| v.parse().unwrap())
        .unwrap_or(100);
    let rounds: usize = arg(&args, "--rounds")
        .map(|v| v.parse().unwrap())
        .unwrap_or(5);

    let w = World::new();
    let up = w.upstream("up");
    let up_url = format!("file://{}", up.display());
    let gate = Gate::start_with(&w, &config_for(&w, &up_url, standard_rules()), hook);
    let via_gate = w.path().join("via-gate");
    let direct = w.path().join("direct");
    w.ok(
        w.path(),
        &[
            "clone",
            "--quiet",
            &gate.url("origin"),
            via_gate.to_str().unwrap(),
        ],
    );
    w.ok(
        w.path(),
        &["clone", "--quiet", &up_url, direct.to_str().unwrap()],
    );

    let mut gate_ms = Vec::new();
    let mut direct_ms = Vec::new();
    let mut scanned = Vec::new();
    let (mut decide_ms, mut scan_ms, mut upstream_ms) = (Vec::new(), Vec::new(), Vec::new());
    // One warm-up round each (page cache, mirror objects), not counted.
    for r in 0..=rounds {
        for (repo, prefix, times) in [
            (&via_gate, "g", &mut gate_ms),
            (&direct, "d", &mut direct_ms),
        ] {
            let branch = format!("bot/{prefix}{r}");
            w.ok(repo, &["branch", &branch, "main"]);
            fast_import(&w, &repo.join(".git"), &branch, commits, None);
            let t = Instant::now();
            w.ok(repo, &["push", "--quiet", "origin", &branch]);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(
                w.ref_of(&up, &format!("refs/heads/{branch}")).is_some(),
                "{branch} not upstream"
            );
            if r > 0 {
                times.push(ms);
            }
        }
        if r > 0 {
            let line = gate.last("push");
            scanned.push(line["scanned"].as_u64().unwrap_or(0));
            let f = |k: &str| line[k].as_f64().unwrap_or(0.0);
            decide_ms.push(f("ms"));
            scan_ms.push(f("scan_ms"));
            upstream_ms.push(f("upstream_ms"));
        }
    }
    let g = median(&gate_ms);
    let d = median(&direct_ms);
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!("commits={commits}");
    println!("rounds={rounds}");
    println!("gate_ms={}", fmt(&gate_ms));
    println!("direct_ms={}", fmt(&direct_ms));
    println!("gate_median_ms={g:.1}");
    println!("direct_median_ms={d:.1}");
    println!("ratio={:.2}", g / d);
    println!("hook_decide_median_ms={:.1}", median(&decide_ms));
    println!("scan_median_ms={:.1}", median(&scan_ms));
    println!("upstream_push_median_ms={:.1}", median(&upstream_ms));
    println!(
        "scanned={}",
        scanned
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
}
