//! Contract tests against the real smolvm CLI: every command bottle issues
//! that does not need a booted VM. They catch a smolvm change (a renamed
//! flag, a new `ls --json` shape, a dropped allowlist) before a user does.
//!
//! smolvm absent: each test is reported ignored with the reason, unless
//! `CI=true` (then they fail): a `harness = false` target gated on
//! `common::SMOLVM` (`bottle-test-gate`). On Linux every test keeps smolvm's state in a private
//! `--state-dir`, so nothing touches the user's machines.

use std::collections::BTreeMap;
use std::process::Command;

use bottle_smolmachines::smolvm::{
    parse_error, parse_ls, CliError, Exec, ImageSource, MachineSpec, SecretEnvRef, SecretFileRef,
    Smolvm, Upload, LABEL_BACKEND, LABEL_IDENTITY,
};
use bottle_test_gate::{run, trial};
use camino::{Utf8Path, Utf8PathBuf};

mod common;

use common::SMOLVM;

struct Cli {
    smolvm: Smolvm,
    _dir: tempfile::TempDir,
    dir: Utf8PathBuf,
}

/// The real CLI with a private state dir (every trial is gated on
/// [`SMOLVM`]).
fn cli() -> Cli {
    let s = Smolvm::locate().unwrap_or_else(|e| panic!("smolvm: {}", e.why));
    let tmp = tempfile::tempdir().unwrap();
    let dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
    let smolvm = if cfg!(target_os = "linux") {
        s.with_state_dir(dir.join("smolvm-state"))
    } else {
        s
    };
    Cli {
        smolvm,
        _dir: tmp,
        dir,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[String], env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(&self.smolvm.program);
        c.args(args).current_dir(&self.dir);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("spawn smolvm");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[String], env: &[(&str, &str)]) -> Run {
        let r = self.run(args, env);
        assert_eq!(r.code, 0, "smolvm {args:?} failed:\n{}", r.stderr);
        r
    }

    fn err(&self, args: &[String]) -> CliError {
        let r = self.run(args, &[]);
        assert_ne!(
            r.code, 0,
            "smolvm {args:?} unexpectedly succeeded:\n{}",
            r.stdout
        );
        parse_error(&r.stderr).unwrap_or_else(|| panic!("no JSON error in stderr:\n{}", r.stderr))
    }

    fn help(&self, words: &[&str]) -> String {
        let mut args: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        args.push("--help".into());
        self.ok(&args, &[]).stdout
    }

    fn ls(&self) -> Vec<bottle_smolmachines::smolvm::MachineInfo> {
        let r = self.ok(&self.smolvm.ls_args(), &[]);
        parse_ls(&r.stdout)
            .unwrap_or_else(|e| panic!("ls --json did not parse ({e}):\n{}", r.stdout))
    }

    /// A fixture spec exercising every create flag bottle renders.
    fn spec(&self, name: &str) -> MachineSpec {
        let archive = self.dir.join("agent-image.tar");
        std::fs::write(&archive, b"not really an image; create does not read it").unwrap();
        let secret_file = self.dir.join("secret-file");
        std::fs::write(&secret_file, "file-secret-value-31337").unwrap();
        MachineSpec {
            name: name.into(),
            image: ImageSource::Archive(archive),
            allow_cidrs: vec!["127.77.1.2/32".into()],
            labels: BTreeMap::from([
                (LABEL_IDENTITY.to_owned(), format!("{name}-id")),
                (LABEL_BACKEND.to_owned(), "smolmachines".to_owned()),
            ]),
            cpus: Some(2),
            memory_mib: Some(1024),
            workdir: Some("/workspace".into()),
            env: BTreeMap::from([(
                "HTTPS_PROXY".to_owned(),
                "http://127.77.1.2:8888".to_owned(),
            )]),
            secret_env: vec![SecretEnvRef {
                guest_var: "PROMPT_ANSWER".into(),
                host_var: "BOTTLE_SECRET_PROMPT_ANSWER".into(),
            }],
            secret_files: vec![SecretFileRef {
                guest_var: "FILE_SECRET".into(),
                path: secret_file,
            }],
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "while :; do sleep 3600; done".into(),
            ],
        }
    }
}

