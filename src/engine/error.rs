//! The engine's error type: every load, tokenizer and compute failure, with the file and the problem named.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Load errors name the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open model file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable GGUF file: {reason}")]
    InvalidGguf { path: PathBuf, reason: String },
    #[error(
        "{path}: unsupported model architecture '{architecture}' (supported: qwen2, llama, phi2)"
    )]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error("{path}: missing metadata key '{key}'")]
    MissingMetadata { path: PathBuf, key: String },
    #[error("{path}: metadata key '{key}' has the wrong type: {reason}")]
    BadMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}': {reason}")]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{path}: cannot build the tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("tokenizer failed on input: {0}")]
    Encode(String),
    #[error("prompt of {tokens} tokens exceeds the model's context of {context} tokens")]
    ContextOverflow { tokens: usize, context: usize },
    #[error("empty prompt")]
    EmptyPrompt,
    /// A forward pass stopped between layers because its caller asked (cancelled, or more
    /// urgent work arrived); the cache is as it was before the pass.
    #[error("computation interrupted")]
    Interrupted,
    #[error("model computation failed: {}", message(.0))]
    Compute(#[from] candle_core::Error),
    #[error("the engine thread has stopped")]
    EngineGone,
    #[error("cannot start the engine thread: {0}")]
    Spawn(std::io::Error),
    #[error("engine panicked: {0}")]
    Panicked(String),
    /// The remote backend's server could not be reached or refused the request.
    #[error("{endpoint}: {reason}")]
    Remote { endpoint: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A candle error's message without the backtrace it carries when `RUST_BACKTRACE` is set.
pub(crate) fn message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => message(inner),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
