//! Generation on an inference server people already run, instead of the in-process engine:
//! llama.cpp's `llama-server` (`/completion`), an OpenAI-compatible `/v1/completions` (vLLM,
//! TGI's OpenAI mode, Ollama, llama-server's own) or TGI's `/generate_stream`. pyfill keeps the
//! editor side: the prompt it sends is the one the local engine would compute (special tokens
//! written out as text, which these servers parse back), and the stop rules and tidying run
//! here on the streamed text.
//!
//! Every request streams (server-sent events), so a cancelled request stops reading within one
//! token and drops its connection, which is how these servers learn to stop (llama-server
//! frees its slot within a token). Connection errors and 5xx/429 answers are retried with
//! backoff until text starts to arrive; other errors come back at once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::engine::{
    CancelToken, Engine, Error, FinishReason, Finished, GenerationParams, GgufFile, ModelInfo,
    Request, Tokenizer,
};

/// An engine on `options`' server (nothing loads here), with the tokenizer from `tokenizer`
/// (a GGUF, whose weights are not read, or a `tokenizer.json`), else a byte count.
pub fn engine(options: Options, tokenizer: Option<&Path>) -> Result<Engine, Error> {
    let client = Client::new(options)?;
    let (tokenizer, context_length) = match tokenizer {
        Some(path) if path.extension().is_some_and(|e| e == "json") => {
            (Tokenizer::from_json(path)?, DEFAULT_CONTEXT)
        }
        Some(path) => {
            let gguf = GgufFile::open(path)?;
            let arch = gguf.string("general.architecture").unwrap_or("llama");
            let context = gguf
                .opt_usize(&format!("{arch}.context_length"))
                .ok()
                .flatten()
                .unwrap_or(DEFAULT_CONTEXT);
            (Tokenizer::from_gguf(&gguf)?, context.min(MAX_CONTEXT))
        }
        None => {
            tracing::warn!(
                "no tokenizer for the remote backend (the `tokenizer` setting, a GGUF or \
                 tokenizer.json): prompt budgets count bytes, an estimate (about 3 bytes per \
                 token), so prompts carry less of the file"
            );
            (Tokenizer::estimate(), DEFAULT_CONTEXT)
        }
    };
    let options = client.options();
    let info = ModelInfo {
        path: PathBuf::from(&options.endpoint),
        architecture: format!("remote {}", options.backend.name()),
        name: options.model.clone(),
        layers: 0,
        context_length,
        vocab_size: tokenizer.vocab_size(),
        remote: true,
    };
    Engine::start_remote(client, tokenizer, info)
}

/// The context prompts are fitted to when the tokenizer does not tell (servers are often
/// started with 4096).
const DEFAULT_CONTEXT: usize = 4096;

/// At most this much of a model's context is used for prompts, whatever its file says.
const MAX_CONTEXT: usize = 8192;

/// Log directives that keep the HTTP client's own logs at `info` whatever the filter says: at
/// `trace` they dump the bytes sent, API key included.
pub const QUIET_LOGS: &[&str] = &["ureq=info", "ureq_proto=info", "rustls=info"];

/// Which server generates.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The in-process engine on this machine's CPU.
    #[default]
    Local,
    /// llama.cpp's `llama-server`: `POST /completion` with the FIM prompt.
    LlamaCpp,
    /// An OpenAI-compatible server: `POST /v1/completions` with the FIM prompt (vLLM, TGI's
    /// OpenAI mode, llama-server, Ollama).
    Openai,
    /// Hugging Face text-generation-inference: `POST /generate_stream`.
    Tgi,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::LlamaCpp => "llama-cpp",
            Self::Openai => "openai",
            Self::Tgi => "tgi",
        }
    }
}

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    /// Base URL, e.g. `http://127.0.0.1:8080` (for OpenAI servers `.../v1` works too).
    pub endpoint: String,
    /// The model name OpenAI-compatible servers want (`model`); others ignore it.
    pub model: Option<String>,
    /// Name of the environment variable that holds the API key, sent as a bearer token.
    pub api_key_env: Option<String>,
    /// Longest a request may take, connection and generation included.
    pub timeout: Duration,
    /// Extra attempts after a connection error or a 5xx/429 answer.
    pub retries: u32,
}

