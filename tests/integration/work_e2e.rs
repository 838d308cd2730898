//! Issue 17 on a real docker engine, one bottle for every check: an
//! approved `request_capability` really changes the agent's limits on
//! resume; ids work by unique prefix (bottles and requests); work comes out
//! with `cp`, `diff` and `export` (DLP-scanned); `rm` of a running bottle
//! refuses without `-f`. Skips when docker is unreachable unless `CI=true`.

use bottle_tests::gate::{trial, Trial, DOCKER};
use bottle_tests::support_docker::{docker_ok, labelled, BottleHome};
use bottle_tests::{workspace_bin, workspace_root, SEEDED_BASE};

/// Removes the bottle whatever happens.
struct Rm<'a>(&'a BottleHome, String);
impl Drop for Rm<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "-f", &self.1]);
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let o = duct::cmd("git", args)
        .dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout_capture()
        .stderr_to_stdout()
        .unchecked()
        .run()
        .expect("git runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "git {args:?}: {out}");
    out
}

fn mcp(h: &BottleHome, id: &str, calls: &str) -> String {
    let lib = std::fs::read_to_string(workspace_root().join("tests/security/lib.sh")).unwrap();
    let (code, out) = h.exec(id, &format!("{lib}\nmcp_init || exit 9\n{calls}"));
    assert_eq!(code, 0, "mcp calls failed: {out}");
    out
}

