//! The one secret detector shared by egress and git-gate (placeholder: being written).
