//! The MCP server the agent talks to (rmcp, streamable HTTP at `/mcp`).
//!
//! Everything here is agent-facing: inputs are validated, new requests are
//! rate-limited, every call leaves an audit line, and nothing the agent
//! writes can widen policy (see the module docs of [`super`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::SvConfig;
use super::model::{
    format_time, is_request_id, new_request_id, truncate, validate_text, FileStatus, RequestFile,
    RequestKind, Status, MAX_REASON,
};
use super::policy;
use super::screen::{self, Screen};
use super::store::{self, Verifier};
use crate::audit::AuditLog;

const SIDECAR: &str = "supervise";

/// What [`require_access`] checks against.
#[derive(Clone)]
pub(crate) struct AccessGate {
    pub key: Arc<crate::access::AccessKey>,
    pub audit: AuditLog,
}

/// Only the bottle's own agent may talk to supervise: its MCP config carries
/// `Authorization: Bearer <access credential>` (`crate::access`). Anyone
/// else gets 401 and an audit line, before any MCP processing.
pub(crate) async fn require_access(
    axum::extract::State(gate): axum::extract::State<AccessGate>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let ok = req
        .headers()
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .any(|v| gate.key.matches_bearer(v.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    gate.audit.record(
        SIDECAR,
        json!({"op": "access", "method": req.method().as_str(), "decision": "deny", "rule": "access-credential"}),
    );
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"bottle\"")],
        "supervise: access denied: this MCP server serves only its own bottle's agent (use the MCP config written for the agent)\n",
    )
        .into_response()
}

/// A token bucket: `burst` at once, then one per `refill`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    tokens: f64,
    refill: Duration,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            capacity: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refill: refill.max(Duration::from_millis(1)),
            last: Instant::now(),
        }
    }

    /// Take one token, or say how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refill.mul_f64(1.0 - self.tokens))
        }
    }
}

/// State shared by every MCP session of one daemon.
pub(crate) struct Shared {
    pub config: SvConfig,
    pub verifier: Verifier,
    pub queue: PathBuf,
    pub audit: AuditLog,
    pub screen: Screen,
    pub bucket: Mutex<TokenBucket>,
    pub forged_seen: Mutex<HashSet<String>>,
    pub create: tokio::sync::Mutex<()>,
}

impl Shared {
    fn record(&self, fields: Value) {
        self.audit.record(SIDECAR, fields);
    }
}

/// `request_egress` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EgressParams {
    /// Host to reach: an exact name (`api.example.com`), `*.example.com` for
    /// its subdomains, or an IPv4 address. Append `:port` for a port other than
    /// 443 (https) / 80 (http).
    pub host: String,
    /// URL path globs to allow, e.g. `["/v1/models/**"]`. Omit for all paths.
    /// The narrowest set that works is the most likely to be approved.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// HTTP methods to allow, e.g. `["GET"]`. Omit for all methods.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Why you need it, for the human operator: what you are doing and what
    /// fails without it (at most 2000 characters).
    pub reason: String,
}

/// `request_git_push` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GitPushParams {
    /// Name of a configured remote (see `list_policy` → `git.remotes`).
    pub remote: String,
    /// Ref pattern to be allowed to push, under `refs/`, e.g.
    /// `refs/heads/feature/login` or `refs/heads/bot/*`.
    pub ref_pattern: String,
    /// Why you need it, for the human operator.
    pub reason: String,
}

/// `request_capability` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CapabilityParams {
    /// Category: `memory`, `cpu`, `pids`, `package`, `tool`, … (lower-case,
    /// at most 32 chars). `memory`, `cpu` and `pids` are applied on resume.
    pub kind: String,
    /// Exactly what you need, e.g. `8 GiB memory` (a size with a unit),
    /// `4 CPUs`, `4096 pids` or `apt package ripgrep`.
    pub detail: String,
    /// Why you need it, for the human operator.
    pub reason: String,
}

/// `request_status` input.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct StatusParams {
    /// The request id returned by `request_egress` / `request_git_push` /
    /// `request_capability` (`req-…`).
    pub id: String,
}

/// The MCP service of one session.
#[derive(Clone)]
pub(crate) struct SuperviseServer {
    shared: Arc<Shared>,
    tool_router: ToolRouter<Self>,
}

