//! git-gate end to end: real git clients, a real gate, real upstreams
//! (`file://` and a bare repo behind a throwaway `sshd` on 127.0.0.1).
//!
//! Every refusal test asserts what the agent's git saw, that the upstream did
//! not change (read from the upstream repo itself) and the audit line.
//!
//! Without git (or, for the ssh tests, without sshd) a test is reported
//! ignored with the reason, and failed with `CI=true` (`bottle-test-gate`).

mod git_gate_support;

use std::path::Path;

use bottle_sidecars::git_gate::{Grant, PushRule};
use bottle_test_gate::{run, trial, GIT, SSHD, SSHD_PATH};
use git_gate_support::*;

fn main() {
    run(vec![
        trial!(clone_fetch_and_allowed_push_reach_upstream, &GIT),
        trial!(unknown_remote_is_refused_with_its_name, &GIT),
        trial!(disallowed_ref_is_refused_and_not_upstream, &GIT),
        trial!(
            force_push_and_delete_refused_unless_the_rule_allows_them,
            &GIT
        ),
        trial!(commits_with_secrets_are_refused_and_not_upstream, &GIT),
        trial!(grants_in_gate_toml_are_live_and_expire, &GIT),
        trial!(new_branch_on_a_big_history_scans_only_new_commits, &GIT),
        trial!(
            unreachable_upstream_fails_closed_or_serves_stale_when_configured,
            &GIT
        ),
        trial!(upstream_rejection_fails_the_agents_push, &GIT),
        trial!(ssh_upstream_clone_push_and_upstream_down, &GIT, &SSHD),
        trial!(ssh_wrong_pinned_host_key_fails_fetch_and_push, &GIT, &SSHD),
        trial!(
            upstream_change_unseen_by_the_agent_is_never_overwritten,
            &GIT
        ),
        trial!(a_secret_added_by_a_merge_commit_itself_is_caught, &GIT),
        trial!(push_only_remote_refuses_fetch, &GIT),
        trial!(
            push_scans_every_object_it_adds_headers_tags_names_and_notes,
            &GIT
        ),
        trial!(
            a_ref_named_after_a_secret_is_refused_and_never_recorded,
            &GIT
        ),
        trial!(only_the_holder_of_the_access_credential_uses_the_gate, &GIT),
        trial!(
            a_secret_in_gitlink_ids_is_refused_and_a_plain_submodule_pointer_lands,
            &GIT
        ),
    ])
}

/// Clone `origin` through the gate into `<tmp>/work`.
fn clone(world: &World, gate: &Gate) -> std::path::PathBuf {
    let work = world.path().join("work");
    world.ok(
        world.path(),
        &[
            "clone",
            "--quiet",
            &gate.url("origin"),
            work.to_str().unwrap(),
        ],
    );
    work
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn clone_fetch_and_allowed_push_reach_upstream() {
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));

    let work = clone(&w, &gate);
    assert_eq!(
        w.ok(&work, &["rev-parse", "HEAD"]),
        w.ref_of(&up, "refs/heads/main").unwrap()
    );
    let fetch = gate.last("fetch");
    assert_eq!(fetch["decision"], "allow");
    assert_eq!(fetch["remote"], "origin");
    assert_eq!(fetch["sidecar"], "git-gate");

    // Upstream moves; a fetch through the gate sees it (mirror refreshed first).
    let seed = w.path().join("up-seed");
    let moved = w.commit(&seed, &[("b.txt", "b\n")], "upstream change");
    w.ok(&seed, &["push", "--quiet", up.to_str().unwrap(), "main"]);
    w.ok(&work, &["pull", "--quiet", "--ff-only"]);
    assert_eq!(w.ok(&work, &["rev-parse", "HEAD"]), moved);

    // An allowed new branch lands upstream.
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/feature"]);
    let c = w.commit(&work, &[("src/lib.rs", "pub fn f() {}\n")], "add f");
    let out = w.run(&work, &["push", "origin", "bot/feature"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pushed to upstream"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/feature").as_deref(),
        Some(c.as_str())
    );
    let push = gate.last("push");
    assert_eq!(push["decision"], "allow");
    assert_eq!(push["rule"], "push:refs/heads/bot/*");
    assert_eq!(push["refs"][0], "refs/heads/bot/feature");
    assert_eq!(push["scanned"], 1);

    // A fast-forward on it lands too, scanning only the one new commit.
    let c2 = w.commit(
        &work,
        &[("src/lib.rs", "pub fn f() {}\npub fn g() {}\n")],
        "add g",
    );
    w.ok(&work, &["push", "--quiet", "origin", "bot/feature"]);
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/feature").as_deref(),
        Some(c2.as_str())
    );
    assert_eq!(gate.last("push")["scanned"], 1);
}

