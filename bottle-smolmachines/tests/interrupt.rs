//! Ctrl-C during a smolmachines launch (issue #16): a real SIGINT after
//! step k unwinds steps k..1 newest first with their undo commands, and
//! progress reports each step that finished. A recording runner stands in
//! for docker and smolvm (micro-VMs cannot boot here); the signal is real,
//! raised in this process right after step k's command ran, so this file
//! is its own test binary with a single test (the signal reaches the whole
//! process).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bottle_core::backend::Gvisor;
use bottle_core::backend::{Backend, LaunchInput, Probe};
use bottle_core::command::{CommandRunner, CommandSpec, Output, RecordingRunner};
use bottle_core::Error;
use bottle_smolmachines::hv::HostOs;
use bottle_smolmachines::smolvm::{local_image_ref, Smolvm};
use bottle_smolmachines::{render, SmolmachinesBackend};
use common::{fixture, Fixture};

const LS: &str = "smolvm --error-format json machine ls --json";

fn backend() -> SmolmachinesBackend {
    SmolmachinesBackend::with(Smolvm::new("smolvm"), HostOs::Linux)
}

fn input(f: &Fixture) -> LaunchInput<'_> {
    LaunchInput {
        plan: &f.plan,
        state: &f.state,
        wiring: &f.wiring,
    }
}

/// The archive `docker save` would have written, and smolvm's record of
/// the created machine (allowlist and image as rendered).
fn machine_ls(f: &Fixture) -> String {
    let p = backend().plan(input(f)).unwrap();
    std::fs::create_dir_all(&p.paths.dir).unwrap();
    std::fs::write(&p.paths.archive, b"saved image bytes").unwrap();
    serde_json::json!([{
        "name": p.machine.name,
        "state": "created",
        "allowed_cidrs": p.machine.allow_cidrs,
        "network": true,
        "image": local_image_ref(&p.paths.archive).unwrap(),
        "labels": {"dev.bottle.identity": f.plan.identity.as_str(), "dev.bottle.backend": "smolmachines"},
    }])
    .to_string()
}

/// Records like [`RecordingRunner`]; raises `SIGINT` once, right after the
/// command `at` ran.
struct SignalAfter {
    inner: RecordingRunner,
    at: String,
    fired: AtomicBool,
}

impl CommandRunner for SignalAfter {
    fn output(&self, spec: &CommandSpec) -> bottle_core::Result<Output> {
        let out = self.inner.output(spec);
        if spec.argv_line() == self.at && !self.fired.swap(true, Ordering::SeqCst) {
            // SAFETY: raise(3) to this process; the launch's interrupt
            // guard is installed while its steps run.
            unsafe {
                libc::raise(libc::SIGINT);
            }
        }
        out
    }
    fn interactive(&self, spec: &CommandSpec) -> bottle_core::Result<i32> {
        self.inner.interactive(spec)
    }
}

#[test]
fn ctrl_c_after_step_k_unwinds_k_to_1_and_progress_reports_each_step() {
    let f = fixture("minimal");
    let p = backend().plan(input(&f)).unwrap();
    let steps = render::steps(&p, &backend().cli());
    let ready = Probe::Ready {
        version: "smolvm test".into(),
        notes: Vec::new(),
        gvisor: Gvisor::NotApplicable,
    };
    let mut snapshot = String::new();
    for k in 1..=steps.len() {
        let r = SignalAfter {
            inner: RecordingRunner::new(),
            at: steps[k - 1].step.run.argv_line(),
            fired: AtomicBool::new(false),
        };
        r.inner.reply(LS, 0, &machine_ls(&f));
        let seen = Mutex::new(Vec::new());
        let progress = |i: usize, total: usize, name: &str, skipped: bool| {
            assert_eq!(total, steps.len());
            assert!(!skipped);
            seen.lock().unwrap().push((i, name.to_owned()));
        };
        let err = backend()
            .launch_observed(input(&f), &r, Some(&ready), &progress)
            .err()
            .unwrap_or_else(|| panic!("a Ctrl-C after step {k} did not stop the launch"));
        // interrupted: exit 130 in the CLI; nothing left to clean by hand
        let Error::Interrupted { step } = &err else {
            panic!("after step {k}: {err:?}")
        };
        match steps.get(k) {
            Some(next) => assert_eq!(step, &next.step.name),
            None => assert_eq!(step, "the last step"),
        }
        // every step up to k ran once, in order, and was reported
        let lines: Vec<String> = r.inner.calls().iter().map(|c| c.argv_line()).collect();
        let ran: Vec<String> = steps[..k].iter().map(|s| s.step.run.argv_line()).collect();
        assert_eq!(lines[..k], ran[..], "after step {k}");
        let reported: Vec<(usize, String)> = seen.into_inner().unwrap();
        let want: Vec<(usize, String)> = steps[..k]
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.step.name.clone()))
            .collect();
        assert_eq!(reported, want, "progress after step {k}");
        // then the undos of steps k..1, newest first, and nothing else
        let undos: Vec<String> = steps[..k]
            .iter()
            .rev()
            .filter_map(|s| s.step.undo.as_ref().map(|u| u.argv_line()))
            .collect();
        assert_eq!(lines[k..], undos[..], "unwinding after step {k}");
        snapshot.push_str(&format!(
            "## Ctrl-C after {k}. {}\n",
            steps[k - 1].step.name
        ));
        for u in &undos {
            snapshot.push_str(&format!("{u}\n"));
        }
    }
    insta::assert_snapshot!("unwind_after_each_step", f.scrub(&snapshot));

    // Ctrl-C while waiting for the VM: the wait stops at once (one try,
    // not the whole readiness deadline) and everything is unwound
    let wait = steps
        .iter()
        .position(|s| s.step.name == "wait for VM readiness")
        .expect("a readiness wait");
    let r = SignalAfter {
        inner: RecordingRunner::new(),
        at: steps[wait].step.run.argv_line(),
        fired: AtomicBool::new(false),
    };
    r.inner.reply(LS, 0, &machine_ls(&f));
    r.inner.reply(&steps[wait].step.run.argv_line(), 1, "");
    let err = backend()
        .launch_observed(input(&f), &r, Some(&ready), &|_, _, _, _| {})
        .err()
        .expect("interrupted");
    assert!(
        matches!(&err, Error::Interrupted { step } if step == "wait for VM readiness"),
        "{err:?}"
    );
    let lines: Vec<String> = r.inner.calls().iter().map(|c| c.argv_line()).collect();
    assert_eq!(lines[wait], steps[wait].step.run.argv_line());
    let undos: Vec<String> = steps[..wait]
        .iter()
        .rev()
        .filter_map(|s| s.step.undo.as_ref().map(|u| u.argv_line()))
        .collect();
    assert_eq!(
        lines[wait + 1..],
        undos[..],
        "one readiness try, then the unwinding"
    );
    // the guard is gone: SIGINT has its default disposition again
    // SAFETY: queries the disposition only.
    let now = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old);
        old.sa_sigaction
    };
    assert_eq!(now, libc::SIG_DFL);
}
