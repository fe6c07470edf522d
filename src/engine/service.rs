//! The engine thread: the one owner of the model and its KV cache. Callers send requests over a
//! channel and receive text as it is generated; the async runtime never runs inference.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::error::{Error, Result};
use super::generate::{self, CancelToken, FALLBACK_SAVING, FOREGROUND_LIMIT, Finished, Request};
use super::kv_cache::{KvCache, common_prefix};
use super::model::LogitsFor;
use super::tokenizer::Tokenizer;
use super::{Kernels, LoadedModel, ModelInfo};

/// How far [`Engine::start_reporting`] got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadStage {
    /// This fraction (0 to 1) of the weights is read.
    Reading(f32),
    /// Weights read; measuring the prefill rate (a short forward pass).
    Measuring,
}

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

enum Work {
    Generate(Job),
    /// A prompt to compute at low priority ([`Engine::warm`]).
    Warm(Vec<u32>),
}

pub struct Engine {
    jobs: Option<mpsc::Sender<Work>>,
    /// Jobs sent and not yet taken: background work yields to them between layers.
    queued: Arc<AtomicUsize>,
    /// Prompt tokens per second lately (`f64` bits; 0 before any measurement).
    rate: Arc<AtomicU64>,
    /// Background prompts computed to the end so far.
    warmed: Arc<AtomicUsize>,
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
        self.finish_with(|_| {}).await
    }

    /// [`Generation::finish`], showing `text` each piece of text as it comes.
    pub async fn finish_with(&mut self, mut text: impl FnMut(&str)) -> Result<Finished> {
        while let Some(event) = self.events.recv().await {
            match event {
                Event::Text(piece) => text(&piece),
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
        Self::start_reporting(path, kernels, |_| {})
    }

    /// [`Engine::start_with`], telling `progress` how far loading got (on the engine thread).
    pub fn start_reporting(
        path: &Path,
        kernels: Kernels,
        progress: impl FnMut(LoadStage) + Send + 'static,
    ) -> Result<Self> {
        let progress = Arc::new(Mutex::new(progress));
        let reading = progress.clone();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Work>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = path.to_owned();
        let queued = Arc::new(AtomicUsize::new(0));
        let waiting = queued.clone();
        let rate = Arc::new(AtomicU64::new(0));
        let measured = rate.clone();
        let warmed = Arc::new(AtomicUsize::new(0));
        let finished_warm = warmed.clone();
        let thread = std::thread::Builder::new()
            .name("pyfill-engine".into())
            .spawn(move || {
                let report = Box::new(move |fraction| {
                    if let Ok(mut report) = reading.lock() {
                        report(LoadStage::Reading(fraction));
                    }
                });
                let model = match LoadedModel::load_reporting(&path, kernels, Some(report)) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if let Ok(mut report) = progress.lock() {
                    report(LoadStage::Measuring);
                }
                calibrate(&model, &measured);
                // The caller may wait for the last report before its own "ready".
                drop(progress);
                let _ = ready_tx.send(Ok((model.info.clone(), model.tokenizer.clone())));
                serve(&model, &jobs_rx, &waiting, &finished_warm);
            })
            .map_err(Error::Spawn)?;
        let (info, tokenizer) = ready_rx.recv().map_err(|_| Error::EngineGone)??;
        Ok(Self {
            jobs: Some(jobs_tx),
            queued,
            rate,
            warmed,
            info,
            tokenizer,
            thread: Some(thread),
        })
    }

    /// An engine whose generation runs on an inference server (see [`crate::remote`]): the
    /// same requests and events, no model loaded here. `tokenizer` lays out and budgets the
    /// prompts; each request runs on a thread of its own, so a cancelled one that still waits
    /// for the server holds nothing up.
    pub fn start_remote(
        client: crate::remote::Client,
        tokenizer: Tokenizer,
        info: ModelInfo,
    ) -> Result<Self> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Work>();
        let queued = Arc::new(AtomicUsize::new(0));
        let waiting = queued.clone();
        let tokenizer = Arc::new(tokenizer);
        let words = tokenizer.clone();
        let client = Arc::new(client);
        let thread = std::thread::Builder::new()
            .name("pyfill-remote".into())
            .spawn(move || {
                for work in jobs_rx {
                    let Work::Generate(job) = work else {
                        // Nothing to compute ahead: the server keeps its own cache.
                        continue;
                    };
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    if job.cancel.is_cancelled() {
                        let _ = job
                            .events
                            .send(Event::Done(Finished::cancelled(job.request.prompt.len())));
                        continue;
                    }
                    let (client, words) = (client.clone(), words.clone());
                    let events = job.events.clone();
                    let spawned = std::thread::Builder::new()
                        .name("pyfill-request".into())
                        .spawn(move || remote_job(&client, &words, job));
                    if let Err(e) = spawned {
                        let _ = events.send(Event::Failed(Error::Spawn(e)));
                    }
                }
            })
            .map_err(Error::Spawn)?;
        Ok(Self {
            jobs: Some(jobs_tx),
            queued,
            rate: Arc::new(AtomicU64::new(0)),
            warmed: Arc::new(AtomicUsize::new(0)),
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

    /// Prompt tokens computed per second, measured at load (it stays the same after, so what
    /// depends on it, such as a window's size, does not move from one keystroke to the next).
    pub fn prefill_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        (rate > 0.0).then_some(rate)
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
            .send(Work::Generate(job))
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::EngineGone);
        }
        Ok(Generation { events: rx, cancel })
    }
}

