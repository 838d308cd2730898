//! Gating tests on what the machine has (a docker engine, seeded images,
//! gVisor, the smolvm CLI, tmux, sshd, root...): the one helper every
//! `harness = false` test target of the workspace shares.
//!
//! Skipped is not passed. A test whose [`Requirement`] is missing here is
//! reported **ignored** with the reason (libtest-mimic's runtime ignore:
//! `test x ... ignored, <reason>`, counted in cargo's closing line), never
//! `ok`. With `CI=true` a requirement CI must have is a **failure** instead:
//! CI runs everything. A few requirements are not CI's to provide (a host
//! that boots micro-VMs): those stay ignored in CI too, and say so.
//!
//! A test target opts in with `harness = false` in its `Cargo.toml` and a
//! `main` that hands its trials to [`run`]:
//!
//! ```no_run
//! use bottle_test_gate::{run, trial, Requirement};
//!
//! static TOOL: Requirement = Requirement::new("tool", || {
//!     std::path::Path::new("/usr/bin/tool")
//!         .exists()
//!         .then_some(())
//!         .ok_or_else(|| "/usr/bin/tool is missing (install tool)".to_owned())
//! });
//!
//! fn uses_the_tool() { /* asserts */ }
//! fn needs_nothing() { /* asserts */ }
//!
//! fn main() {
//!     run(vec![trial!(uses_the_tool, &TOOL), trial!(needs_nothing)])
//! }
//! ```
//!
//! Probes run lazily, once per process, and only for trials that are
//! selected (a filtered run probes nothing it does not need).

#![deny(missing_docs)]

use std::process::Command;
use std::sync::OnceLock;

pub use libtest_mimic;
pub use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial};

/// True when running in CI (`CI=true`), where every required tool must be
/// present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Something a test needs from the machine, and how to find out whether it
/// is here. A `static`: its probe runs at most once per test process.
pub struct Requirement {
    name: &'static str,
    probe: fn() -> Result<(), String>,
    required_in_ci: bool,
    seen: OnceLock<Result<(), String>>,
}

impl std::fmt::Debug for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requirement")
            .field("name", &self.name)
            .field("required_in_ci", &self.required_in_ci)
            .finish()
    }
}

impl Requirement {
    /// A requirement CI must meet. `probe` returns `Err(why)` when it is
    /// missing; `why` says what is missing and how to get it.
    pub const fn new(name: &'static str, probe: fn() -> Result<(), String>) -> Self {
        Self {
            name,
            probe,
            required_in_ci: true,
            seen: OnceLock::new(),
        }
    }

    /// A requirement CI does not provide (e.g. a host that boots micro-VMs:
    /// its own runner and `cargo xtask integration` run those tests):
    /// missing, the test is ignored, in CI too.
    pub const fn not_in_ci(name: &'static str, probe: fn() -> Result<(), String>) -> Self {
        Self {
            name,
            probe,
            required_in_ci: false,
            seen: OnceLock::new(),
        }
    }

    /// Its name, as in a report.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Probe (once) and decide.
    pub fn gate(&self) -> Gate {
        match self.seen.get_or_init(self.probe) {
            Ok(()) => Gate::Run,
            Err(why) if self.required_in_ci && in_ci() => {
                Gate::Fail(format!("required in CI: {why}"))
            }
            Err(why) if self.required_in_ci => {
                Gate::Skip(format!("{why} (with CI=true this is a failure)"))
            }
            Err(why) => Gate::Skip(why.clone()),
        }
    }
}

/// Whether a test can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every requirement is met.
    Run,
    /// A requirement is missing and not required: the test is reported
    /// ignored with this reason.
    Skip(String),
    /// A requirement CI must have is missing and `CI=true`: the test fails
    /// with this reason.
    Fail(String),
}

impl Gate {
    /// The first requirement of `needs` that is not met decides (probing
    /// stops there).
    pub fn of(needs: &[&Requirement]) -> Gate {
        needs
            .iter()
            .map(|r| r.gate())
            .find(|g| *g != Gate::Run)
            .unwrap_or(Gate::Run)
    }

    /// What a trial reports when it does not run: `None` for [`Gate::Run`].
    pub fn outcome(&self) -> Option<Result<Completion, Failed>> {
        match self {
            Gate::Run => None,
            Gate::Skip(why) => Some(Ok(Completion::ignored_with(why))),
            Gate::Fail(why) => Some(Err(why.as_str().into())),
        }
    }
}

