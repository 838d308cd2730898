//! The permission queue through the operator's real commands: a real
//! `bottle-sidecar supervise` daemon driven over MCP (streamable HTTP, with
//! curl as the agent's client), then `bottle queue --json`, `bottle approve
//! --ttl 2s` and `bottle deny --reason`, and what the agent and the live
//! policy see after each. Loopback only; no engine needed.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bottle_core::plan::{NoPrompt, ResolveOptions};
use bottle_core::{resolve, Home, Loader, PrepareContext, StateDir};
use bottle_sidecars::supervise::SvConfig;
use bottle_tests::gate::{trial, Trial, CURL};
use bottle_tests::workspace_bin;
use camino::Utf8PathBuf;

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Mcp {
    url: String,
    session: String,
}

fn post(url: &str, session: Option<&str>, body: &str) -> (String, String) {
    let mut args = vec![
        "-sS".to_owned(),
        "-m".into(),
        "10".into(),
        "-D".into(),
        "-".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-H".into(),
        "Accept: application/json, text/event-stream".into(),
    ];
    if let Some(s) = session {
        args.push("-H".into());
        args.push(format!("Mcp-Session-Id: {s}"));
    }
    args.extend(["-d".into(), body.to_owned(), url.to_owned()]);
    let out = duct::cmd("curl", args).read().expect("curl runs");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_owned(), body.to_owned())
}

/// The JSON-RPC result of an SSE or JSON response body.
fn rpc_json(body: &str) -> serde_json::Value {
    let text = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .unwrap_or(body.trim());
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {body}"))
}