impl Engine {
    /// Computes `prompt` into a cache in the background at low priority, for a request expected
    /// soon (a file just opened, the line after a suggestion is accepted): requests pre-empt it,
    /// the rest of a prompt whose fallback answered goes first, and a newer one replaces it. It
    /// goes to the cache the latest requests did not use, so typing keeps its own.
    pub fn warm(&self, prompt: Vec<u32>) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or(Error::EngineGone)?
            .send(Work::Warm(prompt))
            .map_err(|_| Error::EngineGone)
    }

    /// Whether the engine thread still runs (it dies only on a bug outside its per-request
    /// guards; the server then starts a new engine).
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// How many prompts given to [`Engine::warm`] were computed to the end so far.
    pub fn warmed(&self) -> usize {
        self.warmed.load(Ordering::SeqCst)
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

/// One request on the remote backend: the prompt as text (special tokens written out, as the
/// servers parse them), generated there; events as the local engine sends them.
fn remote_job(client: &crate::remote::Client, tokenizer: &Tokenizer, job: Job) {
    let Job {
        mut request,
        cancel,
        events,
    } = job;
    // The servers add the model's BOS themselves.
    let ids = match (request.prompt.split_first(), tokenizer.bos()) {
        (Some((first, rest)), Some(bos)) if *first == bos => rest,
        _ => &request.prompt[..],
    };
    let prompt = tokenizer.decode(ids);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.generate(&prompt, &mut request, &cancel, &mut |piece| {
            let _ = events.send(Event::Text(piece.to_owned()));
        })
    }));
    let _ = events.send(match outcome {
        Ok(Ok(finished)) => Event::Done(finished),
        Ok(Err(e)) => Event::Failed(e),
        Err(panic) => Event::Failed(Error::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a remote request failed".into()),
        )),
    });
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
    /// Asked through [`Engine::warm`] (a guess), not the rest of a prompt a request needed.
    low: bool,
}

/// Prompt tokens computed at load to measure the prefill rate (about a third of a second).
const CALIBRATION_TOKENS: usize = 64;

/// The prefill rate, from code tokens computed in a scratch cache.
fn calibrate(model: &LoadedModel, rate: &AtomicU64) {
    let Ok(mut tokens) = model.tokenizer.encode(
        "def total(items):\n    return sum(item.price for item in items)\n",
        false,
    ) else {
        return;
    };
    if tokens.is_empty() {
        return;
    }
    while tokens.len() < CALIBRATION_TOKENS {
        tokens.extend_from_within(..tokens.len().min(CALIBRATION_TOKENS - tokens.len()));
    }
    let mut cache = KvCache::new(model.model.n_layers());
    let start = std::time::Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model
            .model
            .forward_until(&tokens, &mut cache, LogitsFor::None, &|| false)
    }));
    let time = start.elapsed();
    if let Ok(Ok(_)) = outcome
        && !time.is_zero()
    {
        let measured = tokens.len() as f64 / time.as_secs_f64();
        rate.store(measured.to_bits(), Ordering::Relaxed);
        tracing::debug!("prefill rate at load: {measured:.0} tokens/s");
    }
}

