//! The language server: tower-lsp-server glue only. Capabilities, handlers, progress and messages;
//! buffers live in `documents`, suggestions come from `completion`. State sits behind a plain
//! `std::sync::Mutex` that is never held across an `.await`: every notification is applied before
//! the handler's first await, so edits keep their order even though tower-lsp runs handlers
//! concurrently, and a suggestion is only returned for the document version it was computed on.

mod convert;
mod framing;
mod panics;
mod running;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tower_lsp_server::gen_lsp_types as lsp;
use tower_lsp_server::jsonrpc::{Error as RpcError, Result as RpcResult};
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use crate::completion::{self, Ask, FsWorkspace, Place, Recent, Suggestion};
use crate::config::Settings;
use crate::context::Budget;
use crate::documents::{Documents, Encoding, Snapshot};
use crate::engine::{CancelToken, Engine, GenerationParams, Kernels, LoadStage};
use crate::models;
use running::{End, Follow, Running};
use status::{Status, StatusNotification};

/// Messages handled at once (the rest wait to be read).
const MESSAGES_IN_FLIGHT: usize = 64;

/// Changes the log filter (`tracing` directives such as `info` or `pyfill=debug`).
pub type LogLevel = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Serves LSP on stdin/stdout until the client says exit.
pub async fn serve(settings: Settings, log_level: LogLevel) {
    let (service, socket) = LspService::build(|client| Backend::new(client, settings, log_level))
        .custom_method("pyfill/status", Backend::status)
        .custom_method("pyfill/invalidMessage", Backend::invalid_message)
        .finish();
    // Frames pass the guard first, so a bad one gets an error instead of stopping the reader.
    let (guarded, input) = tokio::io::duplex(1 << 20);
    tokio::spawn(framing::guard(tokio::io::stdin(), guarded));
    // tower-lsp reads the next message only while fewer than this many handlers run. Its
    // default, 4, let four suggestions still being computed stop the reading of the keystrokes
    // (and requests) that would supersede them: under fast typing over several files, answers
    // backed up for tens of seconds. Per document only the newest request computes; the others
    // end at once, so this bounds the messages in flight, not the work.
    Server::new(input, tokio::io::stdout(), socket)
        .concurrency_level(MESSAGES_IN_FLIGHT)
        .serve(panics::CatchPanics(service))
        .await;
}

enum EngineState {
    Disabled,
    Loading,
    Ready(Arc<Engine>),
    Failed(String),
}

struct State {
    documents: Documents,
    encoding: Encoding,
    settings: Settings,
    engine: EngineState,
    /// Bumped per load, so a slow load that was superseded by a newer one is discarded.
    load_generation: u64,
    /// The suggestion being computed per document; a newer request cancels it unless its user
    /// typed along it.
    in_flight: HashMap<String, Running>,
    next_request: u64,
    progress_supported: bool,
    /// A problem with the initial settings, shown once the client is ready for messages.
    pending_warning: Option<String>,
    /// Workspace folders, for paths in prompts and related code from other files.
    roots: Vec<PathBuf>,
    /// Suggestions just given, to answer keystrokes that type along them.
    recent: Recent,
    /// What the last `pyfill/status` said.
    status: Status,
    /// Taken while a status is checked against the load generation and sent, so an older load's
    /// status cannot go out after a newer one's.
    status_order: Arc<tokio::sync::Mutex<()>>,
    /// A request found the engine thread gone (it may still be unwinding).
    engine_died: bool,
    /// The remote backend's server failed the last request (this message was shown once).
    remote_trouble: Option<String>,
}

pub struct Backend {
    client: Client,
    state: Arc<Mutex<State>>,
    log_level: LogLevel,
}

