//! `cargo xtask bench scale [--counts 1,8,24] [--parallel P] [--headroom H]
//! [--subnet-mode always|fallback|off] [--no-write]`, or `cargo xtask bench
//! scale --configure-pools`:
//! cost per bottle at scale. For each count, start that many shell-template
//! bottles (release builds, `P` launches at a time), then measure the wall
//! time until all are ready, host memory per bottle (`docker stats` of the
//! bundle and agent containers; RSS of the engine's processes: dockerd,
//! containerd, its shims, fuse-overlayfs; the host's MemAvailable), the
//! networks and addresses they use, and `bottle ls` at that count; then
//! remove them all. A count that does not fit reports how many started and
//! why the next one did not.
//!
//! Subnets (README "Networks and subnets"): the bottles run with
//! `BOTTLE_SUBNET_MODE=always` by default, so every network is a `/28` of
//! bottle's range and the shared engine's address pools stay free for its
//! other users while the run holds 24 bottles; `fallback` (bottle's default)
//! lets the bottles take docker's pools until they are exhausted, then the
//! range; `off` is the old behaviour, where docker's pools (daemon.json's
//! `default-address-pools` once dockerd has loaded them, else docker's
//! defaults: 31 networks) cap a count so that `H` networks (default 4) stay
//! free for other users. Rewrites the `scale` section of docs/benchmarks.md.
//!
//! `--configure-pools` merges a larger pool set into
//! `/etc/docker/daemon.json` (every other key kept) and stops: dockerd reads
//! pools only at start, not on SIGHUP, and the bench never restarts a shared
//! engine, so whoever owns the engine restarts it, then reruns the bench.
//!
//! Cleanup: every bottle is removed after its count (`bottle rm -f`, then a
//! sweep of containers, networks and volumes by this run's name prefix),
//! also on an error; a watchdog process outside the terminal's process
//! group sweeps the same prefix once xtask is gone (Ctrl-C: each `bottle
//! start` rolls its own launch back, the watchdog removes what finished).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bench_start::{docker, loadavg, machine, median, ms, write_section};

struct Run {
    home: PathBuf,
    bottle: PathBuf,
    sidecar: PathBuf,
    /// Container/network/volume name prefix of this run's bottles.
    prefix: String,
    /// `BOTTLE_SUBNET_MODE` of the bottles.
    subnet_mode: String,
}

