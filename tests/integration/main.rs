//! bottle's integration tests: one binary, many modules.

mod agents_standin;
mod docker_e2e;
mod fault;
mod queue_cli;
mod tidy;
mod ux;
mod work_e2e;
