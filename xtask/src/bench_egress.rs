//! `cargo xtask bench egress`: bottle's egress proxy vs mitmproxy vs a direct
//! connection, same workload, one run.
//!
//! Workload: HTTPS GETs to a loopback upstream (`bench.test` → 127.0.0.1)
//! that answers 200 only when the route's bearer token arrives (so credential
//! injection is on and verified), keep-alive HTTP/1.1, concurrency 1 and 32,
//! a fixed request count. Load generator and upstream:
//! `bottle-sidecars/examples/egress_load.rs`. mitmproxy runs `mitmdump` with
//! a small addon (allowlist + header injection) written into a temp dir.
//!
//! bottle's egress runs twice in the same run, DLP on and DLP off (same
//! binary, `dlp = false` in routes.toml), and each target also carries
//! 64 KiB POST bodies (ordinary source text, scanned in full by DLP) at
//! concurrency 8 for MB/s.
//!
//! Reports req/s, p50/p99 latency and the latency added over the direct
//! connection, POST MB/s, idle RSS (VmRSS after start) and peak RSS (VmHWM)
//! of each proxy, the DLP on/off ratio at c=1 and c=32, bottle's c=32 req/s
//! against the run the table replaces, and the machine's load averages at
//! start and end (the machine is shared); rewrites the `egress` section of
//! docs/benchmarks.md.
//!
//! Flags: `--quick` (fewer requests), `--no-write` (print only).
//! mitmproxy absent: skipped with a reason, or an error when `CI=true`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-route-token-7f3a9c2e5b1d4086";

/// POST body size and concurrency for the MB/s rows.
const POST_BYTES: usize = 64 << 10;
const POST_C: usize = 8;

/// One load run's result.
#[derive(Clone, Debug, Default)]
struct Run {
    rps: f64,
    mbps: f64,
    p50_us: u64,
    p99_us: u64,
    ok: u64,
    errors: u64,
}

/// Results for one target (direct, bottle, mitmproxy).
#[derive(Debug, Default)]
struct Target {
    name: String,
    runs: Vec<(usize, Run)>,
    /// 64 KiB POST bodies at concurrency [`POST_C`].
    post: Option<Run>,
    idle_rss_kb: Option<u64>,
    peak_rss_kb: Option<u64>,
    note: Option<String>,
}

