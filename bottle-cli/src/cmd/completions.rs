//! `bottle completions <shell>`.

use clap::CommandFactory;

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Print completions for the shell on stdout (generated into memory first:
/// `clap_complete` panics when its writer fails, e.g. `| true`).
pub fn run(a: &Args) -> bottle_core::Result<u8> {
    let mut cmd = crate::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "bottle", &mut buf);
    crate::ui::out(&String::from_utf8_lossy(&buf));
    Ok(0)
}
