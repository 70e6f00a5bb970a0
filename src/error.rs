//! One error type for the whole crate: every failure a user can cause is a value, never a panic.

/// What went wrong, worded for the person who supplied the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config.json: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("input: {0}")]
    Input(String),
    #[error("device: {0}")]
    Device(String),
    #[error("{0}")]
    Io(String),
    /// The caller asked to stop (an `AbortSignal`); work stops between batches.
    #[error("the call was aborted")]
    Aborted,
}

pub type Result<T> = std::result::Result<T, Error>;