impl Backend {
    fn new(client: Client, settings: Settings, log_level: LogLevel) -> Self {
        Self {
            client,
            log_level,
            state: Arc::new(Mutex::new(State {
                documents: Documents::default(),
                encoding: Encoding::Utf16,
                settings,
                engine: EngineState::Loading,
                load_generation: 0,
                in_flight: HashMap::new(),
                next_request: 0,
                progress_supported: false,
                pending_warning: None,
                roots: Vec::new(),
                recent: Recent::default(),
                status: Status::loading(None, 0, "starting"),
                status_order: Arc::default(),
                engine_died: false,
                remote_trouble: None,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the documents half-edited in a way that
        // matters more than stopping the server would; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the model named by the settings on a blocking worker, reporting how far it got as
    /// `pyfill/status` and, when the client supports it, `$/progress`. Requests meanwhile get
    /// empty answers.
    fn start_loading(&self) {
        let (generation, settings, progress) = {
            let mut st = self.state();
            st.load_generation += 1;
            st.engine_died = false;
            st.remote_trouble = None;
            st.engine = if st.settings.enable {
                EngineState::Loading
            } else {
                EngineState::Disabled
            };
            (
                st.load_generation,
                st.settings.clone(),
                st.progress_supported,
            )
        };
        let client = self.client.clone();
        let state = self.state.clone();
        if !settings.enable {
            tokio::spawn(async move {
                tell(&client, &state, generation, Status::disabled()).await;
            });
            return;
        }
        if let Some(options) = settings.remote() {
            let tokenizer = settings.tokenizer.clone();
            tokio::spawn(async move {
                let endpoint = options.endpoint.clone();
                let started = tokio::task::spawn_blocking(move || {
                    crate::remote::engine(options, tokenizer.as_deref())
                })
                .await;
                match started {
                    Ok(Ok(engine)) => {
                        let message = format!(
                            "model ready: suggestions from {} ({})",
                            endpoint,
                            engine.info().architecture
                        );
                        tracing::info!("{message}");
                        {
                            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                            if st.load_generation == generation {
                                st.engine = EngineState::Ready(Arc::new(engine));
                            }
                        }
                        tell(
                            &client,
                            &state,
                            generation,
                            Status::ready(endpoint, message.clone()),
                        )
                        .await;
                        client.log_message(lsp::MessageType::Info, message).await;
                    }
                    outcome => {
                        let message = match outcome {
                            Ok(Err(e)) => format!("pyfill: {e}"),
                            Err(e) => format!("pyfill: the remote backend failed to start: {e}"),
                            Ok(Ok(_)) => return,
                        };
                        fail_load(&state, generation, message.clone());
                        let status = Status::error(Some(endpoint), message.clone(), false);
                        tell(&client, &state, generation, status).await;
                        client.show_message(lsp::MessageType::Error, message).await;
                    }
                }
            });
            return;
        }
        tokio::spawn(async move {
            let path = match model_path(&settings) {
                Ok(p) => p,
                Err(missing) => {
                    fail_load(&state, generation, missing.message.clone());
                    let status = Status::error(
                        Some(missing.path.display().to_string()),
                        missing.message.clone(),
                        true,
                    );
                    tell(&client, &state, generation, status).await;
                    client
                        .show_message(lsp::MessageType::Error, missing.message)
                        .await;
                    return;
                }
            };
            let model = path.display().to_string();
            let title = format!("loading {model}");
            tell(
                &client,
                &state,
                generation,
                Status::loading(Some(model.clone()), 0, title.clone()),
            )
            .await;
            let ongoing = if progress {
                let token = lsp::ProgressToken::String(format!("pyfill-load-{generation}"));
                match client.create_work_done_progress(token.clone()).await {
                    Ok(()) => Some(
                        client
                            .progress(token, "pyfill")
                            .with_percentage(0)
                            .with_message(title.clone())
                            .begin()
                            .await,
                    ),
                    Err(_) => None,
                }
            } else {
                None
            };
            let (stages_tx, mut stages) = tokio::sync::mpsc::unbounded_channel();
            // Reports go out in order and end (the engine drops its sender) before "ready".
            let reporter = {
                let (client, state, model) = (client.clone(), state.clone(), model.clone());
                tokio::spawn(async move {
                    let mut shown = None;
                    while let Some(stage) = stages.recv().await {
                        let percentage = status::load_percentage(stage);
                        // Steps of 5%: a few dozen messages, not one per tensor.
                        if shown.is_some_and(|p| percentage < p + 5) {
                            continue;
                        }
                        shown = Some(percentage);
                        let message = match stage {
                            LoadStage::Reading(_) => format!("loading {model}"),
                            LoadStage::Measuring => "measuring speed".to_owned(),
                        };
                        if let Some(p) = &ongoing {
                            p.report_with_message(message.clone(), percentage).await;
                        }
                        let status = Status::loading(Some(model.clone()), percentage, message);
                        tell(&client, &state, generation, status).await;
                    }
                    ongoing
                })
            };
            let load_path = path.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                Engine::start_reporting(&load_path, Kernels::Fast, move |stage| {
                    let _ = stages_tx.send(stage);
                })
            })
            .await;
            let ongoing = reporter.await.ok().flatten();
            let outcome = match loaded {
                Ok(Ok(engine)) => Ok(engine),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) if e.is_cancelled() => return,
                Err(e) => Err(format!("model loading panicked: {e}")),
            };
            match outcome {
                Ok(engine) => {
                    let info = engine.info().clone();
                    {
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        if st.load_generation == generation {
                            st.engine = EngineState::Ready(Arc::new(engine));
                        }
                    }
                    let message = format!(
                        "model ready: {} ({}, {} layers, {} threads)",
                        path.display(),
                        info.architecture,
                        info.layers,
                        crate::engine::threads()
                    );
                    tracing::info!("{message}");
                    if let Some(p) = ongoing {
                        p.finish_with_message(message.clone()).await;
                    }
                    tell(
                        &client,
                        &state,
                        generation,
                        Status::ready(model, message.clone()),
                    )
                    .await;
                    client.log_message(lsp::MessageType::Info, message).await;
                }
                Err(message) => {
                    let message = format!("pyfill: {message}");
                    fail_load(&state, generation, message.clone());
                    if let Some(p) = ongoing {
                        p.finish_with_message("failed").await;
                    }
                    let status = Status::error(Some(model), message.clone(), false);
                    tell(&client, &state, generation, status).await;
                    client.show_message(lsp::MessageType::Error, message).await;
                }
            }
        });
    }

    /// A frame the guard could not pass on: answered with its error.
    async fn invalid_message(&self, params: framing::Invalid) -> RpcResult<()> {
        Err(RpcError {
            code: params.code.into(),
            message: params.message.into(),
            data: None,
        })
    }

    /// The last status sent (what a `pyfill/status` request gets).
    async fn status(&self) -> RpcResult<Status> {
        Ok(self.state().status.clone())
    }

    /// The snapshot, byte offset and engine for a request, and the suggestion it waits for:
    /// one it typed along (answered at once), the one being computed for the document if the
    /// user typed along its text so far, or a new one (which cancels the older). `None` when
    /// there is nothing to compute (not open, model not ready, disabled).
    fn begin_request(&self, uri: &lsp::Uri, position: lsp::Position) -> RpcResult<Option<Request>> {
        let mut guard = self.state();
        let st = &mut *guard;
        let Some(snapshot) = st.documents.snapshot(uri.as_ref()) else {
            tracing::warn!("suggestion asked for {uri}, which is not open");
            return Ok(None);
        };
        let encoding = st.encoding;
        let offset = snapshot
            .offset(convert::position(position), encoding)
            .map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let engine = match &st.engine {
            EngineState::Ready(engine) if st.engine_died || !engine.alive() => {
                st.engine_died = false;
                tracing::error!("the engine thread stopped; loading the model again");
                drop(guard);
                self.start_loading();
                return Ok(None);
            }
            EngineState::Ready(engine) => engine.clone(),
            EngineState::Failed(why) => {
                tracing::debug!("no suggestion: {why}");
                return Ok(None);
            }
            EngineState::Loading | EngineState::Disabled => return Ok(None),
        };
        let uri = uri.as_ref().to_owned();
        let text = snapshot.text();
        let word_len = word_before(&text, offset).len();
        let mut request = Request {
            uri,
            snapshot,
            offset,
            encoding,
            engine,
            ask: None,
            word_len,
            place: None,
            ready: None,
            follow: None,
        };
        if let Some(ready) = st.recent.typed_along(&request.uri, &text, offset) {
            // Whatever runs for this document is stale now; this answer needs no work.
            if let Some(older) = st.in_flight.remove(&request.uri) {
                older.cancel.cancel();
            }
            request.ready = Some(ready);
            return Ok(Some(request));
        }
        request.follow = st.in_flight.get(&request.uri).and_then(|running| {
            let typed = st
                .recent
                .typed_since(running.place.as_ref()?, &text, offset)?;
            running.join(typed)
        });
        request.place = st.recent.place(&text, offset);
        let ask = ask_for(st, &request.uri, text, &request.snapshot, offset);
        if request.follow.is_some() {
            // Kept in case the suggestion goes another way than the user typed.
            request.ask = Some(ask);
        } else {
            request.follow = Some(self.start(st, &request, ask));
        }
        Ok(Some(request))
    }

    /// Starts computing a suggestion for `request`'s document (cancelling the older one) on a
    /// task of its own, which remembers it for typing along when done.
    fn start(&self, st: &mut State, request: &Request, ask: Ask) -> Follow {
        st.next_request += 1;
        let id = st.next_request;
        let cancel = CancelToken::default();
        let (running, progress, follow) = Running::new(id, request.place, cancel.clone());
        if let Some(older) = st.in_flight.insert(request.uri.clone(), running) {
            older.cancel.cancel();
        }
        let client = self.client.clone();
        let (state, engine, uri, place) = (
            self.state.clone(),
            request.engine.clone(),
            request.uri.clone(),
            request.place,
        );
        let asked = Ask {
            cold_window: false,
            ..ask.clone()
        };
        tokio::spawn(async move {
            // On a task of its own, so a panic there still ends the waits with an error.
            let generation = tokio::spawn({
                let (engine, progress, state) = (engine.clone(), progress.clone(), state.clone());
                let client = client.clone();
                async move {
                    let outcome = completion::suggest(engine.clone(), ask, cancel, |text| {
                        progress.send_modify(|p| p.text.push_str(text));
                    })
                    .await;
                    // A remote server that cannot be reached gives empty suggestions and one
                    // message per outage, not one per keystroke.
                    let outcome = match outcome {
                        Err(crate::engine::Error::Remote { endpoint, reason }) => {
                            let message = format!("pyfill: {endpoint}: {reason}");
                            let first = lock(&state)
                                .remote_trouble
                                .replace(message.clone())
                                .is_none();
                            if first {
                                tracing::error!(
                                    "{message} (suggestions stay empty until it answers)"
                                );
                                client
                                    .show_message(lsp::MessageType::Warning, message)
                                    .await;
                            } else {
                                tracing::debug!("{message}");
                            }
                            Ok(None)
                        }
                        // Only an answer shows the server is back (a request cancelled before it
                        // reached the server says nothing about it).
                        Ok(Some(suggestion)) => {
                            if lock(&state).remote_trouble.take().is_some() {
                                tracing::info!("the server answers again");
                            }
                            Ok(Some(suggestion))
                        }
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                    outcome.map_err(|e| {
                        if matches!(e, crate::engine::Error::EngineGone) {
                            // The next request starts a new engine, unless this one was
                            // replaced already.
                            let mut st = lock(&state);
                            if matches!(&st.engine, EngineState::Ready(current) if Arc::ptr_eq(current, &engine))
                            {
                                st.engine_died = true;
                            }
                        }
                        e.to_string()
                    })
                }
            });
            let outcome = generation
                .await
                .unwrap_or_else(|e| Err(format!("the suggestion task failed: {e}")));
            // The next request is likely after this one is accepted: compute its prompt ahead.
            if let Ok(Some(suggestion)) = &outcome
                && !suggestion.text.trim().is_empty()
            {
                let (engine, text) = (engine.clone(), suggestion.text.clone());
                tokio::spawn(async move {
                    if let Err(e) = completion::warm_after(engine, asked, text).await {
                        tracing::debug!("no prompt computed ahead: {e}");
                    }
                });
            }
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                if st.in_flight.get(&uri).is_some_and(|r| r.id == id) {
                    st.in_flight.remove(&uri);
                }
                if let (Ok(Some(suggestion)), Some(place)) = (&outcome, place) {
                    st.recent.remember(&uri, place, suggestion);
                }
            }
            if let Err(e) = &outcome {
                tracing::error!("suggestion failed: {e}");
            }
            progress.send_modify(|p| p.outcome = Some(outcome));
        });
        follow
    }

    /// Runs a request to its suggestion; `None` if it was superseded, cancelled, or the document
    /// changed meanwhile (the client asks again for the new text).
    async fn run(&self, mut request: Request) -> RpcResult<Option<(Suggestion, Request)>> {
        if let Some(suggestion) = request.ready.take() {
            tracing::debug!("typed along the last suggestion: answered without the model");
            return Ok(Some((suggestion, request)));
        }
        let Some(mut follow) = request.follow.take() else {
            return Ok(None);
        };
        let suggestion = loop {
            let rest = match follow.end().await {
                End::Finished(Ok(Some(suggestion))) => Recent::rest(&suggestion, &follow.typed),
                // Cancelled (by a newer request), or a newer request joined it.
                End::Finished(Ok(None)) | End::Superseded => return Ok(None),
                End::Finished(Err(message)) => {
                    return Err(RpcError {
                        code: tower_lsp_server::jsonrpc::ErrorCode::InternalError,
                        message: format!("pyfill: {message}").into(),
                        data: None,
                    });
                }
                End::Diverged => None,
            };
            if let Some(rest) = rest {
                if !follow.typed.is_empty() {
                    tracing::debug!("typed along the running suggestion: it went on");
                }
                break rest;
            }
            // A keystroke that joined a suggestion which went another way (or that it typed
            // all of) asks the model itself, unless newer text or a newer request came.
            let Some(ask) = request.ask.take() else {
                return Ok(None);
            };
            let mut st = self.state();
            let newer_text = st.documents.snapshot(&request.uri).map(|s| s.version)
                != Some(request.snapshot.version);
            let newer_request = st
                .in_flight
                .get(&request.uri)
                .is_some_and(|running| running.id != follow.id);
            if newer_text || newer_request {
                return Ok(None);
            }
            follow = self.start(&mut st, &request, ask);
        };
        let current_version = self
            .state()
            .documents
            .snapshot(&request.uri)
            .map(|s| s.version);
        if current_version != Some(request.snapshot.version) {
            return Ok(None);
        }
        Ok(Some((suggestion, request)))
    }
}

struct Request {
    uri: String,
    snapshot: Snapshot,
    offset: usize,
    encoding: Encoding,
    engine: Arc<Engine>,
    /// What to ask the model, if this request has to start a suggestion of its own.
    ask: Option<Ask>,
    /// Length of the identifier before the cursor, which a completion item replaces.
    word_len: usize,
    /// Where the cursor is, to remember the suggestion by.
    place: Option<Place>,
    /// The answer, when the user typed along a recent suggestion.
    ready: Option<Suggestion>,
    /// The suggestion being computed that this request waits for.
    follow: Option<Follow>,
}

/// What to ask the model for `text` (the text of `snapshot`) with the cursor at byte `offset`.
fn ask_for(st: &State, uri: &str, text: String, snapshot: &Snapshot, offset: usize) -> Ask {
    let settings = &st.settings;
    let (path, workspace) = workspace_of(st, uri);
    // A large document or a long line: the prompt is built from the text around the cursor.
    let (text, offset, tree) = match snapshot.excerpt(offset) {
        Some(excerpt) => (excerpt.text, excerpt.offset, None),
        None => (text, offset, snapshot.tree.clone()),
    };
    Ask {
        text,
        tree,
        offset,
        path,
        workspace,
        budget: Budget {
            prefix_tokens: settings.prefix_tokens,
            suffix_tokens: settings.suffix_tokens,
            related_tokens: settings.related_tokens,
            lost_docstring: false,
        },
        params: GenerationParams {
            max_tokens: settings.max_tokens,
            max_time: (settings.timeout_ms > 0).then(|| Duration::from_millis(settings.timeout_ms)),
            ..GenerationParams::default()
        },
        prompt_format: settings.prompt_format.clone(),
        block_prompt: settings.block_prompt.clone(),
        layout: crate::prompt::Layout::default(),
        cold_window: true,
        cold_prefix_tokens: None,
    }
}

/// The document's path in its workspace folder, and the folder with the other open buffers in
/// it; a document outside every folder is its own workspace (named, no neighbours).
fn workspace_of(st: &State, uri: &str) -> (Option<String>, FsWorkspace) {
    let Some(file) = convert::file_path(uri) else {
        return (None, FsWorkspace::default());
    };
    let root = st
        .roots
        .iter()
        .filter(|r| file.starts_with(r))
        .max_by_key(|r| r.as_os_str().len());
    let Some(root) = root else {
        let name = file.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        return (name, FsWorkspace::default());
    };
    let open = st
        .documents
        .iter()
        .filter(|(other, _)| *other != uri)
        .filter_map(|(other, document)| {
            let path = convert::file_path(other)?;
            Some((completion::relative_path(root, &path)?, document.text()))
        })
        .collect();
    (
        completion::relative_path(root, &file),
        FsWorkspace {
            root: Some(root.clone()),
            open,
        },
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail_load(state: &Mutex<State>, generation: u64, message: String) {
    tracing::error!("{message}");
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if st.load_generation == generation {
        st.engine = EngineState::Failed(message);
    }
}

/// The default model is not where it should be.
struct MissingModel {
    path: PathBuf,
    message: String,
}

fn model_path(settings: &Settings) -> Result<PathBuf, MissingModel> {
    if let Some(p) = &settings.model {
        return Ok(p.clone());
    }
    let path = models::default_model_path().map_err(|e| MissingModel {
        path: PathBuf::new(),
        message: format!("pyfill: {e}"),
    })?;
    if path.exists() {
        Ok(path)
    } else {
        Err(MissingModel {
            message: format!(
                "pyfill: no model at {}: run `pyfill model fetch`, or set the `model` setting to a GGUF file",
                path.display()
            ),
            path,
        })
    }
}

/// Records `status` as current and sends it, unless a newer load took over.
async fn tell(client: &Client, state: &Mutex<State>, generation: u64, status: Status) {
    let order = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .status_order
        .clone();
    let _turn = order.lock().await;
    {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if st.load_generation != generation {
            return;
        }
        st.status = status.clone();
    }
    client.send_notification::<StatusNotification>(status).await;
}

/// The identifier characters right before `offset` (what the client's completion filter sees).
fn word_before(text: &str, offset: usize) -> &str {
    let before = &text[..offset];
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
        .last()
        .map_or(offset, |(i, _)| i);
    &before[start..]
}

fn capabilities(encoding: Encoding) -> lsp::ServerCapabilities {
    lsp::ServerCapabilities {
        position_encoding: Some(convert::encoding_kind(encoding)),
        text_document_sync: Some(lsp::TextDocumentSync::Options(
            lsp::TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(lsp::TextDocumentSyncKind::Incremental),
                save: Some(lsp::Save::Bool(true)),
                ..Default::default()
            },
        )),
        completion_provider: Some(lsp::CompletionOptions {
            resolve_provider: Some(false),
            ..Default::default()
        }),
        inline_completion_provider: Some(lsp::InlineCompletionProvider::Bool(true)),
        ..Default::default()
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: lsp::InitializeParams) -> RpcResult<lsp::InitializeResult> {
        let encoding = convert::negotiate_encoding(&params);
        {
            let mut st = self.state();
            st.encoding = encoding;
            st.roots = convert::workspace_roots(&params);
            st.progress_supported = params
                .capabilities
                .window
                .as_ref()
                .and_then(|w| w.work_done_progress)
                .unwrap_or(false);
            if let Some(options) = &params.initialization_options {
                match st.settings.merged(options) {
                    Ok(s) => st.settings = s,
                    Err(e) => st.pending_warning = Some(format!("pyfill: {e}; using defaults")),
                }
            }
            if let Some(n) = st.settings.threads {
                // No model has run yet: the kernels' pool has not started.
                crate::engine::configure_threads(n);
            }
            if let Some(level) = &st.settings.log_level
                && let Err(e) = (self.log_level)(level)
            {
                st.pending_warning = Some(format!("pyfill: logLevel '{level}': {e}"));
            }
        }
        Ok(lsp::InitializeResult {
            capabilities: capabilities(encoding),
            server_info: Some(lsp::ServerInfo {
                name: "pyfill".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: lsp::InitializedParams) {
        self.start_loading();
        let warning = self.state().pending_warning.take();
        if let Some(w) = warning {
            self.client.show_message(lsp::MessageType::Warning, w).await;
        }
    }

    async fn shutdown(&self) -> RpcResult<()> {
        let mut st = self.state();
        for (_, running) in st.in_flight.drain() {
            running.cancel.cancel();
        }
        Ok(())
    }

    async fn did_open(&self, params: lsp::DidOpenTextDocumentParams) {
        let doc = params.text_document;
        let uri = doc.uri.as_ref();
        let warm = {
            let mut st = self.state();
            st.documents.open(uri, &doc.text, doc.version);
            // Computed ahead for the end of the file, where new code is written (and whose
            // prompt shares its start with any cursor's in a file that fits the window).
            match (&st.engine, st.documents.snapshot(uri)) {
                (EngineState::Ready(engine), Some(snapshot)) => {
                    let end = doc.text.len();
                    let ask = Ask {
                        cold_window: false,
                        ..ask_for(&st, uri, doc.text, &snapshot, end)
                    };
                    Some((engine.clone(), ask))
                }
                _ => None,
            }
        };
        if let Some((engine, ask)) = warm {
            tokio::spawn(async move {
                if let Err(e) = completion::warm(engine, ask).await {
                    tracing::debug!("no prompt computed ahead: {e}");
                }
            });
        }
    }

    async fn did_change(&self, params: lsp::DidChangeTextDocumentParams) {
        let uri = params.text_document.text_document_identifier.uri;
        let version = params.text_document.version;
        let changes: Vec<_> = params
            .content_changes
            .into_iter()
            .map(convert::change)
            .collect();
        let mut st = self.state();
        let encoding = st.encoding;
        match st
            .documents
            .change(uri.as_ref(), &changes, version, encoding)
        {
            None => tracing::warn!("didChange for {uri}, which is not open"),
            Some(errors) => {
                for e in errors {
                    tracing::warn!("{uri}: change rejected: {e}");
                }
            }
        }
    }

    async fn did_save(&self, _: lsp::DidSaveTextDocumentParams) {}

    async fn did_close(&self, params: lsp::DidCloseTextDocumentParams) {
        let uri = params.text_document.uri;
        let mut st = self.state();
        st.documents.close(uri.as_ref());
        st.recent.forget(uri.as_ref());
        if let Some(running) = st.in_flight.remove(uri.as_ref()) {
            running.cancel.cancel();
        }
    }

    async fn did_change_configuration(&self, params: lsp::DidChangeConfigurationParams) {
        let outcome = {
            let mut st = self.state();
            match st.settings.merged(&params.settings).and_then(|new| {
                match &new.log_level {
                    Some(level) if new.log_level != st.settings.log_level => {
                        (self.log_level)(level).map_err(|e| format!("logLevel '{level}': {e}"))?
                    }
                    _ => {}
                }
                Ok(new)
            }) {
                Ok(new) => {
                    let reload = st.settings.engine_changed(&new);
                    let threads_changed = new.threads != st.settings.threads;
                    st.settings = new;
                    Ok((reload, threads_changed))
                }
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok((reload, threads_changed)) => {
                if threads_changed {
                    self.client
                        .show_message(
                            lsp::MessageType::Info,
                            "pyfill: the threads setting takes effect when the server restarts",
                        )
                        .await;
                }
                if reload {
                    self.start_loading();
                }
            }
            Err(e) => {
                self.client
                    .show_message(
                        lsp::MessageType::Error,
                        format!("pyfill: {e}; keeping the previous settings"),
                    )
                    .await
            }
        }
    }

    async fn inline_completion(
        &self,
        params: lsp::InlineCompletionParams,
    ) -> RpcResult<Option<lsp::InlineCompletionResponse>> {
        if crate::fault::fire("handler-panic") {
            panic!("injected fault: an inline completion handler fails");
        }
        let at = params.text_document_position_params;
        let Some(request) = self.begin_request(&at.text_document.uri, at.position)? else {
            return Ok(empty_inline());
        };
        let Some((suggestion, request)) = self.run(request).await? else {
            return Ok(empty_inline());
        };
        let cursor = request.snapshot.position(request.offset, request.encoding);
        let item = lsp::InlineCompletionItem {
            insert_text: lsp::InsertText::String(suggestion.text),
            filter_text: None,
            range: Some(lsp::Range {
                start: convert::to_position(cursor),
                end: convert::to_position(cursor),
            }),
            command: None,
        };
        Ok(Some(lsp::InlineCompletionResponse::InlineCompletionList(
            lsp::InlineCompletionList { items: vec![item] },
        )))
    }

    async fn completion(
        &self,
        params: lsp::CompletionParams,
    ) -> RpcResult<Option<lsp::CompletionResponse>> {
        let at = params.text_document_position_params;
        let Some(request) = self.begin_request(&at.text_document.uri, at.position)? else {
            return Ok(Some(completion_list(Vec::new())));
        };
        let Some((suggestion, request)) = self.run(request).await? else {
            return Ok(Some(completion_list(Vec::new())));
        };
        let start_offset = request.offset - request.word_len;
        let start = request.snapshot.position(start_offset, request.encoding);
        let end = request.snapshot.position(request.offset, request.encoding);
        let word = request
            .snapshot
            .rope
            .byte_slice(start_offset..request.offset)
            .to_string();
        let full = format!("{word}{}", suggestion.text);
        let first_line = full.lines().next().unwrap_or_default();
        let label: String = if first_line.chars().count() > 60 {
            first_line
                .chars()
                .take(59)
                .chain(std::iter::once('…'))
                .collect()
        } else {
            first_line.to_owned()
        };
        let item = lsp::CompletionItem {
            label,
            kind: Some(lsp::CompletionItemKind::Text),
            detail: Some("pyfill".into()),
            documentation: Some(lsp::Documentation::MarkupContent(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value: format!("```python\n{full}\n```"),
            })),
            sort_text: Some("0".into()),
            filter_text: Some(full.clone()),
            preselect: Some(true),
            text_edit: Some(lsp::CompletionItemTextEdit::TextEdit(lsp::TextEdit {
                range: lsp::Range {
                    start: convert::to_position(start),
                    end: convert::to_position(end),
                },
                new_text: full,
            })),
            ..Default::default()
        };
        Ok(Some(completion_list(vec![item])))
    }
}

fn empty_inline() -> Option<lsp::InlineCompletionResponse> {
    Some(lsp::InlineCompletionResponse::InlineCompletionList(
        lsp::InlineCompletionList { items: Vec::new() },
    ))
}

/// Always incomplete: the client asks again as the user types, so the suggestion follows.
fn completion_list(items: Vec<lsp::CompletionItem>) -> lsp::CompletionResponse {
    lsp::CompletionResponse::CompletionList(lsp::CompletionList {
        is_incomplete: true,
        item_defaults: None,
        apply_kind: None,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_before_takes_identifier_characters() {
        assert_eq!(word_before("    return fo", 13), "fo");
        assert_eq!(word_before("x = (", 5), "");
        assert_eq!(word_before("é_1", "é_1".len()), "é_1");
    }
}
