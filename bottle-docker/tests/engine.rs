//! The docker backend against the real engine, with a placeholder bundle (a
//! shell script standing in for `bottle-sidecar`: `run` idles, `health`
//! succeeds) so the isolation the backend itself provides is tested apart
//! from the sidecars: network reachability, DNS, identity/capabilities,
//! agent files and CA trust, secrets, stop/resume/gc.
//!
//! Without a docker engine each test is reported ignored with the reason
//! (failed with `CI=true`): `bottle-test-gate`.
//! Every target is a container or listener this test starts.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;

use bottle_core::backend::{Backend, LaunchInput, Running};
use bottle_core::plan::{NoPrompt, ResolveOptions};
use bottle_core::prepare::{AgentFile, Mount, AGENT_CA_PATH};
use bottle_core::{resolve, BottlePlan, CommandSpec, DuctRunner, Home, Identity, Loader, Wiring};
use bottle_docker::DockerBackend;
use bottle_test_gate::{run, trial, DOCKER};
use camino::{Utf8Path, Utf8PathBuf};

fn main() {
    run(vec![
        trial!(isolated_agent_lifecycle, &DOCKER),
        trial!(failed_launch_rolls_back_everything, &DOCKER),
        trial!(
            dockerfile_agent_secret_env_stays_out_of_docker_inspect,
            &DOCKER
        ),
    ])
}

const TOKEN: &str = "tok-engine-SECRET-7f3a9c";
/// A secret env value of the agent (`${ENGINE_DB}`).
const DB_SECRET: &str = "db-engine-SECRET-41c2e9";
const SSHD_IMAGE: &str = "bottle-test-sshd:bookworm";
const BASE: &str = bottle_core::plan::DEFAULT_BASE_IMAGE;

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

struct Fixture {
    _dir: tempfile::TempDir,
    root: Utf8PathBuf,
    plan: BottlePlan,
    state: bottle_core::StateDir,
    wiring: Wiring,
}

fn fixture() -> Fixture {
    fixture_with(
        "runtime = \"runc\"\n[agent_provider]\ntemplate = \"shell\"\n\n[[egress.routes]]\nhost = \"api.test\"\nauth = { scheme = \"bearer\", token = \"${ENGINE_TOKEN}\" }\n\n[resources]\ncpus = 1.0\nmemory = \"512MiB\"\npids = 128\n",
        true,
        &[],
    )
}

fn fixture_with(bottle: &str, copy_cwd: bool, files: &[(&str, String)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().canonicalize().unwrap()).unwrap();
    fs::create_dir_all(root.join("bottles")).unwrap();
    fs::create_dir_all(root.join("agents")).unwrap();
    fs::write(root.join("bottles/dev.toml"), bottle).unwrap();
    for (rel, text) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fs::write(root.join("agents/eng.toml"), "bottle = \"dev\"\n").unwrap();
    let ws = root.join("ws");
    fs::create_dir_all(&ws).unwrap();
    fs::write(ws.join("README.md"), "workspace copy\n").unwrap();
    fs::write(ws.join(".bottleignore"), "secret.txt\n").unwrap();
    fs::write(ws.join("secret.txt"), "not for the agent\n").unwrap();

    let home = Home::new(&root);
    let (id, slot) = home.allocate("eng", "dev").unwrap();
    let loader = Loader::new(home.clone(), None);
    let (a, b) = loader.load("eng").unwrap();
    let env = BTreeMap::from([
        ("ENGINE_TOKEN".to_owned(), TOKEN.to_owned()),
        ("ENGINE_DB".to_owned(), DB_SECRET.to_owned()),
    ]);
    let plan = resolve(
        &a,
        &b,
        &ResolveOptions {
            cwd: copy_cwd.then_some(ws),
            identity: Some(id.clone()),
            slot,
            ..Default::default()
        },
        &env,
        &NoPrompt,
    )
    .unwrap();
    let state = home.state(&id);
    // What the host-side Prepare would write: the held token as a file,
    // a CA cert and a git config for the agent.
    let secrets = state.secrets_dir();
    fs::create_dir_all(&secrets).unwrap();
    fs::write(secrets.join("route-api.test"), TOKEN).unwrap();
    let ca = state.ca_dir().join("ca.pem");
    fs::create_dir_all(ca.parent().unwrap()).unwrap();
    fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nbottle-test-ca\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let gitconfig = state.agent_dir().join("gitconfig");
    fs::create_dir_all(gitconfig.parent().unwrap()).unwrap();
    fs::write(&gitconfig, "[user]\n\tname = engine test\n").unwrap();
    let wiring = Wiring {
        bundle_mounts: vec![Mount {
            host: secrets,
            target: "/bottle/secrets".into(),
            read_only: true,
        }],
        bundle_args: vec![
            "run".into(),
            "--config".into(),
            "/bottle/bundle.toml".into(),
        ],
        agent_env: BTreeMap::new(),
        agent_secret_env: BTreeMap::new(),
        agent_files: vec![
            AgentFile {
                host: ca,
                guest: AGENT_CA_PATH.into(),
                mode: 0o644,
            },
            AgentFile {
                host: gitconfig,
                guest: "~/.gitconfig".into(),
                mode: 0o600,
            },
        ],
        ports: vec![8888],
    };
    Fixture {
        _dir: dir,
        root,
        plan,
        state,
        wiring,
    }
}

