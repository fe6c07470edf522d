//! The engine thread: the one owner of the model and its KV cache. Callers send requests over a
//! channel and receive text as it is generated; the async runtime never runs inference.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::error::{Error, Result};
use super::generate::{self, CancelToken, FALLBACK_SAVING, FOREGROUND_LIMIT, Finished, Request};
use super::kv_cache::KvCache;
use super::model::LogitsFor;
use super::tokenizer::Tokenizer;
use super::{Kernels, LoadedModel, ModelInfo};

pub enum Event {
    /// New text, in order; the concatenation is the suggestion so far.
    Text(String),
    Done(Finished),
    Failed(Error),
}

struct Job {
    request: Request,
    cancel: CancelToken,
    events: UnboundedSender<Event>,
}

pub struct Engine {
    jobs: Option<mpsc::Sender<Job>>,
    /// Jobs sent and not yet taken: background work yields to them between layers.
    queued: Arc<AtomicUsize>,
    info: ModelInfo,
    tokenizer: Arc<Tokenizer>,
    thread: Option<JoinHandle<()>>,
}

/// A request in flight: its events, and a handle to cancel it.
pub struct Generation {
    pub events: UnboundedReceiver<Event>,
    cancel: CancelToken,
}

impl Generation {
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Blocks until the request ends (never call this from async code).
    pub fn wait(mut self) -> Result<Finished> {
        while let Some(event) = self.events.blocking_recv() {
            match event {
                Event::Text(_) => {}
                Event::Done(finished) => return Ok(finished),
                Event::Failed(e) => return Err(e),
            }
        }
        Err(Error::EngineGone)
    }

    /// Waits for the end of the request without blocking the async runtime.
    pub async fn finish(&mut self) -> Result<Finished> {
        while let Some(event) = self.events.recv().await {
            match event {
                Event::Text(_) => {}
                Event::Done(finished) => return Ok(finished),
                Event::Failed(e) => return Err(e),
            }
        }
        Err(Error::EngineGone)
    }
}

/// Whoever drops a generation no longer wants it: stop the work at the next token.
impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Engine {
    /// Loads the model on a new engine thread and returns once it is ready (or failed).
    pub fn start(path: &Path) -> Result<Self> {
        Self::start_with(path, Kernels::Fast)
    }

    /// [`Engine::start`] with a choice of matrix kernels (the eval compares them).
    pub fn start_with(path: &Path, kernels: Kernels) -> Result<Self> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = path.to_owned();
        let queued = Arc::new(AtomicUsize::new(0));
        let waiting = queued.clone();
        let thread = std::thread::Builder::new()
            .name("pyfill-engine".into())
            .spawn(move || {
                let model = match LoadedModel::load_with(&path, kernels) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((model.info.clone(), model.tokenizer.clone())));
                serve(&model, &jobs_rx, &waiting);
            })
            .map_err(Error::Spawn)?;
        let (info, tokenizer) = ready_rx.recv().map_err(|_| Error::EngineGone)??;
        Ok(Self {
            jobs: Some(jobs_tx),
            queued,
            info,
            tokenizer,
            thread: Some(thread),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Queues a request; text arrives on the returned generation's channel.
    pub fn generate(&self, request: Request) -> Result<Generation> {
        self.generate_with(request, CancelToken::default())
    }

    /// Like [`Engine::generate`], cancelled through `cancel` too (e.g. by a newer request that
    /// supersedes this one while it still waits in the queue).
    pub fn generate_with(&self, request: Request, cancel: CancelToken) -> Result<Generation> {
        let (events, rx) = unbounded_channel();
        let job = Job {
            request,
            cancel: cancel.clone(),
            events,
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self
            .jobs
            .as_ref()
            .ok_or(Error::EngineGone)?
            .send(job)
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::EngineGone);
        }
        Ok(Generation { events: rx, cancel })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// KV caches the engine keeps: typing goes on in one while a longer prompt for the same place
/// is computed into the other.
const SLOTS: usize = 2;

/// A cache that holds fewer of a prompt's first tokens than this (a shared header, say) is no
/// better for it than the least recently used one.
const USEFUL_PREFIX: usize = 16;

/// Background prompt tokens per forward pass: short passes, so they finish in the gaps between
/// keystrokes, and an interrupted one loses little.
const WARM_CHUNK: usize = 32;

/// A prompt being computed in the background, into `slots[slot]`.
struct Warm {
    tokens: Vec<u32>,
    slot: usize,
}

fn serve(model: &LoadedModel, jobs: &mpsc::Receiver<Job>, queued: &AtomicUsize) {
    let mut slots: Vec<KvCache> = (0..SLOTS)
        .map(|_| KvCache::new(model.model.n_layers()))
        .collect();
    let mut last_used = vec![0u64; SLOTS];
    let mut warm: Option<Warm> = None;
    for step in 1.. {
        let job = match &warm {
            Some(_) => match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::TryRecvError::Empty) => {
                    warm_step(model, &mut slots, &mut warm, queued);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
            },
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        queued.fetch_sub(1, Ordering::SeqCst);
        let Job {
            mut request,
            cancel,
            events,
        } = job;
        // A request superseded while it waited ends at once; it must not redirect the
        // background work either.
        let mut untouched = None;
        let warm_of_choice = if cancel.is_cancelled() {
            &mut untouched
        } else {
            &mut warm
        };
        let (slot, fallback) = choose_slot(&slots, &last_used, &mut request, warm_of_choice);
        last_used[slot] = step;
        if let Some(w) = &warm {
            last_used[w.slot] = step;
        }
        let cache = &mut slots[slot];
        // A receiver that is gone means nobody wants the answer: stop at the next token.
        let mut emit = |text: &str| {
            if events.send(Event::Text(text.to_owned())).is_err() {
                cancel.cancel();
            }
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generate::run(model, cache, request, &cancel, &mut emit)
        }));
        let event = match outcome {
            Ok(Ok(mut finished)) => {
                finished.fallback = fallback;
                Event::Done(finished)
            }
            Ok(Err(e)) => Event::Failed(e),
            Err(panic) => {
                // Keys/values may be half-written: start from an empty cache.
                cache.reset();
                Event::Failed(Error::Panicked(panic_message(panic.as_ref())))
            }
        };
        let _ = events.send(event);
    }
}

