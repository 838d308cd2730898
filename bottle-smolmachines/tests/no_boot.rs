//! `launch` on a host that cannot boot micro-VMs (this CI machine: no usable
//! hardware virtualisation) stops at the probe with a clear message and
//! leaves nothing behind — checked with the real smolvm and docker CLIs.
//! On a host that can boot VMs this test has nothing to prove and is
//! reported ignored, saying so (the full path runs in `cargo xtask
//! integration --backend smolmachines`). Without smolvm or docker it is
//! ignored with the reason, or fails with `CI=true` (`bottle-test-gate`).

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use bottle_core::backend::{Backend, LaunchInput, Probe};
use bottle_core::command::{CommandRunner, CommandSpec, DuctRunner, Output};
use bottle_core::ErrorKind;
use bottle_smolmachines::smolvm::{parse_ls, Smolvm};
use bottle_smolmachines::SmolmachinesBackend;
use bottle_test_gate::{run, trial, Requirement, DOCKER};
use common::SMOLVM;

/// Runs for real and records what ran.
#[derive(Default)]
struct Tee {
    calls: Mutex<Vec<CommandSpec>>,
}

impl CommandRunner for Tee {
    fn output(&self, spec: &CommandSpec) -> bottle_core::Result<Output> {
        self.calls.lock().unwrap().push(spec.clone());
        DuctRunner.output(spec)
    }
    fn interactive(&self, spec: &CommandSpec) -> bottle_core::Result<i32> {
        self.calls.lock().unwrap().push(spec.clone());
        DuctRunner.interactive(spec)
    }
}

/// A host that cannot boot micro-VMs: on one that can, the no-boot path has
/// nothing to prove (the full path runs in `cargo xtask integration
/// --backend smolmachines`), so the test is ignored there, in CI too.
static CANNOT_BOOT: Requirement = Requirement::not_in_ci(
    "a host that cannot boot micro-VMs",
    || match SmolmachinesBackend::new().probe(&DuctRunner) {
        Probe::Ready { .. } => {
            Err("this host can boot micro-VMs; the no-boot path has nothing to prove here".into())
        }
        _ => Ok(()),
    },
);

fn probe_dirs() -> BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with("bottle-smolvm-probe-"))
                .collect()
        })
        .unwrap_or_default()
}

fn main() {
    run(vec![trial!(
        launch_on_a_host_that_cannot_boot_stops_at_probe_and_leaves_nothing,
        &SMOLVM,
        &DOCKER,
        &CANNOT_BOOT
    )])
}

fn launch_on_a_host_that_cannot_boot_stops_at_probe_and_leaves_nothing() {
    let smolvm = Smolvm::locate().unwrap_or_else(|e| panic!("smolvm: {}", e.why));
    let backend = SmolmachinesBackend::new();

    let before = probe_dirs();
    let f = common::fixture("minimal");
    let tee = Tee::default();
    let err = match backend.launch(
        LaunchInput {
            plan: &f.plan,
            state: &f.state,
            wiring: &f.wiring,
        },
        &tee,
    ) {
        Ok(_) => panic!("launch succeeded on a host whose probe failed"),
        Err(e) => e,
    };

    // a clear message: unavailable (exit 3), what is wrong, what to do
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("backend `smolmachines` is unavailable"),
        "{text}"
    );
    assert!(
        text.contains("cannot boot micro-VMs") || text.contains("KVM"),
        "{text}"
    );
    assert!(!err.fix().unwrap_or_default().is_empty());
    eprintln!(
        "launch refused as expected:\n  {text}\n  fix: {}",
        err.fix().unwrap()
    );

    // only probe commands ran: nothing was created
    let calls = tee.calls.lock().unwrap().clone();
    for c in &calls {
        let line = c.argv_line();
        let probe_cmd = line.ends_with("--version")
            || line.starts_with("docker version")
            || line.starts_with("sysctl")
            || (c.args.contains(&"run".to_owned()) && c.args.contains(&"--state-dir".to_owned()))
            || (cfg!(target_os = "macos") && c.args.contains(&"run".to_owned()));
        assert!(
            probe_cmd,
            "launch ran a non-probe command on an unbootable host: {line}"
        );
    }
    assert!(!calls.iter().any(|c| c.args.contains(&"create".to_owned())));

    // and nothing is left: no VM, container, network, state or probe dir
    let ls = DuctRunner
        .output(&CommandSpec::new(&smolvm.program).args(smolvm.ls_args()))
        .unwrap();
    assert!(parse_ls(&ls.stdout)
        .unwrap()
        .iter()
        .all(|m| m.identity() != Some(f.plan.identity.as_str())));
    let filter = format!("label=dev.bottle.identity={}", f.plan.identity);
    for args in [
        vec!["ps", "--all", "--quiet", "--filter", filter.as_str()],
        vec!["network", "ls", "--quiet", "--filter", filter.as_str()],
        vec!["image", "ls", "--quiet", "--filter", filter.as_str()],
    ] {
        let o = DuctRunner
            .output(&CommandSpec::new("docker").args(args.clone()))
            .unwrap();
        assert!(
            o.stdout.trim().is_empty(),
            "docker {args:?} found leftovers: {}",
            o.stdout
        );
    }
    assert!(!f.state.path().exists(), "launch wrote into the state dir");
    let after = probe_dirs();
    assert!(
        after.is_subset(&before),
        "probe temp dirs left: {:?}",
        after.difference(&before)
    );
}
