//! The generation loop: reuse the cached prefix, prefill the rest, then sample token by token
//! until a stop condition, checking cancellation between every step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::LoadedModel;
use super::error::{Error, Result};
use super::kv_cache::KvCache;
use super::model::LogitsFor;
use super::tokenizer::StreamDecoder;

/// Shared flag that asks a generation to stop at the next token.
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// Wall-clock limit for the whole request, prefill included.
    pub max_time: Option<Duration>,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            max_time: None,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 299_792_458,
        }
    }
}

/// Called with all text generated so far; `Some(n)` stops generation keeping the first `n` bytes
/// (a char boundary), e.g. "stop at the first newline".
pub type StopPredicate = Box<dyn FnMut(&str) -> Option<usize> + Send>;

pub struct Request {
    pub prompt: Vec<u32>,
    /// A shorter prompt for the same question (a smaller window around the cursor), answered
    /// instead when `prompt` would need more than [`FOREGROUND_LIMIT`] tokens computed; the
    /// engine then computes `prompt` in the background, for the requests that follow.
    pub fallback: Option<Vec<u32>>,
    pub params: GenerationParams,
    pub stop: Option<StopPredicate>,
    /// Let the model rewrite the prompt's last, half-typed word (see
    /// [`Tokenizer::healing_len`](super::Tokenizer::healing_len)): those tokens are taken off
    /// and the first tokens generated are held to start with their text, which is not emitted
    /// again. For prompts that end in the user's text.
    pub heal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token (eos, `<|endoftext|>`, `<|file_sep|>`...).
    EndOfGeneration,
    StopPredicate,
    MaxTokens,
    /// The model's context window is full.
    ContextFull,
    TimeLimit,
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub text: String,
    pub tokens: Vec<u32>,
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys/values came from the cache.
    pub reused_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// The request's fallback prompt answered (its prompt is being computed in the background).
    pub fallback: bool,
}

/// Uncached prompt tokens a request may compute before its answer (about a second at prefill
/// rates on two cores); beyond this its fallback prompt answers.
pub const FOREGROUND_LIMIT: usize = 256;

/// Prompt tokens computed per forward pass: bounds the attention scratch memory and how long a
/// cancelled request can keep the engine busy.
pub const PREFILL_CHUNK: usize = 256;

/// Runs one request to completion, calling `emit` with each new piece of text.
pub fn run(
    model: &LoadedModel,
    cache: &mut KvCache,
    mut request: Request,
    cancel: &CancelToken,
    emit: &mut dyn FnMut(&str),
) -> Result<Finished> {
    let start = Instant::now();
    let prompt = &request.prompt;
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let params = &request.params;
    // The healed text: generated tokens must spell it out first; it is not emitted.
    let mut pending: Vec<u8> = Vec::new();
    let mut healing_tokens = 0;
    let healed;
    let prompt = if request.heal {
        let n = model.tokenizer.healing_len(prompt).min(prompt.len() - 1);
        healed = &prompt[..prompt.len() - n];
        for &id in &prompt[prompt.len() - n..] {
            pending.extend_from_slice(model.tokenizer.token_bytes(id));
        }
        healed
    } else {
        prompt
    };
    // At least the last prompt token must run to produce the first logits.
    let reused = cache.common_prefix_len(prompt).min(prompt.len() - 1);
    cache.truncate(reused);
    let mut finished = Finished {
        text: String::new(),
        tokens: Vec::new(),
        reason: FinishReason::Cancelled,
        prompt_tokens: prompt.len(),
        reused_tokens: reused,
        prefill_time: Duration::ZERO,
        decode_time: Duration::ZERO,
        fallback: false,
    };
    let out_of_time = || params.max_time.is_some_and(|t| start.elapsed() >= t);

    let mut logits = None;
    let chunks: Vec<&[u32]> = prompt[reused..].chunks(PREFILL_CHUNK).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        if cancel.is_cancelled() {
            finished.prefill_time = start.elapsed();
            return Ok(finished);
        }
        if out_of_time() {
            finished.reason = FinishReason::TimeLimit;
            finished.prefill_time = start.elapsed();
            return Ok(finished);
        }
        let want = if i + 1 == chunks.len() {
            LogitsFor::Last
        } else {
            LogitsFor::None
        };
        match model
            .model
            .forward_until(chunk, cache, want, &|| cancel.is_cancelled())
        {
            Ok(out) => logits = out,
            Err(Error::Interrupted) => {
                finished.prefill_time = start.elapsed();
                return Ok(finished);
            }
            Err(e) => return Err(e),
        }
    }
    finished.prefill_time = start.elapsed();
    let Some(mut logits) = logits else {
        return Err(Error::EmptyPrompt);
    };

    let sampling = if params.temperature <= 0.0 {
        Sampling::ArgMax
    } else {
        match (params.top_k, params.top_p) {
            (None, None) => Sampling::All {
                temperature: params.temperature,
            },
            (Some(k), None) => Sampling::TopK {
                k,
                temperature: params.temperature,
            },
            (None, Some(p)) => Sampling::TopP {
                p,
                temperature: params.temperature,
            },
            (Some(k), Some(p)) => Sampling::TopKThenTopP {
                k,
                p,
                temperature: params.temperature,
            },
        }
    };
    let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
    let mut decoder = StreamDecoder::default();
    let decode_start = Instant::now();
    loop {
        let token = if pending.is_empty() {
            sampler.sample(&logits.squeeze(0)?)?
        } else {
            let mut row: Vec<f32> = logits.squeeze(0)?.to_vec1()?;
            let tokenizer = &model.tokenizer;
            for (id, l) in row.iter_mut().enumerate() {
                let b = tokenizer.token_bytes(id as u32);
                if !(tokenizer.is_text(id as u32)
                    && (b.starts_with(&pending) || pending.starts_with(b)))
                {
                    *l = f32::NEG_INFINITY;
                }
            }
            sampler.sample(&candle_core::Tensor::new(row, logits.device())?)?
        };
        if model.tokenizer.is_end_of_generation(token) {
            finished.reason = FinishReason::EndOfGeneration;
            break;
        }
        finished.tokens.push(token);
        let mut bytes = model.tokenizer.token_bytes(token);
        if !pending.is_empty() {
            // Spelling out the healed text is not the suggestion: not counted against its
            // length.
            if bytes.len() <= pending.len() {
                healing_tokens += 1;
            }
            let n = pending.len().min(bytes.len());
            pending.drain(..n);
            bytes = &bytes[n..];
        }
        let piece = decoder.push(bytes);
        if !piece.is_empty() {
            let before = finished.text.len();
            finished.text.push_str(&piece);
            if let Some(stop) = request.stop.as_mut()
                && let Some(keep) = stop(&finished.text)
            {
                let keep = finished.text.floor_char_boundary(keep.max(before));
                finished.text.truncate(keep);
                if keep > before {
                    emit(&finished.text[before..]);
                }
                finished.reason = FinishReason::StopPredicate;
                break;
            }
            emit(&piece);
        }
        if finished.tokens.len() - healing_tokens >= params.max_tokens {
            finished.reason = FinishReason::MaxTokens;
            break;
        }
        if cancel.is_cancelled() {
            finished.reason = FinishReason::Cancelled;
            break;
        }
        if out_of_time() {
            finished.reason = FinishReason::TimeLimit;
            break;
        }
        if cache.len() >= model.model.context_length() {
            finished.reason = FinishReason::ContextFull;
            break;
        }
        logits = model.decode(cache, token)?;
    }
    finished.decode_time = decode_start.elapsed();
    Ok(finished)
}
