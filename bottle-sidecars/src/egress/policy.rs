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

/// `routes.toml` as written on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default = "yes")]
    dlp: bool,
    #[serde(default = "default_max_body_scan")]
    max_body_scan: usize,
    #[serde(default)]
    secrets_dir: Option<PathBuf>,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

fn yes() -> bool {
    true
}

fn default_max_body_scan() -> usize {
    DEFAULT_MAX_BODY_SCAN
}

/// One `[[routes]]` entry. Unknown keys are rejected: a typo in `paths` or
/// `methods` must not silently widen a route to "everything".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    allow_private: bool,
    #[serde(default)]
    auth: Option<AuthFile>,
    #[serde(default)]
    grant: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    /// Free text (e.g. the reason a grant was approved); ignored.
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
    /// Free text; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    scheme: String,
    secret: String,
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
    Header(hyper::header::HeaderName),
}

/// A route credential: scheme + the secret's value (never printed).
#[derive(Clone)]
pub struct Auth {
    /// How it is injected.
    pub scheme: AuthScheme,
    /// Secret file name (for messages).
    pub secret_name: String,
    /// The injected header value, marked sensitive.
    pub header_value: hyper::header::HeaderValue,
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
    pub fn header_name(&self) -> hyper::header::HeaderName {
        match &self.scheme {
            AuthScheme::Bearer | AuthScheme::Basic => hyper::header::AUTHORIZATION,
            AuthScheme::XApiKey => hyper::header::HeaderName::from_static("x-api-key"),
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

impl Live {
    /// The first unexpired route matching `host` and `port`; `default_port`
    /// is the port of routes that do not name one (443 for CONNECT/https,
    /// 80 for plain http).
    pub fn find(&self, host: &str, port: u16, default_port: u16) -> Result<&Route, NoRoute> {
        let now = SystemTime::now();
        let mut why = NoRoute::Host;
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
                why = NoRoute::Expired(
                    route
                        .grant
                        .clone()
                        .unwrap_or_else(|| route.host.to_string()),
                );
                continue;
            }
            return Ok(route);
        }
        Err(why)
    }

    /// Load and validate `routes_path`; `secrets_override` (the CLI flag)
    /// wins over the file's `secrets_dir`.
    pub fn load(routes_path: &Path, secrets_override: Option<&Path>) -> Result<Live, String> {
        let text = std::fs::read_to_string(routes_path)
            .map_err(|e| format!("{}: {e}", routes_path.display()))?;
        let file: RoutesFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", routes_path.display()))?;
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
                        hyper::header::HeaderName::from_bytes(name.trim().as_bytes())
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
            let mut header_value = hyper::header::HeaderValue::from_bytes(&header)
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
    Ok(Route {
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
    let file: RoutesFile =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", routes_path.display()))?;
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
}
