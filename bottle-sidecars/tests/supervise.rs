//! supervise end to end: a real rmcp client (streamable HTTP) drives the
//! daemon; the operator API answers; policy files, statuses and audit lines
//! are checked from the outside.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bottle_sidecars::audit::AuditLog;
use bottle_sidecars::supervise::{self, queue, Narrowing, Status};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

type Client = RunningService<RoleClient, ClientConfig>;

/// One bottle's state dir with policy files, sv.toml and a running daemon.
struct Bottle {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), supervise::Error>>,
}

impl Drop for Bottle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const ROUTES: &str = r#"identity = "demo-dev-abc1"

[[routes]]
host = "api.example.com"
paths = ["/v1/**"]
methods = ["GET", "POST"]
auth = { scheme = "bearer", secret = "route-api-example-token" }
"#;

const GATE: &str = r#"mirrors_dir = "/bottle/git/mirrors"
secrets_dir = "/bottle/secrets"

[[remotes]]
name = "origin"
url = "file:///srv/upstream.git"
push = ["refs/heads/bot/*", { pattern = "refs/heads/wip/*", force = true }]
"#;

impl Bottle {
    async fn start(sv_extra: &str) -> Bottle {
        Self::start_with_access(sv_extra, None).await
    }

    /// With `access`: the bundle's access credential file holds it and the
    /// daemon requires it.
    async fn start_with_access(sv_extra: &str, access: Option<&str>) -> Bottle {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let state = root.join("demo-dev-abc1");
        std::fs::create_dir_all(state.join("egress")).unwrap();
        std::fs::create_dir_all(state.join("git")).unwrap();
        std::fs::create_dir_all(state.join("supervise")).unwrap();
        std::fs::write(state.join("egress/routes.toml"), ROUTES).unwrap();
        std::fs::write(state.join("git/gate.toml"), GATE).unwrap();
        let key = queue::init(&state).unwrap();
        let sv = format!(
            "identity = \"demo-dev-abc1\"\noperator_key = \"{key}\"\nroutes = {:?}\ngate = {:?}\n{sv_extra}",
            state.join("egress/routes.toml"),
            state.join("git/gate.toml"),
        );
        std::fs::write(supervise::sv_path(&state), sv).unwrap();
        let audit = AuditLog::open(&queue::audit_path(&state), "demo-dev-abc1").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let access_key = access.map(|k| {
            let p = state.join("access-key");
            std::fs::write(&p, k).unwrap();
            p
        });
        let opts = supervise::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            config: supervise::sv_path(&state),
            queue: state.join("queue"),
            access_key,
        };
        let task = tokio::spawn(supervise::serve(opts, audit, tx));
        let addr = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("daemon ready in time")
            .expect("daemon sent its address");
        Bottle {
            _tmp: tmp,
            root,
            state,
            addr,
            task,
        }
    }

    async fn client(&self) -> Client {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", self.addr)),
        );
        ClientConfig::default()
            .serve(transport)
            .await
            .expect("MCP handshake")
    }

    fn audit(&self) -> Vec<Value> {
        read_audit(&queue::audit_path(&self.state))
    }

    fn routes(&self) -> toml::Table {
        std::fs::read_to_string(self.state.join("egress/routes.toml"))
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn read_audit(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// Call a tool; returns (is_error, text).
async fn call(client: &Client, name: &'static str, args: Value) -> (bool, String) {
    let args = args.as_object().cloned().unwrap_or_default();
    let result = client
        .call_tool(CallToolRequestParams::new(name).with_arguments(args))
        .await
        .expect("tools/call answered");
    let text = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n");
    (result.is_error == Some(true), text)
}

async fn call_ok(client: &Client, name: &'static str, args: Value) -> Value {
    let (err, text) = call(client, name, args).await;
    assert!(!err, "{name} failed: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} returned non-JSON {text:?}: {e}"))
}

fn has_line(audit: &[Value], pred: impl Fn(&Value) -> bool) -> bool {
    audit.iter().any(pred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_schemas_and_policy_hides_credentials() {
    let b = Bottle::start("").await;
    let client = b.client().await;

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "list_policy",
            "request_capability",
            "request_egress",
            "request_git_push",
            "request_status"
        ]
    );
    for t in &tools {
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} needs a description",
            t.name
        );
        if t.name.starts_with("request_") && t.name != "request_status" {
            let required = t.input_schema.get("required").cloned().unwrap_or_default();
            assert!(
                required.as_array().unwrap().contains(&json!("reason")),
                "{}: {required}",
                t.name
            );
            let props = t
                .input_schema
                .get("properties")
                .unwrap()
                .as_object()
                .unwrap();
            for (field, schema) in props {
                assert!(
                    schema.get("description").is_some(),
                    "{}.{field} needs a description",
                    t.name
                );
            }
        }
    }

    let policy = call_ok(&client, "list_policy", json!({})).await;
    let routes = policy["egress"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["host"], "api.example.com");
    assert_eq!(routes[0]["paths"], json!(["/v1/**"]));
    assert_eq!(routes[0]["credential_injected"], true);
    let text = policy.to_string();
    assert!(
        !text.contains("route-api-example-token") && !text.contains("bearer"),
        "{text}"
    );
    let remotes = policy["git"]["remotes"].as_array().unwrap();
    assert_eq!(remotes[0]["name"], "origin");
    assert_eq!(
        remotes[0]["push"],
        json!(["refs/heads/bot/*", "refs/heads/wip/*"])
    );
    assert!(has_line(&b.audit(), |l| l["event"] == "list_policy"
        && l["sidecar"] == "supervise"));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_request_approved_with_ttl_goes_live_then_expires() {
    let b = Bottle::start("").await;
    let client = b.client().await;

    let out = call_ok(
        &client,
        "request_egress",
        json!({"host": "Upstream.Test:8080", "paths": ["/data/**"], "methods": ["get"], "reason": "fetch the test data set"}),
    )
    .await;
    let id = out["id"].as_str().unwrap().to_owned();
    assert_eq!(out["status"], "pending");
    assert!(supervise::is_request_id(&id));

    // The operator sees it (this is what `bottle queue` prints).
    let pending = queue::list(&b.state).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    assert_eq!(pending[0].status, Status::Pending);
    assert_eq!(pending[0].reason, "fetch the test data set");
    assert_eq!(queue::pending_count(&b.state), 1);
    let (found_dir, found) = queue::find_request(&b.root, &id).expect("found across bottles");
    assert_eq!(found_dir, b.state);
    assert_eq!(found.id, id);
    // Nothing is granted yet.
    assert_eq!(b.routes()["routes"].as_array().unwrap().len(), 1);
    let status = call_ok(&client, "request_status", json!({"id": id})).await;
    assert_eq!(status["status"], "pending");

    // Approve, narrowed to one path, for 2 s.
    let narrowing = Narrowing {
        paths: Some(vec!["/data/set.csv".into()]),
        ..Default::default()
    };
    let decision = queue::approve(&b.state, &id, Some(Duration::from_secs(2)), &narrowing).unwrap();
    let routes = b.routes();
    let grant = routes["routes"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_table()
        .unwrap();
    assert_eq!(grant["host"].as_str(), Some("upstream.test"));
    assert_eq!(grant["port"].as_integer(), Some(8080));
    assert_eq!(
        grant["paths"].as_array().unwrap()[0].as_str(),
        Some("/data/set.csv")
    );
    assert_eq!(
        grant["methods"].as_array().unwrap()[0].as_str(),
        Some("GET")
    );
    assert_eq!(grant["grant"].as_str(), Some(id.as_str()));
    assert_eq!(grant["expires_at"].as_str(), decision.expires_at.as_deref());
    assert!(grant.get("auth").is_none());

    let status = call_ok(&client, "request_status", json!({"id": id})).await;
    assert_eq!(status["status"], "approved", "{status}");
    assert_eq!(
        status["granted"]["details"]["paths"],
        json!(["/data/set.csv"])
    );
    assert_eq!(queue::pending_count(&b.state), 0);
    // Approving twice is refused.
    assert!(matches!(
        queue::approve(&b.state, &id, None, &Narrowing::default()),
        Err(queue::QueueError::AlreadyDecided { .. })
    ));

    // After the TTL: the agent is told it expired, the sweep removes the route.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = call_ok(&client, "request_status", json!({"id": id})).await;
        if status["status"] == "expired" {
            break;
        }
        assert_eq!(status["status"], "approved");
        assert!(Instant::now() < deadline, "never expired: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let swept = queue::sweep_expired(&b.state).unwrap();
    assert_eq!(swept.routes, vec![id.clone()]);
    assert_eq!(b.routes()["routes"].as_array().unwrap().len(), 1);
    assert_eq!(
        b.routes()["routes"][0]["host"].as_str(),
        Some("api.example.com")
    );
    let policy = call_ok(&client, "list_policy", json!({})).await;
    assert_eq!(policy["egress"]["routes"].as_array().unwrap().len(), 1);

    let audit = b.audit();
    assert!(has_line(&audit, |l| l["event"] == "request"
        && l["decision"] == "queued"
        && l["id"] == id.as_str()
        && l["request"]["details"]["host"] == "upstream.test"));
    assert!(has_line(&audit, |l| l["event"] == "decision"
        && l["actor"] == "operator"
        && l["decision"] == "approve"
        && l["id"] == id.as_str()));
    assert!(has_line(&audit, |l| l["event"] == "grant_expired"
        && l["id"] == id.as_str()));
    assert!(has_line(&audit, |l| l["event"] == "status"
        && l["status"] == "expired"));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_reason_reaches_the_agent_and_git_grants_land_in_gate_toml() {
    let b = Bottle::start("").await;
    let client = b.client().await;

    let a = call_ok(&client, "request_git_push", json!({"remote": "origin", "ref_pattern": "refs/heads/feature/login", "reason": "push my work"})).await;
    let a = a["id"].as_str().unwrap().to_owned();
    queue::deny(&b.state, &a, Some("push to bot/* instead")).unwrap();
    let status = call_ok(&client, "request_status", json!({"id": a})).await;
    assert_eq!(status["status"], "denied");
    assert_eq!(status["reason"], "push to bot/* instead");
    assert!(has_line(&b.audit(), |l| l["event"] == "decision"
        && l["decision"] == "deny"
        && l["id"] == a.as_str()));

    let c = call_ok(
        &client,
        "request_git_push",
        json!({"remote": "origin", "ref_pattern": "refs/heads/release/*", "reason": "release"}),
    )
    .await;
    let c = c["id"].as_str().unwrap().to_owned();
    let narrowing = Narrowing {
        ref_pattern: Some("refs/heads/release/1.0".into()),
        ..Default::default()
    };
    queue::approve(&b.state, &c, None, &narrowing).unwrap();
    let gate: toml::Table = std::fs::read_to_string(b.state.join("git/gate.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let grants = gate["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["remote"].as_str(), Some("origin"));
    assert_eq!(
        grants[0]["pattern"].as_str(),
        Some("refs/heads/release/1.0")
    );
    assert_eq!(grants[0]["grant"].as_str(), Some(c.as_str()));
    assert!(grants[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    // The git gate's own typed parser accepts what approve wrote.
    bottle_sidecars::git_gate::config::GateConfig::load(&b.state.join("git/gate.toml")).unwrap();
    let policy = call_ok(&client, "list_policy", json!({})).await;
    assert_eq!(
        policy["git"]["remotes"][0]["push"],
        json!([
            "refs/heads/bot/*",
            "refs/heads/wip/*",
            "refs/heads/release/1.0"
        ])
    );
    // Revoking an approval removes the grant at once.
    queue::deny(&b.state, &c, Some("changed my mind")).unwrap();
    let gate: toml::Table = std::fs::read_to_string(b.state.join("git/gate.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(gate
        .get("grants")
        .and_then(|g| g.as_array())
        .is_none_or(|g| g.is_empty()));
    assert!(has_line(&b.audit(), |l| l["decision"] == "revoke"
        && l["id"] == c.as_str()));

    // Unknown remote and bad patterns are refused with an actionable message.
    let (err, text) = call(
        &client,
        "request_git_push",
        json!({"remote": "upstream", "ref_pattern": "refs/heads/x", "reason": "r"}),
    )
    .await;
    assert!(err && text.contains("origin"), "{text}");
    let (err, text) = call(
        &client,
        "request_git_push",
        json!({"remote": "origin", "ref_pattern": "main", "reason": "r"}),
    )
    .await;
    assert!(err && text.contains("refs/"), "{text}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_queue_files_grant_nothing() {
    let b = Bottle::start("").await;
    let client = b.client().await;
    let queue_dir = b.state.join("queue");

    // A legitimately approved request whose decision the attacker will replay.
    let good = call_ok(
        &client,
        "request_capability",
        json!({"kind": "package", "detail": "ripgrep", "reason": "search"}),
    )
    .await;
    let good = good["id"].as_str().unwrap().to_owned();
    queue::approve(&b.state, &good, None, &Narrowing::default()).unwrap();
    assert_eq!(queue::approved_capabilities(&b.state).unwrap().len(), 1);

    let evil = call_ok(
        &client,
        "request_egress",
        json!({"host": "evil.example.com", "reason": "exfil"}),
    )
    .await;
    let evil = evil["id"].as_str().unwrap().to_owned();
    let routes_before = std::fs::read(b.state.join("egress/routes.toml")).unwrap();

    // 1. A hand-written "approved" decision without a valid signature.
    let forged = json!({
        "id": evil, "verdict": "approved", "decided_at": "2026-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
        "grant": {"kind": "egress", "details": {"host": "evil.example.com"}},
        "signature": "00".repeat(64),
    });
    std::fs::write(
        queue_dir.join(format!("{evil}.decision.json")),
        forged.to_string(),
    )
    .unwrap();
    let status = call_ok(&client, "request_status", json!({"id": evil})).await;
    assert_eq!(status["status"], "pending", "{status}");
    assert!(status.get("granted").is_none());
    let listed = queue::list(&b.state).unwrap();
    assert_eq!(
        listed.iter().find(|r| r.id == evil).unwrap().status,
        Status::Pending
    );
    assert!(has_line(&b.audit(), |l| l["event"] == "forged_decision"
        && l["id"] == evil.as_str()
        && l["rule"] == "bad-signature"));

    // 2. Replay: a validly signed decision for another request.
    let mut replay: Value = serde_json::from_slice(
        &std::fs::read(queue_dir.join(format!("{good}.decision.json"))).unwrap(),
    )
    .unwrap();
    std::fs::write(
        queue_dir.join(format!("{evil}.decision.json")),
        replay.to_string(),
    )
    .unwrap();
    assert_eq!(
        call_ok(&client, "request_status", json!({"id": evil})).await["status"],
        "pending"
    );
    replay["id"] = json!(evil);
    std::fs::write(
        queue_dir.join(format!("{evil}.decision.json")),
        replay.to_string(),
    )
    .unwrap();
    assert_eq!(
        call_ok(&client, "request_status", json!({"id": evil})).await["status"],
        "pending"
    );

    // 3. A decision signed with some other key.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("queue")).unwrap();
    std::fs::copy(
        queue_dir.join(format!("{evil}.json")),
        other.path().join(format!("queue/{evil}.json")),
    )
    .unwrap();
    std::fs::remove_file(queue_dir.join(format!("{evil}.decision.json"))).unwrap();
    queue::approve(other.path(), &evil, None, &Narrowing::default()).unwrap_err(); // no routes.toml there
    let cap = call_ok(
        &client,
        "request_capability",
        json!({"kind": "memory", "detail": "8 GiB", "reason": "build"}),
    )
    .await;
    let cap = cap["id"].as_str().unwrap().to_owned();
    std::fs::copy(
        queue_dir.join(format!("{cap}.json")),
        other.path().join(format!("queue/{cap}.json")),
    )
    .unwrap();
    queue::approve(other.path(), &cap, None, &Narrowing::default()).unwrap();
    std::fs::copy(
        other.path().join(format!("queue/{cap}.decision.json")),
        queue_dir.join(format!("{cap}.decision.json")),
    )
    .unwrap();
    assert_eq!(
        call_ok(&client, "request_status", json!({"id": cap})).await["status"],
        "pending"
    );
    assert_eq!(
        queue::approved_capabilities(&b.state).unwrap().len(),
        1,
        "only the real approval counts"
    );

    // 4. A forged request file claiming to be approved is not a request at all.
    let fake_id = "req-20260101T000000Z-00000000000000ff";
    std::fs::write(
        queue_dir.join(format!("{fake_id}.json")),
        json!({"id": fake_id, "kind": "egress", "details": {"host": "evil.example.com", "allow_private": true}, "reason": "x", "status": "approved", "created": "2026-01-01T00:00:00Z"}).to_string(),
    )
    .unwrap();
    assert!(queue::list(&b.state)
        .unwrap()
        .iter()
        .all(|r| r.id != fake_id));
    let (err, _) = call(&client, "request_status", json!({"id": fake_id})).await;
    assert!(err);

    // Spoofed / malformed ids.
    for bogus in [
        "req-20260101T000000Z-0123456789abcdef",
        "../../egress/routes",
        "req-x",
    ] {
        let (err, text) = call(&client, "request_status", json!({"id": bogus})).await;
        assert!(err && text.contains("unknown request id"), "{text}");
    }
    assert!(has_line(&b.audit(), |l| l["event"] == "status"
        && l["rule"] == "unknown-request"));

    // Policy never changed.
    assert_eq!(
        std::fs::read(b.state.join("egress/routes.toml")).unwrap(),
        routes_before
    );
    let policy = call_ok(&client, "list_policy", json!({})).await;
    assert!(!policy.to_string().contains("evil.example.com\",\"port"));
    assert_eq!(policy["egress"]["routes"].as_array().unwrap().len(), 1);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_flood_is_rate_limited_and_invalid_input_refused() {
    let b = Bottle::start("[rate_limit]\nburst = 5\nrefill = \"1m\"\n").await;
    let client = b.client().await;

    let (err, text) = call(
        &client,
        "request_egress",
        json!({"host": "bad host!", "reason": "x"}),
    )
    .await;
    assert!(err && text.contains("invalid request"), "{text}");
    let (err, text) = call(
        &client,
        "request_egress",
        json!({"host": "ok.example.com", "reason": "x".repeat(3000)}),
    )
    .await;
    assert!(err && text.contains("reason"), "{text}");

    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..12 {
        let (err, text) = call(
            &client,
            "request_egress",
            json!({"host": format!("h{i}.example.com"), "reason": "flood"}),
        )
        .await;
        if err {
            assert!(text.contains("rate limited"), "{text}");
            limited += 1;
        } else {
            accepted += 1;
        }
    }
    // 2 invalid calls above spent 2 of the 5 tokens.
    assert_eq!(accepted, 3);
    assert_eq!(limited, 9);
    assert_eq!(queue::list(&b.state).unwrap().len(), 3);
    let audit = b.audit();
    let limited_lines = audit
        .iter()
        .filter(|l| l["rule"] == "rate-limit" && l["decision"] == "deny")
        .count();
    assert_eq!(limited_lines, 9);
    assert!(has_line(&audit, |l| l["rule"] == "invalid"));
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_are_auto_denied() {
    let b = Bottle::start("auto_deny_after = \"1s\"\n").await;
    let client = b.client().await;
    let out = call_ok(
        &client,
        "request_egress",
        json!({"host": "slow.example.com", "reason": "wait"}),
    )
    .await;
    let id = out["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = b.audit();
        if has_line(&audit, |l| {
            l["event"] == "auto_deny" && l["id"] == id.as_str()
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no auto_deny line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file: Value =
        serde_json::from_slice(&std::fs::read(b.state.join(format!("queue/{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(file["status"], "denied");
    let status = call_ok(&client, "request_status", json!({"id": id})).await;
    assert_eq!(status["status"], "denied");
    assert_eq!(status["reason"], "no operator answer within 1s");
    let err = queue::approve(&b.state, &id, None, &Narrowing::default()).unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    assert_eq!(b.routes()["routes"].as_array().unwrap().len(), 1);
    client.cancel().await.unwrap();
}

/// A plain-HTTP upstream on loopback: answers `200 data` and counts connections.
async fn start_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndata",
                    )
                    .await;
            });
        }
    });
    (addr, hits)
}

/// The real egress proxy on this bottle's routes.toml; `upstream.test` maps to 127.0.0.1.
async fn start_egress(b: &Bottle) -> SocketAddr {
    use bottle_sidecars::egress;
    let ca_dir = b.state.join("ca");
    egress::ca::generate_ca(&ca_dir).unwrap();
    let secrets = b.state.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("route-api-example-token"), "tok-4b1d9c7e2f").unwrap();
    let mut opts = egress::Options::new(
        b.state.join("egress/routes.toml"),
        ca_dir,
        "127.0.0.1:0".parse().unwrap(),
    );
    opts.secrets_dir = Some(secrets);
    opts.resolve_overrides
        .insert("upstream.test".into(), std::net::Ipv4Addr::LOCALHOST.into());
    let audit = AuditLog::open(&queue::audit_path(&b.state), "demo-dev-abc1").unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(egress::serve(opts, audit, tx));
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_opens_a_running_egress_proxy_and_expiry_closes_it() {
    use std::sync::atomic::Ordering;
    let b = Bottle::start("").await;
    let client = b.client().await;
    let (upstream, hits) = start_upstream().await;
    let proxy = start_egress(&b).await;
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://upstream.test:{}/data/set.csv", upstream.port());
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };

    // Refused before any approval, and the refusal points at request_egress.
    let (code, body) = get(url.clone()).await;
    assert_eq!(code, 403);
    assert!(body.contains("request_egress"), "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    let out = call_ok(
        &client,
        "request_egress",
        json!({"host": format!("upstream.test:{}", upstream.port()), "paths": ["/data/**"], "methods": ["GET"], "reason": "download the data set"}),
    )
    .await;
    let id = out["id"].as_str().unwrap().to_owned();
    assert_eq!(queue::list(&b.state).unwrap()[0].status, Status::Pending);
    assert_eq!(get(url.clone()).await.0, 403, "pending grants nothing");

    // The operator approves for 2 s, narrowed to one file; loopback upstream
    // needs the operator's allow_private.
    let narrowing = Narrowing {
        paths: Some(vec!["/data/set.csv".into()]),
        allow_private: true,
        ..Default::default()
    };
    let approved_at = Instant::now();
    queue::approve(&b.state, &id, Some(Duration::from_secs(2)), &narrowing).unwrap();
    let mut allowed_after = None;
    while approved_at.elapsed() < Duration::from_secs(2) {
        let (code, body) = get(url.clone()).await;
        if code == 200 {
            assert_eq!(body, "data");
            allowed_after = Some(approved_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let allowed_after = allowed_after.expect("approved route live within the TTL");
    assert!(
        allowed_after < Duration::from_secs(1),
        "policy change took {allowed_after:?}"
    );
    assert_eq!(
        call_ok(&client, "request_status", json!({"id": id})).await["status"],
        "approved"
    );
    // Narrowed: another path on the same host stays closed.
    let other = format!("http://upstream.test:{}/data/other.csv", upstream.port());
    assert_eq!(get(other).await.0, 403);
    let hits_while_open = hits.load(Ordering::SeqCst);
    assert!(hits_while_open >= 1);

    // After the TTL the proxy refuses again, even before anyone sweeps the file.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, _) = get(url.clone()).await;
        if code == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grant never expired in the proxy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        approved_at.elapsed() >= Duration::from_secs(2),
        "expired early"
    );
    let after = hits.load(Ordering::SeqCst);
    assert_eq!(get(url.clone()).await.0, 403);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        after,
        "refused requests never reach the upstream"
    );
    assert!(queue::sweep_expired(&b.state).unwrap().routes.contains(&id));
    assert_eq!(
        call_ok(&client, "request_status", json!({"id": id})).await["status"],
        "expired"
    );

    let audit = b.audit();
    let egress_lines: Vec<&Value> = audit
        .iter()
        .filter(|l| l["sidecar"] == "egress" && l["host"] == "upstream.test")
        .collect();
    assert!(
        egress_lines
            .iter()
            .any(|l| l["decision"] == "allow" && l["path"] == "/data/set.csv"),
        "{egress_lines:?}"
    );
    assert!(
        egress_lines
            .iter()
            .filter(|l| l["decision"] == "deny")
            .count()
            >= 3,
        "{egress_lines:?}"
    );
    assert!(has_line(&audit, |l| l["sidecar"] == "supervise"
        && l["event"] == "decision"
        && l["id"] == id.as_str()));
    assert!(!std::fs::read_to_string(queue::audit_path(&b.state))
        .unwrap()
        .contains("tok-4b1d9c7e2f"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn only_the_holder_of_the_access_credential_reaches_mcp() {
    let key = bottle_sidecars::access::AccessKey::generate();
    let other = bottle_sidecars::access::AccessKey::generate();
    let b = Bottle::start_with_access("", Some(key.expose())).await;
    let url = format!("http://{}/mcp", b.addr);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let http = reqwest::Client::new();
    let send = |auth: Option<String>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    // Anyone else on the host: no credential, a wrong one, the right one as Basic.
    for auth in [
        None,
        Some(format!("Bearer {}", other.expose())),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {}", key.expose())),
    ] {
        let resp = send(auth.clone()).await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("access denied"), "{body}");
    }
    let audit = std::fs::read_to_string(queue::audit_path(&b.state)).unwrap();
    let denials: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["rule"] == "access-credential")
        .collect();
    assert_eq!(denials.len(), 4, "{audit}");
    assert!(denials
        .iter()
        .all(|l| l["decision"] == "deny" && l["sidecar"] == "supervise"));
    assert!(!audit.contains(key.expose()) && !audit.contains(other.expose()));
    // The agent: its MCP config carries the bearer.
    let resp = send(Some(format!("Bearer {}", key.expose())))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("mcp-session-id"));
}

/// Every file under `dir` (recursively) as text.
fn files_text(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push_str(&files_text(&p));
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carrying_a_held_value_are_refused_and_never_recorded() {
    let held = "db-Pa55w0rd-7Qx2-Lk91-vZ3m";
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("DB_PASSWORD"), held).unwrap();
    let b = Bottle::start(&format!(
        "secrets_dir = {:?}\n[rate_limit]\nburst = 50\n",
        secrets.path()
    ))
    .await;
    let client = b.client().await;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(held);

    let attempts = [
        (
            "request_egress",
            json!({"host": "echo.test", "paths": [format!("/allowed/{held}")], "reason": "need this path"}),
            "paths",
        ),
        (
            "request_egress",
            json!({"host": format!("{held}.example.com"), "reason": "r"}),
            "host",
        ),
        (
            "request_egress",
            json!({"host": "echo.test", "methods": [held], "reason": "r"}),
            "methods",
        ),
        (
            "request_egress",
            json!({"host": "echo.test", "reason": format!("token is {b64}")}),
            "reason",
        ),
        (
            "request_capability",
            json!({"kind": "package", "detail": held, "reason": "need a package"}),
            "detail",
        ),
        (
            "request_capability",
            json!({"kind": "package", "detail": &held[..10], "reason": &held[10..]}),
            "all fields",
        ),
        (
            "request_git_push",
            json!({"remote": held, "ref_pattern": "refs/heads/bot/x", "reason": "r"}),
            "remote",
        ),
        (
            "request_git_push",
            json!({"remote": "origin", "ref_pattern": format!("refs/heads/bot/{held}"), "reason": "r"}),
            "ref_pattern",
        ),
    ];
    for (tool, args, field) in attempts {
        let (err, text) = call(&client, tool, args.clone()).await;
        assert!(err, "{tool} {field}: accepted: {text}");
        assert!(
            text.contains("rule held:DB_PASSWORD") && text.contains(&format!("the {field} ")),
            "{tool} {field}: {text}"
        );
        assert!(!text.contains(held) && !text.contains(&b64), "{text}");
        let last = b.audit().pop().unwrap();
        assert_eq!(
            (
                last["event"].as_str(),
                last["tool"].as_str(),
                last["decision"].as_str(),
                last["rule"].as_str(),
                last["field"].as_str()
            ),
            (
                Some("request"),
                Some(tool),
                Some("deny"),
                Some("held:DB_PASSWORD"),
                Some(field)
            ),
            "{last}"
        );
    }
    // A status query for an id that is the secret: unknown, recorded redacted.
    let (err, text) = call(&client, "request_status", json!({"id": held})).await;
    assert!(
        err && text.contains("unknown request id [redacted:held:DB_PASSWORD]"),
        "{text}"
    );
    let last = b.audit().pop().unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["rule"].as_str(),
            last["id"].as_str()
        ),
        (
            Some("status"),
            Some("unknown-request"),
            Some("[redacted:held:DB_PASSWORD]")
        ),
        "{last}"
    );

    // Nothing was queued and the value is nowhere on disk.
    assert!(queue::list(&b.state).unwrap().is_empty());
    let queue_text = files_text(&b.state.join("queue"));
    assert!(!queue_text.contains(held) && !queue_text.contains(&b64));
    let audit_text = std::fs::read_to_string(queue::audit_path(&b.state)).unwrap();
    assert!(!audit_text.contains(held) && !audit_text.contains(&b64));

    // Control: a clean request is queued.
    let ok = call_ok(
        &client,
        "request_capability",
        json!({"kind": "package", "detail": "apt package ripgrep", "reason": "search"}),
    )
    .await;
    assert!(ok["id"].as_str().unwrap().starts_with("req-"), "{ok}");
    assert_eq!(queue::list(&b.state).unwrap().len(), 1);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_unreadable_secrets_dir_keeps_the_daemon_from_starting() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("s");
    std::fs::create_dir_all(state.join("supervise")).unwrap();
    let key = queue::init(&state).unwrap();
    let missing = tmp.path().join("no-such-secrets");
    std::fs::write(
        supervise::sv_path(&state),
        format!("operator_key = \"{key}\"\nsecrets_dir = {missing:?}\n"),
    )
    .unwrap();
    let opts = supervise::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        config: supervise::sv_path(&state),
        queue: state.join("queue"),
        access_key: None,
    };
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let r = supervise::serve(opts, AuditLog::discard("t"), tx).await;
    assert!(
        matches!(&r, Err(supervise::Error::Config(e)) if e.contains("secrets")),
        "{:?}",
        r.err()
    );
}
