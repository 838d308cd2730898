//! The live egress policy: `routes.toml` parsed and validated, plus the held
//! secrets (DLP detector and route credentials) loaded from the secrets dir.
//!
//! A [`Live`] is immutable; a reload builds a new one and swaps it in. A file
//! that does not parse or validate never replaces the previous policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::dlp::Detector;

/// Default `max_body_scan` (1 MiB).
pub const DEFAULT_MAX_BODY_SCAN: usize = 1 << 20;

/// The comment the host puts at the top of every `routes.toml` it writes.
pub const HEADER: &str = "# Live egress policy of this bottle. The bundle reloads it on change.\n# Grants added by `bottle approve` carry `grant` and `expires_at`.\n";

/// `routes.toml` as written on disk: the one definition the writer
/// (`crate::prepare`), the reader ([`Live::load`], [`view`]) and the editor
/// (grants in `crate::supervise::policy`) share. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    /// Bottle identity (stamped on audit lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Scan request bodies for held secrets (default true).
    #[serde(default = "yes")]
    pub dlp: bool,
    /// Request body bytes scanned (default [`DEFAULT_MAX_BODY_SCAN`]).
    #[serde(default = "default_max_body_scan")]
    pub max_body_scan: usize,
    /// Held-secrets dir (route credentials and DLP values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// Routes in order: the bottle's own, then the operator's grants.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

fn yes() -> bool {
    true
}

fn default_max_body_scan() -> usize {
    DEFAULT_MAX_BODY_SCAN
}

/// One `[[routes]]` entry. Unknown keys are rejected: a typo in `paths` or
/// `methods` must not silently widen a route to "everything".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Host pattern: a name, an IP literal or `*.suffix`.
    pub host: String,
    /// Port (absent: 443 for CONNECT, 80 for plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path globs (absent: every path; present and empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Methods (absent: every method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// May reach private/loopback addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// The route's credential may be sent over plain HTTP (needs `port`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plaintext: bool,
    /// The request id whose approval added this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// RFC 3339 expiry of a grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Free text (e.g. the reason a grant was approved); ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Free text; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Credential the proxy injects (never on a grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthFile>,
}

/// `auth = { scheme = "bearer", secret = "<file in the secrets dir>" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `bearer`, `basic`, `x-api-key` or `header:<Name>`.
    pub scheme: String,
    /// Secret file name in the secrets dir (never the value).
    pub secret: String,
}

impl RoutesFile {
    /// Parse `routes.toml` text (structure only; [`Live::load`] validates
    /// hosts, globs, methods, dates and secrets).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Read `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The file's text: [`HEADER`], then the TOML.
    pub fn to_toml(&self) -> String {
        let mut text = String::from(HEADER);
        text.push_str(&toml::to_string(self).expect("routes.toml always serializes"));
        text
    }

    /// Write atomically (mode 644).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        bottle_core::state::atomic_write_io(path, self.to_toml().as_bytes(), Some(0o644))
    }
}

impl RouteFile {
    /// Whether the entry's `expires_at` has passed at `now` (an unparsable
    /// one counts as passed: fail closed). No `expires_at`: never.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        crate::supervise::model::is_expired(self.expires_at.as_deref(), now)
    }
}

/// How a route's credential is injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <value>`.
    Bearer,
    /// `Authorization: Basic base64(<value>)`; the value is `user:password`.
    Basic,
    /// `x-api-key: <value>`.
    XApiKey,
    /// `<Name>: <value>`.
    Header(http::header::HeaderName),
}

/// A route credential: scheme + the secret's value (never printed).
#[derive(Clone)]
pub struct Auth {
    /// How it is injected.
    pub scheme: AuthScheme,
    /// Secret file name (for messages).
    pub secret_name: String,
    /// The injected header value, marked sensitive.
    pub header_value: http::header::HeaderValue,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("scheme", &self.scheme)
            .field("secret", &self.secret_name)
            .finish()
    }
}

impl Auth {
    /// Header name this credential is injected under.
    pub fn header_name(&self) -> http::header::HeaderName {
        match &self.scheme {
            AuthScheme::Bearer | AuthScheme::Basic => http::header::AUTHORIZATION,
            AuthScheme::XApiKey => http::header::HeaderName::from_static("x-api-key"),
            AuthScheme::Header(name) => name.clone(),
        }
    }
}

