//! Print the smolmachines probe result as one JSON line and exit 0 when the
//! host can run smolmachines bottles, 3 otherwise (used by
//! `cargo xtask integration --backend smolmachines`).

use bottle_core::backend::Backend;
use bottle_core::command::DuctRunner;

fn main() {
    let probe = bottle_smolmachines::SmolmachinesBackend::new().probe(&DuctRunner);
    println!(
        "{}",
        serde_json::to_string(&probe).expect("probe serializes")
    );
    std::process::exit(if probe.is_ready() { 0 } else { 3 });
}
