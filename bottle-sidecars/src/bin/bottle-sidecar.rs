//! `bottle-sidecar`: the bundle binary. `run` starts every daemon under one
//! supervisor; each daemon can also run alone for tests.

use bottle_sidecars::{bundle, egress, git_gate, supervise};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bottle-sidecar", version, about = "bottle's sidecar daemons")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run egress, git-gate and supervise together; if one exits, all exit.
    Run(bundle::Args),
    /// Run the egress proxy alone.
    Egress(egress::Args),
    /// Run the git gate alone.
    GitGate(git_gate::Args),
    /// Run the supervise MCP server alone.
    Supervise(supervise::Args),
    /// Exit 0 iff every daemon in bundle.toml accepts a TCP connection.
    Health(bundle::HealthArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => bundle::main(args),
        Command::Egress(args) => egress::main(args),
        Command::GitGate(args) => git_gate::main(args),
        Command::Supervise(args) => supervise::main(args),
        Command::Health(args) => bundle::health_main(args),
    };
    std::process::exit(code);
}
