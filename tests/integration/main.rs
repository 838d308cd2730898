//! bottle's integration tests: one binary, many modules.

mod docker_e2e;
mod fault;
mod security;
mod tidy;
mod queue_cli;