const ENV_SECRET: &str = "env-secret-value-424242";

/// Flags (`--x`) of an argv, up to a `--` separator.
fn flags(args: &[String]) -> Vec<String> {
    args.iter()
        .take_while(|a| *a != "--")
        .filter(|a| a.starts_with("--"))
        .cloned()
        .collect()
}

fn assert_help_lists(help: &str, args: &[String], what: &str) {
    for f in flags(args) {
        let found = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .any(|w| w == f || w.starts_with(&format!("{f}=")) || w.starts_with(&format!("{f}<")));
        assert!(
            found,
            "`smolvm {what} --help` does not list {f} (which bottle renders)"
        );
    }
}

fn version_is_at_least_1_8() {
    let cli = cli();
    let r = cli.ok(&cli.smolvm.version_args(), &[]);
    let v = bottle_smolmachines::smolvm::Version::parse(&r.stdout)
        .unwrap_or_else(|| panic!("unparseable `smolvm --version`: {}", r.stdout));
    assert!(v.supported(), "smolvm {v} is older than 1.8");
}

fn every_flag_bottle_renders_is_in_the_cli_help() {
    let cli = cli();
    let s = &cli.smolvm;
    let spec = cli.spec("flags");
    let exec = Exec {
        user: Some("1000:1000".into()),
        workdir: Some("/workspace".into()),
        timeout_secs: Some(5),
        env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
        secret_env: spec.secret_env.clone(),
        interactive: true,
        tty: true,
        command: vec!["true".into()],
    };
    let upload = Upload {
        src: "/etc/hostname".into(),
        dst: "/tmp/x".into(),
        uid: Some(1000),
        gid: Some(1000),
        mode: Some(0o644),
    };
    let cases: Vec<(&[&str], Vec<String>)> = vec![
        (&["machine", "create"], s.create_args(&spec)),
        (&["machine", "start"], s.start_args("n")),
        (&["machine", "stop"], s.stop_args("n", 10)),
        (&["machine", "delete"], s.delete_args("n")),
        (&["machine", "ls"], s.ls_args()),
        (&["machine", "exec"], s.exec_args("n", &exec)),
        (&["machine", "cp"], s.cp_args("n", &upload)),
        (&["machine", "run"], s.boot_check_args()),
    ];
    for (words, args) in cases {
        let help = cli.help(words);
        assert_help_lists(&help, &args, &words.join(" "));
    }
    // the pinned network backend is one the CLI knows
    assert!(cli.help(&["machine", "create"]).contains("virtio-net"));
}

fn create_list_delete_a_stopped_machine() {
    let cli = cli();
    let spec = cli.spec("bottle-contract-a");
    spec.validate().unwrap();
    cli.ok(
        &cli.smolvm.create_args(&spec),
        &[("BOTTLE_SECRET_PROMPT_ANSWER", ENV_SECRET)],
    );

    let listing = cli.ls();
    let m = listing
        .iter()
        .find(|m| m.identity() == Some("bottle-contract-a-id"))
        .expect("machine found by its identity label");
    assert_eq!(m.name, "bottle-contract-a");
    assert_eq!(m.state, "created");
    assert_eq!(
        m.allowed_cidrs, spec.allow_cidrs,
        "the allowlist survived create"
    );
    assert!(m.network);
    assert_eq!(
        m.labels.get(LABEL_BACKEND).map(String::as_str),
        Some("smolmachines")
    );
    // smolvm records a local archive by content digest: launch checks it
    let want =
        bottle_smolmachines::smolvm::local_image_ref(Utf8Path::new(spec_image(&spec))).unwrap();
    assert_eq!(
        m.image.as_deref(),
        Some(want.as_str()),
        "image recorded by digest"
    );

    // secrets are references only: no value in the listing or in smolvm's state
    let raw = cli.ok(&cli.smolvm.ls_args(), &[]).stdout;
    assert!(!raw.contains(ENV_SECRET) && !raw.contains("file-secret-value-31337"));
    if let Some(dir) = &cli.smolvm.state_dir {
        assert_no_file_contains(dir, &[ENV_SECRET, "file-secret-value-31337"]);
    }

    // a second create of the same name is refused (names never silently reused)
    let e = cli.err(&cli.smolvm.create_args(&spec));
    assert_eq!(e.code, "CONFIG_ERROR", "{}", e.message);

    // stop of a machine that never started succeeds (teardown is idempotent)
    cli.ok(&cli.smolvm.stop_args(&spec.name, 0), &[]);
    cli.ok(&cli.smolvm.delete_args(&spec.name), &[]);
    assert!(cli.ls().iter().all(|m| m.name != spec.name));
    // deleting again says NOT_FOUND, which teardown treats as done
    let e = cli.err(&cli.smolvm.delete_args(&spec.name));
    assert_eq!(e.code, "NOT_FOUND", "{}", e.message);
}