/// A host pattern: exact name or `*.suffix` (subdomains only, any depth).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this (lower-case) name or IP literal.
    Exact(String),
    /// Any name ending in `.<suffix>` (not the suffix itself).
    Subdomains(String),
}

impl HostPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, s.clone()),
        };
        let name = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            return Err(format!("invalid route host `{s}`"));
        }
        Ok(if wild {
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Does `host` (normalised) match?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
        }
    }
}

/// One validated route.
#[derive(Debug)]
pub struct Route {
    /// Host pattern.
    pub host: HostPattern,
    /// Port; `None` means 443 for https/CONNECT and 80 for plain http.
    pub port: Option<u16>,
    /// Path globs (matched against the percent-decoded path); `None` = all.
    pub paths: Option<GlobSet>,
    /// Allowed methods (upper case); `None` = all.
    pub methods: Option<Vec<String>>,
    /// May connect to loopback/private/link-local addresses.
    pub allow_private: bool,
    /// Credential injected on this route.
    pub auth: Option<Auth>,
    /// Grant id that created the route, if any.
    pub grant: Option<String>,
    /// After this instant the route is treated as absent.
    pub expires_at: Option<SystemTime>,
    /// `auth` may be injected into plain-HTTP requests (only on a route
    /// with an explicit `port`).
    pub plaintext: bool,
}

impl Route {
    /// Audit rule name for decisions made by this route.
    pub fn rule(&self) -> String {
        match &self.grant {
            Some(g) => format!("grant:{g}"),
            None => format!("route:{}", self.host),
        }
    }

    fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No route names this host.
    Host,
    /// A route names the host, but on another port.
    Port,
    /// Only expired routes match (rule names the grant).
    Expired(String),
}

impl NoRoute {
    /// Audit rule name.
    pub fn rule(&self) -> String {
        match self {
            NoRoute::Host => "no-route".into(),
            NoRoute::Port => "port".into(),
            NoRoute::Expired(g) => format!("expired:{g}"),
        }
    }
}

/// The policy in force plus the loaded secrets.
#[derive(Debug)]
pub struct Live {
    /// Identity named in the file, if any.
    pub identity: Option<String>,
    /// DLP on requests (and masking on responses) enabled.
    pub dlp: bool,
    /// Request body bytes scanned.
    pub max_body_scan: usize,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Held-secret detector (every file in the secrets dir).
    pub detector: Arc<Detector>,
    /// The secrets dir in use, if any.
    pub secrets_dir: Option<PathBuf>,
}

/// The facts of one request the policy decides on (see [`Live::decide`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Normalised host the request goes to.
    pub host: &'a str,
    /// Port it goes to.
    pub port: u16,
    /// Inside TLS (an intercepted CONNECT) rather than plain `http://`.
    pub tls: bool,
    /// Method (upper case as sent).
    pub method: &'a str,
    /// Percent-decoded path (already checked for dot segments).
    pub path: &'a str,
}

/// A request the policy allows.
#[derive(Debug)]
pub struct Allowed<'a> {
    /// The route whose paths and methods allow the request (audit rule).
    pub route: &'a Route,
    /// The credential to inject: the allowing route's, else that of another
    /// unexpired route for the same host and port (a grant that widens a
    /// route with `auth` uses the host's credential, never the agent's).
    pub auth: Option<&'a Auth>,
}

/// Why the policy refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No unexpired route names this host and port.
    NoRoute(NoRoute),
    /// Routes name the host, none allows the path.
    Path,
    /// A route allows the path, none the method.
    Method,
    /// Only an expired grant would have allowed it.
    Expired(String),
    /// A credential would be injected into a plain-HTTP request and the
    /// route supplying it does not say `plaintext = true`.
    AuthNeedsTls,
}

impl Denial {
    /// Audit rule name.
    pub fn rule(&self) -> String {
        match self {
            Denial::NoRoute(n) => n.rule(),
            Denial::Path => "path".into(),
            Denial::Method => "method".into(),
            Denial::Expired(g) => format!("expired:{g}"),
            Denial::AuthNeedsTls => "auth-needs-tls".into(),
        }
    }
}

