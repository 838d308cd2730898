//! Launch-time helpers: classifying smolvm failures.

use crate::smolvm::CliError;

/// Whether a smolvm failure means "the machine is not up (yet)": exec/cp
/// against a machine that is created but not running, or still booting.
/// Readiness polling retries on this until its deadline.
pub fn not_running(e: &CliError) -> bool {
    e.code == "INVALID_STATE" || e.message.contains("is not running")
}

/// Whether a smolvm failure means the machine does not exist (teardown
/// treats it as already done).
pub fn not_found(e: &CliError) -> bool {
    e.code == "NOT_FOUND"
}