/// A trial that runs `body` when every requirement in `needs` is met, is
/// reported ignored (with the reason) when one is missing, and fails when
/// one CI must have is missing under `CI=true`. A panic in `body` is a
/// failure, as in libtest.
pub fn gated(
    name: impl Into<String>,
    needs: &[&'static Requirement],
    body: impl FnOnce() + Send + 'static,
) -> Trial {
    let needs = needs.to_vec();
    Trial::ignorable_test(name, move || {
        if let Some(outcome) = Gate::of(&needs).outcome() {
            return outcome;
        }
        body();
        Ok(Completion::Completed)
    })
}

/// The name libtest gives `#[test] fn f` in the module at `module_path`:
/// the path without the crate's own name (`integration::fault` + `f` →
/// `fault::f`; a test crate's root + `f` → `f`).
pub fn test_name(module_path: &str, f: &str) -> String {
    match module_path.split_once("::") {
        Some((_, rest)) => format!("{rest}::{f}"),
        None => f.to_owned(),
    }
}

/// `trial!(f)` or `trial!(f, &REQ_A, &REQ_B)`: the function `f` as a trial
/// named as libtest would name `#[test] fn f` here, gated on the
/// requirements (see [`gated`]).
#[macro_export]
macro_rules! trial {
    ($f:ident $(, $need:expr)* $(,)?) => {
        $crate::gated(
            $crate::test_name(::core::module_path!(), ::core::stringify!($f)),
            &[$($need),*],
            $f,
        )
    };
}

/// Run `trials` with the command line's arguments (filters, `--list`,
/// `--ignored`, `--test-threads`...) and exit with libtest's code.
pub fn run(trials: Vec<Trial>) -> ! {
    run_with(&Arguments::from_args(), trials)
}

/// [`run`] with arguments the caller adjusted (e.g. `test_threads`).
pub fn run_with(args: &Arguments, trials: Vec<Trial>) -> ! {
    libtest_mimic::run(args, trials).exit()
}

/// `Err(why)` unless `program args...` runs and exits 0.
pub fn command_succeeds(program: &str, args: &[&str], why: &str) -> Result<(), String> {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(_) => Err(format!("{why} (`{line}` failed)")),
        Err(e) => Err(format!("{why} (`{line}` cannot run: {e})")),
    }
}

/// A reachable docker engine (`docker info`).
pub static DOCKER: Requirement = Requirement::new("docker", || {
    command_succeeds(
        "docker",
        &["info"],
        "the docker engine is unreachable (start dockerd, or check DOCKER_HOST)",
    )
});

/// tmux, for tests that drive a real terminal.
pub static TMUX: Requirement = Requirement::new("tmux", || {
    command_succeeds("tmux", &["-V"], "tmux is unavailable (install tmux)")
});

/// git, the client (and `git daemon` / `git upload-pack`) the git-gate
/// tests drive.
pub static GIT: Requirement = Requirement::new("git", || {
    command_succeeds("git", &["--version"], "git is not installed (install git)")
});

/// Where the Debian package openssh-server puts the daemon.
pub const SSHD_PATH: &str = "/usr/sbin/sshd";

/// An OpenSSH server at [`SSHD_PATH`] and its client, for tests that put a
/// throwaway `sshd` on 127.0.0.1 in front of an upstream.
pub static SSHD: Requirement = Requirement::new("sshd", || {
    if !std::path::Path::new(SSHD_PATH).is_file() {
        return Err(format!(
            "{SSHD_PATH} is missing (install the Debian package openssh-server)"
        ));
    }
    command_succeeds(
        "ssh",
        &["-V"],
        "the ssh client is unavailable (install openssh-client)",
    )
});

/// curl, the agent-side HTTP client some tests use.
pub static CURL: Requirement = Requirement::new("curl", || {
    command_succeeds("curl", &["--version"], "curl is not installed")
});

/// Running as root (e.g. to mount a tmpfs).
pub static ROOT: Requirement = Requirement::new("root", || {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        Ok(())
    } else {
        Err("needs root (mounting a tmpfs); run as root".into())
    }
});

/// A host that boots micro-VMs, declared with `BOTTLE_TEST_SMOLVM=1` (set
/// by `cargo xtask integration --backend smolmachines` on a VM-capable
/// runner). Not CI's: ordinary CI machines cannot boot VMs.
pub static MICRO_VMS: Requirement = Requirement::not_in_ci("micro-VMs", || {
    if std::env::var("BOTTLE_TEST_SMOLVM").is_ok_and(|v| v == "1") {
        Ok(())
    } else {
        Err("needs a host that boots micro-VMs: `cargo xtask integration --backend smolmachines` (BOTTLE_TEST_SMOLVM=1) on a VM-capable runner".into())
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    static HERE: Requirement = Requirement::new("here", || Ok(()));
    static MISSING: Requirement = Requirement::new("missing", || Err("gone (get it)".into()));
    static NOT_CI: Requirement = Requirement::not_in_ci("vm", || Err("no VM here".into()));

    #[test]
    fn names_drop_the_crate() {
        assert_eq!(test_name("integration::fault", "f"), "fault::f");
        assert_eq!(test_name("integration::a::b", "f"), "a::b::f");
        assert_eq!(test_name("interrupt", "f"), "f");
    }

    #[test]
    fn the_first_missing_requirement_decides() {
        assert_eq!(Gate::of(&[&HERE]), Gate::Run);
        assert_eq!(Gate::of(&[]), Gate::Run);
        match Gate::of(&[&HERE, &NOT_CI, &MISSING]) {
            Gate::Skip(why) => assert_eq!(why, "no VM here"),
            other => panic!("{other:?}"),
        }
        // CI decides Skip vs Fail for a required one (the env var is read,
        // so both branches are asserted on whichever this process has)
        match Gate::of(&[&MISSING]) {
            Gate::Fail(why) => {
                assert!(in_ci());
                assert_eq!(why, "required in CI: gone (get it)");
            }
            Gate::Skip(why) => {
                assert!(!in_ci());
                assert_eq!(why, "gone (get it) (with CI=true this is a failure)");
            }
            Gate::Run => panic!("a missing requirement ran"),
        }
    }

    #[test]
    fn outcomes() {
        assert!(Gate::Run.outcome().is_none());
        assert!(matches!(
            Gate::Skip("x".into()).outcome(),
            Some(Ok(Completion::Ignored { reason: Some(r) })) if r == "x"
        ));
        assert!(matches!(Gate::Fail("x".into()).outcome(), Some(Err(_))));
    }
}