impl SuperviseServer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            tool_router: Self::tool_router(),
        }
    }

    /// The first secret in the agent's `fields`; `Err` (already recorded
    /// as `rule=secrets-unavailable`) when the screen cannot answer.
    fn find_secret(
        &self,
        tool: &str,
        event: &str,
        fields: &[(&str, &str)],
    ) -> Result<Option<screen::Hit>, String> {
        let s = &self.shared;
        match s.screen.detector() {
            Ok(det) => Ok(screen::scan_fields(&det, fields)),
            Err(e) => {
                tracing::error!(error = %e, "supervise secret screen unavailable");
                s.record(json!({"event": event, "tool": tool, "decision": "deny", "rule": "secrets-unavailable"}));
                Err("refused: this sandbox cannot check requests for secrets right now, so nothing was queued; tell the operator".into())
            }
        }
    }

    /// Refuse a request whose agent text (any field) holds a secret, before
    /// anything is queued or recorded with it (docs/security.md, S10). The
    /// refusal names the rule and the field, never the value.
    fn screen_request(&self, tool: &str, fields: &[(&str, &str)]) -> Result<(), String> {
        let Some(hit) = self.find_secret(tool, "request", fields)? else {
            return Ok(());
        };
        self.shared.record(json!({"event": "request", "tool": tool, "decision": "deny", "rule": hit.rule, "field": hit.field}));
        Err(format!(
            "refused: the {} of this request contains a secret (rule {}). Secrets never leave \
             the sandbox, not even to the operator: nothing was queued. Ask again without it.",
            hit.field, hit.rule
        ))
    }

    fn auto_deny_text(&self) -> String {
        humantime::format_duration(self.shared.config.auto_deny_after).to_string()
    }

    /// Rate limit, validate, dedupe, cap, then write a new pending request.
    async fn create(
        &self,
        tool: &str,
        kind: RequestKind,
        reason: String,
    ) -> Result<String, String> {
        let s = &self.shared;
        let retry = s
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now());
        if let Err(wait) = retry {
            let rl = &s.config.rate_limit;
            s.record(
                json!({"event": "request", "tool": tool, "decision": "deny", "rule": "rate-limit"}),
            );
            return Err(format!(
                "rate limited: at most {} requests at once, then one per {}; retry in {}s. \
                 Use request_status to follow requests you already made.",
                rl.burst,
                humantime::format_duration(rl.refill),
                wait.as_secs().max(1)
            ));
        }
        if let Err(e) = kind
            .validate()
            .and_then(|_| validate_text("reason", &reason, MAX_REASON))
        {
            s.record(json!({"event": "request", "tool": tool, "decision": "deny", "rule": "invalid", "error": truncate(&e, 200)}));
            return Err(format!("invalid request: {e}"));
        }
        if let RequestKind::GitPush { remote, .. } = &kind {
            if let Some(gate) = &s.config.gate {
                let remotes = policy::git_remotes(gate, SystemTime::now()).unwrap_or_default();
                if !remotes.iter().any(|r| &r.name == remote) {
                    let known: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
                    s.record(json!({"event": "request", "tool": tool, "decision": "deny", "rule": "unknown-remote", "remote": remote}));
                    return Err(format!(
                        "invalid request: no remote {remote:?} in this bottle; configured remotes: [{}]",
                        known.join(", ")
                    ));
                }
            } else {
                s.record(
                    json!({"event": "request", "tool": tool, "decision": "deny", "rule": "no-git"}),
                );
                return Err("invalid request: this bottle has no git remotes".into());
            }
        }
        let _guard = s.create.lock().await;
        let view = store::load_all(&s.queue, &s.verifier, s.config.auto_deny_after)
            .map_err(|e| format!("the queue is unavailable: {e}"))?;
        let pending: Vec<_> = view
            .requests
            .iter()
            .filter(|r| r.status == Status::Pending)
            .collect();
        if let Some(dup) = pending.iter().find(|r| r.kind == kind) {
            s.record(json!({"event": "request", "tool": tool, "decision": "duplicate", "id": dup.id, "kind": kind.name()}));
            return Ok(json!({
                "id": dup.id,
                "status": "pending",
                "message": "an identical request is already pending; follow it with request_status",
            })
            .to_string());
        }
        if pending.len() >= s.config.rate_limit.max_pending {
            s.record(json!({"event": "request", "tool": tool, "decision": "deny", "rule": "max-pending"}));
            return Err(format!(
                "too many open requests ({} pending, the limit is {}); wait for the operator to answer them",
                pending.len(),
                s.config.rate_limit.max_pending
            ));
        }
        let file = RequestFile {
            id: new_request_id(),
            kind,
            reason,
            status: FileStatus::Pending,
            created: format_time(SystemTime::now()),
            status_reason: None,
        };
        store::write_request(&s.queue, &file)
            .map_err(|e| format!("the queue is unavailable: {e}"))?;
        s.record(json!({
            "event": "request",
            "tool": tool,
            "decision": "queued",
            "id": file.id,
            "kind": file.kind.name(),
            "request": file.kind,
        }));
        Ok(json!({
            "id": file.id,
            "status": "pending",
            "message": format!(
                "Queued for the human operator. Nothing changes until they approve. Poll \
                 request_status with this id (every 30s or so); unanswered requests are denied \
                 after {}.",
                self.auto_deny_text()
            ),
        })
        .to_string())
    }
}