/// The cache a request runs in: the one holding most of its prompt, or, when none holds a
/// useful part of it, the least recently used. A prompt that would take more than
/// [`FOREGROUND_LIMIT`] tokens to compute there is swapped for its fallback when that saves
/// [`FALLBACK_SAVING`] tokens in another cache, and itself becomes the background work. Returns the slot and whether the fallback runs.
fn choose_slot(
    slots: &[KvCache],
    last_used: &[u64],
    request: &mut Request,
    warm: &mut Option<Warm>,
) -> (usize, bool) {
    let best = |tokens: &[u32], except: Option<usize>| {
        let candidates = || (0..slots.len()).filter(move |&i| Some(i) != except);
        let longest = candidates()
            .map(|i| (slots[i].common_prefix_len(tokens), i))
            .max();
        match longest {
            Some((n, i)) if n >= USEFUL_PREFIX.min(tokens.len()) => i,
            _ => candidates().min_by_key(|&i| last_used[i]).unwrap_or(0),
        }
    };
    let uncached =
        |tokens: &[u32], slot: usize| tokens.len() - slots[slot].common_prefix_len(tokens);
    let slot = best(&request.prompt, None);
    let cost = uncached(&request.prompt, slot);
    if cost > FOREGROUND_LIMIT
        && let Some(fallback) = request.fallback.take()
    {
        let other = best(&fallback, Some(slot));
        // The fallback only if it saves real time (its own window may have moved too, and a
        // small prompt is worth computing whole).
        if uncached(&fallback, other) + FALLBACK_SAVING < cost {
            let prompt = std::mem::replace(&mut request.prompt, fallback);
            if let Some(limit) = request.fallback_max_time {
                let max_time = &mut request.params.max_time;
                *max_time = Some(max_time.map_or(limit, |t| t.min(limit)));
            }
            *warm = Some(Warm {
                tokens: prompt,
                slot,
            });
            return (other, true);
        }
    }
    // This request computes what that cache will hold; older background work there is moot.
    if warm.as_ref().is_some_and(|w| w.slot == slot) {
        *warm = None;
    }
    (slot, false)
}

/// One short forward pass of the background prompt, given up between layers as soon as a job
/// arrives. The last prompt token is left to the request that needs its logits.
fn warm_step(
    model: &LoadedModel,
    slots: &mut [KvCache],
    warm: &mut Option<Warm>,
    queued: &AtomicUsize,
) {
    let Some(w) = warm.as_ref() else {
        return;
    };
    let cache = &mut slots[w.slot];
    let reused = cache.common_prefix_len(&w.tokens);
    cache.truncate(reused);
    if reused + 1 >= w.tokens.len() {
        *warm = None;
        return;
    }
    let end = (reused + WARM_CHUNK).min(w.tokens.len() - 1);
    let chunk = &w.tokens[reused..end];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model
            .model
            .forward_until(chunk, cache, LogitsFor::None, &|| {
                queued.load(Ordering::SeqCst) > 0
            })
    }));
    match outcome {
        Ok(Ok(_) | Err(Error::Interrupted)) => {}
        Ok(Err(e)) => {
            tracing::warn!("background prompt computation failed: {e}");
            *warm = None;
        }
        Err(panic) => {
            cache.reset();
            panic_message(panic.as_ref());
            *warm = None;
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!("engine panicked: {what}");
    what
}
