//! `bottle dashboard`.

use bottle_core::{Error, Result};

use crate::Cli;

/// Run the full-screen dashboard.
pub fn run(cli: &Cli) -> Result<u8> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Error::other(
            "the dashboard needs a terminal",
            "run it in an interactive terminal (over SSH works; 80x24 is enough), or use `bottle ls` / `bottle queue --json`",
        ));
    }
    crate::dashboard::run(super::home(cli)?)?;
    Ok(0)
}
