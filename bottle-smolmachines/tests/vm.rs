//! Security tests against a real booted micro-VM. They need a host that can
//! boot VMs (KVM or Hypervisor.framework) and run only with
//! `BOTTLE_TEST_SMOLVM=1` (set by `cargo xtask integration --backend
//! smolmachines`); otherwise they print why they skip.
//!
//! Each test creates a bare VM (smolvm's own Alpine rootfs, no registry)
//! with exactly the allowlist bottle renders, and checks from inside it:
//! the per-bottle alias is reachable, nothing else on the host is (§7.2);
//! a `--secret-env` value reaches the guest but no host argv (§7.1);
//! readiness is polled, never slept (§7.5); `/tmp` ownership is fixed (§7.4).
//! All traffic stays on 127.0.0.0/8 (no outside address, no DNS).

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use bottle_core::command::{CommandSpec, DuctRunner};
use bottle_smolmachines::net::Addresses;
use bottle_smolmachines::smolvm::{Exec, Smolvm};

fn enabled() -> Option<Smolvm> {
    if std::env::var("BOTTLE_TEST_SMOLVM").as_deref() != Ok("1") {
        eprintln!("SKIP: real-VM tests run with BOTTLE_TEST_SMOLVM=1 (cargo xtask integration --backend smolmachines)");
        return None;
    }
    Some(Smolvm::locate().unwrap_or_else(|e| panic!("BOTTLE_TEST_SMOLVM=1 but {}", e.why)))
}

struct Vm {
    s: Smolvm,
    name: String,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new(&self.s.program)
            .args(self.s.stop_args(&self.name, 0))
            .output();
        let _ = Command::new(&self.s.program)
            .args(self.s.delete_args(&self.name))
            .output();
    }
}

impl Vm {
    /// A bare VM allowed to reach only `alias/32`, started and ready.
    fn start(s: &Smolvm, tag: &str, alias: &str, secret: Option<&str>) -> Vm {
        let name = format!("bottle-vmtest-{tag}-{}", std::process::id());
        let mut args: Vec<String> = vec![
            "--error-format".into(),
            "json".into(),
            "machine".into(),
            "create".into(),
            "--name".into(),
            name.clone(),
        ];
        args.extend(["--net-backend", "virtio-net", "--allow-cidr"].map(String::from));
        args.push(format!("{alias}/32"));
        args.extend([
            "--label".to_owned(),
            format!("dev.bottle.identity=vmtest-{tag}"),
        ]);
        if secret.is_some() {
            args.extend(["--secret-env", "GUEST_SECRET=BOTTLE_SECRET_GUEST"].map(String::from));
        }
        let vm = Vm { s: s.clone(), name };
        let mut c = Command::new(&s.program);
        c.args(&args);
        if let Some(v) = secret {
            c.env("BOTTLE_SECRET_GUEST", v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Command::new(&s.program);
        c.args(s.start_args(&vm.name));
        if let Some(v) = secret {
            c.env("BOTTLE_SECRET_GUEST", v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ready = Exec {
            timeout_secs: Some(5),
            command: vec!["true".into()],
            ..Exec::default()
        };
        bottle_smolmachines::backend::poll(
            &CommandSpec::new(&s.program).args(s.exec_args(&vm.name, &ready)),
            Duration::from_secs(60),
            &DuctRunner,
        )
        .expect("VM ready before the deadline");
        vm
    }

    fn sh(&self, script: &str) -> (i32, String) {
        let e = Exec {
            timeout_secs: Some(20),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Exec::default()
        };
        let out = Command::new(&self.s.program)
            .args(self.s.exec_args(&self.name, &e))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// Serve one line on `addr` in a thread.
fn serve(addr: &str, line: &'static str) -> u16 {
    let l = TcpListener::bind(format!("{addr}:0")).unwrap_or_else(|e| {
        panic!("bind {addr}: {e} (on macOS add the alias: sudo ifconfig lo0 alias {addr} up)")
    });
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(line.as_bytes());
        }
    });
    port
}

#[test]
fn the_allowlist_admits_the_bundle_alias_and_nothing_else() {
    let Some(s) = enabled() else { return };
    let alias = Addresses::for_slot(4000)
        .unwrap()
        .loopback_alias
        .to_string();
    let ok_port = serve(&alias, "bundle\n");
    let other_port = serve("127.0.0.1", "host-service\n");
    let vm = Vm::start(&s, "allow", &alias, None);
    let (code, out) = vm.sh(&format!("nc -w 3 {alias} {ok_port} </dev/null"));
    assert_eq!(
        (code, out.trim()),
        (0, "bundle"),
        "the bundle alias must be reachable"
    );
    // the host's own loopback service (127.0.0.1) is outside the allowlist
    let (code, out) = vm.sh(&format!("nc -w 3 127.0.0.1 {other_port} </dev/null"));
    assert!(
        !out.contains("host-service"),
        "a host service outside the allowlist was reachable (exit {code})"
    );
}

#[test]
fn a_secret_env_reaches_the_guest_but_no_host_argv() {
    let Some(s) = enabled() else { return };
    let value = "vmtest-secret-value-9d2f";
    let alias = Addresses::for_slot(4001)
        .unwrap()
        .loopback_alias
        .to_string();
    let vm = Vm::start(&s, "secret", &alias, Some(value));
    let (_, out) = vm.sh("printenv GUEST_SECRET || true");
    assert_eq!(out.trim(), value, "--secret-env reached the workload env");
    // no host process carries it on its command line
    if cfg!(target_os = "linux") {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                assert!(
                    !String::from_utf8_lossy(&cmd).contains(value),
                    "secret on argv of pid {:?}",
                    e.file_name()
                );
            }
        }
    } else {
        let ps = Command::new("ps")
            .args(["axww", "-o", "command"])
            .output()
            .unwrap();
        assert!(!String::from_utf8_lossy(&ps.stdout).contains(value));
    }
    let ls = Command::new(&s.program).args(s.ls_args()).output().unwrap();
    assert!(!String::from_utf8_lossy(&ls.stdout).contains(value));
}

#[test]
fn tmp_is_sticky_and_world_writable_after_the_fixups() {
    let Some(s) = enabled() else { return };
    let alias = Addresses::for_slot(4002)
        .unwrap()
        .loopback_alias
        .to_string();
    let vm = Vm::start(&s, "own", &alias, None);
    let (code, _) = vm.sh("chown root:root /tmp /var/tmp && chmod 1777 /tmp /var/tmp");
    assert_eq!(code, 0);
    let (_, out) = vm.sh("stat -c '%a %U' /tmp");
    assert_eq!(out.trim(), "1777 root");
}
