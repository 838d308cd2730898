//! The security suite (THREAT-MODEL S1–S10): every attack script in
//! `tests/security/*.sh` runs inside a real bottle, and the test asserts
//! both what the agent observed and the audit line the attack left.
//!
//! Written once and instantiated per backend by [`backend_conformance!`]
//! (object_store's shared-suite pattern). Every target is a container or
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
//! - `upstream-must-not-see: DB_PASSWORD | <text>` — never reached an upstream
//! - `host-check: decoy-untouched | udp-silent | upstream-git-unchanged |
//!   upstream-saw-token-not-agent-auth`

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use bottle_tests::support_docker::{
    docker, docker_ok, image_exists, BottleHome, Upstreams, BASE_IMAGE, SSHD_IMAGE,
};
use bottle_tests::{require, require_docker, workspace_bin, workspace_root};

const ROUTE_TOKEN: &str = "sec-route-TOKEN-7f3a9c21e5d4b8a6";
/// A held secret the agent has in its env (a `${HOST_VAR}` env value):
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
    must_not_see: Vec<String>,
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
        must_not_see: Vec::new(),
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
            "upstream-must-not-see" => a.must_not_see.push(v.to_owned()),
            "host-check" => a.host_checks.push(v.to_owned()),
            _ => {}
        }
    }
    a
}

/// How a backend lays out the networks the test attaches upstreams to.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Backend id passed to `bottle start --backend`.
    backend: &'static str,
    /// Runtime for docker (`runc`, `runsc`).
    runtime: Option<&'static str>,
}

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
    fn ready(&self) -> bool {
        if !require_docker() {
            return false;
        }
        if !require(
            "seeded images",
            image_exists(BASE_IMAGE) && image_exists(SSHD_IMAGE),
            "run `cargo xtask seed-base`",
        ) {
            return false;
        }
        match (self.backend, self.runtime) {
            ("docker", Some("runsc")) => {
                let (_, info, _) = docker(&["info", "--format", "{{json .Runtimes}}"]);
                if !info.contains("runsc") {
                    eprintln!("SKIPPED: gVisor (runsc) is not registered with this engine; the runc suite covers docker");
                    return false;
                }
                true
            }
            ("smolmachines", _) => {
                if std::env::var("BOTTLE_TEST_SMOLVM").is_ok_and(|v| v == "1") {
                    true
                } else {
                    eprintln!("SKIPPED: smolmachines suite needs a host that boots micro-VMs (BOTTLE_TEST_SMOLVM=1; `cargo xtask integration --backend smolmachines`)");
                    false
                }
            }
            _ => true,
        }
    }
}

/// Removes a bottle whatever happens.
struct Rm<'a>(&'a BottleHome, String);
impl Drop for Rm<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", &self.1]);
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
    vars: &BTreeMap<&str, String>,
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

