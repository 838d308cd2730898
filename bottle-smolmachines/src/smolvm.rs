//! The smolvm CLI seam: where the binary is, which version it is, the exact
//! argv of every `smolvm` command bottle issues, and the shape of
//! `machine ls --json`.
//!
//! Everything here is pure (argv in, argv out; JSON text in, structs out) so
//! it can be snapshotted and contract-tested against the real CLI
//! (`tests/contract.rs`). No command is run from this module.

use std::collections::BTreeMap;
use std::fmt;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

/// The oldest smolvm bottle accepts. Releases before 1.8 silently dropped
/// `--allow-cidr` when a machine was created from a packed image, so the
/// agent got the whole network (SPEC §7.2): refused, never worked around.
pub const MIN_VERSION: Version = Version {
    major: 1,
    minor: 8,
    patch: 0,
};

/// Environment variable naming the smolvm binary to use instead of `PATH`.
pub const ENV_SMOLVM: &str = "BOTTLE_SMOLVM";

/// The label every machine bottle creates carries (value: the identity).
pub const LABEL_IDENTITY: &str = "dev.bottle.identity";
/// The label naming the backend that created a machine.
pub const LABEL_BACKEND: &str = "dev.bottle.backend";

/// The network backend bottle pins. smolvm enforces `--allow-cidr` only on
/// `virtio-net`; TSI ignores an allowlist (1.32 refuses the combination).
/// Pinning it means a change of smolvm's default can never fail open.
pub const NET_BACKEND: &str = "virtio-net";

/// A smolvm release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// Parse the output of `smolvm --version` (`smolvm 1.32.2`). Other lines
    /// (the PyPI wrapper's note about packed assets) are ignored.
    pub fn parse(output: &str) -> Option<Version> {
        output.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("smolvm ")?;
            let word = rest.split_whitespace().next()?;
            let word = word.trim_start_matches('v');
            let core = word.split(['-', '+']).next()?;
            let mut it = core.split('.');
            let major = it.next()?.parse().ok()?;
            let minor = it.next()?.parse().ok()?;
            let patch = it.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
            Some(Version {
                major,
                minor,
                patch,
            })
        })
    }

    /// Whether this version keeps the allowlist (≥ [`MIN_VERSION`]).
    pub fn supported(&self) -> bool {
        *self >= MIN_VERSION
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The smolvm binary and the options every invocation carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Smolvm {
    /// Program path or name.
    pub program: String,
    /// `--state-dir` (Linux only): keeps every smolvm record under one
    /// directory. Used by the probe's boot check and by tests; `None` for
    /// real bottles (they live in the user's smolvm state).
    pub state_dir: Option<Utf8PathBuf>,
}

/// Why the smolvm binary could not be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// What was looked at.
    pub why: String,
}

