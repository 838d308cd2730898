//! `cargo xtask demo`: from a fresh clone on a machine with a docker engine,
//! build everything, seed the base images if needed, start upstream
//! containers (an HTTP echo API, a decoy, a docs service, an sshd git
//! server), run a scripted shell agent in a real bottle and print a short
//! story; then clean up. Every upstream is a container started here; no
//! traffic goes to an outside address.

use std::path::{Path, PathBuf};

const DEMO_TOKEN: &str = "demo-api-token-7c41e2b9";
const SSHD_IMAGE: &str = "bottle-test-sshd:bookworm";
const BASE_IMAGE: &str = crate::seed_base::BASE_TAG;

const ECHO_SERVER: &str = r#"use IO::Socket::INET;
$| = 1;
my $s = IO::Socket::INET->new(LocalPort => 80, Listen => 16, ReuseAddr => 1) or die "listen: $!";
print "listening\n";
while (my $c = $s->accept) {
  my $req = "";
  while (my $l = <$c>) { $req .= $l; last if $l =~ /^\r?\n$/; }
  print "REQUEST ", $req;
  my $body = "{\"service\":\"$ENV{ECHO_NAME}\",\"ok\":true}\n";
  print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n" . $body;
  close $c;
}
"#;

const SSHD_SETUP: &str = r##"set -e
useradd -m -s /bin/sh git
mkdir -p /run/sshd /home/git/.ssh
ssh-keygen -A >/dev/null
ssh-keygen -q -t ed25519 -N '' -f /deploy -C deploy
cp /deploy.pub /home/git/.ssh/authorized_keys
git init -q --bare -b main /srv/app.git
git init -q -b main /tmp/w && cd /tmp/w
echo "# app" > README.md && git add README.md
git -c user.name=upstream -c user.email=up@demo.test commit -q -m "initial commit"
git push -q /srv/app.git main
chown -R git:git /srv/app.git /home/git
chmod 700 /home/git/.ssh && chmod 600 /home/git/.ssh/authorized_keys
echo ready
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o PermitRootLogin=no
"##;

