//! A running bundle reloads the operator's DLP rule files when they change;
//! a broken file is refused (audited with its file, line and rule) and the
//! previous rules stay in force (docs/security.md, "DLP rules").
//!
//! The rules are put in force as `bundle::run` does at start
//! (`DlpSection::install`), then a real egress proxy (loopback HTTPS
//! upstream, bottle CA) serves; the test rewrites the rule dir under it.

mod egress_support;

use std::time::Duration;

use bottle_sidecars::bundle::DlpSection;
use egress_support::*;

const ROUTES: &str = r#"
identity = "test-bottle"
[[routes]]
host = "allowed.test"
port = {TLS}
paths = ["/v1/**"]
methods = ["POST"]
allow_private = true
"#;

// Credential shapes no built-in rule knows (checked below).
const ACME: &str = "acme_live_q8z2m4x7c1v9b3n6k0j5h8g2";
const WIDGET: &str = "wdgt-7Hq2Lm9Xc4Vb1Nz8Kj3Pd6";

const ONE_RULE: &str = r#"
[[rules]]
id = "acme-live-key"
description = "Acme live key"
regex = '''acme_live_[a-z0-9]{24}'''
keywords = ["acme_live_"]
"#;

const TWO_RULES: &str = r#"
[[rules]]
id = "acme-live-key"
description = "Acme live key"
regex = '''acme_live_[a-z0-9]{24}'''
keywords = ["acme_live_"]

[[rules]]
id = "widget-token"
description = "Widget token"
regex = '''wdgt-[A-Za-z0-9]{22}'''
keywords = ["wdgt-"]
"#;

// Line 9 holds the bad regex of rule `widget-token`.
const BROKEN: &str = r#"
[[rules]]
id = "acme-live-key"
regex = '''acme_live_[a-z0-9]{24}'''
keywords = ["acme_live_"]

[[rules]]
id = "widget-token"
regex = '''wdgt-([A-Za-z0-9]{22}'''
keywords = ["wdgt-"]
"#;

/// POST `body`; `Some(rule)` when the proxy blocked it with a DLP rule.
async fn post(b: &Bottle, n: &mut usize, body: &str) -> Option<String> {
    *n += 1;
    let r = b
        .client()
        .post(b.url("allowed.test", &format!("/v1/r{n}")))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    if status == 403 {
        let rule = text.split("(dlp:").nth(1)?.split(')').next()?.to_owned();
        Some(rule)
    } else {
        assert_eq!(status, 200, "{text}");
        None
    }
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn operator_rules_reload_and_a_broken_file_keeps_the_previous_rules() {
    assert_eq!(bottle_sidecars::dlp::pattern_hit(ACME), None);
    assert_eq!(bottle_sidecars::dlp::pattern_hit(WIDGET), None);

    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("org.toml");
    std::fs::write(&file, ONE_RULE).unwrap();
    let dlp = DlpSection {
        rules_dir: Some(rules.path().to_path_buf()),
        disable: Vec::new(),
    };
    assert_eq!(
        dlp.install()
            .unwrap()
            .ids()
            .filter(|i| *i == "acme-live-key")
            .count(),
        1
    );
    let b = Bottle::start(ROUTES).await;
    let mut n = 0;

    // In force at start.
    assert_eq!(
        post(&b, &mut n, &format!("key={ACME}")).await.as_deref(),
        Some("pattern:acme-live-key")
    );
    assert_eq!(post(&b, &mut n, &format!("t={WIDGET}")).await, None);

    // A second rule added to the file: in force without a restart.
    write_atomically(&file, TWO_RULES);
    let hit = poll_until(Duration::from_secs(10), || async {
        let mut m = 1000 + n;
        post(&b, &mut m, &format!("t={WIDGET}")).await
    })
    .await;
    assert_eq!(hit.as_deref(), Some("pattern:widget-token"));
    b.expect_audit("rules reloaded", |l| {
        l["event"] == "dlp-rules" && l["decision"] == "ok"
    })
    .await;

    // A broken file: refused, named with its file, line and rule; the
    // previous rules (both) stay in force.
    write_atomically(&file, BROKEN);
    let line = b
        .expect_audit("broken rule file refused", |l| {
            l["event"] == "dlp-rules" && l["decision"] == "error"
        })
        .await;
    let err = line["error"].as_str().unwrap();
    assert!(err.contains("org.toml:9"), "{err}");
    assert!(err.contains("rule `widget-token`"), "{err}");
    assert!(err.contains("regex"), "{err}");
    // Let a few polls pass: still refused, nothing else changes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    n += 2000;
    assert_eq!(
        post(&b, &mut n, &format!("t={WIDGET}")).await.as_deref(),
        Some("pattern:widget-token")
    );
    assert_eq!(
        post(&b, &mut n, &format!("key={ACME}")).await.as_deref(),
        Some("pattern:acme-live-key")
    );
    assert_eq!(post(&b, &mut n, "nothing secret here").await, None);

    // Fixed by removing the second rule: that one is gone, the first stays.
    write_atomically(&file, ONE_RULE);
    let gone = poll_until(Duration::from_secs(10), || async {
        let mut m = 3000 + n;
        post(&b, &mut m, &format!("t={WIDGET}"))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(gone, Some(()), "the removed rule is no longer in force");
    assert_eq!(
        post(&b, &mut n, &format!("key={ACME}")).await.as_deref(),
        Some("pattern:acme-live-key")
    );

    // What the upstream and the audit saw: no blocked value, ever.
    let upstream = b.upstream.everything();
    assert!(
        !upstream.contains(ACME),
        "a blocked key reached the upstream"
    );
    let audit = std::fs::read_to_string(&b.audit).unwrap();
    assert!(!audit.contains(ACME) && !audit.contains(WIDGET));
    assert!(b
        .audit_lines()
        .iter()
        .any(|l| l["decision"] == "deny" && l["rule"] == "dlp:pattern:widget-token"));
}
