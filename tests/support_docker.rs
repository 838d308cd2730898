//! Docker support for the end-to-end tests and `cargo xtask demo`: the test
//! upstreams (an HTTP echo service and an sshd git server, both containers
//! from the seeded base images), a temporary `$BOTTLE_HOME`, and running
//! the `bottle` binary. Every upstream is a container the caller started;
//! nothing here talks to an outside address.

use std::path::{Path, PathBuf};

/// Base image of every bottle image (`cargo xtask seed-base`).
pub const BASE_IMAGE: &str = bottle_core::plan::DEFAULT_BASE_IMAGE;
/// sshd upstream image (`cargo xtask seed-base`).
pub const SSHD_IMAGE: &str = "bottle-test-sshd:bookworm";
/// Label on every test upstream (so a crashed test's leftovers are findable).
pub const TEST_LABEL: &str = "dev.bottle.test";

/// A perl HTTP echo server: logs each request to stdout and answers 200 with
/// the request line and headers as the body.
pub const ECHO_SERVER: &str = r#"use IO::Socket::INET;
$| = 1;
my $s = IO::Socket::INET->new(LocalPort => 80, Listen => 16, ReuseAddr => 1) or die "listen: $!";
print "listening\n";
while (my $c = $s->accept) {
  my $req = "";
  while (my $l = <$c>) { $req .= $l; last if $l =~ /^\r?\n$/; }
  print "REQUEST ", $req;
  my $body = "echo from " . ($ENV{ECHO_NAME} // "upstream") . "\n" . $req;
  print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n" . $body;
  close $c;
}
"#;

/// A test CA and one leaf certificate for the test upstreams' names: the
/// upstream serves the leaf, and the bottle's egress trusts the CA for
/// upstream connections through the `BOTTLE_TEST_UPSTREAM_CA` hook
/// (docs/security.md, "Test hooks").
#[derive(Debug)]
pub struct TestTls {
    /// Holds `ca.pem`, `cert.pem`, `key.pem`.
    pub dir: tempfile::TempDir,
}

impl TestTls {
    /// A fresh CA and a leaf valid for `names`.
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bottle test upstream CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params")
                .signed_by(&leaf_key, &issuer)
                .expect("leaf cert");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            // the container reads them as its own root; nothing secret here
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                let _ = std::fs::set_permissions(
                    dir.path().join(f),
                    std::fs::Permissions::from_mode(0o644),
                );
            }
            let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        }
        Self { dir }
    }

    /// The CA certificate (what `BOTTLE_TEST_UPSTREAM_CA` points at).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// Run `docker` with args; (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    let o = duct::cmd("docker", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .expect("docker runs");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        String::from_utf8_lossy(&o.stderr).trim().to_owned(),
    )
}

/// Run `docker`, panicking on failure; stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let (ok, out, err) = docker(args);
    assert!(ok, "docker {args:?} failed: {err}");
    out
}

/// Whether an image exists locally.
pub fn image_exists(tag: &str) -> bool {
    docker(&["image", "inspect", tag]).0
}

/// Containers started by a test; removed on drop.
#[derive(Debug)]
pub struct Upstreams {
    /// Container names.
    pub containers: Vec<String>,
    /// Network names.
    pub networks: Vec<String>,
}

impl Upstreams {
    /// A set of upstreams on a fresh network `bottle-test-<tag>` of their own.
    pub fn new(tag: &str) -> Self {
        let net = format!("bottle-test-{tag}");
        let _ = docker(&["network", "rm", &net]);
        docker_ok(&["network", "create", "--label", TEST_LABEL, &net]);
        Self {
            containers: Vec::new(),
            networks: vec![net],
        }
    }

    /// Start the HTTP echo server `name` on a fresh network of its own.
    pub fn echo(&mut self, name: &str) -> String {
        self.start(
            name,
            &[
                "--env",
                &format!("ECHO_NAME={name}"),
                BASE_IMAGE,
                "perl",
                "-e",
                ECHO_SERVER,
            ],
        );
        self.wait_log(name, "listening");
        name.to_owned()
    }

    /// Start the HTTP(S) echo upstream `name` (`bottle-test-upstream`, see
    /// `tests/bin/upstream.rs`): TLS on 443 with `tls`'s leaf (h2 and
    /// http/1.1), plain HTTP on 80 and 8080. It logs every request it
    /// receives (`REQUEST ...` blocks) for the harness to read.
    pub fn https_echo(&mut self, name: &str, bin: &Path, tls: &TestTls) -> String {
        let bin_mount = format!("{}:/usr/local/bin/bottle-test-upstream:ro", bin.display());
        let tls_mount = format!("{}:/tls:ro", tls.dir.path().display());
        self.start(
            name,
            &[
                "-v",
                &bin_mount,
                "-v",
                &tls_mount,
                BASE_IMAGE,
                "/usr/local/bin/bottle-test-upstream",
                "--name",
                name,
                "--cert",
                "/tls/cert.pem",
                "--key",
                "/tls/key.pem",
            ],
        );
        self.wait_log(name, "listening");
        name.to_owned()
    }