fn serve(
    model: &LoadedModel,
    jobs: &mpsc::Receiver<Work>,
    queued: &AtomicUsize,
    warmed: &AtomicUsize,
) {
    let mut slots: Vec<KvCache> = (0..SLOTS)
        .map(|_| KvCache::new(model.model.n_layers()))
        .collect();
    let mut last_used = vec![0u64; SLOTS];
    let mut warm: Option<Warm> = None;
    // A low-priority prompt waiting for the background work under way.
    let mut later: Option<Vec<u32>> = None;
    // Ticks per use of a cache, for the least recently used one.
    let mut clock = 0u64;
    loop {
        if warm.is_none()
            && let Some(tokens) = later.take()
        {
            warm = Some(Warm {
                slot: least_recent(&last_used),
                tokens,
                low: true,
            });
        }
        let work = match &warm {
            Some(_) => match jobs.try_recv() {
                Ok(work) => work,
                Err(mpsc::TryRecvError::Empty) => {
                    warm_step(model, &mut slots, &mut warm, queued, warmed);
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
            },
            None => match jobs.recv() {
                Ok(work) => work,
                Err(_) => return,
            },
        };
        let job = match work {
            Work::Generate(job) => job,
            Work::Warm(tokens) => {
                match &warm {
                    Some(w) if !w.low => later = Some(tokens),
                    _ => {
                        warm = Some(Warm {
                            slot: least_recent(&last_used),
                            tokens,
                            low: true,
                        })
                    }
                }
                continue;
            }
        };
        queued.fetch_sub(1, Ordering::SeqCst);
        if crate::fault::fire("engine-panic") {
            panic!("injected fault: the engine thread dies");
        }
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
        clock += 1;
        last_used[slot] = clock;
        // The prompt being completed in the background is the one to keep.
        if let Some(w) = warm.as_ref().filter(|w| !w.low) {
            clock += 1;
            last_used[w.slot] = clock;
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

/// The cache a request runs in: the one holding (or being filled with, by the background rest
/// of a prompt) most of its prompt, or, when none holds a useful part of it, the least recently
/// used. A prompt that would take more than [`FOREGROUND_LIMIT`] tokens to compute there is
/// swapped for its fallback when that saves [`FALLBACK_SAVING`] tokens in another cache, and
/// itself becomes the background work. Returns the slot and whether the fallback runs.
fn choose_slot(
    slots: &[KvCache],
    last_used: &[u64],
    request: &mut Request,
    warm: &mut Option<Warm>,
) -> (usize, bool) {
    // A cache counts with the rest of a prompt the background is computing into it (a
    // request's own, not a guess): the rest of a prompt goes where its start is being
    // computed, though little of it may be there yet. Ties go to the cache used last.
    let promised = |i: usize, tokens: &[u32]| match warm.as_ref() {
        Some(w) if w.slot == i && !w.low => common_prefix(&w.tokens, tokens),
        _ => 0,
    };
    let best = |tokens: &[u32], except: Option<usize>| {
        let candidates = || (0..slots.len()).filter(move |&i| Some(i) != except);
        let longest = candidates()
            .map(|i| {
                let held = slots[i].common_prefix_len(tokens);
                (held.max(promised(i, tokens)), last_used[i], i)
            })
            .max();
        match longest {
            Some((n, _, i)) if n >= USEFUL_PREFIX.min(tokens.len()) => i,
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
                low: false,
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

/// The cache no request has used for longest.
fn least_recent(last_used: &[u64]) -> usize {
    (0..last_used.len())
        .min_by_key(|&i| last_used[i])
        .unwrap_or(0)
}

/// One short forward pass of the background prompt, given up between layers as soon as a job
/// arrives. The last prompt token is left to the request that needs its logits.
fn warm_step(
    model: &LoadedModel,
    slots: &mut [KvCache],
    warm: &mut Option<Warm>,
    queued: &AtomicUsize,
    warmed: &AtomicUsize,
) {
    let Some(w) = warm.as_ref() else {
        return;
    };
    let cache = &mut slots[w.slot];
    let reused = cache.common_prefix_len(&w.tokens);
    cache.truncate(reused);
    if reused + 1 >= w.tokens.len() {
        if w.low {
            warmed.fetch_add(1, Ordering::SeqCst);
        }
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
