//! The host-side Prepare impls against the config loaders the daemons use
//! (`Live::load`, `GateConfig::load`, `SvConfig::load`, `BundleConfig::load`,
//! all in this crate): what they write must load in egress, git-gate,
//! supervise and the bundle, hold every secret only in mode-600 files, and
//! give the agent nothing secret.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use bottle_core::plan::{Prompter, ResolveOptions};
use bottle_core::{resolve, Home, Identity, Loader, PrepareContext, Secret, StateDir};
use bottle_host::bundle::BundleConfig;
use bottle_host::gate::GateConfig;
use bottle_host::prepare::{known_hosts_line, prepare_all};
use bottle_host::routes::Live;
use bottle_host::supervise::SvConfig;
use camino::Utf8PathBuf;

const TOKEN: &str = "ghp_prepareTestTOKEN0123456789abcdef";
const PROVIDER: &str = "sk-ant-prepare-test-KEY-0123456789";
const ASKED: &str = "asked-answer-SECRET-42";
const DEPLOY_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake-deploy-key-material\n-----END OPENSSH PRIVATE KEY-----\n";

struct Answer;
impl Prompter for Answer {
    fn ask(&self, _k: &str, _q: &str) -> bottle_core::Result<Secret> {
        Ok(Secret::new(ASKED))
    }
}

