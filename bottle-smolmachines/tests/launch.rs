//! The launch driver with a recording runner: order, readiness polling,
//! the post-create verification that refuses a VM whose allowlist or image
//! is not what was rendered (SPEC §7.2, §7.3), and LIFO rollback.

mod common;

use bottle_core::backend::{LaunchInput, Running};
use bottle_core::command::RecordingRunner;
use bottle_core::{Error, ErrorKind};
use bottle_smolmachines::hv::HostOs;
use bottle_smolmachines::smolvm::{local_image_ref, Smolvm};
use bottle_smolmachines::SmolmachinesBackend;
use common::{fixture, Fixture};

const LS: &str = "smolvm --error-format json machine ls --json";

fn backend() -> SmolmachinesBackend {
    SmolmachinesBackend::with(Smolvm::new("smolvm"), HostOs::Linux)
}

/// Write the archive `docker save` would have produced; return the
/// `machine ls --json` reply smolvm gives for the machine.
fn prepare(f: &Fixture, allow: &str, image: Option<&str>) -> String {
    let p = backend()
        .plan(LaunchInput {
            plan: &f.plan,
            state: &f.state,
            wiring: &f.wiring,
        })
        .unwrap();
    std::fs::create_dir_all(&p.paths.dir).unwrap();
    std::fs::write(&p.paths.archive, b"saved image bytes").unwrap();
    let digest = local_image_ref(&p.paths.archive).unwrap();
    serde_json::json!([{
        "name": p.machine.name,
        "state": "created",
        "allowed_cidrs": [allow],
        "network": true,
        "image": image.unwrap_or(&digest),
        "labels": {"dev.bottle.identity": f.plan.identity.as_str(), "dev.bottle.backend": "smolmachines"},
    }])
    .to_string()
}

fn launch(f: &Fixture, r: &RecordingRunner) -> Result<bottle_smolmachines::SmolRunning, Error> {
    backend().launch_probed(
        LaunchInput {
            plan: &f.plan,
            state: &f.state,
            wiring: &f.wiring,
        },
        r,
    )
}

fn lines(r: &RecordingRunner) -> Vec<String> {
    r.calls().iter().map(|c| c.argv_line()).collect()
}

#[test]
fn a_launch_runs_every_step_and_polls_until_ready() {
    let f = fixture("full");
    let r = RecordingRunner::new();
    r.reply(LS, 0, &prepare(&f, "10.210.0.114/32", None));
    // the VM is not up for the first two readiness tries
    let ready =
        "smolvm --error-format json machine exec --name bottle-main-dev-test01-agent --timeout 5s";
    r.reply_once(ready, 1, "");
    r.reply_once(ready, 1, "");
    let running = launch(&f, &r).unwrap();
    let l = lines(&r);
    assert_eq!(
        l.iter().filter(|c| c.starts_with(ready)).count(),
        3,
        "polled until ready"
    );
    let pos = |needle: &str| {
        l.iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not run"))
    };
    assert!(pos("network create") < pos("docker run"));
    assert!(pos("bottle-sidecar health") < pos("docker build"));
    assert!(pos("docker save") < pos("machine create"));
    assert!(pos("machine create") < pos("machine ls") && pos("machine ls") < pos("machine start"));
    assert!(pos("machine start") < pos("chown -R 1000:1000"));
    assert!(pos("chown -R 1000:1000") < pos("machine cp"));
    // the derived Dockerfile was written before the build
    assert!(f.state.agent_dir().join("smolmachines/Dockerfile").exists());
    // stop removes everything, tolerating what is already gone
    let r2 = RecordingRunner::new();
    r2.reply("smolvm --error-format json machine delete", 1, "");
    running.stop(&r2).unwrap_err();
    let r3 = RecordingRunner::new();
    running.stop(&r3).unwrap();
    assert_eq!(r3.calls().len(), 7, "{:#?}", lines(&r3));
}

#[test]
fn a_dropped_or_widened_allowlist_refuses_to_start_and_rolls_back() {
    for recorded in ["", "0.0.0.0/0", "127.77.1.8/32", "10.210.0.115/32"] {
        let f = fixture("minimal");
        let r = RecordingRunner::new();
        let mut ls = prepare(&f, recorded, None);
        if recorded.is_empty() {
            ls = ls.replace("\"allowed_cidrs\":[\"\"],", "");
        }
        r.reply(LS, 0, &ls);
        let err = launch(&f, &r).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
        assert!(err.to_string().contains("allowlist"), "{err}");
        let l = lines(&r);
        assert!(
            !l.iter().any(|c| c.contains("machine start")),
            "VM started despite {recorded:?}"
        );
        // rollback: newest first, every created resource
        let after: Vec<&String> = l
            .iter()
            .skip_while(|c| !c.contains("machine ls"))
            .skip(1)
            .collect();
        let expect = [
            "machine delete",
            "rm -f",
            "image rm --force bottle-agent:",
            "docker rm --force",
            "network rm",
        ];
        assert_eq!(after.len(), expect.len(), "{after:#?}");
        for (c, e) in after.iter().zip(expect) {
            assert!(c.contains(e), "rollback order: {after:#?}");
        }
    }
}

