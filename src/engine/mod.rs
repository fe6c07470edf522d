//! The in-process inference engine: GGUF loading, the tokenizer from the GGUF, forward passes per
//! architecture, an explicit KV cache, sampling and the generation loop on a thread of its own.
//! The only module that knows about tensors (candle); callers see tokens, text and channels.
//!
//! Two ways in: [`Engine`] (a thread that owns a [`LoadedModel`] and its [`KvCache`], fed through
//! a channel: what the editor side uses) and [`LoadedModel`] directly (benchmarks and tests).

mod error;
mod generate;
mod gguf;
mod kernels;
mod kv_cache;
mod model;
mod service;
mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

pub use error::{Error, Result};
pub use generate::{
    CancelToken, FALLBACK_SAVING, FOREGROUND_LIMIT, FinishReason, Finished, GenerationParams,
    PREFILL_CHUNK, Request, StopPredicate, run,
};
pub use gguf::GgufFile;
pub use kv_cache::KvCache;
pub use model::{Kernels, LogitsFor, Model};
pub use service::{Engine, Event, Generation, LoadStage};
pub use tokenizer::{FimIds, StreamDecoder, Tokenizer};

/// What callers may know about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: String,
    pub name: Option<String>,
    pub layers: usize,
    pub context_length: usize,
    pub vocab_size: usize,
    /// Generation runs on an inference server (the remote backend), which can neither take
    /// back a half-typed word (token healing) nor keep a second cache for a small first window.
    pub remote: bool,
}

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Arc<Tokenizer>,
    pub info: ModelInfo,
}

impl LoadedModel {
    /// Loads weights and tokenizer from one GGUF file (the tokenizer first, so a file without
    /// one fails before the weights are read).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, Kernels::Fast)
    }

    /// [`LoadedModel::load`] with a choice of matrix kernels (tests compare them).
    pub fn load_with(path: &Path, kernels: Kernels) -> Result<Self> {
        Self::load_reporting(path, kernels, None)
    }

    /// [`LoadedModel::load_with`], telling `progress` the fraction of weights read so far.
    pub fn load_reporting(
        path: &Path,
        kernels: Kernels,
        progress: Option<Box<dyn FnMut(f32) + Send>>,
    ) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        if let Some(progress) = progress {
            gguf.report_progress(progress);
        }
        let architecture = gguf.string("general.architecture")?.to_owned();
        if !matches!(architecture.as_str(), "qwen2" | "llama" | "phi2") {
            return Err(Error::UnsupportedArchitecture {
                path: path.to_owned(),
                architecture,
            });
        }
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let model = Model::load(&mut gguf, kernels, &Device::Cpu)?;
        let info = ModelInfo {
            path: path.to_owned(),
            name: gguf.string("general.name").ok().map(str::to_owned),
            architecture,
            layers: model.n_layers(),
            context_length: model.context_length(),
            vocab_size: tokenizer.vocab_size(),
            remote: false,
        };
        Ok(Self {
            model,
            tokenizer: Arc::new(tokenizer),
            info,
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.model.n_layers())
    }

    /// Computes `tokens` after the cached positions in chunks; logits as asked, `(n, vocab)`.
    pub fn prefill(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Option<Tensor>> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let mut out = Vec::new();
        let chunks: Vec<&[u32]> = tokens.chunks(PREFILL_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let want = match logits {
                LogitsFor::All => LogitsFor::All,
                LogitsFor::Last if last => LogitsFor::Last,
                _ => LogitsFor::None,
            };
            if let Some(l) = self.model.forward(chunk, cache, want)? {
                out.push(l);
            }
        }
        Ok(match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(Tensor::cat(&out, 0)?),
        })
    }

    /// Hidden states after each layer, then all positions' logits, for `tokens` from a fresh
    /// cache (see [`Model::trace`]).
    pub fn trace(&self, tokens: &[u32]) -> Result<Vec<Tensor>> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.model.trace(tokens, &mut self.new_cache())
    }

    /// One token after the cached positions; logits `(1, vocab)`.
    pub fn decode(&self, cache: &mut KvCache, token: u32) -> Result<Tensor> {
        self.model
            .forward(&[token], cache, LogitsFor::Last)?
            .ok_or(Error::EmptyPrompt)
    }
}

/// Logits for some positions, `(n, vocab)`.
pub type Logits = Tensor;

/// The most likely next token after the last row of `logits`.
pub fn argmax(logits: &Tensor) -> Result<u32> {
    let n = logits.dim(0)?;
    Ok(logits.get(n - 1)?.argmax(0)?.to_scalar::<u32>()?)
}

/// Threads the CPU kernels use (`CANDLE_NUM_THREADS`, else physical cores).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// Sets the number of threads the CPU kernels will use. candle reads it from the environment
/// once, when its worker pool starts at the first matrix product, so this only has an effect
/// before any model has run, and must be called while no other code reads the environment
/// (start of `main`, or the language server's `initialize`, before any model is loaded).
#[allow(unsafe_code)]
pub fn configure_threads(n: usize) {
    let n = n.max(1).to_string();
    // SAFETY: the callers above run before the engine exists; the only other threads then are
    // the async runtime's, which read the environment only through std (which serialises it
    // with this write), never through C's getenv.
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", &n);
        std::env::set_var("RAYON_NUM_THREADS", &n);
    }
}
