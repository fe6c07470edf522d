//! The engine thread: the one owner of the model and its KV cache. Callers send requests over a
//! channel and receive text as it is generated; the async runtime never runs inference.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::error::{Error, Result};
use super::generate::{self, CancelToken, Finished, Request};
use super::kv_cache::KvCache;
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
                serve(&model, &jobs_rx);
            })
            .map_err(Error::Spawn)?;
        let (info, tokenizer) = ready_rx.recv().map_err(|_| Error::EngineGone)??;
        Ok(Self {
            jobs: Some(jobs_tx),
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
        self.jobs
            .as_ref()
            .ok_or(Error::EngineGone)?
            .send(job)
            .map_err(|_| Error::EngineGone)?;
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

fn serve(model: &LoadedModel, jobs: &mpsc::Receiver<Job>) {
    let mut cache = KvCache::new(model.model.n_layers());
    while let Ok(job) = jobs.recv() {
        let Job {
            request,
            cancel,
            events,
        } = job;
        // A receiver that is gone means nobody wants the answer: stop at the next token.
        let mut emit = |text: &str| {
            if events.send(Event::Text(text.to_owned())).is_err() {
                cancel.cancel();
            }
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generate::run(model, &mut cache, request, &cancel, &mut emit)
        }));
        let event = match outcome {
            Ok(Ok(finished)) => Event::Done(finished),
            Ok(Err(e)) => Event::Failed(e),
            Err(panic) => {
                // Keys/values may be half-written: start from an empty cache.
                cache.reset();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!("engine panicked: {what}");
                Event::Failed(Error::Panicked(what))
            }
        };
        let _ = events.send(event);
    }
}
