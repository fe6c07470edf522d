//! The remote backend (`pyfill::remote`) against fake inference servers in this process: plain
//! `TcpListener`s that check what pyfill sends and answer with hand-written HTTP/1.1, in each
//! server's streaming format, and with the failures real servers and networks produce (errors,
//! silence, garbage, dropped connections). The API key's way through is checked on the real
//! binary, whose environment a test may set.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyfill::engine::{
    CancelToken, Engine, Error, Event, FinishReason, Finished, GenerationParams, Request,
};
use pyfill::remote::{Backend, Client, Options};
use serde_json::{Value, json};

/// A fill-in-the-middle prompt with its special tokens written out, as the engine sends it.
const FIM: &str = "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>";

// ---------------------------------------------------------------------------------------------
// The fake server.

/// One request as the fake server read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake does with a connection: the attempt number (0 for the first request it read),
/// the request, and the connection to answer on (closed when this returns).
type Answer = dyn Fn(usize, &Seen, &mut TcpStream) + Send + Sync;

struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Serves on a free port of 127.0.0.1, each connection on a thread of its own (so one that
    /// hangs holds up no other), until the test process ends.
    fn start(answer: impl Fn(usize, &Seen, &mut TcpStream) + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (answer, log) = (answer.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let Some(request) = read_request(&stream) else {
                        return;
                    };
                    let attempt = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.len() - 1
                    };
                    answer(attempt, &request, &mut stream);
                });
            }
        });
        Fake { addr, seen }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn attempts(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> Seen {
        self.seen.lock().unwrap()[i].clone()
    }
}

