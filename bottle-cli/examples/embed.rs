//! Embedding bottle in another Rust tool: policy kept in memory, resolved to
//! a plan, launched with the docker backend, one command run, cleaned up.
//! `cargo run -p bottle-cli --example embed` (needs a docker engine).

use bottle_core::manifest::{agent_from_text, bottle_from_text, AgentSource};
use bottle_core::plan::{resolve, NoPrompt, ProcessEnv, ResolveOptions};
use bottle_core::{Backend, DuctRunner, Home, LaunchInput, PrepareContext, Probe};
use camino::Utf8PathBuf;

const BOTTLE: &str = r#"
[agent_provider]
template = "shell"
[[egress.routes]]
host = "api.github.com"
methods = ["GET"]
"#;
const AGENT: &str = "bottle = \"embedded\"\ncommand = [\"sleep\", \"infinity\"]\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bottle = bottle_from_text("embedded", "memory/embedded.toml".into(), BOTTLE)?;
    let agent = agent_from_text("memory/tool.toml".into(), AGENT, AgentSource::Home)?;
    let backend = bottle_docker::DockerBackend::default();
    if let Probe::Unavailable { why, fix } = backend.probe(&DuctRunner) {
        return Err(format!("docker unavailable: {why} ({fix})").into());
    }
    let root = Utf8PathBuf::from_path_buf(std::env::temp_dir().join("bottle-embed"))
        .map_err(|_| "non-UTF-8 temp dir")?;
    let home = Home::new(root);
    let (identity, slot) = home.allocate("tool", "embedded")?;
    let opts = ResolveOptions {
        identity: Some(identity),
        slot,
        ..Default::default()
    };
    let plan = resolve(&agent, &bottle, &opts, &ProcessEnv, &NoPrompt)?;
    let state = home.state(&plan.identity);
    let ctx = PrepareContext {
        state: &state,
        bundle_host: backend.bundle_host(&plan),
    };
    let wiring = bottle_host::prepare::prepare_all(&plan, &ctx)?;
    let input = LaunchInput {
        plan: &plan,
        state: &state,
        wiring: &wiring,
    };
    let running = backend.launch(input, &DuctRunner)?;
    let cmd = ["sh", "-c", "echo hello from $(hostname) as $(id -un)"].map(String::from);
    let out = running.exec_output(&cmd, &DuctRunner);
    running.stop(&DuctRunner)?;
    backend.remove_all(&plan.identity, false, &DuctRunner)?;
    state.remove()?;
    print!("{}", out?.stdout);
    Ok(())
}
