//! `cargo xtask integration --backend smolmachines`: the end-to-end and
//! security suites against real micro-VMs, on a runner that can boot them
//! (macOS with Hypervisor.framework, or Linux with a working KVM).
//!
//! 1. Probe with the backend's own probe (`examples/smolvm_probe.rs`): a
//!    host that cannot boot a VM stops here, printing why and how to fix,
//!    and exits non-zero (a VM-capable runner that regressed must not pass).
//! 2. Run, with `BOTTLE_TEST_SMOLVM=1` (real-VM tests required) and
//!    `BOTTLE_TEST_BACKEND=smolmachines`:
//!    - the smolvm contract tests, the render/secret guards, the no-boot test;
//!    - the real-VM security tests (`bottle-smolmachines --test vm`);
//!    - the shared e2e + security suites of `bottle-tests` for this backend.
//! 3. Print a summary table; exit non-zero if any suite failed.

use std::time::Instant;

struct Suite {
    name: &'static str,
    args: Vec<&'static str>,
}

/// Run it.
pub fn run(args: &[String]) -> Result<(), String> {
    let backend = match args {
        [flag, b] if flag == "--backend" => b.as_str(),
        [flag] if flag.starts_with("--backend=") => &flag["--backend=".len()..],
        _ => return Err("usage: cargo xtask integration --backend smolmachines".into()),
    };
    if backend != "smolmachines" {
        return Err(format!(
            "integration runs the smolmachines backend only (got `{backend}`); the docker backend's real-engine tests run in `cargo xtask test`"
        ));
    }

    println!("== probe: can this host boot micro-VMs?");
    let probe = duct::cmd!(
        "cargo",
        "run",
        "--quiet",
        "-p",
        "bottle-smolmachines",
        "--example",
        "smolvm_probe"
    )
    .stdout_capture()
    .unchecked()
    .run()
    .map_err(|e| format!("could not run the probe: {e}"))?;
    let text = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
    println!("{text}");
    if !probe.status.success() {
        let why = field(&text, "why").unwrap_or_else(|| text.clone());
        let fix = field(&text, "fix").unwrap_or_default();
        return Err(format!(
            "this host cannot run the smolmachines integration suites: {why}\n  fix: {fix}"
        ));
    }

    let suites = [
        Suite {
            name: "smolvm contract",
            args: vec!["test", "-p", "bottle-smolmachines", "--test", "contract"],
        },
        Suite {
            name: "render + secret guards",
            args: vec![
                "test",
                "-p",
                "bottle-smolmachines",
                "--lib",
                "--test",
                "render",
                "--test",
                "no_boot",
            ],
        },
        Suite {
            name: "real-VM security",
            args: vec![
                "test",
                "-p",
                "bottle-smolmachines",
                "--test",
                "vm",
                "--",
                "--test-threads=1",
            ],
        },
        Suite {
            name: "e2e (bottle-tests)",
            args: vec![
                "test",
                "-p",
                "bottle-tests",
                "--test",
                "integration",
                "--",
                "--test-threads=1",
            ],
        },
        Suite {
            name: "security suite, smolmachines (bottle-tests)",
            args: vec![
                "test",
                "-p",
                "bottle-tests",
                "--test",
                "security",
                "--",
                "smolmachines::",
            ],
        },
    ];
    let mut rows = Vec::new();
    for s in &suites {
        println!("\n== {}: cargo {}", s.name, s.args.join(" "));
        let start = Instant::now();
        let status = duct::cmd("cargo", &s.args)
            .env("BOTTLE_TEST_SMOLVM", "1")
            .env("BOTTLE_TEST_BACKEND", "smolmachines")
            .env("CI", "true")
            .unchecked()
            .run()
            .map_err(|e| format!("could not run cargo: {e}"))?
            .status;
        rows.push((s.name, status.success(), start.elapsed()));
    }

    println!("\n== smolmachines integration summary");
    println!("| suite | result | time |");
    println!("|---|---|---|");
    for (name, ok, t) in &rows {
        println!(
            "| {name} | {} | {:.1}s |",
            if *ok { "pass" } else { "FAIL" },
            t.as_secs_f64()
        );
    }
    let failed: Vec<&str> = rows.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

/// A string field of the probe's one-line JSON (no JSON crate in xtask).
fn field(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = json.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_probe_fields() {
        let j = r#"{"status":"unavailable","why":"no \"kvm\"","fix":"enable it"}"#;
        assert_eq!(field(j, "why").unwrap(), "no \"kvm\"");
        assert_eq!(field(j, "fix").unwrap(), "enable it");
        assert_eq!(field(j, "nope"), None);
    }
}
