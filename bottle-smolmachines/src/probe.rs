//! `probe`: can this host run a smolmachines bottle? Each layer explains
//! why not and how to fix it:
//!
//! 1. smolvm found (`$BOTTLE_SMOLVM` or `PATH`);
//! 2. version ≥ 1.8 (older releases dropped the allowlist: fail open);
//! 3. a hypervisor (Linux: `/dev/kvm` opens rw, API 12, a VM can be
//!    created; macOS: `kern.hv_support` = 1);
//! 4. docker reachable (the bundle runs in docker);
//! 5. a throwaway bare VM actually boots (`smolvm machine run -- true`, in a
//!    private `--state-dir` on Linux so nothing outlives the probe). Hosts
//!    that pass 3 but cannot run guests — no hardware virtualisation behind
//!    `/dev/kvm`, or smolvm's per-VM uid cannot open it — stop here.

use bottle_core::backend::Probe;
use bottle_core::command::{CommandRunner, CommandSpec};

use crate::hv::{self, HostOs};
use crate::smolvm::{parse_error, NotFound, Smolvm, Version, MIN_VERSION};

/// How the install hint reads (also used by docs and `.ci/run`).
pub const INSTALL_FIX: &str = "pip install smolmachines, then put its CLI on PATH: \
cp -r \"$(python3 -c 'import smol,os;print(os.path.dirname(smol.__file__))')\" /opt/smolvm && \
ln -sf /opt/smolvm/smol-vmm /usr/local/bin/smolvm (or set BOTTLE_SMOLVM=/path/to/smolvm)";

/// Inputs of a probe (injectable for tests).
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The located CLI, or why not.
    pub smolvm: Result<Smolvm, NotFound>,
    /// Host family.
    pub host_os: HostOs,
    /// KVM device to check on Linux.
    pub kvm_device: String,
    /// Run the boot check (off only in unit tests of earlier layers).
    pub boot_check: bool,
    /// macOS only: the operator accepts that the VM reaches every host
    /// service listening on the loopback alias ([`ACCEPT_HOST_ALIAS_ENV`]).
    pub accept_host_alias: bool,
}

/// The variable with which an operator accepts, on macOS, that the
/// micro-VM reaches every host service bound to `0.0.0.0` (docs/smolmachines.md).
pub const ACCEPT_HOST_ALIAS_ENV: &str = "BOTTLE_SMOLMACHINES_ACCEPT_HOST_ALIAS";

fn unavailable(why: impl Into<String>, fix: impl Into<String>) -> Probe {
    Probe::Unavailable {
        why: why.into(),
        fix: fix.into(),
    }
}

