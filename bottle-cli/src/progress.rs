//! Progress of long, multi-step work (launch, image builds) on stderr.
//!
//! Three modes:
//! - [`Mode::Bar`] (stderr is a terminal, not `--quiet`, not `--verbose`):
//!   an indicatif spinner names the step that is running with its elapsed
//!   time, and every finished step is printed above it as a plain line;
//! - [`Mode::Plain`] (stderr is not a terminal, or `--verbose`): one line per
//!   finished step, `[k/N] name (ms)` — tests and the fault suite parse these
//!   lines from a pipe, so their format is fixed ([`step_line`]);
//! - [`Mode::Quiet`] (`--quiet`): nothing.
//!
//! The backend reports a step *after* it finished (index, total, name,
//! cached), so the bar learns the next step's name from the list given to
//! [`Steps::new`] (or shows "step k+1" when it has none).
//!
//! The bar never reaches the terminal's last columns ([`Stderr`]): Ctrl-C
//! makes the terminal echo `^C` at the cursor, and at the end of a full-width
//! line that wraps onto a new line the bar does not know of, so clearing the
//! bar would clear the wrong line and leave the spinner on screen. And a
//! Ctrl-C that arrives while nobody else handles it (the launch installs its
//! own handler to roll back) clears the bar's line before the default action
//! ends the process ([`clear_then_die`]).

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// While a bar is shown and no one else handles SIGINT/SIGTERM: erase the
/// bar's line, then die of the signal as if unhandled.
extern "C" fn clear_then_die(sig: libc::c_int) {
    const CLEAR: &[u8] = b"\r\x1b[2K";
    // SAFETY: write(2), signal(2) and raise(3) are async-signal-safe; the
    // buffer is a static.
    unsafe {
        libc::write(libc::STDERR_FILENO, CLEAR.as_ptr().cast(), CLEAR.len());
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn clear_then_die_handler() -> libc::sighandler_t {
    clear_then_die as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// Install [`clear_then_die`] where the signal has its default action.
fn arm_clear_on_signal() {
    for sig in SIGNALS {
        // SAFETY: swaps dispositions; an existing handler is put back.
        unsafe {
            let prev = libc::signal(sig, clear_then_die_handler());
            if prev != libc::SIG_DFL {
                libc::signal(sig, prev);
            }
        }
    }
}

/// Put the default action back where [`clear_then_die`] still is.
fn disarm_clear_on_signal() {
    for sig in SIGNALS {
        // SAFETY: as above.
        unsafe {
            let prev = libc::signal(sig, libc::SIG_DFL);
            if prev != clear_then_die_handler() {
                libc::signal(sig, prev);
            }
        }
    }
}

/// Columns the bar leaves free at the end of its line (room for `^C`).
pub const MARGIN: u16 = 4;

/// stderr as the bar's terminal, [`MARGIN`] columns narrower than it is.
#[derive(Debug)]
pub struct Stderr;

impl Stderr {
    fn put(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(s.as_bytes())
    }
}

/// The width of the terminal on stderr (80 when it cannot be asked).
fn columns() -> u16 {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; fd 2 stays open.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col
    } else {
        80
    }
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        columns().saturating_sub(MARGIN).max(20)
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (`--quiet`).
    Quiet,
    /// One `[k/N] name (ms)` line per finished step.
    Plain,
    /// A live spinner naming the running step; finished steps as lines.
    Bar,
}

impl Mode {
    /// The mode for this process: `Quiet` if `quiet`; `Bar` when stderr is
    /// a terminal and debug tracing (`--verbose`) is off (its lines would
    /// tear the bar); `Plain` otherwise.
    pub fn detect(quiet: bool) -> Self {
        Self::choose(
            quiet,
            std::io::stderr().is_terminal(),
            tracing::enabled!(tracing::Level::DEBUG),
        )
    }

    /// The mode for explicit facts (what [`Mode::detect`] decides on).
    pub fn choose(quiet: bool, stderr_is_tty: bool, verbose: bool) -> Self {
        if quiet {
            Mode::Quiet
        } else if stderr_is_tty && !verbose {
            Mode::Bar
        } else {
            Mode::Plain
        }
    }
}

/// The line printed for a finished step (the non-TTY format; fixed).
/// `index` is 0-based.
pub fn step_line(index: usize, total: usize, name: &str, took: Duration, cached: bool) -> String {
    let tag = if cached { ", cached" } else { "" };
    format!(
        "[{}/{}] {name} ({} ms{tag})",
        index + 1,
        total,
        took.as_millis()
    )
}

/// Progress of one run of numbered steps. Pass [`Steps::step_done`] as the
/// backend's progress callback; call [`Steps::finish`] (or drop it) when
/// the work ends, successfully or not, to clear the bar.
pub struct Steps {
    mode: Mode,
    names: Vec<String>,
    last: Cell<Instant>,
    bar: Option<ProgressBar>,
}

impl Steps {
    /// Start showing progress. `names` are the step names in order, if
    /// known (the bar uses them to name the running step).
    pub fn new(mode: Mode, names: Vec<String>) -> Self {
        let bar = (mode == Mode::Bar).then(|| {
            let target = ProgressDrawTarget::term_like_with_hz(Box::new(Stderr), 20);
            let bar = Self::make_bar(target, &names);
            arm_clear_on_signal();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            mode,
            names,
            last: Cell::new(Instant::now()),
            bar,
        }
    }

    fn make_bar(target: ProgressDrawTarget, names: &[String]) -> ProgressBar {
        let total = names.len();
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} [{prefix}] {wide_msg} {elapsed:>4}")
                .expect("valid template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        bar.set_prefix(if total == 0 {
            "1/?".to_owned()
        } else {
            format!("1/{total}")
        });
        bar.set_message(
            names
                .first()
                .map(|n| format!("{n} …"))
                .unwrap_or_else(|| "starting …".to_owned()),
        );
        bar
    }

    /// A bar drawing nowhere (for tests of the bar's state).
    #[cfg(test)]
    fn hidden(names: Vec<String>) -> Self {
        let bar = Self::make_bar(ProgressDrawTarget::hidden(), &names);
        Self {
            mode: Mode::Bar,
            names,
            last: Cell::new(Instant::now()),
            bar: Some(bar),
        }
    }

    /// Step `index` (0-based) of `total` finished (`cached`: nothing to do).
    pub fn step_done(&self, index: usize, total: usize, name: &str, cached: bool) {
        let took = self.last.replace(Instant::now()).elapsed();
        let line = step_line(index, total, name, took, cached);
        match (&self.mode, &self.bar) {
            (Mode::Quiet, _) => {}
            (Mode::Bar, Some(bar)) => {
                bar.println(&line);
                bar.set_length(total as u64);
                bar.set_position((index + 1) as u64);
                let next = index + 1;
                if next >= total {
                    bar.finish_and_clear();
                    return;
                }
                bar.set_prefix(format!("{}/{total}", next + 1));
                let running = match self.names.get(next) {
                    Some(n) if self.names.len() == total => format!("{n} …"),
                    _ => format!("step {} (after {name}) …", next + 1),
                };
                bar.set_message(running);
                bar.reset_elapsed();
            }
            _ => eprintln!("{line}"),
        }
    }

    /// Clear the bar (idempotent). Lines already printed stay.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
            if self.mode == Mode::Bar {
                disarm_clear_on_signal();
            }
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_format_is_fixed() {
        assert_eq!(
            step_line(
                2,
                14,
                "build agent image",
                Duration::from_millis(1234),
                false
            ),
            "[3/14] build agent image (1234 ms)"
        );
        assert_eq!(
            step_line(0, 3, "bundle image", Duration::from_millis(5), true),
            "[1/3] bundle image (5 ms, cached)"
        );
    }

    #[test]
    fn mode_choice() {
        assert_eq!(Mode::choose(true, true, false), Mode::Quiet);
        assert_eq!(Mode::choose(true, false, false), Mode::Quiet);
        assert_eq!(Mode::choose(false, true, false), Mode::Bar);
        assert_eq!(Mode::choose(false, true, true), Mode::Plain);
        assert_eq!(Mode::choose(false, false, false), Mode::Plain);
    }

    #[test]
    fn bar_names_the_running_step_and_clears_at_the_end() {
        let names: Vec<String> = ["network", "build agent image", "agent"]
            .map(String::from)
            .to_vec();
        let s = Steps::hidden(names);
        let bar = s.bar.clone().unwrap();
        assert_eq!(bar.prefix(), "1/3");
        assert_eq!(bar.message(), "network …");
        s.step_done(0, 3, "network", false);
        assert_eq!(bar.prefix(), "2/3");
        assert_eq!(bar.message(), "build agent image …");
        assert_eq!(bar.position(), 1);
        s.step_done(1, 3, "build agent image", true);
        assert_eq!(bar.message(), "agent …");
        s.step_done(2, 3, "agent", false);
        assert!(bar.is_finished());
        s.finish();
    }

    #[test]
    fn bar_without_names_says_which_step_runs() {
        let s = Steps::hidden(Vec::new());
        let bar = s.bar.clone().unwrap();
        assert_eq!(bar.prefix(), "1/?");
        assert_eq!(bar.message(), "starting …");
        s.step_done(0, 4, "network", false);
        assert_eq!(bar.prefix(), "2/4");
        assert_eq!(bar.message(), "step 2 (after network) …");
        drop(s);
        assert!(bar.is_finished());
    }
}