/// Text the servers must stop at: the control tokens that end a file or start another part
/// of a prompt (the servers drop end-of-text themselves; TGI and some others keep stop strings
/// in the text, so they are also cut here). At most 4 (TGI's and OpenAI's limit).
const STOP_STRINGS: [&str; 4] = [
    "<|endoftext|>",
    "<|file_sep|>",
    "<|fim_prefix|>",
    "<|im_end|>",
];

/// First wait between attempts; each next one is 4 times longer.
const BACKOFF: Duration = Duration::from_millis(200);

pub struct Client {
    options: Options,
    api_key: Option<String>,
}

impl Client {
    /// Checks the endpoint and reads the API key's variable (the key is never logged).
    pub fn new(options: Options) -> Result<Self, Error> {
        let fail = |reason: String| Error::Remote {
            endpoint: options.endpoint.clone(),
            reason,
        };
        if options.backend == Backend::Local {
            return Err(fail("the local backend has no endpoint".into()));
        }
        let url =
            url::Url::parse(&options.endpoint).map_err(|e| fail(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail(
                "the endpoint must be an http:// or https:// URL".into(),
            ));
        }
        let api_key = match &options.api_key_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| fail(format!("the API key variable {var} is not set")))?,
            ),
            None => None,
        };
        Ok(Self { options, api_key })
    }

    /// A connection for one attempt that may take `time`: its own agent, so cancelling it
    /// (`Agent::shutdown`) interrupts this request alone, even while it waits for the server's
    /// first byte (a prompt still being computed there). The price is a new connection per
    /// request.
    fn agent(&self, time: Duration) -> ureq::Agent {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(time))
            .timeout_connect(Some(time.min(Duration::from_secs(3))))
            // Error statuses are answers to read (their bodies say why), not transport errors.
            .http_status_as_error(false)
            .build()
            .into()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The URL requests go to.
    fn url(&self) -> String {
        let base = self.options.endpoint.trim_end_matches('/');
        match self.options.backend {
            Backend::LlamaCpp => format!("{base}/completion"),
            Backend::Openai if base.ends_with("/v1") => format!("{base}/completions"),
            Backend::Openai => format!("{base}/v1/completions"),
            Backend::Tgi => format!("{base}/generate_stream"),
            Backend::Local => base.to_owned(),
        }
    }

    /// The request body for `prompt`.
    fn body(&self, prompt: &str, params: &GenerationParams, max_time: Option<Duration>) -> Value {
        let greedy = params.temperature <= 0.0;
        match self.options.backend {
            Backend::LlamaCpp | Backend::Local => {
                let mut body = json!({
                    "prompt": prompt,
                    "n_predict": params.max_tokens,
                    "temperature": params.temperature.max(0.0),
                    "stop": STOP_STRINGS,
                    "cache_prompt": true,
                    "stream": true,
                });
                if greedy {
                    body["top_k"] = json!(1);
                } else {
                    body["seed"] = json!(params.seed);
                    body["top_k"] = json!(params.top_k.unwrap_or(0));
                    body["top_p"] = json!(params.top_p.unwrap_or(1.0));
                }
                if let Some(t) = max_time {
                    body["t_max_predict_ms"] = json!(t.as_millis() as u64);
                }
                body
            }
            Backend::Openai => {
                let mut body = json!({
                    "model": self.options.model.clone().unwrap_or_default(),
                    "prompt": prompt,
                    "max_tokens": params.max_tokens,
                    "temperature": params.temperature.max(0.0),
                    "stop": STOP_STRINGS,
                    "stream": true,
                });
                if !greedy {
                    body["seed"] = json!(params.seed);
                    body["top_p"] = json!(params.top_p.unwrap_or(1.0));
                }
                body
            }
            Backend::Tgi => {
                // Without `parameters`, TGI samples; temperature 0 is refused (greedy is
                // `do_sample: false`).
                let mut parameters = json!({
                    "max_new_tokens": params.max_tokens,
                    "stop": STOP_STRINGS,
                    "do_sample": !greedy,
                    "details": false,
                });
                if !greedy {
                    parameters["temperature"] = json!(params.temperature);
                    parameters["seed"] = json!(params.seed);
                    if let Some(k) = params.top_k {
                        parameters["top_k"] = json!(k);
                    }
                    if let Some(p) = params.top_p {
                        parameters["top_p"] = json!(p);
                    }
                }
                json!({ "inputs": prompt, "parameters": parameters })
            }
        }
    }

    /// Generates after `prompt` (already laid out with its special tokens as text), giving
    /// each new piece of text to `emit`, until the server ends, `request.stop` says so, the
    /// token or time limit is reached, or `cancel` is set (then within one streamed token).
    pub fn generate(
        &self,
        prompt: &str,
        request: &mut Request,
        cancel: &CancelToken,
        emit: &mut dyn FnMut(&str),
    ) -> Result<Finished, Error> {
        let start = Instant::now();
        let params = request.params.clone();
        let mut finished = Finished::cancelled(request.prompt.len());
        let body = self.body(prompt, &params, params.max_time);
        // One deadline for every attempt: the timeout bounds the whole request.
        let deadline = start + self.options.timeout;
        // Interrupts the attempt in flight when the request is cancelled (see `Client::agent`).
        let current: Arc<Mutex<Option<ureq::Agent>>> = Arc::default();
        let _watch = Watch::start(cancel.clone(), current.clone());
        let mut attempt = 0;
        let response = loop {
            if cancel.is_cancelled() {
                return Ok(finished);
            }
            let agent = self.agent(deadline.saturating_duration_since(Instant::now()));
            if let Ok(mut slot) = current.lock() {
                *slot = Some(agent.clone());
            }
            // Cancelled before the watch could see this attempt's agent.
            if cancel.is_cancelled() {
                return Ok(finished);
            }
            match self.send(&agent, &body) {
                Ok(response) => break response,
                // A request nobody waits for any more has nothing to report.
                Err(_) if cancel.is_cancelled() => return Ok(finished),
                Err(Failure::Retry(reason))
                    if attempt < self.options.retries
                        && Instant::now() + BACKOFF * 4u32.pow(attempt) < deadline =>
                {
                    let wait = BACKOFF * 4u32.pow(attempt);
                    tracing::debug!("{}: {reason}; trying again in {wait:?}", self.url());
                    attempt += 1;
                    if !sleep_unless_cancelled(wait, cancel) {
                        return Ok(finished);
                    }
                }
                Err(Failure::Retry(reason) | Failure::Final(reason)) => {
                    return Err(self.error(reason));
                }
            }
        };
        let mut events = BufReader::new(response.into_body().into_reader());
        let mut line = String::new();
        let mut first = None;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if params.max_time.is_some_and(|t| start.elapsed() >= t) {
                finished.reason = FinishReason::TimeLimit;
                break;
            }
            line.clear();
            match events.read_line(&mut line) {
                // Cancelling shuts the connection, which may read as its end.
                Ok(0) if cancel.is_cancelled() => break,
                Ok(0) => {
                    // The stream ended without its end marker.
                    finished.reason = FinishReason::EndOfGeneration;
                    break;
                }
                Ok(_) => {}
                Err(e) if cancel.is_cancelled() => {
                    tracing::debug!("cancelled while reading: {e}");
                    break;
                }
                // The server answered, but not all in time: what came so far (nothing, while it
                // was still computing the prompt), as the local engine gives at its time
                // limit; not an outage.
                Err(e) if is_timeout(&e) => {
                    tracing::debug!("the answer took longer than allowed: {e}");
                    finished.reason = FinishReason::TimeLimit;
                    break;
                }
                Err(e) => return Err(self.error(format!("the answer stopped: {e}"))),
            }
            let Some(data) = line.trim_end().strip_prefix("data:").map(str::trim_start) else {
                // Blank separators, `:` comments (pings), `event:` lines.
                continue;
            };
            let event = match parse_event(self.options.backend, data) {
                Ok(event) => event,
                Err(reason) => {
                    return Err(Error::Remote {
                        endpoint: self.options.endpoint.clone(),
                        reason,
                    });
                }
            };
            if !event.text.is_empty() {
                first.get_or_insert_with(|| start.elapsed());
                let before = finished.text.len();
                finished.text.push_str(&event.text);
                finished.tokens.push(0);
                // A stop string may have begun in an earlier event (each is under 16 bytes).
                let from = finished.text.floor_char_boundary(before.saturating_sub(16));
                let mut keep = STOP_STRINGS
                    .iter()
                    .filter_map(|s| finished.text[from..].find(s))
                    .map(|at| at + from)
                    .min();
                let server_stop = keep.is_some();
                if let Some(stop) = request.stop.as_mut()
                    && let Some(k) = stop(&finished.text[..keep.unwrap_or(finished.text.len())])
                {
                    keep = Some(keep.map_or(k, |s| s.min(k)));
                }
                if let Some(keep) = keep {
                    let keep = finished.text.floor_char_boundary(keep.max(before));
                    finished.text.truncate(keep);
                    if keep > before {
                        emit(&finished.text[before..]);
                    }
                    finished.reason = if server_stop {
                        FinishReason::EndOfGeneration
                    } else {
                        FinishReason::StopPredicate
                    };
                    break;
                }
                emit(&finished.text[before..]);
            }
            if let Some(reason) = event.end {
                finished.reason = reason;
                break;
            }
        }
        finished.prefill_time = first.unwrap_or_else(|| start.elapsed());
        finished.decode_time = start.elapsed().saturating_sub(finished.prefill_time);
        Ok(finished)
    }

    fn error(&self, reason: String) -> Error {
        Error::Remote {
            endpoint: self.options.endpoint.clone(),
            reason,
        }
    }

    /// One attempt: the response when the server accepted the request.
    fn send(
        &self,
        agent: &ureq::Agent,
        body: &Value,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut request = agent
            .post(&self.url())
            .header("Accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        let response = match request.send_json(body) {
            Ok(r) => r,
            Err(e) => return Err(transport(e)),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = response
            .into_body()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let reason = format!("HTTP {status}: {}", error_message(&text));
        if status >= 500 || status == 429 || status == 408 {
            Err(Failure::Retry(reason))
        } else {
            Err(Failure::Final(reason))
        }
    }
}