impl Mcp {
    fn connect(url: String) -> Mcp {
        let (head, _) = post(
            &url,
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"agent","version":"1"}}}"#,
        );
        let session = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("mcp-session-id")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no session id: {head}"));
        post(
            &url,
            Some(&session),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        Mcp { url, session }
    }

    /// Call a tool; the text of its result.
    fn call(&self, tool: &str, args: serde_json::Value) -> String {
        let body = serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":tool,"arguments":args}});
        let (_, body) = post(&self.url, Some(&self.session), &body.to_string());
        let v = rpc_json(&body);
        v["result"]["content"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|x| x["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| v.to_string())
    }
}

fn bottle(home: &Home, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(workspace_bin("bottle-cli", "bottle"))
        .arg("--home")
        .arg(home.root().as_str())
        .args(args)
        .output()
        .expect("bottle runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn prepared_state(root: &Utf8PathBuf) -> (Home, StateDir) {
    std::fs::create_dir_all(root.join("bottles")).unwrap();
    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::write(
        root.join("bottles/dev.toml"),
        "[[egress.routes]]\nhost = \"api.github.com\"\n",
    )
    .unwrap();
    std::fs::write(root.join("agents/demo.toml"), "bottle = \"dev\"\n").unwrap();
    let home = Home::new(root.clone());
    let (a, b) = Loader::new(home.clone(), None).load("demo").unwrap();
    let (id, slot) = home.allocate("demo", "dev").unwrap();
    let opts = ResolveOptions {
        identity: Some(id.clone()),
        slot,
        ..Default::default()
    };
    let plan = resolve(&a, &b, &opts, &BTreeMap::<String, String>::new(), &NoPrompt).unwrap();
    let state = home.state(&id);
    let ctx = PrepareContext {
        state: &state,
        bundle_host: "127.0.0.1".into(),
    };
    bottle_sidecars::prepare::prepare_all(&plan, &ctx).unwrap();
    // outside a bundle the daemon reads the policy files at their host paths
    let sv_path = state.supervise_dir().join("sv.toml");
    let mut sv = SvConfig::load(sv_path.as_std_path()).unwrap();
    sv.routes = Some(state.routes_path().into_std_path_buf());
    sv.gate = Some(state.git_dir().join("gate.toml").into_std_path_buf());
    sv.save(sv_path.as_std_path()).unwrap();
    (home, state)
}

/// The plan of the bottle in `state` (as `resume` resolves it).
fn plan_for(home: &Home, state: &StateDir) -> bottle_core::BottlePlan {
    let (a, b) = Loader::new(home.clone(), None).load("demo").unwrap();
    let id = bottle_core::Identity::parse(state.path().file_name().unwrap()).unwrap();
    let opts = ResolveOptions {
        identity: Some(id),
        slot: state.slot().unwrap(),
        ..Default::default()
    };
    resolve(&a, &b, &opts, &BTreeMap::<String, String>::new(), &NoPrompt).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn operator_queue_commands_drive_a_real_supervise_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    let (home, state) = prepared_state(&root);
    let port = free_port();
    // sv.toml names the secrets dir as the bundle mounts it; this daemon
    // runs on the host, so it reads the state's own
    let sv = state.supervise_dir().join("sv.toml");
    let text = std::fs::read_to_string(&sv).unwrap();
    assert!(text.contains("\"/bottle/secrets\""), "{text}");
    std::fs::write(
        &sv,
        text.replace(
            "\"/bottle/secrets\"",
            &format!("{:?}", state.secrets_dir().as_str()),
        ),
    )
    .unwrap();
    let daemon = Daemon(
        Command::new(workspace_bin("bottle-sidecars", "bottle-sidecar"))
            .args(["supervise", "--config"])
            .arg(state.supervise_dir().join("sv.toml").as_str())
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--queue",
                state.queue_dir().as_str(),
            ])
            .args(["--audit", state.audit_path().as_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("supervise starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "supervise did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = Mcp::connect(format!("http://127.0.0.1:{port}/mcp"));

    // the agent asks; the operator sees it pending in `bottle queue --json`
    let asked = agent.call(
        "request_egress",
        serde_json::json!({"host": "docs.example.org", "paths": ["/v1/**"], "methods": ["GET"], "reason": "read the API docs"}),
    );
    let (code, out, err) = bottle(&home, &["queue", "--json"]);
    assert_eq!(code, 0, "{err}");
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["schema_version"], 1);
    let req = &q["requests"][0];
    let id = req["id"].as_str().unwrap().to_owned();
    assert!(
        asked.contains(&id),
        "the agent was not told its request id: {asked}"
    );
    assert_eq!(req["status"], "pending");
    assert_eq!(req["identity"], state.path().file_name().unwrap());
    assert_eq!(req["details"]["host"], "docs.example.org");

    // approve for 2 s: the live policy gets the grant, the agent sees approved
    let (code, out, err) = bottle(&home, &["approve", &id, "--ttl", "2s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("approved {id}")), "{out}");
    let routes = std::fs::read_to_string(state.routes_path()).unwrap();
    assert!(
        routes.contains(&format!("grant = \"{id}\"")) && routes.contains("docs.example.org"),
        "{routes}"
    );
    assert!(routes.contains("expires_at"), "{routes}");
    let status = agent.call("request_status", serde_json::json!({"id": id}));
    assert!(status.contains("approved"), "{status}");

    // after the TTL the grant leaves the policy and the request reads expired
    std::thread::sleep(Duration::from_millis(3100));
    let (code, out, _) = bottle(&home, &["queue", "--all", "--json"]);
    assert_eq!(code, 0);
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = q["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(r["status"], "expired", "{r}");
    let routes = std::fs::read_to_string(state.routes_path()).unwrap();
    assert!(
        !routes.contains(&id),
        "the expired grant is still in the policy: {routes}"
    );

    // deny with a reason: the agent reads the reason
    let asked = agent.call(
        "request_egress",
        serde_json::json!({"host": "pastebin.example.net", "reason": "share the logs"}),
    );
    let (_, out, _) = bottle(&home, &["queue", "--json"]);
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id2 = q["requests"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{asked} / {out}"))
        .to_owned();
    let (code, _, err) = bottle(
        &home,
        &[
            "deny",
            &id2,
            "--reason",
            "no paste sites; attach logs to the issue",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let status = agent.call("request_status", serde_json::json!({"id": id2}));
    assert!(
        status.contains("denied") && status.contains("no paste sites"),
        "{status}"
    );
    assert!(!std::fs::read_to_string(state.routes_path())
        .unwrap()
        .contains("pastebin"));

    // a second decision on the same request is refused with a reason
    let (code, _, err) = bottle(&home, &["approve", &id2]);
    assert_ne!(code, 0);
    assert!(err.contains("fix:"), "{err}");

    // capability requests are recorded and applied on resume: resource asks
    // (written the way the tool's description invites) change the plan's
    // limits, a package is listed for the operator; approve says up front
    // exactly what resume will set
    for (kind, detail) in [
        ("memory", "8 GiB memory"),
        ("cpu", "3 CPUs"),
        ("package", "jq"),
    ] {
        agent.call(
            "request_capability",
            serde_json::json!({"kind": kind, "detail": detail, "reason": "the tests need it"}),
        );
    }
    let (_, out, _) = bottle(&home, &["queue", "--json"]);
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    let caps: Vec<(String, String)> = q["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["details"]["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(caps.len(), 3, "{out}");
    for (cap, kind) in &caps {
        let (code, said, err) = bottle(&home, &["approve", cap]);
        assert_eq!(code, 0, "{err}");
        let expect = match kind.as_str() {
            "memory" => "sets memory limit 8 GiB (8589934592 bytes)",
            "cpu" => "sets CPU limit 3 CPUs",
            _ => "not applied automatically",
        };
        assert!(said.contains(expect), "approve {kind}: {said}");
    }
    let mut plan = plan_for(&home, &state);
    let applied =
        bottle_sidecars::prepare::apply_capabilities(&mut plan, state.path().as_std_path());
    assert_eq!(plan.resources.memory_bytes, 8 << 30, "{applied:?}");
    assert_eq!(plan.resources.cpus, 3.0, "{applied:?}");
    let summary: Vec<(String, bool)> = applied
        .iter()
        .map(|c| (c.summary.clone(), c.outcome.is_ok()))
        .collect();
    assert!(
        summary.contains(&("memory: 8 GiB memory".to_owned(), true)),
        "{summary:?}"
    );
    assert!(
        summary.contains(&("package: jq".to_owned(), false)),
        "{summary:?}"
    );

    // every step is on record
    let audit = std::fs::read_to_string(state.audit_path()).unwrap();
    for needle in [id.as_str(), id2.as_str()] {
        assert!(
            audit.lines().filter(|l| l.contains(needle)).count() >= 2,
            "{needle} not audited: {audit}"
        );
    }
    drop(daemon);
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![trial!(
        operator_queue_commands_drive_a_real_supervise_daemon,
        &CURL
    )]
}
