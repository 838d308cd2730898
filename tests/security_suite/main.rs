//! The security suite (THREAT-MODEL S1–S10): every attack script in
//! `tests/security/*.sh` runs inside a real bottle, and the test asserts
//! both what the agent observed and the audit line the attack left.
//!
//! Written once and run per backend (object_store's shared-suite pattern):
//! a `harness = false` test target (libtest-mimic) with one trial per
//! attack and backend, `<suite>::<script>`, run in order on one shared
//! bottle per backend (lean: one start for ~45 checks). A backend that
//! cannot run here is reported **ignored** (skipped) with the reason, never
//! passed: cargo's closing line counts the skips. With `CI=true` a required
//! suite fails instead (docker_runc always; docker_gvisor when runsc is
//! registered with the engine; smolmachines when `BOTTLE_TEST_SMOLVM=1`).
//! Each run writes `target/security-report/<suite>.json` (ran / skipped /
//! passed per attack); `cargo xtask security-table` turns the reports into
//! the per-backend table of docs/security.md. Every target is a container or
//! listener this test started, shown to answer from outside the bottle
//! first (the controls); nothing is ever aimed at an outside address.
//!
//! Script headers (`# key: value` lines at the top):
//! - first line `# Sn: title`
//! - `expect: fail | ok | no-secret` — exit status of the script (a script
//!   exits 0 only if the attack succeeded), or only that its output holds
//!   no secret
//! - `audit: k=v k~v ...` — a new audit line must match every field
//!   (`=` equal, `~` contains; `ECHO_IP` etc. expand)
//! - `audit-min: N` — at least N new lines must match (e.g. 2 when the
//!   attack is sent over HTTP/1.1 and HTTP/2)
//! - `no-audit: <reason>` — the attack never reaches a sidecar, so no audit
//!   line can exist; the reason is required (every script has `audit` or
//!   `no-audit`)
//! - `upstream-must-not-see: DB_PASSWORD | <text>` — never reached an upstream
//! - `upstream-must-see: <text>` — a control: the upstream echo.test logged
//!   it (the path the attack takes really reaches the upstream)
//! - `host-check: decoy-untouched | echo-untouched | udp-silent |
//!   upstream-git-unchanged | upstream-saw-token-not-agent-auth`
//!
//! A script exits 0 only if the attack succeeded, and 97 when it could not
//! be carried out as designed (`inconclusive` in `lib.sh`: e.g. HTTP/2 was
//! not negotiated); 97 fails the suite.
//!
//! The HTTP upstreams are `bottle-test-upstream` containers (TLS on 443
//! with a test CA, h2 and http/1.1; plain HTTP on 80 and 8080) that log
//! every request they receive. The bottle's egress trusts the test CA for
//! upstream connections only, through the host-side `BOTTLE_TEST_UPSTREAM_CA`
//! hook (docs/security.md, "Test hooks"); the agent trusts only the bottle's
//! own CA, as in production.

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottle_tests::gate::{
    Arguments, Completion, Failed, Gate, Requirement, Trial, DOCKER, MICRO_VMS,
};
use bottle_tests::support_docker::{docker, docker_ok, BottleHome, TestTls, Upstreams};
use bottle_tests::{in_ci, workspace_bin, workspace_root, SEEDED_IMAGES};

const ROUTE_TOKEN: &str = "sec-route-TOKEN-7f3a9c21e5d4b8a6";
/// A held secret the agent has in its env (a `{ secret = "${HOST_VAR}" }` env value):
/// egress and the git gate must refuse to let it out in any encoding.
const DB_PASSWORD: &str = "db-Pa55+w/rd=S3CRET-9f3e";

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Fail,
    Ok,
    NoSecret,
}

#[derive(Debug, Clone)]
struct Attack {
    file: String,
    invariant: String,
    title: String,
    expect: Expect,
    audit: Vec<(String, bool, String)>,
    audit_min: usize,
    no_audit: Option<String>,
    must_not_see: Vec<String>,
    must_see: Vec<String>,
    host_checks: Vec<String>,
    body: String,
}

fn attacks() -> Vec<Attack> {
    let dir = workspace_root().join("tests/security");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh") && !p.ends_with("lib.sh"))
        .collect();
    files.sort();
    files.iter().map(|p| parse(p)).collect()
}