/// Reads one HTTP/1.1 request (a `Content-Length` or chunked body, parsed as JSON if it is).
fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let path = words.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let length = header("content-length").and_then(|v| v.parse().ok());
        body.resize(length.unwrap_or(0), 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Seen {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// A whole answer with a `Content-Length`.
fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

/// The head of a streamed answer: server-sent events in chunks, as llama-server and TGI send.
fn start_stream(s: &mut TcpStream) -> io::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    s.flush()
}

fn send_chunk(s: &mut TcpStream, text: &str) -> io::Result<()> {
    write!(s, "{:x}\r\n{text}\r\n", text.len())?;
    s.flush()
}

fn end_stream(s: &mut TcpStream) {
    let _ = s.write_all(b"0\r\n\r\n");
    let _ = s.flush();
}

/// A whole streamed answer, one chunk per event.
fn stream(s: &mut TcpStream, events: &[String]) {
    if start_stream(s).is_err() {
        return;
    }
    for event in events {
        if send_chunk(s, event).is_err() {
            return;
        }
    }
    end_stream(s);
}

/// llama-server's `/completion` event: `stop` is `None` while generating, else its `stop_type`.
fn llama(content: &str, stop: Option<&str>) -> String {
    let event = match stop {
        None => json!({"index": 0, "content": content, "tokens": [1], "stop": false}),
        Some(kind) => json!({
            "index": 0, "content": content, "tokens": [], "stop": true, "stop_type": kind,
            "stopping_word": "", "truncated": false, "timings": {"predicted_n": 3},
        }),
    };
    format!("data: {event}\n\n")
}

/// An OpenAI `/v1/completions` chunk.
fn openai(text: &str, finish: Option<&str>) -> String {
    let event = json!({
        "id": "cmpl-1", "object": "text_completion", "model": "m",
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {event}\n\n")
}

/// TGI's `/generate_stream` event (no space after `data:`); the last carries the whole text.
fn tgi(text: &str, special: bool, generated: Option<&str>) -> String {
    let event = json!({
        "index": 1, "token": {"id": 7, "text": text, "logprob": -0.1, "special": special},
        "generated_text": generated, "details": null,
    });
    format!("data:{event}\n\n")
}

// ---------------------------------------------------------------------------------------------
// The client side.

fn options(backend: Backend, endpoint: &str) -> Options {
    Options {
        backend,
        endpoint: endpoint.to_owned(),
        model: Some("qwen2.5-coder".into()),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        retries: 2,
    }
}

fn client(backend: Backend, endpoint: &str) -> Client {
    Client::new(options(backend, endpoint)).unwrap()
}

fn request(max_tokens: usize) -> Request {
    Request {
        prompt: Vec::new(),
        fallback: None,
        fallback_max_time: None,
        params: GenerationParams {
            max_tokens,
            ..GenerationParams::default()
        },
        stop: None,
        heal: false,
    }
}

/// `client.generate` on [`FIM`]: the outcome and the pieces it emitted.
fn generate(client: &Client, request: &mut Request) -> (Result<Finished, Error>, Vec<String>) {
    let mut pieces = Vec::new();
    let outcome = client.generate(FIM, request, &CancelToken::default(), &mut |piece| {
        pieces.push(piece.to_owned())
    });
    (outcome, pieces)
}

/// A request on `engine` to its end: the outcome and the text events.
fn run(engine: &Engine, request: Request) -> (Result<Finished, Error>, Vec<String>) {
    let mut generation = engine.generate(request).unwrap();
    let mut pieces = Vec::new();
    while let Some(event) = generation.events.blocking_recv() {
        match event {
            Event::Text(piece) => pieces.push(piece),
            Event::Done(finished) => return (Ok(finished), pieces),
            Event::Failed(e) => return (Err(e), pieces),
        }
    }
    panic!("the engine dropped the request without an answer");
}

/// The message of a remote error, which must name `endpoint`.
fn remote_error(outcome: Result<Finished, Error>, endpoint: &str) -> String {
    let e = match outcome {
        Ok(finished) => panic!("expected an error, got {finished:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(e, Error::Remote { .. }),
        "not a remote error: {e:?}"
    );
    let message = e.to_string();
    assert!(message.contains(endpoint), "{message:?} names no endpoint");
    message
}

// ---------------------------------------------------------------------------------------------
// 1. Each server's format, end to end.

#[test]
fn llama_cpp_request_and_stream_through_the_engine() {
    let fake = Fake::start(|_, _, s| {
        stream(
            s,
            &[
                llama("a", None),
                // llama-server holds text that may begin a stop word back as empty events.
                llama("", None),
                ": ping\n\n".into(),
                llama(" +", None),
                llama(" b", None),
                llama("", Some("eos")),
            ],
        )
    });
    let engine =
        pyfill::remote::engine(options(Backend::LlamaCpp, &fake.endpoint()), None).unwrap();
    assert_eq!(engine.info().architecture, "remote llama-cpp");
    let prompt = engine.tokenizer().encode(FIM, true).unwrap();
    let (outcome, pieces) = run(
        &engine,
        Request {
            prompt,
            ..request(24)
        },
    );
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "a + b");
    assert_eq!(pieces.concat(), "a + b");
    assert_eq!(finished.reason, FinishReason::EndOfGeneration);

    let seen = fake.request(0);
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/completion")
    );
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    let body = &seen.body;
    assert_eq!(body["prompt"], FIM, "the special tokens go out as text");
    assert_eq!(body["n_predict"], 24);
    assert_eq!(body["stream"], true);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["top_k"], 1, "greedy");
    assert_eq!(body["cache_prompt"], true);
    let stops = body["stop"].as_array().unwrap();
    assert!(stops.contains(&json!("<|file_sep|>")), "{stops:?}");
    assert!(stops.len() <= 4, "servers take at most 4 stop strings");
    assert_eq!(fake.attempts(), 1);
}

#[test]
fn llama_cpp_at_its_token_limit_says_so() {
    let fake = Fake::start(|_, _, s| {
        stream(
            s,
            &[
                llama("return", None),
                llama(" a", None),
                llama("", Some("limit")),
            ],
        )
    });
    let (outcome, _) = generate(
        &client(Backend::LlamaCpp, &fake.endpoint()),
        &mut request(2),
    );
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "return a");
    assert_eq!(finished.reason, FinishReason::MaxTokens);
}

