//! Load generator for `cargo xtask bench git-gate`: pushes N new commits
//! through a real gate (git:// → mirror → pre-receive → scan → upstream push)
//! and the same number directly to the same upstream, several interleaved
//! rounds, for a `file://` upstream and (when `/usr/sbin/sshd` exists) the
//! same repo behind a loopback sshd. Prints `key=value` lines on stdout,
//! keys prefixed `file.` / `ssh.`.
//!
//! Usage: `git_gate_bench --hook-program <bottle-sidecar> [--commits 100] [--rounds 5]`

#[path = "../tests/git_gate_support/mod.rs"]
mod git_gate_support;

use std::path::{Path, PathBuf};
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
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// How the direct clone reaches the upstream.
struct Direct {
    url: String,
    ssh_command: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    label: &str,
    w: &World,
    up: &Path,
    gate: &Gate,
    direct: Direct,
    commits: usize,
    rounds: usize,
) {
    let via_gate = w.path().join(format!("{label}-via-gate"));
    let direct_repo = w.path().join(format!("{label}-direct"));
    w.ok(
        w.path(),
        &[
            "clone",
            "--quiet",
            &gate.url("origin"),
            via_gate.to_str().unwrap(),
        ],
    );
    let git_direct = |cwd: &Path, args: &[&str]| {
        let mut c = w.git(cwd);
        if let Some(s) = &direct.ssh_command {
            c.env("GIT_SSH_COMMAND", s);
        }
        let out = c.args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    git_direct(
        w.path(),
        &[
            "clone",
            "--quiet",
            &direct.url,
            direct_repo.to_str().unwrap(),
        ],
    );

    let (mut gate_ms, mut direct_ms, mut scanned) = (Vec::new(), Vec::new(), Vec::new());
    let (mut decide_ms, mut scan_ms, mut upstream_ms) = (Vec::new(), Vec::new(), Vec::new());
    // One warm-up round (page cache, mirror objects, ssh), not counted.
    for r in 0..=rounds {
        for (repo, through_gate) in [(&via_gate, true), (&direct_repo, false)] {
            let branch = format!("bot/{label}-{}{r}", if through_gate { "g" } else { "d" });
            w.ok(repo, &["branch", &branch, "main"]);
            fast_import(w, &repo.join(".git"), &branch, commits, None);
            let t = Instant::now();
            if through_gate {
                w.ok(repo, &["push", "--quiet", "origin", &branch]);
            } else {
                git_direct(repo, &["push", "--quiet", "origin", &branch]);
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(
                w.ref_of(up, &format!("refs/heads/{branch}")).is_some(),
                "{branch} not upstream"
            );
            if r > 0 {
                if through_gate {
                    gate_ms.push(ms);
                } else {
                    direct_ms.push(ms);
                }
            }
        }
        if r > 0 {
            let line = gate.last("push");
            assert_eq!(line["decision"], "allow");
            scanned.push(line["scanned"].as_u64().unwrap_or(0));
            let f = |k: &str| line[k].as_f64().unwrap_or(f64::NAN);
            decide_ms.push(f("ms"));
            scan_ms.push(f("scan_ms"));
            upstream_ms.push(f("upstream_ms"));
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (g, d) = (median(&gate_ms), median(&direct_ms));
    println!("{label}.gate_ms={}", fmt(&gate_ms));
    println!("{label}.direct_ms={}", fmt(&direct_ms));
    println!("{label}.gate_median_ms={g:.1}");
    println!("{label}.direct_median_ms={d:.1}");
    println!("{label}.ratio={:.2}", g / d);
    println!("{label}.hook_decide_median_ms={:.1}", median(&decide_ms));
    println!("{label}.scan_median_ms={:.1}", median(&scan_ms));
    println!(
        "{label}.upstream_push_median_ms={:.1}",
        median(&upstream_ms)
    );
    println!(
        "{label}.scanned={}",
        scanned
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
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
    println!("commits={commits}");
    println!("rounds={rounds}");

    // file:// upstream.
    {
        let w = World::new();
        let up = w.upstream("up");
        let url = format!("file://{}", up.display());
        let gate = Gate::start_with(&w, &config_for(&w, &url, standard_rules()), hook.clone());
        scenario(
            "file",
            &w,
            &up,
            &gate,
            Direct {
                url,
                ssh_command: None,
            },
            commits,
            rounds,
        );
    }

    // The same over ssh to a loopback sshd (held key, pinned host key).
    let sshd_bin = Path::new("/usr/sbin/sshd");
    if !sshd_bin.exists() {
        println!("ssh.skipped=/usr/sbin/sshd not found");
        return;
    }
    let w = World::new();
    let up = w.upstream("up");
    let sshd = Sshd::start(sshd_bin, w.path());
    let kh = w.path().join("known_hosts");
    std::fs::write(&kh, format!("{}\n", sshd.known_hosts_line)).unwrap();
    let key = w.secrets().join("git-origin");
    std::fs::copy(&sshd.user_key, &key).unwrap();
    let mut cfg = config_for(&w, &sshd.url(&up), standard_rules());
    cfg.remotes[0].identity_file = Some(key.clone());
    cfg.remotes[0].known_hosts = Some(kh.clone());
    let gate = Gate::start_with(&w, &cfg, hook);
    let ssh_command = format!(
        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {}",
        kh.display(),
        key.display()
    );
    let direct = Direct {
        url: sshd.url(&up),
        ssh_command: Some(ssh_command),
    };
    scenario("ssh", &w, &up, &gate, direct, commits, rounds);
}
