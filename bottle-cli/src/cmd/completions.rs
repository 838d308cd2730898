//! `bottle completions <shell>`.

use clap::CommandFactory;

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Print completions for the shell on stdout.
pub fn run(a: &Args) -> bottle_core::Result<u8> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "bottle", &mut std::io::stdout());
    Ok(0)
}
