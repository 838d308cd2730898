//! Bottle's own subnet range on the real engine (issue #19), without
//! exhausting the shared engine's address pools: `always` forces the
//! range (a small one of the test's own), a network the test makes first
//! occupies the bottle's first candidate subnet, and the bottle's two
//! networks come up on the next free `/28`s; the bundle (a placeholder that
//! answers on 8888) becomes ready and the agent reaches it by its alias on
//! the internal network; `remove_all` (what `bottle rm` and `gc` run)
//! removes them. The exhausted-pools path itself (docker's answer, the
//! retry argv, races): `tests/subnets.rs`.
//!
//! Without a docker engine reported ignored with the reason (failed with
//! `CI=true`): `bottle-test-gate`. Every address used is on networks this
//! test creates.

use std::collections::BTreeMap;
use std::fs;

use bottle_core::backend::{Backend, LaunchInput};
use bottle_core::plan::{NoPrompt, ResolveOptions};
use bottle_core::{resolve, DuctRunner, Home, Identity, Loader, Wiring};
use bottle_docker::subnet::{Ipv4Net, SubnetMode, SubnetSettings};
use bottle_docker::DockerBackend;
use bottle_test_gate::{run, trial, DOCKER};
use camino::{Utf8Path, Utf8PathBuf};

fn main() {
    run(vec![trial!(
        networks_come_up_on_the_next_free_subnets_of_bottles_range,
        &DOCKER
    )])
}

/// The test's range: four `/28`s, private, outside docker's default pools
/// and bottle's default range.
const RANGE: &str = "10.219.77.0/26";

fn sh(args: &[&str]) -> std::process::Output {
    duct::cmd("docker", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap()
}

fn out(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn labelled(id: &Identity) -> Vec<String> {
    let f = format!("label=dev.bottle.identity={id}");
    let mut v = Vec::new();
    for args in [
        vec!["ps", "-a", "--filter", &f, "--format", "{{.Names}}"],
        vec!["network", "ls", "--filter", &f, "--format", "{{.Name}}"],
        vec!["volume", "ls", "--filter", &f, "--format", "{{.Name}}"],
    ] {
        v.extend(out(&args).lines().map(str::to_owned));
    }
    v
}

/// Removes the test's own network and whatever of the bottle is left.
struct Cleanup {
    network: String,
    id: Identity,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = DockerBackend::default().remove_all(&self.id, false, &DuctRunner);
        let _ = sh(&["network", "rm", &self.network]);
    }
}

/// A stand-in for `bottle-sidecar`: `run` answers `bundle-ok` on 8888,
/// `health` succeeds once it does.
fn listening_sidecar(root: &Utf8Path) -> Utf8PathBuf {
    let p = root.join("bottle-sidecar");
    fs::write(
        &p,
        r#"#!/bin/sh
case "$1" in
  health) exec perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => "127.0.0.1:8888") or exit 1' ;;
  run) exec perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8888, Listen => 8, ReuseAddr => 1) or die "listen: $!"; while (my $c = $s->accept) { print $c "bundle-ok\n"; close $c }' ;;
  *) exit 2 ;;
esac
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn subnet_of(network: &str) -> Ipv4Net {
    let s = out(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        network,
    ]);
    Ipv4Net::parse(&s).unwrap_or_else(|| panic!("{network}: subnet {s:?}"))
}

fn networks_come_up_on_the_next_free_subnets_of_bottles_range() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().canonicalize().unwrap()).unwrap();
    fs::create_dir_all(root.join("bottles")).unwrap();
    fs::create_dir_all(root.join("agents")).unwrap();
    fs::write(
        root.join("bottles/dev.toml"),
        "runtime = \"runc\"\n[agent_provider]\ntemplate = \"shell\"\n",
    )
    .unwrap();
    fs::write(root.join("agents/sub.toml"), "bottle = \"dev\"\n").unwrap();
    let home = Home::new(&root);
    let (id, slot) = home.allocate("sub", "dev").unwrap();
    assert_eq!(
        slot, 0,
        "a fresh home's first slot: candidates 0 and 1 first"
    );
    let (a, b) = Loader::new(home.clone(), None).load("sub").unwrap();
    let plan = resolve(
        &a,
        &b,
        &ResolveOptions {
            identity: Some(id.clone()),
            slot,
            ..Default::default()
        },
        &BTreeMap::new(),
        &NoPrompt,
    )
    .unwrap();
    let state = home.state(&id);
    let range = Ipv4Net::parse(RANGE).unwrap();
    let first = Ipv4Net::parse("10.219.77.0/28").unwrap();

    // the test's own network on the first candidate
    let mine = format!("bottle-test-subnets-{}", std::process::id());
    let _cleanup = Cleanup {
        network: mine.clone(),
        id: id.clone(),
    };
    let _ = sh(&["network", "rm", &mine]);
    out(&[
        "network",
        "create",
        "--label",
        "dev.bottle.test=engine-subnets",
        "--subnet",
        &first.to_string(),
        &mine,
    ]);

    let be = DockerBackend::default()
        .with_sidecar_bin(listening_sidecar(&root))
        .with_subnets(SubnetSettings {
            mode: SubnetMode::Always,
            pool: range,
        });
    let wiring = Wiring {
        bundle_args: vec![
            "run".into(),
            "--config".into(),
            "/bottle/bundle.toml".into(),
        ],
        ..Default::default()
    };
    let running = be
        .launch(
            LaunchInput {
                plan: &plan,
                state: &state,
                wiring: &wiring,
            },
            &DuctRunner,
        )
        .expect("launch on bottle's range");
    let n = &plan.names;

    // the next two free /28s of the range, one each, whichever won a race
    let int = subnet_of(&n.internal_network);
    let egr = subnet_of(&n.egress_network);
    let mut got = [int.to_string(), egr.to_string()];
    got.sort();
    assert_eq!(got, ["10.219.77.16/28", "10.219.77.32/28"], "{int} {egr}");
    assert_eq!(subnet_of(&mine), first, "the test's network is untouched");
    // still internal, with no address of the host on its bridge
    let flags = out(&[
        "network",
        "inspect",
        "--format",
        "{{.Internal}} {{index .Options \"com.docker.network.bridge.inhibit_ipv4\"}}",
        &n.internal_network,
    ]);
    assert_eq!(flags, "true true");

    // the bundle holds an address of the internal subnet, and the agent
    // reaches it there by its alias
    let ip = out(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            n.internal_network
        ),
        &n.bundle,
    ]);
    assert!(
        int.contains(ip.parse().unwrap_or_else(|_| panic!("bundle ip {ip:?}"))),
        "bundle at {ip}, not in {int}"
    );
    let o = running
        .exec_output(
            &[
                "bash".into(),
                "-c".into(),
                "exec 3<>/dev/tcp/bundle/8888 && head -n 1 <&3; getent hosts bundle".into(),
            ],
            &DuctRunner,
        )
        .unwrap();
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("bundle-ok\n"), "{o:?}");
    assert!(o.stdout.contains(&ip), "{o:?}");

    // rm removes everything, and the subnets are free again
    drop(running);
    be.remove_all(&id, false, &DuctRunner).expect("rm");
    assert!(labelled(&id).is_empty(), "left: {:?}", labelled(&id));
    let still: Vec<String> = out(&["network", "ls", "--quiet"])
        .lines()
        .map(|id| {
            // another user's network may be gone by now: not an error
            let o = sh(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                id,
            ]);
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    assert!(
        !still
            .iter()
            .any(|s| s.contains("10.219.77.16/28") || s.contains("10.219.77.32/28")),
        "{still:?}"
    );
}