/// Run the probe.
pub fn probe(cfg: &ProbeConfig, runner: &dyn CommandRunner) -> Probe {
    let smolvm = match &cfg.smolvm {
        Ok(s) => s.clone(),
        Err(e) => return unavailable(format!("smolvm not found: {}", e.why), INSTALL_FIX),
    };

    // 2. version
    let spec = CommandSpec::new(&smolvm.program)
        .args(smolvm.version_args())
        .allow_failure();
    let out = match runner.output(&spec) {
        Ok(o) => o,
        Err(e) => {
            return unavailable(
                format!("`{} --version` could not run: {e}", smolvm.program),
                INSTALL_FIX,
            )
        }
    };
    let Some(version) = Version::parse(&out.stdout) else {
        return unavailable(
            format!(
                "`{} --version` printed no version (exit {}): {}",
                smolvm.program,
                out.code,
                out.stdout.trim()
            ),
            INSTALL_FIX,
        );
    };
    if !version.supported() {
        return unavailable(
            format!(
                "smolvm {version} is older than {MIN_VERSION}: releases before {MIN_VERSION} silently drop the network allowlist (--allow-cidr) when a machine is created from an image, which would give the agent the whole network; bottle refuses to run on it"
            ),
            format!("upgrade smolvm to {MIN_VERSION} or newer (pip install -U smolmachines)"),
        );
    }

    // 3. hypervisor
    let hv_note = match cfg.host_os {
        HostOs::Linux => {
            #[cfg(target_os = "linux")]
            if let Err(u) = hv::check_kvm(&cfg.kvm_device) {
                return unavailable(u.why, u.fix);
            }
            format!("hypervisor: KVM ({})", cfg.kvm_device)
        }
        HostOs::Macos => {
            let o = runner
                .output(&CommandSpec::new("sysctl").args(["-n", "kern.hv_support"]).allow_failure())
                .map(|o| o.stdout)
                .unwrap_or_default();
            if let Err(u) = hv::check_hv_support(&o) {
                return unavailable(u.why, u.fix);
            }
            // Fail closed (THREAT-MODEL S2/S6): on macOS the VM reaches the
            // bundle only on a host loopback alias, and smolvm's allowlist
            // has no ports, so every host service bound to 0.0.0.0 answers
            // the agent there too.
            if !cfg.accept_host_alias {
                return unavailable(
                    "on macOS the micro-VM reaches the bundle on a host loopback alias, and smolvm's network allowlist has no ports: every host service listening on 0.0.0.0 (sshd, databases, dev servers) would be reachable from the agent; bottle refuses to start it",
                    format!("run the smolmachines backend on a Linux/KVM host or use --backend docker; or accept this exposure with {ACCEPT_HOST_ALIAS_ENV}=1"),
                );
            }
            format!("hypervisor: Hypervisor.framework; WARNING: {ACCEPT_HOST_ALIAS_ENV}=1: the agent can reach every host service listening on 0.0.0.0")
        }
        HostOs::Other => {
            return unavailable(
                "the smolmachines backend supports Linux (KVM) and macOS (Hypervisor.framework) hosts only",
                "use the docker backend here (--backend docker)",
            )
        }
    };

    // 4. docker (the bundle)
    let d = runner.output(
        &CommandSpec::new(crate::render::DOCKER)
            .args(["version", "--format", "{{.Server.Version}}"])
            .allow_failure(),
    );
    match d {
        Ok(o) if o.success() => {}
        Ok(o) => {
            return unavailable(
                format!(
                    "docker is not reachable (the sidecar bundle runs in docker): {}",
                    o.stderr.trim().lines().last().unwrap_or("no output")
                ),
                "start the docker daemon (or Docker Desktop) and make sure `docker version` works for this user",
            )
        }
        Err(e) => {
            return unavailable(
                format!("docker is not installed (the sidecar bundle runs in docker): {e}"),
                "install docker (or Docker Desktop)",
            )
        }
    }

    // 5. boot a throwaway VM
    let mut notes = vec![hv_note];
    if cfg.boot_check {
        match boot_check(&smolvm, cfg.host_os, runner) {
            Ok(note) => notes.push(note),
            Err((why, fix)) => return unavailable(why, fix),
        }
    }
    Probe::Ready {
        version: version.to_string(),
        notes,
        gvisor: bottle_core::backend::Gvisor::NotApplicable,
    }
}

fn boot_check(
    smolvm: &Smolvm,
    host_os: HostOs,
    runner: &dyn CommandRunner,
) -> Result<String, (String, String)> {
    // A private state dir (Linux) keeps the throwaway VM's records away from
    // the user's machines and is deleted with everything in it.
    let tmp = tempfile::Builder::new()
        .prefix("bottle-smolvm-probe-")
        .tempdir()
        .map_err(|e| {
            (
                format!("cannot create a temp dir for the boot check: {e}"),
                "check TMPDIR".to_owned(),
            )
        })?;
    let s = match (host_os, camino::Utf8Path::from_path(tmp.path())) {
        (HostOs::Linux, Some(p)) => smolvm.clone().with_state_dir(p.join("state")),
        _ => smolvm.clone(),
    };
    let started = std::time::Instant::now();
    let spec = CommandSpec::new(&s.program)
        .args(s.boot_check_args())
        .cwd(camino::Utf8Path::from_path(tmp.path()).unwrap_or(camino::Utf8Path::new("/")))
        .allow_failure();
    let out = runner.output(&spec).map_err(|e| {
        (
            format!("the boot check could not run smolvm: {e}"),
            INSTALL_FIX.to_owned(),
        )
    })?;
    if out.success() {
        return Ok(format!(
            "boot check: a test VM booted in {} ms",
            started.elapsed().as_millis()
        ));
    }
    Err(classify_boot_failure(&out.stderr))
}