impl Route {
    fn allows(&self, method: &str, path: &str) -> (bool, bool) {
        let path_ok = self.paths.as_ref().is_none_or(|g| g.is_match(path));
        let method_ok = self
            .methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == method));
        (path_ok, method_ok)
    }

    fn expiry_name(&self) -> String {
        self.grant.clone().unwrap_or_else(|| self.host.to_string())
    }
}

impl Live {
    /// Every unexpired route matching `host` and `port` at `now`, in file
    /// order; `default_port` is the port of routes that do not name one (443
    /// for CONNECT/https, 80 for plain http). Empty → why not.
    pub fn matching_at(
        &self,
        host: &str,
        port: u16,
        default_port: u16,
        now: SystemTime,
    ) -> Result<Vec<&Route>, NoRoute> {
        let mut why = NoRoute::Host;
        let mut out = Vec::new();
        for route in &self.routes {
            if !route.host.matches(host) {
                continue;
            }
            if route.port.unwrap_or(default_port) != port {
                if why == NoRoute::Host {
                    why = NoRoute::Port;
                }
                continue;
            }
            if route.expired(now) {
                why = NoRoute::Expired(route.expiry_name());
                continue;
            }
            out.push(route);
        }
        if out.is_empty() {
            Err(why)
        } else {
            Ok(out)
        }
    }

    /// The first unexpired route matching `host` and `port` (see
    /// [`Live::matching_at`]).
    pub fn find(&self, host: &str, port: u16, default_port: u16) -> Result<&Route, NoRoute> {
        self.matching_at(host, port, default_port, SystemTime::now())
            .map(|v| v[0])
    }

    /// May connections to `host:port` reach non-public addresses? True when
    /// any unexpired route for it says `allow_private` (the setting is about
    /// the name's addresses, not about a path).
    pub fn allow_private(&self, host: &str, port: u16, default_port: u16) -> Result<bool, NoRoute> {
        self.matching_at(host, port, default_port, SystemTime::now())
            .map(|v| v.iter().any(|r| r.allow_private))
    }

    /// The policy decision for one request at `now`, over EVERY unexpired
    /// route for its host and port: allowed by the first whose paths and
    /// methods both match, else the most specific denial.
    pub fn decide(&self, req: &RequestFacts<'_>, now: SystemTime) -> Result<Allowed<'_>, Denial> {
        let default_port = if req.tls { 443 } else { 80 };
        let candidates = match self.matching_at(req.host, req.port, default_port, now) {
            Ok(c) => c,
            Err(why) => return Err(Denial::NoRoute(why)),
        };
        let mut path_seen = false;
        let mut allowed = None;
        for route in &candidates {
            let (path_ok, method_ok) = route.allows(req.method, req.path);
            path_seen |= path_ok;
            if path_ok && method_ok {
                allowed = Some(*route);
                break;
            }
        }
        let Some(route) = allowed else {
            // Tell the agent its grant ran out rather than "path".
            let expired = self.routes.iter().find(|r| {
                r.host.matches(req.host)
                    && r.port.unwrap_or(default_port) == req.port
                    && r.expired(now)
                    && r.allows(req.method, req.path) == (true, true)
            });
            return Err(match expired {
                Some(r) => Denial::Expired(r.expiry_name()),
                None if path_seen => Denial::Method,
                None => Denial::Path,
            });
        };
        let auth_route = if route.auth.is_some() {
            Some(route)
        } else {
            candidates.iter().copied().find(|r| r.auth.is_some())
        };
        if let Some(ar) = auth_route {
            if !req.tls && !ar.plaintext {
                return Err(Denial::AuthNeedsTls);
            }
        }
        Ok(Allowed {
            route,
            auth: auth_route.and_then(|r| r.auth.as_ref()),
        })
    }

    /// Load and validate `routes_path`; `secrets_override` (the CLI flag)
    /// wins over the file's `secrets_dir`.
    pub fn load(routes_path: &Path, secrets_override: Option<&Path>) -> Result<Live, String> {
        let text = std::fs::read_to_string(routes_path)
            .map_err(|e| format!("{}: {e}", routes_path.display()))?;
        let file =
            RoutesFile::parse(&text).map_err(|e| format!("{}: {e}", routes_path.display()))?;
        let secrets_dir = secrets_override
            .map(Path::to_path_buf)
            .or_else(|| file.secrets_dir.clone());
        let (detector, values) = match &secrets_dir {
            Some(dir) => {
                let det = Detector::load_dir(dir)
                    .map_err(|e| format!("secrets dir {}: {e}", dir.display()))?;
                (det, SecretFiles::Dir(dir.clone()))
            }
            None => (Detector::default(), SecretFiles::None),
        };
        if file.max_body_scan == 0 && file.dlp {
            return Err("max_body_scan = 0 with dlp = true would skip every body".into());
        }
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            routes.push(build_route(r, &values).map_err(|e| format!("routes[{i}]: {e}"))?);
        }
        Ok(Live {
            identity: file.identity,
            dlp: file.dlp,
            max_body_scan: file.max_body_scan,
            routes,
            detector: Arc::new(detector),
            secrets_dir,
        })
    }
}

