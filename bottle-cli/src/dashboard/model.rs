//! What the dashboard shows, and where it comes from.
//!
//! A [`Snapshot`] is plain data; [`collect`] builds one from the home
//! (metadata, queues, audit logs) and the backends. Collection runs on a
//! background thread so a slow engine never blocks the screen.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, SystemTime};

use bottle_core::{CommandRunner, Health, Home};
use bottle_host::supervise::{queue, sv_path, Request, Status, SvConfig};

/// One bottle row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BottleRow {
    /// Identity.
    pub identity: String,
    /// Agent name.
    pub agent: String,
    /// Backend id.
    pub backend: String,
    /// running / stopped / degraded / launching / unknown.
    pub state: String,
    /// Age, e.g. `5m`.
    pub age: String,
    /// Pending requests.
    pub pending: usize,
}

/// One pending (or recent) permission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// Bottle identity.
    pub identity: String,
    /// The request.
    pub request: Request,
    /// How long an approval lasts (the bottle's `grant_ttl`).
    pub grant_ttl: Duration,
}

/// What approving `q` as asked grants, in words: host, port, paths and
/// methods of a route, or the remote and ref pattern of a push, or the
/// capability; and for how long.
pub fn grant_text(q: &QueueRow) -> String {
    use bottle_host::supervise::RequestKind;
    let all = |v: &[String], what: &str| {
        if v.is_empty() {
            format!("all {what}")
        } else {
            v.join(" ")
        }
    };
    let what = match &q.request.kind {
        RequestKind::Egress {
            host,
            port,
            paths,
            methods,
            allow_private,
        } => format!(
            "egress to {host}{} paths {} methods {}{}",
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            all(paths, "paths"),
            all(methods, "methods"),
            if *allow_private {
                " (private addresses allowed)"
            } else {
                ""
            }
        ),
        RequestKind::GitPush {
            remote,
            ref_pattern,
        } => format!("git push to {remote} refs {ref_pattern}"),
        RequestKind::Capability { kind, detail } => {
            format!("capability {kind}: {detail} (applied on resume)")
        }
    };
    let ttl = humantime::format_duration(q.grant_ttl).to_string();
    format!("{what}, for {ttl}")
}

/// One audit decision line, flattened for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRow {
    /// `HH:MM:SS`.
    pub time: String,
    /// Full timestamp, for ordering.
    pub ts: String,
    /// Bottle identity.
    pub identity: String,
    /// egress / git-gate / supervise.
    pub sidecar: String,
    /// allow / deny / …
    pub decision: String,
    /// `GET host/path`, refs, or the event.
    pub what: String,
}

/// Everything on screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bottles.
    pub bottles: Vec<BottleRow>,
    /// Pending requests.
    pub queue: Vec<QueueRow>,
    /// Latest decisions, oldest first.
    pub decisions: Vec<DecisionRow>,
    /// A problem collecting (shown in the status line).
    pub problem: Option<String>,
}

