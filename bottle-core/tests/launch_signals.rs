//! A real SIGINT/SIGTERM/SIGHUP during a launch unwinds it instead of
//! killing the process, and the dispositions are restored afterwards.
//! Its own test binary: the signal reaches the whole process, so no other
//! launch may run beside it.

use bottle_core::command::{CommandSpec, RecordingRunner};
use bottle_core::{Error, Launch, LaunchStep, Outcome};

fn disposition(sig: libc::c_int) -> libc::sighandler_t {
    // SAFETY: queries the current disposition only.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

#[test]
fn a_signal_mid_launch_unwinds_and_the_default_comes_back() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let before = disposition(sig);
        let r = RecordingRunner::new();
        let steps = vec![
            LaunchStep::command("create a", CommandSpec::new("docker").args(["create", "a"]))
                .undo(CommandSpec::new("docker").args(["rm", "a"])),
            LaunchStep::new("create b", move |cx| {
                cx.runner
                    .output(&CommandSpec::new("docker").args(["create", "b"]))?;
                // SAFETY: raise(3) to this process; the launch's guard is
                // installed, so the signal only marks it interrupted.
                unsafe {
                    libc::raise(sig);
                }
                Ok(Outcome::Done)
            })
            .undo(CommandSpec::new("docker").args(["rm", "b"])),
            LaunchStep::command("create c", CommandSpec::new("docker").args(["create", "c"])),
        ];
        let err = Launch::sequential(steps)
            .keeping(false)
            .run(&r, &|_, _, _, _| {})
            .unwrap_err();
        assert!(
            matches!(&err, Error::Interrupted { step } if step == "create c"),
            "signal {sig}: {err:?}"
        );
        let lines: Vec<String> = r.calls().iter().map(|c| c.argv_line()).collect();
        assert_eq!(
            lines,
            [
                "docker create a",
                "docker create b",
                "docker rm b",
                "docker rm a"
            ],
            "signal {sig}"
        );
        assert_eq!(disposition(sig), before, "signal {sig}: not restored");
    }
}