fn run_suite(t: Target) {
    if !t.ready() {
        return;
    }
    let tag = format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut ups = Upstreams::new(&tag);
    let echo = ups.echo(&format!("bottle-sec-echo-{tag}"));
    let decoy = ups.echo(&format!("bottle-sec-decoy-{tag}"));
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
DB_PASSWORD = "${{SEC_DB_PASSWORD}}"

[[egress.routes]]
host = "echo.test"
paths = ["/allowed/**"]
methods = ["GET", "POST"]
allow_private = true
auth = {{ scheme = "bearer", token = "${{SEC_ROUTE_TOKEN}}" }}

[[egress.routes]]
host = "decoy-private.test"

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

    let id = h.start("sec");
    let _rm = Rm(&h, id.clone());
    let other = h.start("other");
    let _rm_other = Rm(&h, other.clone());
    let egress = t.egress_network(&id);
    let internal = t.internal_network(&id);
    let bundle = format!("bottle-{id}-bundle");
    ups.attach(&echo, &egress, "echo.test");
    docker_ok(&[
        "network",
        "connect",
        "--alias",
        "decoy.test",
        "--alias",
        "decoy-private.test",
        &egress,
        &decoy,
    ]);
    ups.attach(&git, &egress, "git.test");

    let tcp_listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let other_int = t.internal_network(&other);
    let vars: BTreeMap<&str, String> = BTreeMap::from([
        ("ECHO_IP", container_ip(&echo, &egress)),
        ("DECOY_IP", container_ip(&decoy, &egress)),
        ("GIT_IP", container_ip(&git, &egress)),
        ("EGRESS_GW", gateway(&egress)),
        ("INT_GW", gateway(&internal)),
        (
            "HOST_PORT",
            tcp_listener.local_addr().unwrap().port().to_string(),
        ),
        ("UDP_PORT", udp.local_addr().unwrap().port().to_string()),
        (
            "OTHER_BUNDLE_IP",
            container_ip(&format!("bottle-{other}-bundle"), &other_int),
        ),
        (
            "OTHER_AGENT_IP",
            container_ip(&format!("bottle-{other}-agent"), &other_int),
        ),
    ]);

    // Controls: every target answers from outside the agent.
    let tcp_from = |container: &str, target: &str| {
        docker(&[
            "exec",
            container,
            "bash",
            "-c",
            &format!("timeout 5 bash -c 'echo > /dev/tcp/{target}'"),
        ])
        .0
    };
    for target in [
        format!("{}/80", vars["ECHO_IP"]),
        format!("{}/80", vars["DECOY_IP"]),
        format!("{}/22", vars["GIT_IP"]),
        "decoy-private.test/80".to_owned(),
        format!("{}/{}", vars["EGRESS_GW"], vars["HOST_PORT"]),
    ] {
        assert!(
            tcp_from(&bundle, &target),
            "control: {target} does not answer from the bundle"
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
        udp.recv_from(&mut buf).is_ok(),
        "control: UDP from the bundle to the host listener did not arrive"
    );

    let prelude = std::fs::read_to_string(workspace_root().join("tests/security/lib.sh")).unwrap();
    let exports: String = vars
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    let key_body = deploy_key.lines().nth(1).unwrap_or_default().to_owned();
    let secrets = [ROUTE_TOKEN.to_owned(), key_body.clone()];
    let upstream_git = || {
        docker_ok(&[
            "exec",
            "-u",
            "git",
            &git,
            "git",
            "-C",
            "/srv/repo.git",
            "for-each-ref",
        ])
    };
    let logs = |c: &str| docker(&["logs", c]).1;

    let mut results: Vec<(Attack, Result<(), String>, String)> = Vec::new();
    for attack in attacks() {
        let before_audit = audit_lines(&h, &id).len();
        let before_git = upstream_git();
        let before_decoy = logs(&decoy).matches("REQUEST").count();
        let before_echo = logs(&echo).len();
        while udp.recv_from(&mut buf).is_ok() {}
        let script = format!("{prelude}\n{exports}\n{}", attack.body);
        let (code, out) = h.exec(&id, &script);
        let mut problems = Vec::new();
        match attack.expect {
            Expect::Fail if code == 0 => {
                problems.push(format!("the attack succeeded (exit 0): {}", tail(&out)))
            }
            Expect::Ok if code != 0 => {
                problems.push(format!("the control failed (exit {code}): {}", tail(&out)))
            }
            _ => {}
        }
        for s in &secrets {
            if out.contains(s.as_str()) {
                problems.push("a held secret reached the agent's output".into());
            }
        }
        if !attack.audit.is_empty() {
            // decisions are written as they happen; allow the daemons a moment
            let mut found = false;
            for _ in 0..20 {
                let lines = audit_lines(&h, &id);
                if lines[before_audit.min(lines.len())..]
                    .iter()
                    .any(|l| matches(l, &attack.audit, &vars))
                {
                    found = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !found {
                let lines = audit_lines(&h, &id);
                let new: Vec<String> = lines[before_audit.min(lines.len())..]
                    .iter()
                    .map(|l| l.to_string())
                    .collect();
                problems.push(format!(
                    "no audit line matching {:?}; new lines: {new:?}",
                    attack.audit
                ));
            }
        }
        for what in &attack.must_not_see {
            let needles = if what == "DB_PASSWORD" {
                encodings(DB_PASSWORD)
            } else {
                vec![what.clone()]
            };
            for c in [&echo, &decoy] {
                let log = logs(c);
                let new = if c == &echo {
                    &log[before_echo.min(log.len())..]
                } else {
                    log.as_str()
                };
                if needles.iter().any(|n| new.contains(n.as_str())) {
                    problems.push(format!("{what} reached upstream {c}"));
                }
            }
        }
        for check in &attack.host_checks {
            match check.as_str() {
                "decoy-untouched" => {
                    if logs(&decoy).matches("REQUEST").count() != before_decoy {
                        problems.push("the decoy was reached".into());
                    }
                }
                "udp-silent" => {
                    if let Ok((n, from)) = udp.recv_from(&mut buf) {
                        problems.push(format!(
                            "a UDP datagram from {from} reached the host: {:?}",
                            String::from_utf8_lossy(&buf[..n])
                        ));
                    }
                }
                "upstream-git-unchanged" => {
                    if upstream_git() != before_git {
                        problems.push("the upstream repository changed".into());
                    }
                }
                "upstream-saw-token-not-agent-auth" => {
                    let log = logs(&echo);
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
        let result = if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        };
        results.push((attack, result, tail(&out)));
    }

    // S1 from the host: nothing secret in `docker inspect` of the agent or
    // in any host process's command line.
    let mut host_problems = Vec::new();
    if t.backend == "docker" {
        let inspect = docker_ok(&["inspect", &format!("bottle-{id}-agent")]);
        if secrets.iter().any(|s| inspect.contains(s.as_str())) {
            host_problems.push("a held secret is in `docker inspect` of the agent".to_owned());
        }
        if inspect.contains(DB_PASSWORD) {
            host_problems.push("the agent's env secret is visible in `docker inspect` (it must come from an env file)".into());
        }
    }
    let ps = duct::cmd!("ps", "-eo", "args").read().unwrap_or_default();
    for s in secrets.iter().chain([&DB_PASSWORD.to_owned()]) {
        if ps.contains(s.as_str()) {
            host_problems.push("a held secret is on a host command line".into());
        }
    }

    // S9: kill the bundle: the agent has no network at all.
    docker_ok(&["kill", &bundle]);
    let (code, out) = h.exec(
        &id,
        &format!("{prelude}\n{exports}\ncurl -sS -m 5 -f http://echo.test/allowed/x || tcp bundle 8888 || tcp \"$ECHO_IP\" 80"),
    );
    if code == 0 {
        host_problems.push(format!(
            "S9: the agent still had a route out after the bundle died: {}",
            tail(&out)
        ));
    }
    let (_, ls, _) = h.run(&["ls", "--json"]);
    if !ls.contains("degraded") {
        host_problems.push(format!(
            "S9: `bottle ls` does not show the bottle degraded: {ls}"
        ));
    }

    // S10: the record holds no secret value in any form.
    let audit = h.audit(&id);
    for s in secrets.iter().cloned().chain(encodings(DB_PASSWORD)) {
        if audit.contains(s.as_str()) {
            host_problems.push("a secret value is in the audit log".into());
        }
    }

    let report: Vec<serde_json::Value> = results
        .iter()
        .map(|(a, r, observed)| {
            serde_json::json!({
                "backend": t.backend, "runtime": t.runtime, "invariant": a.invariant, "attack": a.title,
                "script": format!("tests/security/{}", a.file), "result": if r.is_ok() { "held" } else { "BROKEN" },
                "observed": observed,
            })
        })
        .collect();
    let _ = std::fs::write(
        workspace_root().join(format!(
            "target/security-report-{}-{}.json",
            t.backend,
            t.runtime.unwrap_or("default")
        )),
        serde_json::to_string_pretty(&report).unwrap(),
    );
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(a, r, _)| {
            r.as_ref()
                .err()
                .map(|e| format!("{} {} ({}): {e}", a.invariant, a.title, a.file))
        })
        .chain(host_problems)
        .collect();
    eprintln!(
        "security suite on {} ({}): {} attacks, {} broken",
        t.backend,
        t.runtime.unwrap_or("default runtime"),
        results.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "invariants broken:\n{}",
        failures.join("\n")
    );
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

/// The same attacks for every backend (object_store's shared suite).
macro_rules! backend_conformance {
    ($($name:ident => $target:expr;)*) => {$(
        mod $name {
            #[test]
            fn invariants_hold_against_every_attack() {
                use super::Target;
                super::run_suite($target);
            }
        }
    )*};
}

backend_conformance! {
    docker_runc => Target { backend: "docker", runtime: Some("runc") };
    docker_gvisor => Target { backend: "docker", runtime: Some("runsc") };
    smolmachines => Target { backend: "smolmachines", runtime: None };
}

#[test]
fn every_attack_script_declares_an_outcome() {
    let all = attacks();
    assert!(all.len() >= 30, "only {} attack scripts", all.len());
    for inv in ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"] {
        assert!(
            all.iter().any(|a| a.invariant.starts_with(inv)),
            "no attack for {inv}"
        );
    }
    for a in &all {
        assert!(
            a.expect != Expect::Ok || !a.audit.is_empty() || !a.host_checks.is_empty(),
            "{}: a control must check something beyond its exit code",
            a.file
        );
    }
}
