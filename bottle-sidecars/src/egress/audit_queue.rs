//! The egress audit queue: a decision leaves the request path as a small
//! struct on a bounded channel; one writer thread turns queued decisions
//! into JSONL lines and appends each batch with one locked write
//! ([`AuditLog::record_batch`]): woken by the first queued line, it lets
//! lines gather for 5 ms and appends them all, so a busy proxy pays no
//! wake-up per request and one write per batch.
//!
//! Nothing is lost on exit: dropping the last [`AuditQueue`] handle (the
//! daemon stopping: its runtime drops every task, or `bottle-sidecar
//! egress` got SIGTERM/SIGINT) closes the channel, and the drop waits for
//! the writer to append every queued line. A full queue makes the request
//! path wait for the writer (the bound is memory, never a dropped line).
//! Lines keep the time of the decision, not of the write.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::audit::AuditLog;

/// Decisions queued at most before the request path waits for the writer.
const QUEUE: usize = 16 << 10;
/// Lines appended with one write at most.
const BATCH: usize = 512;
/// How long the writer lets lines gather after the first one (the most a
/// line waits before it is appended).
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// One egress decision (names and counts only: never a value, body, query
/// or header value).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// The rule that decided.
    pub rule: String,
    /// Request method (`CONNECT`, `WEBSOCKET`, ...).
    pub method: String,
    /// Host (redacted when secret-shaped).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path (redacted when secret-shaped; never the query).
    pub path: String,
    /// Status sent to the agent (0: none).
    pub status: u16,
    /// Body bytes delivered to the agent.
    pub bytes: u64,
    /// When the request started (for `ms`).
    pub t0: Instant,
}

/// A queued line's fields, serialised after `ts`, `identity` and `sidecar`.
#[derive(Serialize)]
#[serde(untagged)]
enum Fields {
    Decision(Row),
    Event(Value),
}

/// A decision as written: [`Line`] with `ms` instead of the start instant.
#[derive(Serialize)]
struct Row {
    decision: &'static str,
    rule: String,
    method: String,
    host: String,
    port: u16,
    path: String,
    status: u16,
    bytes: u64,
    ms: u64,
}

type Entry = (SystemTime, Fields);

/// A cloneable handle on the egress audit writer.
#[derive(Clone)]
pub(crate) struct AuditQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed, or when the writer thread could not start.
    tx: Option<SyncSender<Entry>>,
    writer: Option<JoinHandle<()>>,
    /// Where lines go when the writer thread could not start.
    log: AuditLog,
}

impl std::fmt::Debug for AuditQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditQueue").finish_non_exhaustive()
    }
}

impl AuditQueue {
    /// Start the writer thread for `log`.
    pub(crate) fn start(log: AuditLog) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let writer_log = log.clone();
        let writer = std::thread::Builder::new()
            .name("egress-audit".into())
            .spawn(move || write_loop(&writer_log, rx));
        let (tx, writer) = match writer {
            Ok(h) => (Some(tx), Some(h)),
            Err(e) => {
                // Fail safe: every line is written on the request path.
                tracing::warn!(error = %e, "no audit writer thread; writing audit lines inline");
                (None, None)
            }
        };
        Self {
            inner: Arc::new(Inner { tx, writer, log }),
        }
    }

    /// Queue one decision line.
    pub(crate) fn decision(&self, line: Line) {
        let row = Row {
            decision: line.decision,
            rule: line.rule,
            method: line.method,
            host: line.host,
            port: line.port,
            path: line.path,
            status: line.status,
            bytes: line.bytes,
            ms: line.t0.elapsed().as_millis() as u64,
        };
        self.send((SystemTime::now(), Fields::Decision(row)));
    }

    /// Queue one event line (`fields` a JSON object, as [`AuditLog::record`]).
    pub(crate) fn event(&self, fields: Value) {
        self.send((SystemTime::now(), Fields::Event(fields)));
    }

    fn send(&self, entry: Entry) {
        let entry = match &self.inner.tx {
            Some(tx) => match tx.try_send(entry) {
                Ok(()) => return,
                // Full: wait for the writer (backpressure, never a lost line).
                Err(TrySendError::Full(e)) => match tx.send(e) {
                    Ok(()) => return,
                    Err(back) => back.0,
                },
                Err(TrySendError::Disconnected(e)) => e,
            },
            None => entry,
        };
        self.inner.log.record_batch("egress", [entry]);
    }
}

impl Drop for Inner {
    /// The last handle is gone: close the channel and wait until the writer
    /// appended every queued line.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            if h.join().is_err() {
                tracing::error!("the audit writer thread panicked");
            }
        }
    }
}

fn write_loop(log: &AuditLog, rx: Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    // Parked while nothing is queued: the first line wakes the writer.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Then let lines gather for a moment: while the writer sleeps here,
        // queueing a line costs the request path no wake-up (no syscall),
        // and the append below takes all of them at once.
        std::thread::sleep(GATHER);
        loop {
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let full = batch.len() == BATCH;
            log.record_batch("egress", batch.drain(..));
            if !full {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn line(i: usize) -> Line {
        Line {
            decision: "deny",
            rule: "no-route".into(),
            method: "GET".into(),
            host: format!("h{i}.test"),
            port: 443,
            path: "/".into(),
            status: 403,
            bytes: 0,
            t0: Instant::now(),
        }
    }

    #[test]
    fn dropping_the_last_handle_waits_for_every_queued_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "q").unwrap();
        // Hold the log's lock: the writer cannot append until it is let go.
        let lock = std::fs::File::open(dir.path().join("audit.jsonl.lock")).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let queue = AuditQueue::start(log);
        let other = queue.clone();
        for i in 0..100 {
            queue.decision(line(i));
        }
        other.event(serde_json::json!({"event": "reload", "decision": "ok"}));
        drop(queue);
        // A clone is still alive: nothing may have been lost or closed.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(lock);
        });
        drop(other);
        // The last drop returned: every line is in the file, in order.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("whole JSON line"))
            .collect();
        assert_eq!(lines.len(), 101, "{text}");
        for (i, l) in lines[..100].iter().enumerate() {
            assert_eq!(l["host"], format!("h{i}.test"));
            assert_eq!(l["sidecar"], "egress");
            assert_eq!(l["identity"], "q");
            assert_eq!(l["status"], 403);
            assert!(l["ms"].is_u64() && l["ts"].is_string());
        }
        assert_eq!(lines[100]["event"], "reload");
        release.join().unwrap();
    }
}
