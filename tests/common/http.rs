//! A fake inference server for tests, in this process: a plain `TcpListener` that keeps every
//! request it reads and answers with hand-written HTTP/1.1, as the test's closure says (a whole
//! answer, server-sent events in chunks, or whatever failure a real server or network produces),
//! with each server's event format (llama-server, OpenAI, TGI). Then the client side:
//! `pyfill::remote` pointed at such a fake, and the outcome of a request on it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyfill::engine::{CancelToken, Engine, Error, Event, Finished, GenerationParams, Request};
use pyfill::remote::{Backend, Client, Options};
use serde_json::{Value, json};

/// A fill-in-the-middle prompt with its special tokens written out, as the engine sends it.
pub const FIM: &str = "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>";

// ---------------------------------------------------------------------------------------------
// The fake server.

/// One request as the fake server read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake does with a connection: the attempt number (0 for the first request it read),
/// the request, and the connection to answer on (closed when this returns).
pub type Answer = dyn Fn(usize, &Seen, &mut TcpStream) + Send + Sync;

/// A fake server and the requests it has read, in order.
pub struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stopped: Arc<AtomicBool>,
}

impl Fake {
    /// Serves on a free port of 127.0.0.1, each connection on a thread of its own (so one that
    /// hangs holds up no other), until the test process ends or [`Fake::stop`].
    pub fn start(answer: impl Fn(usize, &Seen, &mut TcpStream) + Send + Sync + 'static) -> Fake {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), answer)
    }

    /// Like [`Fake::start`], on a listener the test bound (a port it chose).
    pub fn on(
        listener: TcpListener,
        answer: impl Fn(usize, &Seen, &mut TcpStream) + Send + Sync + 'static,
    ) -> Fake {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let (log, stop) = (seen.clone(), stopped.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    // The listener closes here: connections are refused from now on.
                    return;
                }
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
        Fake {
            addr,
            seen,
            stopped,
        }
    }

    /// Closes the port (the accept loop wakes on one last connection and ends).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        // Until the listener is dropped, connections would still be accepted by the kernel.
        let deadline = Instant::now() + Duration::from_secs(2);
        while TcpStream::connect(self.addr).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests it has read.
    pub fn attempts(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The `i`th request read (from 0).
    pub fn request(&self, i: usize) -> Seen {
        self.seen.lock().unwrap()[i].clone()
    }
}

/// Reads one HTTP/1.1 request (a `Content-Length` or chunked body, parsed as JSON if it is).
pub fn read_request(stream: &TcpStream) -> Option<Seen> {
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
pub fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

/// The head of a streamed answer: server-sent events in chunks, as llama-server and TGI send.
pub fn start_stream(s: &mut TcpStream) -> io::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    s.flush()
}

/// One chunk of a streamed answer.
pub fn send_chunk(s: &mut TcpStream, text: &str) -> io::Result<()> {
    write!(s, "{:x}\r\n{text}\r\n", text.len())?;
    s.flush()
}

/// The last, empty chunk.
pub fn end_stream(s: &mut TcpStream) {
    let _ = s.write_all(b"0\r\n\r\n");
    let _ = s.flush();
}

/// A whole streamed answer, one chunk per event.
pub fn stream(s: &mut TcpStream, events: &[String]) {
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
pub fn llama(content: &str, stop: Option<&str>) -> String {
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
pub fn openai(text: &str, finish: Option<&str>) -> String {
    let event = json!({
        "id": "cmpl-1", "object": "text_completion", "model": "m",
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {event}\n\n")
}

/// TGI's `/generate_stream` event (no space after `data:`); the last carries the whole text.
pub fn tgi(text: &str, special: bool, generated: Option<&str>) -> String {
    let event = json!({
        "index": 1, "token": {"id": 7, "text": text, "logprob": -0.1, "special": special},
        "generated_text": generated, "details": null,
    });
    format!("data:{event}\n\n")
}

/// An error answer's body in the OpenAI shape (llama-server's too).
pub fn error_body(message: &str) -> String {
    json!({"error": {"code": 500, "message": message, "type": "server_error"}}).to_string()
}

// ---------------------------------------------------------------------------------------------
// The client side: `pyfill::remote` on a fake.

/// Options for `backend` at `endpoint`: a 5 s timeout, 2 retries, no API key.
pub fn options(backend: Backend, endpoint: &str) -> Options {
    Options {
        backend,
        endpoint: endpoint.to_owned(),
        model: Some("qwen2.5-coder".into()),
        api_key_env: None,
        timeout: Duration::from_secs(5),
        retries: 2,
    }
}

/// A client with [`options`].
pub fn client(backend: Backend, endpoint: &str) -> Client {
    Client::new(options(backend, endpoint)).unwrap()
}

/// A request for at most `max_tokens` with the default parameters and an empty prompt (the client
/// sends [`FIM`]; a test on an engine sets the prompt).
pub fn request(max_tokens: usize) -> Request {
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
pub fn generate(client: &Client, request: &mut Request) -> (Result<Finished, Error>, Vec<String>) {
    let mut pieces = Vec::new();
    let outcome = client.generate(FIM, request, &CancelToken::default(), &mut |piece| {
        pieces.push(piece.to_owned())
    });
    (outcome, pieces)
}

/// A request on `engine` to its end: the outcome and the text events.
pub fn run(engine: &Engine, request: Request) -> (Result<Finished, Error>, Vec<String>) {
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
pub fn remote_error(outcome: Result<Finished, Error>, endpoint: &str) -> String {
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
