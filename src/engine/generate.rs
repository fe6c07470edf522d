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
    /// Prompt lookup decoding (greedy only): up to this many tokens guessed from the prompt and
    /// the text so far (what followed the last occurrence of the latest tokens) are checked in
    /// one forward pass, which costs little more than one token's; the output is the same.
    /// 0 turns it off.
    pub draft_tokens: usize,
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
            draft_tokens: 6,
        }
    }
}

/// Called with all text generated so far; `Some(n)` stops generation keeping the first `n` bytes
/// (a char boundary), e.g. "stop at the first newline".
pub type StopPredicate = Box<dyn FnMut(&str) -> Option<usize> + Send>;

pub struct Request {
    pub prompt: Vec<u32>,
    /// A shorter prompt for the same question (a smaller window around the cursor), answered
    /// instead when `prompt` would need more than [`FOREGROUND_LIMIT`] tokens computed and the
    /// fallback saves [`FALLBACK_SAVING`] of them; the engine then computes `prompt` in the
    /// background, for the requests that follow.
    pub fallback: Option<Vec<u32>>,
    /// A tighter time limit for when the fallback answers (the first suggestion on a file
    /// should come quickly, even if shorter).
    pub fallback_max_time: Option<Duration>,
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
    /// Generated tokens that came from prompt lookup drafts (checked, not decoded one by one).
    pub drafted_tokens: usize,
}

impl Finished {
    /// Nothing generated yet, for a prompt of `prompt_tokens` (what a request cancelled before
    /// it produced anything finishes with).
    pub fn cancelled(prompt_tokens: usize) -> Self {
        Self {
            text: String::new(),
            tokens: Vec::new(),
            reason: FinishReason::Cancelled,
            prompt_tokens,
            reused_tokens: 0,
            prefill_time: Duration::ZERO,
            decode_time: Duration::ZERO,
            fallback: false,
            drafted_tokens: 0,
        }
    }
}

/// Uncached prompt tokens a request may compute before its answer (about a third of a second at
/// prefill rates on two cores); beyond this its fallback prompt answers, if that saves
/// [`FALLBACK_SAVING`] tokens.
pub const FOREGROUND_LIMIT: usize = 64;

/// Prompt tokens (about 0.6 s) a fallback must save to answer instead of its whole prompt.
pub const FALLBACK_SAVING: usize = 128;

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
        reused_tokens: reused,
        ..Finished::cancelled(prompt.len())
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
    let greedy = matches!(sampling, Sampling::ArgMax);
    let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
    let mut decoder = StreamDecoder::default();
    let decode_start = Instant::now();
    // Drafted tokens the model confirmed, to be taken in order before sampling again.
    let mut confirmed: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    loop {
        // A confirmed draft token is in the cache already, with the logits after it computed.
        let drafted = confirmed.pop_front();
        let token = if let Some(t) = drafted {
            t
        } else if pending.is_empty() {
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
        if drafted.is_some() {
            continue;
        }
        if cache.len() >= model.model.context_length() {
            finished.reason = FinishReason::ContextFull;
            break;
        }
        let room = model.model.context_length() - cache.len() - 1;
        let draft = if greedy && pending.is_empty() {
            lookup(cache.tokens(), token, params.draft_tokens.min(room))
        } else {
            Vec::new()
        };
        if draft.is_empty() {
            logits = model.decode(cache, token)?;
            continue;
        }
        let mut batch = Vec::with_capacity(draft.len() + 1);
        batch.push(token);
        batch.extend_from_slice(&draft);
        let rows = model
            .model
            .forward(&batch, cache, LogitsFor::All)?
            .ok_or(Error::EmptyPrompt)?;
        let predicted: Vec<u32> = rows.argmax(candle_core::D::Minus1)?.to_vec1()?;
        let accepted = draft
            .iter()
            .zip(&predicted)
            .take_while(|(d, p)| d == p)
            .count();
        cache.truncate(cache.len() - (draft.len() - accepted));
        confirmed.extend(&draft[..accepted]);
        finished.drafted_tokens += accepted;
        logits = rows.narrow(0, accepted, 1)?;
    }
    finished.decode_time = decode_start.elapsed();
    Ok(finished)
}

/// Prompt lookup: the tokens that followed the latest earlier occurrence of the last few tokens
/// of `history` + `last` (3, else 2 of them), at most `max`.
fn lookup(history: &[u32], last: u32, max: usize) -> Vec<u32> {
    if max == 0 {
        return Vec::new();
    }
    let len = history.len() + 1;
    let at = |i: usize| if i == history.len() { last } else { history[i] };
    for n in [3, 2] {
        if len <= n {
            continue;
        }
        let tail = len - n;
        let found = (0..tail)
            .rev()
            .find(|&i| (0..n).all(|j| at(i + j) == at(tail + j)));
        if let Some(i) = found {
            let from = i + n;
            return (from..len.min(from + max)).map(at).collect();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn lookup_drafts_what_followed_the_last_tokens_before() {
        // ... 5 6 7 8 9 ... 5 6 | 7 -> 8 9 1 (what followed "5 6 7" the first time)
        let history = [1, 5, 6, 7, 8, 9, 1, 5, 6];
        assert_eq!(lookup(&history, 7, 3), vec![8, 9, 1]);
        assert_eq!(lookup(&history, 7, 10), vec![8, 9, 1, 5, 6, 7]);
        // Only two tokens match: "6 4" never came before, "9 4" neither.
        assert_eq!(lookup(&history, 4, 3), Vec::<u32>::new());
        // The latest occurrence wins.
        assert_eq!(lookup(&[2, 3, 4, 2, 3, 5, 2], 3, 1), vec![5]);
        assert_eq!(lookup(&history, 7, 0), Vec::<u32>::new());
        assert_eq!(lookup(&[], 7, 3), Vec::<u32>::new());
    }
}