/// Turn a failed boot check's stderr into (why, fix).
pub fn classify_boot_failure(stderr: &str) -> (String, String) {
    let (code, msg) = match parse_error(stderr) {
        Some(e) => (e.code, e.message),
        None => (
            "UNKNOWN".to_owned(),
            stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no output")
                .to_owned(),
        ),
    };
    let prefix = "this host cannot boot micro-VMs: a throwaway test VM failed to start";
    if msg.contains("KvmOpen") || (msg.contains("/dev/kvm") && msg.contains("ermission")) {
        return (
            format!("{prefix}: smolvm's VM process (which runs under its own per-VM uid) cannot open /dev/kvm ({code}: {msg})"),
            "let every user open /dev/kvm (`sudo chmod 0666 /dev/kvm`, or a udev rule with MODE=\"0666\"), or run VMs as the invoking user with SMOLVM_VM_UID_DROP=off".into(),
        );
    }
    if msg.contains("libkrun") && msg.contains("not found") {
        return (
            format!("{prefix}: smolvm's VM process cannot load libkrun ({code}: {msg})"),
            format!("install smolvm where every user can read it, e.g. {INSTALL_FIX}; or set SMOLVM_LIB_DIR"),
        );
    }
    if msg.contains("no boot progress") || msg.contains("did not become ready") {
        return (
            format!("{prefix}: the guest never made boot progress — KVM is present but cannot run a guest here (no hardware virtualisation, e.g. nested virtualisation disabled) ({code}: {msg})"),
            "run on bare metal, a VM with nested virtualisation enabled, or an Apple Silicon Mac; or use --backend docker".into(),
        );
    }
    if code == "KVM_UNAVAILABLE" || code == "HYPERVISOR_UNAVAILABLE" {
        return (
            format!("{prefix}: no usable hypervisor ({code}: {msg})"),
            "enable hardware virtualisation (KVM on Linux, Hypervisor.framework on macOS), or use --backend docker".into(),
        );
    }
    (
        format!("{prefix} ({code}: {msg})"),
        "run `smolvm machine run -- true` to see the full error; or use --backend docker".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_core::command::RecordingRunner;

    fn cfg(boot: bool) -> ProbeConfig {
        ProbeConfig {
            smolvm: Ok(Smolvm::new("smolvm")),
            host_os: HostOs::Macos,
            kvm_device: "/dev/kvm".into(),
            boot_check: boot,
            accept_host_alias: true,
        }
    }

    /// issue 14.5 on macOS: without the operator's explicit acceptance the
    /// probe refuses (the alias exposes every 0.0.0.0 host service); with
    /// it, the probe goes on and says so.
    #[test]
    fn macos_refuses_unless_the_host_alias_exposure_is_accepted() {
        let r = RecordingRunner::new();
        r.reply("smolvm --version", 0, "smolvm 1.32.2\n");
        r.reply("sysctl", 0, "1\n");
        let mut c = cfg(false);
        c.accept_host_alias = false;
        let w = why(probe(&c, &r));
        assert!(
            w.contains("0.0.0.0") && w.contains(ACCEPT_HOST_ALIAS_ENV),
            "{w}"
        );
        assert!(
            !r.transcript().contains("docker version"),
            "stopped before docker"
        );
        c.accept_host_alias = true;
        match probe(&c, &r) {
            Probe::Ready { notes, .. } => assert!(
                notes
                    .iter()
                    .any(|n| n.contains("WARNING") && n.contains("0.0.0.0")),
                "{notes:?}"
            ),
            other => panic!("{other:?}"),
        }
        // Linux is not affected (the allowlist is the bundle container's IP)
        c.host_os = HostOs::Linux;
        c.accept_host_alias = false;
        c.kvm_device = "/nonexistent-kvm".into();
        let w = why(probe(&c, &r));
        assert!(!w.contains(ACCEPT_HOST_ALIAS_ENV), "{w}");
    }

    fn why(p: Probe) -> String {
        match p {
            Probe::Unavailable { why, fix } => format!("{why} | {fix}"),
            Probe::Ready { .. } => panic!("expected unavailable"),
        }
    }

    #[test]
    fn missing_cli_says_how_to_install() {
        let mut c = cfg(false);
        c.smolvm = Err(NotFound {
            why: "`smolvm` is not on PATH".into(),
        });
        let w = why(probe(&c, &RecordingRunner::new()));
        assert!(
            w.contains("smolvm not found") && w.contains("pip install smolmachines"),
            "{w}"
        );
    }

    #[test]
    fn old_smolvm_is_refused_because_of_the_allowlist() {
        let r = RecordingRunner::new();
        r.reply("smolvm --version", 0, "smolvm 0.8.0\n");
        let w = why(probe(&cfg(false), &r));
        assert!(w.contains("0.8.0 is older than 1.8.0"), "{w}");
        assert!(w.contains("allowlist"), "{w}");
        assert!(w.contains("upgrade"), "{w}");
        // nothing but the version was asked: no VM, no docker
        assert_eq!(r.calls().len(), 1);
    }

    #[test]
    fn macos_without_hypervisor_framework_is_explained() {
        let r = RecordingRunner::new();
        r.reply("smolvm --version", 0, "smolvm 1.32.2\n");
        r.reply("sysctl", 0, "0\n");
        let w = why(probe(&cfg(false), &r));
        assert!(w.contains("kern.hv_support = 0"), "{w}");
    }

    #[test]
    fn docker_down_is_explained_and_ready_otherwise() {
        let r = RecordingRunner::new();
        r.reply("smolvm --version", 0, "smolvm 1.32.2\n");
        r.reply("sysctl", 0, "1\n");
        r.reply_once("docker version", 1, "");
        assert!(why(probe(&cfg(false), &r)).contains("docker is not reachable"));
        let p = probe(&cfg(false), &r);
        assert_eq!(
            p,
            Probe::Ready {
                version: "1.32.2".into(),
                notes: vec![format!("hypervisor: Hypervisor.framework; WARNING: {ACCEPT_HOST_ALIAS_ENV}=1: the agent can reach every host service listening on 0.0.0.0")],
                gvisor: bottle_core::backend::Gvisor::NotApplicable,
            }
        );
    }

    #[test]
    fn boot_failures_are_classified() {
        let e = |m: &str| {
            format!("note\n{{\"error\":{{\"code\":\"SMOLVM_ERROR\",\"message\":\"{m}\"}}}}\n")
        };
        let (w, f) = classify_boot_failure(&e("libkrun detail: KvmContext(KvmOpen(Error(13)))"));
        assert!(
            w.contains("cannot open /dev/kvm") && f.contains("chmod"),
            "{w} {f}"
        );
        let (w, _) = classify_boot_failure(&e("wait for ready: no boot progress for 30 seconds"));
        assert!(w.contains("never made boot progress"), "{w}");
        let (w, f) = classify_boot_failure(&e("find libraries: libkrun/libkrunfw not found"));
        assert!(w.contains("libkrun") && f.contains("SMOLVM_LIB_DIR"), "{w}");
        let (w, _) = classify_boot_failure("garbage");
        assert!(w.contains("UNKNOWN: garbage"), "{w}");
    }
}
