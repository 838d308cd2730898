//! Docker's launch on the core engine, with a recording runner: which
//! steps wait for which (a gated agent starts while the bundle comes up,
//! its command still only after the bundle answers), the gVisor probe's
//! cache, and a stale cached "gVisor works" failing closed.

use std::fs;

use bottle_core::backend::{Backend, Gvisor, Probe};
use bottle_core::plan::ResolveOptions;
use bottle_core::prepare::{AgentFile, Mount};
use bottle_core::{Error, RecordingRunner};
use bottle_docker::ProbeCache;
use camino::{Utf8Path, Utf8PathBuf};

mod common;
use common::{backend, input, Case};

/// The shell-basic fixture, its agent's secret env present or not, with an
/// agent file and the bundle's config mount.
fn case(secret_env: bool) -> Case {
    let mut c = common::shell_basic(secret_env, ResolveOptions::default().slot);
    let gitconfig = c.state.path().join("agent/gitconfig");
    fs::create_dir_all(gitconfig.parent().unwrap()).unwrap();
    fs::write(&gitconfig, "[user]\n\tname = bot\n").unwrap();
    c.wiring.agent_files = vec![AgentFile {
        host: gitconfig,
        guest: "~/.gitconfig".into(),
        mode: 0o644,
    }];
    c.wiring.bundle_mounts = vec![Mount {
        host: c.state.path().join("bundle.toml"),
        target: "/bottle/bundle.toml".into(),
        read_only: true,
    }];
    c
}

/// Step index by name prefix, and the dependencies of the rendered launch.
fn deps(c: &Case) -> (Vec<String>, Vec<Vec<usize>>) {
    let r = backend(&c.root)
        .with_runsc(true)
        .rendered(input(c))
        .unwrap();
    let names = r.steps.iter().map(|s| s.step.name.clone()).collect();
    (names, bottle_docker::launch::dependencies(&r.steps))
}

fn at(names: &[String], prefix: &str) -> usize {
    names
        .iter()
        .position(|n| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix}: {names:?}"))
}

#[test]
fn a_gated_agent_starts_while_the_bundle_comes_up_and_runs_only_after_it_answers() {
    let c = case(true);
    let (names, d) = deps(&c);
    let ready = at(&names, "wait for bundle readiness");
    let start = at(&names, "start agent");
    let open = at(&names, "hand the agent its secret env");
    let create = at(&names, "create agent container");
    let copy = at(&names, "copy agent files");
    // the agent's start does not wait for the bundle
    assert!(!d[start].contains(&ready), "{:?}", d[start]);
    assert!(d[start].contains(&create) && d[start].contains(&copy));
    // the handoff is the agent's exec-ready wait: no separate one
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("wait for agent exec-ready")),
        "{names:?}"
    );
    // nothing is created before the base check
    assert!(d[start].contains(&0));
    // the gate opens only after everything, the bundle's readiness included
    assert_eq!(d[open], (0..open).collect::<Vec<_>>());
}

#[test]
fn an_agent_without_a_gate_starts_only_once_the_bundle_answers() {
    let c = case(false);
    let (names, d) = deps(&c);
    assert!(
        !names.iter().any(|n| n.starts_with("hand the agent")),
        "{names:?}"
    );
    let ready = at(&names, "wait for bundle readiness");
    let start = at(&names, "start agent");
    let exec_ready = at(&names, "wait for agent exec-ready");
    assert!(d[start].contains(&ready), "{:?}", d[start]);
    assert_eq!(d[exec_ready], (0..exec_ready).collect::<Vec<_>>());
}

