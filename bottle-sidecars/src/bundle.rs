//! (placeholder: being written)

/// Command-line arguments of this daemon.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run the daemon from its command line; returns the process exit code.
pub fn main(_args: Args) -> i32 {
    eprintln!("not built yet");
    1
}

/// Install the stderr tracing subscriber (`RUST_LOG`, default `info`); idempotent.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
