//! `bottle check`'s text table: a manifest error's `fix:` line starts in
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
