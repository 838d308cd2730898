//! Shared fixtures for the git-gate integration tests and benchmark: real git
//! repos, a gate running in-process, and an unprivileged `sshd` on loopback.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bottle_sidecars::audit::AuditLog;
use bottle_sidecars::git_gate::{self, GateConfig, PushRule, RemoteConfig};
use serde_json::Value;

/// A held secret every fixture puts in the secrets dir.
pub const HELD_NAME: &str = "route-api.example.test";
/// Its value.
pub const HELD_VALUE: &str = "tok_live_7f3a9c1e5b2d8f4a6c0e9b7d";

/// One test's sandbox: a temp dir and an isolated git environment.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("gg").tempdir().unwrap();
        let w = World { dir };
        std::fs::create_dir_all(w.home()).unwrap();
        std::fs::write(
            w.home().join(".gitconfig"),
            "[user]\n\tname = Agent\n\temail = agent@example.test\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        )
        .unwrap();
        std::fs::create_dir_all(w.secrets()).unwrap();
        std::fs::write(w.secrets().join(HELD_NAME), HELD_VALUE).unwrap();
        w
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    pub fn secrets(&self) -> PathBuf {
        self.path().join("secrets")
    }

    /// `git` as the agent / test harness runs it (isolated config).
    pub fn git(&self, cwd: &Path) -> Command {
        let mut c = Command::new("git");
        c.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_DATE", "1700000000 +0000")
            .env("GIT_COMMITTER_DATE", "1700000000 +0000")
            .stdin(Stdio::null());
        c
    }

    /// Run git, panic with its output on failure, return stdout.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.git(cwd).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Run git, return the whole output (for commands expected to fail).
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.git(cwd).args(args).output().unwrap()
    }

    /// A bare upstream repo at `<tmp>/<name>.git` with one commit on `main`.
    pub fn upstream(&self, name: &str) -> PathBuf {
        let bare = self.path().join(format!("{name}.git"));
        self.ok(
            self.path(),
            &["init", "--quiet", "--bare", bare.to_str().unwrap()],
        );
        let seed = self.path().join(format!("{name}-seed"));
        self.ok(self.path(), &["init", "--quiet", seed.to_str().unwrap()]);
        std::fs::write(seed.join("README.md"), "hello\n").unwrap();
        self.ok(&seed, &["add", "."]);
        self.ok(&seed, &["commit", "--quiet", "-m", "initial"]);
        self.ok(&seed, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
        bare
    }

    /// Value of `refname` in the bare repo, or None when absent.
    pub fn ref_of(&self, bare: &Path, refname: &str) -> Option<String> {
        let out = self
            .git(bare)
            .args([
                "rev-parse",
                "-q",
                "--verify",
                &format!("{refname}^{{commit}}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Commit `files` (path, content) in `repo` with `msg`; returns the id.
    pub fn commit(&self, repo: &Path, files: &[(&str, &str)], msg: &str) -> String {
        for (p, c) in files {
            let path = repo.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        self.ok(repo, &["add", "-A"]);
        self.ok(repo, &["commit", "--quiet", "-m", msg]);
        self.ok(repo, &["rev-parse", "HEAD"])
    }
}

/// A gate config with one remote `origin` pointing at `url`.
pub fn config_for(world: &World, url: &str, push: Vec<PushRule>) -> GateConfig {
    let mut cfg = GateConfig::new(world.path().join("mirrors"), world.secrets());
    cfg.identity = Some("test-gate-0001".into());
    cfg.remotes.push(RemoteConfig {
        name: "origin".into(),
        url: url.into(),
        identity_file: None,
        known_hosts: None,
        push,
        fetch: true,
        serve_stale: false,
    });
    cfg
}

/// The standard rules: `refs/heads/bot/*` plain, `refs/heads/wip/*` with force + delete.
pub fn standard_rules() -> Vec<PushRule> {
    vec![
        PushRule::new("refs/heads/bot/*"),
        PushRule {
            pattern: "refs/heads/wip/*".into(),
            force: true,
            delete: true,
        },
    ]
}

/// A gate running in-process on 127.0.0.1:<ephemeral>.
pub struct Gate {
    /// Dropping the runtime stops the server.
    rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    pub audit_path: PathBuf,
}

impl Gate {
    /// Start with the `bottle-sidecar` binary cargo built for this test (or
    /// `$BOTTLE_SIDECAR_BIN`) as the mirrors' pre-receive hook.
    pub fn start(world: &World, cfg: &GateConfig) -> Gate {
        let hook = std::env::var_os("BOTTLE_SIDECAR_BIN")
            .map(PathBuf::from)
            .or(option_env!("CARGO_BIN_EXE_bottle-sidecar").map(PathBuf::from))
            .expect("set BOTTLE_SIDECAR_BIN to the bottle-sidecar binary");
        Self::start_with(world, cfg, hook)
    }

    /// Start requiring the access credential in `key_file`.
    pub fn start_with_access(world: &World, cfg: &GateConfig, key_file: PathBuf) -> Gate {
        let hook = std::env::var_os("BOTTLE_SIDECAR_BIN")
            .map(PathBuf::from)
            .or(option_env!("CARGO_BIN_EXE_bottle-sidecar").map(PathBuf::from))
            .expect("set BOTTLE_SIDECAR_BIN to the bottle-sidecar binary");
        Self::start_opts(world, cfg, hook, Some(key_file))
    }

    /// Start with an explicit hook program.
    pub fn start_with(world: &World, cfg: &GateConfig, hook: PathBuf) -> Gate {
        Self::start_opts(world, cfg, hook, None)
    }

    fn start_opts(world: &World, cfg: &GateConfig, hook: PathBuf, access: Option<PathBuf>) -> Gate {
        let config_path = world.path().join("git/gate.toml");
        cfg.save(&config_path).unwrap();
        let audit_path = world.path().join("audit/audit.jsonl");
        let audit = AuditLog::open(&audit_path, "test-gate-0001").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut opts = git_gate::Options::new(&config_path, "127.0.0.1:0".parse().unwrap());
        opts.hook_program = Some(hook);
        opts.access_key = access;
        opts.upstream_timeout = Duration::from_secs(20);
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            if let Err(e) = git_gate::serve(opts, audit, tx).await {
                panic!("git-gate stopped: {e}");
            }
        });
        let addr = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), rx).await })
            .unwrap()
            .unwrap();
        Gate {
            rt,
            addr,
            config_path,
            audit_path,
        }
    }

    /// The URL the agent uses for `remote`.
    pub fn url(&self, remote: &str) -> String {
        format!("git://{}/{remote}.git", self.addr)
    }

    /// Rewrite gate.toml (live policy change).
    pub fn update_config(&self, cfg: &GateConfig) {
        cfg.save(&self.config_path).unwrap();
    }

    /// All audit lines so far.
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Raw audit text.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit_path).unwrap_or_default()
    }

    /// The last audit line with `op` (see [`Gate::last`]), which must be
    /// `decision` by `rule`.
    pub fn last_is(&self, op: &str, decision: &str, rule: &str) -> Value {
        let line = self.last(op);
        assert_eq!(
            (line["decision"].as_str(), line["rule"].as_str()),
            (Some(decision), Some(rule)),
            "{line}"
        );
        line
    }

    /// The last audit line with `op`.
    /// A refusal can reach the client before its audit line reaches the
    /// file, so wait (bounded) for a line with `op` to appear.
    pub fn last(&self, op: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(l) = self.audit().into_iter().rev().find(|l| l["op"] == op) {
                return l;
            }
            if std::time::Instant::now() > deadline {
                panic!("no audit line with op={op}: {}", self.audit_text());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A throwaway sshd on 127.0.0.1 serving the local filesystem over ssh.
pub struct Sshd {
    child: Option<Child>,
    pub port: u16,
    /// known_hosts line pinning this server's host key.
    pub known_hosts_line: String,
    /// Private key authorized to log in.
    pub user_key: PathBuf,
    pub user: String,
    config: PathBuf,
    binary: PathBuf,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub fn start(binary: &Path, dir: &Path) -> Sshd {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir.join("host"));
        keygen(&dir.join("user"));
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).unwrap();
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout)
                    .trim()
                    .to_owned()
            });
        // sshd started by root needs its privilege-separation dir (the Debian
        // unit creates it at boot; containers have none).
        if unsafe { libc::geteuid() } == 0 {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding no\nX11Forwarding no\n\
                 PrintMotd no\nAcceptEnv none\nSetEnv PATH={path}\n",
                host = dir.join("host").display(),
                ak = dir.join("authorized_keys").display(),
                pid = dir.join("sshd.pid").display(),
                path = std::env::var("PATH").unwrap_or_default(),
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host.pub")).unwrap();
        let mut s = Sshd {
            child: None,
            port,
            known_hosts_line: format!("[127.0.0.1]:{port} {}", host_pub.trim()),
            user_key: dir.join("user"),
            user,
            config,
            binary: binary.to_owned(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd exited early: {st}");
            }
            assert!(Instant::now() < deadline, "sshd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// ssh:// URL of a repo path on this host.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// Stop the server (upstream down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Write `n` linear commits onto `refs/heads/<branch>` of the bare repo with
/// `git fast-import`, parented on the branch's current tip (content depends
/// on `branch`, so two branches never share commits). `extra` (if any)
/// is put in file `old.txt` of commit number 10.
pub fn fast_import(world: &World, bare: &Path, branch: &str, n: usize, extra: Option<&str>) {
    let tip = world.ref_of(bare, &format!("refs/heads/{branch}"));
    let mut s = String::new();
    for i in 1..=n {
        let msg = format!("commit {i} of {branch}\n");
        s.push_str(&format!(
            "commit refs/heads/{branch}\nmark :{i}\ncommitter Hist <hist@example.test> {} +0000\n",
            1_600_000_000 + i
        ));
        s.push_str(&format!("data {}\n{msg}", msg.len()));
        if i == 1 {
            if let Some(t) = &tip {
                s.push_str(&format!("from {t}\n"));
            }
        } else {
            s.push_str(&format!("from :{}\n", i - 1));
        }
        let content = format!("line {i} of {branch}\n");
        s.push_str(&format!(
            "M 644 inline history/f{}.txt\ndata {}\n{content}\n",
            i % 50,
            content.len()
        ));
        if i == 10 {
            if let Some(e) = extra {
                s.push_str(&format!("M 644 inline old.txt\ndata {}\n{e}\n", e.len()));
            }
        }
    }
    s.push_str("done\n");
    let mut child = world
        .git(bare)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "fast-import failed");
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