#[test]
fn openai_request_and_stream_with_a_gguf_tokenizer() {
    let fake = Fake::start(|_, _, s| {
        stream(
            s,
            &[
                openai("a", None),
                openai(" + b", None),
                openai("", Some("length")),
                "data: [DONE]\n\n".into(),
            ],
        )
    });
    // The tokenizer comes from a GGUF whose weights are never read.
    let (_dir, gguf) = common::tiny(&common::TinyOptions::new("qwen2"));
    let engine =
        pyfill::remote::engine(options(Backend::Openai, &fake.endpoint()), Some(&gguf)).unwrap();
    assert_eq!(engine.info().architecture, "remote openai");
    assert_eq!(
        engine.info().context_length,
        512,
        "from the GGUF's metadata"
    );
    let prompt = engine.tokenizer().encode(FIM, true).unwrap();
    let (outcome, pieces) = run(
        &engine,
        Request {
            prompt,
            ..request(16)
        },
    );
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "a + b");
    assert_eq!(pieces.concat(), "a + b");
    assert_eq!(finished.reason, FinishReason::MaxTokens);

    let seen = fake.request(0);
    assert_eq!(seen.path, "/v1/completions");
    let body = &seen.body;
    assert_eq!(body["prompt"], FIM);
    assert_eq!(body["model"], "qwen2.5-coder");
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["stream"], true);
    assert!(body.get("suffix").is_none(), "servers ignore or refuse it");
}

#[test]
fn openai_endpoints_may_end_in_v1_and_stop_at_done() {
    let fake = Fake::start(|_, _, s| {
        // Whatever follows [DONE] is never read.
        stream(
            s,
            &[
                openai("x", None),
                "data: [DONE]\n\n".into(),
                openai("y", None),
            ],
        )
    });
    let endpoint = format!("{}/v1/", fake.endpoint());
    let (outcome, _) = generate(&client(Backend::Openai, &endpoint), &mut request(8));
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "x");
    assert_eq!(finished.reason, FinishReason::EndOfGeneration);
    assert_eq!(fake.request(0).path, "/v1/completions");
}

#[test]
fn tgi_request_and_stream() {
    let fake = Fake::start(|_, _, s| {
        stream(
            s,
            &[
                ":keep-alive\n\n".into(),
                tgi("a", false, None),
                tgi(" +", false, None),
                tgi(" b", false, None),
                // The end-of-text token is special: its text is not the suggestion's.
                tgi("<|endoftext|>", true, Some("a + b")),
            ],
        )
    });
    let engine = pyfill::remote::engine(options(Backend::Tgi, &fake.endpoint()), None).unwrap();
    let prompt = engine.tokenizer().encode(FIM, true).unwrap();
    let (outcome, pieces) = run(
        &engine,
        Request {
            prompt,
            ..request(32)
        },
    );
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "a + b");
    assert_eq!(pieces.concat(), "a + b");
    assert_eq!(finished.reason, FinishReason::EndOfGeneration);

    let seen = fake.request(0);
    assert_eq!(seen.path, "/generate_stream");
    let body = &seen.body;
    assert_eq!(body["inputs"], FIM);
    let parameters = &body["parameters"];
    assert_eq!(parameters["max_new_tokens"], 32);
    // Greedy on TGI is `do_sample: false`; a temperature of 0 is refused there (422).
    assert_eq!(parameters["do_sample"], false);
    assert!(parameters.get("temperature").is_none(), "{parameters}");
    assert!(parameters["stop"].as_array().unwrap().len() <= 4);
}

#[test]
fn an_answer_split_across_slow_writes_is_put_back_together() {
    let events = [
        llama("for x in", None),
        llama(" items:", None),
        llama("\n        total", None),
        llama(" += x", None),
        llama("", Some("eos")),
    ]
    .concat();
    let fake = Fake::start(move |_, _, s| {
        // No chunking: one Content-Length body, in pieces that cut lines, keys and escapes.
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            events.len()
        );
        let bytes = [head.as_bytes(), events.as_bytes()].concat();
        for piece in bytes.chunks(23) {
            if s.write_all(piece).and_then(|()| s.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    });
    let (outcome, pieces) = generate(
        &client(Backend::LlamaCpp, &fake.endpoint()),
        &mut request(16),
    );
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "for x in items:\n        total += x");
    assert_eq!(pieces.concat(), finished.text);
    assert_eq!(finished.reason, FinishReason::EndOfGeneration);
}

