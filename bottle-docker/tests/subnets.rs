//! Networks past docker's address pools (issue #19), against a fake engine
//! whose pools are exhausted: the retry argv (snapshot), a concurrent create
//! taking the chosen subnet first, bottle's range running full, failures
//! that are not about pools, and a whole launch (and its rollback) on
//! subnets from the range. The real engine: `tests/engine_subnets.rs`.

use std::sync::Mutex;

use bottle_core::backend::Backend;
use bottle_core::command::{failure, CommandRunner, CommandSpec, Output};
use bottle_core::{Error, RecordingRunner, Result};
use bottle_docker::subnet::{self, Ipv4Net, NetworkCreate, SubnetMode, SubnetSettings};
use bottle_docker::{DockerBackend, Rendered};

mod common;
use common::{input, Case};

/// The shell-basic fixture in slot `slot`.
fn case(slot: u32) -> Case {
    common::shell_basic(true, slot)
}

fn backend(c: &Case, settings: SubnetSettings) -> DockerBackend {
    common::backend(&c.root)
        .with_runsc(false)
        .with_subnets(settings)
}

fn rendered(c: &Case, settings: SubnetSettings) -> Rendered {
    backend(c, settings).rendered(input(c)).unwrap()
}

/// The rendered network create named `name` and what it carries.
fn network_step(r: &Rendered, name: &str) -> (CommandSpec, NetworkCreate) {
    let s = r
        .steps
        .iter()
        .find(|s| s.step.name == name)
        .unwrap_or_else(|| panic!("no step {name}"));
    let bottle_docker::render::Action::Network(n) = &s.action else {
        panic!("{name} is not a network create: {:?}", s.action)
    };
    (s.step.run.clone(), (**n).clone())
}

/// `/proc/net/route` of a host on 192.0.2.0/24 (addresses as its kernel
/// prints them: network-order bytes read as a native integer).
fn routes() -> String {
    let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
    format!(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         eth0\t{}\t{}\t0003\t0\t0\t0\t{}\t0\t0\t0\n\
         eth0\t{}\t{}\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
        hex([0, 0, 0, 0]),
        hex([192, 0, 2, 1]),
        hex([0, 0, 0, 0]),
        hex([192, 0, 2, 0]),
        hex([0, 0, 0, 0]),
        hex([255, 255, 255, 0]),
    )
}

const EXHAUSTED: &str = "Error response from daemon: could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network";
const OVERLAPS: &str =
    "Error response from daemon: Pool overlaps with other one on this address space";

/// A docker engine whose address pools are exhausted: `network create`
/// without `--subnet` fails as docker 20.10 does; with one it succeeds
/// unless an existing network overlaps it. `steal` creates with `--subnet`
/// lose to a concurrent launch, which takes that subnet first. Every
/// command is recorded.
struct Engine {
    rec: RecordingRunner,
    /// (name, subnet) of the engine's networks.
    nets: Mutex<Vec<(String, String)>>,
    steal: Mutex<usize>,
    routes: String,
    /// What a create without `--subnet` answers (`None`: it succeeds).
    first_answer: Option<&'static str>,
}

impl Engine {
    fn new(nets: &[(&str, &str)]) -> Self {
        Self {
            rec: RecordingRunner::new(),
            nets: Mutex::new(
                nets.iter()
                    .map(|(n, s)| (n.to_string(), s.to_string()))
                    .collect(),
            ),
            steal: Mutex::new(0),
            routes: routes(),
            first_answer: Some(EXHAUSTED),
        }
    }

