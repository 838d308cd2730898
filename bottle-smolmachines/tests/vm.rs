//! Security tests against a real booted micro-VM. They need a host that can
//! boot VMs (KVM or Hypervisor.framework) and run only with
//! `BOTTLE_TEST_SMOLVM=1` (set by `cargo xtask integration --backend
//! smolmachines`); otherwise each is reported ignored with the reason (in
//! CI too: ordinary CI machines cannot boot VMs; `bottle_test_gate::MICRO_VMS`).
//!
//! Each test creates a bare VM (smolvm's own Alpine rootfs, no registry)
//! with exactly the allowlist bottle renders, and checks from inside it:
//! exactly the bundle's three ports are reachable, and a host service on
//! `0.0.0.0` is not, at any host address (§7.2; needs docker for the
//! stand-in bundle);
//! a `--secret-env` value reaches the guest but no host argv (§7.1);
//! readiness is polled, never slept (§7.5); `/tmp` ownership is fixed (§7.4).
//! All traffic stays on 127.0.0.0/8 and the test's own bridge (no outside
//! address, no DNS).

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use bottle_core::command::{CommandSpec, DuctRunner};
use bottle_smolmachines::hv::HostOs;
use bottle_smolmachines::net::Addresses;
use bottle_smolmachines::smolvm::{Exec, Smolvm};
use bottle_test_gate::{run, trial, DOCKER, MICRO_VMS};

/// The smolvm CLI; every trial is gated on `MICRO_VMS`, so a missing CLI
/// on a VM host is a failure.
fn smolvm() -> Smolvm {
    Smolvm::locate().unwrap_or_else(|e| panic!("BOTTLE_TEST_SMOLVM=1 but {}", e.why))
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
    /// A bare VM allowed to reach only `addr/32`, started and ready.
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

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A stand-in for the bundle, laid out exactly as launch lays out the real
/// one (`render.rs`): a bridge on the slot's subnet, the container pinned to
/// the slot's bundle IP, listening on the bundle's three ports; on macOS
/// also published on the alias. Removed on drop.
struct StandIn {
    container: String,
    network: String,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["network", "rm", &self.network]);
    }
}

const BUNDLE_PORTS: [u16; 3] = [8888, 9418, 9100];

fn stand_in(a: &Addresses, os: HostOs) -> StandIn {
    let tag = std::process::id();
    let s = StandIn {
        container: format!("bottle-vmtest-bundle-{tag}"),
        network: format!("bottle-vmtest-net-{tag}"),
    };
    let (ok, out) = docker(&[
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        &a.subnet,
        "--gateway",
        &a.gateway.to_string(),
        "--label",
        "dev.bottle.test",
        &s.network,
    ]);
    assert!(ok, "network create: {out}");
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &s.container,
        "--label",
        "dev.bottle.test",
        "--network",
        &s.network,
        "--ip",
    ]
    .map(String::from)
    .to_vec();
    args.push(a.bundle_ip.to_string());
    if os == HostOs::Macos {
        for p in BUNDLE_PORTS {
            args.extend([
                "--publish".to_owned(),
                format!("{}:{p}:{p}", a.loopback_alias),
            ]);
        }
    }
    // one listener per bundle port, each answering `bundle-<port>`
    args.extend([
        BASE_IMAGE.to_owned(),
        "perl".into(),
        "-MIO::Socket::INET".into(),
        "-e".into(),
        r#"for $p (@ARGV) { next if fork; $s = IO::Socket::INET->new(LocalPort => $p, Listen => 5, ReuseAddr => 1) or die "listen $p: $!"; while ($c = $s->accept) { print $c "bundle-$p\n"; close $c } } wait"#.into(),
    ]);
    args.extend(BUNDLE_PORTS.iter().map(|p| p.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = docker(&argv);
    assert!(ok, "stand-in bundle: {out}");
    s
}

/// Base image the bottle images build from (`cargo xtask seed-base`).
const BASE_IMAGE: &str = "debian:bookworm-slim";

/// The VM reaches exactly the bundle's three ports: with the allowlist and
/// endpoint launch renders (`Addresses::agent_endpoint`), a host service
/// listening on `0.0.0.0:P` is reachable neither at the endpoint nor at the
/// bridge gateway, the loopback alias or host loopback, while every bundle
/// port answers. (A guest-side probe of 127.0.0.1 would only test the
/// guest's own loopback: it cannot fail, so it is not used.)
fn the_vm_reaches_the_bundle_ports_and_no_other_host_port() {
    let s = smolvm();
    let os = HostOs::current();
    let a = Addresses::for_slot(4000).unwrap();
    let endpoint = a.agent_endpoint(os).to_string();
    let _bundle = stand_in(&a, os);
    // the host service every address of the host would answer for
    let host_port = serve("0.0.0.0", "host-service\n");
    // controls from the host: the bundle ports and the host service answer
    for p in BUNDLE_PORTS {
        let target = if os == HostOs::Macos {
            a.loopback_alias
        } else {
            a.bundle_ip
        };
        // the stand-in may still be starting: poll (bounded), never sleep blind
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Err(e) =
            std::net::TcpStream::connect_timeout(&(target, p).into(), Duration::from_secs(5))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "control: bundle port {p} does not answer at {target}: {e}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for host in [a.gateway, a.loopback_alias] {
        std::net::TcpStream::connect_timeout(&(host, host_port).into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("control: the host service does not answer at {host}: {e}"));
    }
    let vm = Vm::start(&s, "reach", &endpoint, None);
    for p in BUNDLE_PORTS {
        let (code, out) = vm.sh(&format!("nc -w 3 {endpoint} {p} </dev/null"));
        assert_eq!(
            (code, out.trim()),
            (0, format!("bundle-{p}").as_str()),
            "bundle port {p} must be reachable at {endpoint}"
        );
    }
    for host in [
        endpoint.clone(),
        a.gateway.to_string(),
        a.loopback_alias.to_string(),
    ] {
        let (code, out) = vm.sh(&format!("nc -w 3 {host} {host_port} </dev/null"));
        assert!(
            !out.contains("host-service"),
            "the host service on 0.0.0.0:{host_port} was reachable from the VM at {host} (exit {code})"
        );
    }
}

fn a_secret_env_reaches_the_guest_but_no_host_argv() {
    let s = smolvm();
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

fn tmp_is_sticky_and_world_writable_after_the_fixups() {
    let s = smolvm();
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

fn main() {
    run(vec![
        trial!(
            the_vm_reaches_the_bundle_ports_and_no_other_host_port,
            &MICRO_VMS,
            &DOCKER
        ),
        trial!(a_secret_env_reaches_the_guest_but_no_host_argv, &MICRO_VMS),
        trial!(
            tmp_is_sticky_and_world_writable_after_the_fixups,
            &MICRO_VMS
        ),
    ])
}
