//! Fuzz the policy parsers: egress `routes.toml` (`Live::load`, with a real
//! secrets dir), git-gate `gate.toml` (`GateConfig::from_toml`) and
//! supervise `sv.toml` (`SvConfig`). The same text goes to all three.
//!
//! Oracles besides "never panics":
//! - a loaded `Live`'s `Debug` and every load error never contain a secret
//!   value from the secrets dir; injected header values are marked sensitive;
//! - every exact-host route is found by `Live::find` on its own host/port
//!   (unless expired), and host patterns match what they claim;
//! - `gate.toml` and `sv.toml` round-trip: what `to_toml`/`save` writes
//!   parses back to the same value (the operator's `bottle approve` rewrites
//!   these files).

#![no_main]

#[path = "scratch.rs"]
mod scratch;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use bottle_sidecars::egress::policy::{HostPattern, Live};
use bottle_sidecars::git_gate::config::{compile_glob, url_kind, valid_remote_name, GateConfig};
use bottle_sidecars::supervise::SvConfig;
use libfuzzer_sys::fuzz_target;

/// Secret files (name, value) in the scratch secrets dirs. There are two
/// dirs: in dir `i` each value of 8 bytes or more ends in `-<i>`, so output
/// that echoes a value the input itself spells out is not taken for a leak.
const SECRETS: &[(&str, &str)] = &[
    ("github_token", "ghp_FuzzSecretValue0123456789abcdefABCDEF"),
    ("api", "fuzz-api-secret-value-42"),
    ("basic", "user:fuzz-basic-password"),
    ("short", "abc"),
];

fn value(base: &str, set: usize) -> String {
    if base.len() >= 8 {
        format!("{base}-{set}")
    } else {
        base.to_owned()
    }
}

struct Scratch {
    routes: PathBuf,
    secrets: [PathBuf; 2],
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let dir = scratch::dir("routes");
        let secrets = [0, 1].map(|set| {
            let d = dir.join(format!("secrets-{set}"));
            std::fs::create_dir_all(&d).expect("secrets dir");
            for (name, base) in SECRETS {
                std::fs::write(d.join(name), format!("{}\n", value(base, set))).expect("secret");
            }
            d
        });
        Scratch {
            routes: dir.join("routes.toml"),
            secrets,
        }
    })
}

/// Load with secrets dir `secrets`; returns everything the load lets out
/// (error text, `Debug`, rule names) for the leak check.
fn check_routes(text: &str, path: &Path, secrets: &Path) -> String {
    std::fs::write(path, text).expect("write routes.toml");
    let live = match Live::load(path, Some(secrets)) {
        Ok(live) => live,
        Err(e) => return e,
    };
    let mut shown = format!("{live:?}\n");
    let now = SystemTime::now();
    for route in &live.routes {
        shown.push_str(&route.rule());
        if let Some(auth) = &route.auth {
            assert!(
                auth.header_value.is_sensitive(),
                "injected credential not marked sensitive"
            );
            let _ = auth.header_name();
        }
        match &route.host {
            HostPattern::Exact(h) => {
                assert!(
                    route.host.matches(h),
                    "exact pattern does not match its own host"
                );
                let port = route.port.unwrap_or(443);
                // (a margin so the route cannot expire between now and find)
                let unexpired = route
                    .expires_at
                    .is_none_or(|t| t > now + std::time::Duration::from_secs(60));
                if unexpired {
                    let found = live.find(h, port, 443);
                    assert!(found.is_ok(), "route for {h}:{port} not found: {found:?}");
                    let found = found.unwrap();
                    assert!(found.host.matches(h));
                    assert_eq!(found.port.unwrap_or(443), port);
                }
            }
            HostPattern::Subdomains(s) => {
                assert!(!route.host.matches(s), "*.{s} matches {s} itself");
                assert!(
                    route.host.matches(&format!("a.{s}")),
                    "*.{s} does not match a.{s}"
                );
                assert!(!route.host.matches(&format!("a{s}")), "*.{s} matches a{s}");
            }
        }
    }
    // Lookups of arbitrary names must not panic.
    for line in text.lines().take(8) {
        let _ = live.find(line, 443, 443);
        let _ = live.find(line, 80, 80);
    }
    shown
}

fn check_gate(text: &str) {
    let Ok(cfg) = GateConfig::from_toml(text) else {
        return;
    };
    let written = cfg.to_toml();
    let back = GateConfig::from_toml(&written)
        .unwrap_or_else(|e| panic!("gate.toml as written does not load: {e}\n{written}"));
    assert_eq!(back, cfg, "gate.toml does not round-trip:\n{written}");
    let now = SystemTime::now();
    for r in &cfg.remotes {
        assert!(valid_remote_name(&r.name));
        assert!(url_kind(&r.url).is_ok());
        for (_, rule) in cfg.push_rules(&r.name, now) {
            let _ = compile_glob(&rule.pattern);
        }
    }
    for g in &cfg.grants {
        let _ = g.is_live(now);
    }
}

fn check_sv(text: &str) {
    let Ok(cfg) = toml::from_str::<SvConfig>(text) else {
        return;
    };
    let written =
        toml::to_string(&cfg).unwrap_or_else(|e| panic!("sv.toml does not serialize: {e}"));
    let back: SvConfig = toml::from_str(&written)
        .unwrap_or_else(|e| panic!("sv.toml as written does not load: {e}\n{written}"));
    assert_eq!(back, cfg, "sv.toml does not round-trip:\n{written}");
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 16 * 1024 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let s = scratch();
    let shown = [0, 1].map(|set| check_routes(text, &s.routes, &s.secrets[set]));
    for (name, base) in SECRETS {
        let [v0, v1] = [0, 1].map(|set| value(base, set));
        if v0 == v1 {
            continue; // too short to be held
        }
        let leaked = shown[0].contains(&v0)
            && shown[1].contains(&v1)
            && !shown[0].contains(&v1)
            && !shown[1].contains(&v0);
        assert!(
            !leaked,
            "loading routes.toml shows the value of secret `{name}`"
        );
    }
    check_gate(text);
    check_sv(text);
});