impl Run {
    fn bottle(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec![
            "--home".to_owned(),
            self.home.display().to_string(),
            "--quiet".to_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let o = duct::cmd(&self.bottle, all)
            .env("BOTTLE_SIDECAR_BIN", &self.sidecar)
            .env("BOTTLE_SUBNET_MODE", &self.subnet_mode)
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }

    /// Names of this run's docker objects of one kind.
    fn objects(&self, kind: &str) -> Vec<String> {
        let filter = format!("name={}", self.prefix);
        let args: Vec<&str> = match kind {
            "container" => vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
            "network" => vec![
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ],
            _ => vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
        };
        docker(&args)
            .1
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(&self.prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Remove every container, network and volume of this run; what is left.
    fn sweep(&self) -> Vec<String> {
        for kind in ["container", "network", "volume"] {
            let names = self.objects(kind);
            if names.is_empty() {
                continue;
            }
            let mut args: Vec<&str> = match kind {
                "container" => vec!["rm", "-f"],
                "network" => vec!["network", "rm"],
                _ => vec!["volume", "rm", "-f"],
            };
            args.extend(names.iter().map(String::as_str));
            let _ = docker(&args);
        }
        ["container", "network", "volume"]
            .iter()
            .flat_map(|k| self.objects(k))
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let left = self.sweep();
        if !left.is_empty() {
            eprintln!("bench scale: could not remove {left:?}");
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A shell outside the terminal's process group (Ctrl-C does not reach it)
/// that waits for xtask to end, then sweeps this run's prefix and home.
fn watchdog(prefix: &str, home: &Path) {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; sleep 3; \
         for i in 1 2 3; do \
           docker ps -aq --filter name={prefix} | xargs -r docker rm -f; \
           docker network ls -q --filter name={prefix} | xargs -r docker network rm; \
           docker volume ls -q --filter name={prefix} | xargs -r docker volume rm -f; \
           sleep 2; \
         done >/dev/null 2>&1; rm -rf '{home}'",
        pid = std::process::id(),
        home = home.display(),
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// Every process: (pid, parent pid, comm).
fn processes() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parens
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect()
}

/// Proportional set size of a process (shared pages split among their
/// users), KiB; RSS where smaps_rollup cannot be read.
fn pss_kib(pid: u32) -> u64 {
    let field = |file: &str, key: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()?
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    field("smaps_rollup", "Pss:")
        .or_else(|| field("status", "VmRSS:"))
        .unwrap_or(0)
}

/// PSS (KiB) and count of the engine's processes: dockerd, containerd and
/// its shims, fuse-overlayfs (the storage driver's per-container mounts, if
/// used), docker-proxy.
fn engine_kib() -> (u64, usize) {
    let engine: Vec<u32> = processes()
        .into_iter()
        .filter(|(_, _, c)| {
            c == "dockerd"
                || c == "containerd"
                || c.starts_with("containerd-shim")
                || c == "fuse-overlayfs"
                || c == "docker-proxy"
        })
        .map(|(p, _, _)| p)
        .collect();
    (engine.iter().map(|&p| pss_kib(p)).sum(), engine.len())
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Host memory of the bundle and agent containers, in MiB: the PSS of
/// every process under each container's containerd shim (runc: the
/// container's processes; runsc: the gVisor sandbox, gofer and all). Not
/// `docker stats`: under runsc with `--ignore-cgroups` the cgroup figure it
/// reads is not the sandbox's.
fn container_mem(names: &[String]) -> (f64, f64) {
    if names.is_empty() {
        return (0.0, 0.0);
    }
    let mut args = vec!["inspect", "--format", "{{.Name}} {{.Id}}"];
    args.extend(names.iter().map(String::as_str));
    let ids: Vec<(String, String)> = docker(&args)
        .1
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(n, i)| (n.trim_start_matches('/').to_owned(), i.to_owned()))
        .collect();
    let procs = processes();
    let shim_of = |id: &str| -> Option<u32> {
        procs
            .iter()
            .filter(|(_, _, c)| c.starts_with("containerd-shim"))
            .find(|(p, _, _)| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(id))
                    .unwrap_or(false)
            })
            .map(|(p, _, _)| *p)
    };
    let subtree_kib = |root: u32| -> u64 {
        let mut total = 0;
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            for (c, _, _) in procs.iter().filter(|(_, pp, _)| *pp == p) {
                total += pss_kib(*c);
                stack.push(*c);
            }
        }
        total
    };
    let (mut bundle, mut agent) = (0u64, 0u64);
    for (name, id) in &ids {
        let Some(shim) = shim_of(id) else { continue };
        let kib = subtree_kib(shim);
        if name.ends_with("-bundle") {
            bundle += kib;
        } else if name.ends_with("-agent") {
            agent += kib;
        }
    }
    (bundle as f64 / 1024.0, agent as f64 / 1024.0)
}

/// Subnets of the given networks and their total addresses.
fn subnets(names: &[String]) -> (Vec<String>, u64) {
    if names.is_empty() {
        return (Vec::new(), 0);
    }
    let mut args = vec![
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
    ];
    args.extend(names.iter().map(String::as_str));
    let (_, out) = docker(&args);
    let nets: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    let addrs = nets
        .iter()
        .filter_map(|n| n.split_once('/'))
        .filter(|(a, _)| a.contains('.'))
        .filter_map(|(_, p)| p.parse::<u32>().ok())
        .map(|p| 1u64 << (32 - p.min(32)))
        .sum();
    (nets, addrs)
}

/// One docker address pool: networks of `/size` carved out of `base/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pool {
    base: u32,
    prefix: u32,
    size: u32,
}

impl Pool {
    fn parse(base: &str, size: u32) -> Option<Pool> {
        let (addr, prefix) = base.split_once('/')?;
        let prefix: u32 = prefix.parse().ok()?;
        (prefix <= size && size <= 32).then_some(Pool {
            base: ipv4(addr)?,
            prefix,
            size,
        })
    }

    /// How many networks it holds.
    fn networks(&self) -> usize {
        1usize << (self.size - self.prefix)
    }

    /// Whether the subnet `a.b.c.d/p` lies inside it.
    fn holds(&self, subnet: &str) -> bool {
        let Some((addr, p)) = subnet.split_once('/') else {
            return false;
        };
        let (Some(a), Ok(p)) = (ipv4(addr), p.parse::<u32>()) else {
            return false;
        };
        let mask = |bits: u32| u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        p >= self.prefix && (a & mask(self.prefix)) == (self.base & mask(self.prefix))
    }

    fn json(&self) -> serde_json::Value {
        let b = self.base.to_be_bytes();
        serde_json::json!({
            "base": format!("{}.{}.{}.{}/{}", b[0], b[1], b[2], b[3], self.prefix),
            "size": self.size,
        })
    }
}

fn ipv4(s: &str) -> Option<u32> {
    let o: Vec<u8> = s
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (o.len() == 4).then(|| u32::from_be_bytes([o[0], o[1], o[2], o[3]]))
}

/// Docker's address pools when daemon.json sets none (20.10):
/// 172.17–31.0.0/16 as /16s and 192.168.0.0/16 as /20s, 31 networks.
fn default_pools() -> Vec<Pool> {
    let mut v: Vec<Pool> = (17..=31)
        .map(|b| Pool::parse(&format!("172.{b}.0.0/16"), 16).expect("valid pool"))
        .collect();
    v.push(Pool::parse("192.168.0.0/16", 20).expect("valid pool"));
    v
}

/// What `--configure-pools` writes: a /16 of small networks first (/24: 254
/// addresses, 256 networks, 128 bottles), then docker's own defaults, so
/// every existing network stays inside a pool.
fn bench_pools() -> Vec<Pool> {
    let mut v = vec![Pool::parse(BENCH_POOL, 24).expect("valid pool")];
    v.push(Pool::parse("172.16.0.0/12", 16).expect("valid pool"));
    v.push(Pool::parse("192.168.0.0/16", 20).expect("valid pool"));
    v
}

/// The base of the bench's pool: private, and not 10.210.0.0/16, which the
/// smolmachines backend carves into per-slot bundle subnets itself
/// (docs/smolmachines.md). Docker skips subnets that overlap a host route.
const BENCH_POOL: &str = "10.220.0.0/16";

const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// The `default-address-pools` of a daemon.json, if it sets any.
fn configured_pools(cfg: &serde_json::Value) -> Option<Vec<Pool>> {
    let pools = cfg.get("default-address-pools")?.as_array()?;
    Some(
        pools
            .iter()
            .filter_map(|p| Pool::parse(p.get("base")?.as_str()?, p.get("size")?.as_u64()? as u32))
            .collect(),
    )
}

/// Merge the bench's pools into a daemon.json value, keeping every other
/// key (as `.ci/run` merges the runsc runtime); false when already there.
fn merge_pools(cfg: &mut serde_json::Value) -> bool {
    let want: Vec<serde_json::Value> = bench_pools().iter().map(Pool::json).collect();
    if !cfg.is_object() {
        *cfg = serde_json::json!({});
    }
    let obj = cfg.as_object_mut().expect("an object");
    if obj.get("default-address-pools") == Some(&serde_json::Value::Array(want.clone())) {
        return false;
    }
    obj.insert(
        "default-address-pools".into(),
        serde_json::Value::Array(want),
    );
    true
}

/// `--configure-pools`: write the bench's pools into daemon.json. dockerd
/// reads `default-address-pools` only when it starts (a SIGHUP reloads
/// runtimes, labels, debug..., not the pools), so this says to restart it;
/// the bench never restarts a shared engine itself.
fn configure_pools() -> Result<(), String> {
    let path = Path::new(DAEMON_JSON);
    let mut cfg: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{DAEMON_JSON}: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("{DAEMON_JSON}: {e}")),
    };
    if merge_pools(&mut cfg) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("json.bottle-tmp");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())? + "\n";
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{DAEMON_JSON}: {e}"))?;
        eprintln!("bench scale: wrote default-address-pools to {DAEMON_JSON}");
    } else {
        eprintln!("bench scale: {DAEMON_JSON} already has the bench's default-address-pools");
    }
    if pools_loaded() == Some(true) {
        eprintln!("bench scale: the running dockerd has them: run `cargo xtask bench scale`");
    } else {
        eprintln!(
            "bench scale: dockerd reads default-address-pools only at start (SIGHUP does not \
             reload them): restart dockerd when no one else uses the engine, then run \
             `cargo xtask bench scale`"
        );
    }
    Ok(())
}