    /// Start an sshd git server `name` with a bare repo `/srv/repo.git`
    /// (one commit on `main`) writable by user `git`, whose
    /// `authorized_keys` is a fresh deploy key. Returns (private key,
    /// host key line `ssh-ed25519 AAAA...`).
    pub fn sshd_git(&mut self, name: &str) -> (String, String) {
        let setup = r#"set -e
useradd -m -s /bin/sh git
mkdir -p /run/sshd /home/git/.ssh
ssh-keygen -A >/dev/null
ssh-keygen -q -t ed25519 -N '' -f /deploy -C deploy
cp /deploy.pub /home/git/.ssh/authorized_keys
git init -q --bare -b main /srv/repo.git
git init -q -b main /tmp/w && cd /tmp/w
git -c user.name=upstream -c user.email=up@test commit -q --allow-empty -m "initial commit"
echo "hello from upstream" > README && git add README
git -c user.name=upstream -c user.email=up@test commit -q -m "add README"
git push -q /srv/repo.git main
chown -R git:git /srv/repo.git /home/git
chmod 700 /home/git/.ssh && chmod 600 /home/git/.ssh/authorized_keys
echo ready
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o PermitRootLogin=no
"#;
        self.start(name, &[SSHD_IMAGE, "bash", "-c", setup]);
        self.wait_log(name, "ready");
        let key = docker_ok(&["exec", name, "cat", "/deploy"]);
        let host = docker_ok(&["exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
        let host: Vec<&str> = host.split_whitespace().take(2).collect();
        (format!("{key}\n"), host.join(" "))
    }

    fn start(&mut self, name: &str, rest: &[&str]) {
        let _ = docker(&["rm", "-f", name]);
        let net = self
            .networks
            .first()
            .cloned()
            .unwrap_or_else(|| "bridge".into());
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            name,
            "--label",
            TEST_LABEL,
            "--network",
            &net,
        ];
        args.extend_from_slice(rest);
        docker_ok(&args);
        self.containers.push(name.to_owned());
    }

    /// Wait until `container`'s log contains `needle` (deadline 30 s).
    pub fn wait_log(&self, container: &str, needle: &str) {
        let start = std::time::Instant::now();
        loop {
            let (_, out, err) = docker(&["logs", container]);
            if out.contains(needle) || err.contains(needle) {
                return;
            }
            assert!(
                start.elapsed().as_secs() < 30,
                "{container} never logged {needle:?}: {out} {err}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Attach an upstream to a bottle's egress network under `alias`.
    pub fn attach(&self, container: &str, network: &str, alias: &str) {
        docker_ok(&["network", "connect", "--alias", alias, network, container]);
    }

    /// The container's address on `network`.
    pub fn ip(container: &str, network: &str) -> String {
        docker_ok(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            container,
        ])
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// A temporary `$BOTTLE_HOME` and the binaries to drive it.
#[derive(Debug)]
pub struct BottleHome {
    /// Keeps the dir alive.
    pub dir: tempfile::TempDir,
    /// The `bottle` binary.
    pub bottle: PathBuf,
    /// The `bottle-sidecar` binary.
    pub sidecar: PathBuf,
    /// Extra env for every `bottle` run.
    pub env: Vec<(String, String)>,
}

impl BottleHome {
    /// A fresh home with these binaries.
    pub fn new(bottle: PathBuf, sidecar: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["bottles", "agents"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self {
            dir,
            bottle,
            sidecar,
            env: Vec::new(),
        }
    }

    /// The home dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `bottles/<name>.toml` or `agents/<name>.toml`.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The `bottle` command with `--home`, ready to run.
    pub fn cmd(&self, args: &[&str]) -> duct::Expression {
        let mut all: Vec<String> = vec!["--home".into(), self.path().display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut e = duct::cmd(&self.bottle, all).env("BOTTLE_SIDECAR_BIN", &self.sidecar);
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        e.stdin_null()
    }

    /// Run `bottle`; (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = self
            .cmd(args)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .expect("bottle runs");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `bottle start <agent> --yes --detach`; the identity.
    pub fn start(&self, agent: &str) -> String {
        let (code, out, err) = self.run(&["start", agent, "--yes", "--detach"]);
        assert_eq!(code, 0, "bottle start failed:\n{err}");
        out.trim().to_owned()
    }

    /// `bottle exec <id> -- bash -c <script>`; (code, stdout+stderr).
    pub fn exec(&self, id: &str, script: &str) -> (i32, String) {
        let (code, out, err) = self.run(&["exec", id, "--", "bash", "-c", script]);
        (code, format!("{out}{err}"))
    }

    /// The audit log of a bottle.
    pub fn audit(&self, id: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("state/{id}/audit/audit.jsonl")))
            .unwrap_or_default()
    }
}

/// Every resource labelled with this identity (containers, networks, volumes).
pub fn labelled(id: &str) -> Vec<String> {
    let f = format!("label=dev.bottle.identity={id}");
    let mut v = Vec::new();
    for args in [
        vec![
            "ps",
            "-a",
            "--filter",
            &f,
            "--format",
            "container {{.Names}}",
        ],
        vec![
            "network",
            "ls",
            "--filter",
            &f,
            "--format",
            "network {{.Name}}",
        ],
        vec![
            "volume",
            "ls",
            "--filter",
            &f,
            "--format",
            "volume {{.Name}}",
        ],
    ] {
        v.extend(
            docker_ok(&args)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    v
}
