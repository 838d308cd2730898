//! `bottle check`'s text table: a `fix:` line (manifest or backend) starts in
//! the DETAIL column, under its message, whatever the file names' widths.

#[test]
fn fix_lines_align_with_the_detail_column() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let bottle = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
            .arg("--home")
            .arg(home)
            .args(args)
            .env("PATH", home.join("no-bin"))
            .output()
            .unwrap()
    };
    assert!(bottle(&["init"]).status.success());
    for name in ["b", "a-much-longer-bottle-name"] {
        std::fs::write(
            home.join(format!("bottles/{name}.toml")),
            "[egress]\nroutez = []\n",
        )
        .unwrap();
    }
    let out = String::from_utf8_lossy(&bottle(&["check"]).stdout).into_owned();
    let header = out.lines().find(|l| l.contains("DETAIL")).expect(&out);
    let col = header.find("DETAIL").unwrap();
    // the manifests' table comes before the backends'
    let fixes: Vec<&str> = out
        .lines()
        .take_while(|l| *l != "backends")
        .filter(|l| l.trim_start().starts_with("fix:"))
        .collect();
    assert_eq!(fixes.len(), 2, "{out}");
    for l in fixes {
        assert_eq!(l.find("fix:"), Some(col), "misaligned:\n{out}");
    }
}

/// A fake `docker` in `<dir>/bin` whose engine answers: a version, and
/// success with no output for every other call (so runsc is not registered).
fn engine_up(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\ncase \"$1\" in version) echo 20.10.0;; esac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn backend_fix_lines_align_with_the_detail_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
        .arg("--home")
        .arg(dir.path().join("home"))
        .arg("check")
        .env("PATH", dir.path().join("no-bin"))
        .env_remove("BOTTLE_SMOLVM")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let backends: Vec<&str> = out.lines().skip_while(|l| *l != "backends").collect();
    let col = backends[1].find("DETAIL").expect(&out);
    let fixes: Vec<&&str> = backends
        .iter()
        .filter(|l| l.trim_start().starts_with("fix:"))
        .collect();
    // neither docker (not on PATH) nor smolmachines is usable
    assert!(fixes.len() >= 2, "{out}");
    for l in fixes {
        assert_eq!(l.find("fix:"), Some(col), "misaligned:\n{out}");
    }
}

#[test]
fn the_gvisor_warning_is_said_once_by_check_and_by_the_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin = engine_up(dir.path());
    let bottle = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
            .arg("--home")
            .arg(&home)
            .args(args)
            .env("PATH", &bin)
            .env_remove("BOTTLE_SMOLVM")
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert!(bottle(&["init", "-q"]).status.success());
    let o = bottle(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("gVisor").count(), 1, "{out}");
    assert!(out.contains("gVisor (runsc): unavailable"), "{out}");

    let o = bottle(&["start", "demo", "--backend", "docker", "--dry-run", "--yes"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("gVisor").count(), 1, "{err}");
    assert!(
        err.contains("WARNING: gVisor (runsc) is not available"),
        "{err}"
    );
}