fn placeholder_sidecar(root: &Utf8Path) -> Utf8PathBuf {
    let p = root.join("bottle-sidecar");
    fs::write(
        &p,
        "#!/bin/sh\ncase \"$1\" in\n  health) exit 0 ;;\n  run) exec sleep infinity ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
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

struct Cleanup(Vec<String>, Option<Identity>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = sh(&["rm", "-f", c]);
        }
        if let Some(id) = &self.1 {
            let _ = DockerBackend::default().remove_all(id, false, &DuctRunner);
        }
    }
}

fn agent_sh(r: &dyn Running, script: &str) -> (i32, String) {
    let o = r
        .exec_output(&["bash".into(), "-c".into(), script.into()], &DuctRunner)
        .unwrap();
    (o.code, format!("{}{}", o.stdout, o.stderr))
}

fn isolated_agent_lifecycle() {
    let fx = fixture();
    let id = fx.plan.identity.clone();
    let mut cleanup = Cleanup(Vec::new(), Some(id.clone()));
    let be = DockerBackend::default().with_sidecar_bin(placeholder_sidecar(&fx.root));
    let input = LaunchInput {
        plan: &fx.plan,
        state: &fx.state,
        wiring: &fx.wiring,
    };
    let t0 = std::time::Instant::now();
    let running = be.launch(input, &DuctRunner).expect("launch");
    eprintln!("launch took {:?}", t0.elapsed());
    let n = &fx.plan.names;

    // Identity, capabilities, limits.
    let (_, who) = agent_sh(&*running, "id -u; id -g; grep CapEff /proc/self/status; cat /proc/sys/net/ipv6/conf/all/disable_ipv6; pwd");
    let lines: Vec<&str> = who.lines().collect();
    assert_eq!(lines[0], "1000", "{who}");
    assert_eq!(lines[1], "1000", "{who}");
    assert!(lines[2].ends_with("0000000000000000"), "caps: {who}");
    assert_eq!(lines[3], "1", "ipv6 must be off: {who}");
    assert_eq!(lines[4], "/home/agent/workspace");
    let (code, _) = agent_sh(&*running, "sudo true || su -c true");
    assert_ne!(code, 0);
    let insp = out(&["inspect", "--format", "{{.HostConfig.PidsLimit}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.SecurityOpt}} {{.HostConfig.CapDrop}}", &n.agent]);
    assert_eq!(insp, "128 536870912 1000000000 [no-new-privileges] [ALL]");
    // The bundle has memory and process limits too (issue 13.8).
    let binsp = out(&[
        "inspect",
        "--format",
        "{{.HostConfig.PidsLimit}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
        &n.bundle,
    ]);
    let l = bottle_docker::BundleLimits::default();
    assert_eq!(
        binsp,
        format!("{} {} {}", l.pids, l.memory_bytes, l.memory_bytes)
    );

    // Workspace copy (respecting .bottleignore), agent files and CA trust.
    let (code, ws) = agent_sh(&*running, "cat README.md; test -e secret.txt && echo LEAK; stat -c '%u %a' ~/.gitconfig README.md; cat /etc/ssl/certs/ca-certificates.crt; stat -c '%u' /etc/ssl/certs/ca-certificates.crt; echo $HTTPS_PROXY $NO_PROXY $SSL_CERT_FILE");
    assert_eq!(code, 0, "{ws}");
    assert!(ws.contains("workspace copy"), "{ws}");
    assert!(!ws.contains("LEAK"), "{ws}");
    assert!(ws.contains("1000 600\n1000 644"), "{ws}");
    assert!(ws.contains("bottle-test-ca"), "{ws}");
    assert!(
        ws.contains(&format!("http://bundle:8888 bundle {AGENT_CA_PATH}")),
        "{ws}"
    );

    // Network: the bundle answers by name; nothing else is reachable.
    let (code, dns) = agent_sh(&*running, "getent hosts bundle");
    assert_eq!(code, 0, "bundle must resolve: {dns}");

    // A live upstream (sshd) on the bundle's egress network.
    let upstream = format!("bottle-test-upstream-{id}");
    cleanup.0.push(upstream.clone());
    out(&[
        "run",
        "-d",
        "--name",
        &upstream,
        "--network",
        &n.egress_network,
        "--network-alias",
        "upstream.test",
        SSHD_IMAGE,
        "bash",
        "-c",
        "mkdir -p /run/sshd && ssh-keygen -A >/dev/null && exec /usr/sbin/sshd -D -e",
    ]);
    let up_ip = out(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &upstream,
    ]);
    // A listener on the host, reached via the egress bridge's gateway.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let egress_gw = out(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &n.egress_network,
    ]);
    let int_gw = out(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &n.internal_network,
    ]);
    // The internal network's gateway is not an address of the host (docker
    // still routes to it; nothing answers).
    let host_addrs = duct::cmd!("ip", "-o", "-4", "addr")
        .read()
        .unwrap_or_default();
    assert!(
        !host_addrs.contains(&format!(" {int_gw}/")),
        "host has the internal gateway address: {host_addrs}"
    );
    // Positive controls from the bundle: the targets are live.
    let bundle_probe = |script: &str| {
        sh(&["exec", &n.bundle, "bash", "-c", script])
            .status
            .success()
    };
    let wait_sshd = format!("for i in $(seq 50); do (echo > /dev/tcp/{up_ip}/22) 2>/dev/null && exit 0; sleep 0.1; done; exit 1");
    assert!(bundle_probe(&wait_sshd), "upstream sshd not live");
    assert!(
        bundle_probe("getent hosts upstream.test"),
        "bundle resolves upstream"
    );
    assert!(
        bundle_probe(&format!(
            "timeout 3 bash -c 'echo > /dev/tcp/{egress_gw}/{port}'"
        )),
        "host listener not live via egress gw"
    );
    // From the agent, every one of them fails.
    for (what, script) in [
        (
            "upstream by IP",
            format!("timeout 3 bash -c 'echo > /dev/tcp/{up_ip}/22'"),
        ),
        (
            "host via egress gateway",
            format!("timeout 3 bash -c 'echo > /dev/tcp/{egress_gw}/{port}'"),
        ),
        (
            "host via internal gateway",
            format!("timeout 3 bash -c 'echo > /dev/tcp/{int_gw}/{port}'"),
        ),
        (
            "upstream by name",
            "timeout 10 getent hosts upstream.test".to_owned(),
        ),
        (
            "upstream container name",
            format!("timeout 10 getent hosts {upstream}"),
        ),
    ] {
        let (code, o) = agent_sh(&*running, &script);
        assert_ne!(code, 0, "{what} reachable from the agent: {o}");
    }

    dns_is_forwarded_nowhere(&*running, n, &mut cleanup);

    eprintln!("network checks done at {:?}", t0.elapsed());
    // The held token: in the bundle (read-only), nowhere in the agent.
    assert!(bundle_probe(&format!(
        "test \"$(cat /bottle/secrets/route-api.test)\" = {TOKEN}"
    )));
    assert!(
        !bundle_probe("echo x > /bottle/secrets/route-api.test"),
        "secrets mount writable"
    );
    let inspect = out(&["inspect", &n.agent]);
    assert!(
        !inspect.contains(TOKEN),
        "token in docker inspect of the agent"
    );
    let (_, dump) = agent_sh(
        &*running,
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'",
    );
    assert!(dump.contains("HTTPS_PROXY"), "dump did not run: {dump}");
    assert!(!dump.contains(TOKEN), "token in the agent's env or /proc");
    // Search the filesystem without the token on the searcher's own argv
    // until grep runs (it is split in two).
    let (half1, half2) = TOKEN.split_at(8);
    let (code, hits) = agent_sh(
        &*running,
        &format!("A='{half1}'; B='{half2}'; grep -rIl -e \"$A$B\" /home /tmp /etc /var /root /run /opt /srv /mnt /usr/local 2>/dev/null"),
    );
    assert!(
        code != 0 && hits.trim().is_empty(),
        "token found in agent files: {hits}"
    );

    eprintln!("secret checks done at {:?}", t0.elapsed());
    // Stop: nothing but the home volume is left; the handle agrees.
    let (code, _) = agent_sh(&*running, "echo kept > ~/note.txt");
    assert_eq!(code, 0);
    running.stop(&DuctRunner).unwrap();
    running.stop(&DuctRunner).unwrap(); // twice is fine
    assert_eq!(labelled(&id), vec![n.home_volume.clone()]);
    assert_eq!(
        running.health(&DuctRunner).unwrap(),
        bottle_core::Health::Stopped
    );

    // Resume: same plan, the home volume comes back with its content; the
    // warm start builds nothing.
    let t1 = std::time::Instant::now();
    let again = be.launch(input, &DuctRunner).expect("resume");
    eprintln!("warm relaunch took {:?}", t1.elapsed());
    let (_, note) = agent_sh(&*again, "cat ~/note.txt");
    assert_eq!(note.trim(), "kept");
    assert_eq!(
        again.health(&DuctRunner).unwrap(),
        bottle_core::Health::Running
    );

    // gc view and full removal.
    let res = be.labelled(&DuctRunner).unwrap();
    assert!(res
        .iter()
        .any(|r| r.kind == "network" && r.identity == id.as_str()));
    be.remove_all(&id, false, &DuctRunner).unwrap();
    be.remove_all(&id, false, &DuctRunner).unwrap();
    assert!(labelled(&id).is_empty(), "left: {:?}", labelled(&id));
    drop(listener);
}