#[test]
fn a_stale_image_refuses_to_start() {
    let f = fixture("minimal");
    let r = RecordingRunner::new();
    r.reply(LS, 0, &prepare(&f, "10.210.0.114/32", Some("local:0000")));
    let err = launch(&f, &r).unwrap_err();
    assert!(
        err.to_string().contains("not the archive just built"),
        "{err}"
    );
    assert!(!lines(&r).iter().any(|c| c.contains("machine start")));
}

#[test]
fn a_failed_step_unwinds_and_reports_cleanup_failures() {
    let f = fixture("minimal");
    let r = RecordingRunner::new();
    r.reply(LS, 0, &prepare(&f, "10.210.0.114/32", None));
    r.reply("smolvm --error-format json machine start", 1, "");
    r.reply("docker network rm", 1, "");
    let err = launch(&f, &r).unwrap_err();
    let Error::Launch { step, cleanup, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(step, "start VM");
    assert_eq!(cleanup.len(), 1, "{err}");
    assert!(cleanup[0].0.contains("create bundle network"));
    assert_eq!(err.fix().unwrap(), "run `bottle gc` to remove what is left");
}

/// The `--cwd` copy reaches the VM image through a staged build context:
/// the repository's git credentials (extraheader, credential helper,
/// userinfo in a remote URL) are not in the copy, its files are
/// (docs/security.md S1). Before this, the workspace itself was the build
/// context and `.git/config` went in verbatim.
#[test]
fn the_workspace_copy_carries_no_git_credentials() {
    let mut f = fixture("full");
    let repo = f.root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-C", repo.as_str()])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("main.rs"), "fn main() {}\n").unwrap();
    git(&[
        "config",
        "http.https://example.test/.extraheader",
        "AUTHORIZATION: basic c2VjcmV0LXRva2Vu",
    ]);
    git(&["config", "credential.helper", "store"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://user:hunter2-pass@example.test/r.git",
    ]);
    f.plan.workspace = Some(repo.clone());
    let r = RecordingRunner::new();
    r.reply(LS, 0, &prepare(&f, "10.210.0.114/32", None));
    launch(&f, &r).unwrap();
    let build = lines(&r)
        .into_iter()
        .find(|l| l.starts_with("docker build") && !l.contains(" -f "))
        .or_else(|| {
            lines(&r)
                .into_iter()
                .find(|l| l.starts_with("docker build"))
        })
        .expect("the agent image is built");
    assert!(
        !build.ends_with(repo.as_str()),
        "the workspace itself is the build context: {build}"
    );
    let staged = f.state.agent_dir().join("smolmachines/workspace");
    assert!(build.contains(staged.as_str()), "{build}");
    assert_eq!(
        std::fs::read_to_string(staged.join("main.rs")).unwrap(),
        "fn main() {}\n"
    );
    let config = std::fs::read_to_string(staged.join(".git/config")).unwrap();
    for needle in ["extraheader", "c2VjcmV0LXRva2Vu", "helper", "hunter2-pass"] {
        assert!(!config.contains(needle), "{needle} in the copy:\n{config}");
    }
    assert!(config.contains("example.test/r.git"), "{config}");
}

#[test]
fn progress_reports_every_step_in_order_and_a_given_probe_is_not_repeated() {
    use bottle_core::backend::{Backend, Gvisor, Probe};
    let f = fixture("minimal");
    let r = RecordingRunner::new();
    r.reply(LS, 0, &prepare(&f, "10.210.0.114/32", None));
    let input = LaunchInput {
        plan: &f.plan,
        state: &f.state,
        wiring: &f.wiring,
    };
    let names: Vec<String> = backend()
        .render(input)
        .unwrap()
        .steps
        .into_iter()
        .map(|s| s.name)
        .collect();
    let seen = std::sync::Mutex::new(Vec::new());
    let ready = Probe::Ready {
        version: "smolvm test".into(),
        notes: Vec::new(),
        gvisor: Gvisor::NotApplicable,
    };
    backend()
        .launch_observed(
            input,
            &r,
            Some(&ready),
            &|i: usize, total: usize, name: &str, skipped: bool| {
                seen.lock()
                    .unwrap()
                    .push((i, total, name.to_owned(), skipped))
            },
        )
        .unwrap();
    let want: Vec<(usize, usize, String, bool)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i, names.len(), n.clone(), false))
        .collect();
    assert_eq!(seen.into_inner().unwrap(), want);
    // the caller's probe stood: no second probe (`smolvm --version`, a boot check)
    assert!(
        !lines(&r).iter().any(|l| l.contains("--version")),
        "{:#?}",
        lines(&r)
    );
    // without one, the launch probes first (and stops there when it fails)
    let r = RecordingRunner::new();
    r.reply("smolvm --version", 1, "");
    let err = backend().launch(input, &r).err().expect("unavailable");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(lines(&r), ["smolvm --version"]);
}
