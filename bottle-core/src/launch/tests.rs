//! The engine with a recording runner: order, concurrency, rollback,
//! interrupts, progress, keep-on-failure.

use super::*;
use crate::command::RecordingRunner;
use std::sync::{Arc, Mutex};

fn docker(args: &[&str]) -> CommandSpec {
    CommandSpec::new("docker").args(args.iter().copied())
}

/// `create <name>` steps, each after the previous, undone by `rm <name>`.
fn creates<'a>(names: &[&str]) -> Vec<LaunchStep<'a>> {
    names
        .iter()
        .map(|n| {
            LaunchStep::command(format!("create {n}"), docker(&["create", n]))
                .undo(docker(&["rm", n]))
        })
        .collect()
}

fn lines(r: &RecordingRunner) -> Vec<String> {
    r.calls().iter().map(|c| c.argv_line()).collect()
}

type Seen = Arc<Mutex<Vec<(usize, usize, String, bool)>>>;

fn observer() -> (Seen, impl Fn(usize, usize, &str, bool)) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (
        seen,
        move |i: usize, n: usize, name: &str, skipped: bool| {
            s.lock().unwrap().push((i, n, name.to_owned(), skipped))
        },
    )
}

#[test]
fn undo_stack_unwinds_lifo_and_collects_every_error() {
    let r = RecordingRunner::new();
    r.reply("docker network rm", 1, "");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut t = UndoStack::new(&r).keeping(false);
    t.push("network", docker(&["network", "rm", "n"]));
    let l = log.clone();
    t.push(
        "bundle",
        Undo::call(move |runner: &dyn CommandRunner| {
            l.lock().unwrap().push("bundle");
            runner.output(&docker(&["rm", "b"])).map(|_| ())
        }),
    );
    let l = log.clone();
    t.push(
        "agent",
        Undo::call(move |_: &dyn CommandRunner| {
            l.lock().unwrap().push("agent");
            Err(Error::other("agent stuck", "retry"))
        }),
    );
    assert_eq!(t.names(), ["network", "bundle", "agent"]);
    let errors = t.unwind();
    assert_eq!(*log.lock().unwrap(), ["agent", "bundle"]);
    assert_eq!(lines(&r), ["docker rm b", "docker network rm n"]);
    let names: Vec<_> = errors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["agent", "network"]);
    assert!(into_result(errors)
        .unwrap_err()
        .to_string()
        .contains("2 problem(s)"));
}

#[test]
fn undo_stack_unwinds_on_drop_but_not_after_disarm_or_when_keeping() {
    let r = RecordingRunner::new();
    {
        let mut t = UndoStack::new(&r).keeping(false);
        t.push("x", docker(&["rm", "x"]));
    }
    assert_eq!(lines(&r), ["docker rm x"]);
    let mut t = UndoStack::new(&r).keeping(false);
    t.push("y", docker(&["rm", "y"]));
    t.disarm();
    let mut t = UndoStack::new(&r).keeping(true);
    t.push("z", docker(&["rm", "z"]));
    assert!(t.unwind().is_empty());
    assert_eq!(lines(&r), ["docker rm x"], "disarmed and kept undos ran");
}