/// Whether the running dockerd started after daemon.json last changed
/// (so it uses what the file says); `None` when that cannot be told (no
/// local dockerd, no pid file).
fn pools_loaded() -> Option<bool> {
    let changed = std::fs::metadata(DAEMON_JSON).ok()?.modified().ok()?;
    let pid = std::fs::read_to_string("/var/run/docker.pid").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    // field 22, counted after the `(comm)`: start time in clock ticks
    // (USER_HZ, 100 on Linux) since boot
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let started = std::time::UNIX_EPOCH + Duration::from_secs(btime + ticks / 100);
    Some(started >= changed)
}

/// The pools the engine allocates from, and where they come from.
fn engine_pools() -> (Vec<Pool>, String) {
    let cfg = std::fs::read_to_string(DAEMON_JSON)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    match cfg.as_ref().and_then(configured_pools) {
        Some(p) if pools_loaded() != Some(false) => (p, format!("`default-address-pools` of {DAEMON_JSON}")),
        Some(_) => (
            default_pools(),
            format!("docker's defaults ({DAEMON_JSON} sets pools the running dockerd has not loaded: it reads them at start)"),
        ),
        None => (default_pools(), "docker's defaults".into()),
    }
}

/// Networks on the engine with a subnet from `pools`, and how many the
/// pools hold.
fn pool_use(pools: &[Pool]) -> (usize, usize) {
    let names: Vec<String> = docker(&["network", "ls", "--format", "{{.Name}}"])
        .1
        .lines()
        .map(str::to_owned)
        .collect();
    let (subs, _) = subnets(&names);
    let used = subs
        .iter()
        .filter(|s| pools.iter().any(|p| p.holds(s)))
        .count();
    (used, pools.iter().map(Pool::networks).sum())
}