enum SecretFiles {
    None,
    Dir(PathBuf),
}

impl SecretFiles {
    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("invalid secret name `{name}`"));
        }
        match self {
            SecretFiles::None => Err(format!(
                "route needs secret `{name}` but no secrets dir is configured"
            )),
            SecretFiles::Dir(dir) => {
                let mut v =
                    std::fs::read(dir.join(name)).map_err(|e| format!("secret `{name}`: {e}"))?;
                while matches!(v.last(), Some(b'\n' | b'\r')) {
                    v.pop();
                }
                if v.is_empty() {
                    return Err(format!("secret `{name}` is empty"));
                }
                Ok(v)
            }
        }
    }
}

fn build_route(r: RouteFile, secrets: &SecretFiles) -> Result<Route, String> {
    let host = HostPattern::parse(&r.host)?;
    let paths = match r.paths {
        None => None,
        Some(list) => {
            let mut b = GlobSetBuilder::new();
            for p in &list {
                if !p.starts_with('/') {
                    return Err(format!("path glob `{p}` must start with `/`"));
                }
                let glob = GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("path glob `{p}`: {e}"))?;
                b.add(glob);
            }
            Some(b.build().map_err(|e| e.to_string())?)
        }
    };
    let methods = match r.methods {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for m in list {
                let up = m.trim().to_ascii_uppercase();
                if up.is_empty() || !up.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(format!("invalid method `{m}`"));
                }
                out.push(up);
            }
            Some(out)
        }
    };
    let auth = match r.auth {
        None => None,
        Some(a) => {
            let scheme = match a.scheme.as_str() {
                "bearer" => AuthScheme::Bearer,
                "basic" => AuthScheme::Basic,
                "x-api-key" => AuthScheme::XApiKey,
                other => match other.strip_prefix("header:") {
                    Some(name) => AuthScheme::Header(
                        http::header::HeaderName::from_bytes(name.trim().as_bytes())
                            .map_err(|_| format!("invalid auth header name `{name}`"))?,
                    ),
                    None => {
                        return Err(format!(
                            "unknown auth scheme `{other}` (bearer | basic | x-api-key | header:<Name>)"
                        ))
                    }
                },
            };
            let value = secrets.read(&a.secret)?;
            let header = match scheme {
                AuthScheme::Bearer => [b"Bearer ".as_slice(), &value].concat(),
                AuthScheme::Basic => {
                    use base64::Engine as _;
                    let enc = base64::engine::general_purpose::STANDARD.encode(&value);
                    format!("Basic {enc}").into_bytes()
                }
                _ => value,
            };
            let mut header_value = http::header::HeaderValue::from_bytes(&header)
                .map_err(|_| format!("secret `{}` is not a valid header value", a.secret))?;
            header_value.set_sensitive(true);
            Some(Auth {
                scheme,
                secret_name: a.secret,
                header_value,
            })
        }
    };
    let expires_at = match r.expires_at {
        None => None,
        Some(s) => Some(
            humantime::parse_rfc3339_weak(s.trim())
                .map_err(|e| format!("expires_at `{s}`: {e}"))?,
        ),
    };
    if r.plaintext && r.port.is_none() {
        return Err(
            "plaintext = true needs an explicit `port` (a route without one also matches https, \
             and a credential is never sent in clear text on a port nobody named)"
                .into(),
        );
    }
    Ok(Route {
        plaintext: r.plaintext,
        host,
        port: r.port,
        paths,
        methods,
        allow_private: r.allow_private,
        auth,
        grant: r.grant,
        expires_at,
    })
}

