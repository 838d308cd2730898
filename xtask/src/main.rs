//! `cargo xtask`: the project's automation (test, demo, seed-base, bench, …).
fn main() {}
