//! `bottle dashboard`: bottles, a live tail of egress/git decisions, and the
//! permission queue with approve / approve-narrowed / deny keys.
//!
//! [`App`] is the whole UI state ([`app`]); its keys are handled in [`keys`]
//! and it is rendered by [`App::draw`] ([`view`], tested against ratatui's
//! `TestBackend`). Data arrives from a background collector thread as
//! [`model::Snapshot`]s, so a slow engine never blocks input; actions go
//! through the [`Operator`] trait, whose real impl is in [`actions`] (the
//! one module that runs start/resume/logs/stop/rm, in-process through
//! `bottle_lifecycle`).

pub mod actions;
pub mod app;
pub mod keys;
pub mod model;
pub mod text;
pub mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind};

pub use actions::{CliOperator, Done, Operator};
pub use app::{App, Mode};
use model::Snapshot;

/// Best-effort desktop notification (silent when the host has no notifier).
fn notify(summary: &str, body: &str) {
    let _ = std::process::Command::new("notify-send")
        .args(["--app-name=bottle", summary, body])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Run the dashboard until the operator quits.
pub fn run(home: bottle_core::Home) -> bottle_core::Result<()> {
    let (tx, rx) = mpsc::channel::<Snapshot>();
    let collector_home = home.clone();
    std::thread::spawn(move || loop {
        let snap = model::collect(
            &collector_home,
            &model::backend_health(&bottle_core::DuctRunner),
        );
        if tx.send(snap).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    });
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let log_dir = home.root().join("logs");
    let op = CliOperator::new(home, done_tx);
    let mut app = App::default();
    let mut seen = BTreeSet::new();
    let mut first = true;
    let trace = std::fs::create_dir_all(&log_dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join("dashboard.log"))
    });
    if let (Ok(f), Ok(mut to)) = (trace, crate::TRACE_FILE.lock()) {
        *to = Some(f);
    }
    let mut terminal = ratatui::init();
    // the logs pane refreshes every 2 s while open, one fetch at a time
    let mut logs_asked = Instant::now();
    let result = (|| -> std::io::Result<()> {
        loop {
            while let Ok(snap) = rx.try_recv() {
                for q in model::new_requests(&snap, &mut seen) {
                    if !first {
                        notify(
                            "bottle: permission request",
                            &format!("{}: {}", q.identity, q.request.kind.summary()),
                        );
                    }
                }
                first = false;
                app.update(snap);
            }
            while let Ok(d) = done_rx.try_recv() {
                app.on_done(d);
            }
            if let Mode::Logs(id) = &app.mode {
                if logs_asked.elapsed() > Duration::from_secs(2) {
                    let stopped = app
                        .snap
                        .bottles
                        .iter()
                        .any(|b| &b.identity == id && b.state == "stopped");
                    let _ = op.logs(id, stopped);
                    logs_asked = Instant::now();
                }
            }
            if let Some(id) = app.shell.take() {
                // hand the terminal over to the shell, then take it back
                ratatui::restore();
                let r = op.shell(&id);
                terminal = ratatui::init();
                terminal.clear()?;
                app.report(r);
            }
            terminal.draw(|f| app.draw(f))?;
            if event::poll(Duration::from_millis(200))? {
                if let Event::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press {
                        if matches!(app.mode, Mode::Normal) && k.code == KeyCode::Char('l') {
                            logs_asked = Instant::now();
                        }
                        if app.on_key(k, &op) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    })();
    ratatui::restore();
    // A start or resume still launching finishes (or, on Ctrl-C, rolls
    // back) before the process ends: nothing is left half made.
    if op.busy() > 0 {
        eprintln!(
            "waiting for {} operation(s) to finish (Ctrl-C stops a launch and removes what it made)",
            op.busy()
        );
        op.wait();
    }
    if let Ok(mut to) = crate::TRACE_FILE.lock() {
        *to = None;
    }
    result.map_err(|e| {
        bottle_core::Error::other(format!("terminal: {e}"), "run the dashboard in a terminal")
    })
}