    fn subnet_of(&self, name: &str) -> Option<String> {
        let nets = self.nets.lock().unwrap();
        nets.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone())
    }

    /// The network commands, one per line.
    fn network_transcript(&self) -> String {
        self.rec
            .calls()
            .iter()
            .map(|c| c.to_string())
            .filter(|l| l.starts_with("docker network") || l.starts_with("cat "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The engine's answer; `None`: the recording runner's (its scripted
    /// replies, else success).
    fn answer(&self, spec: &CommandSpec) -> Option<Output> {
        let ok = |stdout: String| Output {
            code: 0,
            stdout,
            stderr: String::new(),
        };
        let fail = |stderr: &str| Output {
            code: 1,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        };
        let a: Vec<&str> = spec.args.iter().map(String::as_str).collect();
        let line = spec.argv_line();
        if spec.program == "cat" {
            return Some(ok(self.routes.clone()));
        }
        if line.starts_with("docker network create") {
            let name = a.last().unwrap().to_string();
            let Some(i) = a.iter().position(|w| *w == "--subnet") else {
                return Some(match self.first_answer {
                    Some(e) => fail(e),
                    None => {
                        self.nets
                            .lock()
                            .unwrap()
                            .push((name, "172.18.0.0/16".into()));
                        ok(String::new())
                    }
                });
            };
            let want = Ipv4Net::parse(a[i + 1]).unwrap();
            let mut nets = self.nets.lock().unwrap();
            let mut steal = self.steal.lock().unwrap();
            if *steal > 0 {
                *steal -= 1;
                nets.push(("another-launch".into(), want.to_string()));
                return Some(fail(OVERLAPS));
            }
            if nets
                .iter()
                .any(|(_, s)| Ipv4Net::parse(s).unwrap().overlaps(&want))
            {
                return Some(fail(OVERLAPS));
            }
            nets.push((name, want.to_string()));
            return Some(ok(String::new()));
        }
        if line.starts_with("docker network ls --quiet") {
            let nets = self.nets.lock().unwrap();
            return Some(ok(nets.iter().map(|(n, _)| format!("{n}\n")).collect()));
        }
        if line.starts_with("docker network inspect --format") {
            let nets = self.nets.lock().unwrap();
            let out = a[4..]
                .iter()
                .filter_map(|n| nets.iter().find(|(m, _)| m == n))
                .map(|(_, s)| format!("{s} \n"))
                .collect();
            return Some(ok(out));
        }
        if line.starts_with("docker network rm") {
            self.nets.lock().unwrap().retain(|(n, _)| n != a[2]);
        }
        if line.starts_with("docker volume inspect") {
            return Some(fail("Error: No such volume"));
        }
        None
    }
}

impl CommandRunner for Engine {
    fn output(&self, spec: &CommandSpec) -> Result<Output> {
        let Some(out) = self.answer(spec) else {
            return self.rec.output(spec);
        };
        self.rec.output(&spec.clone().allow_failure())?;
        if !out.success() && !spec.allow_failure {
            return Err(failure(spec, &out));
        }
        Ok(out)
    }

    fn interactive(&self, spec: &CommandSpec) -> Result<i32> {
        Ok(self.output(&spec.clone().allow_failure())?.code)
    }
}

fn settings(mode: SubnetMode, pool: &str) -> SubnetSettings {
    SubnetSettings {
        mode,
        pool: Ipv4Net::parse(pool).unwrap(),
    }
}

/// The retry argv: the rendered create first, unchanged; docker's answer
/// that its pools are exhausted; the engine's subnets and the host's
/// routes read; the same create with `--subnet` before the name, on the
/// first free `/28` from the slot's. One concurrent create took it first
/// ("Pool overlaps"): read again, the next free one.
#[test]
fn an_exhausted_engine_gets_a_subnet_from_bottles_range() {
    let c = case(3);
    let r = rendered(&c, SubnetSettings::default());
    let (spec, net) = network_step(&r, "create internal network");
    assert_eq!(net.start, 6, "two subnets per slot: the internal one first");
    // slot 3 starts at the 7th /28 (10.211.0.96/28): an existing network
    // covers it and the next; a concurrent launch takes the one after
    let engine = Engine::new(&[
        ("bridge", "172.17.0.0/16"),
        ("someone-elses", "10.211.0.96/27"),
    ]);
    *engine.steal.lock().unwrap() = 1;
    subnet::create(&engine, &spec, &net).expect("created on bottle's range");
    let got = engine.subnet_of(&c.plan.names.internal_network).unwrap();
    assert_eq!(got, "10.211.0.144/28");
    assert_eq!(
        engine.subnet_of("another-launch").unwrap(),
        "10.211.0.128/28"
    );
    insta::with_settings!({filters => vec![
        (r"dev\.bottle\.home=[0-9a-f]{16}", "dev.bottle.home=[HOME]"),
    ]}, {
        insta::assert_snapshot!("exhausted_engine_retry_argv", engine.network_transcript());
    });
}

/// `always`: straight to bottle's range (docker's pools are never asked);
/// a route of this host (a LAN, a VPN) is never chosen.
#[test]
fn always_takes_bottles_range_and_keeps_off_the_hosts_routes() {
    let c = case(0);
    let r = rendered(&c, settings(SubnetMode::Always, "192.0.2.0/23"));
    let (spec, net) = network_step(&r, "create egress network");
    assert_eq!(net.start, 1);
    let engine = Engine::new(&[]);
    subnet::create(&engine, &spec, &net).unwrap();
    // 192.0.2.0/24 is eth0's route: the first /28 past it
    assert_eq!(
        engine.subnet_of(&c.plan.names.egress_network).unwrap(),
        "192.0.3.0/28"
    );
    let creates: Vec<String> = engine
        .rec
        .calls()
        .iter()
        .map(|c| c.argv_line())
        .filter(|l| l.starts_with("docker network create"))
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(creates[0].contains("--subnet 192.0.3.0/28"), "{creates:?}");
}

#[test]
fn a_full_range_is_a_clear_error_and_creates_nothing() {
    let c = case(0);
    let r = rendered(&c, settings(SubnetMode::Fallback, "10.99.0.0/27"));
    let (spec, net) = network_step(&r, "create internal network");
    let engine = Engine::new(&[("a", "10.99.0.0/28"), ("b", "10.99.0.16/28")]);
    let err = subnet::create(&engine, &spec, &net).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("10.99.0.0/27"), "{text}");
    assert!(
        text.contains("docker's own address pools are exhausted"),
        "{text}"
    );
    assert!(
        err.fix().unwrap().contains("BOTTLE_SUBNET_POOL="),
        "{err:?}"
    );
    insta::assert_snapshot!(
        "range_full_error",
        format!("{text}\nfix: {}", err.fix().unwrap())
    );
    assert!(
        !engine.rec.transcript().contains("--subnet"),
        "{}",
        engine.rec.transcript()
    );
    assert!(engine.subnet_of(&c.plan.names.internal_network).is_none());
}

#[test]
fn other_failures_and_mode_off_keep_dockers_answer() {
    let c = case(0);
    // not about pools: docker's own error, no retry
    let r = rendered(&c, SubnetSettings::default());
    let (spec, net) = network_step(&r, "create internal network");
    let mut engine = Engine::new(&[]);
    engine.first_answer = Some("Error response from daemon: network with name x already exists");
    let err = subnet::create(&engine, &spec, &net).unwrap_err();
    assert!(matches!(err, Error::CommandFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("already exists") || format!("{err:?}").contains("already exists")
    );
    assert!(!engine.rec.transcript().contains("--subnet"));
    // off: the exhausted pools fail the launch as before
    let r = rendered(&c, settings(SubnetMode::Off, subnet::DEFAULT_POOL));
    let (spec, net) = network_step(&r, "create internal network");
    let engine = Engine::new(&[]);
    let err = subnet::create(&engine, &spec, &net).unwrap_err();
    assert!(
        format!("{err:?}").contains("non-overlapping IPv4 address pool"),
        "{err:?}"
    );
    assert_eq!(engine.rec.calls().len(), 1, "{}", engine.rec.transcript());
    // a docker that answers: the rendered argv is all that runs
    let mut engine = Engine::new(&[]);
    engine.first_answer = None;
    subnet::create(&engine, &spec, &net).unwrap();
    assert_eq!(engine.rec.transcript(), spec.to_string());
}

/// Overlaps every time: a bounded number of tries, then a clear error.
#[test]
fn endless_races_end_after_a_bounded_number_of_tries() {
    let c = case(0);
    let r = rendered(&c, SubnetSettings::default());
    let (spec, net) = network_step(&r, "create internal network");
    let engine = Engine::new(&[]);
    *engine.steal.lock().unwrap() = usize::MAX;
    let err = subnet::create(&engine, &spec, &net).unwrap_err();
    assert!(err.to_string().contains("8 tries"), "{err}");
    assert!(err.fix().unwrap().contains("again"), "{err:?}");
    let tries = engine
        .rec
        .calls()
        .iter()
        .filter(|c| c.argv_line().contains("--subnet"))
        .count();
    assert_eq!(tries, subnet::ATTEMPTS);
}

/// A whole launch on an exhausted engine: both networks come up on
/// distinct subnets of the range; a later failure removes both.
#[test]
fn a_launch_on_an_exhausted_engine_uses_the_range_and_rolls_back() {
    let c = case(5);
    let be = backend(&c, SubnetSettings::default());
    let engine = Engine::new(&[("bridge", "172.17.0.0/16")]);
    be.launch_observed(input(&c), &engine, None, &|_, _, _, _| {})
        .expect("the launch succeeds");
    let n = &c.plan.names;
    let int = Ipv4Net::parse(&engine.subnet_of(&n.internal_network).unwrap()).unwrap();
    let egr = Ipv4Net::parse(&engine.subnet_of(&n.egress_network).unwrap()).unwrap();
    let pool = Ipv4Net::parse(subnet::DEFAULT_POOL).unwrap();
    for s in [int, egr] {
        assert_eq!(s.prefix(), 28);
        assert!(pool.overlaps(&s), "{s} outside {pool}");
    }
    assert!(!int.overlaps(&egr), "{int} {egr}");

    // the same launch failing at the agent's start: everything is undone
    let c = case(5);
    let be = backend(&c, SubnetSettings::default());
    let engine = Engine::new(&[("bridge", "172.17.0.0/16")]);
    engine
        .rec
        .reply("docker start bottle-main-dev-abc123-agent", 1, "");
    let err = be
        .launch_observed(input(&c), &engine, None, &|_, _, _, _| {})
        .err()
        .expect("the launch fails");
    assert!(matches!(err, Error::Launch { .. }), "{err:?}");
    assert!(
        engine.subnet_of(&n.internal_network).is_none(),
        "{}",
        engine.network_transcript()
    );
    assert!(
        engine.subnet_of(&n.egress_network).is_none(),
        "{}",
        engine.network_transcript()
    );
}