struct Row {
    count: usize,
    /// What was asked for, when it was capped to spare other users.
    asked: usize,
    started: usize,
    wall: Duration,
    start_p50: Duration,
    start_max: Duration,
    bundle_mib: f64,
    agent_mib: f64,
    engine_kib_delta: i64,
    engine_procs_delta: i64,
    avail_kib_delta: i64,
    networks: usize,
    prefixes: String,
    addresses: u64,
    ls: Duration,
    ls_max: Duration,
    failure: Option<String>,
    /// The agents' runtime (runsc where gVisor works).
    runtime: String,
}

fn one_count(run: &Run, agent: &str, count: usize, parallel: usize) -> Result<Row, String> {
    eprintln!("bench scale: {count} bottle(s), {parallel} launches at a time …");
    let (rss0, procs0) = engine_kib();
    let avail0 = mem_available_kib();
    let next = Mutex::new(0usize);
    let ids = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.min(count) {
            s.spawn(|| loop {
                {
                    let mut n = next.lock().unwrap();
                    if *n >= count {
                        return;
                    }
                    *n += 1;
                }
                let ts = Instant::now();
                match run.bottle(&["start", agent, "--yes", "--detach"]) {
                    Ok(id) => ids.lock().unwrap().push((id, ts.elapsed())),
                    Err(e) => errors.lock().unwrap().push(e),
                }
            });
        }
    });
    let wall = t.elapsed();
    let ids = ids.into_inner().unwrap();
    let errors = errors.into_inner().unwrap();
    // settle: let the sidecars finish their start-up allocations
    std::thread::sleep(Duration::from_secs(2));
    let containers = run.objects("container");
    let (bundle, agent) = container_mem(&containers);
    let runtime = containers
        .iter()
        .find(|c| c.ends_with("-agent"))
        .map(|c| docker(&["inspect", "--format", "{{.HostConfig.Runtime}}", c]).1)
        .unwrap_or_default();
    let (rss1, procs1) = engine_kib();
    let avail1 = mem_available_kib();
    let nets = run.objects("network");
    let (subs, addresses) = subnets(&nets);
    let mut prefixes: Vec<String> = subs
        .iter()
        .filter_map(|s| s.split_once('/').map(|(_, p)| format!("/{p}")))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    let mut ls = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        run.bottle(&["ls"])?;
        ls.push(t.elapsed());
    }
    let ls_max = *ls.iter().max().unwrap();
    // remove, `parallel` at a time
    let queue = Mutex::new(ids.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    return;
                };
                if let Err(e) = run.bottle(&["rm", "-f", &id]) {
                    eprintln!("bench scale: rm {id}: {e}");
                }
            });
        }
    });
    let left = run.sweep();
    if !left.is_empty() {
        return Err(format!("could not remove {left:?}"));
    }
    let started = ids.len();
    let mut times: Vec<Duration> = ids.iter().map(|(_, d)| *d).collect();
    let per = |v: f64| {
        if started == 0 {
            0.0
        } else {
            v / started as f64
        }
    };
    let failure = errors.first().map(|e| {
        let line = e
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or(e.lines().next().unwrap_or(""));
        format!("{} of {count} failed; first: {}", errors.len(), line.trim())
    });
    Ok(Row {
        count,
        asked: count,
        started,
        wall,
        start_p50: if times.is_empty() {
            Duration::ZERO
        } else {
            median(&mut times)
        },
        start_max: times.iter().max().copied().unwrap_or_default(),
        bundle_mib: per(bundle),
        agent_mib: per(agent),
        engine_kib_delta: (rss1 as i64 - rss0 as i64) / started.max(1) as i64,
        engine_procs_delta: procs1 as i64 - procs0 as i64,
        avail_kib_delta: (avail0 as i64 - avail1 as i64) / started.max(1) as i64,
        networks: nets.len(),
        prefixes: prefixes.join(", "),
        addresses,
        ls: median(&mut ls),
        ls_max,
        failure,
        runtime,
    })
}