/// Code is not all ASCII: accented names and CJK comments arrive a few bytes per event.
#[test]
fn text_that_is_not_ascii_comes_through_whole() {
    let pieces = [
        "    # 计算总价",
        "（含税）\n",
        "    prix_total = sum(",
        "article.prix for article in 购物车",
        ")  # déjà ",
        "vérifié",
    ];
    for backend in [Backend::LlamaCpp, Backend::Openai, Backend::Tgi] {
        let fake = Fake::start(move |_, _, s| {
            let mut events: Vec<String> = pieces
                .iter()
                .map(|p| match backend {
                    Backend::Openai => openai(p, None),
                    Backend::Tgi => tgi(p, false, None),
                    _ => llama(p, None),
                })
                .collect();
            events.push(match backend {
                Backend::Openai => openai("", Some("stop")),
                Backend::Tgi => tgi("<|endoftext|>", true, Some("...")),
                _ => llama("", Some("eos")),
            });
            stream(s, &events);
        });
        let (outcome, emitted) = generate(&client(backend, &fake.endpoint()), &mut request(64));
        let finished = outcome.unwrap();
        assert_eq!(finished.text, pieces.concat(), "{backend:?}");
        assert_eq!(emitted.concat(), finished.text, "{backend:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A server that does not answer.

#[test]
fn a_server_that_never_answers_fails_at_the_timeout() {
    let fake = Fake::start(|_, _, _| std::thread::sleep(Duration::from_secs(30)));
    let client = Client::new(Options {
        timeout: Duration::from_millis(500),
        ..options(Backend::LlamaCpp, &fake.endpoint())
    })
    .unwrap();
    let start = Instant::now();
    let (outcome, pieces) = generate(&client, &mut request(16));
    let took = start.elapsed();
    let message = remote_error(outcome, &fake.endpoint());
    assert!(took < Duration::from_secs(3), "took {took:?}: {message}");
    assert!(
        took >= Duration::from_millis(400),
        "took {took:?}: {message}"
    );
    assert!(pieces.is_empty());
}

#[test]
fn a_stream_that_stalls_ends_at_the_timeout() {
    let fake = Fake::start(|_, _, s| {
        if start_stream(s).is_ok() && send_chunk(s, &llama("a +", None)).is_ok() {
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    let client = Client::new(Options {
        timeout: Duration::from_millis(500),
        ..options(Backend::LlamaCpp, &fake.endpoint())
    })
    .unwrap();
    let start = Instant::now();
    let (outcome, pieces) = generate(&client, &mut request(16));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}: {outcome:?}");
    assert_eq!(pieces.concat(), "a +");
    // The text so far, or an error that says where; either way no hang.
    if outcome.is_err() {
        remote_error(outcome, &fake.endpoint());
    }
}

/// A slow server at the request's time limit: the text so far, as the local engine gives it,
/// not an error (which the editor would report as an outage). `pyfill complete` gives the
/// request the same limit as the connection, and the server settings' defaults are equal.
#[test]
fn a_slow_stream_at_its_time_limit_keeps_its_text() {
    let fake = Fake::start(|_, _, s| {
        if start_stream(s).is_err() {
            return;
        }
        for i in 0..50 {
            if send_chunk(s, &llama(&format!(" t{i}"), None)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        end_stream(s);
    });
    let limit = Duration::from_millis(800);
    let client = Client::new(Options {
        timeout: limit,
        ..options(Backend::LlamaCpp, &fake.endpoint())
    })
    .unwrap();
    let mut request = request(128);
    request.params.max_time = Some(limit);
    let start = Instant::now();
    let (outcome, pieces) = generate(&client, &mut request);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let finished = outcome.unwrap();
    assert_eq!(finished.reason, FinishReason::TimeLimit);
    assert!(
        finished.text.starts_with(" t0 t1 t2"),
        "{:?}",
        finished.text
    );
    assert_eq!(pieces.concat(), finished.text);
}

// ---------------------------------------------------------------------------------------------
// 3. Error answers and retries.

fn error_body(message: &str) -> String {
    json!({"error": {"code": 500, "message": message, "type": "server_error"}}).to_string()
}

#[test]
fn a_server_error_is_retried_and_the_next_answer_counts() {
    let fake = Fake::start(|attempt, _, s| {
        if attempt == 0 {
            respond(
                s,
                "500 Internal Server Error",
                "application/json",
                &error_body("busy"),
            );
        } else {
            stream(s, &[llama("a + b", None), llama("", Some("eos"))]);
        }
    });
    let (outcome, _) = generate(
        &client(Backend::LlamaCpp, &fake.endpoint()),
        &mut request(16),
    );
    assert_eq!(outcome.unwrap().text, "a + b");
    assert_eq!(fake.attempts(), 2);
    assert_eq!(
        fake.request(1).body,
        fake.request(0).body,
        "the same request again"
    );
}

#[test]
fn a_server_that_keeps_failing_gives_up_after_its_retries_with_the_servers_message() {
    let fake = Fake::start(|_, _, s| {
        respond(
            s,
            "500 Internal Server Error",
            "application/json",
            &error_body("boom"),
        );
    });
    let start = Instant::now();
    let client = Client::new(Options {
        retries: 2,
        ..options(Backend::Openai, &fake.endpoint())
    })
    .unwrap();
    let (outcome, _) = generate(&client, &mut request(16));
    let message = remote_error(outcome, &fake.endpoint());
    assert!(message.contains("boom"), "{message}");
    assert!(message.contains("500"), "{message}");
    assert_eq!(fake.attempts(), 3, "retries + 1");
    // Backoff 200 ms, then 800 ms.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "no backoff: {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_refused_request_is_not_retried_and_says_why() {
    // TGI's own error shape: a flat string.
    let fake = Fake::start(|_, _, s| {
        let body = json!({"error": "`inputs` must have less than 4096 tokens", "error_type": "validation"});
        respond(
            s,
            "422 Unprocessable Entity",
            "application/json",
            &body.to_string(),
        );
    });
    let (outcome, _) = generate(&client(Backend::Tgi, &fake.endpoint()), &mut request(16));
    let message = remote_error(outcome, &fake.endpoint());
    assert!(message.contains("less than 4096 tokens"), "{message}");
    assert_eq!(fake.attempts(), 1);

    let fake = Fake::start(|_, _, s| {
        let body = json!({"error": {"code": 400, "message": "request (4180 tokens) exceeds the available context size (2048 tokens)", "type": "exceed_context_size_error"}});
        respond(s, "400 Bad Request", "application/json", &body.to_string());
    });
    let (outcome, _) = generate(
        &client(Backend::LlamaCpp, &fake.endpoint()),
        &mut request(16),
    );
    let message = remote_error(outcome, &fake.endpoint());
    assert!(
        message.contains("exceeds the available context size"),
        "{message}"
    );
    assert!(message.contains("400"), "{message}");
    assert_eq!(fake.attempts(), 1, "a 400 is not retried");

    // axum's rejections are plain text.
    let fake = Fake::start(|_, _, s| {
        respond(
            s,
            "422 Unprocessable Entity",
            "text/plain; charset=utf-8",
            "Failed to deserialize the JSON body into the target type: missing field `inputs`",
        );
    });
    let (outcome, _) = generate(&client(Backend::Tgi, &fake.endpoint()), &mut request(16));
    let message = remote_error(outcome, &fake.endpoint());
    assert!(message.contains("Failed to deserialize"), "{message}");
    assert_eq!(fake.attempts(), 1);
}

#[test]
fn too_many_requests_is_retried() {
    let fake = Fake::start(|attempt, _, s| {
        if attempt == 0 {
            let body = json!({"error": "Model is overloaded", "error_type": "overloaded"});
            respond(
                s,
                "429 Too Many Requests",
                "application/json",
                &body.to_string(),
            );
        } else {
            stream(s, &[tgi("x", false, None), tgi("", true, Some("x"))]);
        }
    });
    let (outcome, _) = generate(&client(Backend::Tgi, &fake.endpoint()), &mut request(16));
    assert_eq!(outcome.unwrap().text, "x");
    assert_eq!(fake.attempts(), 2);
}

#[test]
fn an_error_event_in_the_stream_is_an_error() {
    let fake = Fake::start(|_, _, s| {
        stream(
            s,
            &[
                openai("a", None),
                format!("data: {}\n\n", error_body("boom in the middle")),
            ],
        )
    });
    let (outcome, _) = generate(&client(Backend::Openai, &fake.endpoint()), &mut request(16));
    let message = remote_error(outcome, &fake.endpoint());
    assert!(message.contains("boom in the middle"), "{message}");
    assert_eq!(fake.attempts(), 1, "text had started: not retried");
}

// ---------------------------------------------------------------------------------------------
// 4. Garbage and broken connections.

#[test]
fn an_event_that_is_not_json_is_a_clear_error() {
    let fake =
        Fake::start(|_, _, s| stream(s, &[llama("a", None), "data: <html>oops</html>\n\n".into()]));
    let (outcome, _) = generate(
        &client(Backend::LlamaCpp, &fake.endpoint()),
        &mut request(16),
    );
    let message = remote_error(outcome, &fake.endpoint());
    assert!(message.contains("not JSON"), "{message}");
    assert!(message.contains("<html>oops"), "shows what came: {message}");
}

#[test]
fn an_html_page_instead_of_events_gives_no_text() {
    let fake = Fake::start(|_, _, s| {
        respond(
            s,
            "200 OK",
            "text/html",
            "<!doctype html>\n<html><body>\n<h1>It works!</h1>\n</body></html>\n",
        );
    });
    for backend in [Backend::LlamaCpp, Backend::Openai, Backend::Tgi] {
        let (outcome, pieces) = generate(&client(backend, &fake.endpoint()), &mut request(16));
        let finished = outcome.unwrap();
        assert_eq!(finished.text, "", "{backend:?}");
        assert!(pieces.is_empty());
    }
}

#[test]
fn a_connection_closed_mid_stream_gives_the_text_so_far_or_an_error() {
    // Chunked, cut before the last chunk; close-delimited, cut; a Content-Length not reached.
    let cuts: [fn(&mut TcpStream); 3] = [
        |s| {
            if start_stream(s).is_ok() {
                let _ = send_chunk(s, &llama("a +", None));
            }
        },
        |s| {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            );
            let _ = s.write_all(llama("a +", None).as_bytes());
            let _ = s.write_all(b"data: {\"content\":\" b\",\"st");
        },
        |s| {
            let event = llama("a +", None);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{event}",
                event.len() + 100
            );
        },
    ];
    for (i, cut) in cuts.into_iter().enumerate() {
        let fake = Fake::start(move |_, _, s| cut(s));
        let start = Instant::now();
        let (outcome, pieces) = generate(
            &client(Backend::LlamaCpp, &fake.endpoint()),
            &mut request(16),
        );
        assert!(start.elapsed() < Duration::from_secs(2), "cut {i}");
        assert_eq!(pieces.concat(), "a +", "cut {i}");
        match outcome {
            Ok(finished) => assert_eq!(finished.text, "a +", "cut {i}"),
            Err(e) => {
                let message = remote_error(Err(e), &fake.endpoint());
                assert!(!message.is_empty(), "cut {i}");
            }
        }
    }
}

#[test]
fn a_server_that_closes_without_answering_is_retried_then_an_error() {
    let fake = Fake::start(|_, _, _| {});
    let (outcome, _) = generate(
        &client(Backend::LlamaCpp, &fake.endpoint()),
        &mut request(16),
    );
    remote_error(outcome, &fake.endpoint());
    assert_eq!(fake.attempts(), 3, "a dropped connection is retried");
}

// ---------------------------------------------------------------------------------------------
// 5. Cancellation.

/// A fake that streams a token every 100 ms for 10 s and reports when its writes start failing
/// (the client hung up).
fn slow_stream(hung_up: Sender<Instant>) -> Fake {
    Fake::start(move |_, _, s| {
        if start_stream(s).is_err() {
            return;
        }
        for i in 0..100 {
            if send_chunk(s, &llama(&format!(" t{i}"), None)).is_err() {
                let _ = hung_up.send(Instant::now());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        end_stream(s);
    })
}

#[test]
fn cancelling_stops_reading_and_drops_the_connection() {
    let (hung_up_tx, hung_up) = mpsc::channel();
    let fake = slow_stream(hung_up_tx);
    let client = client(Backend::LlamaCpp, &fake.endpoint());
    let cancel = CancelToken::default();
    let (first_tx, first) = mpsc::channel();
    let worker = std::thread::spawn({
        let cancel = cancel.clone();
        move || {
            let mut first_tx = Some(first_tx);
            let outcome = client.generate(FIM, &mut request(128), &cancel, &mut |_| {
                if let Some(tx) = first_tx.take() {
                    let _ = tx.send(());
                }
            });
            (outcome, Instant::now())
        }
    });
    first.recv_timeout(Duration::from_secs(3)).unwrap();
    let cancelled = Instant::now();
    cancel.cancel();
    let (outcome, returned) = worker.join().unwrap();
    let finished = outcome.unwrap();
    assert!(
        returned - cancelled < Duration::from_millis(300),
        "returned {:?} after the cancel",
        returned - cancelled
    );
    assert_eq!(finished.reason, FinishReason::Cancelled);
    assert!(finished.text.starts_with(" t0"), "{:?}", finished.text);
    // The server learns it by the connection: its writes fail.
    let hung_up = hung_up
        .recv_timeout(Duration::from_secs(2))
        .expect("the connection stayed open after the cancel");
    assert!(
        hung_up - cancelled < Duration::from_secs(1),
        "the server noticed {:?} after the cancel",
        hung_up - cancelled
    );
}

#[test]
fn dropping_a_generation_cancels_it_on_the_server_too() {
    let (hung_up_tx, hung_up) = mpsc::channel();
    let fake = slow_stream(hung_up_tx);
    let engine =
        pyfill::remote::engine(options(Backend::LlamaCpp, &fake.endpoint()), None).unwrap();
    let prompt = engine.tokenizer().encode(FIM, true).unwrap();
    let mut generation = engine
        .generate(Request {
            prompt,
            ..request(128)
        })
        .unwrap();
    assert!(matches!(
        generation.events.blocking_recv(),
        Some(Event::Text(_))
    ));
    let dropped = Instant::now();
    drop(generation);
    let hung_up = hung_up
        .recv_timeout(Duration::from_secs(2))
        .expect("the connection stayed open after the drop");
    assert!(hung_up - dropped < Duration::from_secs(1));
}

#[test]
fn cancelling_during_the_backoff_returns_at_once() {
    let (answered_tx, answered) = mpsc::channel();
    let fake = Fake::start(move |_, _, s| {
        respond(
            s,
            "503 Service Unavailable",
            "application/json",
            &error_body("Loading model"),
        );
        let _ = answered_tx.send(());
    });
    let client = Client::new(Options {
        retries: 5,
        ..options(Backend::LlamaCpp, &fake.endpoint())
    })
    .unwrap();
    let cancel = CancelToken::default();
    let worker = std::thread::spawn({
        let cancel = cancel.clone();
        move || {
            let outcome = client.generate(FIM, &mut request(16), &cancel, &mut |_| {});
            (outcome, Instant::now())
        }
    });
    answered.recv_timeout(Duration::from_secs(3)).unwrap();
    // Well inside the first wait (200 ms).
    std::thread::sleep(Duration::from_millis(50));
    let cancelled = Instant::now();
    cancel.cancel();
    let (outcome, returned) = worker.join().unwrap();
    assert_eq!(outcome.unwrap().reason, FinishReason::Cancelled);
    assert!(returned - cancelled < Duration::from_millis(150));
    assert_eq!(fake.attempts(), 1, "no attempt after the cancel");
}

// ---------------------------------------------------------------------------------------------
// 6. The API key.

fn pyfill(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A file `def add(a, b):\n    return ` and the location of its end for `pyfill complete`.
fn add_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("add.py");
    std::fs::write(&path, "def add(a, b):\n    return \n").unwrap();
    let location = format!("{}:2:12", path.display());
    (dir, location)
}

/// No 8 characters of `key` in a row in `log`: a hex dump of the request (the HTTP client's
/// trace) splits the key over its 16-byte lines.
fn assert_not_shown(key: &str, log: &str) {
    for part in key.as_bytes().windows(8) {
        let part = std::str::from_utf8(part).unwrap();
        // Never print the key, nor the log that holds it.
        assert!(!log.contains(part), "the log shows part of the API key");
    }
}

#[test]
fn a_missing_key_variable_is_named_and_nothing_is_sent() {
    let var = "PYFILL_TEST_REMOTE_KEY_NEVER_SET_7d1e";
    assert!(std::env::var_os(var).is_none());
    let fake = Fake::start(|_, _, s| respond(s, "200 OK", "text/plain", ""));
    let outcome = Client::new(Options {
        api_key_env: Some(var.into()),
        ..options(Backend::Openai, &fake.endpoint())
    });
    let Err(e) = outcome else {
        panic!("a client without its key");
    };
    let message = e.to_string();
    assert!(message.contains(var), "{message}");
    assert!(message.contains("not set"), "{message}");
    assert_eq!(fake.attempts(), 0);
}

#[test]
fn the_key_goes_out_as_a_bearer_token_and_is_never_printed() {
    let var = "PYFILL_TEST_REMOTE_KEY_4b2a";
    let key = "sk-7Qv9Zr2Lm4Xw8Np3Kd6T";
    let fake = Fake::start(move |_, seen, s| {
        if seen.header("authorization") == Some(&format!("Bearer {key}")) {
            stream(
                s,
                &[openai("a + b", Some("stop")), "data: [DONE]\n\n".into()],
            );
        } else {
            let body = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}});
            respond(s, "401 Unauthorized", "application/json", &body.to_string());
        }
    });
    let (_dir, location) = add_file();
    let endpoint = fake.endpoint();
    let args = [
        "complete",
        &location,
        "--backend",
        "openai",
        "--endpoint",
        &endpoint,
        "--remote-model",
        "m",
        "--api-key-env",
        var,
    ];
    // Every log level on, the key in the environment.
    let out = pyfill(&args, &[(var, key), ("PYFILL_LOG", "trace")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pyfill complete failed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), "a + b");
    assert_not_shown(key, &stderr);
    assert!(
        fake.request(0).header("authorization") == Some(format!("Bearer {key}").as_str()),
        "the server did not get the key as a bearer token"
    );

    // A wrong key: the server's message, not the key.
    let wrong = "sk-Wq3Hf8Jc2Vb6Ny4Ts9Pe";
    let out = pyfill(&args, &[(var, wrong), ("PYFILL_LOG", "trace")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_not_shown(wrong, &stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Incorrect API key provided"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // No variable: an error that names it.
    let out = pyfill(&args, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(var), "{stderr}");
    assert_eq!(fake.attempts(), 2, "nothing sent without the key");
}

// ---------------------------------------------------------------------------------------------
// 7. Where the text stops.

#[test]
fn the_stop_predicate_cuts_the_text_and_ends_the_request() {
    let fake = Fake::start(|_, _, s| {
        stream(
            s,
            &[
                llama("a + b", None),
                llama("\n\nprint", None),
                llama("(add(1, 2))", None),
                llama("", Some("eos")),
            ],
        )
    });
    let mut request = Request {
        stop: Some(Box::new(|text: &str| text.find('\n'))),
        ..request(64)
    };
    let (outcome, pieces) = generate(&client(Backend::LlamaCpp, &fake.endpoint()), &mut request);
    let finished = outcome.unwrap();
    assert_eq!(finished.text, "a + b");
    assert_eq!(pieces.concat(), "a + b");
    assert_eq!(finished.reason, FinishReason::StopPredicate);
}

#[test]
fn stop_strings_the_server_kept_are_cut() {
    // TGI keeps stop sequences in its text; a piece may hold text on both sides of one.
    let cases: [(&[&str], &str); 3] = [
        (&["a + b", "<|file_sep|>", "utils.py\n"], "a + b"),
        (&["a + b<|endoftext|>junk"], "a + b"),
        (&["return x", "\n<|fim_prefix|>def"], "return x\n"),
    ];
    for (events, expected) in cases {
        let fake = Fake::start(move |_, _, s| {
            let mut all: Vec<String> = events.iter().map(|e| tgi(e, false, None)).collect();
            all.push(tgi("", true, Some("whatever the server thinks")));
            stream(s, &all);
        });
        let (outcome, pieces) = generate(&client(Backend::Tgi, &fake.endpoint()), &mut request(64));
        let finished = outcome.unwrap();
        assert_eq!(finished.text, expected, "{events:?}");
        assert_eq!(pieces.concat(), expected, "{events:?}");
        assert_eq!(finished.reason, FinishReason::EndOfGeneration);
    }
}
