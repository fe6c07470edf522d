//! The remote backend (`pyfill::remote`) speaking each server's format, against fake servers in
//! this process (`common::http`): what pyfill sends to llama-server, OpenAI-compatible servers and
//! TGI, and the text it makes of their streams, through the engine or the client alone; answers
//! split across slow writes; text that is not ASCII; where the text stops (the stop predicate,
//! stop strings the server kept). Failures are in `remote_faults.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::http::{
    FIM, Fake, client, generate, llama, openai, options, request, run, stream, tgi,
};
use pyfill::engine::{FinishReason, Request};
use pyfill::remote::Backend;
use serde_json::json;

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
// 2. Where the text stops.

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
