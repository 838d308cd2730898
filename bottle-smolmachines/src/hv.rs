//! Is there a hypervisor smolvm can use on this host?
//!
//! Linux: `/dev/kvm` exists, opens read-write, answers `KVM_GET_API_VERSION`
//! with 12 and lets us create (and drop) a VM. macOS: `kern.hv_support` is 1
//! (Hypervisor.framework). These are necessary, not sufficient: a host can
//! pass them and still not boot a guest (no usable hardware virtualisation,
//! or smolvm's per-VM uid cannot open `/dev/kvm`), which is why the probe
//! then boots a throwaway VM (see `probe.rs`).

/// Which host family we are on (decides the checks and a few launch steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostOs {
    /// Linux with KVM.
    Linux,
    /// macOS with Hypervisor.framework.
    Macos,
    /// Anything else: smolvm is not supported by bottle there.
    Other,
}

impl HostOs {
    /// The OS this binary runs on.
    pub fn current() -> HostOs {
        if cfg!(target_os = "linux") {
            HostOs::Linux
        } else if cfg!(target_os = "macos") {
            HostOs::Macos
        } else {
            HostOs::Other
        }
    }
}

/// A failed check: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// What is wrong.
    pub why: String,
    /// What to do.
    pub fix: String,
}

/// Check `/dev/kvm` (or another device path, for tests).
#[cfg(target_os = "linux")]
pub fn check_kvm(dev: &str) -> Result<(), Unusable> {
    use std::os::fd::AsRawFd;
    const KVM_GET_API_VERSION: u64 = 0xAE00;
    const KVM_CREATE_VM: u64 = 0xAE01;
    const KVM_API_VERSION: i32 = 12;

    let meta = std::fs::metadata(dev).map_err(|e| Unusable {
        why: format!("{dev} is missing ({e}): this host exposes no KVM"),
        fix: "enable hardware virtualisation (VT-x/AMD-V) in firmware, or nested virtualisation for a cloud VM, then `modprobe kvm_intel` (or kvm_amd)".into(),
    })?;
    let _ = meta;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| Unusable {
            why: format!("{dev} cannot be opened read-write ({e})"),
            fix: format!(
                "add your user to the group owning {dev} (`sudo usermod -aG kvm $USER`, then log in again) or `sudo chmod 0666 {dev}`"
            ),
        })?;
    let fd = file.as_raw_fd();
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let api = unsafe { libc::ioctl(fd, KVM_GET_API_VERSION as _, 0) };
    if api != KVM_API_VERSION {
        return Err(Unusable {
            why: format!(
                "{dev} answered KVM_GET_API_VERSION with {api}, expected {KVM_API_VERSION}"
            ),
            fix: "this is not a working KVM device; check the host kernel's KVM modules".into(),
        });
    }
    // SAFETY: KVM_CREATE_VM with machine type 0 returns a new fd or -1.
    let vm = unsafe { libc::ioctl(fd, KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Unusable {
            why: format!("KVM refused to create a VM ({e})"),
            fix: "the KVM device exists but cannot run guests; enable hardware virtualisation (or nested virtualisation) for this host".into(),
        });
    }
    // SAFETY: `vm` is a fd we own and close exactly once.
    unsafe { libc::close(vm) };
    Ok(())
}

/// Interpret `sysctl -n kern.hv_support` output (macOS).
pub fn check_hv_support(sysctl_stdout: &str) -> Result<(), Unusable> {
    if sysctl_stdout.trim() == "1" {
        Ok(())
    } else {
        Err(Unusable {
            why: format!(
                "Hypervisor.framework is not available (kern.hv_support = {})",
                if sysctl_stdout.trim().is_empty() { "unknown" } else { sysctl_stdout.trim() }
            ),
            fix: "run on Apple Silicon (or an Intel Mac with VT-x) with macOS 11+; inside a macOS VM enable nested virtualisation".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hv_support_values() {
        assert!(check_hv_support("1\n").is_ok());
        let e = check_hv_support("0\n").unwrap_err();
        assert!(e.why.contains("kern.hv_support = 0"), "{}", e.why);
        assert!(check_hv_support("").unwrap_err().why.contains("unknown"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn missing_device_explains_itself() {
        let e = check_kvm("/nonexistent/kvm").unwrap_err();
        assert!(e.why.contains("is missing"), "{}", e.why);
        assert!(e.fix.contains("virtualisation"), "{}", e.fix);
        // a device that is not KVM: /dev/null opens rw but fails the ioctl
        let e = check_kvm("/dev/null").unwrap_err();
        assert!(e.why.contains("KVM_GET_API_VERSION"), "{}", e.why);
    }
}
