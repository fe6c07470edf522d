//! The remote backend against a real `llama-server` (llama.cpp, built from the sources vendored
//! in PyPI's llama-cpp-python by `scripts/llama-cpp.sh`) serving the default model on
//! 127.0.0.1: `pyfill complete` and the language server get their suggestions from it, and a
//! cancelled request frees the server's slot.
//!
//! Ignored in a plain `cargo test` (it needs the server binary, about 8 minutes to build):
//! `.ci/run` builds it and runs these with `PYFILL_LLAMA_SERVER` set, as does
//! `scripts/test-llama-server.sh`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lsp::Client;
use pyfill::engine::{CancelToken, Event, GenerationParams, Request};
use pyfill::remote::{self, Backend, Options};
use serde_json::{Value, json};

/// A llama-server child on a free port, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let binary = std::env::var("PYFILL_LLAMA_SERVER").expect(
            "PYFILL_LLAMA_SERVER: the llama-server binary (scripts/llama-cpp.sh llama-server)",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(binary);
        command
            .args(["--model", common::real_model().to_str().unwrap()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--threads", "2", "--ctx-size", "4096", "--parallel", "1"])
            .arg("--no-webui")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its flags also come from LLAMA_ARG_* variables: none of the caller's.
        for (key, _) in std::env::vars() {
            if key.starts_with("LLAMA_ARG_") || key == "LLAMA_API_KEY" {
                command.env_remove(key);
            }
        }
        let server = Server {
            child: command.spawn().expect("start llama-server"),
            port,
        };
        let start = Instant::now();
        while server.get("/health").0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "llama-server not healthy after 2 minutes"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A GET: status and body (0 when it cannot connect).
    fn get(&self, path: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Whether the server's one slot is generating (`GET /slots`).
    fn busy(&self) -> bool {
        let (_, body) = self.get("/slots");
        // Chunked or not, the JSON array is the part between the first '[' and the last ']'.
        let json = body
            .find('[')
            .and_then(|a| body.rfind(']').map(|b| &body[a..=b]))
            .unwrap_or("[]");
        let slots: Value = serde_json::from_str(json).unwrap_or(json!([]));
        slots
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["is_processing"] == json!(true))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FIB: &str = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    return \n\nprint(fibonacci(10))\n";

fn complete(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fib.py");
    std::fs::write(&file, FIB).unwrap();
    let location = format!("{}:5:12", file.display());
    let out = Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .arg("complete")
        .arg(&location)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs llama-server: PYFILL_LLAMA_SERVER (see .ci/run)"]
fn suggestions_come_from_llama_server() {
    let server = Server::start();
    let endpoint = server.endpoint();
    let model = common::real_model();
    let model = model.to_str().unwrap();
    for args in [
        vec!["--backend", "llama-cpp", "--endpoint", &endpoint],
        vec![
            "--backend",
            "llama-cpp",
            "--endpoint",
            &endpoint,
            "--tokenizer",
            model,
        ],
        vec![
            "--backend",
            "openai",
            "--endpoint",
            &endpoint,
            "--remote-model",
            "qwen",
        ],
    ] {
        let (ok, stdout, stderr) = complete(&args);
        assert!(ok, "{args:?}: {stderr}");
        assert!(
            stdout.contains("fibonacci(n - 1) + fibonacci(n - 2)"),
            "{args:?}: {stdout:?}"
        );
    }

    // An API key goes to the server and never to the logs, even at trace level.
    let key = "pyfill-test-key-8f3a";
    let out = Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .args(["complete", "/nonexistent.py:1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fib.py");
    std::fs::write(&file, FIB).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .arg("complete")
        .arg(format!("{}:5:12", file.display()))
        .args(["--backend", "llama-cpp", "--endpoint", &endpoint])
        .args(["--api-key-env", "PYFILL_TEST_SERVER_KEY"])
        .env("PYFILL_TEST_SERVER_KEY", key)
        .env("PYFILL_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("TRACE"), "trace logging was not on");
    assert!(
        !stderr.contains(key) && !stderr.contains("8f3a"),
        "the API key reached the log"
    );

    // The language server: no model is loaded (the path does not exist); the suggestion comes
    // from the server.
    let mut client = Client::start(
        &[
            "--model",
            "/nonexistent/model.gguf",
            "--backend",
            "llama-cpp",
            "--endpoint",
            &endpoint,
        ],
        &[],
    );
    client.initialize(json!({}), &[]);
    let status = client.wait_ready();
    assert!(status.contains(&endpoint), "{status}");
    client.open("file:///tmp/fib.py", FIB);
    let items = client.inline("file:///tmp/fib.py", 4, 11);
    assert!(
        items
            .iter()
            .any(|t| t.contains("fibonacci(n - 1) + fibonacci(n - 2)")),
        "{items:?}"
    );
    client.shutdown();
}

#[test]
#[ignore = "needs llama-server: PYFILL_LLAMA_SERVER (see .ci/run)"]
fn a_cancelled_request_frees_the_servers_slot() {
    let server = Server::start();
    let engine = remote::engine(
        Options {
            backend: Backend::LlamaCpp,
            endpoint: server.endpoint(),
            model: None,
            api_key_env: None,
            timeout: Duration::from_secs(60),
            retries: 0,
        },
        Some(&common::real_model()),
    )
    .unwrap();
    // A prompt the model answers at length: many numbered lines.
    let text: String = (0..40).map(|i| format!("value_{i} = {i}\n")).collect();
    let prompt = engine.tokenizer().encode(&text, false).unwrap();
    let cancel = CancelToken::default();
    let mut generation = engine
        .generate_with(
            Request {
                prompt,
                fallback: None,
                fallback_max_time: None,
                params: GenerationParams {
                    max_tokens: 2000,
                    ..GenerationParams::default()
                },
                stop: None,
                heal: false,
            },
            cancel.clone(),
        )
        .unwrap();
    // Wait for the first text, then cancel.
    let first = generation.events.blocking_recv();
    assert!(matches!(first, Some(Event::Text(_))), "no text streamed");
    assert!(server.busy(), "the server should be generating");
    let cancelled = Instant::now();
    cancel.cancel();
    let finished = generation.wait().unwrap();
    assert_eq!(finished.reason, pyfill::engine::FinishReason::Cancelled);
    // Within a token or two (slow on a busy machine).
    assert!(cancelled.elapsed() < Duration::from_secs(10));
    let start = Instant::now();
    while server.busy() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server kept generating after the request was cancelled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