fn parse(path: &std::path::Path) -> Attack {
    let body = std::fs::read_to_string(path).unwrap();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let first = body.lines().next().unwrap_or_default();
    let (invariant, title) = first
        .trim_start_matches('#')
        .trim()
        .split_once(':')
        .unwrap_or_else(|| panic!("{file}: first line must be `# Sn: title`"));
    let mut a = Attack {
        file: file.clone(),
        invariant: invariant.trim().to_owned(),
        title: title.trim().to_owned(),
        expect: Expect::Fail,
        audit: Vec::new(),
        audit_min: 1,
        no_audit: None,
        must_not_see: Vec::new(),
        must_see: Vec::new(),
        host_checks: Vec::new(),
        body: body.clone(),
    };
    for line in body.lines().skip(1).take_while(|l| l.starts_with('#')) {
        let Some((k, v)) = line.trim_start_matches('#').trim().split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "expect" => {
                a.expect = match v {
                    "fail" => Expect::Fail,
                    "ok" => Expect::Ok,
                    "no-secret" => Expect::NoSecret,
                    other => panic!("{file}: unknown expect `{other}`"),
                }
            }
            "audit" => {
                for pair in v.split_whitespace() {
                    let (key, contains, val) = match pair.split_once('~') {
                        Some((k, v)) => (k, true, v),
                        None => {
                            let (k, v) = pair
                                .split_once('=')
                                .unwrap_or_else(|| panic!("{file}: bad audit `{pair}`"));
                            (k, false, v)
                        }
                    };
                    a.audit.push((key.to_owned(), contains, val.to_owned()));
                }
            }
            "audit-min" => {
                a.audit_min = v
                    .parse()
                    .unwrap_or_else(|_| panic!("{file}: audit-min wants a number"))
            }
            "no-audit" => a.no_audit = Some(v.to_owned()),
            "upstream-must-not-see" => a.must_not_see.push(v.to_owned()),
            "upstream-must-see" => a.must_see.push(v.to_owned()),
            "host-check" => a.host_checks.push(v.to_owned()),
            _ => {}
        }
    }
    a
}

/// One backend the suite runs against.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// Suite name (trial prefix, report file).
    name: &'static str,
    /// Backend id passed to `bottle start --backend`.
    backend: &'static str,
    /// Runtime for docker (`runc`, `runsc`).
    runtime: Option<&'static str>,
}

const TARGETS: [Target; 3] = [
    Target {
        name: "docker_runc",
        backend: "docker",
        runtime: Some("runc"),
    },
    Target {
        name: "docker_gvisor",
        backend: "docker",
        runtime: Some("runsc"),
    },
    Target {
        name: "smolmachines",
        backend: "smolmachines",
        runtime: None,
    },
];

/// gVisor registered with the engine: the gVisor suite runs where it is
/// (and is then required); `.ci/run` registers it.
static RUNSC: Requirement = Requirement::not_in_ci("runsc", || {
    let (_, info, _) = docker(&["info", "--format", "{{json .Runtimes}}"]);
    if info.contains("runsc") {
        Ok(())
    } else {
        Err(
            "gVisor (runsc) is not registered with this docker engine (docs/security.md, gVisor)"
                .into(),
        )
    }
});

impl Target {
    fn egress_network(&self, id: &str) -> String {
        match self.backend {
            "smolmachines" => format!("bottle-{id}-smol"),
            _ => format!("bottle-{id}-egress"),
        }
    }
    fn internal_network(&self, id: &str) -> String {
        match self.backend {
            "smolmachines" => format!("bottle-{id}-smol"),
            _ => format!("bottle-{id}-int"),
        }
    }

    /// Decide before anything is started whether this suite runs: a
    /// missing engine or image is a failure in CI; gVisor and micro-VMs
    /// run where the machine has them.
    fn gate(&self) -> Gate {
        let mut needs: Vec<&Requirement> = vec![&DOCKER, &SEEDED_IMAGES];
        match (self.backend, self.runtime) {
            // registered: required; a runtime that does not work fails the
            // suite at `bottle start`
            ("docker", Some("runsc")) => needs.push(&RUNSC),
            ("smolmachines", _) => needs.push(&MICRO_VMS),
            _ => {}
        }
        Gate::of(&needs)
    }
}

fn gateway(net: &str) -> String {
    docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        net,
    ])
}

fn container_ip(container: &str, net: &str) -> String {
    docker_ok(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        container,
    ])
}

fn audit_lines(h: &BottleHome, id: &str) -> Vec<serde_json::Value> {
    h.audit(id)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn matches(
    line: &serde_json::Value,
    want: &[(String, bool, String)],
    vars: &BTreeMap<&'static str, String>,
) -> bool {
    want.iter().all(|(k, contains, v)| {
        let v = vars.get(v.as_str()).cloned().unwrap_or_else(|| v.clone());
        let field = match line.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return false,
        };
        if *contains {
            field.contains(&v)
        } else {
            field == v
        }
    })
}

fn encodings(secret: &str) -> Vec<String> {
    use std::fmt::Write;
    let mut pct = String::new();
    for b in secret.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            pct.push(b as char);
        } else {
            let _ = write!(pct, "%{b:02X}");
        }
    }
    vec![secret.to_owned(), pct]
}

/// One running bottle (and a second one, `other`) with its upstreams.
/// Field order is drop order: the bottles go before the upstreams.
struct Env {
    h: BottleHome,
    id: String,
    other: String,
    bundle: String,
    echo: String,
    decoy: String,
    git: String,
    vars: BTreeMap<&'static str, String>,
    udp: UdpSocket,
    tcp_listener: TcpListener,
    prelude: String,
    exports: String,
    secrets: Vec<String>,
    ups: Upstreams,
    _tls: TestTls,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.h.run(&["rm", "-f", &self.id]);
        let _ = self.h.run(&["rm", "-f", &self.other]);
    }
}