fn failed_launch_rolls_back_everything() {
    let fx = fixture();
    let id = fx.plan.identity.clone();
    let _cleanup = Cleanup(Vec::new(), Some(id.clone()));
    // A bundle whose health never passes and which exits at once.
    let p = fx.root.join("bottle-sidecar");
    fs::write(&p, "#!/bin/sh\necho 'bundle: config invalid' >&2\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    let be = DockerBackend::default().with_sidecar_bin(p);
    let err = be
        .launch(
            LaunchInput {
                plan: &fx.plan,
                state: &fx.state,
                wiring: &fx.wiring,
            },
            &DuctRunner,
        )
        .err()
        .expect("launch must fail");
    let text = err.to_string();
    assert!(text.contains("wait for bundle readiness"), "{text}");
    assert!(text.contains("config invalid"), "{text}");
    assert!(labelled(&id).is_empty(), "left behind: {:?}", labelled(&id));
    // Nothing of the agent was created at all (fail closed).
    let o = sh(&["inspect", &fx.plan.names.agent]);
    assert!(!o.status.success());
    let _ = CommandSpec::new("true");
}

/// A DNS server that records every query it gets (UDP and TCP) as
/// `QUERY <proto> <name>` lines on stdout and answers NXDOMAIN.
const DNS_RECORDER: &str = r#"use IO::Socket::INET; use IO::Select;
$| = 1;
my $u = IO::Socket::INET->new(LocalPort => 53, Proto => 'udp') or die "udp: $!";
my $t = IO::Socket::INET->new(LocalPort => 53, Proto => 'tcp', Listen => 16, ReuseAddr => 1) or die "tcp: $!";
my $sel = IO::Select->new($u, $t);
sub answer { my ($m) = @_; my $i = 12; my @l;
  while ($i < length($m)) { my $n = ord(substr($m, $i, 1)); last if $n == 0 || $n > 63; push @l, substr($m, $i + 1, $n); $i += $n + 1; }
  return (join('.', @l), substr($m, 0, 2) . pack('n5', 0x8183, 1, 0, 0, 0) . substr($m, 12, $i + 5 - 12)); }
print "listening\n";
while (1) { for my $s ($sel->can_read) {
  if ($s == $u) { my $from = $u->recv(my $m, 4096); next unless defined $from && length($m) > 12;
    my ($n, $r) = answer($m); print "QUERY udp $n\n"; $u->send($r, 0, $from); }
  else { my $c = $t->accept or next; read($c, my $len, 2); read($c, my $m, unpack('n', $len . "\0\0"));
    if (length($m) > 12) { my ($n, $r) = answer($m); print "QUERY tcp $n\n"; print $c pack('n', length $r) . $r; } close $c; } } }
"#;

/// A DNS query (id 0x1234, RD, one A question) for `name`, as printf escapes.
fn dns_query(name: &str, tcp: bool) -> String {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend(l.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    if tcp {
        let len = (q.len() as u16).to_be_bytes();
        q.splice(0..0, len);
    }
    q.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// Send one raw query to `host:53` and print the reply's header as hex.
fn raw_dns(host: &str, name: &str, tcp: bool) -> String {
    let dev = if tcp { "tcp" } else { "udp" };
    format!(
        "timeout 5 bash -c 'exec 3<>/dev/{dev}/{host}/53 && printf \"{q}\" >&3 && timeout 3 dd bs=512 count=1 <&3 2>/dev/null | od -An -tx1 | tr -d \" \\n\" | head -c 40'",
        q = dns_query(name, tcp)
    )
}

/// THREAT-MODEL S3 / docs/security.md "DNS": nothing the agent asks a
/// resolver leaves its namespace, proven with a DNS server this test runs
/// and that records every query it receives.
fn dns_is_forwarded_nowhere(
    running: &dyn Running,
    n: &bottle_core::plan::Names,
    cleanup: &mut Cleanup,
) {
    let nonce = format!("{:08x}", std::process::id() ^ 0x5eed_d15c);
    let zone = "exfil.test";
    let rec = format!("bottle-test-dns-{}", running.identity());
    cleanup.0.push(rec.clone());
    out(&[
        "run",
        "-d",
        "--name",
        &rec,
        "--network",
        &n.egress_network,
        BASE,
        "perl",
        "-e",
        DNS_RECORDER,
    ]);
    let ip_on = |net: &str| {
        out(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            &rec,
        ])
    };
    let rec_egress_ip = ip_on(&n.egress_network);
    // Positive controls: a container on the agent's internal network whose
    // embedded resolver has the recorder as its upstream: this engine does
    // forward from an --internal network (the recorder answers, over UDP
    // through docker's resolver and over TCP directly), so the recorder and
    // the queries below can show a leak.
    out(&["network", "connect", &n.internal_network, &rec]);
    let rec_int_ip = ip_on(&n.internal_network);
    let ctl = sh(&[
        "run",
        "--rm",
        "--network",
        &n.internal_network,
        "--dns",
        &rec_int_ip,
        BASE,
        "bash",
        "-c",
        &format!(
            "getent hosts ctl-{nonce}.{zone}; {}",
            raw_dns(&rec_int_ip, &format!("ctl-tcp-{nonce}.{zone}"), true)
        ),
    ]);
    out(&["network", "disconnect", &n.internal_network, &rec]);
    let log = || {
        let o = sh(&["logs", &rec]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let before = log();
    assert!(
        before.contains(&format!("QUERY udp ctl-{nonce}.{zone}"))
            && before.contains(&format!("QUERY tcp ctl-tcp-{nonce}.{zone}")),
        "control: the recorder did not get the forwarded queries ({}): {before}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    // The agent's resolver is alive and answers a raw query for what it
    // knows (so the raw queries below are well-formed)...
    let (_, bundle) = agent_sh(running, &raw_dns("127.0.0.11", "bundle", false));
    assert!(
        bundle.len() >= 16 && &bundle[12..16] != "0000",
        "control: no answer for `bundle` from 127.0.0.11: {bundle:?}"
    );
    // ...and forwards nothing: every way of asking for a name in the zone.
    let long = format!("{}.{}", "7a".repeat(31), "c3".repeat(31));
    let probes = [
        format!("timeout 3 getent hosts a-{nonce}.{zone}"),
        raw_dns("127.0.0.11", &format!("b-{nonce}.{zone}"), false),
        raw_dns("127.0.0.11", &format!("c-{nonce}.{zone}"), true),
        raw_dns(&rec_egress_ip, &format!("d-{nonce}.{zone}"), false),
        raw_dns(&rec_egress_ip, &format!("e-{nonce}.{zone}"), true),
        raw_dns(
            bottle_docker::AGENT_DNS,
            &format!("f-{nonce}.{zone}"),
            false,
        ),
        format!("timeout 3 getent hosts {long}.g-{nonce}.{zone}"),
        format!("timeout 3 getent ahosts {long}.h-{nonce}.{zone}"),
    ];
    for p in &probes {
        agent_sh(running, p);
    }
    let after = log();
    let leaked: Vec<&str> = after
        .lines()
        .filter(|l| l.contains(&nonce) && !l.contains("ctl-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the agent's lookups reached a DNS server: {leaked:?}"
    );
    let _ = sh(&["rm", "-f", &rec]);
}

/// THREAT-MODEL S1 (`docker inspect` of a Dockerfile bottle): an agent
/// image that keeps its own CMD (no agent `command`) gets its secret env
/// from the 0600 file too: the container config never holds the value, the
/// agent's main process does.
fn dockerfile_agent_secret_env_stays_out_of_docker_inspect() {
    let fx = fixture_with(
        "runtime = \"runc\"\n[agent_provider]\ndockerfile = \"images/Dockerfile\"\n\n[env]\nDB_PASSWORD = { secret = \"${ENGINE_DB}\" }\n\n[resources]\ncpus = 0.5\nmemory = \"256MiB\"\n",
        false,
        &[(
            "bottles/images/Dockerfile",
            format!("FROM {BASE}\nCMD [\"sleep\", \"infinity\"]\n"),
        )],
    );
    let id = fx.plan.identity.clone();
    let _cleanup = Cleanup(Vec::new(), Some(id.clone()));
    let be = DockerBackend::default().with_sidecar_bin(placeholder_sidecar(&fx.root));
    let running = be
        .launch(
            LaunchInput {
                plan: &fx.plan,
                state: &fx.state,
                wiring: &fx.wiring,
            },
            &DuctRunner,
        )
        .expect("launch");
    let n = &fx.plan.names;
    let inspect = out(&["inspect", &n.agent]);
    assert!(
        !inspect.contains(DB_SECRET),
        "the secret env value is in `docker inspect` of a Dockerfile agent"
    );
    // The image's own command runs, with the secret in its environment.
    let (code, env1) = agent_sh(
        &*running,
        "tr '\\0' '\\n' < /proc/1/environ; cat /proc/1/cmdline | tr '\\0' ' '",
    );
    assert_eq!(code, 0, "{env1}");
    assert!(
        env1.contains(&format!("DB_PASSWORD={DB_SECRET}")),
        "the agent's main process lacks its secret env"
    );
    assert!(env1.contains("sleep infinity"), "{env1}");
    be.remove_all(&id, false, &DuctRunner).unwrap();
}