fn spec_image(spec: &MachineSpec) -> &str {
    let ImageSource::Archive(p) = &spec.image;
    p.as_str()
}

fn assert_no_file_contains(dir: &Utf8Path, needles: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = Utf8PathBuf::from_path_buf(e.path()).unwrap();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            assert_no_file_contains(&p, needles);
        } else if ft.is_file() {
            if let Ok(bytes) = std::fs::read(&p) {
                let text = String::from_utf8_lossy(&bytes);
                for n in needles {
                    assert!(!text.contains(n), "secret value persisted in {p}");
                }
            }
        }
    }
}

fn an_allowlist_smolvm_cannot_enforce_is_refused() {
    let cli = cli();
    // TSI does not enforce allowlists; the CLI must refuse rather than fail
    // open. bottle pins virtio-net; this proves the failure mode is loud.
    let mut args = cli.smolvm.create_args(&cli.spec("bottle-contract-tsi"));
    let i = args.iter().position(|a| a == "virtio-net").unwrap();
    args[i] = "tsi".into();
    let e = cli.err(&args);
    assert_eq!(e.code, "CONFIG_ERROR", "{}", e.message);
    assert!(e.message.contains("virtio-net"), "{}", e.message);
    assert!(cli.ls().is_empty(), "nothing was created");
}

fn a_missing_image_archive_is_refused_not_pulled() {
    let cli = cli();
    let mut spec = cli.spec("bottle-contract-missing");
    spec.image = ImageSource::Archive(cli.dir.join("does-not-exist.tar"));
    let e = cli.err(&cli.smolvm.create_args(&spec));
    assert_eq!(e.code, "CONFIG_ERROR", "{}", e.message);
    assert!(e.message.contains("does-not-exist.tar"), "{}", e.message);
    assert!(cli.ls().is_empty());
}

fn exec_and_cp_before_start_report_not_running() {
    let cli = cli();
    let spec = cli.spec("bottle-contract-b");
    cli.ok(
        &cli.smolvm.create_args(&spec),
        &[("BOTTLE_SECRET_PROMPT_ANSWER", ENV_SECRET)],
    );
    // readiness polling relies on this: a machine that is not up yet is an
    // error that says so, not a hang and not a success
    let probe = Exec {
        timeout_secs: Some(5),
        command: vec!["true".into()],
        ..Exec::default()
    };
    let e = cli.err(&cli.smolvm.exec_args(&spec.name, &probe));
    assert!(
        bottle_smolmachines::launch::not_running(&e),
        "exec before start: {} {}",
        e.code,
        e.message
    );
    let upload = Upload {
        src: cli.dir.join("secret-file"),
        dst: "/tmp/x".into(),
        uid: Some(1000),
        gid: Some(1000),
        mode: Some(0o600),
    };
    let e = cli.err(&cli.smolvm.cp_args(&spec.name, &upload));
    assert!(
        bottle_smolmachines::launch::not_running(&e),
        "{}",
        e.message
    );
    cli.ok(&cli.smolvm.delete_args(&spec.name), &[]);
}

fn main() {
    run(vec![
        trial!(version_is_at_least_1_8, &SMOLVM),
        trial!(every_flag_bottle_renders_is_in_the_cli_help, &SMOLVM),
        trial!(create_list_delete_a_stopped_machine, &SMOLVM),
        trial!(an_allowlist_smolvm_cannot_enforce_is_refused, &SMOLVM),
        trial!(a_missing_image_archive_is_refused_not_pulled, &SMOLVM),
        trial!(exec_and_cp_before_start_report_not_running, &SMOLVM),
    ])
}