fn tcp_from(container: &str, target: &str) -> bool {
    docker(&[
        "exec",
        container,
        "bash",
        "-c",
        &format!("timeout 5 bash -c 'echo > /dev/tcp/{target}'"),
    ])
    .0
}

fn logs(c: &str) -> String {
    docker(&["logs", c]).1
}

/// Start the upstreams and two bottles, attach the upstreams, and show
/// every target answers from outside the agent (the controls).
fn setup(t: Target) -> Result<Env, String> {
    std::panic::catch_unwind(|| setup_inner(t)).map_err(panic_message)
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn setup_inner(t: Target) -> Env {
    let tag = format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut ups = Upstreams::new(&tag);
    let tls = TestTls::new(&["echo.test", "decoy.test", "decoy-private.test"]);
    // built by cargo with this test target (same package): no inner build
    let upstream_bin = PathBuf::from(env!("CARGO_BIN_EXE_bottle-test-upstream"));
    let echo = ups.https_echo(&format!("bottle-sec-echo-{tag}"), &upstream_bin, &tls);
    let decoy = ups.https_echo(&format!("bottle-sec-decoy-{tag}"), &upstream_bin, &tls);
    let git = format!("bottle-sec-git-{tag}");
    let (deploy_key, host_key) = ups.sshd_git(&git);

    let mut h = BottleHome::new(
        workspace_bin("bottle-cli", "bottle"),
        workspace_bin("bottle-sidecars", "bottle-sidecar"),
    );
    let key_path = h.path().join("deploy_key");
    std::fs::write(&key_path, &deploy_key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let runtime = t
        .runtime
        .map(|r| format!("runtime = \"{r}\"\n"))
        .unwrap_or_default();
    h.write(
        "bottles/sec.toml",
        &format!(
            r#"backend = "{backend}"
{runtime}
[agent_provider]
template = "shell"

[env]
DB_PASSWORD = {{ secret = "${{SEC_DB_PASSWORD}}" }}

[[egress.routes]]
host = "echo.test"
paths = ["/allowed/**"]
methods = ["GET", "POST"]
allow_private = true
auth = {{ scheme = "bearer", token = "${{SEC_ROUTE_TOKEN}}" }}

[[egress.routes]]
host = "decoy-private.test"

# S6 (SSRF): allowed by name, but the bundle resolves it to its own
# loopback, where supervise listens; no allow_private
[[egress.routes]]
host = "localhost"
port = 9100

[[git.remotes]]
name = "origin"
url = "ssh://git@git.test/srv/repo.git"
identity_file = "{key}"
known_host_key = "{host_key}"
push = ["refs/heads/bot/*"]

[resources]
cpus = 1.0
memory = "1GiB"
"#,
            backend = t.backend,
            key = key_path.display()
        ),
    );
    h.write("agents/sec.toml", "bottle = \"sec\"\n");
    h.write("bottles/other.toml", &format!("backend = \"{}\"\n{runtime}[agent_provider]\ntemplate = \"shell\"\n[resources]\ncpus = 0.5\nmemory = \"512MiB\"\n", t.backend));
    h.write("agents/other.toml", "bottle = \"other\"\n");
    h.env.push(("SEC_ROUTE_TOKEN".into(), ROUTE_TOKEN.into()));
    h.env.push(("SEC_DB_PASSWORD".into(), DB_PASSWORD.into()));
    h.env.push((
        "BOTTLE_TEST_UPSTREAM_CA".into(),
        tls.ca_pem().display().to_string(),
    ));

    let id = h.start("sec");
    // from here on the bottles are removed whatever happens
    let other = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.start("other"))) {
        Ok(o) => o,
        Err(e) => {
            let _ = h.run(&["rm", "-f", &id]);
            std::panic::resume_unwind(e);
        }
    };
    let tcp_listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut env = Env {
        bundle: format!("bottle-{id}-bundle"),
        h,
        id,
        other,
        echo,
        decoy,
        git,
        vars: BTreeMap::new(),
        udp,
        tcp_listener,
        prelude: String::new(),
        exports: String::new(),
        secrets: Vec::new(),
        ups,
        _tls: tls,
    };
    controls(t, &mut env, &deploy_key);
    env
}

