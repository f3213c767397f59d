//! The errors that decide a command's exit status, shared by every layer.
//! Exit codes (see docs/reference.md#exit-status): 0 success, 1 failed verdict
//! or refused by the server, 2 bad usage or bad config.

/// Exit status for a failed verdict (`load`) or a refusal by the server (`ctl`).
pub const EXIT_FAILED: u8 = 1;
/// Exit status for bad usage or bad configuration.
pub const EXIT_USAGE: u8 = 2;

/// An error that must end the process with [`EXIT_USAGE`] (bad flag, bad config).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error that ends the process with [`EXIT_FAILED`] (failed verdict, refused request).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FailedError(pub String);
