//! pyfill: local, offline code completion for Python, served over the Language Server Protocol.
//!
//! Data flow, one direction:
//! editor -> `lsp` (protocol glue) -> `documents` (ropes + tree-sitter, versioned snapshots)
//! -> `completion` (what to ask for, when to stop) -> `prompt` (FIM template per model family)
//! -> `engine` (tokenizer, forward pass, KV cache, sampling, on its own thread)
//! -> `completion` (post-processing) -> editor.
//! `models` fetches and verifies model files. Only `engine` knows about tensors.

pub mod bench;
pub mod completion;
pub mod config;
pub mod documents;
pub mod engine;
pub mod lsp;
pub mod models;
pub mod prompt;