/// Bottle's default subnet range (bottle-docker's `subnet::DEFAULT_POOL`;
/// README "Networks and subnets"): 4096 `/28`s.
const BOTTLE_RANGE: &str = "10.211.0.0/16";

/// What the limits paragraph is computed from.
struct Limits<'a> {
    /// `BOTTLE_SUBNET_MODE` of the run.
    subnet_mode: &'a str,
    pools_from: &'a str,
    capacity: usize,
    used_at_start: usize,
    /// The count with the most bottles up.
    biggest: Option<&'a Row>,
    avail_at_start_kib: u64,
    /// Launches at a time.
    parallel: usize,
}

/// What limits the count, from this run's numbers, and how to raise it.
fn limits(l: &Limits) -> String {
    let fits = l.capacity.saturating_sub(l.used_at_start) / 2;
    let range = std::env::var("BOTTLE_SUBNET_POOL").unwrap_or_else(|_| BOTTLE_RANGE.to_owned());
    let range_bottles = range
        .split_once('/')
        .and_then(|(_, p)| p.parse::<u32>().ok())
        .filter(|p| *p <= 28)
        .map(|p| (1u64 << (28 - p)) / 2)
        .unwrap_or(0);
    let mut text = if l.subnet_mode == "off" {
        format!(
            "What limits the count: each bottle takes two docker networks (the internal one, \
             the egress one), and with `BOTTLE_SUBNET_MODE=off` docker gives every network a \
             subnet from its address pools. This engine allocated from {}: {} networks, {} of \
             them in use when the run began, room for {fits} bottles. The next start fails at \
             `create internal network` with \"could not find an available, non-overlapping IPv4 \
             address pool\" and rolls back. Leave `BOTTLE_SUBNET_MODE` unset (`fallback`) and \
             bottle takes `/28`s from its own range ({range}) once the pools are exhausted; or \
             give docker more pools (`cargo xtask bench scale --configure-pools` merges \
             `{{\"base\": \"{BENCH_POOL}\", \"size\": 24}}` into `{DAEMON_JSON}`; dockerd reads \
             pools only when it starts, so it needs a restart, which the bench never does to a \
             shared engine).",
            l.pools_from, l.capacity, l.used_at_start,
        )
    } else {
        format!(
            "What limits the count: no longer addresses. Each bottle takes two docker networks; \
             docker's own address pools ({}: {} networks, {} of them in use when the run began) \
             hold about {fits} bottles, and past them bottle creates each network with \
             `--subnet`, a `/28` of its own range ({range}: {range_bottles} bottles) that overlaps \
             no docker network and no route of the host (README \"Networks and subnets\"). This \
             run used {}. A wider `BOTTLE_SUBNET_POOL` (a private range nothing else here uses; \
             a /15 holds twice as many) raises that; neither daemon.json nor a dockerd restart \
             is needed.",
            l.pools_from,
            l.capacity,
            l.used_at_start,
            if l.subnet_mode == "always" {
                "`BOTTLE_SUBNET_MODE=always`: every network came from bottle's range, so the run \
                 left docker's pools to the engine's other users (it is shared with other work)"
            } else {
                "bottle's default, `fallback`: docker's pools first, bottle's range once they \
                 were exhausted (for the run's duration the engine's other users had no pool \
                 left)"
            },
        )
    };
    if let Some(r) = l.biggest.filter(|r| r.started > 0) {
        let per_mib = r.bundle_mib + r.agent_mib + r.engine_kib_delta.max(0) as f64 / 1024.0;
        let avail_mib = l.avail_at_start_kib as f64 / 1024.0;
        if per_mib > 0.0 {
            text.push_str(&format!(
                " Beyond addresses, memory: at {} bottles one costs {per_mib:.0} MiB (bundle + idle \
                 agent + engine growth, PSS), so the {avail_mib:.0} MiB available when the run \
                 began hold about {:.0} idle bottles; a working agent grows up to its own limit \
                 (1 GiB here: a cap, not a reservation), so for working agents memory is the \
                 limit, and adding RAM (or lower `[resources] memory`) raises it. The engine \
                 is next: every bottle adds {:.1} engine processes (shims, fuse-overlayfs \
                 mounts here). Start time is CPU: with {} launches at a time on this machine \
                 the {} bottles took {:.1} s to all be ready ({:.1} s each, one start p50 {:.1} \
                 s), which more CPUs (and `--parallel`) shorten; it limits how fast, not how \
                 many.",
                r.started,
                avail_mib / per_mib,
                r.engine_procs_delta as f64 / r.started as f64,
                l.parallel,
                r.started,
                r.wall.as_secs_f64(),
                r.wall.as_secs_f64() / r.started as f64,
                r.start_p50.as_secs_f64(),
            ));
        }
    }
    text
}

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut counts = vec![1usize, 8, 24];
    let mut parallel = 4usize;
    let mut headroom = 4usize;
    let mut subnet_mode = "always".to_owned();
    let mut write = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--counts" => {
                counts = it
                    .next()
                    .ok_or("--counts needs a list, e.g. 1,8,24")?
                    .split(',')
                    .map(|n| n.trim().parse().ok().filter(|&n: &usize| n > 0))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("--counts needs positive numbers, e.g. 1,8,24")?
            }
            "--parallel" => {
                parallel = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--parallel needs a positive number")?
            }
            "--headroom" => {
                headroom = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--headroom needs a number of networks")?
            }
            "--subnet-mode" => {
                subnet_mode = it
                    .next()
                    .filter(|m| ["always", "fallback", "off"].contains(&m.as_str()))
                    .ok_or("--subnet-mode needs always, fallback or off")?
                    .clone()
            }
            "--no-write" => write = false,
            "--configure-pools" => return configure_pools(),
            other => return Err(format!("bench scale: unknown argument `{other}`")),
        }
    }
    if !docker(&["info"]).0 {
        return Err("bench scale needs a docker engine (`docker info` failed)".into());
    }
    if !docker(&["image", "inspect", crate::seed_base::BASE_TAG]).0 {
        crate::seed_base::run(&["--base-only".into()])?;
    }
    let (bottle, sidecar) = crate::bench_start::build_release()?;
    let pid = std::process::id();
    let home = std::env::temp_dir().join(format!("bottle-bench-scale-{pid}"));
    // identities are `<agent>-<bottle>-<random>`: every docker object of
    // this run starts with `bottle-s<pid>-scale-`
    let agent = format!("s{pid}");
    let prefix = format!("bottle-{agent}-scale-");
    for d in ["bottles", "agents"] {
        std::fs::create_dir_all(home.join(d)).map_err(|e| e.to_string())?;
    }
    watchdog(&prefix, &home);
    std::fs::write(
        home.join("bottles/scale.toml"),
        "[agent_provider]\ntemplate = \"shell\"\n\n[[egress.routes]]\nhost = \"api.bench.test\"\n\n[resources]\ncpus = 1.0\nmemory = \"1GiB\"\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        home.join(format!("agents/{agent}.toml")),
        "bottle = \"scale\"\n",
    )
    .map_err(|e| e.to_string())?;
    let bottle_copy = home.join("bottle");
    let sidecar_copy = home.join("bottle-sidecar");
    std::fs::copy(&bottle, &bottle_copy).map_err(|e| format!("copy bottle: {e}"))?;
    std::fs::copy(&sidecar, &sidecar_copy).map_err(|e| format!("copy bottle-sidecar: {e}"))?;
    let run = Run {
        home,
        bottle: bottle_copy,
        sidecar: sidecar_copy,
        prefix,
        subnet_mode: subnet_mode.clone(),
    };
    eprintln!("bench scale: warm-up (builds images once) …");
    let id = run.bottle(&["start", &agent, "--yes", "--detach"])?;
    run.bottle(&["rm", "-f", &id])?;
    let load_start = loadavg();
    let others = docker(&["network", "ls", "--format", "{{.Name}}"])
        .1
        .lines()
        .count();
    let mut rows = Vec::new();
    let mut pool_note = String::new();
    let (pools, pools_from) = engine_pools();
    let (used_at_start, capacity) = pool_use(&pools);
    let avail_at_start = mem_available_kib();
    for &n in &counts {
        let (used, capacity) = pool_use(&pools);
        let fits = capacity.saturating_sub(used) / 2;
        let spare = capacity.saturating_sub(used + headroom) / 2;
        // docker's pools cap a count only when bottle may not go past them
        let take = if subnet_mode == "off" {
            n.min(spare)
        } else {
            n
        };
        if take < n {
            pool_note.push_str(&format!(
                "\n- {n} bottles asked: the pools had {used} of {capacity} networks in use, room \
                 for {fits} bottles; capped at {take} to leave {headroom} networks to the \
                 engine's other users.",
            ));
        }
        if take == 0 {
            continue;
        }
        let mut row = one_count(&run, &agent, take, parallel)?;
        row.asked = n;
        rows.push(row);
    }
    let load_end = loadavg();
    let mut table = String::from(
        "| bottles | started | wall to all ready | one start p50 / max | bundle MiB / bottle | agent MiB / bottle | engine Δ / bottle | MemAvailable Δ / bottle | networks (subnets) | addresses | `bottle ls` p50 / max |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for r in &rows {
        let count = if r.asked == r.count {
            r.count.to_string()
        } else {
            format!("{} (asked {})", r.count, r.asked)
        };
        table.push_str(&format!(
            "| {} | {} | {:.1} s | {:.0} / {:.0} ms | {:.1} | {:.1} | {:.1} MiB ({:+} processes) | {:.1} MiB | {} ({}) | {} | {:.0} / {:.0} ms |\n",
            count,
            r.started,
            r.wall.as_secs_f64(),
            ms(r.start_p50),
            ms(r.start_max),
            r.bundle_mib,
            r.agent_mib,
            r.engine_kib_delta as f64 / 1024.0,
            r.engine_procs_delta,
            r.avail_kib_delta as f64 / 1024.0,
            r.networks,
            r.prefixes,
            r.addresses,
            ms(r.ls),
            ms(r.ls_max),
        ));
    }
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("- {} bottles: {f}", r.count))
        })
        .collect();
    let largest = rows
        .iter()
        .filter(|r| r.failure.is_none())
        .map(|r| r.started)
        .max()
        .unwrap_or(0);
    let most_started = rows.iter().map(|r| r.started).max().unwrap_or(0);
    let runtime = rows
        .iter()
        .map(|r| r.runtime.as_str())
        .find(|r| !r.is_empty())
        .unwrap_or("?");
    let limits = limits(&Limits {
        subnet_mode: &subnet_mode,
        pools_from: &pools_from,
        capacity,
        used_at_start,
        biggest: rows.iter().max_by_key(|r| r.started),
        avail_at_start_kib: avail_at_start,
        parallel,
    });
    let section = format!(
        "## scale\n\nCost per bottle at scale: for each count, that many shell-template bottles \
         (one route, 1 CPU / 1 GiB limits) started with `bottle start --detach`, {parallel} \
         launches at a time, then measured once all were ready, then removed; the agents ran \
         under {runtime}; networks with `BOTTLE_SUBNET_MODE={subnet_mode}`. Memory is \
         proportional set size (PSS: a shared page counts once, split among its users): the \
         bundle and the agent = every process under the container's containerd shim (for a runsc \
         agent the gVisor sandbox and gofer; idle shell agent); engine = dockerd, containerd, the \
         shims, fuse-overlayfs (the storage driver here), growth divided by the bottles; \
         MemAvailable is the whole host's, noisy on a shared machine. `bottle ls` runs 5 times at each count. Release \
         builds. Machine: {}, docker {}; load average (1/5/15 min) {load_start} at the start, \
         {load_end} at the end (shared with other builds); {others} networks existed on the \
         engine when the run began (other users included).\n\n{}\n{}\n\n\
         Largest count that started completely in this run: {largest} (most bottles up at once: \
         {most_started}).\n\n\
         {limits}",
        machine(),
        docker(&["version", "--format", "{{.Server.Version}}"]).1,
        table.trim_end(),
        if failures.is_empty() {
            pool_note
        } else {
            format!("\n{}{pool_note}", failures.join("\n"))
        },
    );
    println!("{section}");
    if write {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("no workspace root")?;
        let path = root.join("docs/benchmarks.md");
        write_section(&path, "scale", &section)?;
        eprintln!("bench scale: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_count_and_hold_their_subnets() {
        assert_eq!(
            default_pools().iter().map(Pool::networks).sum::<usize>(),
            31
        );
        let p = Pool::parse("10.220.0.0/16", 24).unwrap();
        assert_eq!(p.networks(), 256);
        assert!(p.holds("10.220.7.0/24"));
        assert!(!p.holds("10.221.0.0/24"));
        assert!(
            !p.holds("10.0.0.0/8"),
            "a wider subnet is not inside the pool"
        );
        assert!(!p.holds("fd00::/64"));
        assert!(Pool::parse("10.0.0.0/24", 16).is_none());
        assert_eq!(p.json()["base"], "10.220.0.0/16");
    }

    #[test]
    fn merging_keeps_other_keys_and_is_idempotent() {
        let mut cfg = serde_json::json!({
            "runtimes": {"runsc": {"path": "/usr/bin/runsc"}},
            "default-address-pools": [{"base": "10.9.0.0/16", "size": 24}],
        });
        assert!(merge_pools(&mut cfg));
        assert_eq!(cfg["runtimes"]["runsc"]["path"], "/usr/bin/runsc");
        assert_eq!(configured_pools(&cfg).unwrap(), bench_pools());
        assert!(!merge_pools(&mut cfg), "a second merge changes nothing");
        let mut empty = serde_json::Value::Null;
        assert!(merge_pools(&mut empty));
        assert_eq!(configured_pools(&empty).unwrap(), bench_pools());
    }
}