/// Shuts the request's current connection when it is cancelled, from a thread of its own (the
/// request's thread may be blocked reading); ends with the request.
struct Watch {
    done: Arc<AtomicBool>,
}

impl Watch {
    fn start(cancel: CancelToken, current: Arc<Mutex<Option<ureq::Agent>>>) -> Watch {
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        let spawned = std::thread::Builder::new()
            .name("pyfill-cancel".into())
            .spawn(move || {
                while !finished.load(Ordering::Relaxed) {
                    if cancel.is_cancelled() {
                        if let Some(agent) = current.lock().ok().and_then(|mut a| a.take()) {
                            agent.shutdown();
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("a cancelled request will finish its current read first: {e}");
        }
        Watch { done }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Why an attempt failed, and whether another may succeed.
enum Failure {
    Retry(String),
    Final(String),
}

fn transport(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(what) => Failure::Final(format!("no answer in time ({what} timeout)")),
        ureq::Error::Io(e) => Failure::Retry(format!("cannot connect: {e}")),
        ureq::Error::ConnectionFailed => Failure::Retry("cannot connect".into()),
        ureq::Error::HostNotFound => Failure::Retry("host not found".into()),
        other => Failure::Final(other.to_string()),
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut || e.to_string().contains("timeout")
}

/// Sleeps `wait` in short steps; false when cancelled meanwhile.
fn sleep_unless_cancelled(wait: Duration, cancel: &CancelToken) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if cancel.is_cancelled() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
    !cancel.is_cancelled()
}

/// The message of an error body: OpenAI's and llama.cpp's `{"error": {"message": ..}}`, TGI's
/// `{"error": ".."}`, else the text itself (shortened).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .or_else(|| v["message"].as_str())
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| body.trim().to_owned());
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    if short.is_empty() {
        short = "(no body)".into();
    }
    short
}

/// One streamed event: its new text and, on the last, why generation ended.
#[derive(Debug, PartialEq)]
struct Event {
    text: String,
    end: Option<FinishReason>,
}

/// Parses the `data:` payload of one server-sent event.
fn parse_event(backend: Backend, data: &str) -> Result<Event, String> {
    if data == "[DONE]" {
        return Ok(Event {
            text: String::new(),
            end: Some(FinishReason::EndOfGeneration),
        });
    }
    let v: Value = serde_json::from_str(data).map_err(|e| {
        let shown: String = data.chars().take(120).collect();
        format!("the server sent an event that is not JSON ({e}): {shown}")
    })?;
    if !v["error"].is_null() {
        return Err(format!("the server failed: {}", error_message(data)));
    }
    let limit = |r: &str| {
        if matches!(r, "length" | "limit") {
            FinishReason::MaxTokens
        } else {
            FinishReason::EndOfGeneration
        }
    };
    let event = match backend {
        Backend::LlamaCpp | Backend::Local => Event {
            text: v["content"].as_str().unwrap_or_default().to_owned(),
            end: (v["stop"].as_bool() == Some(true))
                .then(|| limit(v["stop_type"].as_str().unwrap_or_default())),
        },
        Backend::Openai => {
            let choice = &v["choices"][0];
            if choice.is_null() && v["usage"].is_null() {
                return Err(format!("no choices in the event: {data}"));
            }
            Event {
                text: choice["text"].as_str().unwrap_or_default().to_owned(),
                end: choice["finish_reason"].as_str().map(limit),
            }
        }
        Backend::Tgi => {
            let token = &v["token"];
            let special = token["special"].as_bool() == Some(true);
            Event {
                text: if special {
                    String::new()
                } else {
                    token["text"].as_str().unwrap_or_default().to_owned()
                },
                end: (!v["generated_text"].is_null()).then(|| {
                    limit(
                        v["details"]["finish_reason"]
                            .as_str()
                            .unwrap_or("eos_token"),
                    )
                }),
            }
        }
    };
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str, end: Option<FinishReason>) -> Event {
        Event {
            text: text.into(),
            end,
        }
    }

    #[test]
    fn llama_cpp_events() {
        let b = Backend::LlamaCpp;
        assert_eq!(
            parse_event(b, r#"{"content":" fib","tokens":[1],"stop":false}"#),
            Ok(event(" fib", None))
        );
        assert_eq!(
            parse_event(b, r#"{"content":"","stop":true,"stop_type":"limit"}"#),
            Ok(event("", Some(FinishReason::MaxTokens)))
        );
        assert_eq!(
            parse_event(b, r#"{"content":"","stop":true,"stop_type":"eos"}"#),
            Ok(event("", Some(FinishReason::EndOfGeneration)))
        );
    }

    #[test]
    fn openai_events() {
        let b = Backend::Openai;
        assert_eq!(
            parse_event(b, r#"{"choices":[{"text":"return","finish_reason":null}]}"#),
            Ok(event("return", None))
        );
        assert_eq!(
            parse_event(b, r#"{"choices":[{"text":"","finish_reason":"length"}]}"#),
            Ok(event("", Some(FinishReason::MaxTokens)))
        );
        assert_eq!(
            parse_event(b, "[DONE]"),
            Ok(event("", Some(FinishReason::EndOfGeneration)))
        );
        assert!(parse_event(b, r#"{"object":"x"}"#).is_err());
    }

    #[test]
    fn tgi_events() {
        let b = Backend::Tgi;
        assert_eq!(
            parse_event(
                b,
                r#"{"index":1,"token":{"id":5,"text":" x","special":false},"generated_text":null}"#
            ),
            Ok(event(" x", None))
        );
        assert_eq!(
            parse_event(
                b,
                r#"{"index":2,"token":{"id":0,"text":"<|endoftext|>","special":true},"generated_text":" x","details":{"finish_reason":"eos_token"}}"#
            ),
            Ok(event("", Some(FinishReason::EndOfGeneration)))
        );
    }

    #[test]
    fn errors_in_a_stream_and_garbage_are_errors() {
        for b in [Backend::LlamaCpp, Backend::Openai, Backend::Tgi] {
            let e = parse_event(b, r#"{"error":{"code":500,"message":"boom"}}"#).unwrap_err();
            assert!(e.contains("boom"), "{e}");
            let e =
                parse_event(b, r#"{"error":"flat boom","error_type":"generation"}"#).unwrap_err();
            assert!(e.contains("flat boom"), "{e}");
            assert!(parse_event(b, "<html>").unwrap_err().contains("not JSON"));
        }
    }

    #[test]
    fn error_messages_from_every_shape() {
        assert_eq!(
            error_message(r#"{"error":{"code":400,"message":"too long","type":"x"}}"#),
            "too long"
        );
        assert_eq!(
            error_message(r#"{"error":"bad","error_type":"validation"}"#),
            "bad"
        );
        assert_eq!(error_message("plain text\n"), "plain text");
        assert_eq!(error_message(""), "(no body)");
        assert_eq!(error_message(&"x".repeat(1000)).chars().count(), 301);
    }

    /// Options for `backend` at `endpoint`, model `m`, no key, no retries.
    fn options(backend: Backend, endpoint: &str) -> Options {
        Options {
            backend,
            endpoint: endpoint.into(),
            model: Some("m".into()),
            api_key_env: None,
            timeout: Duration::from_secs(1),
            retries: 0,
        }
    }

    #[test]
    fn urls_per_backend() {
        let client = |backend, endpoint: &str| Client::new(options(backend, endpoint)).unwrap();
        assert_eq!(
            client(Backend::LlamaCpp, "http://h:8080/").url(),
            "http://h:8080/completion"
        );
        assert_eq!(
            client(Backend::Openai, "http://h/v1").url(),
            "http://h/v1/completions"
        );
        assert_eq!(
            client(Backend::Openai, "http://h").url(),
            "http://h/v1/completions"
        );
        assert_eq!(
            client(Backend::Tgi, "http://h").url(),
            "http://h/generate_stream"
        );
        assert!(Client::new(options(Backend::Tgi, "ftp://h")).is_err());
    }

    #[test]
    fn greedy_bodies() {
        let params = GenerationParams {
            max_tokens: 7,
            ..GenerationParams::default()
        };
        let client = |backend| Client::new(options(backend, "http://h")).unwrap();
        let b = client(Backend::LlamaCpp).body("p", &params, None);
        assert_eq!(
            (b["n_predict"].clone(), b["top_k"].clone()),
            (json!(7), json!(1))
        );
        let b = client(Backend::Openai).body("p", &params, None);
        assert_eq!(
            (b["max_tokens"].clone(), b["model"].clone()),
            (json!(7), json!("m"))
        );
        let b = client(Backend::Tgi).body("p", &params, None);
        assert_eq!(b["parameters"]["do_sample"], json!(false));
        assert!(b["parameters"]["temperature"].is_null());
    }
}