#[test]
fn a_failed_step_unwinds_the_earlier_ones_newest_first() {
    let r = RecordingRunner::new();
    r.reply("docker create c", 1, "");
    r.reply("docker rm a", 1, "");
    let (seen, progress) = observer();
    let err = Launch::sequential(creates(&["a", "b", "c", "d"]))
        .keeping(false)
        .run(&r, &progress)
        .unwrap_err();
    assert_eq!(
        lines(&r),
        [
            "docker create a",
            "docker create b",
            "docker create c",
            "docker rm b",
            "docker rm a"
        ]
    );
    let Error::Launch {
        step,
        source,
        cleanup,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(step, "create c");
    assert!(source.to_string().contains("docker create c"), "{source}");
    assert_eq!(cleanup.len(), 1);
    assert_eq!(cleanup[0].0, "create a");
    // every finished step, then the failing one as the last line
    let names: Vec<String> = seen.lock().unwrap().iter().map(|s| s.2.clone()).collect();
    assert_eq!(names, ["create a", "create b", "create c"]);
}

#[test]
fn a_failed_create_is_undone_when_asked() {
    let r = RecordingRunner::new();
    r.reply("docker create b", 1, "");
    let steps = vec![
        LaunchStep::command("create a", docker(&["create", "a"])).undo(docker(&["rm", "a"])),
        LaunchStep::command("create b", docker(&["create", "b"]))
            .undo(docker(&["rm", "b"]))
            .undo_if_failed(),
        LaunchStep::command("create c", docker(&["create", "c"])).undo(docker(&["rm", "c"])),
    ];
    Launch::sequential(steps)
        .keeping(false)
        .run(&r, &|_, _, _, _| {})
        .unwrap_err();
    assert_eq!(
        lines(&r),
        [
            "docker create a",
            "docker create b",
            "docker rm b",
            "docker rm a"
        ]
    );
}

#[test]
fn an_interrupt_after_step_k_unwinds_k_to_1() {
    for k in 1..=3 {
        let r = RecordingRunner::new();
        let guard = InterruptGuard::install();
        let names = ["a", "b", "c", "d"];
        let steps: Vec<LaunchStep<'_>> = creates(&names)
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if i + 1 == k {
                    // the step runs, then the interrupt lands
                    let spec = docker(&["create", names[i]]);
                    let g = &guard;
                    LaunchStep::new(format!("create {}", names[i]), move |cx| {
                        cx.runner.output(&spec)?;
                        g.raise();
                        Ok(Outcome::Done)
                    })
                    .undo(docker(&["rm", names[i]]))
                } else {
                    s
                }
            })
            .collect();
        let (seen, progress) = observer();
        let err = Launch::sequential(steps)
            .with_guard(&guard)
            .keeping(false)
            .run(&r, &progress)
            .unwrap_err();
        let mut want: Vec<String> = names[..k]
            .iter()
            .map(|n| format!("docker create {n}"))
            .collect();
        want.extend(names[..k].iter().rev().map(|n| format!("docker rm {n}")));
        assert_eq!(lines(&r), want, "interrupt after step {k}");
        assert!(
            matches!(&err, Error::Interrupted { step } if *step == format!("create {}", names[k])),
            "{err:?}"
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            k,
            "the finished steps are reported"
        );
    }
}

#[test]
fn progress_reports_each_step_in_order_even_when_a_later_one_finishes_first() {
    let r = RecordingRunner::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o0, o1, o2) = (order.clone(), order.clone(), order.clone());
    let steps = vec![
        // finishes only after step 1 did
        LaunchStep::new("slow", move |_| {
            rx.lock().unwrap().recv().unwrap();
            o0.lock().unwrap().push("slow");
            Ok(Outcome::Done)
        }),
        LaunchStep::new("fast", move |_| {
            o1.lock().unwrap().push("fast");
            tx.send(()).unwrap();
            Ok(Outcome::Skipped)
        }),
        LaunchStep::new("last", move |_| {
            o2.lock().unwrap().push("last");
            Ok(Outcome::Done)
        })
        .after([0, 1]),
    ];
    let (seen, progress) = observer();
    Launch::new(steps).run(&r, &progress).unwrap();
    assert_eq!(*order.lock().unwrap(), ["fast", "slow", "last"]);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, 3, "slow".to_owned(), false),
            (1, 3, "fast".to_owned(), true),
            (2, 3, "last".to_owned(), false)
        ]
    );
}