fn controls(t: Target, env: &mut Env, deploy_key: &str) {
    let (id, other, bundle) = (env.id.clone(), env.other.clone(), env.bundle.clone());
    let egress = t.egress_network(&id);
    let internal = t.internal_network(&id);
    env.ups.attach(&env.echo, &egress, "echo.test");
    docker_ok(&[
        "network",
        "connect",
        "--alias",
        "decoy.test",
        "--alias",
        "decoy-private.test",
        &egress,
        &env.decoy,
    ]);
    env.ups.attach(&env.git, &egress, "git.test");

    let other_int = t.internal_network(&other);
    env.vars = BTreeMap::from([
        ("ECHO_IP", container_ip(&env.echo, &egress)),
        ("DECOY_IP", container_ip(&env.decoy, &egress)),
        ("GIT_IP", container_ip(&env.git, &egress)),
        ("EGRESS_GW", gateway(&egress)),
        ("INT_GW", gateway(&internal)),
        (
            "HOST_PORT",
            env.tcp_listener.local_addr().unwrap().port().to_string(),
        ),
        ("UDP_PORT", env.udp.local_addr().unwrap().port().to_string()),
        (
            "OTHER_BUNDLE_IP",
            container_ip(&format!("bottle-{other}-bundle"), &other_int),
        ),
        (
            "OTHER_AGENT_IP",
            container_ip(&format!("bottle-{other}-agent"), &other_int),
        ),
    ]);
    let vars = &env.vars;

    // Controls: every target answers from outside the agent.
    for target in [
        format!("{}/80", vars["ECHO_IP"]),
        format!("{}/443", vars["ECHO_IP"]),
        format!("{}/8080", vars["ECHO_IP"]),
        "echo.test/8080".to_owned(),
        format!("{}/80", vars["DECOY_IP"]),
        format!("{}/443", vars["DECOY_IP"]),
        "decoy-private.test/443".to_owned(),
        format!("{}/22", vars["GIT_IP"]),
        "decoy-private.test/80".to_owned(),
        format!("{}/{}", vars["EGRESS_GW"], vars["HOST_PORT"]),
    ] {
        assert!(
            tcp_from(&bundle, &target),
            "control: {target} does not answer from the bundle"
        );
    }
    // The SSRF target: supervise answers on the bundle's own loopback, and
    // `localhost` resolves there.
    assert!(
        tcp_from(&bundle, "127.0.0.1/9100") && tcp_from(&bundle, "localhost/9100"),
        "control: supervise does not answer on the bundle's loopback"
    );
    // The HTTPS upstream speaks TLS with the test CA, over h2 and http/1.1.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out, err) = docker(&[
            "exec",
            &bundle,
            "curl",
            "-sS",
            "-m",
            "10",
            flag,
            "--cacert",
            "/bottle/egress/test-upstream-ca.pem",
            "-w",
            "\nversion=%{http_version}",
            "https://echo.test/control",
        ]);
        assert!(
            ok && out.contains("echo from bottle-sec-echo")
                && out.ends_with(&format!("version={version}")),
            "control: the HTTPS upstream does not answer HTTP/{version} from the bundle: {out} {err}"
        );
    }
    assert!(
        tcp_from(
            &format!("bottle-{other}-bundle"),
            &format!("{}/9100", vars["OTHER_BUNDLE_IP"])
        ),
        "control: the other bottle's supervise port is not live"
    );
    docker_ok(&[
        "exec",
        &bundle,
        "bash",
        "-c",
        &format!(
            "echo control > /dev/udp/{}/{}",
            vars["EGRESS_GW"], vars["UDP_PORT"]
        ),
    ]);
    let mut buf = [0u8; 64];
    assert!(
        env.udp.recv_from(&mut buf).is_ok(),
        "control: UDP from the bundle to the host listener did not arrive"
    );

    // The attack client for WebSocket frames and trailers (curl in the
    // agent speaks neither), handed over exec stdin: `docker cp` into a
    // running gVisor container does not work.
    let attack_bin = PathBuf::from(env!("CARGO_BIN_EXE_bottle-test-attack"));
    let copied = duct::cmd!(
        "docker",
        "exec",
        "-i",
        "-u",
        "1000:1000",
        format!("bottle-{}-agent", env.id),
        "sh",
        "-c",
        "cat > /tmp/bottle-test-attack && chmod 755 /tmp/bottle-test-attack"
    )
    .stdin_path(&attack_bin)
    .stderr_to_stdout()
    .unchecked()
    .run()
    .expect("docker runs");
    assert!(
        copied.status.success(),
        "control: could not hand the attack client to the agent: {}",
        String::from_utf8_lossy(&copied.stdout)
    );
    env.prelude = std::fs::read_to_string(workspace_root().join("tests/security/lib.sh")).unwrap();
    env.exports = vars
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    let key_body = deploy_key.lines().nth(1).unwrap_or_default().to_owned();
    env.secrets = vec![ROUTE_TOKEN.to_owned(), key_body];
}