fn setup() -> (
    tempfile::TempDir,
    Utf8PathBuf,
    bottle_core::BottlePlan,
    StateDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(dir.path().to_path_buf()).unwrap();
    std::fs::create_dir_all(root.join("bottles")).unwrap();
    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("keys/deploy"), DEPLOY_KEY).unwrap();
    std::fs::write(
        root.join("bottles/dev.toml"),
        format!(
            r#"
[agent_provider]
template = "claude"
auth = {{ host = "api.anthropic.com", scheme = "x-api-key", token = "${{PROVIDER_KEY}}" }}
[env]
NAME = "?your name"
TZ = "${{TZ_VAR}}"
DB_PASSWORD = {{ secret = "${{DB_PW}}" }}
[git]
user = {{ name = "Bot", email = "bot@example.com" }}
[[git.remotes]]
name = "origin"
url = "ssh://git@git.example.com:2222/team/repo.git"
identity_file = "{root}/keys/deploy"
known_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedKeyForTest comment"
push = ["refs/heads/bot/*"]
[[egress.routes]]
host = "api.github.com"
paths = ["/repos/**"]
methods = ["GET"]
auth = {{ scheme = "bearer", token = "${{GH_TOKEN}}" }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("agents/main.toml"),
        "bottle = \"dev\"\nprompt = \"do the thing\"\n",
    )
    .unwrap();
    let home = Home::new(&root);
    let (a, b) = Loader::new(home.clone(), None).load("main").unwrap();
    let (id, slot) = home.allocate("main", "dev").unwrap();
    let env = BTreeMap::from([
        ("PROVIDER_KEY".to_owned(), PROVIDER.to_owned()),
        ("GH_TOKEN".to_owned(), TOKEN.to_owned()),
        ("TZ_VAR".to_owned(), "Europe/Berlin".to_owned()),
        ("DB_PW".to_owned(), "db-pw-value-1234".to_owned()),
    ]);
    let opts = ResolveOptions {
        identity: Some(id.clone()),
        slot,
        ..Default::default()
    };
    let plan = resolve(&a, &b, &opts, &env, &Answer).unwrap();
    let state = home.state(&Identity::parse(id.as_str()).unwrap());
    (dir, root, plan, state)
}

#[test]
fn prepared_files_load_in_every_daemon_and_hold_secrets_only_in_600_files() {
    let (_dir, _root, plan, state) = setup();
    let ctx = PrepareContext {
        state: &state,
        bundle_host: "bundle".into(),
    };
    let wiring = prepare_all(&plan, &ctx).unwrap();

    // secrets: one file each, mode 600, exact values
    let secrets = state.secrets_dir();
    for (name, value) in [
        ("route-api.github.com", TOKEN),
        ("provider", PROVIDER),
        ("env-NAME", ASKED),
        ("env-DB_PASSWORD", "db-pw-value-1234"),
        ("git-origin.key", DEPLOY_KEY),
    ] {
        let p = secrets.join(name);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), value, "{name}");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
    }
    // a plain `${VAR}` (TZ) reaches the agent but is not held: no secret file
    assert!(!secrets.join("env-TZ").exists(), "TZ is held");
    let ca_key = state.ca_dir().join("ca.key");
    assert_eq!(
        std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // routes.toml loads in the egress policy loader (with the host's secrets dir)
    let live = Live::load(
        state.routes_path().as_std_path(),
        Some(secrets.as_std_path()),
    )
    .unwrap();
    assert_eq!(live.identity.as_deref(), Some(plan.identity.as_str()));
    let gh = live.find("api.github.com", 443, 443).unwrap();
    assert!(gh.auth.is_some());
    assert!(live.find("api.anthropic.com", 443, 443).is_ok());
    assert!(live.find("evil.example.com", 443, 443).is_err());

    // gate.toml, sv.toml, bundle.toml load and validate
    let gate = GateConfig::load(state.git_dir().join("gate.toml").as_std_path()).unwrap();
    gate.validate().unwrap();
    assert_eq!(gate.remotes[0].name, "origin");
    assert_eq!(
        gate.remotes[0]
            .identity_file
            .as_deref()
            .unwrap()
            .to_str()
            .unwrap(),
        "/bottle/secrets/git-origin.key"
    );
    let kh = std::fs::read_to_string(state.git_dir().join("known_hosts")).unwrap();
    assert_eq!(
        kh.trim(),
        "[git.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedKeyForTest"
    );
    let sv = SvConfig::load(state.supervise_dir().join("sv.toml").as_std_path()).unwrap();
    assert!(sv.operator_key.as_deref().is_some_and(|k| k.len() == 64));
    let bundle = BundleConfig::load(state.bundle_config_path().as_std_path()).unwrap();
    bundle.check().unwrap();
    assert!(bundle.egress.is_some() && bundle.git_gate.is_some() && bundle.supervise.is_some());

    // no file outside secrets/ and ca.key carries a secret value
    let mut leaks = Vec::new();
    for entry in walk(state.path().as_std_path()) {
        if entry.starts_with(secrets.as_std_path())
            || entry.ends_with("ca.key")
            || entry.to_string_lossy().contains("/operator/")
        {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        for v in [TOKEN, PROVIDER, ASKED, "fake-deploy-key-material"] {
            if text.contains(v) {
                leaks.push(format!("{} holds a secret", entry.display()));
            }
        }
    }
    assert!(leaks.is_empty(), "{leaks:?}");

    // the agent gets proxy/CA env pointing at the bundle, and nothing secret
    assert_eq!(wiring.agent_env["HTTPS_PROXY"], "http://bundle:8888");
    assert_eq!(wiring.agent_env["NO_PROXY"], "bundle");
    assert_eq!(
        wiring.agent_env["SSL_CERT_FILE"],
        bottle_core::prepare::AGENT_CA_PATH
    );
    assert_eq!(wiring.agent_env["BOTTLE_MCP_URL"], "http://bundle:9100/mcp");
    let wiring_json = serde_json::to_string(&wiring).unwrap();
    for v in [TOKEN, PROVIDER, ASKED] {
        assert!(!wiring_json.contains(v));
    }
    for f in &wiring.agent_files {
        assert!(
            !f.host.starts_with(&secrets),
            "agent file from the secrets dir: {}",
            f.host
        );
        assert!(!f.host.as_str().ends_with("ca.key"));
        let text = std::fs::read_to_string(&f.host).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{}", f.host);
    }
    // S11: the access credential: one per bottle, mode 600, named in
    // bundle.toml, and handed to the agent only (proxy URL as secret env,
    // git remote path, MCP config); never in the visible env or a mount
    // other than its own read-only one
    let key_path = state.access_dir().join("key");
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert_eq!(key.len(), 64, "a 256-bit hex credential");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        bundle.access_key.as_deref().and_then(|p| p.to_str()),
        Some("/bottle/access/key")
    );
    assert_eq!(
        wiring.agent_secret_env["HTTPS_PROXY"].expose(),
        format!("http://bottle:{key}@bundle:8888")
    );
    assert_eq!(
        wiring.agent_secret_env["http_proxy"].expose(),
        format!("http://bottle:{key}@bundle:8888")
    );
    assert_eq!(wiring.agent_secret_env["BOTTLE_ACCESS_KEY"].expose(), key);
    assert!(
        wiring.agent_env.values().all(|v| !v.contains(&key)),
        "the credential is in the visible env"
    );
    assert!(!serde_json::to_string(&wiring).unwrap().contains(&key));
    let gitconfig = std::fs::read_to_string(state.agent_dir().join("gitconfig")).unwrap();
    assert!(gitconfig.contains(&format!("[url \"git://bundle:9418/{key}/origin.git\"]\n\tinsteadOf = ssh://git@git.example.com:2222/team/repo.git")), "{gitconfig}");
    let claude: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.agent_dir().join("claude-mcp.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        claude["mcpServers"]["bottle-supervise"]["url"],
        "http://bundle:9100/mcp"
    );
    assert_eq!(
        claude["mcpServers"]["bottle-supervise"]["headers"]["Authorization"],
        format!("Bearer {key}")
    );
    // a codex agent's config carries it too
    let mut codex_plan = plan.clone();
    codex_plan.provider.image =
        bottle_core::plan::ImageSource::Template(bottle_core::Template::Codex);
    prepare_all(&codex_plan, &ctx).unwrap();
    let codex: toml::Value = toml::from_str(
        &std::fs::read_to_string(state.agent_dir().join("codex-config.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        codex["mcp_servers"]["bottle-supervise"]["http_headers"]["Authorization"].as_str(),
        Some(format!("Bearer {key}").as_str())
    );
    // resume keeps the credential (a resumed agent still carries it)
    let again = prepare_all(&plan, &ctx).unwrap();
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), key);
    assert_eq!(
        again.agent_secret_env["HTTPS_PROXY"].expose(),
        wiring.agent_secret_env["HTTPS_PROXY"].expose()
    );

    // the bundle mounts: secrets/ca/egress/git/supervise read-only, never the operator key
    let ro: BTreeMap<_, _> = wiring
        .bundle_mounts
        .iter()
        .map(|m| (m.target.as_str(), m.read_only))
        .collect();
    for t in [
        "/bottle/secrets",
        "/bottle/ca",
        "/bottle/egress",
        "/bottle/git",
        "/bottle/supervise",
        "/bottle/bundle.toml",
        "/bottle/access",
    ] {
        assert_eq!(ro.get(t), Some(&true), "{t}");
    }
    for t in [
        "/bottle/queue",
        "/bottle/audit",
        "/bottle/git/mirrors",
        "/bottle/run",
    ] {
        assert_eq!(ro.get(t), Some(&false), "{t}");
    }
    // run/: the bundle's readiness marker, named in bundle.toml; the agent
    // reads the dir (read-only) to wait for it; a stale marker is removed
    let run = state.run_dir();
    assert_eq!(
        std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    let bundle =
        bottle_host::bundle::BundleConfig::load(state.bundle_config_path().as_std_path()).unwrap();
    assert_eq!(
        bundle.ready_file.as_deref(),
        Some(std::path::Path::new("/bottle/run/bundle.ready"))
    );
    std::fs::write(state.bundle_ready_path(), "ready 1\n").unwrap();
    prepare_all(&plan, &ctx).unwrap();
    assert!(
        !state.bundle_ready_path().exists(),
        "a stale marker survived prepare"
    );
    assert!(wiring
        .bundle_mounts
        .iter()
        .all(|m| !m.host.as_str().contains("operator")));
    assert_eq!(
        wiring.bundle_args,
        ["run", "--config", "/bottle/bundle.toml"]
    );
    assert_eq!(wiring.ports, [8888, 9100, 9418]);
}

/// Resolve the bottle again (as `resume` does) for the same identity and
/// slot, after the operator edited the manifests.
fn resolve_again(root: &Utf8PathBuf, plan: &bottle_core::BottlePlan) -> bottle_core::BottlePlan {
    let home = Home::new(root);
    let (a, b) = Loader::new(home, None).load("main").unwrap();
    let env = BTreeMap::from([
        ("PROVIDER_KEY".to_owned(), PROVIDER.to_owned()),
        ("GH_TOKEN".to_owned(), TOKEN.to_owned()),
        ("TZ_VAR".to_owned(), "Europe/Berlin".to_owned()),
        ("DB_PW".to_owned(), "db-pw-value-1234".to_owned()),
    ]);
    let opts = ResolveOptions {
        identity: Some(plan.identity.clone()),
        slot: plan.slot,
        ..Default::default()
    };
    resolve(&a, &b, &opts, &env, &Answer).unwrap()
}

#[test]
fn resume_regenerates_policy_from_the_manifests_keeping_only_live_grants() {
    let (_dir, root, plan, state) = setup();
    let ctx = PrepareContext {
        state: &state,
        bundle_host: "bundle".into(),
    };
    prepare_all(&plan, &ctx).unwrap();
    let ca = std::fs::read(state.ca_dir().join("ca.pem")).unwrap();
    let routes = state.routes_path();
    let gate_path = state.git_dir().join("gate.toml");
    // Grants as `bottle approve` appends them: one live, one expired each.
    let append = |p: &Utf8PathBuf, more: &str| {
        let mut t = std::fs::read_to_string(p).unwrap();
        t.push_str(more);
        std::fs::write(p, t).unwrap();
    };
    append(&routes, "\n[[routes]]\nhost = \"live.example.com\"\ngrant = \"req-live\"\nexpires_at = \"2999-01-01T00:00:00Z\"\n\n[[routes]]\nhost = \"old.example.com\"\ngrant = \"req-old\"\nexpires_at = \"2001-01-01T00:00:00Z\"\n");
    append(&gate_path, "\n[[grants]]\nremote = \"origin\"\npattern = \"refs/heads/live/*\"\ngrant = \"req-glive\"\nexpires_at = \"2999-01-01T00:00:00Z\"\n\n[[grants]]\nremote = \"origin\"\npattern = \"refs/heads/old/*\"\ngrant = \"req-gold\"\nexpires_at = \"2001-01-01T00:00:00Z\"\n");
    // Both files still load with the grants in them.
    assert!(Live::load(
        routes.as_std_path(),
        Some(state.secrets_dir().as_std_path())
    )
    .unwrap()
    .find("live.example.com", 443, 443)
    .is_ok());
    assert_eq!(
        GateConfig::load(gate_path.as_std_path())
            .unwrap()
            .grants
            .len(),
        2
    );

    // The operator removes the github route (and its token) and narrows the
    // push rule, then resumes.
    let bottle = root.join("bottles/dev.toml");
    let text = std::fs::read_to_string(&bottle).unwrap();
    let text = text
        .split("[[egress.routes]]")
        .next()
        .unwrap()
        .replace("refs/heads/bot/*", "refs/heads/review/*");
    std::fs::write(&bottle, text).unwrap();
    let plan2 = resolve_again(&root, &plan);
    prepare_all(&plan2, &ctx).unwrap();

    let live = Live::load(
        routes.as_std_path(),
        Some(state.secrets_dir().as_std_path()),
    )
    .unwrap();
    assert!(
        live.find("api.github.com", 443, 443).is_err(),
        "a removed route survived resume"
    );
    assert!(live.find("api.anthropic.com", 443, 443).is_ok());
    assert_eq!(
        live.find("live.example.com", 443, 443).unwrap().rule(),
        "grant:req-live"
    );
    assert!(!std::fs::read_to_string(&routes)
        .unwrap()
        .contains("old.example.com"));

    let gate = GateConfig::load(gate_path.as_std_path()).unwrap();
    let now = std::time::SystemTime::now();
    let rules: Vec<String> = gate
        .push_rules("origin", now)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert!(
        rules.contains(&"push:refs/heads/review/*".to_owned()),
        "{rules:?}"
    );
    assert!(
        !rules.iter().any(|l| l.contains("refs/heads/bot/")),
        "a removed push rule survived resume: {rules:?}"
    );
    assert!(rules.contains(&"grant:req-glive".to_owned()), "{rules:?}");
    let grants: Vec<&str> = gate.grants.iter().map(|g| g.grant.as_str()).collect();
    assert_eq!(grants, ["req-glive"]);

    // The removed route's token is gone from the secrets dir; the others stay.
    assert!(!state.secrets_dir().join("route-api.github.com").exists());
    assert!(state.secrets_dir().join("provider").exists());
    assert!(state.secrets_dir().join("git-origin.key").exists());
    // The CA is kept (the agent trusts it).
    assert_eq!(std::fs::read(state.ca_dir().join("ca.pem")).unwrap(), ca);
}

#[test]
fn known_hosts_lines_pin_host_and_port() {
    let key = "ssh-ed25519 AAAAkey comment";
    assert_eq!(
        known_hosts_line("git@github.com:o/r.git", key).unwrap(),
        "github.com ssh-ed25519 AAAAkey"
    );
    assert_eq!(
        known_hosts_line("ssh://git@h.example:22/r.git", key).unwrap(),
        "h.example ssh-ed25519 AAAAkey"
    );
    assert_eq!(
        known_hosts_line("ssh://h.example:2222/r.git", key).unwrap(),
        "[h.example]:2222 ssh-ed25519 AAAAkey"
    );
    assert!(known_hosts_line("https://h.example/r.git", key).is_none());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