fn unknown_remote_is_refused_with_its_name() {
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let out = w.run(w.path(), &["ls-remote", &gate.url("elsewhere")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown remote 'elsewhere'"), "{err}");
    let line = gate.last_is("fetch", "deny", "unknown-remote");
    assert_eq!(line["remote"], "elsewhere");
    // Path tricks do not escape to other repos either.
    let out = w.run(
        w.path(),
        &["ls-remote", &format!("git://{}/../up.git", gate.addr)],
    );
    assert!(!out.status.success());
    assert_eq!(gate.last("fetch")["rule"], "unknown-remote");
}

fn disallowed_ref_is_refused_and_not_upstream() {
    let w = World::new();
    let up = w.upstream("up");
    let before = w.ref_of(&up, "refs/heads/main").unwrap();
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    w.commit(&work, &[("x.txt", "x\n")], "direct to main");
    let out = w.run(&work, &["push", "origin", "main"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refs/heads/main is not a pushable ref"),
        "{err}"
    );
    assert!(err.contains("request_git_push"), "{err}");
    assert_eq!(w.ref_of(&up, "refs/heads/main").unwrap(), before);
    let line = gate.last_is("push", "deny", "ref-not-allowed");
    assert_eq!(line["ref"], "refs/heads/main");
    // `*` stays in one component: bot/a/b is not covered by refs/heads/bot/*.
    let out = w.run(&work, &["push", "origin", "HEAD:refs/heads/bot/a/b"]);
    assert!(!out.status.success());
    assert_eq!(w.ref_of(&up, "refs/heads/bot/a/b"), None);
    // Tags are refs too.
    let out = w.run(&work, &["push", "origin", "HEAD:refs/tags/v1"]);
    assert!(!out.status.success());
    assert_eq!(w.ref_of(&up, "refs/tags/v1"), None);
    assert_eq!(gate.last("push")["rule"], "ref-not-allowed");
}

fn force_push_and_delete_refused_unless_the_rule_allows_them() {
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/a"]);
    let first = w.commit(&work, &[("a.txt", "1\n")], "one");
    w.ok(
        &work,
        &["push", "--quiet", "origin", "bot/a", "bot/a:wip/a"],
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/a").as_deref(),
        Some(first.as_str())
    );

    // Rewrite history and force-push: refused on bot/*.
    w.ok(
        &work,
        &["commit", "--quiet", "--amend", "-m", "one, rewritten"],
    );
    let rewritten = w.ok(&work, &["rev-parse", "HEAD"]);
    let out = w.run(&work, &["push", "--force", "origin", "bot/a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a fast-forward"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/a").as_deref(),
        Some(first.as_str())
    );
    gate.last_is("push", "deny", "non-fast-forward");

    // Delete: refused on bot/*.
    let out = w.run(&work, &["push", "origin", ":refs/heads/bot/a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("deleting refs/heads/bot/a"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/a").as_deref(),
        Some(first.as_str())
    );
    gate.last_is("push", "deny", "delete-not-allowed");

    // wip/* allows both.
    w.ok(
        &work,
        &["push", "--quiet", "--force", "origin", "HEAD:wip/a"],
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/wip/a").as_deref(),
        Some(rewritten.as_str())
    );
    assert_eq!(gate.last("push")["rule"], "push:refs/heads/wip/*");
    w.ok(&work, &["push", "--quiet", "origin", ":refs/heads/wip/a"]);
    assert_eq!(w.ref_of(&up, "refs/heads/wip/a"), None);
    assert_eq!(gate.last("push")["decision"], "allow");
}

fn commits_with_secrets_are_refused_and_not_upstream() {
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/leak"]);
    w.commit(&work, &[("ok.txt", "fine\n")], "harmless");
    w.commit(
        &work,
        &[("config/app.env", &format!("API_TOKEN={HELD_VALUE}\n"))],
        "add config",
    );
    let out = w.run(&work, &["push", "origin", "bot/leak"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("rule held:{HELD_NAME}")) && err.contains("config/app.env"),
        "{err}"
    );
    assert!(!err.contains(HELD_VALUE));
    assert_eq!(w.ref_of(&up, "refs/heads/bot/leak"), None);
    let line = gate.last_is("push", "deny", &format!("held:{HELD_NAME}"));
    assert_eq!(line["scanned"], 2);

    // The value base64-encoded in the commit message.
    w.ok(&work, &["reset", "--quiet", "--hard", "HEAD~1"]);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(HELD_VALUE);
    w.commit(&work, &[("n.txt", "n\n")], &format!("notes: {b64}"));
    let out = w.run(&work, &["push", "origin", "bot/leak"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in its message"), "{}", stderr(&out));
    assert_eq!(w.ref_of(&up, "refs/heads/bot/leak"), None);
    assert_eq!(gate.last("push")["rule"], format!("held:{HELD_NAME}"));

    // A private key block.
    w.ok(&work, &["reset", "--quiet", "--hard", "HEAD~1"]);
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
    w.commit(&work, &[("deploy/id_ed25519", key)], "add key");
    let out = w.run(&work, &["push", "origin", "bot/leak"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("rule pattern:private-key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.ref_of(&up, "refs/heads/bot/leak"), None);
    gate.last_is("push", "deny", "pattern:private-key");

    // Nothing secret in the record.
    let audit = gate.audit_text();
    assert!(
        !audit.contains(HELD_VALUE) && !audit.contains(&b64) && !audit.contains("b3BlbnNzaC1rZXkt")
    );

    // Clean history pushes fine afterwards.
    w.ok(&work, &["reset", "--quiet", "--hard", "HEAD~1"]);
    w.ok(&work, &["push", "--quiet", "origin", "bot/leak"]);
    assert!(w.ref_of(&up, "refs/heads/bot/leak").is_some());
}

fn grants_in_gate_toml_are_live_and_expire() {
    let w = World::new();
    let up = w.upstream("up");
    let mut cfg = config_for(&w, &file_url(&up), standard_rules());
    let gate = Gate::start(&w, &cfg);
    let work = clone(&w, &gate);
    w.ok(&work, &["checkout", "--quiet", "-b", "feature/x"]);
    w.commit(&work, &[("f.txt", "f\n")], "feature");
    assert!(!w
        .run(&work, &["push", "origin", "feature/x"])
        .status
        .success());

    cfg.grants.push(Grant {
        remote: "origin".into(),
        pattern: "refs/heads/feature/*".into(),
        grant: "req-expired".into(),
        expires_at: Some("2001-01-01T00:00:00Z".into()),
        force: false,
        delete: false,
    });
    gate.update_config(&cfg);
    assert!(!w
        .run(&work, &["push", "origin", "feature/x"])
        .status
        .success());
    assert_eq!(gate.last("push")["rule"], "ref-not-allowed");
    assert_eq!(w.ref_of(&up, "refs/heads/feature/x"), None);

    cfg.grants.push(Grant {
        remote: "origin".into(),
        pattern: "refs/heads/feature/*".into(),
        grant: "req-live".into(),
        expires_at: Some("2999-01-01T00:00:00Z".into()),
        force: false,
        delete: false,
    });
    gate.update_config(&cfg);
    w.ok(&work, &["push", "--quiet", "origin", "feature/x"]);
    assert!(w.ref_of(&up, "refs/heads/feature/x").is_some());
    gate.last_is("push", "allow", "grant:req-live");
}

fn new_branch_on_a_big_history_scans_only_new_commits() {
    let w = World::new();
    let up = w.upstream("up");
    // 5,000 commits of history, one of them holding something that looks
    // like a credential: a rescan of history would refuse the push.
    fast_import(
        &w,
        &up,
        "main",
        5000,
        Some("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"),
    );
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    assert_eq!(w.ok(&work, &["rev-list", "--count", "HEAD"]), "5001");
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/new"]);
    for i in 0..3 {
        w.commit(
            &work,
            &[(&format!("new{i}.txt"), "new\n")],
            &format!("new {i}"),
        );
    }
    let started = std::time::Instant::now();
    let out = w.run(&work, &["push", "origin", "bot/new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 new commits scanned"),
        "{}",
        stderr(&out)
    );
    let line = gate.last("push");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["scanned"], 3, "{line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/new").unwrap(),
        w.ok(&work, &["rev-parse", "HEAD"])
    );

    // A gate whose mirror was never fetched through (fresh start): the push
    // waits for the mirror refresh, so it still scans only the new commits.
    let mut cfg2 = config_for(&w, &file_url(&up), standard_rules());
    cfg2.mirrors_dir = w.path().join("mirrors2");
    let w2 = World::new();
    let gate2 = Gate::start(&w2, &cfg2);
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/new2"]);
    w.commit(&work, &[("n2.txt", "n2\n")], "new 2");
    let out = w.run(&work, &["push", &gate2.url("origin"), "bot/new2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = gate2.last("push");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["scanned"], 1, "{line}");
}

fn unreachable_upstream_fails_closed_or_serves_stale_when_configured() {
    let w = World::new();
    let up = w.upstream("up");
    let mut cfg = config_for(&w, &file_url(&up), standard_rules());
    let gate = Gate::start(&w, &cfg);
    let work = clone(&w, &gate);
    let moved = w.path().join("moved.git");
    std::fs::rename(&up, &moved).unwrap();

    let out = w.run(&work, &["fetch", "origin"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    gate.last_is("fetch", "deny", "upstream-unreachable");

    w.ok(&work, &["checkout", "--quiet", "-b", "bot/x"]);
    w.commit(&work, &[("x", "x\n")], "x");
    let out = w.run(&work, &["push", "origin", "bot/x"]);
    assert!(!out.status.success());
    assert_eq!(gate.last("push")["rule"], "upstream-unreachable");

    cfg.remotes[0].serve_stale = true;
    gate.update_config(&cfg);
    let out = w.run(&work, &["fetch", "origin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = gate.last_is("fetch", "allow", "serve-stale");
    assert!(line["warning"]
        .as_str()
        .unwrap()
        .contains("upstream unreachable"));
    // Push never goes stale.
    assert!(!w.run(&work, &["push", "origin", "bot/x"]).status.success());
    std::fs::rename(&moved, &up).unwrap();
    assert_eq!(w.ref_of(&up, "refs/heads/bot/x"), None);
}

fn upstream_rejection_fails_the_agents_push() {
    // The upstream refuses (its own hook): the agent's push must fail and the
    // mirror must not advertise the ref afterwards.
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    let hook = up.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho upstream says no >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/r"]);
    w.commit(&work, &[("r", "r\n")], "r");
    let out = w.run(&work, &["push", "origin", "bot/r"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("upstream push"), "{}", stderr(&out));
    assert_eq!(w.ref_of(&up, "refs/heads/bot/r"), None);
    gate.last_is("push", "deny", "upstream-push-failed");
    let adv = w.ok(&work, &["ls-remote", "origin"]);
    assert!(!adv.contains("refs/heads/bot/r"), "{adv}");
}

// ---- ssh upstream ------------------------------------------------------

/// A gate whose `origin` is `up` behind `sshd`, pinned to `known_hosts_line`.
fn ssh_gate(w: &World, sshd: &Sshd, up: &Path, known_hosts_line: &str) -> Gate {
    let kh = w.path().join("git/known_hosts");
    std::fs::create_dir_all(kh.parent().unwrap()).unwrap();
    std::fs::write(&kh, format!("{known_hosts_line}\n")).unwrap();
    // The deploy key is a held secret like any other.
    let key = w.secrets().join("git-origin");
    std::fs::copy(&sshd.user_key, &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = config_for(w, &sshd.url(up), standard_rules());
    cfg.remotes[0].identity_file = Some(key);
    cfg.remotes[0].known_hosts = Some(kh);
    Gate::start(w, &cfg)
}

fn ssh_upstream_clone_push_and_upstream_down() {
    let bin = Path::new(SSHD_PATH);
    let w = World::new();
    let up = w.upstream("up");
    let mut sshd = Sshd::start(bin, w.path());
    let gate = ssh_gate(&w, &sshd, &up, &sshd.known_hosts_line.clone());
    let work = clone(&w, &gate);
    assert_eq!(
        w.ok(&work, &["rev-parse", "HEAD"]),
        w.ref_of(&up, "refs/heads/main").unwrap()
    );
    assert_eq!(gate.last("fetch")["decision"], "allow");

    w.ok(&work, &["checkout", "--quiet", "-b", "bot/ssh"]);
    let c = w.commit(&work, &[("s.txt", "over ssh\n")], "over ssh");
    let out = w.run(&work, &["push", "origin", "bot/ssh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/ssh").as_deref(),
        Some(c.as_str())
    );
    assert_eq!(gate.last("push")["decision"], "allow");

    // The deploy key itself is a held secret: committing it is refused.
    let key_text = std::fs::read_to_string(&sshd.user_key).unwrap();
    w.commit(&work, &[("oops/key", &key_text)], "oops");
    let out = w.run(&work, &["push", "origin", "bot/ssh"]);
    assert!(!out.status.success());
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/ssh").as_deref(),
        Some(c.as_str())
    );
    let line = gate.last("push");
    assert_eq!(line["decision"], "deny");
    assert!(
        line["rule"]
            .as_str()
            .unwrap()
            .starts_with("held:git-origin")
            || line["rule"] == "pattern:private-key"
    );
    w.ok(&work, &["reset", "--quiet", "--hard", "HEAD~1"]);

    // Upstream down: the agent's push fails, nothing is accepted. (The
    // mirror was refreshed moments ago, so the gate goes straight to the
    // upstream push, which cannot connect.)
    sshd.stop();
    w.commit(&work, &[("t.txt", "t\n")], "while down");
    let out = w.run(&work, &["push", "origin", "bot/ssh"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing was accepted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/ssh").as_deref(),
        Some(c.as_str())
    );
    gate.last_is("push", "deny", "upstream-push-failed");
    // A fetch refreshes first and fails closed; after that failed refresh the
    // next push re-checks upstream before taking the upload.
    let out = w.run(&work, &["fetch", "origin"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert_eq!(gate.last("fetch")["rule"], "upstream-unreachable");
    let out = w.run(&work, &["push", "origin", "bot/ssh"]);
    assert!(!out.status.success());
    assert_eq!(gate.last("push")["rule"], "upstream-unreachable");
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/ssh").as_deref(),
        Some(c.as_str())
    );
    let audit = gate.audit_text();
    assert!(!audit.contains(key_text.lines().nth(1).unwrap()));
}

fn ssh_wrong_pinned_host_key_fails_fetch_and_push() {
    let bin = Path::new(SSHD_PATH);
    let w = World::new();
    let up = w.upstream("up");
    let sshd = Sshd::start(bin, w.path());
    // Pin some other key for the same host:port.
    let other = w.path().join("other");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong = format!("[127.0.0.1]:{} {}", sshd.port, other_pub.trim());
    let gate = ssh_gate(&w, &sshd, &up, &wrong);

    let out = w.run(
        w.path(),
        &[
            "clone",
            &gate.url("origin"),
            w.path().join("c").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unreachable") && err.contains("Host key verification failed"),
        "{err}"
    );
    gate.last_is("fetch", "deny", "upstream-unreachable");

    // Push from a repo that has the history (cloned directly from upstream).
    let work = w.path().join("direct");
    w.ok(
        w.path(),
        &[
            "clone",
            "--quiet",
            up.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/k"]);
    w.commit(&work, &[("k", "k\n")], "k");
    let out = w.run(&work, &["push", &gate.url("origin"), "bot/k"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.ref_of(&up, "refs/heads/bot/k"), None);
    assert_eq!(gate.last("push")["rule"], "upstream-unreachable");
}

fn upstream_change_unseen_by_the_agent_is_never_overwritten() {
    // The agent may force-push wip/*, but only over what it has seen: each
    // upstream update carries a lease on the value the gate advertised.
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    w.ok(&work, &["checkout", "--quiet", "-b", "wip/x"]);
    w.commit(&work, &[("a", "a\n")], "a");
    w.ok(&work, &["push", "--quiet", "origin", "wip/x"]);

    // Someone else moves wip/x upstream, bypassing the gate.
    let other = w.path().join("other");
    w.ok(
        w.path(),
        &[
            "clone",
            "--quiet",
            "-b",
            "wip/x",
            up.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    let theirs = w.commit(&other, &[("b", "b\n")], "theirs");
    w.ok(&other, &["push", "--quiet", "origin", "wip/x"]);

    // The agent rewrites and force-pushes without fetching.
    w.ok(&work, &["commit", "--quiet", "--amend", "-m", "mine"]);
    let out = w.run(&work, &["push", "--force", "origin", "wip/x"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(
        w.ref_of(&up, "refs/heads/wip/x").as_deref(),
        Some(theirs.as_str())
    );
    gate.last_is("push", "deny", "upstream-push-failed");
}

fn a_secret_added_by_a_merge_commit_itself_is_caught() {
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/side"]);
    w.commit(&work, &[("side.txt", "side\n")], "side");
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/m", "main"]);
    w.commit(&work, &[("main2.txt", "main2\n")], "main2");
    w.ok(
        &work,
        &["merge", "--quiet", "--no-ff", "--no-commit", "bot/side"],
    );
    std::fs::write(work.join("evil.txt"), format!("k={HELD_VALUE}\n")).unwrap();
    w.ok(&work, &["add", "evil.txt"]);
    w.ok(&work, &["commit", "--quiet", "-m", "merge side"]);
    let out = w.run(&work, &["push", "origin", "bot/m"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("evil.txt"), "{}", stderr(&out));
    assert_eq!(w.ref_of(&up, "refs/heads/bot/m"), None);
    let line = gate.last("push");
    assert_eq!(line["rule"], format!("held:{HELD_NAME}"));
    assert_eq!(line["scanned"], 3);
}

fn push_only_remote_refuses_fetch() {
    let w = World::new();
    let up = w.upstream("up");
    let mut cfg = config_for(&w, &file_url(&up), standard_rules());
    cfg.remotes[0].fetch = false;
    let gate = Gate::start(&w, &cfg);
    let out = w.run(
        w.path(),
        &[
            "clone",
            &gate.url("origin"),
            w.path().join("c").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("fetching from remote 'origin' is disabled"),
        "{}",
        stderr(&out)
    );
    gate.last_is("fetch", "deny", "fetch-disabled");
}

/// `git <args>` in `repo` with `input` on stdin; returns stdout (trimmed).
fn git_stdin(w: &World, repo: &Path, args: &[&str], input: &str) -> String {
    use std::io::Write as _;
    let mut child = w
        .git(repo)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A commit object written verbatim (`hash-object`), so tests can carry
/// headers git's porcelain never writes on its own.
fn raw_commit(w: &World, repo: &Path, parent: &str, headers: &str, msg: &str) -> String {
    let tree = w.ok(repo, &["rev-parse", &format!("{parent}^{{tree}}")]);
    let body = format!(
        "tree {tree}\nparent {parent}\nauthor Agent <agent@example.test> 1700000000 +0000\ncommitter Agent <agent@example.test> 1700000000 +0000\n{headers}\n{msg}\n"
    );
    git_stdin(
        w,
        repo,
        &["hash-object", "-t", "commit", "-w", "--stdin"],
        &body,
    )
}

/// Push `obj` to `refname` and assert the gate refused it for the held
/// secret, the upstream did not change and the audit line names the rule.
fn assert_push_refused_as_held(
    w: &World,
    gate: &Gate,
    up: &Path,
    work: &Path,
    obj: &str,
    refname: &str,
    case: &str,
) {
    let out = w.run(work, &["push", "origin", &format!("{obj}:{refname}")]);
    assert!(!out.status.success(), "{case}: push was accepted");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("rule held:{HELD_NAME}")),
        "{case}: {err}"
    );
    assert_eq!(w.ref_of(up, refname), None, "{case}: reached upstream");
    let line = gate.last("push");
    assert_eq!(
        (line["decision"].as_str(), line["rule"].as_str()),
        (Some("deny"), Some(format!("held:{HELD_NAME}").as_str())),
        "{case}: {line}"
    );
}

fn push_scans_every_object_it_adds_headers_tags_names_and_notes() {
    let w = World::new();
    let up = w.upstream("up");
    let mut rules = standard_rules();
    rules.push(PushRule::new("refs/tags/*"));
    rules.push(PushRule::new("refs/notes/*"));
    // A second held value with a `/` in it: as a path it spans two trees.
    let slashed = "pa55/w0rd-Zq81xV7";
    std::fs::write(w.secrets().join("env-SLASHED"), slashed).unwrap();
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), rules));
    let work = clone(&w, &gate);
    let head = w.ok(&work, &["rev-parse", "HEAD"]);

    // A gpgsig header (not part of %B, never in a diff).
    let sig = format!(
        "gpgsig -----BEGIN PGP SIGNATURE-----\n \n {HELD_VALUE}\n -----END PGP SIGNATURE-----\n"
    );
    let c = raw_commit(&w, &work, &head, &sig, "signed");
    assert_push_refused_as_held(&w, &gate, &up, &work, &c, "refs/heads/bot/sig", "gpgsig");

    // A mergetag header carrying a whole tag object.
    let mergetag = format!(
        "mergetag object {head}\n type commit\n tag v0\n tagger T <t@example.test> 1700000000 +0000\n \n {HELD_VALUE}\n"
    );
    let c = raw_commit(&w, &work, &head, &mergetag, "merged");
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        &c,
        "refs/heads/bot/mergetag",
        "mergetag",
    );

    // An extra header git does not know, and an `encoding` header.
    let c = raw_commit(&w, &work, &head, &format!("x-note {HELD_VALUE}\n"), "extra");
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        &c,
        "refs/heads/bot/extra",
        "extra header",
    );
    let c = raw_commit(&w, &work, &head, &format!("encoding {HELD_VALUE}\n"), "enc");
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        &c,
        "refs/heads/bot/enc",
        "encoding header",
    );

    // A name in a tree: an empty directory, which no diff ever shows.
    let empty = git_stdin(
        &w,
        &work,
        &["hash-object", "-t", "tree", "-w", "--stdin"],
        "",
    );
    let mut entries = w.ok(&work, &["ls-tree", &head]);
    entries.push_str(&format!("\n040000 tree {empty}\tkeep-{HELD_VALUE}\n"));
    let tree = git_stdin(&w, &work, &["mktree"], &entries);
    let c = w.ok(
        &work,
        &["commit-tree", &tree, "-p", &head, "-m", "empty dir"],
    );
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        &c,
        "refs/heads/bot/tree",
        "empty dir name",
    );

    // A file name (harmless content).
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/name"]);
    let c = w.commit(
        &work,
        &[(&format!("docs/{HELD_VALUE}.md"), "hello\n")],
        "doc",
    );
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        &c,
        "refs/heads/bot/name",
        "file name",
    );
    w.ok(&work, &["checkout", "--quiet", "main"]);

    // A path that spells out the slashed value across two directories.
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/path", &head]);
    let c = w.commit(&work, &[(&format!("x/{slashed}.txt"), "hello\n")], "path");
    let out = w.run(
        &work,
        &["push", "origin", &format!("{c}:refs/heads/bot/path")],
    );
    assert!(
        !out.status.success(),
        "a path spelling a held value was accepted"
    );
    assert!(
        stderr(&out).contains("rule held:env-SLASHED"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.ref_of(&up, "refs/heads/bot/path"), None);
    assert_eq!(gate.last("push")["rule"], "held:env-SLASHED");
    w.ok(&work, &["checkout", "--quiet", "main"]);

    // An annotated tag whose message carries it, and the same one wrapped in
    // a harmless outer tag (a nested tag).
    w.ok(
        &work,
        &[
            "tag",
            "-a",
            "-m",
            &format!("release {HELD_VALUE}"),
            "inner",
            &head,
        ],
    );
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        "inner",
        "refs/tags/inner",
        "tag message",
    );
    w.ok(
        &work,
        &[
            "-c",
            "advice.nestedTag=false",
            "tag",
            "-a",
            "-m",
            "outer",
            "outer",
            "inner",
        ],
    );
    let outer = w.ok(&work, &["rev-parse", "outer"]);
    assert_push_refused_as_held(
        &w,
        &gate,
        &up,
        &work,
        &outer,
        "refs/tags/outer",
        "nested tag",
    );

    // A note.
    w.ok(
        &work,
        &["notes", "add", "-m", &format!("note {HELD_VALUE}"), &head],
    );
    let notes = w.ok(&work, &["rev-parse", "refs/notes/commits"]);
    assert_push_refused_as_held(&w, &gate, &up, &work, &notes, "refs/notes/commits", "note");

    assert!(!gate.audit_text().contains(HELD_VALUE) && !gate.audit_text().contains(slashed));
    // Control: a clean tag and a clean branch still land.
    w.ok(&work, &["tag", "-a", "-m", "release 1", "v1", &head]);
    w.ok(&work, &["push", "--quiet", "origin", "refs/tags/v1"]);
    assert!(w.ref_of(&up, "refs/tags/v1").is_some());
}

fn a_ref_named_after_a_secret_is_refused_and_never_recorded() {
    let w = World::new();
    let up = w.upstream("up");
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    let head = w.ok(&work, &["rev-parse", "HEAD"]);

    // Inside a pushable namespace: refused for the name itself.
    let refname = format!("refs/heads/bot/{HELD_VALUE}");
    let out = w.run(&work, &["push", "origin", &format!("{head}:{refname}")]);
    assert!(
        !out.status.success(),
        "a ref named after a held secret was accepted"
    );
    assert!(
        stderr(&out).contains(&format!("rule held:{HELD_NAME}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.ref_of(&up, &refname), None);
    gate.last_is("push", "deny", &format!("held:{HELD_NAME}"));

    // A credential-shaped ref name.
    let pat = format!("refs/heads/bot/ghp_{}", "a1B2c3D4e5".repeat(4));
    let out = w.run(&work, &["push", "origin", &format!("{head}:{pat}")]);
    assert!(!out.status.success());
    assert_eq!(w.ref_of(&up, &pat), None);
    assert_eq!(gate.last("push")["rule"], "pattern:github-pat");

    // Outside every push rule: refused as before, but the name is not
    // recorded either.
    let out = w.run(
        &work,
        &[
            "push",
            "origin",
            &format!("{head}:refs/heads/x/{HELD_VALUE}"),
        ],
    );
    assert!(!out.status.success());
    assert_eq!(gate.last("push")["decision"], "deny");

    // A remote named after it.
    let out = w.run(
        w.path(),
        &[
            "ls-remote",
            &format!("git://{}/{HELD_VALUE}.git", gate.addr),
        ],
    );
    assert!(!out.status.success());
    assert_eq!(gate.last("fetch")["rule"], "unknown-remote");

    let audit = gate.audit_text();
    assert!(
        !audit.contains(HELD_VALUE),
        "the audit log carries the secret:\n{audit}"
    );
    assert!(!audit.contains("a1B2c3D4e5a1B2c3D4e5"), "{audit}");
}

fn only_the_holder_of_the_access_credential_uses_the_gate() {
    let w = World::new();
    let up = w.upstream("up");
    let key = bottle_sidecars::access::AccessKey::generate();
    let other = bottle_sidecars::access::AccessKey::generate();
    let key_file = w.path().join("access-key");
    std::fs::write(&key_file, key.expose()).unwrap();
    let gate = Gate::start_with_access(
        &w,
        &config_for(&w, &file_url(&up), standard_rules()),
        key_file,
    );
    // Anyone else on the host: the plain path, a wrong credential.
    for url in [
        format!("git://{}/origin.git", gate.addr),
        format!("git://{}/{}/origin.git", gate.addr, other.expose()),
    ] {
        let out = w.run(w.path(), &["ls-remote", &url]);
        assert!(!out.status.success(), "{url}");
        assert!(stderr(&out).contains("access denied"), "{}", stderr(&out));
        gate.last_is("fetch", "deny", "access-credential");
    }
    // A push without it is refused the same way; upstream unchanged.
    let out = w.run(
        &w.path().join("up-seed"),
        &[
            "push",
            &format!("git://{}/origin.git", gate.addr),
            "HEAD:refs/heads/bot/x",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(gate.last("push")["rule"], "access-credential");
    assert_eq!(w.ref_of(&up, "refs/heads/bot/x"), None);
    // The agent: its git config rewrites remotes to `/<credential>/<remote>.git`.
    let url = format!("git://{}/{}/origin.git", gate.addr, key.expose());
    let work = w.path().join("work");
    w.ok(
        w.path(),
        &["clone", "--quiet", &url, work.to_str().unwrap()],
    );
    w.ok(&work, &["checkout", "--quiet", "-b", "bot/ok"]);
    let c = w.commit(&work, &[("ok.txt", "ok\n")], "ok");
    w.ok(&work, &["push", "--quiet", "origin", "bot/ok"]);
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/ok").as_deref(),
        Some(c.as_str())
    );
    assert_eq!(gate.last("push")["remote"], "origin");
    let audit = gate.audit_text();
    assert!(
        !audit.contains(key.expose()) && !audit.contains(other.expose()),
        "{audit}"
    );
}

/// The hex of `bytes`, zero-padded on the right to a whole object id.
fn as_gitlink_ids(bytes: &[u8]) -> Vec<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes()
        .chunks(40)
        .map(|c| format!("{:0<40}", String::from_utf8_lossy(c)))
        .collect()
}

fn a_secret_in_gitlink_ids_is_refused_and_a_plain_submodule_pointer_lands() {
    let w = World::new();
    let up = w.upstream("up");
    // A hex-shaped held value: a gitlink id's own hex spelling can be it.
    let hex_secret = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    std::fs::write(w.secrets().join("env-HEX"), hex_secret).unwrap();
    let gate = Gate::start(&w, &config_for(&w, &file_url(&up), standard_rules()));
    let work = clone(&w, &gate);
    let head = w.ok(&work, &["rev-parse", "HEAD"]);
    let base = w.ok(&work, &["ls-tree", &head]);
    // Submodule entries (mode 160000) name commits of another repository:
    // git never checks them, so each is 20 free bytes.
    let with_gitlinks = |ids: &[String], dir: &str| -> String {
        let mut entries = base.clone();
        for (i, id) in ids.iter().enumerate() {
            entries.push_str(&format!("\n160000 commit {id}\t{dir}-{i}"));
        }
        entries.push('\n');
        let tree = git_stdin(&w, &work, &["mktree"], &entries);
        w.ok(&work, &["commit-tree", &tree, "-p", &head, "-m", "vendor"])
    };

    // The held value as the raw bytes of two gitlinks in one tree.
    let ids = as_gitlink_ids(HELD_VALUE.as_bytes());
    assert_eq!(ids.len(), 2, "the value spans two gitlinks");
    let c = with_gitlinks(&ids, "vendor");
    assert_push_refused_as_held(&w, &gate, &up, &work, &c, "refs/heads/bot/gl", "gitlinks");

    // Split over the gitlinks of two trees (one subdirectory each).
    let mut entries = base.clone();
    for (i, id) in ids.iter().enumerate() {
        let sub = git_stdin(&w, &work, &["mktree"], &format!("160000 commit {id}\tm\n"));
        entries.push_str(&format!("\n040000 tree {sub}\td{i}"));
    }
    entries.push('\n');
    let tree = git_stdin(&w, &work, &["mktree"], &entries);
    let c = w.ok(&work, &["commit-tree", &tree, "-p", &head, "-m", "split"]);
    assert_push_refused_as_held(&w, &gate, &up, &work, &c, "refs/heads/bot/gl2", "two trees");

    // The hex held value as one gitlink id.
    let c = with_gitlinks(&[hex_secret.to_owned()], "lib");
    let out = w.run(
        &work,
        &["push", "origin", &format!("{c}:refs/heads/bot/hex")],
    );
    assert!(
        !out.status.success(),
        "a hex held value as a gitlink id landed"
    );
    assert!(
        stderr(&out).contains("rule held:env-HEX"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.ref_of(&up, "refs/heads/bot/hex"), None);
    gate.last_is("push", "deny", "held:env-HEX");

    // Nothing of it in the record.
    let text = gate.audit_text();
    assert!(!text.contains(HELD_VALUE) && !text.contains(hex_secret));
    assert!(!ids.iter().any(|id| text.contains(id.as_str())));

    // Control: an ordinary submodule pointer (a real commit id) lands.
    let c = with_gitlinks(std::slice::from_ref(&head), "sub");
    w.ok(
        &work,
        &[
            "push",
            "--quiet",
            "origin",
            &format!("{c}:refs/heads/bot/sub"),
        ],
    );
    assert_eq!(
        w.ref_of(&up, "refs/heads/bot/sub").as_deref(),
        Some(c.as_str())
    );
}