/// `routes.toml` as an operator reads it (`bottle inspect`): the same file
/// and struct the proxy loads, with no secret value (auth names its scheme
/// and secret file only).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// Secret scanning of request bodies (and masking of responses).
    pub dlp: bool,
    /// Request body bytes scanned.
    pub max_body_scan: usize,
    /// Routes in file order (the bottle's own, then the grants).
    pub routes: Vec<RouteView>,
}

/// One route of a [`PolicyView`].
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    /// Host pattern as written.
    pub host: String,
    /// Port, when the route names one.
    pub port: Option<u16>,
    /// Path globs (`None`: every path).
    pub paths: Option<Vec<String>>,
    /// Methods (`None`: every method).
    pub methods: Option<Vec<String>>,
    /// May reach private/loopback addresses.
    pub allow_private: bool,
    /// Injected credential: scheme and secret file name.
    pub auth: Option<String>,
    /// The request id whose approval added this route.
    pub grant: Option<String>,
    /// RFC 3339 expiry of a grant.
    pub expires_at: Option<String>,
}

/// Read `routes_path` for display (no secret is read).
pub fn view(routes_path: &Path) -> Result<PolicyView, String> {
    let text = std::fs::read_to_string(routes_path)
        .map_err(|e| format!("{}: {e}", routes_path.display()))?;
    let file = RoutesFile::parse(&text).map_err(|e| format!("{}: {e}", routes_path.display()))?;
    Ok(PolicyView {
        dlp: file.dlp,
        max_body_scan: file.max_body_scan,
        routes: file
            .routes
            .into_iter()
            .map(|r| RouteView {
                host: r.host,
                port: r.port,
                paths: r.paths,
                methods: r.methods,
                allow_private: r.allow_private,
                auth: r
                    .auth
                    .map(|a| format!("{} from secret {}", a.scheme, a.secret)),
                grant: r.grant,
                expires_at: r.expires_at,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Live, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s/tok"), "secret-token-value\n").unwrap();
        let p = dir.path().join("routes.toml");
        std::fs::write(&p, text).unwrap();
        Live::load(&p, Some(&dir.path().join("s")))
    }

    #[test]
    fn parses_contract_example() {
        let live = load(
            r#"
identity = "demo-dev-a1b2"
dlp = true
max_body_scan = 1048576
[[routes]]
host = "api.example.com"
port = 443
paths = ["/v1/**"]
methods = ["GET", "post"]
allow_private = false
auth = { scheme = "bearer", secret = "tok" }
grant = "req-1"
expires_at = "2099-11-24T05:00:00Z"
[[routes]]
host = "*.example.org"
"#,
        )
        .unwrap();
        assert_eq!(live.routes.len(), 2);
        let r = live.find("api.example.com", 443, 443).unwrap();
        assert_eq!(r.rule(), "grant:req-1");
        assert_eq!(
            r.methods.as_deref(),
            Some(&["GET".to_string(), "POST".to_string()][..])
        );
        assert_eq!(
            r.auth.as_ref().unwrap().header_value.as_bytes(),
            b"Bearer secret-token-value"
        );
        assert!(!format!("{:?}", r.auth).contains("secret-token-value"));
        assert!(live.find("a.b.example.org", 443, 443).is_ok());
        assert_eq!(
            live.find("example.org", 443, 443).unwrap_err(),
            NoRoute::Host
        );
        assert_eq!(
            live.find("api.example.com", 8443, 443).unwrap_err(),
            NoRoute::Port
        );
        assert_eq!(
            live.find("x.example.org", 80, 80).unwrap().rule(),
            "route:*.example.org"
        );
    }

    #[test]
    fn rejects_typos_bad_globs_missing_secrets_and_bad_dates() {
        assert!(load("[[routes]]\nhost = \"a.test\"\npath = [\"/x\"]\n").is_err());
        assert!(load("[[routes]]\nhost = \"a.test\"\npaths = [\"x\"]\n").is_err());
        assert!(load(
            "[[routes]]\nhost = \"a.test\"\nauth = { scheme = \"bearer\", secret = \"nope\" }\n"
        )
        .is_err());
        assert!(load(
            "[[routes]]\nhost = \"a.test\"\nauth = { scheme = \"magic\", secret = \"tok\" }\n"
        )
        .is_err());
        assert!(load("[[routes]]\nhost = \"a.test\"\nexpires_at = \"tomorrow\"\n").is_err());
        assert!(load("[[routes]]\nhost = \"a b\"\n").is_err());
    }

    #[test]
    fn expired_routes_are_absent() {
        let live = load(
            "[[routes]]\nhost = \"a.test\"\ngrant = \"req-old\"\nexpires_at = \"2001-01-01T00:00:00Z\"\n",
        )
        .unwrap();
        assert_eq!(
            live.find("a.test", 443, 443).unwrap_err(),
            NoRoute::Expired("req-old".into())
        );
    }

    fn facts<'a>(
        host: &'a str,
        port: u16,
        tls: bool,
        method: &'a str,
        path: &'a str,
    ) -> RequestFacts<'a> {
        RequestFacts {
            host,
            port,
            tls,
            method,
            path,
        }
    }

    #[test]
    fn decide_uses_every_unexpired_route_for_the_host() {
        let live = load(
            r#"
[[routes]]
host = "api.test"
paths = ["/v1/a"]
methods = ["GET"]
auth = { scheme = "bearer", secret = "tok" }
[[routes]]
host = "api.test"
paths = ["/v1/b"]
grant = "req-b"
expires_at = "2030-01-01T00:00:00Z"
"#,
        )
        .unwrap();
        let before = humantime::parse_rfc3339("2029-12-31T23:59:59Z").unwrap();
        let after = humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let a = live
            .decide(&facts("api.test", 443, true, "GET", "/v1/a"), before)
            .unwrap();
        assert_eq!(a.route.rule(), "route:api.test");
        let b = live
            .decide(&facts("api.test", 443, true, "POST", "/v1/b"), before)
            .unwrap();
        assert_eq!(b.route.rule(), "grant:req-b");
        // The grant uses the host's credential (never the agent's).
        assert_eq!(
            b.auth.unwrap().header_value.as_bytes(),
            b"Bearer secret-token-value"
        );
        assert_eq!(
            live.decide(&facts("api.test", 443, true, "GET", "/v1/b"), after)
                .unwrap_err(),
            Denial::Expired("req-b".into())
        );
        assert!(live
            .decide(&facts("api.test", 443, true, "GET", "/v1/a"), after)
            .is_ok());
        assert_eq!(
            live.decide(&facts("api.test", 443, true, "GET", "/v1/c"), before)
                .unwrap_err(),
            Denial::Path
        );
        assert_eq!(
            live.decide(&facts("api.test", 443, true, "DELETE", "/v1/a"), before)
                .unwrap_err(),
            Denial::Method
        );
        assert_eq!(
            live.decide(&facts("api.test", 8443, true, "GET", "/v1/a"), before)
                .unwrap_err(),
            Denial::NoRoute(NoRoute::Port)
        );
        // Plain http:80 matches the port-less routes, but never injects.
        assert_eq!(
            live.decide(&facts("api.test", 80, false, "GET", "/v1/a"), before)
                .unwrap_err(),
            Denial::AuthNeedsTls
        );
        assert_eq!(
            live.decide(&facts("api.test", 80, false, "GET", "/v1/b"), before)
                .unwrap_err(),
            Denial::AuthNeedsTls
        );
    }

    #[test]
    fn plaintext_needs_an_explicit_port_and_allows_plain_http() {
        let err = load(
            "[[routes]]\nhost = \"a.test\"\nplaintext = true\nauth = { scheme = \"bearer\", secret = \"tok\" }\n",
        )
        .unwrap_err();
        assert!(err.contains("explicit `port`"), "{err}");
        let live = load(
            "[[routes]]\nhost = \"a.test\"\nport = 8080\nplaintext = true\nauth = { scheme = \"bearer\", secret = \"tok\" }\n",
        )
        .unwrap();
        let now = SystemTime::now();
        let ok = live
            .decide(&facts("a.test", 8080, false, "GET", "/x"), now)
            .unwrap();
        assert!(ok.auth.is_some());
        // A route without auth needs no opt-in.
        let live = load("[[routes]]\nhost = \"a.test\"\n").unwrap();
        assert!(live
            .decide(&facts("a.test", 80, false, "GET", "/x"), now)
            .unwrap()
            .auth
            .is_none());
    }
}
