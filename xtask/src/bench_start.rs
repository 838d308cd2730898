//! `cargo xtask bench start [--runs N] [--no-write]`: warm `bottle start
//! --detach` (preflight, state, sidecar prepare, networks, bundle up and
//! ready, agent created, files copied, agent started) plus `bottle exec
//! … true`, against a bare `docker run -d` of the same agent image plus
//! `docker exec … true`, paired runs in one invocation, release builds of
//! `bottle` and `bottle-sidecar`. Each launch step's own time comes from
//! the launch engine's debug timing lines (`step timing <start> <took>
//! <name>`, `bottle_core::launch`). The gVisor probe's cache lives in the
//! bench's own dir (filled by the warm-up, as a user's first start fills
//! theirs). Rewrites the `start` section of docs/benchmarks.md and prints
//! the same tables. Needs a docker engine; images are built once in a
//! warm-up start that is not counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Release builds of `bottle` and `bottle-sidecar` (what users run; a debug
/// build spends its time elsewhere).
pub fn build_release() -> Result<(PathBuf, PathBuf), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent dir")?
        .to_path_buf();
    eprintln!("building release bottle and bottle-sidecar …");
    duct::cmd!(
        "cargo",
        "build",
        "--release",
        "-q",
        "-p",
        "bottle-cli",
        "-p",
        "bottle-sidecars",
        "--bin",
        "bottle",
        "--bin",
        "bottle-sidecar"
    )
    .dir(&root)
    .run()
    .map_err(|e| format!("cargo build --release: {e}"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok((
        target.join("release/bottle"),
        target.join("release/bottle-sidecar"),
    ))
}

/// The 1/5/15-minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One launch step's timings from `bottle start`'s stderr.
#[derive(Default, Clone)]
struct StepTimes {
    /// Own start offset and duration (debug timing line).
    start: Option<Duration>,
    took: Option<Duration>,
    /// Time from the previous step's progress line to this one's: its
    /// share of the critical path.
    critical: Option<Duration>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Steps in order with their timings.
fn parse_steps(stderr: &str) -> Vec<(String, StepTimes)> {
    let mut order: Vec<(String, StepTimes)> = Vec::new();
    let mut own: BTreeMap<String, (Duration, Duration)> = BTreeMap::new();
    for line in stderr.lines().map(strip_ansi) {
        if let Some(rest) = line.split("step timing ").nth(1) {
            let mut it = rest.splitn(3, ' ');
            if let (Some(a), Some(b), Some(name)) = (it.next(), it.next(), it.next()) {
                if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                    own.insert(
                        name.trim().to_owned(),
                        (Duration::from_millis(a), Duration::from_millis(b)),
                    );
                }
            }
        } else if line.starts_with('[') && line.ends_with(')') {
            // `[k/N] name (ms)` or `(ms, cached)`
            let Some((_, rest)) = line.split_once("] ") else {
                continue;
            };
            let Some((name, ms)) = rest.rsplit_once(" (") else {
                continue;
            };
            let ms = ms.trim_end_matches(')').split(' ').next().unwrap_or("");
            if let Ok(ms) = ms.parse::<u64>() {
                order.push((
                    name.to_owned(),
                    StepTimes {
                        critical: Some(Duration::from_millis(ms)),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    for (name, t) in order.iter_mut() {
        if let Some((a, b)) = own.get(name.as_str()) {
            t.start = Some(*a);
            t.took = Some(*b);
        }
    }
    order
}

pub fn docker(args: &[&str]) -> (bool, String) {
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
    /// The bench's own gVisor probe cache (`BOTTLE_PROBE_CACHE`).
    fn probe_cache(&self) -> PathBuf {
        self.dir.join("probe-cache.json")
    }
}

impl Home {
    /// `bottle start` with progress lines and the launch's debug timings:
    /// (identity, stderr).
    fn start_timed(&self, args: &[&str]) -> Result<(String, String), String> {
        let mut all = vec!["--home".to_owned(), self.dir.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let o = duct::cmd(&self.bottle, all)
            .env("BOTTLE_SIDECAR_BIN", &self.sidecar)
            .env("BOTTLE_PROBE_CACHE", self.probe_cache())
            .env("RUST_LOG", "bottle_core::launch=debug")
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() {
            return Err(format!("bottle {}: {err}", args.join(" ")));
        }
        Ok((String::from_utf8_lossy(&o.stdout).trim().to_owned(), err))
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec![
            "--home".to_owned(),
            self.dir.display().to_string(),
            "--quiet".to_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let o = duct::cmd(&self.bottle, all)
            .env("BOTTLE_SIDECAR_BIN", &self.sidecar)
            .env("BOTTLE_PROBE_CACHE", self.probe_cache())
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

fn bare_run(image: &str, runtime: &str, i: usize) -> Result<Duration, String> {
    let name = format!("bottle-bench-bare-{}-{runtime}-{i}", std::process::id());
    let t = Instant::now();
    let (ok, _) = docker(&[
        "run",
        "-d",
        "-it",
        "--runtime",
        runtime,
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

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn median(v: &mut [Duration]) -> Duration {
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
    let (bottle, sidecar) = build_release()?;
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
    // Private copies: a concurrent `cargo build` replacing target/release must
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
    // the agent's image and runtime (runsc where gVisor works): the bare
    // container gets the same
    let (_, facts) = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}} {{.HostConfig.Runtime}}",
        &format!("bottle-{id}-agent"),
    ]);
    home.run(&["rm", "-f", &id])?;
    let mut facts = facts.split_whitespace();
    let image = facts
        .next()
        .ok_or("no agent container after the warm-up")?
        .to_owned();
    let runtime = facts.next().unwrap_or("runc").to_owned();

    let load_start = loadavg();
    let mut start_t = Vec::new();
    let mut bottle_t = Vec::new();
    let mut exec_t = Vec::new();
    let mut bare_t = Vec::new();
    let mut runc_t = Vec::new();
    let mut probe_t = Vec::new();
    let mut per_step: Vec<(String, Vec<StepTimes>)> = Vec::new();
    let mut before_launch = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let (id, stderr) = home.start_timed(&["start", "bench", "--yes", "--detach"])?;
        let started = t.elapsed();
        let te = Instant::now();
        let exec = home.run(&["exec", &id, "--", "true"]);
        let exec_took = te.elapsed();
        home.run(&["rm", "-f", &id])?;
        exec?;
        start_t.push(started);
        exec_t.push(exec_took);
        bottle_t.push(started + exec_took);
        let steps = parse_steps(&stderr);
        let span = steps
            .iter()
            .filter_map(|(_, t)| Some(t.start? + t.took?))
            .max()
            .unwrap_or_default();
        before_launch.push(started.saturating_sub(span));
        for (name, t) in steps {
            match per_step.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(t),
                None => per_step.push((name, vec![t])),
            }
        }
        bare_t.push(bare_run(&image, &runtime, i)?);
        if runtime != "runc" {
            runc_t.push(bare_run(&image, "runc", i)?);
            // what the probe's test container costs when its cached
            // result does not apply (bottle-docker's probe_runsc)
            let t = Instant::now();
            docker(&[
                "run",
                "--rm",
                "--runtime",
                "runsc",
                "--network",
                "none",
                crate::seed_base::BASE_TAG,
                "true",
            ]);
            probe_t.push(t.elapsed());
        }
        eprintln!(
            "run {}: bottle start {:.0} ms + exec {:.0} ms, bare run+exec ({runtime}) {:.0} ms",
            i + 1,
            ms(started),
            ms(exec_took),
            ms(bare_t[i])
        );
    }
    let load_end = loadavg();
    let min = |v: &[Duration]| *v.iter().min().unwrap();
    let (smin, bmin, emin, rmin) = (min(&start_t), min(&bottle_t), min(&exec_t), min(&bare_t));
    let s_med = median(&mut start_t);
    let b = median(&mut bottle_t);
    let e_med = median(&mut exec_t);
    let r = median(&mut bare_t);
    let ratio = b.as_secs_f64() / r.as_secs_f64();
    let runc_row = if runc_t.is_empty() {
        String::new()
    } else {
        let m = min(&runc_t);
        format!(
            "| (for reference) the same bare container with `--runtime runc` | {:.0} ms | {:.0} ms |\n",
            ms(median(&mut runc_t)),
            ms(m)
        )
    };
    let ratio_start = s_med.as_secs_f64() / r.as_secs_f64();
    let verdict = if ratio <= 2.0 { "meets" } else { "misses" };
    let table = format!(
        "| measure | median | min |\n|---|---:|---:|\n\
         | `bottle start --detach` (warm) → bundle ready, agent running | {:.0} ms | {:.0} ms |\n\
         | `bottle exec <id> -- true` after it | {:.0} ms | {:.0} ms |\n\
         | **bottle: start + exec** | **{:.0} ms** | {:.0} ms |\n\
         | bare `docker run -d --runtime {runtime}` of `{image}` + `docker exec … true` | {:.0} ms | {:.0} ms |\n{runc_row}\
         | ratio start + exec / bare (target ≤ 2×: {verdict}) | **{ratio:.2}×** | |\n\
         | ratio start alone / bare | {ratio_start:.2}× | |\n",
        ms(s_med),
        ms(smin),
        ms(e_med),
        ms(emin),
        ms(b),
        ms(bmin),
        ms(r),
        ms(rmin)
    );
    let mut steps_table = String::from(
        "| launch step | starts at (ms) | own time (ms) | on the critical path (ms) |\n|---|---:|---:|---:|\n",
    );
    let mut bl = before_launch.clone();
    steps_table.push_str(&format!(
        "| before the launch: probe (`docker version`, base image, two `docker info`, at once; the gVisor test container only when its cached result does not match), plan, identity, sidecar prepare; process exit | – | {:.0} | {:.0} |\n",
        ms(median(&mut bl)),
        ms(median(&mut before_launch))
    ));
    if !probe_t.is_empty() {
        steps_table.push_str(&format!(
            "| (not in a warm start: its result is cached) the gVisor probe's test container (`docker run --rm --runtime runsc --network none` of the base image), timed separately | – | {:.0} | – |\n",
            ms(median(&mut probe_t))
        ));
    }
    let med_of = |v: &[StepTimes], f: fn(&StepTimes) -> Option<Duration>| -> String {
        let mut d: Vec<Duration> = v.iter().filter_map(f).collect();
        if d.is_empty() {
            "–".into()
        } else {
            format!("{:.0}", ms(median(&mut d)))
        }
    };
    for (name, v) in &per_step {
        steps_table.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            med_of(v, |t| t.start),
            med_of(v, |t| t.took),
            med_of(v, |t| t.critical)
        ));
    }
    let section = format!(
        "## start\n\nWarm start (images and the gVisor probe's result cached, {runs} paired runs, each a bottle then a bare \
         container) of a shell-template bottle with one route: identity + state, sidecar prepare \
         (CA, policy files), two networks, home volume, bundle container up and its readiness marker \
         written, agent container created, files copied in and started; then `bottle exec <id> \
         -- true` (the bottle's first exec: it proves the agent takes one). Bare = `docker run -d` of the same \
         agent image with the same runtime as the bottle's agent ({runtime} here: gVisor is used \
         when the probe finds it working), then `docker exec … true` until it succeeds. Release builds of `bottle` and \
         `bottle-sidecar`. Machine: {}, docker {}; load average (1/5/15 min) {load_start} at the \
         start, {load_end} at the end: the machine is shared with other builds, so absolute \
         numbers are noisy; the paired ratio less so.\n\n{}\n\n\
         Where the time goes (medians over the runs): each launch step's own time and when it \
         starts after the launch begins (the launch engine's debug timing lines), and how much of the \
         critical path it holds (time between its progress line and the previous one; progress \
         is reported in step order, so a step that ran alongside an earlier one holds little).\n\n{}\n\n\
         Steps run as soon as the steps they depend on succeeded (by the docker object they \
         name): the image checks in parallel, the two networks and the volume together after \
         the base check, the agent's create, copy (its files and its secret env file) and start \
         alongside the bundle's create, connect and start; the agent's command waits for the \
         bundle's readiness marker itself (a read-only mount of the state's `run/`), so no \
         `docker exec` hands anything over; the host waits for the same marker (a `stat` every \
         5 ms; `bottle-sidecar health` over `docker exec` only every 300 ms as the slow path). \
         The gVisor probe's test container runs only when its cached result does not match the \
         engine and runsc binary. What stays sequential is what must: each container start \
         needs its networks, and the launch ends once the bundle answers and the agent runs.",
        machine(),
        docker(&["version", "--format", "{{.Server.Version}}"]).1,
        table.trim_end(),
        steps_table.trim_end()
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

pub fn machine() -> String {
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
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
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
    let tmp = path.with_extension(format!("md.{name}.tmp"));
    std::fs::write(&tmp, new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::write_section;

    #[test]
    fn a_section_is_replaced_in_place_and_a_missing_one_appended() {
        let dir = std::env::temp_dir().join(format!("xtask-write-section-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("benchmarks.md");
        std::fs::write(
            &doc,
            "# Benchmarks\n\nintro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\n\ntail\n",
        )
        .unwrap();
        write_section(&doc, "a", "## a\n\nnew a\n").unwrap();
        write_section(&doc, "b", "## b\n\nb").unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            text,
            "# Benchmarks\n\nintro\n<!-- bench:a -->\n## a\n\nnew a\n<!-- /bench:a -->\n\ntail\n\n\
             <!-- bench:b -->\n## b\n\nb\n<!-- /bench:b -->\n"
        );
    }
}