/// A runsc binary the engine "has registered" (a temp file: the cache key
/// stats it), and the `docker info` runtimes naming it.
fn runsc(root: &Utf8Path) -> String {
    let bin = root.join("runsc");
    fs::write(&bin, b"runsc").unwrap();
    format!(r#"{{"runc":{{"path":"runc"}},"runsc":{{"path":"{bin}"}}}}"#)
}

fn engine(runtimes: &str, runsc_runs: bool) -> RecordingRunner {
    engine_version("28.1.1", runtimes, runsc_runs)
}

fn engine_version(version: &str, runtimes: &str, runsc_runs: bool) -> RecordingRunner {
    let r = RecordingRunner::new();
    r.reply("docker version", 0, &format!("{version}\n"));
    r.reply("docker image inspect", 0, "sha256:x\n");
    r.reply("docker info --format '{{.ID}}'", 0, "ABCD:EFGH:IJKL\n");
    r.reply("docker info --format '{{json .Runtimes}}'", 0, runtimes);
    r.reply(
        "docker run --rm --runtime runsc",
        if runsc_runs { 0 } else { 125 },
        "",
    );
    r
}

fn test_containers(r: &RecordingRunner) -> usize {
    r.calls()
        .iter()
        .filter(|c| c.argv_line().starts_with("docker run --rm --runtime runsc"))
        .count()
}

#[test]
fn a_gvisor_that_ran_is_cached_for_the_same_engine_and_runsc_only() {
    let c = case(true);
    let runtimes = runsc(&c.root);
    let cache = ProbeCache::at(c.root.join("cache/docker-probe.json"));
    let probe = |r: &RecordingRunner| {
        let be = backend(&c.root).with_probe_cache(cache.clone());
        let p = be.probe(r);
        (be, p)
    };
    // first: a test container runs, and its success is remembered
    let r = engine(&runtimes, true);
    let (be, p) = probe(&r);
    assert_eq!(p.gvisor(), Some(&Gvisor::Available));
    assert_eq!(test_containers(&r), 1);
    assert!(!be.gvisor_cached());
    // second: same engine, same runsc: no test container
    let r = engine(&runtimes, true);
    let (be, p) = probe(&r);
    assert_eq!(p.gvisor(), Some(&Gvisor::Available));
    assert_eq!(test_containers(&r), 0, "{}", r.transcript());
    assert!(be.gvisor_cached());
    let Probe::Ready { notes, .. } = &p else {
        panic!("{p:?}")
    };
    assert!(notes.iter().any(|n| n.contains("reused")), "{notes:?}");
    // another engine version: probe again, and a failure is not cached
    let r = engine_version("28.2.0", &runtimes, false);
    let (_, p) = probe(&r);
    assert!(!p.gvisor().unwrap().is_available());
    assert_eq!(test_containers(&r), 1);
    // the failure dropped the entry: the old engine probes again too
    let r = engine(&runtimes, false);
    let (_, p) = probe(&r);
    assert!(
        !p.gvisor().unwrap().is_available(),
        "a stale cache answered"
    );
    assert_eq!(test_containers(&r), 1);
}

#[test]
fn a_stale_cached_gvisor_fails_closed_and_is_forgotten() {
    let c = case(true);
    let runtimes = runsc(&c.root);
    let cache = ProbeCache::at(c.root.join("cache/docker-probe.json"));
    // an earlier probe found gVisor working
    let be = backend(&c.root).with_probe_cache(cache.clone());
    be.probe(&engine(&runtimes, true));
    // now runsc is broken: the cached probe says it works, the agent's
    // start fails under it
    let r = engine(&runtimes, false);
    r.reply("docker start bottle-main-dev-abc123-agent", 1, "");
    r.reply("docker volume inspect", 1, "");
    let be = backend(&c.root).with_probe_cache(cache.clone());
    let probe = be.probe(&r);
    assert!(be.gvisor_cached());
    assert_eq!(be.runtime_lines(&c.plan).0, "runsc");
    let err = be
        .launch_observed(input(&c), &r, Some(&probe), &|_, _, _, _| {})
        .err()
        .expect("the launch fails");
    let text = err.to_string();
    let Error::Launch { step, source, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(step, "start agent");
    assert!(
        source.to_string().contains("cached")
            && source.to_string().contains("fresh test container fails"),
        "{source}"
    );
    assert!(err.fix().unwrap().contains("bottle start` again"), "{text}");
    // a fresh test container ran, everything was rolled back, and the
    // next probe does not trust the cache
    assert_eq!(test_containers(&r), 1, "{}", r.transcript());
    assert!(r
        .transcript()
        .contains("docker rm --force --volumes bottle-main-dev-abc123-agent"));
    let next = backend(&c.root).with_probe_cache(cache);
    let r = engine(&runtimes, false);
    assert!(!next.probe(&r).gvisor().unwrap().is_available());
    assert_eq!(test_containers(&r), 1);
    assert_eq!(next.runtime_lines(&c.plan).0, "runc");
    assert!(next.runtime_lines(&c.plan).1[0].starts_with("WARNING"));
}

#[test]
fn a_failure_after_a_fresh_test_container_does_not_probe_again() {
    let c = case(true);
    let runtimes = runsc(&c.root);
    let r = engine(&runtimes, true);
    r.reply("docker start bottle-main-dev-abc123-agent", 1, "");
    let be = backend(&c.root);
    let probe = be.probe(&r);
    let err = be
        .launch_observed(input(&c), &r, Some(&probe), &|_, _, _, _| {})
        .err()
        .expect("the launch fails");
    assert!(!err.to_string().contains("cached"), "{err}");
    assert_eq!(test_containers(&r), 1);
}

/// A fake engine whose bundle, once started, writes its readiness marker
/// (as `bottle-sidecar run` does once every daemon listens, into the
/// state's `run/` dir mounted read-write).
struct BundleWritesMarker {
    engine: RecordingRunner,
    start_bundle: String,
    marker: Option<Utf8PathBuf>,
}

impl bottle_core::command::CommandRunner for BundleWritesMarker {
    fn output(
        &self,
        spec: &bottle_core::command::CommandSpec,
    ) -> bottle_core::Result<bottle_core::command::Output> {
        let out = self.engine.output(spec);
        if spec.argv_line() == self.start_bundle {
            if let Some(m) = &self.marker {
                fs::write(m, "ready 1\n").unwrap();
            }
        }
        out
    }
    fn interactive(&self, spec: &bottle_core::command::CommandSpec) -> bottle_core::Result<i32> {
        self.engine.interactive(spec)
    }
}

fn with_run_dir(c: &mut Case) {
    let run = c.state.run_dir();
    fs::create_dir_all(&run).unwrap();
    c.wiring.bundle_mounts.push(Mount {
        host: run,
        target: "/bottle/run".into(),
        read_only: false,
    });
}

fn health_probes(r: &RecordingRunner, bundle: &str) -> usize {
    r.calls()
        .iter()
        .filter(|c| {
            let l = c.argv_line();
            l.starts_with(&format!("docker exec {bundle} ")) && l.contains(" health ")
        })
        .count()
}

#[test]
fn the_bundle_readiness_marker_ends_the_wait_without_a_docker_exec() {
    let mut c = case(true);
    with_run_dir(&mut c);
    let bundle = c.plan.names.bundle.clone();
    let engine = RecordingRunner::new();
    engine.reply("docker image inspect", 0, "sha256:x\n");
    // the in-bundle health check never answers: only the marker can
    engine.reply(&format!("docker exec {bundle} "), 1, "");
    engine.reply("docker inspect --format '{{.State.Running}}'", 0, "true\n");
    let runner = BundleWritesMarker {
        engine,
        start_bundle: format!("docker start {bundle}"),
        marker: Some(c.state.bundle_ready_path()),
    };
    backend(&c.root)
        .with_runsc(false)
        .launch(input(&c), &runner)
        .expect("the marker answers for the bundle");
    assert_eq!(
        health_probes(&runner.engine, &bundle),
        0,
        "{}",
        runner.engine.transcript()
    );
}

#[test]
fn a_marker_left_by_an_earlier_run_does_not_answer_for_the_new_bundle() {
    let mut c = case(true);
    with_run_dir(&mut c);
    let bundle = c.plan.names.bundle.clone();
    fs::write(c.state.bundle_ready_path(), "ready 7\n").unwrap();
    let engine = RecordingRunner::new();
    engine.reply("docker image inspect", 0, "sha256:x\n");
    // this bundle never writes a marker and never answers, then exits
    engine.reply(&format!("docker exec {bundle} "), 1, "");
    engine.reply("docker inspect --format '{{.State.Running}}'", 0, "false\n");
    let runner = BundleWritesMarker {
        engine,
        start_bundle: format!("docker start {bundle}"),
        marker: None,
    };
    let err = backend(&c.root)
        .with_runsc(false)
        .launch(input(&c), &runner)
        .err()
        .expect("a stale marker must not make a dead bundle ready");
    assert!(
        err.to_string().contains("exited before it was ready"),
        "{err}"
    );
    assert!(health_probes(&runner.engine, &bundle) >= 1);
    assert!(!c.state.bundle_ready_path().exists());
}

/// With the state's `run/` mounted (as prepare does), the agent's files and
/// its secret env file are copied in before it starts, its command waits
/// for the bundle's readiness marker itself (read-only `/run/bottle`), and
/// no `docker exec` hands anything over: the agent starts alongside the
/// bundle and the launch ends once both are up.
#[test]
fn an_agent_waiting_for_the_bundle_marker_gets_its_secret_env_before_it_starts() {
    let mut c = case(true);
    with_run_dir(&mut c);
    let r = backend(&c.root)
        .with_runsc(true)
        .rendered(input(&c))
        .unwrap();
    let names: Vec<String> = r.steps.iter().map(|s| s.step.name.clone()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("hand the agent") || n.starts_with("wait for agent exec-ready")),
        "{names:?}"
    );
    let d = bottle_docker::launch::dependencies(&r.steps);
    let start = at(&names, "start agent");
    let ready = at(&names, "wait for bundle readiness");
    let copy = at(&names, "copy agent files");
    assert!(!d[start].contains(&ready), "{:?}", d[start]);
    assert!(d[start].contains(&copy), "{:?}", d[start]);
    assert_eq!(
        d[ready],
        (0..ready).collect::<Vec<_>>(),
        "the launch ends with both up"
    );
    let create = &r.steps[at(&names, "create agent container")].step.run;
    let line = create.argv_line();
    let mount = format!(
        "type=bind,source={},target=/run/bottle,readonly",
        c.state.run_dir()
    );
    assert!(create.args.contains(&mount), "{line}");
    assert!(line.contains("/run/bottle/bundle.ready"), "{line}");
    // the env file travels in the archive, redacted wherever it is shown
    let copy_run = &r.steps[copy].step.run;
    let Some(bottle_core::command::Stdin::SecretBytes(archive)) = &copy_run.stdin else {
        panic!("the archive holding the env file is not secret stdin: {copy_run}");
    };
    let held = "host-env-SECRET-0005";
    let shown = format!(
        "{copy_run} {copy_run:?} {}",
        serde_json::to_string(copy_run).unwrap()
    );
    assert!(!shown.contains(held), "{shown}");
    assert!(copy_run.secrets().iter().any(|s| s.expose().contains(held)));
    let tar = c.root.join("files.tar");
    fs::write(&tar, archive.expose()).unwrap();
    let list = duct::cmd!("tar", "-tvf", tar.as_str()).read().unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("-rw------- 1000/1000") && l.ends_with(" tmp/.bottle-env")),
        "{list}"
    );
    let text = duct::cmd!("tar", "-xOf", tar.as_str(), "tmp/.bottle-env")
        .read()
        .unwrap();
    assert!(
        text.contains(&format!("'{held}'")),
        "the env file holds the value"
    );
}