impl Smolvm {
    /// Use this program.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            state_dir: None,
        }
    }

    /// Keep smolvm's state under `dir` (`--state-dir`, Linux only).
    pub fn with_state_dir(mut self, dir: impl Into<Utf8PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// `$BOTTLE_SMOLVM` if set (it must exist), else `smolvm` on `PATH`.
    pub fn locate() -> Result<Smolvm, NotFound> {
        Self::locate_in(
            std::env::var_os(ENV_SMOLVM).map(|v| v.to_string_lossy().into_owned()),
            std::env::var_os("PATH").map(|v| v.to_string_lossy().into_owned()),
        )
    }

    /// [`Smolvm::locate`] with explicit inputs (for tests).
    pub fn locate_in(explicit: Option<String>, path: Option<String>) -> Result<Smolvm, NotFound> {
        if let Some(p) = explicit.filter(|p| !p.is_empty()) {
            return if is_executable(Utf8Path::new(&p)) {
                Ok(Smolvm::new(p))
            } else {
                Err(NotFound {
                    why: format!("{ENV_SMOLVM}={p} is not an executable file"),
                })
            };
        }
        for dir in path
            .as_deref()
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
        {
            let candidate = Utf8Path::new(dir).join("smolvm");
            if is_executable(&candidate) {
                return Ok(Smolvm::new(candidate.into_string()));
            }
        }
        Err(NotFound {
            why: format!("`smolvm` is not on PATH and {ENV_SMOLVM} is not set"),
        })
    }

    /// Arguments for `smolvm <words…>` with the options every call carries:
    /// `--error-format json` (stable error codes) and `--state-dir` when set.
    fn sub(&self, words: &[&str]) -> Vec<String> {
        let mut args = vec!["--error-format".to_owned(), "json".to_owned()];
        args.extend(words.iter().map(|w| (*w).to_owned()));
        if let Some(dir) = &self.state_dir {
            args.push("--state-dir".into());
            args.push(dir.to_string());
        }
        args
    }

    /// `smolvm --version`.
    pub fn version_args(&self) -> Vec<String> {
        vec!["--version".into()]
    }

    /// `smolvm machine create …` for `spec`.
    pub fn create_args(&self, spec: &MachineSpec) -> Vec<String> {
        let mut a = self.sub(&["machine", "create"]);
        push2(&mut a, "--name", &spec.name);
        push2(&mut a, "--image", spec.image.as_str());
        // The allowlist. Never empty: an empty allowlist plus --net is the
        // whole internet, so MachineSpec::validate refuses it before render.
        push2(&mut a, "--net-backend", NET_BACKEND);
        for cidr in &spec.allow_cidrs {
            push2(&mut a, "--allow-cidr", cidr);
        }
        for (k, v) in &spec.labels {
            push2(&mut a, "--label", &format!("{k}={v}"));
        }
        if let Some(cpus) = spec.cpus {
            push2(&mut a, "--cpus", &cpus.to_string());
        }
        if let Some(mem) = spec.memory_mib {
            push2(&mut a, "--mem", &mem.to_string());
        }
        if let Some(w) = &spec.workdir {
            push2(&mut a, "--workdir", w);
        }
        for (k, v) in &spec.env {
            push2(&mut a, "--env", &format!("{k}={v}"));
        }
        for s in &spec.secret_env {
            push2(
                &mut a,
                "--secret-env",
                &format!("{}={}", s.guest_var, s.host_var),
            );
        }
        for s in &spec.secret_files {
            push2(
                &mut a,
                "--secret-file",
                &format!("{}={}", s.guest_var, s.path),
            );
        }
        if !spec.command.is_empty() {
            a.push("--".into());
            a.extend(spec.command.iter().cloned());
        }
        a
    }

    /// `smolvm machine start --name N`.
    pub fn start_args(&self, name: &str) -> Vec<String> {
        let mut a = self.sub(&["machine", "start"]);
        push2(&mut a, "--name", name);
        a
    }

    /// `smolvm machine stop --name N --timeout S`.
    pub fn stop_args(&self, name: &str, timeout_secs: u32) -> Vec<String> {
        let mut a = self.sub(&["machine", "stop"]);
        push2(&mut a, "--name", name);
        push2(&mut a, "--timeout", &timeout_secs.to_string());
        a
    }

    /// `smolvm machine delete --name N --force`.
    pub fn delete_args(&self, name: &str) -> Vec<String> {
        let mut a = self.sub(&["machine", "delete"]);
        push2(&mut a, "--name", name);
        a.push("--force".into());
        a
    }

    /// `smolvm machine ls --json`.
    pub fn ls_args(&self) -> Vec<String> {
        let mut a = self.sub(&["machine", "ls"]);
        a.push("--json".into());
        a
    }

    /// `smolvm machine exec --name N … -- CMD…`.
    pub fn exec_args(&self, name: &str, exec: &Exec) -> Vec<String> {
        let mut a = self.sub(&["machine", "exec"]);
        push2(&mut a, "--name", name);
        if let Some(u) = &exec.user {
            push2(&mut a, "--user", u);
        }
        if let Some(w) = &exec.workdir {
            push2(&mut a, "--workdir", w);
        }
        if let Some(t) = exec.timeout_secs {
            push2(&mut a, "--timeout", &format!("{t}s"));
        }
        for (k, v) in &exec.env {
            push2(&mut a, "--env", &format!("{k}={v}"));
        }
        for s in &exec.secret_env {
            push2(
                &mut a,
                "--secret-env",
                &format!("{}={}", s.guest_var, s.host_var),
            );
        }
        if exec.interactive {
            a.push("--interactive".into());
        }
        if exec.tty {
            a.push("--tty".into());
        }
        a.push("--".into());
        a.extend(exec.command.iter().cloned());
        a
    }

    /// `smolvm machine cp [--uid U --gid G --mode M] SRC NAME:DST` (upload).
    pub fn cp_args(&self, name: &str, upload: &Upload) -> Vec<String> {
        let mut a = self.sub(&["machine", "cp"]);
        if let Some(uid) = upload.uid {
            push2(&mut a, "--uid", &uid.to_string());
        }
        if let Some(gid) = upload.gid {
            push2(&mut a, "--gid", &gid.to_string());
        }
        if let Some(mode) = upload.mode {
            push2(&mut a, "--mode", &format!("{mode:o}"));
        }
        a.push(upload.src.to_string());
        a.push(format!("{name}:{}", upload.dst));
        a
    }

    /// `smolvm machine run -- true`: boot a bare throwaway VM (no image, no
    /// network) to prove this host can boot at all. The probe runs it with a
    /// private `--state-dir` so nothing outlives it.
    pub fn boot_check_args(&self) -> Vec<String> {
        let mut a = self.sub(&["machine", "run"]);
        a.push("--".into());
        a.push("true".into());
        a
    }
}

