//! Embedding bottle in another Rust tool through the lifecycle library:
//! a policy written into a private home, started with the docker backend,
//! one command run, then removed with everything it made.
//! `cargo run -p bottle-cli --example embed` (needs a docker engine).

use bottle_core::plan::NoPrompt;
use bottle_core::{Backend, DuctRunner, Home};
use bottle_lifecycle::{Entry, Lifecycle, PlanRequest, Registry, Silent, Started};
use camino::Utf8PathBuf;

const BOTTLE: &str = r#"
[agent_provider]
template = "shell"
[[egress.routes]]
host = "api.github.com"
methods = ["GET"]
"#;
const AGENT: &str = "bottle = \"embedded\"\ncommand = [\"sleep\", \"infinity\"]\n";

fn docker() -> Box<dyn Backend> {
    Box::new(bottle_docker::DockerBackend::default())
}

/// The only backend this tool offers.
static BACKENDS: &[Entry] = &[Entry {
    name: "docker",
    feature: "docker",
    make: Some(docker),
}];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Utf8PathBuf::from_path_buf(std::env::temp_dir().join("bottle-embed"))
        .map_err(|_| "non-UTF-8 temp dir")?;
    std::fs::create_dir_all(root.join("bottles"))?;
    std::fs::create_dir_all(root.join("agents"))?;
    std::fs::write(root.join("bottles/embedded.toml"), BOTTLE)?;
    std::fs::write(root.join("agents/tool.toml"), AGENT)?;
    let lc = Lifecycle::new(Home::new(root), Registry(BACKENDS), &DuctRunner);
    let started = lc.start(&PlanRequest::agent("tool"), false, &NoPrompt, &Silent)?;
    let Started::Running { plan, running } = started else {
        unreachable!("not a dry run")
    };
    let cmd = ["sh", "-c", "echo hello from $(hostname) as $(id -un)"].map(String::from);
    let out = running.exec_output(&cmd, &DuctRunner);
    lc.rm(plan.identity.as_str())?;
    print!("{}", out?.stdout);
    Ok(())
}
