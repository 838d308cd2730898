//! (placeholder: being written)

/// Command-line arguments of this daemon.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run the daemon from its command line; returns the process exit code.
pub fn main(_args: Args) -> i32 {
    eprintln!("not built yet");
    1
}
