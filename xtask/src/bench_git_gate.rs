//! Benchmark (placeholder: being written).

/// Run this benchmark.
#[allow(dead_code)]
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("not built yet".into())
}
