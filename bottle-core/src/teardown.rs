//! Cleanup results. The LIFO undo stack and the launch engine that drives
//! it live in [`crate::launch`]; this path is kept for the callers of
//! [`into_result`].

pub use crate::launch::into_result;