fn capability_ids_and_work_out_on_docker() {
    let h = BottleHome::new(
        workspace_bin("bottle-cli", "bottle"),
        workspace_bin("bottle-sidecars", "bottle-sidecar"),
    );
    h.write(
        "bottles/w.toml",
        "[agent_provider]\ntemplate = \"shell\"\n[resources]\ncpus = 1.0\nmemory = \"512MiB\"\n",
    );
    h.write("agents/w.toml", "bottle = \"w\"\n");
    // The workspace copied in: a git repo with one commit.
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("README"), "original\n").unwrap();
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["add", "README"]);
    git(
        ws.path(),
        &[
            "-c",
            "user.name=host",
            "-c",
            "user.email=h@test",
            "commit",
            "-qm",
            "host commit",
        ],
    );
    let cwd = ws.path().display().to_string();
    let (code, out, err) = h.run(&["start", "w", "--yes", "--detach", "--cwd", &cwd]);
    assert_eq!(code, 0, "start failed: {err}");
    let id = out.trim().to_owned();
    let _rm = Rm(&h, id.clone());
    let agent = format!("bottle-{id}-agent");
    // The preflight showed the identity that was really created.
    assert!(err.contains(&id), "preflight did not show {id}: {err}");

    // 1. The agent asks for memory the way the tool's description invites.
    let out = mcp(
        &h,
        &id,
        r#"mcp_call request_capability '{"kind":"memory","detail":"8 GiB memory","reason":"the build OOMs"}'"#,
    );
    assert!(out.contains("req-"), "{out}");
    let (_, q, _) = h.run(&["queue", "--json"]);
    let q: serde_json::Value = serde_json::from_str(&q).unwrap();
    let req = q["requests"][0]["id"].as_str().unwrap().to_owned();
    // the dashboard's short form: six characters of the random tail
    let short: String = req.rsplit('-').next().unwrap().chars().take(6).collect();
    let (code, said, err) = h.run(&["approve", &short]);
    assert_eq!(code, 0, "approve by prefix failed: {err}");
    assert!(
        said.contains("sets memory limit 8 GiB (8589934592 bytes)"),
        "approve did not say what resume sets: {said}"
    );
    let prefix = &id[..id.len() - 2];
    let (code, _, err) = h.run(&["stop", prefix]);
    assert_eq!(code, 0, "stop by prefix: {err}");
    let (code, _, err) = h.run(&["resume", prefix]);
    assert_eq!(code, 0, "resume failed: {err}");
    assert!(err.contains("memory limit 8 GiB"), "{err}");
    let mem = docker_ok(&["inspect", "--format", "{{.HostConfig.Memory}}", &agent]);
    assert_eq!(
        mem,
        (8u64 << 30).to_string(),
        "agent memory limit after resume"
    );

    // 2. A second bottle makes a shared prefix ambiguous: exit 2, both named.
    let common = format!("{}-", id.rsplit_once('-').unwrap().0);
    std::fs::create_dir_all(h.path().join(format!("state/{common}zzzzzz"))).unwrap();
    let (code, _, err) = h.run(&["logs", &common]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&id) && err.contains("zzzzzz"), "{err}");
    std::fs::remove_dir_all(h.path().join(format!("state/{common}zzzzzz"))).unwrap();

    // 3. Work out (and in).
    let host_in = tempfile::tempdir().unwrap();
    std::fs::create_dir(host_in.path().join("data")).unwrap();
    std::fs::write(host_in.path().join("data/input.txt"), "from the host\n").unwrap();
    let (code, _, err) = h.run(&[
        "cp",
        &host_in.path().join("data").display().to_string(),
        &format!("{id}:data"),
    ]);
    assert_eq!(code, 0, "cp in: {err}");
    let (code, out) = h.exec(
        &id,
        "set -e; cd ~/workspace && cat data/input.txt && echo more >> data/input.txt \
         && echo changed > README && git add -A && git -c user.name=agent -c user.email=a@test \
         commit -qm 'agent work' && echo scratch > notes.txt && find data/input.txt -printf 'owner %U\\n'",
    );
    assert_eq!(code, 0, "agent work: {out}");
    assert!(
        out.contains("from the host") && out.contains("owner 1000"),
        "{out}"
    );
    let back = tempfile::tempdir().unwrap();
    let dst = back.path().join("notes.txt");
    let (code, _, err) = h.run(&["cp", &format!("{id}:notes.txt"), &dst.display().to_string()]);
    assert_eq!(code, 0, "cp out: {err}");
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "scratch\n");

    // The agent cannot choose where a copy lands on the host: a symlink it
    // made is refused (not copied as a link to a host path), and nothing is
    // written through a link already at the destination.
    let victim = back.path().join("victim.txt");
    std::fs::write(&victim, "host file\n").unwrap();
    let (code, out) = h.exec(
        &id,
        &format!(
            "ln -s {} ~/workspace/out.txt && echo linked",
            victim.display()
        ),
    );
    assert_eq!(code, 0, "{out}");
    let planted = back.path().join("out.txt");
    let (code, _, err) = h.run(&[
        "cp",
        &format!("{id}:out.txt"),
        &planted.display().to_string(),
    ]);
    assert_eq!(code, 4, "a symlink copied out: {err}");
    assert!(err.contains("`out.txt` is a symlink"), "{err}");
    assert!(
        std::fs::symlink_metadata(&planted).is_err(),
        "no link landed"
    );
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let (code, out) = h.exec(
        &id,
        "rm ~/workspace/out.txt && echo agent text > ~/workspace/out.txt",
    );
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = h.run(&[
        "cp",
        &format!("{id}:out.txt"),
        &planted.display().to_string(),
    ]);
    assert_eq!(code, 4, "written through a link: {err}");
    assert!(err.contains("does not write through links"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");
    let (code, out) = h.exec(&id, "rm ~/workspace/out.txt && echo gone");
    assert_eq!(code, 0, "{out}");

    let (code, patch, err) = h.run(&["diff", &id]);
    assert_eq!(code, 0, "diff: {err}");
    for needle in [
        "+changed",
        "-original",
        "+scratch",
        "b/data/input.txt",
        "+more",
    ] {
        assert!(patch.contains(needle), "diff lacks {needle}: {patch}");
    }
    // the patch applies to the host's copy and gives the agent's tree
    std::fs::write(back.path().join("p.diff"), &patch).unwrap();
    git(
        ws.path(),
        &["apply", &back.path().join("p.diff").display().to_string()],
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("README")).unwrap(),
        "changed\n"
    );

    let bundle = back.path().join("w.bundle");
    let (code, _, err) = h.run(&["export", &id, "-o", &bundle.display().to_string()]);
    assert_eq!(code, 0, "export: {err}");
    assert!(err.contains("1 new commit"), "{err}");
    // an incremental bundle: it applies to the repo the bottle started from
    git(
        ws.path(),
        &[
            "fetch",
            "-q",
            &bundle.display().to_string(),
            "refs/heads/*:refs/remotes/bottle/*",
        ],
    );
    assert_eq!(
        git(ws.path(), &["log", "-1", "--format=%s", "bottle/main"]).trim(),
        "agent work"
    );

    // A commit carrying a credential is refused, naming the rule, never the value.
    let fake = ["sk-ant-", "api03-", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0"].concat();
    let (code, out) = h.exec(
        &id,
        &format!(
            "cd ~/workspace && echo 'key={fake}' > cfg && git add cfg && git -c user.name=agent \
             -c user.email=a@test commit -qm 'config'"
        ),
    );
    assert_eq!(code, 0, "{out}");
    let leak = back.path().join("leak.bundle");
    let (code, out, err) = h.run(&["export", &id, "-o", &leak.display().to_string()]);
    assert_eq!(code, 4, "export with a secret: {out}{err}");
    assert!(err.contains("anthropic-key"), "{err}");
    assert!(
        !err.contains(&fake) && !out.contains(&fake),
        "value leaked: {err}"
    );
    assert!(!leak.exists(), "a refused export wrote a bundle");

    // 4. rm of a running bottle: refused without a terminal or -f, says
    //    what is lost; -f removes everything.
    let (code, _, err) = h.run(&["rm", &id]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("home volume") && err.contains("bottle export") && err.contains("rm -f"),
        "{err}"
    );
    assert!(!labelled(&id).is_empty(), "refused rm removed something");
    let (code, _, err) = h.run(&["rm", "-f", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(labelled(&id).is_empty(), "left: {:?}", labelled(&id));
}

/// This module's tests and what each needs from the machine.
pub fn tests() -> Vec<Trial> {
    vec![trial!(
        capability_ids_and_work_out_on_docker,
        &DOCKER,
        &SEEDED_BASE
    )]
}
