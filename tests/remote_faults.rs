//! The remote backend (`pyfill::remote`) when things go wrong, against fake servers in this
//! process (`common::http`) that fail as real servers and networks do: silence and stalls
//! (timeouts, the request's time limit), error answers and which of them are retried, garbage,
//! connections dropped mid-answer, and cancellation, which must drop the connection. The API
//! key's way through is checked on the real binary, whose environment a test may set. Each
//! server's formats are in `remote.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use common::http::{
    FIM, Fake, client, end_stream, error_body, generate, llama, openai, options, remote_error,
    request, respond, send_chunk, start_stream, stream, tgi,
};
use pyfill::engine::{CancelToken, Event, FinishReason, Request};
use pyfill::remote::{Backend, Client, Options};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// 1. A server that does not answer.

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
// 2. Error answers and retries.

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
// 3. Garbage and broken connections.

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
// 4. Cancellation.

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

/// A server still computing the prompt (llama-server sends its headers with the first token):
/// cancelling closes the connection at once, not when the first byte arrives, so the server
/// stops computing for nobody.
#[test]
fn cancelling_before_the_first_byte_hangs_up_at_once() {
    let (hung_up_tx, hung_up) = mpsc::channel();
    let fake = Fake::start(move |_, _, s| {
        // Silent for up to 5 s, watching for the client to hang up.
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        while start.elapsed() < Duration::from_secs(5) {
            match s.read(&mut buf) {
                Ok(0) => {
                    let _ = hung_up_tx.send(Instant::now());
                    return;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    let _ = hung_up_tx.send(Instant::now());
                    return;
                }
            }
        }
        respond(
            s,
            "200 OK",
            "text/event-stream",
            &llama("late", Some("eos")),
        );
    });
    let client = client(Backend::LlamaCpp, &fake.endpoint());
    let cancel = CancelToken::default();
    let worker = std::thread::spawn({
        let cancel = cancel.clone();
        move || {
            let outcome = client.generate(FIM, &mut request(16), &cancel, &mut |_| {});
            (outcome, Instant::now())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let cancelled = Instant::now();
    cancel.cancel();
    let (outcome, returned) = worker.join().unwrap();
    assert_eq!(outcome.unwrap().reason, FinishReason::Cancelled);
    assert_prompt_cancel(cancelled, returned, &hung_up, Duration::from_millis(500));
}

/// A request cancelled at `cancelled` returned within 300 ms (at `returned`), and the server
/// saw the connection close (`hung_up`) within `noticed`.
fn assert_prompt_cancel(
    cancelled: Instant,
    returned: Instant,
    hung_up: &mpsc::Receiver<Instant>,
    noticed: Duration,
) {
    assert!(
        returned - cancelled < Duration::from_millis(300),
        "returned {:?} after the cancel",
        returned - cancelled
    );
    let hung_up = hung_up
        .recv_timeout(Duration::from_secs(3))
        .expect("the connection stayed open after the cancel");
    assert!(
        hung_up - cancelled < noticed,
        "the server noticed {:?} after the cancel",
        hung_up - cancelled
    );
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
    assert_eq!(finished.reason, FinishReason::Cancelled);
    assert!(finished.text.starts_with(" t0"), "{:?}", finished.text);
    // The server learns it by the connection: its writes fail.
    assert_prompt_cancel(cancelled, returned, &hung_up, Duration::from_secs(1));
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
// 5. The API key.

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