/// Format an age.
pub fn age(since: SystemTime, now: SystemTime) -> String {
    let s = now
        .duration_since(since)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Last `max` lines of a file (reads at most the last 64 KiB).
fn tail_lines(path: &std::path::Path, max: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let lines: Vec<String> = buf
        .lines()
        .skip(usize::from(start > 0))
        .map(str::to_owned)
        .collect();
    lines[lines.len().saturating_sub(max)..].to_vec()
}

/// The last six characters of a request id's random part (what the
/// requests table shows).
pub fn short_id(id: &str) -> String {
    id.rsplit('-')
        .next()
        .unwrap_or(id)
        .chars()
        .take(6)
        .collect()
}

/// Flatten one audit JSON line.
pub fn decision_row(line: &str) -> Option<DecisionRow> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let ts = s("ts");
    let time = ts.get(11..19).unwrap_or("").to_owned();
    let what = if !s("host").is_empty() {
        format!("{} {}{}", s("method"), s("host"), s("path"))
    } else if !s("remote").is_empty() {
        let refs = v
            .get("refs")
            .and_then(|r| r.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        format!("{} {} {}", s("op"), s("remote"), refs)
            .trim()
            .to_owned()
    } else if let Some(grant) = v
        .get("grant")
        .and_then(|g| serde_json::from_value::<bottle_host::supervise::RequestKind>(g.clone()).ok())
    {
        // an approval: what it granted, and until when
        let until = s("expires_at");
        format!(
            "{} until {}",
            grant.summary(),
            until.get(11..19).unwrap_or(&until)
        )
    } else if s("event") == "decision" {
        format!("{} ({})", s("kind"), short_id(&s("id")))
    } else {
        let ev = s("event");
        let id = s("id");
        format!("{ev} {id}").trim().to_owned()
    };
    let mut decision = s("decision");
    if decision.is_empty() {
        decision = "-".into();
    }
    Some(DecisionRow {
        time,
        ts,
        identity: s("identity"),
        sidecar: s("sidecar"),
        decision,
        what,
    })
}

/// Collect a snapshot. `health` is asked per launched bottle (the slow part).
pub fn collect(
    home: &Home,
    health: &dyn Fn(&bottle_core::Metadata, &bottle_core::StateDir) -> Option<Health>,
) -> Snapshot {
    let now = SystemTime::now();
    let mut snap = Snapshot::default();
    let ids = match home.identities() {
        Ok(ids) => ids,
        Err(e) => {
            snap.problem = Some(e.to_string());
            return snap;
        }
    };
    let mut decisions = Vec::new();
    for id in ids {
        let st = home.state(&id);
        let dir = st.path().as_std_path();
        let requests = queue::list(dir).unwrap_or_default();
        let grant_ttl = SvConfig::load(&sv_path(dir)).unwrap_or_default().grant_ttl;
        let pending: Vec<Request> = requests
            .into_iter()
            .filter(|r| r.status == Status::Pending)
            .collect();
        for line in tail_lines(st.audit_path().as_std_path(), 50) {
            if let Some(d) = decision_row(&line) {
                decisions.push(d);
            }
        }
        let row = match st.read_metadata() {
            Ok(meta) => {
                let state = match meta.phase {
                    bottle_core::state::Phase::Stopped => "stopped".to_owned(),
                    bottle_core::state::Phase::Launching => "launching".to_owned(),
                    bottle_core::state::Phase::Running => match health(&meta, &st) {
                        Some(Health::Running) => "running".into(),
                        Some(Health::Degraded) => "degraded".into(),
                        Some(Health::Stopped) => "stopped".into(),
                        None => "unknown".into(),
                    },
                };
                let created = humantime::parse_rfc3339_weak(&meta.created).unwrap_or(now);
                BottleRow {
                    identity: id.to_string(),
                    agent: meta.agent,
                    backend: meta.backend,
                    state,
                    age: age(created, now),
                    pending: pending.len(),
                }
            }
            Err(_) => BottleRow {
                identity: id.to_string(),
                agent: "?".into(),
                backend: "?".into(),
                state: "broken".into(),
                age: "-".into(),
                pending: pending.len(),
            },
        };
        snap.bottles.push(row);
        snap.queue.extend(pending.into_iter().map(|r| QueueRow {
            identity: id.to_string(),
            request: r,
            grant_ttl,
        }));
    }
    decisions.sort_by(|a, b| a.ts.cmp(&b.ts));
    let n = decisions.len();
    snap.decisions = decisions.split_off(n.saturating_sub(200));
    snap
}

/// What one snapshot knows of a backend's engine: whether it answered, and
/// every bottle's health from one question where the backend can say.
type EngineView = (bool, Option<BTreeMap<String, Health>>);

/// The real health probe for one snapshot: each backend's engine is asked
/// once whether it answers and once for all its bottles
/// (`Backend::health_of_all`, as `bottle ls` does), so a refresh costs two
/// engine calls however many bottles run (docs/benchmarks.md "scale"); a
/// bottle's own handle is asked only where a backend cannot say for all.
/// An engine that does not answer makes its bottles unknown (`None`).
pub fn backend_health(
    runner: &dyn CommandRunner,
) -> impl Fn(&bottle_core::Metadata, &bottle_core::StateDir) -> Option<Health> + '_ {
    let engines: std::cell::RefCell<BTreeMap<String, EngineView>> = Default::default();
    move |meta, st| {
        let backend = crate::registry::get(&meta.backend).ok()?;
        let mut engines = engines.borrow_mut();
        let (answers, all) = engines.entry(meta.backend.clone()).or_insert_with(|| {
            let answers = backend.engine_answers(runner);
            let all = answers.then(|| backend.health_of_all(runner)).flatten();
            (answers, all)
        });
        if !*answers {
            return None;
        }
        match all {
            Some(all) => Some(all.get(&meta.identity).copied().unwrap_or(Health::Stopped)),
            None => backend.handle(meta, st).health(runner).ok(),
        }
    }
}

/// Request ids that were not in `seen`; adds them.
pub fn new_requests(snap: &Snapshot, seen: &mut BTreeSet<String>) -> Vec<QueueRow> {
    snap.queue
        .iter()
        .filter(|q| seen.insert(q.request.id.clone()))
        .cloned()
        .collect()
}
