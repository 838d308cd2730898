//! `cargo xtask seed-base`: make the base images exist on a registry-less host.
//!
//! Containers on such hosts cannot pull images nor install packages, so the
//! base image every bottle image is built `FROM` (`bottle-base:bookworm`, the
//! project's own tag: never an official image's name) is
//! built here with `debootstrap --variant=minbase` (git, openssh-client,
//! ca-certificates, curl, bash: everything the built-in templates, the
//! bundle and the demo need), tarred, cached outside the repo
//! (`$XDG_CACHE_HOME/bottle` or `~/.cache/bottle`) and `docker import`ed.
//!
//! A second image, `bottle-test-sshd:bookworm` (the same plus
//! openssh-server), is the sshd git upstream of the end-to-end tests and the
//! demo. `--base-only` skips it; `--force` rebuilds even when the image
//! exists. A warm run (image present) does nothing.

use std::path::{Path, PathBuf};

/// The base image tag every bottle image builds from (bottle-core's
/// `DEFAULT_BASE_IMAGE`).
pub const BASE_TAG: &str = "bottle-base:bookworm";
/// The sshd upstream image of tests and the demo.
pub const SSHD_TAG: &str = "bottle-test-sshd:bookworm";

const BASE_PACKAGES: &str = "git,openssh-client,ca-certificates,curl,bash";

struct Seed {
    tag: &'static str,
    tarball: &'static str,
    include: String,
}

fn seeds(base_only: bool) -> Vec<Seed> {
    let mut v = vec![Seed {
        tag: BASE_TAG,
        tarball: "base-bookworm.tar",
        include: BASE_PACKAGES.to_owned(),
    }];
    if !base_only {
        v.push(Seed {
            tag: SSHD_TAG,
            tarball: "sshd-bookworm.tar",
            include: format!("{BASE_PACKAGES},openssh-server"),
        });
    }
    v
}

/// Entry point: `cargo xtask seed-base [--base-only] [--force]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut base_only = false;
    let mut force = false;
    for a in args {
        match a.as_str() {
            "--base-only" => base_only = true,
            "--force" => force = true,
            "-h" | "--help" => {
                println!("usage: cargo xtask seed-base [--base-only] [--force]");
                return Ok(());
            }
            other => return Err(format!("seed-base: unknown argument `{other}`")),
        }
    }
    docker_reachable()?;
    let cache = cache_dir()?;
    for seed in seeds(base_only) {
        ensure(&seed, &cache, force)?;
    }
    Ok(())
}

/// Whether `docker image inspect <tag>` succeeds.
pub fn image_exists(tag: &str) -> bool {
    duct::cmd!("docker", "image", "inspect", tag)
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn docker_reachable() -> Result<(), String> {
    let out = duct::cmd!("docker", "info", "--format", "{{.ServerVersion}}")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| format!("cannot run `docker`: {e}; install the docker CLI"))?;
    if !out.status.success() {
        return Err(format!(
            "docker engine unreachable: {}; start dockerd (or set DOCKER_HOST)",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn cache_dir() -> Result<PathBuf, String> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    let dir = base.join("bottle");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn ensure(seed: &Seed, cache: &Path, force: bool) -> Result<(), String> {
    if !force && image_exists(seed.tag) {
        println!("seed-base: {} present (nothing to do)", seed.tag);
        return Ok(());
    }
    let tarball = cache.join(seed.tarball);
    if force || !tarball.is_file() {
        build_tarball(seed, cache, &tarball)?;
    } else {
        println!("seed-base: using cached {}", tarball.display());
    }
    println!(
        "seed-base: docker import {} as {}",
        tarball.display(),
        seed.tag
    );
    duct::cmd!(
        "docker",
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "CMD [\"bash\"]",
        &tarball,
        seed.tag
    )
    .stdout_null()
    .run()
    .map_err(|e| format!("docker import {}: {e}", seed.tag))?;
    println!("seed-base: {} ready", seed.tag);
    Ok(())
}

fn have(program: &str) -> bool {
    duct::cmd!("sh", "-c", format!("command -v {program}"))
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    duct::cmd!("id", "-u")
        .read()
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// Run as root: directly when we are root, else through `sudo`.
fn root_cmd(program: &str, args: Vec<String>) -> duct::Expression {
    if is_root() {
        duct::cmd(program, args)
    } else {
        let mut all = vec![program.to_owned()];
        all.extend(args);
        duct::cmd("sudo", all)
    }
}

fn build_tarball(seed: &Seed, cache: &Path, tarball: &Path) -> Result<(), String> {
    if !have("debootstrap") {
        println!("seed-base: installing debootstrap");
        root_cmd(
            "apt-get",
            vec!["install".into(), "-y".into(), "debootstrap".into()],
        )
        .stdout_null()
        .run()
        .map_err(|e| format!("apt-get install debootstrap: {e}; install it yourself"))?;
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("creating {}: {e}", debs.display()))?;
    let root = cache.join(format!("rootfs-{}", std::process::id()));
    let _ = root_cmd("rm", vec!["-rf".into(), root.display().to_string()]).run();
    println!(
        "seed-base: debootstrap bookworm ({}) into {} (takes a few minutes)",
        seed.include,
        root.display()
    );
    let result = (|| -> Result<(), String> {
        root_cmd(
            "debootstrap",
            vec![
                "--variant=minbase".into(),
                format!("--include={}", seed.include),
                format!("--cache-dir={}", debs.display()),
                "bookworm".into(),
                root.display().to_string(),
                "http://deb.debian.org/debian".into(),
            ],
        )
        .stdout_null()
        .run()
        .map_err(|e| format!("debootstrap: {e}"))?;
        // Drop caches that only bloat the image.
        root_cmd(
            "sh",
            vec![
                "-c".into(),
                format!(
                    "rm -rf {r}/var/cache/apt/archives/*.deb {r}/var/lib/apt/lists/* {r}/tmp/*",
                    r = root.display()
                ),
            ],
        )
        .run()
        .map_err(|e| format!("cleaning rootfs: {e}"))?;
        let tmp = tarball.with_extension("tar.partial");
        root_cmd(
            "tar",
            vec![
                "-C".into(),
                root.display().to_string(),
                "--numeric-owner".into(),
                "-cf".into(),
                tmp.display().to_string(),
                ".".into(),
            ],
        )
        .run()
        .map_err(|e| format!("tar: {e}"))?;
        std::fs::rename(&tmp, tarball).map_err(|e| format!("rename tarball: {e}"))?;
        Ok(())
    })();
    let _ = root_cmd("rm", vec!["-rf".into(), root.display().to_string()]).run();
    result
}
