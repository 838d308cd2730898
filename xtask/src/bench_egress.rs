//! `cargo xtask bench egress`: bottle's egress proxy vs mitmproxy vs a direct
//! connection, same workload, one run.
//!
//! Workload: HTTPS GETs to a loopback upstream (`bench.test` → 127.0.0.1)
//! that answers 200 only when the route's bearer token arrives (so credential
//! injection is on and verified), keep-alive HTTP/1.1, concurrency 1 and 32,
//! a fixed request count; the same over HTTP/2 end to end (a second
//! upstream that offers h2; the client multiplexes every request on one
//! connection). Load generator and upstreams:
//! `bottle-sidecars/examples/egress_load.rs`. mitmproxy runs `mitmdump` with
//! a small addon (allowlist + header injection) written into a temp dir,
//! with a quarter of the request counts (it is two orders of magnitude
//! slower; its rates are still rates).
//!
//! bottle's egress runs twice in the same run, DLP on (the full rule set)
//! and DLP off (same binary, `dlp = false` in routes.toml); its files are
//! laid out as in a bundle (`egress/routes.toml`, `secrets/`, the audit log
//! in `audit/`). Each target also carries 64 KiB POST bodies (ordinary
//! source text, scanned in full by DLP) at concurrency 8 for MB/s.
//!
//! All proxies stay up for the whole run; every case (GET c=1, c=32, the
//! same over HTTP/2, the POSTs) is measured [`ROUNDS`] times per target
//! with the targets taking turns, and the median run is reported.
//!
//! Reports req/s (and the share of direct), p50/p99 latency and the latency
//! added over the direct connection, POST MB/s, idle RSS (VmRSS after start) and peak RSS (VmHWM)
//! of each proxy, the DLP on/off ratio at c=1 and c=32, bottle's c=32 req/s
//! against the run the table replaces, and the machine's load averages at
//! start and end (the machine is shared); rewrites the `egress` section of
//! docs/benchmarks.md.
//!
//! Flags: `--quick` (fewer requests), `--no-write` (print only),
//! `--baseline BIN` (one more row: that `bottle-sidecar` binary, e.g. a
//! build from before a change, DLP on, in the same run),
//! `--callgrind` (instead of the tables: the proxy's instructions per
//! request under valgrind's callgrind, DLP on, 500 GETs at c=1 after a
//! warm-up: repeatable on a loaded machine where timings are not; the
//! profile is kept for `callgrind_annotate`).
//! mitmproxy is looked for on `PATH`, in `~/.local/bin` and in python3's
//! script dirs (where `pip install mitmproxy` puts `mitmdump`); absent:
//! skipped with a reason in its row, or an error when `CI=true`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use crate::bench_start::write_section;
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
    /// The same GETs over HTTP/2.
    h2_runs: Vec<(usize, Run)>,
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

    if args.iter().any(|a| a == "--callgrind") {
        let out = target_dir.join("bench-egress-callgrind");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.join("secrets")).map_err(|e| e.to_string())?;
        let per_request = callgrind(&out, &sidecar, &load, 500)?;
        println!(
            "bottle egress (DLP on), HTTP/1.1 GET at c=1: {per_request} instructions per request \
             (callgrind profile in {})",
            out.display()
        );
        return Ok(());
    }
    let doc = root.join("docs/benchmarks.md");
    let previous = std::fs::read_to_string(&doc)
        .ok()
        .and_then(|d| previous_c32(&d));
    let load_before = loadavg();
    let tmp = std::env::temp_dir().join(format!("bottle-bench-egress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("secrets")).map_err(|e| e.to_string())?;
    let baseline = args
        .iter()
        .position(|a| a == "--baseline")
        .map(|i| {
            args.get(i + 1)
                .map(PathBuf::from)
                .ok_or("--baseline wants a path")
        })
        .transpose()?;
    let result = bench(&tmp, &sidecar, baseline.as_deref(), &load, n1, n32, n_post);
    let _ = std::fs::remove_dir_all(&tmp);
    let targets = result?;
    let load = (load_before, loadavg());

    let table = render(&targets, n1, n32, n_post, &load, previous);
    println!("{table}");
    if write {
        write_section(&doc, "egress", &format!("## egress\n\n{table}"))?;
        eprintln!("bench egress: wrote {}", doc.display());
    }
    Ok(())
}

/// Where one target's requests go and how they are trusted.
#[derive(Clone)]
struct Leg {
    url: String,
    ca: PathBuf,
    /// Extra client flags (`--proxy URL`, or the direct connection's).
    extra: Vec<String>,
}

/// Request counts of one target.
#[derive(Clone, Copy)]
struct Counts {
    n1: usize,
    n32: usize,
    n_post: usize,
}

impl Counts {
    fn quarter(self) -> Counts {
        Counts {
            n1: (self.n1 / 4).max(50),
            n32: (self.n32 / 4).max(320),
            n_post: (self.n_post / 4).max(50),
        }
    }
}

/// Each case is measured this many times per target, the targets taking
/// turns; the run with the median req/s is reported (whole: its latencies
/// too), so a burst of load from the machine's other users lands on one
/// sample of one target rather than on a whole row.
const ROUNDS: usize = 3;

/// A target ready to measure: its process (if any) stays up for the run.
struct Running {
    target: Target,
    guard: Option<Guard>,
    h1: Leg,
    h2: Leg,
    counts: Counts,
    /// A comparison (mitmproxy): its failure is noted in its row.
    optional: bool,
    failed: Option<String>,
}

#[derive(Clone, Copy)]
enum Case {
    Get(usize),
    H2(usize),
    Post,
}

/// Every case for every target, interleaved (see [`ROUNDS`]).
fn measure_all(load: &Path, running: &mut [Running]) -> Result<(), String> {
    for case in [
        Case::Get(1),
        Case::Get(32),
        Case::H2(1),
        Case::H2(32),
        Case::Post,
    ] {
        let mut samples: Vec<Vec<Run>> = vec![Vec::new(); running.len()];
        for _ in 0..ROUNDS {
            for (i, r) in running.iter_mut().enumerate() {
                if r.failed.is_some() {
                    continue;
                }
                let n = r.counts;
                let (leg, count, c, more): (&Leg, usize, usize, Vec<String>) = match case {
                    Case::Get(c) => (&r.h1, if c == 1 { n.n1 } else { n.n32 }, c, vec![]),
                    Case::H2(c) => (
                        &r.h2,
                        if c == 1 { n.n1 } else { n.n32 },
                        c,
                        vec!["--http2".into()],
                    ),
                    Case::Post => (
                        &r.h1,
                        n.n_post,
                        POST_C,
                        vec!["--post-bytes".into(), POST_BYTES.to_string()],
                    ),
                };
                let mut extra = leg.extra.clone();
                extra.extend(more);
                match client(load, &leg.url, count, c, &leg.ca, &extra) {
                    Ok(run) => samples[i].push(run),
                    Err(e) if r.optional => r.failed = Some(e),
                    Err(e) => return Err(e),
                }
            }
        }
        for (r, mut runs) in running.iter_mut().zip(samples) {
            if runs.is_empty() {
                continue;
            }
            runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            let median = runs.swap_remove(runs.len() / 2);
            match case {
                Case::Get(c) => r.target.runs.push((c, median)),
                Case::H2(c) => r.target.h2_runs.push((c, median)),
                Case::Post => r.target.post = Some(median),
            }
        }
    }
    for r in running.iter_mut() {
        if let Some(g) = &r.guard {
            r.target.peak_rss_kb = proc_status_kb(g.0.id(), "VmHWM");
        }
        if let Some(e) = r.failed.as_ref().filter(|e| !e.is_empty()) {
            let note = r.target.note.take().unwrap_or_default();
            r.target.note = Some(format!("{note}; failed: {e}"));
        }
    }
    Ok(())
}

/// Start one loopback upstream (`egress_load upstream`) writing its CA into
/// `dir`; returns the guard and its port.
fn start_upstream(
    load: &Path,
    dir: &Path,
    token_file: &Path,
    h2: bool,
) -> Result<(Guard, u16), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(load);
    cmd.arg("upstream").arg(dir).arg(token_file);
    if h2 {
        cmd.arg("--h2");
    }
    let mut up = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start upstream: {e}"))?;
    let mut line = String::new();
    BufReader::new(up.stdout.take().ok_or("upstream stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let guard = Guard(up);
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("upstream said `{line}`"))?;
    Ok((guard, port))
}

/// The loopback upstreams of one run.
struct Upstreams {
    /// HTTP/1.1 only.
    port: u16,
    /// Offers h2 (and HTTP/1.1).
    h2_port: u16,
    url: String,
    h2_url: String,
    ca: PathBuf,
    h2_ca: PathBuf,
    /// Both CAs, for the proxies' upstream trust.
    both_cas: PathBuf,
}

fn bench(
    tmp: &Path,
    sidecar: &Path,
    baseline: Option<&Path>,
    load: &Path,
    n1: usize,
    n32: usize,
    n_post: usize,
) -> Result<Vec<Target>, String> {
    let token_file = tmp.join("secrets/route-token");
    std::fs::write(&token_file, TOKEN).map_err(|e| e.to_string())?;
    let counts = Counts { n1, n32, n_post };

    let (_upstream, port) = start_upstream(load, &tmp.join("upstream"), &token_file, false)?;
    let (_upstream_h2, h2_port) =
        start_upstream(load, &tmp.join("upstream-h2"), &token_file, true)?;
    let ca = tmp.join("upstream/upstream-ca.pem");
    let h2_ca = tmp.join("upstream-h2/upstream-ca.pem");
    let both_cas = tmp.join("upstream-cas.pem");
    let mut pem = std::fs::read(&ca).map_err(|e| e.to_string())?;
    pem.extend(std::fs::read(&h2_ca).map_err(|e| e.to_string())?);
    std::fs::write(&both_cas, pem).map_err(|e| e.to_string())?;
    let up = Upstreams {
        port,
        h2_port,
        url: format!("https://bench.test:{port}/v1/bench"),
        h2_url: format!("https://bench.test:{h2_port}/v1/bench"),
        ca,
        h2_ca,
        both_cas,
    };

    // Direct.
    let direct_flags: Vec<String> = vec![
        "--resolve".into(),
        "bench.test=127.0.0.1".into(),
        "--bearer-file".into(),
        token_file.display().to_string(),
    ];
    let mut running = vec![Running {
        target: Target {
            name: "direct (no proxy)".into(),
            ..Default::default()
        },
        guard: None,
        h1: Leg {
            url: up.url.clone(),
            ca: up.ca.clone(),
            extra: direct_flags.clone(),
        },
        h2: Leg {
            url: up.h2_url.clone(),
            ca: up.h2_ca.clone(),
            extra: direct_flags,
        },
        counts,
        optional: false,
        failed: None,
    }];

    // bottle egress, DLP on and off (same binary, same run), each with its
    // own files.
    let ca_dir = tmp.join("ca");
    status(Command::new(load).arg("gen-ca").arg(&ca_dir))?;
    for dlp in [true, false] {
        let name = format!("bottle egress (DLP {})", if dlp { "on" } else { "off" });
        running.push(bottle_target(
            tmp, sidecar, &name, &ca_dir, &up, dlp, counts,
        )?);
    }

    // Another build of bottle-sidecar (e.g. before a change), DLP on.
    if let Some(bin) = baseline {
        let name = "bottle egress (DLP on, --baseline binary)";
        running.push(bottle_target(tmp, bin, name, &ca_dir, &up, true, counts)?);
    }

    // mitmproxy.
    if let Some(m) = mitmproxy(tmp, &up, counts.quarter(), &mut running)? {
        running.push(m);
    }
    measure_all(load, &mut running)?;
    Ok(running.into_iter().map(|r| r.target).collect())
}

fn bottle_target(
    tmp: &Path,
    sidecar: &Path,
    name: &str,
    ca_dir: &Path,
    up: &Upstreams,
    dlp: bool,
    counts: Counts,
) -> Result<Running, String> {
    // As in a bundle: the policy in egress/, held secrets in secrets/, the
    // audit log in audit/ (one state dir per proxy; the secrets shared).
    let state = tmp.join(name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    std::fs::create_dir_all(state.join("egress")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(state.join("audit")).map_err(|e| e.to_string())?;
    let routes = state.join("egress/routes.toml");
    let route = |port: u16| {
        format!(
            "[[routes]]\nhost = \"bench.test\"\nport = {port}\npaths = [\"/v1/**\"]\nmethods = [\"GET\", \"POST\"]\nallow_private = true\nauth = {{ scheme = \"bearer\", secret = \"route-token\" }}\n"
        )
    };
    std::fs::write(
        &routes,
        format!(
            "identity = \"bench\"\ndlp = {dlp}\n{}{}",
            route(up.port),
            route(up.h2_port)
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
        .arg(state.join("audit/audit.jsonl"))
        .arg("--secrets-dir")
        .arg(tmp.join("secrets"))
        .arg("--upstream-ca")
        .arg(&up.both_cas)
        .args(["--resolve", "bench.test=127.0.0.1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start bottle-sidecar egress: {e}"))?;
    let proxy = Guard(proxy);
    wait_port(listen)?;
    std::thread::sleep(Duration::from_millis(300));
    let target = Target {
        name: name.to_owned(),
        idle_rss_kb: proc_status_kb(proxy.0.id(), "VmRSS"),
        ..Default::default()
    };
    let leg = |url: &str| Leg {
        url: url.to_owned(),
        ca: ca_dir.join("ca.pem"),
        extra: vec!["--proxy".to_string(), format!("http://{listen}")],
    };
    Ok(Running {
        target,
        guard: Some(proxy),
        h1: leg(&up.url),
        h2: leg(&up.h2_url),
        counts,
        optional: false,
        failed: None,
    })
}

/// `mitmdump` on `PATH`, else where `pip install mitmproxy` puts it
/// (`~/.local/bin`, python3's script dirs); only one that answers
/// `--version`.
fn find_mitmdump() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = which("mitmdump").into_iter().collect();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".local/bin/mitmdump"));
    }
    for code in [
        "import sysconfig; print(sysconfig.get_path('scripts'))",
        "import site; print(site.getuserbase() + '/bin')",
    ] {
        if let Ok(out) = Command::new("python3").args(["-c", code]).output() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !dir.is_empty() {
                candidates.push(Path::new(&dir).join("mitmdump"));
            }
        }
    }
    candidates.into_iter().find(|p| {
        p.is_file()
            && Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// mitmdump started with the bench's addon, or (absent) a row that says
/// why, pushed onto `running` as it is.
fn mitmproxy(
    tmp: &Path,
    up: &Upstreams,
    counts: Counts,
    running: &mut Vec<Running>,
) -> Result<Option<Running>, String> {
    let mut t = Target {
        name: "mitmproxy (mitmdump + addon)".into(),
        ..Default::default()
    };
    let Some(mitmdump) = find_mitmdump() else {
        let why = "mitmdump not found on PATH, in ~/.local/bin or python3's script dirs (pip install mitmproxy)";
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err(why.into());
        }
        eprintln!("bench egress: skipping mitmproxy: {why}");
        t.note = Some(why.into());
        running.push(Running {
            target: t,
            guard: None,
            h1: Leg {
                url: String::new(),
                ca: PathBuf::new(),
                extra: Vec::new(),
            },
            h2: Leg {
                url: String::new(),
                ca: PathBuf::new(),
                extra: Vec::new(),
            },
            counts,
            optional: true,
            // Empty: not measured, and its note already says why.
            failed: Some(String::new()),
        });
        return Ok(None);
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

ALLOWED = {{("bench.test", {port}), ("bench.test", {h2_port})}}
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
            port = up.port,
            h2_port = up.h2_port,
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
            up.both_cas.display()
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
    let leg = |url: &str| Leg {
        url: url.to_owned(),
        ca: ca.clone(),
        extra: vec!["--proxy".to_string(), format!("http://{listen}")],
    };
    t.note = Some(format!(
        "{version}; {} / {} GETs, {} POSTs",
        counts.n1, counts.n32, counts.n_post
    ));
    Ok(Some(Running {
        target: t,
        guard: Some(child),
        h1: leg(&up.url),
        h2: leg(&up.h2_url),
        counts,
        // The comparison's own failure is reported in its row, not fatal.
        optional: true,
        failed: None,
    }))
}

/// The proxy's instructions per request: `bottle-sidecar egress` under
/// `valgrind --tool=callgrind`, counters zeroed after a warm-up, `n` GETs
/// at c=1, counters dumped.
fn callgrind(dir: &Path, sidecar: &Path, load: &Path, n: usize) -> Result<u64, String> {
    let token_file = dir.join("secrets/route-token");
    std::fs::write(&token_file, TOKEN).map_err(|e| e.to_string())?;
    let (_upstream, port) = start_upstream(load, &dir.join("upstream"), &token_file, false)?;
    let ca_dir = dir.join("ca");
    status(Command::new(load).arg("gen-ca").arg(&ca_dir))?;
    std::fs::create_dir_all(dir.join("egress")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("audit")).map_err(|e| e.to_string())?;
    let routes = dir.join("egress/routes.toml");
    std::fs::write(
        &routes,
        format!(
            "identity = \"bench\"\ndlp = true\n[[routes]]\nhost = \"bench.test\"\nport = {port}\npaths = [\"/v1/**\"]\nmethods = [\"GET\", \"POST\"]\nallow_private = true\nauth = {{ scheme = \"bearer\", secret = \"route-token\" }}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let listen = free_port()?;
    let profile = dir.join("callgrind.out");
    let proxy = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(sidecar)
        .args(["egress", "--config"])
        .arg(&routes)
        .arg("--ca-dir")
        .arg(&ca_dir)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--audit")
        .arg(dir.join("audit/audit.jsonl"))
        .arg("--secrets-dir")
        .arg(dir.join("secrets"))
        .arg("--upstream-ca")
        .arg(dir.join("upstream/upstream-ca.pem"))
        .args(["--resolve", "bench.test=127.0.0.1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("valgrind (apt-get install valgrind): {e}"))?;
    let proxy = Guard(proxy);
    wait_port(listen)?;
    let url = format!("https://bench.test:{port}/v1/bench");
    let ca = ca_dir.join("ca.pem");
    let flags = ["--proxy".to_string(), format!("http://{listen}")];
    client(load, &url, 50, 1, &ca, &flags)?;
    let pid = proxy.0.id().to_string();
    status(
        Command::new("callgrind_control")
            .args(["-z", &pid])
            .stdout(Stdio::null()),
    )?;
    client(load, &url, n, 1, &ca, &flags)?;
    status(
        Command::new("callgrind_control")
            .args(["-d", &pid])
            .stdout(Stdio::null()),
    )?;
    drop(proxy);
    // The dump after zeroing is `callgrind.out.1`: its `summary:` line.
    let dump = dir.join("callgrind.out.1");
    let text = std::fs::read_to_string(&dump).map_err(|e| format!("{}: {e}", dump.display()))?;
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no summary in {}", dump.display()))?;
    Ok(total / n as u64)
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

/// One GET table: req/s with its share of direct, latencies and what the
/// proxy adds to them.
fn get_table(s: &mut String, targets: &[Target], runs: fn(&Target) -> &Vec<(usize, Run)>) {
    let _ = writeln!(
        s,
        "| target | c | req/s | % of direct | p50 | p99 | added p50 | added p99 | errors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let direct = &targets[0];
    for t in targets {
        if runs(t).is_empty() {
            let _ = writeln!(
                s,
                "| {} | – | – | – | – | – | – | – | {} |",
                t.name,
                t.note.clone().unwrap_or_default()
            );
            continue;
        }
        for (c, r) in runs(t) {
            let base = run_at(runs(direct), *c);
            let (share, a50, a99) = if std::ptr::eq(t, direct) {
                ("–".to_owned(), "–".to_owned(), "–".to_owned())
            } else {
                (
                    percent(r.rps, base.rps),
                    signed_ms(r.p50_us as i64 - base.p50_us as i64),
                    signed_ms(r.p99_us as i64 - base.p99_us as i64),
                )
            };
            let _ = writeln!(
                s,
                "| {} | {c} | {:.0} | {share} | {} | {} | {a50} | {a99} | {} |",
                t.name,
                r.rps,
                ms(r.p50_us),
                ms(r.p99_us),
                r.errors
            );
        }
    }
}

fn run_at(runs: &[(usize, Run)], c: usize) -> Run {
    runs.iter()
        .find(|(rc, _)| *rc == c)
        .map(|(_, r)| r.clone())
        .unwrap_or_default()
}

fn percent(a: f64, of: f64) -> String {
    if of > 0.0 {
        format!("{:.0} %", a / of * 100.0)
    } else {
        "–".into()
    }
}

/// The issue's goals for bottle egress with DLP on (HTTP/1.1 GETs): at
/// least 45 % of direct req/s at c=32, at most 0.1 ms added p50 at c=1.
fn goals(targets: &[Target]) -> Option<String> {
    let direct = targets.first()?;
    let on = targets.iter().find(|t| t.name.contains("DLP on"))?;
    let (d32, b32) = (run_at(&direct.runs, 32), run_at(&on.runs, 32));
    let (d1, b1) = (run_at(&direct.runs, 1), run_at(&on.runs, 1));
    if d32.rps <= 0.0 {
        return None;
    }
    let share = b32.rps / d32.rps * 100.0;
    let added = b1.p50_us as i64 - d1.p50_us as i64;
    Some(format!(
        "Goals (bottle egress, DLP on, HTTP/1.1): c=32 throughput {share:.0} % of direct (goal ≥ 45 %: {}); \
         added p50 at c=1 {} (goal ≤ 0.100 ms: {}).",
        if share >= 45.0 { "met" } else { "not met" },
        signed_ms(added),
        if added <= 100 { "met" } else { "not met" }
    ))
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
         keep-alive HTTP/1.1; {n1} requests at concurrency 1, {n32} at concurrency 32 (after a warm-up; \
         mitmproxy a quarter of each, see its notes). Every case ran {ROUNDS} times per target, the \
         targets taking turns; each row is the run with the median req/s (its latencies too). \
         Load generator, upstream and proxy share one {cores}-core machine, which is itself \
         shared with other builds and tests (load average 1/5/15 min, as `uptime` shows it: \
         {} at the start, {} at the end of the run; on a busy machine throughput and tail \
         latencies are noisy and runs differ by more than the effects measured here). \
         Added latency = proxy p50/p99 − direct p50/p99 at the same concurrency \
         (a negative value means the difference is below the noise).\n",
        load.0,
        load.1
    );
    get_table(&mut s, targets, |t| &t.runs);
    let _ = writeln!(
        s,
        "\nThe same GETs over HTTP/2 end to end (client → proxy → an upstream that offers h2; \
         the client multiplexes all its requests on one connection):\n"
    );
    get_table(&mut s, targets, |t| &t.h2_runs);
    if let Some(goal) = goals(targets) {
        let _ = writeln!(s, "\n{goal}");
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
