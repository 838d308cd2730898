//! bottle's integration tests: one binary, many modules.

mod tidy;
