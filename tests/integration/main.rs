//! bottle's integration tests: one binary, many modules.

mod tidy;
mod docker_e2e;
mod security;
mod fault;