/// A child process killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run this benchmark.
pub fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let write = !args.iter().any(|a| a == "--no-write");
    let (n1, n32) = if quick { (300, 2_000) } else { (2_000, 16_000) };
    let n_post = if quick { 400 } else { 2_000 };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .to_path_buf();

    eprintln!("bench egress: building release binaries…");
    duct::cmd!(
        "cargo",
        "build",
        "--release",
        "-p",
        "bottle-sidecars",
        "--bin",
        "bottle-sidecar",
        "--example",
        "egress_load"
    )
    .dir(&root)
    .run()
    .map_err(|e| format!("cargo build: {e}"))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let sidecar = target_dir.join("release/bottle-sidecar");
    let load = target_dir.join("release/examples/egress_load");

    let doc = root.join("docs/benchmarks.md");
    let previous = std::fs::read_to_string(&doc)
        .ok()
        .and_then(|d| previous_c32(&d));
    let load_before = loadavg();
    let tmp = std::env::temp_dir().join(format!("bottle-bench-egress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("secrets")).map_err(|e| e.to_string())?;
    let result = bench(&tmp, &sidecar, &load, n1, n32, n_post);
    let _ = std::fs::remove_dir_all(&tmp);
    let targets = result?;
    let load = (load_before, loadavg());

    let table = render(&targets, n1, n32, n_post, &load, previous);
    println!("{table}");
    if write {
        write_section(&doc, "egress", &table)?;
        eprintln!("bench egress: wrote {}", doc.display());
    }
    Ok(())
}

fn bench(
    tmp: &Path,
    sidecar: &Path,
    load: &Path,
    n1: usize,
    n32: usize,
    n_post: usize,
) -> Result<Vec<Target>, String> {
    let token_file = tmp.join("secrets/route-token");
    std::fs::write(&token_file, TOKEN).map_err(|e| e.to_string())?;

    // Upstream.
    let mut up = Command::new(load)
        .arg("upstream")
        .arg(tmp)
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start upstream: {e}"))?;
    let mut line = String::new();
    BufReader::new(up.stdout.take().ok_or("upstream stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let _upstream = Guard(up);
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("upstream said `{line}`"))?;
    let url = format!("https://bench.test:{port}/v1/bench");
    let upstream_ca = tmp.join("upstream-ca.pem");

    let mut targets = Vec::new();

    // Direct.
    let mut direct = Target {
        name: "direct (no proxy)".into(),
        ..Default::default()
    };
    for (c, n) in [(1, n1), (32, n32)] {
        let r = client(
            load,
            &url,
            n,
            c,
            &upstream_ca,
            &[
                "--resolve".into(),
                "bench.test=127.0.0.1".into(),
                "--bearer-file".into(),
                token_file.display().to_string(),
            ],
        )?;
        direct.runs.push((c, r));
    }
    direct.post = Some(client(
        load,
        &url,
        n_post,
        POST_C,
        &upstream_ca,
        &[
            "--resolve".into(),
            "bench.test=127.0.0.1".into(),
            "--bearer-file".into(),
            token_file.display().to_string(),
            "--post-bytes".into(),
            POST_BYTES.to_string(),
        ],
    )?);
    targets.push(direct);

    // bottle egress, DLP on then off (same binary, same run).
    let ca_dir = tmp.join("ca");
    status(Command::new(load).arg("gen-ca").arg(&ca_dir))?;
    for dlp in [true, false] {
        targets.push(bottle_target(
            tmp, sidecar, load, &ca_dir, &url, port, dlp, n1, n32, n_post,
        )?);
    }

    // mitmproxy.
    targets.push(mitmproxy(tmp, load, &url, port, &upstream_ca, n1, n32)?);
    Ok(targets)
}

#[allow(clippy::too_many_arguments)]
fn bottle_target(
    tmp: &Path,
    sidecar: &Path,
    load: &Path,
    ca_dir: &Path,
    url: &str,
    port: u16,
    dlp: bool,
    n1: usize,
    n32: usize,
    n_post: usize,
) -> Result<Target, String> {
    let routes = tmp.join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "identity = \"bench\"\ndlp = {dlp}\n[[routes]]\nhost = \"bench.test\"\nport = {port}\npaths = [\"/v1/**\"]\nmethods = [\"GET\", \"POST\"]\nallow_private = true\nauth = {{ scheme = \"bearer\", secret = \"route-token\" }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let listen = free_port()?;
    let proxy = Command::new(sidecar)
        .args(["egress", "--config"])
        .arg(&routes)
        .arg("--ca-dir")
        .arg(ca_dir)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--audit")
        .arg(tmp.join("audit.jsonl"))
        .arg("--secrets-dir")
        .arg(tmp.join("secrets"))
        .arg("--upstream-ca")
        .arg(tmp.join("upstream-ca.pem"))
        .args(["--resolve", "bench.test=127.0.0.1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start bottle-sidecar egress: {e}"))?;
    let proxy = Guard(proxy);
    wait_port(listen)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut t = Target {
        name: format!("bottle egress (DLP {})", if dlp { "on" } else { "off" }),
        idle_rss_kb: proc_status_kb(proxy.0.id(), "VmRSS"),
        ..Default::default()
    };
    let proxy_url = format!("http://{listen}");
    let bottle_ca = ca_dir.join("ca.pem");
    for (c, n) in [(1, n1), (32, n32)] {
        let r = client(
            load,
            url,
            n,
            c,
            &bottle_ca,
            &["--proxy".into(), proxy_url.clone()],
        )?;
        t.runs.push((c, r));
    }
    t.post = Some(client(
        load,
        url,
        n_post,
        POST_C,
        &bottle_ca,
        &[
            "--proxy".into(),
            proxy_url,
            "--post-bytes".into(),
            POST_BYTES.to_string(),
        ],
    )?);
    t.peak_rss_kb = proc_status_kb(proxy.0.id(), "VmHWM");
    drop(proxy);
    Ok(t)
}

fn mitmproxy(
    tmp: &Path,
    load: &Path,
    url: &str,
    port: u16,
    upstream_ca: &Path,
    n1: usize,
    n32: usize,
) -> Result<Target, String> {
    let mut t = Target {
        name: "mitmproxy (mitmdump + addon)".into(),
        ..Default::default()
    };
    let Some(mitmdump) = which("mitmdump") else {
        let why = "mitmdump not found (pip install mitmproxy)";
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err(why.into());
        }
        eprintln!("bench egress: skipping mitmproxy: {why}");
        t.note = Some(why.into());
        return Ok(t);
    };
    let version = Command::new(&mitmdump)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_default();
    let addon = tmp.join("bottle_bench_addon.py");
    std::fs::write(
        &addon,
        format!(
            r#"# allowlist + credential injection, the same policy bottle enforces in the bench
from mitmproxy import http

ALLOWED = {{("bench.test", {port})}}
TOKEN = open({token:?}).read().strip()


def http_connect(flow: http.HTTPFlow) -> None:
    if (flow.request.host, flow.request.port) not in ALLOWED:
        flow.response = http.Response.make(403, b"denied")


def request(flow: http.HTTPFlow) -> None:
    if (flow.request.pretty_host, flow.request.port) not in ALLOWED or not flow.request.path.startswith("/v1/"):
        flow.response = http.Response.make(403, b"denied")
        return
    flow.request.headers.pop("cookie", None)
    flow.request.headers["authorization"] = "Bearer " + TOKEN


def server_connect(data) -> None:
    # bench.test is a test name: map it to the loopback upstream.
    host, p = data.server.address
    if host == "bench.test":
        data.server.address = ("127.0.0.1", p)
"#,
            token = tmp.join("secrets/route-token").display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    let confdir = tmp.join("mitm");
    let listen = free_port()?;
    let child = Command::new(&mitmdump)
        .args(["--listen-host", "127.0.0.1", "--listen-port"])
        .arg(listen.port().to_string())
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()))
        .arg("--set")
        .arg(format!(
            "ssl_verify_upstream_trusted_ca={}",
            upstream_ca.display()
        ))
        .args(["--set", "flow_detail=0", "-q", "-s"])
        .arg(&addon)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start mitmdump: {e}"))?;
    let child = Guard(child);
    wait_port(listen)?;
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ca.exists() {
        if Instant::now() > deadline {
            return Err("mitmproxy CA not created".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    t.idle_rss_kb = proc_status_kb(child.0.id(), "VmRSS");
    let proxy_url = format!("http://{listen}");
    for (c, n) in [(1, n1), (32, n32)] {
        let r = client(load, url, n, c, &ca, &["--proxy".into(), proxy_url.clone()])?;
        t.runs.push((c, r));
    }
    t.peak_rss_kb = proc_status_kb(child.0.id(), "VmHWM");
    if !version.is_empty() {
        t.note = Some(version);
    }
    Ok(t)
}

fn client(
    load: &Path,
    url: &str,
    n: usize,
    c: usize,
    ca: &Path,
    extra: &[String],
) -> Result<Run, String> {
    let out = Command::new(load)
        .arg("client")
        .arg(url)
        .arg(n.to_string())
        .arg(c.to_string())
        .arg(ca)
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("load client: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("load client failed: {text}"));
    }
    let num = |key: &str| -> f64 {
        text.split(&format!("\"{key}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let r = Run {
        rps: num("rps"),
        mbps: num("mbps"),
        p50_us: num("p50_us") as u64,
        p99_us: num("p99_us") as u64,
        ok: num("ok") as u64,
        errors: num("errors") as u64,
    };
    eprintln!("bench egress: c={c} n={n}: {r:?}");
    if r.ok == 0 {
        return Err(format!("no request succeeded through {extra:?}"));
    }
    Ok(r)
}

fn status(cmd: &mut Command) -> Result<(), String> {
    let st = cmd.status().map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {st}"))
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

fn wait_port(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listening on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{key}:")))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("–".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// A latency difference; negative values are measurement noise and shown as such.
fn signed_ms(us: i64) -> String {
    if us < 0 {
        format!("−{:.3} ms", (-us) as f64 / 1000.0)
    } else {
        format!("{:.3} ms", us as f64 / 1000.0)
    }
}

/// The 1-, 5- and 15-minute load averages (as `uptime` prints them).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "?".into())
}

/// bottle egress req/s at c=32 in the section this run replaces (the DLP
/// on row, or the single bottle row of older runs).
fn previous_c32(doc: &str) -> Option<f64> {
    let start = doc.find("<!-- bench:egress -->")?;
    let end = doc[start..].find("<!-- /bench:egress -->")? + start;
    doc[start..end].lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // ["", target, c, req/s, ...]
        let target = *cells.get(1)?;
        let bottle = target == "bottle egress" || target == "bottle egress (DLP on)";
        (bottle && *cells.get(2)? == "32")
            .then(|| cells.get(3)?.parse().ok())
            .flatten()
    })
}

fn render(
    targets: &[Target],
    n1: usize,
    n32: usize,
    n_post: usize,
    load: &(String, String),
    previous: Option<f64>,
) -> String {
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "Workload: HTTPS GET through the proxy to a loopback upstream (`bench.test` → 127.0.0.1), \
         bearer-token injection on (the upstream answers 200 only with the injected token), \
         keep-alive HTTP/1.1; {n1} requests at concurrency 1, {n32} at concurrency 32 (after a warm-up). \
         Load generator, upstream and proxy share one {cores}-core machine, which is itself \
         shared with other builds and tests (load average 1/5/15 min, as `uptime` shows it: \
         {} at the start, {} at the end of the run; on a busy machine throughput and tail \
         latencies are noisy and runs differ by more than the effects measured here). \
         Added latency = proxy p50/p99 − direct p50/p99 at the same concurrency \
         (a negative value means the difference is below the noise).\n",
        load.0,
        load.1
    );
    let _ = writeln!(
        s,
        "| target | c | req/s | p50 | p99 | added p50 | added p99 | errors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let direct = &targets[0];
    for t in targets {
        if t.runs.is_empty() {
            let _ = writeln!(
                s,
                "| {} | – | – | – | – | – | – | {} |",
                t.name,
                t.note.clone().unwrap_or_default()
            );
            continue;
        }
        for (c, r) in &t.runs {
            let base = direct
                .runs
                .iter()
                .find(|(dc, _)| dc == c)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            let (a50, a99) = if std::ptr::eq(t, direct) {
                ("–".to_owned(), "–".to_owned())
            } else {
                (
                    signed_ms(r.p50_us as i64 - base.p50_us as i64),
                    signed_ms(r.p99_us as i64 - base.p99_us as i64),
                )
            };
            let _ = writeln!(
                s,
                "| {} | {c} | {:.0} | {} | {} | {a50} | {a99} | {} |",
                t.name,
                r.rps,
                ms(r.p50_us),
                ms(r.p99_us),
                r.errors
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| proxy | idle RSS (VmRSS after start) | peak RSS (VmHWM) | notes |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|");
    for t in &targets[1..] {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.name,
            mb(t.idle_rss_kb),
            mb(t.peak_rss_kb),
            t.note.clone().unwrap_or_default()
        );
    }
    let _ = writeln!(
        s,
        "\n{} KiB POST bodies of ordinary source text (no credential; DLP scans all of it), \
         {n_post} requests at concurrency {POST_C}:\n",
        POST_BYTES >> 10
    );
    let _ = writeln!(s, "| target | MB/s | req/s | p50 | p99 | errors |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for t in targets {
        if let Some(r) = &t.post {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.0} | {} | {} | {} |",
                t.name,
                r.mbps,
                r.rps,
                ms(r.p50_us),
                ms(r.p99_us),
                r.errors
            );
        }
    }
    let on = targets.iter().find(|t| t.name.contains("DLP on"));
    let off = targets.iter().find(|t| t.name.contains("DLP off"));
    if let (Some(on), Some(off)) = (on, off) {
        let run = |t: &Target, c: usize| {
            t.runs
                .iter()
                .find(|(rc, _)| *rc == c)
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        };
        let _ = writeln!(s, "\nDLP on vs off (same binary, same run):\n");
        let _ = writeln!(
            s,
            "| c | req/s on | req/s off | on / off | p50 on | p50 off |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
        for c in [1, 32] {
            let (a, b) = (run(on, c), run(off, c));
            if b.rps > 0.0 {
                let _ = writeln!(
                    s,
                    "| {c} | {:.0} | {:.0} | {:+.1} % | {} | {} |",
                    a.rps,
                    b.rps,
                    (a.rps / b.rps - 1.0) * 100.0,
                    ms(a.p50_us),
                    ms(b.p50_us)
                );
            }
        }
        let _ = writeln!(s);
        if let Some(prev) = previous.filter(|p| *p > 0.0) {
            let now = run(on, 32).rps;
            let _ = writeln!(
                s,
                "bottle egress at c=32 in the run this table replaced: {prev:.0} req/s; \
                 this run (DLP on): {now:.0} req/s ({:+.1} %).",
                (now / prev - 1.0) * 100.0
            );
        }
        if let (Some(a), Some(b)) = (&on.post, &off.post) {
            if b.mbps > 0.0 {
                let _ = writeln!(
                    s,
                    "DLP on / off, 64 KiB POST: {:.1} / {:.1} MB/s ({:+.1} %).",
                    a.mbps,
                    b.mbps,
                    (a.mbps / b.mbps - 1.0) * 100.0
                );
            }
        }
    }
    if let (Some(b), Some(m)) = (
        targets.iter().find(|t| t.name.contains("DLP on")),
        targets.iter().find(|t| t.name.starts_with("mitmproxy")),
    ) {
        let mut ratios = Vec::new();
        for (c, br) in &b.runs {
            if let Some((_, mr)) = m.runs.iter().find(|(mc, _)| mc == c) {
                if mr.rps > 0.0 {
                    ratios.push(format!("c={c}: {:.1}×", br.rps / mr.rps));
                }
            }
        }
        if !ratios.is_empty() {
            let _ = writeln!(
                s,
                "\nThroughput bottle egress / mitmproxy: {}.",
                ratios.join(", ")
            );
        }
    }
    s
}

/// Replace (or append) the `<!-- bench:NAME -->` … `<!-- /bench:NAME -->` section.
fn write_section(path: &Path, name: &str, body: &str) -> Result<(), String> {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{start}\n## {name}\n\n{body}\n{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), section),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