fn push2(a: &mut Vec<String>, flag: &str, value: &str) {
    a.push(flag.to_owned());
    a.push(value.to_owned());
}

fn is_executable(p: &Utf8Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where a machine's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ImageSource {
    /// A `docker save` archive on the host (`--image /abs/agent.tar`).
    Archive(Utf8PathBuf),
}

impl ImageSource {
    fn as_str(&self) -> &str {
        match self {
            ImageSource::Archive(p) => p.as_str(),
        }
    }
}

/// A secret passed by reference: the guest variable is filled from a host
/// environment variable of the `smolvm` process (`--secret-env G=H`). The
/// value rides in the child's environment, never on argv.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretEnvRef {
    /// Variable name inside the guest.
    pub guest_var: String,
    /// Variable name in smolvm's own (host) environment.
    pub host_var: String,
}

/// A secret passed by reference from a host file (`--secret-file G=/abs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretFileRef {
    /// Variable name inside the guest.
    pub guest_var: String,
    /// Absolute host path (mode 600) holding the value.
    pub path: Utf8PathBuf,
}

/// Everything `machine create` needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MachineSpec {
    /// Machine name.
    pub name: String,
    /// Root filesystem.
    pub image: ImageSource,
    /// `--allow-cidr` entries: the only peers the guest may reach.
    pub allow_cidrs: Vec<String>,
    /// `--label` entries.
    pub labels: BTreeMap<String, String>,
    /// vCPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Working directory of the workload.
    pub workdir: Option<String>,
    /// Plain (non-secret) environment, `--env K=V`.
    pub env: BTreeMap<String, String>,
    /// Secret environment by reference.
    pub secret_env: Vec<SecretEnvRef>,
    /// Secret files by reference.
    pub secret_files: Vec<SecretFileRef>,
    /// The persistent workload (keeps the machine up; the agent runs via exec).
    pub command: Vec<String>,
}

/// A refusal of [`MachineSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl MachineSpec {
    /// Refuse a spec that would fail open or leak: an empty allowlist, an
    /// allowlist entry wider than one address, a relative archive path.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.allow_cidrs.is_empty() {
            return Err(Invalid(format!(
                "machine `{}` has no allowlist: it would reach the whole network",
                self.name
            )));
        }
        for c in &self.allow_cidrs {
            if !(c.ends_with("/32") || c.ends_with("/128")) {
                return Err(Invalid(format!(
                    "allowlist entry `{c}` of machine `{}` is wider than one address",
                    self.name
                )));
            }
        }
        let ImageSource::Archive(p) = &self.image;
        if !p.is_absolute() {
            return Err(Invalid(format!(
                "image archive `{p}` must be an absolute path (smolvm treats other words as registry references)"
            )));
        }
        for s in &self.secret_files {
            if !s.path.is_absolute() {
                return Err(Invalid(format!(
                    "secret file `{}` must be absolute",
                    s.path
                )));
            }
        }
        Ok(())
    }
}

