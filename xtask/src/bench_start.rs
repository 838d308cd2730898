//! `cargo xtask bench start [--runs N] [--no-write]`: warm `bottle start`
//! (preflight, state, sidecar prepare, networks, bundle up and healthy,
//! agent created, files copied, agent exec-ready) against a bare
//! `docker run` of the same agent image until `docker exec … true` works,
//! in one run. Rewrites the `start` section of docs/benchmarks.md and
//! prints the same table. Needs a docker engine; images are built once in a
//! warm-up start that is not counted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn docker(args: &[&str]) -> (bool, String) {
    match duct::cmd("docker", args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
    {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        ),
        Err(_) => (false, String::new()),
    }
}

struct Home {
    dir: PathBuf,
    bottle: PathBuf,
    sidecar: PathBuf,
}

impl Home {
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec![
            "--home".to_owned(),
            self.dir.display().to_string(),
            "--quiet".to_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let o = duct::cmd(&self.bottle, all)
            .env("BOTTLE_SIDECAR_BIN", &self.sidecar)
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "bottle {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bare_run(image: &str, i: usize) -> Result<Duration, String> {
    let name = format!("bottle-bench-bare-{}-{i}", std::process::id());
    let t = Instant::now();
    let (ok, _) = docker(&[
        "run",
        "-d",
        "-it",
        "--name",
        &name,
        "--user",
        "1000:1000",
        image,
        "bash",
        "-l",
    ]);
    if !ok {
        return Err(format!("docker run {image} failed"));
    }
    loop {
        if docker(&["exec", &name, "true"]).0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = docker(&["rm", "-f", &name]);
            return Err("bare container never became exec-ready".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = t.elapsed();
    let _ = docker(&["rm", "-f", &name]);
    Ok(d)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut runs = 5usize;
    let mut write = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--runs needs a positive number")?
            }
            "--no-write" => write = false,
            other => return Err(format!("bench start: unknown argument `{other}`")),
        }
    }
    if !docker(&["info"]).0 {
        return Err("bench start needs a docker engine (`docker info` failed)".into());
    }
    if !docker(&["image", "inspect", crate::seed_base::BASE_TAG]).0 {
        crate::seed_base::run(&["--base-only".into()])?;
    }
    let (bottle, sidecar) = crate::demo::build_binaries()?;
    let dir = std::env::temp_dir().join(format!("bottle-bench-start-{}", std::process::id()));
    for d in ["bottles", "agents"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        dir.join("bottles/bench.toml"),
        "[agent_provider]\ntemplate = \"shell\"\n\n[[egress.routes]]\nhost = \"api.bench.test\"\n\n[resources]\ncpus = 1.0\nmemory = \"1GiB\"\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("agents/bench.toml"), "bottle = \"bench\"\n")
        .map_err(|e| e.to_string())?;
    // Private copies: a concurrent `cargo build` replacing target/debug must
    // not turn a warm start into a rebuild halfway through the runs.
    let bottle_copy = dir.join("bottle");
    let sidecar_copy = dir.join("bottle-sidecar");
    std::fs::copy(&bottle, &bottle_copy).map_err(|e| format!("copy bottle: {e}"))?;
    std::fs::copy(&sidecar, &sidecar_copy).map_err(|e| format!("copy bottle-sidecar: {e}"))?;
    let home = Home {
        dir,
        bottle: bottle_copy,
        sidecar: sidecar_copy,
    };

    eprintln!("bench start: warm-up (builds images once) …");
    let id = home.run(&["start", "bench", "--yes", "--detach"])?;
    home.run(&["rm", "-f", &id])?;
    let (_, images) = docker(&[
        "image",
        "ls",
        "bottle-agent-shell",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    let image = images
        .lines()
        .next()
        .ok_or("no bottle-agent-shell image after the warm-up")?
        .to_owned();

    let mut bottle_t = Vec::new();
    let mut bare_t = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let id = home.run(&["start", "bench", "--yes", "--detach"])?;
        bottle_t.push(t.elapsed());
        home.run(&["rm", "-f", &id])?;
        bare_t.push(bare_run(&image, i)?);
        eprintln!(
            "run {}: bottle {:.0} ms, bare {:.0} ms",
            i + 1,
            ms(bottle_t[i]),
            ms(bare_t[i])
        );
    }
    let (bmin, bbmin) = (
        *bottle_t.iter().min().unwrap(),
        *bare_t.iter().min().unwrap(),
    );
    let b = median(&mut bottle_t);
    let r = median(&mut bare_t);
    let ratio = b.as_secs_f64() / r.as_secs_f64();
    let table = format!(
        "| measure | median | min |\n|---|---|---|\n\
         | `bottle start --detach` (warm) → agent exec-ready | {:.0} ms | {:.0} ms |\n\
         | bare `docker run` of `{image}` → exec-ready | {:.0} ms | {:.0} ms |\n\
         | ratio (target ≤ 3×) | {ratio:.1}× | |\n",
        ms(b),
        ms(bmin),
        ms(r),
        ms(bbmin)
    );
    let section = format!(
        "## start\n\nWarm start (images cached, {runs} runs each, interleaved) of a shell-template \
         bottle with one route: identity + state, sidecar prepare (CA, policy files), two networks, \
         home volume, bundle container up and `bottle-sidecar health` passing, agent container \
         created, files copied in, started and answering `docker exec … true`. Bare = `docker run -d` \
         of the same agent image polled the same way. Debug build of `bottle`. Machine: {}, docker {}.\n\n{}\n\n\
         Where the difference goes: a bottle starts two containers (the bundle in the background \
         while the agent is created; the agent only once the bundle is healthy), creates two \
         networks and a volume, and the sidecars' prepare writes the CA and policy files with \
         fsync'd atomic writes. `bottle start` prints each step's time.",
        machine(),
        docker(&["version", "--format", "{{.Server.Version}}"]).1,
        table.trim_end()
    );
    println!("{section}");
    if write {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("no workspace root")?;
        let path = root.join("docs/benchmarks.md");
        write_section(&path, "start", &section)?;
        eprintln!("bench start: wrote {}", path.display());
    }
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    format!("{cpus} CPU(s), {model}")
}

/// Replace (or append) the `<!-- bench:NAME -->` … `<!-- /bench:NAME -->` block.
fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n\n{block}\n", old.trim_end()),
    };
    let tmp = path.with_extension("md.start.tmp");
    std::fs::write(&tmp, new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
