//! `cargo xtask`: the project's automation (test, demo, seed-base, bench, …).
mod bench_egress;
mod bench_git_gate;
mod bench_supervise;

fn main() {}