/// Split `host[:port]`, lower-casing the host.
fn split_host_port(input: &str) -> Result<(String, Option<u16>), String> {
    let input = input.trim().to_ascii_lowercase();
    if let Some((host, port)) = input.rsplit_once(':') {
        if !host.contains(':') && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid request: port {port:?} is out of range"))?;
            return Ok((host.to_owned(), Some(port)));
        }
    }
    Ok((input, None))
}

#[tool_router]
impl SuperviseServer {
    /// Show the current policy.
    #[tool(
        description = "Show what this sandbox may reach right now: egress routes (host, port, \
                       paths, methods; credentials are injected by the proxy, never shown), git \
                       remotes with the refs you may push, and your pending permission requests. \
                       Check this before asking for more."
    )]
    async fn list_policy(&self) -> Result<String, String> {
        let s = &self.shared;
        let now = SystemTime::now();
        let egress = match &s.config.routes {
            Some(path) => match policy::egress_routes(path, now) {
                Ok(routes) => json!({"routes": routes}),
                Err(e) => {
                    json!({"routes": [], "error": format!("policy unreadable: {}", truncate(&e, 200))})
                }
            },
            None => json!({"routes": []}),
        };
        let git = match &s.config.gate {
            Some(path) => match policy::git_remotes(path, now) {
                Ok(remotes) => json!({"remotes": remotes}),
                Err(e) => {
                    json!({"remotes": [], "error": format!("policy unreadable: {}", truncate(&e, 200))})
                }
            },
            None => json!({"remotes": []}),
        };
        let pending: Vec<Value> = store::load_all(&s.queue, &s.verifier, s.config.auto_deny_after)
            .map(|v| v.requests)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.status == Status::Pending)
            .map(|r| json!({"id": r.id, "request": r.kind.summary(), "created": r.created}))
            .collect();
        s.record(json!({"event": "list_policy", "decision": "allow"}));
        Ok(json!({
            "egress": egress,
            "git": git,
            "pending_requests": pending,
            "limits": {
                "default_grant_ttl": humantime::format_duration(s.config.grant_ttl).to_string(),
                "auto_deny_after": self.auto_deny_text(),
                "request_burst": s.config.rate_limit.burst,
                "request_refill": humantime::format_duration(s.config.rate_limit.refill).to_string(),
            },
        })
        .to_string())
    }

    /// Ask for a new egress route.
    #[tool(
        description = "Ask the human operator to allow HTTP(S) requests to a host that the proxy \
                       refuses (403 from the egress proxy). Returns a request id at once; the \
                       request stays pending until the operator approves (possibly narrowed, \
                       for a limited time) or denies it. Poll request_status with the id."
    )]
    async fn request_egress(
        &self,
        Parameters(p): Parameters<EgressParams>,
    ) -> Result<String, String> {
        let mut fields = vec![("host", p.host.as_str())];
        fields.extend(p.paths.iter().flatten().map(|v| ("paths", v.as_str())));
        fields.extend(p.methods.iter().flatten().map(|v| ("methods", v.as_str())));
        fields.push(("reason", p.reason.as_str()));
        self.screen_request("request_egress", &fields)?;
        let (host, port) = match split_host_port(&p.host) {
            Ok(hp) => hp,
            Err(e) => {
                self.shared.record(json!({"event": "request", "tool": "request_egress", "decision": "deny", "rule": "invalid"}));
                return Err(e);
            }
        };
        let kind = RequestKind::Egress {
            host,
            port,
            paths: p.paths.unwrap_or_default(),
            methods: p
                .methods
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            allow_private: false,
        };
        self.create("request_egress", kind, p.reason).await
    }

    /// Ask to push more refs.
    #[tool(
        description = "Ask the human operator to let you push refs matching ref_pattern to a \
                       configured git remote (the gate refuses refs outside the remote's push \
                       list). Returns a request id; poll request_status."
    )]
    async fn request_git_push(
        &self,
        Parameters(p): Parameters<GitPushParams>,
    ) -> Result<String, String> {
        self.screen_request(
            "request_git_push",
            &[
                ("remote", &p.remote),
                ("ref_pattern", &p.ref_pattern),
                ("reason", &p.reason),
            ],
        )?;
        let kind = RequestKind::GitPush {
            remote: p.remote,
            ref_pattern: p.ref_pattern,
        };
        self.create("request_git_push", kind, p.reason).await
    }

    /// Ask for anything else.
    #[tool(
        description = "Ask the human operator for anything else this sandbox lacks: a package, \
                       more memory or CPU, a tool. Resource limits are set from kind `memory` \
                       (detail like `8 GiB memory`), `cpu` (`4 CPUs`) or `pids` (`4096 pids`) \
                       when the sandbox is next resumed after approval (not immediately); a \
                       package or tool is added by the operator. Returns a request id; poll \
                       request_status."
    )]
    async fn request_capability(
        &self,
        Parameters(p): Parameters<CapabilityParams>,
    ) -> Result<String, String> {
        self.screen_request(
            "request_capability",
            &[
                ("kind", &p.kind),
                ("detail", &p.detail),
                ("reason", &p.reason),
            ],
        )?;
        let kind = RequestKind::Capability {
            kind: p.kind.trim().to_ascii_lowercase(),
            detail: p.detail,
        };
        self.create("request_capability", kind, p.reason).await
    }

    /// Follow a request.
    #[tool(
        description = "Get the status of one of your requests: pending, approved (with what was \
                       granted and until when), denied (with the operator's reason) or expired. \
                       Approved egress and git grants are already live when this says approved."
    )]
    async fn request_status(
        &self,
        Parameters(p): Parameters<StatusParams>,
    ) -> Result<String, String> {
        let s = &self.shared;
        // An id carrying a secret is no request id: refused as unknown, and
        // recorded without it.
        if let Some(hit) = self.find_secret("request_status", "status", &[("id", &p.id)])? {
            let id = format!("[redacted:{}]", hit.rule);
            s.record(
                json!({"event": "status", "decision": "deny", "rule": "unknown-request", "id": id}),
            );
            return Err(format!(
                "unknown request id {id}: it contains a secret (rule {}); use an id returned by request_egress / request_git_push / request_capability",
                hit.rule
            ));
        }
        let unknown = || {
            s.record(json!({"event": "status", "decision": "deny", "rule": "unknown-request", "id": truncate(&p.id, 64)}));
            Err(format!(
                "unknown request id {:?}: use an id returned by request_egress / request_git_push / request_capability",
                truncate(&p.id, 64)
            ))
        };
        if !is_request_id(&p.id) {
            return unknown();
        }
        let loaded = match store::load_one(&s.queue, &p.id, &s.verifier, s.config.auto_deny_after) {
            Ok(Some(x)) => x,
            Ok(None) => return unknown(),
            Err(e) => {
                s.record(json!({"event": "status", "decision": "deny", "rule": "invalid-request-file", "id": p.id}));
                tracing::warn!(error = %e, "request file rejected");
                return unknown();
            }
        };
        let (req, forged) = loaded;
        if let Some(why) = forged {
            let first = s
                .forged_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(req.id.clone());
            if first {
                s.record(json!({"event": "forged_decision", "id": req.id, "decision": "ignore", "rule": "bad-signature", "error": truncate(&why, 120)}));
            }
        }
        s.record(
            json!({"event": "status", "decision": "allow", "id": req.id, "status": req.status}),
        );
        let mut out = json!({
            "id": req.id,
            "request": req.kind,
            "status": req.status,
        });
        if let Some(r) = &req.status_reason {
            out["reason"] = json!(r);
        }
        if let Some(e) = &req.expires_at {
            out["expires_at"] = json!(e);
        }
        if let Some(g) = req.decision.as_ref().and_then(|d| d.grant.as_ref()) {
            if req.status == Status::Approved {
                out["granted"] = json!(g);
                out["message"] = json!(match g {
                    RequestKind::Capability { .. } =>
                        "approved: applied when the sandbox is next resumed",
                    _ => "approved and live now; retry your request",
                });
            }
        }
        Ok(out.to_string())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SuperviseServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "bottle supervise: this sandbox's only way to ask its human operator for more access. \
             Network access is default-deny through an egress proxy; git pushes go through a gate. \
             Call list_policy to see what is allowed, request_egress / request_git_push / \
             request_capability to ask (give a concrete reason), and request_status to follow up. \
             Requests are rate-limited and answered asynchronously by a human.",
        )
    }
}
