//! bottle's integration tests: one binary, many modules.
//!
//! A `harness = false` target (libtest-mimic): each module lists its tests
//! in `tests()` with what they need from the machine (`bottle_tests::gate`).
//! A test whose requirement is missing is reported ignored with the reason,
//! never `ok`; with `CI=true` it fails. Names are libtest's
//! (`<module>::<fn>`), so `cargo test -p bottle-tests --test integration
//! tidy::` still selects the tidy checks.

mod agents_standin;
mod docker_e2e;
mod fault;
mod queue_cli;
mod tidy;
mod ux;
mod work_e2e;

fn main() {
    let trials = [
        agents_standin::tests(),
        docker_e2e::tests(),
        fault::tests(),
        queue_cli::tests(),
        tidy::tests(),
        ux::tests(),
        work_e2e::tests(),
    ]
    .into_iter()
    .flatten()
    .collect();
    bottle_tests::gate::run(trials)
}