/// From outside the agent: the host itself, and a neighbouring container on
/// every network the bundle is attached to, try the bundle's three doors
/// without the bottle's access credential (S11). Each door that answers
/// must refuse (egress 407, git-gate "access denied", supervise 401) and
/// record it; none may reach the upstream. A door that does not answer at
/// all is reported, and at least one neighbour must have been answered
/// (else the attack did not happen). The credential itself is never in
/// `docker inspect`, a host command line or the audit log.
fn host_s11(env: &Env) -> Result<String, String> {
    let (h, id) = (&env.h, &env.id);
    let key = std::fs::read_to_string(h.path().join(format!("state/{id}/access/key")))
        .map_err(|e| format!("the bottle has no access credential file: {e}"))?;
    let key = key.trim().to_owned();
    let mut problems = Vec::new();
    if key.len() < 32 {
        problems.push("the access credential is too short".to_owned());
    }
    let nets = docker_ok(&[
        "inspect",
        "--format",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
        &env.bundle,
    ]);
    let nets: Vec<(String, String)> = nets
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if nets.len() < 2 {
        problems.push(format!(
            "the bundle is on {} network(s), expected the internal and the egress one",
            nets.len()
        ));
    }
    let probe = |ip: &str| {
        format!(
            "e1=$(curl -sS -m 5 -o /dev/null -w '%{{http_connect}}' -x http://{ip}:8888 https://echo.test/allowed/x 2>/dev/null); \
             e2=$(curl -sS -m 5 -o /dev/null -w '%{{http_code}}' -x http://{ip}:8888 http://echo.test/allowed/x 2>/dev/null); \
             e3=$(curl -sS -m 5 -o /dev/null -w '%{{http_code}}' -x http://bottle:{wrong}@{ip}:8888 http://echo.test/allowed/x 2>/dev/null); \
             g=$(timeout 10 git ls-remote git://{ip}:9418/origin.git 2>&1 | tr '\n' ' '); \
             m=$(curl -sS -m 5 -o /dev/null -w '%{{http_code}}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
               -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-03-26\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"n\",\"version\":\"1\"}}}}}}' http://{ip}:9100/mcp 2>/dev/null); \
             echo \"egress-connect=$e1 egress-plain=$e2 egress-wrong=$e3 mcp=$m git=[$g]\"",
            wrong = "0".repeat(64)
        )
    };
    let before = audit_lines(h, id);
    let echo_before = logs(&env.echo).matches("REQUEST").count();
    let mut observed = Vec::new();
    let mut answered_neighbour = false;
    let mut expected = [0usize; 3]; // egress, git-gate, supervise refusals that must be on record
    for (net, ip) in &nets {
        // The host probes only a network it is attached to: the internal
        // network gives the host no address, and a packet to its subnet
        // would leave by the default route (never to an outside address).
        let route = duct::cmd!("ip", "-o", "route", "get", ip)
            .stderr_to_stdout()
            .unchecked()
            .read()
            .unwrap_or_default();
        let host = if route.contains(" dev ") && !route.contains(" via ") {
            duct::cmd!("bash", "-c", probe(ip))
                .stderr_to_stdout()
                .unchecked()
                .read()
                .unwrap_or_default()
        } else {
            format!(
                "not attached: the host has no direct route to {ip} ({})",
                route.trim()
            )
        };
        let (_, neighbour, _) = docker(&[
            "run",
            "--rm",
            "--network",
            net,
            bottle_tests::support_docker::BASE_IMAGE,
            "bash",
            "-c",
            &probe(ip),
        ]);
        for (who, out) in [("host", host), ("neighbour", neighbour)] {
            let field = |k: &str| {
                out.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{k}=")))
                    .unwrap_or("")
                    .to_owned()
            };
            let git = out.split("git=[").nth(1).unwrap_or("").to_owned();
            let mut answered = false;
            for (k, refused, slot) in [
                ("egress-connect", "407", 0),
                ("egress-plain", "407", 0),
                ("egress-wrong", "407", 0),
                ("mcp", "401", 2),
            ] {
                match field(k).as_str() {
                    v if v == refused => {
                        answered = true;
                        expected[slot] += 1;
                    }
                    "000" | "" => {}
                    other => problems.push(format!(
                        "{who} on {net} ({ip}): {k} answered {other}, not {refused}"
                    )),
                }
            }
            if git.contains("access denied") {
                answered = true;
                expected[1] += 1;
            } else if git.contains("refs/") || git.contains("HEAD") {
                problems.push(format!(
                    "{who} on {net} ({ip}): git ls-remote without the credential listed refs"
                ));
            }
            if who == "neighbour" && answered {
                answered_neighbour = true;
            }
            observed.push(format!("{who} on {net} ({ip}): {}", out.trim()));
        }
    }
    if !answered_neighbour {
        problems.push(
            "no neighbouring container got an answer from the bundle: the attack did not happen"
                .into(),
        );
    }
    // the refusals are on record, one line each
    let mut recorded = [0usize; 3];
    for _ in 0..20 {
        let lines = audit_lines(h, id);
        recorded = [0; 3];
        for l in &lines[before.len().min(lines.len())..] {
            if l.get("rule").and_then(|v| v.as_str()) != Some("access-credential") {
                continue;
            }
            match l.get("sidecar").and_then(|v| v.as_str()) {
                Some("egress") => recorded[0] += 1,
                Some("git-gate") => recorded[1] += 1,
                Some("supervise") => recorded[2] += 1,
                _ => {}
            }
        }
        if recorded.iter().zip(&expected).all(|(r, e)| r >= e) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    for (i, name) in ["egress", "git-gate", "supervise"].iter().enumerate() {
        if recorded[i] < expected[i] {
            problems.push(format!(
                "{name}: {} refusal(s) seen, {} audit line(s) with rule=access-credential",
                expected[i], recorded[i]
            ));
        }
    }
    if logs(&env.echo).matches("REQUEST").count() != echo_before {
        problems.push("a request without the credential reached the upstream echo.test".into());
    }
    // the credential is the agent's only: not in the container configs, on
    // a host command line, or in the record
    for c in [&env.bundle, &format!("bottle-{id}-agent")] {
        if docker_ok(&["inspect", c]).contains(&key) {
            problems.push(format!("the access credential is in `docker inspect {c}`"));
        }
    }
    if duct::cmd!("ps", "-eo", "args")
        .read()
        .unwrap_or_default()
        .contains(&key)
    {
        problems.push("the access credential is on a host command line".into());
    }
    if h.audit(id).contains(&key) {
        problems.push("the access credential is in the audit log".into());
    }
    if problems.is_empty() {
        Ok(observed.join("\n"))
    } else {
        Err(format!(
            "{}\nobserved:\n{}",
            problems.join("; "),
            observed.join("\n")
        ))
    }
}

fn upstream_git(env: &Env) -> String {
    docker_ok(&[
        "exec",
        "-u",
        "git",
        &env.git,
        "git",
        "-C",
        "/srv/repo.git",
        "for-each-ref",
    ])
}

/// Run one attack script in the agent; Ok(observed) or Err(problems).
fn run_attack(env: &Env, attack: &Attack) -> Result<String, String> {
    let (h, id, vars) = (&env.h, &env.id, &env.vars);
    let before_audit = audit_lines(h, id).len();
    let before_git = upstream_git(env);
    let before_decoy = logs(&env.decoy).matches("REQUEST").count();
    let echo_log = logs(&env.echo);
    let before_echo = echo_log.len();
    let before_echo_requests = echo_log.matches("REQUEST").count();
    let mut buf = [0u8; 64];
    while env.udp.recv_from(&mut buf).is_ok() {}
    let script = format!("{}\n{}\n{}", env.prelude, env.exports, attack.body);
    let (code, out) = h.exec(id, &script);
    let mut problems = Vec::new();
    match attack.expect {
        _ if code == 97 => problems.push(format!(
            "inconclusive: the attack could not be carried out as designed: {}",
            tail(&out)
        )),
        Expect::Fail if code == 0 => {
            problems.push(format!("the attack succeeded (exit 0): {}", tail(&out)))
        }
        Expect::Ok if code != 0 => {
            problems.push(format!("the control failed (exit {code}): {}", tail(&out)))
        }
        _ => {}
    }
    for s in &env.secrets {
        if out.contains(s.as_str()) {
            problems.push("a held secret reached the agent's output".into());
        }
    }
    if !attack.audit.is_empty() {
        // decisions are written as they happen; allow the daemons a moment
        let mut found = false;
        for _ in 0..20 {
            let lines = audit_lines(h, id);
            if lines[before_audit.min(lines.len())..]
                .iter()
                .filter(|l| matches(l, &attack.audit, vars))
                .count()
                >= attack.audit_min
            {
                found = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !found {
            let lines = audit_lines(h, id);
            let new: Vec<String> = lines[before_audit.min(lines.len())..]
                .iter()
                .map(|l| l.to_string())
                .collect();
            problems.push(format!(
                "fewer than {} audit lines matching {:?}; new lines: {new:?}",
                attack.audit_min, attack.audit
            ));
        }
    }
    for what in &attack.must_not_see {
        let needles = if what == "DB_PASSWORD" {
            encodings(DB_PASSWORD)
        } else {
            vec![what.clone()]
        };
        for c in [&env.echo, &env.decoy] {
            let log = logs(c);
            let new = if c == &env.echo {
                &log[before_echo.min(log.len())..]
            } else {
                log.as_str()
            };
            if needles.iter().any(|n| new.contains(n.as_str())) {
                problems.push(format!("{what} reached upstream {c}"));
            }
        }
    }
    for what in &attack.must_see {
        let found = (0..20).any(|_| {
            let log = logs(&env.echo);
            let seen = log[before_echo.min(log.len())..].contains(what.as_str());
            if !seen {
                std::thread::sleep(Duration::from_millis(250));
            }
            seen
        });
        if !found {
            problems.push(format!("the upstream echo.test never logged {what:?}"));
        }
    }
    for check in &attack.host_checks {
        match check.as_str() {
            "decoy-untouched" => {
                if logs(&env.decoy).matches("REQUEST").count() != before_decoy {
                    problems.push("the decoy was reached".into());
                }
            }
            "echo-untouched" => {
                let now = logs(&env.echo).matches("REQUEST").count();
                if now != before_echo_requests {
                    problems.push(format!(
                        "the upstream echo.test received {} request(s)",
                        now - before_echo_requests
                    ));
                }
            }
            "udp-silent" => {
                if let Ok((n, from)) = env.udp.recv_from(&mut buf) {
                    problems.push(format!(
                        "a UDP datagram from {from} reached the host: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ));
                }
            }
            "upstream-git-unchanged" => {
                if upstream_git(env) != before_git {
                    problems.push("the upstream repository changed".into());
                }
            }
            "upstream-saw-token-not-agent-auth" => {
                let log = logs(&env.echo);
                let new = log[before_echo.min(log.len())..].to_ascii_lowercase();
                if !new.contains(&format!(
                    "authorization: bearer {}",
                    ROUTE_TOKEN.to_ascii_lowercase()
                )) {
                    problems.push("the configured token did not arrive upstream".into());
                }
                if new.contains("agent-chosen-value") {
                    problems.push("the agent's own Authorization was forwarded".into());
                }
            }
            other => problems.push(format!("unknown host-check {other}")),
        }
    }
    if problems.is_empty() {
        Ok(tail(&out))
    } else {
        Err(format!("{}\nobserved: {}", problems.join("; "), tail(&out)))
    }
}

/// The checks made from the host after every attack: S1 (nothing secret in
/// `docker inspect` or a host command line), S9 (kill the bundle: no way
/// out, the bottle shows degraded), S10 (no secret in the audit log).
fn host_checks(t: Target, env: &Env) -> Result<String, String> {
    let (h, id) = (&env.h, &env.id);
    let mut problems = Vec::new();
    if t.backend == "docker" {
        let inspect = docker_ok(&["inspect", &format!("bottle-{id}-agent")]);
        if env.secrets.iter().any(|s| inspect.contains(s.as_str())) {
            problems.push("a held secret is in `docker inspect` of the agent".to_owned());
        }
        if inspect.contains(DB_PASSWORD) {
            problems.push("the agent's env secret is visible in `docker inspect` (it must come from an env file)".into());
        }
    }
    let ps = duct::cmd!("ps", "-eo", "args").read().unwrap_or_default();
    for s in env.secrets.iter().chain([&DB_PASSWORD.to_owned()]) {
        if ps.contains(s.as_str()) {
            problems.push("a held secret is on a host command line".into());
        }
    }

    // S10 first (S9 kills the bundle): the record holds no secret value.
    let audit = h.audit(id);
    for s in env.secrets.iter().cloned().chain(encodings(DB_PASSWORD)) {
        if audit.contains(s.as_str()) {
            problems.push("a secret value is in the audit log".into());
        }
    }

    // S9: kill the bundle: the agent has no network at all.
    docker_ok(&["kill", &env.bundle]);
    let (code, out) = h.exec(
        id,
        &format!(
            "{}\n{}\ncurl -sS -m 5 -f https://echo.test/allowed/x || curl -sS -m 5 -f http://echo.test/allowed/x || tcp bundle 8888 || tcp \"$ECHO_IP\" 80",
            env.prelude, env.exports
        ),
    );
    if code == 0 {
        problems.push(format!(
            "S9: the agent still had a route out after the bundle died: {}",
            tail(&out)
        ));
    }
    let (_, ls, _) = h.run(&["ls", "--json"]);
    if !ls.contains("degraded") {
        problems.push(format!(
            "S9: `bottle ls` does not show the bottle degraded: {ls}"
        ));
    }
    if problems.is_empty() {
        Ok("no secret in docker inspect, host argv or the audit log; no way out after the bundle died".into())
    } else {
        Err(problems.join("; "))
    }
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.len().saturating_sub(400);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    s[i..].to_owned()
}

/// One row of the report.
#[derive(Debug, Clone)]
struct Row {
    script: String,
    invariant: String,
    title: String,
    /// `passed`, `failed` or `skipped`.
    outcome: &'static str,
    detail: String,
}

/// The shared state of one backend's suite.
struct Suite {
    target: Target,
    gate: Gate,
    /// Set up on the first trial that runs; `Err` if setup failed.
    env: Mutex<Option<Result<Env, String>>>,
    rows: Mutex<Vec<Row>>,
}

impl Suite {
    /// Run `f` against the shared bottle (set up on first use), record the
    /// outcome under `(script, invariant, title)`.
    fn trial(
        &self,
        script: &str,
        invariant: &str,
        title: &str,
        f: impl FnOnce(&Env) -> Result<String, String>,
    ) -> Result<Completion, Failed> {
        let record = |outcome: &'static str, detail: &str| {
            self.rows.lock().unwrap().push(Row {
                script: script.to_owned(),
                invariant: invariant.to_owned(),
                title: title.to_owned(),
                outcome,
                detail: detail.to_owned(),
            });
        };
        match &self.gate {
            Gate::Skip(why) => {
                record("skipped", why);
                return Ok(Completion::ignored_with(why));
            }
            Gate::Fail(why) => {
                record("failed", why);
                return Err(why.as_str().into());
            }
            Gate::Run => {}
        }
        let mut slot = self.env.lock().unwrap_or_else(|p| p.into_inner());
        let env = slot.get_or_insert_with(|| setup(self.target));
        let result = match env {
            Ok(env) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(env)))
                .unwrap_or_else(|e| Err(panic_message(e))),
            Err(e) => Err(format!("the suite's setup failed: {e}")),
        };
        match result {
            Ok(observed) => {
                record("passed", &observed);
                Ok(Completion::Completed)
            }
            Err(e) => {
                record("failed", &e);
                Err(e.into())
            }
        }
    }

    fn teardown(&self) {
        let env = self.env.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(env);
    }

    /// `target/security-report/<suite>.json` (only when a trial ran).
    fn write_report(&self) {
        let rows = self.rows.lock().unwrap().clone();
        if rows.is_empty() {
            return;
        }
        let t = self.target;
        let status = match &self.gate {
            Gate::Run => "ran",
            Gate::Skip(_) => "skipped",
            Gate::Fail(_) => "required-but-unavailable",
        };
        let reason = match &self.gate {
            Gate::Run => None,
            Gate::Skip(r) | Gate::Fail(r) => Some(r.clone()),
        };
        let count = |o: &str| rows.iter().filter(|r| r.outcome == o).count();
        let report = serde_json::json!({
            "suite": t.name,
            "backend": t.backend,
            "runtime": t.runtime,
            "status": status,
            "reason": reason,
            "ci": in_ci(),
            "ran": count("passed") + count("failed"),
            "passed": count("passed"),
            "failed": count("failed"),
            "skipped": count("skipped"),
            "attacks": rows.iter().map(|r| serde_json::json!({
                "script": r.script, "invariant": r.invariant, "title": r.title,
                "outcome": r.outcome, "detail": r.detail,
            })).collect::<Vec<_>>(),
        });
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        let dir = target_dir.join("security-report");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}.json", t.name));
        if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
        {
            eprintln!("security suite: could not write {}: {e}", path.display());
        }
    }
}

fn main() {
    let mut args = Arguments::from_args();
    // one shared bottle per backend, and scripts that build on each other
    // (s7-*): run the trials in order
    args.test_threads = Some(1);
    let all = attacks();
    let mut trials = vec![Trial::test("every_attack_script_declares_an_outcome", {
        let all = all.clone();
        move || declares_outcomes(&all).map_err(Failed::from)
    })];
    const HOST: &str = "host-s1-s9-s10";
    const NEIGHBOURS: &str = "host-s11-neighbours";
    let selected = |name: &str| {
        !args.list
            && args.filter.as_deref().is_none_or(|f| {
                if args.exact {
                    name == f
                } else {
                    name.contains(f)
                }
            })
            && !args.skip.iter().any(|s| name.contains(s.as_str()))
    };
    let mut suites = Vec::new();
    for t in TARGETS {
        let names: Vec<String> = all
            .iter()
            .map(|a| a.file.trim_end_matches(".sh").to_owned())
            .chain([NEIGHBOURS.to_owned(), HOST.to_owned()])
            .map(|n| format!("{}::{n}", t.name))
            .collect();
        // probe only when a trial of this suite is selected (a filtered run
        // of one script does not probe every backend)
        let gate = if names.iter().any(|n| selected(n)) {
            t.gate()
        } else {
            Gate::Run
        };
        match &gate {
            Gate::Skip(why) => eprintln!("SKIPPED: security suite {}: {why}", t.name),
            Gate::Fail(why) => eprintln!("FAILING: security suite {}: {why}", t.name),
            Gate::Run => {}
        }
        let suite = Arc::new(Suite {
            target: t,
            gate,
            env: Mutex::new(None),
            rows: Mutex::new(Vec::new()),
        });
        suites.push(suite.clone());
        for (a, name) in all.iter().zip(&names) {
            let suite = suite.clone();
            let a = a.clone();
            trials.push(Trial::ignorable_test(name.clone(), move || {
                suite.trial(&a.file, &a.invariant, &a.title, |env| run_attack(env, &a))
            }));
        }
        {
            let suite = suite.clone();
            trials.push(Trial::ignorable_test(
                names[names.len() - 2].clone(),
                move || {
                    suite.trial(
                        NEIGHBOURS,
                        "S11",
                        "from the host and a neighbouring container on each bundle network: no door opens without the access credential",
                        host_s11,
                    )
                },
            ));
        }
        trials.push(Trial::ignorable_test(
            names.last().expect("host trial").clone(),
            move || {
                let r = suite.trial(
                    HOST,
                    "S1/S9/S10",
                    "from the host: no secret in inspect/argv/audit; bundle killed leaves no way out",
                    |env| host_checks(suite.target, env),
                );
                suite.teardown();
                r
            },
        ));
    }
    let conclusion = bottle_tests::gate::libtest_mimic::run(&args, trials);
    for s in &suites {
        s.teardown();
        s.write_report();
    }
    conclusion.exit();
}

fn declares_outcomes(all: &[Attack]) -> Result<(), String> {
    if all.len() < 30 {
        return Err(format!("only {} attack scripts", all.len()));
    }
    for inv in ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"] {
        if !all.iter().any(|a| a.invariant.starts_with(inv)) {
            return Err(format!("no attack for {inv}"));
        }
    }
    for a in all {
        if a.audit.is_empty() == a.no_audit.as_deref().is_none_or(str::is_empty) {
            return Err(format!("{}: declare the audit line the attack leaves (`# audit: ...`) or why none can exist (`# no-audit: <reason>`), exactly one of them", a.file));
        }
        if a.expect == Expect::Ok && a.audit.is_empty() && a.host_checks.is_empty() {
            return Err(format!(
                "{}: a control must check something beyond its exit code",
                a.file
            ));
        }
    }
    Ok(())
}
