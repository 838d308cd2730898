//! End to end on a real docker engine (issue 7 "Must show"): a detached
//! shell-agent bottle driven through the `bottle` binary, with the real
//! sidecar bundle, against upstream containers this test starts (an HTTP
//! echo service, a decoy, an sshd git server) attached to the bottle's
//! egress network. Skips when docker is unreachable unless `CI=true`.

use std::io::BufRead;
use std::net::TcpListener;

use bottle_tests::gate::{trial, Trial, DOCKER};
use bottle_tests::support_docker::{docker, docker_ok, labelled, BottleHome, Upstreams};
use bottle_tests::{workspace_bin, SEEDED_IMAGES};

const TOKEN: &str = "e2e-route-TOKEN-4b1d9f27c3";

fn home() -> BottleHome {
    BottleHome::new(
        workspace_bin("bottle-cli", "bottle"),
        workspace_bin("bottle-sidecars", "bottle-sidecar"),
    )
}

fn tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{t:x}", std::process::id())
}

/// Removes the bottle whatever happens.
struct Rm<'a>(&'a BottleHome, String);
impl Drop for Rm<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", &self.1]);
    }
}

fn docker_bottle_end_to_end() {
    let tag = tag();
    let mut ups = Upstreams::new(&tag);
    let echo = ups.echo(&format!("bottle-e2e-echo-{tag}"));
    let decoy = ups.echo(&format!("bottle-e2e-decoy-{tag}"));
    let git = format!("bottle-e2e-git-{tag}");
    let (deploy_key, host_key) = ups.sshd_git(&git);

    let mut h = home();
    let key_path = h.path().join("deploy_key");
    std::fs::write(&key_path, &deploy_key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    h.write(
        "bottles/e2e.toml",
        &format!(
            r#"[agent_provider]
template = "shell"

# The e2e upstream speaks plain HTTP, so the route must say so (and name
# its port) before egress injects a credential outside TLS; the HTTPS path
# is what the security suite attacks.
[[egress.routes]]
host = "echo.test"
port = 80
plaintext = true
allow_private = true
auth = {{ scheme = "bearer", token = "${{E2E_ECHO_TOKEN}}" }}

[[git.remotes]]
name = "origin"
url = "ssh://git@git.test/srv/repo.git"
identity_file = "{}"
known_host_key = "{host_key}"
push = ["refs/heads/bot/*"]

[resources]
cpus = 1.0
memory = "1GiB"
"#,
            key_path.display()
        ),
    );
    h.write("agents/e2e.toml", "bottle = \"e2e\"\n");
    h.env.push(("E2E_ECHO_TOKEN".into(), TOKEN.into()));

    let id = h.start("e2e");
    let _rm = Rm(&h, id.clone());
    let egress_net = format!("bottle-{id}-egress");
    let int_net = format!("bottle-{id}-int");
    let bundle = format!("bottle-{id}-bundle");
    let agent = format!("bottle-{id}-agent");
    ups.attach(&echo, &egress_net, "echo.test");
    ups.attach(&decoy, &egress_net, "decoy.test");
    ups.attach(&git, &egress_net, "git.test");

    // Every target is live: the bundle (outside the agent) reaches it.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gw = |net: &str| {
        docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            net,
        ])
    };
    let (egress_gw, int_gw) = (gw(&egress_net), gw(&int_net));
    let echo_ip = Upstreams::ip(&echo, &egress_net);
    for target in [
        "echo.test/80".to_owned(),
        "decoy.test/80".to_owned(),
        "git.test/22".to_owned(),
        format!("{egress_gw}/{port}"),
    ] {
        let (ok, _, err) = docker(&[
            "exec",
            &bundle,
            "bash",
            "-c",
            &format!("timeout 5 bash -c 'echo > /dev/tcp/{target}'"),
        ]);
        assert!(ok, "control: {target} not live from the bundle: {err}");
    }

    // 1. The allowed route works; the token is injected upstream, the
    //    agent's own Authorization is replaced, the agent never sees it.
    let (code, out) = h.exec(
        &id,
        "curl -sS -m 20 -H 'Authorization: Bearer agent-supplied' http://echo.test/v1/hello",
    );
    assert_eq!(code, 0, "allowed route failed: {out}");
    assert!(out.contains(&format!("echo from {echo}")), "{out}");
    assert!(!out.contains(TOKEN), "token reached the agent: {out}");
    let (_, up_log, _) = docker(&["logs", &echo]);
    assert!(
        up_log.to_ascii_lowercase().contains(&format!(
            "authorization: bearer {}",
            TOKEN.to_ascii_lowercase()
        )),
        "token not injected upstream: {up_log}"
    );
    assert!(!up_log.contains("agent-supplied"), "agent header forwarded");

    // 2. A refused host (live, not in the policy): 403 from egress, never
    //    reaches the decoy.
    let (_, out) = h.exec(
        &id,
        "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://decoy.test/",
    );
    assert_eq!(out.trim(), "403", "{out}");
    let (_, decoy_log, _) = docker(&["logs", &decoy]);
    assert!(
        !decoy_log.contains("HTTP/1"),
        "decoy was reached: {decoy_log}"
    );
    let audit = h.audit(&id);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("decoy.test") && l.contains("\"deny\"")),
        "no deny audit line: {audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("echo.test") && l.contains("\"allow\"")),
        "no allow audit line: {audit}"
    );
    assert!(!audit.contains(TOKEN), "token in the audit log");

    // 3. No other way out: direct TCP to the upstream, the host via either
    //    bridge gateway, the proxy bypassed, DNS for names the bundle resolves.
    for (what, script) in [
        (
            "upstream by IP",
            format!("timeout 5 bash -c 'echo > /dev/tcp/{echo_ip}/80'"),
        ),
        (
            "host via egress gateway",
            format!("timeout 5 bash -c 'echo > /dev/tcp/{egress_gw}/{port}'"),
        ),
        (
            "host via internal gateway",
            format!("timeout 5 bash -c 'echo > /dev/tcp/{int_gw}/{port}'"),
        ),
        (
            "proxy bypassed",
            "curl -sS -m 5 --noproxy '*' http://echo.test/".to_owned(),
        ),
        (
            "DNS of an upstream",
            "timeout 10 getent hosts echo.test".to_owned(),
        ),
        (
            "DNS of the git upstream",
            "timeout 10 getent hosts git.test".to_owned(),
        ),
        (
            "ssh straight to upstream",
            format!(
                "timeout 5 bash -c 'echo > /dev/tcp/{}/22'",
                Upstreams::ip(&git, &egress_net)
            ),
        ),
    ] {
        let (code, out) = h.exec(&id, &script);
        assert_ne!(code, 0, "{what} worked from the agent: {out}");
    }
    let (code, _) = h.exec(&id, "getent hosts bundle");
    assert_eq!(code, 0, "the bundle must resolve");
    drop(listener);

    // 4. Clone and push through the gate land upstream; a ref outside
    //    `push` is refused.
    let (code, out) = h.exec(
        &id,
        "set -e; cd ~ && git clone -q ssh://git@git.test/srv/repo.git r && cd r && cat README \
         && git checkout -q -b bot/e2e && echo change > f && git add f \
         && git commit -qm 'agent change' && git push -q origin bot/e2e 2>&1",
    );
    assert_eq!(code, 0, "clone/push failed: {out}");
    assert!(out.contains("hello from upstream"), "{out}");
    let landed = docker_ok(&[
        "exec",
        "-u",
        "git",
        &git,
        "git",
        "-C",
        "/srv/repo.git",
        "log",
        "--format=%s",
        "bot/e2e",
    ]);
    assert!(
        landed.contains("agent change"),
        "push did not land: {landed}"
    );
    let (code, out) = h.exec(&id, "cd ~/r && git push -q origin HEAD:main 2>&1");
    assert_ne!(code, 0, "push to main accepted: {out}");
    let main = docker_ok(&[
        "exec",
        "-u",
        "git",
        &git,
        "git",
        "-C",
        "/srv/repo.git",
        "log",
        "--format=%s",
        "main",
    ]);
    assert!(!main.contains("agent change"), "main changed upstream");

    // 5. Held secrets are nowhere in the agent: env, /proc, files, inspect.
    let key_line = deploy_key
        .lines()
        .nth(1)
        .expect("key has a body")
        .to_owned();
    let inspect = docker_ok(&["inspect", &agent]);
    for (what, s) in [("route token", TOKEN), ("deploy key", key_line.as_str())] {
        assert!(
            !inspect.contains(s),
            "{what} in docker inspect of the agent"
        );
    }
    let (_, dump) = h.exec(
        &id,
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'",
    );
    assert!(dump.contains("HTTPS_PROXY"), "dump did not run: {dump}");
    assert!(!dump.contains(TOKEN) && !dump.contains(&key_line));
    let (a, b) = TOKEN.split_at(9);
    let (k1, k2) = key_line.split_at(20);
    let (code, hits) = h.exec(
        &id,
        &format!(
            "A='{a}'; B='{b}'; C='{k1}'; D='{k2}'; grep -rIl -e \"$A$B\" -e \"$C$D\" /home /tmp /etc /var /root /run /opt /srv /mnt /usr/local /bottle 2>/dev/null"
        ),
    );
    assert!(
        code != 0 && hits.trim().is_empty(),
        "secret in agent files: {hits}"
    );

    // 6. stop leaves no container/network (the home volume stays);
    //    resume brings the home back.
    let (code, _) = h.exec(&id, "echo kept > ~/note.txt");
    assert_eq!(code, 0);
    let (code, _, err) = h.run(&["stop", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(labelled(&id), vec![format!("volume bottle-{id}-home")]);
    let (code, _, err) = h.run(&["resume", &id]);
    assert_eq!(code, 0, "resume failed: {err}");
    let (code, note) = h.exec(&id, "cat ~/note.txt; test -d ~/r/.git && echo repo-kept");
    assert_eq!(code, 0, "{note}");
    assert!(
        note.contains("kept") && note.contains("repo-kept"),
        "{note}"
    );

    // rm removes everything.
    let (code, _, err) = h.run(&["rm", "-f", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(labelled(&id).is_empty(), "left: {:?}", labelled(&id));
}

fn kill_9_mid_launch_then_gc_leaves_nothing() {
    let h = home();
    h.write(
        "bottles/k9.toml",
        "[agent_provider]\ntemplate = \"shell\"\n[resources]\ncpus = 1.0\nmemory = \"512MiB\"\n",
    );
    h.write("agents/k9.toml", "bottle = \"k9\"\n");
    let reader = h
        .cmd(&["start", "k9", "--yes", "--detach"])
        .stderr_to_stdout()
        .reader()
        .expect("spawn bottle start");
    let mut lines = std::io::BufReader::new(&reader).lines();
    let mut seen = Vec::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("bottle start ended before the bundle started: {seen:?}");
        };
        seen.push(line.clone());
        if line.contains("start bundle") {
            break;
        }
    }
    reader.kill().expect("kill -9");
    let ids: Vec<String> = std::fs::read_dir(h.path().join("state"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    assert!(!labelled(id).is_empty(), "the kill left nothing to collect");
    let (code, out, err) = h.run(&["gc"]);
    assert_eq!(code, 0, "gc failed: {out}{err}");
    assert!(labelled(id).is_empty(), "gc left: {:?}", labelled(id));
    assert!(!h.path().join("state").join(id).exists(), "state left");
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![
        trial!(docker_bottle_end_to_end, &DOCKER, &SEEDED_IMAGES),
        trial!(
            kill_9_mid_launch_then_gc_leaves_nothing,
            &DOCKER,
            &SEEDED_IMAGES
        ),
    ]
}