fn docker(args: &[&str]) -> (bool, String, String) {
    match duct::cmd("docker", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
    {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

fn docker_ok(args: &[&str]) -> Result<String, String> {
    let (ok, out, err) = docker(args);
    if ok {
        Ok(out)
    } else {
        Err(format!("docker {}: {err}", args.join(" ")))
    }
}

fn wait_log(container: &str, needle: &str) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        let (_, out, err) = docker(&["logs", container]);
        if out.contains(needle) || err.contains(needle) {
            return Ok(());
        }
        if start.elapsed().as_secs() > 30 {
            return Err(format!("{container} did not start: {out} {err}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The workspace root and its debug binaries (built here).
pub fn build_binaries() -> Result<(PathBuf, PathBuf), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent dir")?
        .to_path_buf();
    println!("building bottle and bottle-sidecar …");
    duct::cmd!(
        "cargo",
        "build",
        "-q",
        "-p",
        "bottle-cli",
        "-p",
        "bottle-sidecars",
        "--bin",
        "bottle",
        "--bin",
        "bottle-sidecar"
    )
    .dir(&root)
    .run()
    .map_err(|e| format!("cargo build: {e}"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok((
        target.join("debug/bottle"),
        target.join("debug/bottle-sidecar"),
    ))
}

/// A `bottle` driver over a temporary home.
pub struct Bottle {
    /// The binary.
    pub bin: PathBuf,
    /// The sidecar binary.
    pub sidecar: PathBuf,
    /// The home.
    pub home: PathBuf,
}

impl Bottle {
    /// Run `bottle --home H args…`; (code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["--home".to_owned(), self.home.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        match duct::cmd(&self.bin, all)
            .env("BOTTLE_SIDECAR_BIN", &self.sidecar)
            .env("DEMO_API_TOKEN", DEMO_TOKEN)
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
        {
            Ok(o) => (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (-1, String::new(), e.to_string()),
        }
    }

    /// `bottle exec <id> -- bash -c <script>`: (code, combined output).
    pub fn sh(&self, id: &str, script: &str) -> (i32, String) {
        let (c, o, e) = self.run(&["exec", id, "--", "bash", "-c", script]);
        (c, format!("{o}{e}"))
    }
}

struct Cleanup {
    containers: Vec<String>,
    network: Option<String>,
    bottle: Option<(Bottle, String)>,
    home: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((b, id)) = &self.bottle {
            let _ = b.run(&["rm", "-f", id]);
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        if let Some(n) = &self.network {
            let _ = docker(&["network", "rm", n]);
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

fn say(line: &str) {
    println!("   {line}");
}

fn mask(text: &str) -> String {
    text.replace(DEMO_TOKEN, "demo-api-…(held by egress)")
}

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        if a == "-h" || a == "--help" {
            println!("usage: cargo xtask demo   (needs a docker engine)");
            return Ok(());
        }
        return Err(format!("demo: unknown argument `{a}`"));
    }
    let (ok, _, err) = docker(&["info"]);
    if !ok {
        return Err(format!(
            "the demo needs a docker engine: `docker info` failed ({err})"
        ));
    }
    if !docker(&["image", "inspect", BASE_IMAGE]).0 || !docker(&["image", "inspect", SSHD_IMAGE]).0
    {
        println!("seeding base images (once) …");
        crate::seed_base::run(&[])?;
    }
    let (bin, sidecar) = build_binaries()?;
    let tag = std::process::id();
    let home = std::env::temp_dir().join(format!("bottle-demo-{tag}"));
    let mut cleanup = Cleanup {
        containers: Vec::new(),
        network: None,
        bottle: None,
        home: home.clone(),
    };
    for d in ["bottles", "agents"] {
        std::fs::create_dir_all(home.join(d)).map_err(|e| e.to_string())?;
    }

    // Upstreams on a network of their own; attached to the bottle later.
    let net = format!("bottle-demo-{tag}");
    docker_ok(&["network", "create", "--label", "dev.bottle.test", &net])?;
    cleanup.network = Some(net.clone());
    let mut start = |name: &str, rest: &[&str]| -> Result<String, String> {
        let full = format!("bottle-demo-{name}-{tag}");
        let mut a = vec![
            "run",
            "-d",
            "--name",
            &full,
            "--label",
            "dev.bottle.test",
            "--network",
            &net,
        ];
        a.extend_from_slice(rest);
        docker_ok(&a)?;
        cleanup.containers.push(full.clone());
        Ok(full)
    };
    let mut echo = |name: &str| -> Result<String, String> {
        let env = format!("ECHO_NAME={name}");
        let c = start(
            name,
            &["--env", &env, BASE_IMAGE, "perl", "-e", ECHO_SERVER],
        )?;
        wait_log(&c, "listening")?;
        Ok(c)
    };
    let api = echo("api")?;
    let decoy = echo("decoy")?;
    let docs = echo("docs")?;
    let git = start("git", &[SSHD_IMAGE, "bash", "-c", SSHD_SETUP])?;
    wait_log(&git, "ready")?;
    let key = docker_ok(&["exec", &git, "cat", "/deploy"])?;
    let host_key = docker_ok(&["exec", &git, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"])?;
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let key_path = home.join("deploy_key");
    std::fs::write(&key_path, format!("{key}\n")).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600));
    }
    let bottle_toml = format!(
        r#"# The demo bottle: one API route with a held token, one gated git remote.
[agent_provider]
template = "shell"

[[egress.routes]]
host = "api.demo.test"
port = 80
plaintext = true              # the demo upstream speaks plain HTTP; real routes use TLS
allow_private = true          # the demo upstreams are containers on a private network
auth = {{ scheme = "bearer", token = "${{DEMO_API_TOKEN}}" }}

[[git.remotes]]
name = "origin"
url = "ssh://git@git.demo.test/srv/app.git"
identity_file = "{}"
known_host_key = "{}"
push = ["refs/heads/bot/*"]

[supervise]
grant_ttl = "10m"

[resources]
cpus = 1.0
memory = "1GiB"
"#,
        key_path.display(),
        host_key.join(" ")
    );
    std::fs::write(home.join("bottles/demo.toml"), bottle_toml).map_err(|e| e.to_string())?;
    std::fs::write(
        home.join("agents/demo.toml"),
        "bottle = \"demo\"\nprompt = \"a scripted demo agent\"\n",
    )
    .map_err(|e| e.to_string())?;

    let b = Bottle { bin, sidecar, home };
    println!("starting the bottle (the first run builds images) …");
    let (code, out, err) = b.run(&["start", "demo", "--yes", "--detach"]);
    if code != 0 {
        return Err(format!("bottle start failed:\n{err}"));
    }
    let id = out.trim().to_owned();
    cleanup.bottle = Some((
        Bottle {
            bin: b.bin.clone(),
            sidecar: b.sidecar.clone(),
            home: b.home.clone(),
        },
        id.clone(),
    ));
    let egress = format!("bottle-{id}-egress");
    for (c, alias) in [
        (&api, "api.demo.test"),
        (&decoy, "decoy.demo.test"),
        (&docs, "docs.demo.test"),
        (&git, "git.demo.test"),
    ] {
        docker_ok(&["network", "connect", "--alias", alias, &egress, c])?;
    }

    println!("\nbottle {id}: a shell agent whose only ways out are the bundle's sidecars");
    println!("   policy: api.demo.test (token held by egress), git origin push refs/heads/bot/*");

    // 1. Allowed call with an injected token.
    step(1, "allowed call, credential injected on the way out");
    let (code, out) = b.sh(
        &id,
        "curl -sS -m 20 -w ' (HTTP %{http_code})' http://api.demo.test/v1/status",
    );
    say(&format!(
        "agent  $ curl http://api.demo.test/v1/status → {}",
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    ));
    if code != 0 {
        return Err(format!("allowed call failed: {out}"));
    }
    let (_, log, _) = docker(&["logs", &api]);
    let auth = log
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .unwrap_or("no Authorization header!");
    say(&format!("api.demo.test received  {}", mask(auth.trim())));
    let (_, env) = b.sh(&id, "env | grep -c demo-api-token || true");
    say(&format!(
        "the agent's environment holds the token {} time(s): it never had it",
        env.trim()
    ));

    // 2. Refused host.
    step(2, "a host outside the policy is refused");
    let (_, out) = b.sh(&id, "curl -sS -m 20 http://decoy.demo.test/ ; echo");
    say(&format!(
        "agent  $ curl http://decoy.demo.test/ → {}",
        out.lines().next().unwrap_or("").trim()
    ));
    let (_, dlog, _) = docker(&["logs", &decoy]);
    say(&format!(
        "decoy.demo.test saw {} request(s)",
        dlog.matches("HTTP/1").count()
    ));

    // 3. Git push through the gate.
    step(3, "clone and push through the git gate");
    let (code, out) = b.sh(
        &id,
        "set -e; cd ~ && git clone -q ssh://git@git.demo.test/srv/app.git app && cd app \
         && git checkout -q -b bot/demo && echo 'fn main() {}' > main.rs && git add main.rs \
         && git commit -qm 'agent: add main.rs' && git push -q origin bot/demo 2>&1 && echo pushed",
    );
    say(&format!(
        "agent  $ git clone … && git push origin bot/demo → {}",
        out.lines().next().unwrap_or("").trim()
    ));
    if code != 0 {
        return Err(format!("push failed: {out}"));
    }
    let landed = docker_ok(&[
        "exec",
        "-u",
        "git",
        &git,
        "git",
        "-C",
        "/srv/app.git",
        "log",
        "--oneline",
        "-1",
        "bot/demo",
    ])?;
    say(&format!("upstream bot/demo is now: {landed}"));

    // 4. A push carrying a secret is refused.
    step(4, "a push that carries a secret is refused");
    let (code, out) = b.sh(
        &id,
        "cd ~/app && printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA\\n-----END OPENSSH PRIVATE KEY-----\\n' > id_demo \
         && git add id_demo && git commit -qm 'agent: oops, a key' && git push -q origin bot/demo 2>&1",
    );
    let reason = out
        .lines()
        .find(|l| l.contains("secret") || l.contains("refused") || l.contains("rejected"))
        .unwrap_or(out.lines().last().unwrap_or(""));
    say(&format!(
        "agent  $ git push origin bot/demo → {} ({})",
        if code == 0 { "ACCEPTED?!" } else { "refused" },
        reason.trim()
    ));
    let landed = docker_ok(&[
        "exec",
        "-u",
        "git",
        &git,
        "git",
        "-C",
        "/srv/app.git",
        "log",
        "--oneline",
        "-1",
        "bot/demo",
    ])?;
    say(&format!("upstream bot/demo is still: {landed}"));

    // 5. Supervise: ask, approve, use.
    step(
        5,
        "the agent asks for more; the operator approves; it works",
    );
    // the MCP server serves only this bottle's agent: its access credential
    let ask = r#"H1='Content-Type: application/json'; H2='Accept: application/json, text/event-stream'; H3="Authorization: Bearer $BOTTLE_ACCESS_KEY"
curl -sS -D /tmp/h -o /dev/null -H "$H1" -H "$H2" -H "$H3" http://bundle:9100/mcp -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"demo-agent","version":"1"}}}'
S=$(grep -i '^mcp-session-id' /tmp/h | cut -d' ' -f2 | tr -d '\r')
curl -sS -o /dev/null -H "$H1" -H "$H2" -H "$H3" -H "mcp-session-id: $S" http://bundle:9100/mcp -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
curl -sS -H "$H1" -H "$H2" -H "$H3" -H "mcp-session-id: $S" http://bundle:9100/mcp -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"request_egress","arguments":{"host":"docs.demo.test","reason":"read the API docs"}}}' | grep -o 'req-[0-9A-Za-z-]*' | head -1"#;
    let (_, before) = b.sh(
        &id,
        "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://docs.demo.test/",
    );
    say(&format!(
        "agent  $ curl http://docs.demo.test/ → HTTP {}",
        before.trim()
    ));
    let (code, req) = b.sh(&id, ask);
    let req = req.trim().to_owned();
    if code != 0 || !req.starts_with("req-") {
        return Err(format!("request_egress failed: {req}"));
    }
    say(&format!(
        "agent  → supervise request_egress docs.demo.test: {req} (pending)"
    ));
    let (code, _, err) = b.run(&["approve", &req, "--allow-private", "--ttl", "10m"]);
    if code != 0 {
        return Err(format!("approve failed: {err}"));
    }
    say(&format!(
        "operator $ bottle approve {req} --allow-private --ttl 10m"
    ));
    let mut after = String::new();
    for _ in 0..40 {
        let (_, o) = b.sh(
            &id,
            "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://docs.demo.test/",
        );
        after = o.trim().to_owned();
        if after == "200" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    say(&format!(
        "agent  $ curl http://docs.demo.test/ → HTTP {after} (grant live, expires in 10m)"
    ));

    let (_, audit, _) = b.run(&["logs", &id, "--audit"]);
    println!(
        "\naudit log: {} decisions recorded ({} denied); `bottle logs {id} --audit` shows them",
        audit.lines().filter(|l| l.contains("\"decision\"")).count(),
        audit.lines().filter(|l| l.contains("\"deny\"")).count()
    );
    if audit.contains(DEMO_TOKEN) {
        return Err("the audit log contains the token".into());
    }
    println!("cleaning up …");
    drop(cleanup);
    println!("done.");
    Ok(())
}