#[test]
fn a_step_starts_only_after_what_it_waits_for() {
    let r = RecordingRunner::new();
    let started = Arc::new(Mutex::new(Vec::new()));
    let step = |name: &'static str| {
        let s = started.clone();
        LaunchStep::new(name, move |_| {
            s.lock().unwrap().push(name);
            Ok(Outcome::Done)
        })
    };
    let steps = vec![
        step("base"),
        step("net").after([0]),
        step("vol").after([0]),
        step("container").after([1, 2]),
    ];
    Launch::new(steps).run(&r, &|_, _, _, _| {}).unwrap();
    let s = started.lock().unwrap();
    let pos = |n| s.iter().position(|x| *x == n).unwrap();
    assert_eq!(pos("base"), 0);
    assert!(pos("container") > pos("net") && pos("container") > pos("vol"));
}

#[test]
fn an_existing_resource_and_a_skipped_step_are_not_undone() {
    let r = RecordingRunner::new();
    let steps = vec![
        LaunchStep::new("volume", |_| Ok(Outcome::Existed)).undo(docker(&["volume", "rm", "v"])),
        LaunchStep::new("image", |_| Ok(Outcome::Skipped)).undo(docker(&["rmi", "i"])),
        LaunchStep::command("net", docker(&["network", "create", "n"]))
            .undo(docker(&["network", "rm", "n"])),
        LaunchStep::new("fails", |_| Err(Error::other("boom", "none"))),
    ];
    Launch::sequential(steps)
        .keeping(false)
        .run(&r, &|_, _, _, _| {})
        .unwrap_err();
    assert_eq!(
        lines(&r),
        ["docker network create n", "docker network rm n"]
    );
}

#[test]
fn a_panicking_step_fails_the_launch_and_unwinds() {
    let r = RecordingRunner::new();
    let mut steps = creates(&["a"]);
    steps.push(LaunchStep::new("explode", |_| panic!("step bug")));
    let err = Launch::sequential(steps)
        .keeping(false)
        .run(&r, &|_, _, _, _| {})
        .unwrap_err();
    assert!(err.to_string().contains("explode"), "{err}");
    assert_eq!(lines(&r), ["docker create a", "docker rm a"]);
}

#[test]
fn a_step_waiting_for_a_later_one_is_refused_before_anything_runs() {
    let r = RecordingRunner::new();
    let steps = vec![
        LaunchStep::command("a", docker(&["create", "a"])).after([1]),
        LaunchStep::command("b", docker(&["create", "b"])),
    ];
    let err = Launch::new(steps).run(&r, &|_, _, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("does not come before it"), "{err}");
    assert!(r.calls().is_empty());
}

#[test]
fn keeping_leaves_everything_and_marks_the_state_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(camino::Utf8PathBuf::from_path_buf(dir.path().join("s")).unwrap());
    state.create().unwrap();
    let r = RecordingRunner::new();
    r.reply("docker create b", 1, "");
    let err = Launch::sequential(creates(&["a", "b"]))
        .keeping(true)
        .preserve_on_keep(&state)
        .run(&r, &|_, _, _, _| {})
        .unwrap_err();
    assert!(matches!(err, Error::Launch { ref cleanup, .. } if cleanup.is_empty()));
    assert_eq!(lines(&r), ["docker create a", "docker create b"]);
    assert!(state.preserved());
    let note = std::fs::read_to_string(state.preserve_path()).unwrap();
    assert!(
        note.contains("create b") && note.contains("create a"),
        "{note}"
    );
    // a launch that is not kept leaves no mark
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::at(camino::Utf8PathBuf::from_path_buf(dir.path().join("s")).unwrap());
    state.create().unwrap();
    Launch::sequential(creates(&["a", "b"]))
        .keeping(false)
        .preserve_on_keep(&state)
        .run(&r, &|_, _, _, _| {})
        .unwrap_err();
    assert!(!state.preserved());
}

#[test]
fn a_successful_launch_undoes_nothing() {
    let r = RecordingRunner::new();
    let (seen, progress) = observer();
    Launch::sequential(creates(&["a", "b"]))
        .keeping(false)
        .run(&r, &progress)
        .unwrap();
    assert_eq!(lines(&r), ["docker create a", "docker create b"]);
    assert_eq!(seen.lock().unwrap().len(), 2);
}
