//! `bottle`'s own options (`--home`, `--backend`, `-v`, `-q`) show in a
//! subcommand's help only where they mean something, and still work before
//! the subcommand as they did when they were global.

use std::process::Output;

fn bottle(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(args)
        .env_remove("BOTTLE_HOME")
        .env_remove("RUST_LOG")
        .env("COLUMNS", "100")
        .output()
        .expect("bottle runs")
}

fn help(cmd: &str) -> String {
    let o = bottle(&[cmd, "--help"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

fn snapshot(name: &str, text: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn init_help_offers_no_backend() {
    let h = help("init");
    assert!(!h.contains("--backend"), "{h}");
    assert!(h.contains("--home") && h.contains("--quiet"), "{h}");
    snapshot("help_init", &h);
}

#[test]
fn start_help_offers_backend_and_quiet() {
    let h = help("start");
    assert!(h.contains("--backend") && h.contains("--quiet"), "{h}");
    snapshot("help_start", &h);
}

#[test]
fn ls_help_offers_neither_backend_nor_quiet() {
    let h = help("ls");
    assert!(!h.contains("--backend") && !h.contains("--quiet"), "{h}");
    snapshot("help_ls", &h);
}

#[test]
fn a_flag_that_means_nothing_there_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let o = bottle(&["init", "--home", home, "--backend", "docker"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unexpected argument '--backend'"), "{err}");
    // nothing was written
    assert!(!dir.path().join("bottles").exists());
}

#[test]
fn own_options_work_before_and_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    assert!(bottle(&["--home", home, "-q", "init"]).status.success());
    assert!(dir.path().join("agents/demo.toml").is_file());
    for args in [
        &["--home", home, "--backend", "nosuch", "plan", "demo"][..],
        &["plan", "demo", "--home", home, "--backend", "nosuch"][..],
        &["--backend", "nosuch", "plan", "--home", home, "demo"][..],
    ] {
        let o = bottle(args);
        let err = String::from_utf8_lossy(&o.stderr);
        // the backend reached the command, from either place
        assert!(err.contains("unknown backend `nosuch`"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
    let o = bottle(&["-v", "--home", home, "stop", "-q", "nosuch-id"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot be used together"), "{err}");
}