/// A command run inside a machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Exec {
    /// `--user`.
    pub user: Option<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--timeout` in seconds.
    pub timeout_secs: Option<u32>,
    /// Plain env.
    pub env: BTreeMap<String, String>,
    /// Secret env by reference.
    pub secret_env: Vec<SecretEnvRef>,
    /// `--interactive`.
    pub interactive: bool,
    /// `--tty`.
    pub tty: bool,
    /// The command.
    pub command: Vec<String>,
}

/// A file uploaded into a machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Upload {
    /// Host path.
    pub src: Utf8PathBuf,
    /// Guest path.
    pub dst: String,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// Mode.
    pub mode: Option<u32>,
}

/// One entry of `smolvm machine ls --json`. Only the fields bottle relies
/// on; unknown fields are ignored so a new smolvm release does not break gc.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct MachineInfo {
    /// Machine name.
    pub name: String,
    /// `created`, `running`, `stopped`, …
    pub state: String,
    /// Labels given at create.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The allowlist smolvm recorded (absent when empty).
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Whether outbound networking is on.
    #[serde(default)]
    pub network: bool,
    /// Image the machine was created from.
    #[serde(default)]
    pub image: Option<String>,
    /// VMM pid when running.
    #[serde(default)]
    pub pid: Option<u64>,
}

impl MachineInfo {
    /// The bottle identity label, if any.
    pub fn identity(&self) -> Option<&str> {
        self.labels.get(LABEL_IDENTITY).map(String::as_str)
    }
}

/// What `machine ls --json` reports as `image` for a machine created from a
/// local archive: `local:<sha256 of the archive bytes>`. Launch compares it
/// with the archive it just saved, so the VM provably boots the image that
/// was built (no registry, no stale cache: SPEC §7.3).
pub fn local_image_ref(archive: &Utf8Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(archive)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("local:{}", hex::encode(h.finalize())))
}

/// Parse `machine ls --json` output.
pub fn parse_ls(stdout: &str) -> Result<Vec<MachineInfo>, serde_json::Error> {
    let t = stdout.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(t)
}

/// A failure as reported with `--error-format json`:
/// `{"error":{"code":"NOT_FOUND","message":"…"}}` on stderr.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CliError {
    /// Stable code (`NOT_FOUND`, `CONFIG_ERROR`, `KVM_UNAVAILABLE`, …).
    pub code: String,
    /// Human text.
    pub message: String,
}

/// Find the JSON error in smolvm's stderr (other lines are logs/notes).
pub fn parse_error(stderr: &str) -> Option<CliError> {
    #[derive(Deserialize)]
    struct Wrap {
        error: CliError,
    }
    stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Wrap>(l.trim()).ok())
        .map(|w| w.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing() {
        let out = "note: no packed assets found\nsmolvm 1.32.2\n";
        let v = Version::parse(out).unwrap();
        assert_eq!(v.to_string(), "1.32.2");
        assert!(v.supported());
        assert!(!Version::parse("smolvm 0.8.0").unwrap().supported());
        assert!(!Version::parse("smolvm 1.7.9").unwrap().supported());
        assert!(Version::parse("smolvm 1.8").unwrap().supported());
        assert!(Version::parse("smolvm v2.0.0-rc1").unwrap().supported());
        assert_eq!(Version::parse("something else"), None);
    }

    #[test]
    fn errors_and_listing_parse() {
        let e = parse_error(
            "note: x\n{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"vm not found: a\"}}\n",
        )
        .unwrap();
        assert_eq!(e.code, "NOT_FOUND");
        assert_eq!(parse_ls("[]\n").unwrap(), vec![]);
        let ls = parse_ls(r#"[{"name":"a","state":"created","labels":{"dev.bottle.identity":"x"},"network":true,"extra":1}]"#).unwrap();
        assert_eq!(ls[0].identity(), Some("x"));
        assert!(ls[0].allowed_cidrs.is_empty());
    }

    #[test]
    fn locate_prefers_explicit_and_rejects_missing() {
        let err = Smolvm::locate_in(Some("/nonexistent/smolvm".into()), None).unwrap_err();
        assert!(err.why.contains("BOTTLE_SMOLVM"), "{}", err.why);
        let err = Smolvm::locate_in(None, Some("/nonexistent".into())).unwrap_err();
        assert!(err.why.contains("PATH"), "{}", err.why);
        let ok = Smolvm::locate_in(Some("/bin/sh".into()), None).unwrap();
        assert_eq!(ok.program, "/bin/sh");
    }
}
