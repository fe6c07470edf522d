//! pyfill: local, offline code completion for Python, served over the Language Server Protocol.
//!
//! Data flow, one direction:
//! editor -> `lsp` (protocol glue) -> `documents` (ropes + tree-sitter, versioned snapshots)
//! -> `completion` (orchestration) -> `context` (windows, mode, related code from other files)
//! -> `prompt` (layout per model family) -> `engine` (tokenizer, forward pass, KV cache,
//! sampling, on its own thread, stopping by `postprocess`'s rule) -> `postprocess` (tidy-up)
//! -> editor.
//! `models` fetches and verifies model files. Only `engine` knows about tensors. With a remote
//! backend, `remote` takes the engine's place on its thread: the same prompts go to an
//! inference server over HTTP.

pub mod bench;
pub mod completion;
pub mod config;
pub mod context;
pub mod documents;
pub mod engine;
pub mod eval;
pub mod fault;
pub mod lsp;
pub mod models;
pub mod postprocess;
pub mod prompt;
pub mod remote;
pub mod replay;
