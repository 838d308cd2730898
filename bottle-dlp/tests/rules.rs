//! Issue 15: operator rules in gitleaks format, disabling by id, clear
//! errors for broken files, and the rules in force surviving a bad reload.

use bottle_dlp::rules::{self, translate_go_regex, RuleSet};
use bottle_dlp::Detector;

const ORG_RULES: &str = r#"
title = "acme gitleaks config"

[extend]
useDefault = true

[[rules]]
id = "acme-internal-token"
description = "ACME internal service token"
regex = '''\b(acme_[a-z0-9]{24})\b'''
keywords = ["acme_"]
entropy = 3.0

[[rules.allowlists]]
stopwords = ["acme_example"]
"#;

fn token() -> String {
    // 24 random-looking characters: entropy well above 3.0
    "acme_q8z3k1v7x0m5n2b9c4l6w8e3".into()
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

#[test]
fn organisation_rules_add_to_the_builtins() {
    let d = dir_with(&[("acme.toml", ORG_RULES)]);
    let set = RuleSet::load(Some(d.path()), &[]).unwrap();
    assert!(set.len() > 200, "built-ins are kept: {}", set.len());
    let hit = set.scan(format!("auth: {}", token()).as_bytes()).unwrap();
    assert_eq!(hit.rule, "acme-internal-token");
    // the rule's own stopword allowlist works
    assert!(set.scan(b"auth: acme_example0000000000000000000").is_none());
    // low entropy is not a finding
    assert!(set.scan(b"auth: acme_aaaaaaaaaaaaaaaaaaaaaaaa ").is_none());
    // the built-in set alone does not know it (its generic rule may fire)
    assert!(RuleSet::builtin()
        .scan(format!("auth: {}", token()).as_bytes())
        .is_none_or(|h| h.rule != "acme-internal-token"));
}

#[test]
fn same_id_overrides_and_disable_removes() {
    let over = r#"
[[rules]]
id = "github-pat"
regex = '''\bghp_only_this_[0-9]{4}\b'''
keywords = ["ghp_only_this_"]
"#;
    let d = dir_with(&[("over.toml", over)]);
    let set = RuleSet::load(Some(d.path()), &[]).unwrap();
    assert_eq!(
        set.scan(b"x ghp_only_this_1234 y").unwrap().rule,
        "github-pat"
    );
    assert!(set
        .scan(b"ghp_U8JZpDE0iGXlD6gNCFbaEPFjbD0kH8Oool8D")
        .is_none_or(|h| h.rule != "github-pat"));

    let set = RuleSet::load(None, &["github-pat".to_string()]).unwrap();
    assert!(set.ids().all(|id| id != "github-pat"));
    assert!(set
        .dropped()
        .iter()
        .any(|(id, why)| id == "github-pat" && why == "disabled"));
    let err = RuleSet::load(None, &["no-such-rule".to_string()]).unwrap_err();
    assert_eq!(err.rule.as_deref(), Some("no-such-rule"));
}

#[test]
fn a_broken_file_names_file_line_and_rule() {
    let bad_regex = "[[rules]]\nid = \"ok-rule\"\nregex = '''abc'''\nkeywords = [\"abc\"]\n\n[[rules]]\nid = \"broken-rule\"\ndescription = \"x\"\nregex = '''(unclosed'''\nkeywords = [\"x\"]\n";
    let d = dir_with(&[("org.toml", bad_regex)]);
    let err = RuleSet::load(Some(d.path()), &[]).unwrap_err();
    assert!(err.file.ends_with("org.toml"), "{err}");
    assert_eq!(err.line, Some(9), "{err}");
    assert_eq!(err.rule.as_deref(), Some("broken-rule"));
    let shown = err.to_string();
    assert!(
        shown.contains("org.toml:9: rule `broken-rule`: regex:"),
        "{shown}"
    );

    let bad_toml = "[[rules]]\nid = \"x\"\nregex = '''a'''\nkeywords = [\"a\"\n";
    let d = dir_with(&[("syntax.toml", bad_toml)]);
    let err = RuleSet::load(Some(d.path()), &[]).unwrap_err();
    assert!(err.file.ends_with("syntax.toml"));
    assert!(err.line.is_some(), "{err}");

    let bad_group =
        "[[rules]]\nid = \"grp\"\nregex = '''(a)(b)'''\nsecretGroup = 3\nkeywords = [\"ab\"]\n";
    let d = dir_with(&[("grp.toml", bad_group)]);
    let err = RuleSet::load(Some(d.path()), &[]).unwrap_err();
    assert_eq!(err.rule.as_deref(), Some("grp"));
    assert!(err.message.contains("secretGroup 3"), "{err}");
}

#[test]
fn a_failed_reload_keeps_the_rules_in_force() {
    let good = dir_with(&[("acme.toml", ORG_RULES)]);
    rules::reload(Some(good.path()), &[]).unwrap();
    let leak = format!("x-token: {}", token());
    let det = Detector::new(Vec::new());
    assert_eq!(
        det.scan(leak.as_bytes()).unwrap().rule,
        "pattern:acme-internal-token"
    );

    let bad = dir_with(&[(
        "acme.toml",
        "[[rules]]\nid = \"acme-internal-token\"\nregex = '''(x'''\n",
    )]);
    let err = rules::reload(Some(bad.path()), &[]).unwrap_err();
    assert_eq!(err.rule.as_deref(), Some("acme-internal-token"));
    // detectors built after the failed reload still use the previous rules
    let det = Detector::new(Vec::new());
    assert_eq!(
        det.scan(leak.as_bytes()).unwrap().rule,
        "pattern:acme-internal-token"
    );
}

#[test]
fn go_regex_literal_braces_are_translated() {
    assert_eq!(translate_go_regex(r"\$?{{[^}]+}}"), r"\$?\{\{[^}]+}}");
    assert_eq!(translate_go_regex(r"a{2,5}b{3}c{1,}"), r"a{2,5}b{3}c{1,}");
    assert_eq!(translate_go_regex(r"[{]x\{y"), r"[{]x\{y");
    assert_eq!(translate_go_regex(r"[^]]{2}"), r"[^]]{2}");
    assert!(regex::Regex::new(&translate_go_regex(r"['\x22]?\$?{{[^}]+}}")).is_ok());
}

#[test]
fn every_builtin_rule_is_in_use_or_listed_with_a_reason() {
    let set = RuleSet::builtin();
    let file: toml::Table = toml::from_str(rules::GITLEAKS_DEFAULT).unwrap();
    let reference = file["rules"].as_array().unwrap().len();
    let known: Vec<&str> = set.known_ids().collect();
    for r in file["rules"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        assert!(
            known.contains(&id),
            "gitleaks rule {id} neither used nor dropped"
        );
    }
    for (id, why) in set.dropped() {
        assert!(!why.is_empty(), "{id} dropped without a reason");
    }
    assert!(set.dropped().len() * 20 < reference, "{:?}", set.dropped());
}

#[test]
fn every_builtin_regex_compiles_and_its_secret_group_exists() {
    // The built-ins compile on first use (off the bundle's start), so this
    // is where a broken built-in pattern shows.
    RuleSet::builtin()
        .compile_all()
        .expect("every built-in regex compiles");
    // The same files compiled eagerly agree.
    let eager = RuleSet::from_sources(
        &[
            ("gitleaks".into(), rules::GITLEAKS_DEFAULT.into()),
            ("bottle".into(), rules::BOTTLE_RULES.into()),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(
        eager.ids().collect::<Vec<_>>(),
        RuleSet::builtin().ids().collect::<Vec<_>>()
    );
}

#[test]
fn an_operator_rule_with_a_bad_regex_is_refused_when_loaded_not_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("org.toml"),
        "[[rules]]\nid = \"org-bad\"\nregex = '''(unclosed'''\nkeywords = [\"org\"]\n",
    )
    .unwrap();
    let err = RuleSet::load(Some(dir.path()), &[]).unwrap_err();
    assert_eq!(err.rule.as_deref(), Some("org-bad"), "{err}");
    assert!(err.message.starts_with("regex:"), "{err}");
}
