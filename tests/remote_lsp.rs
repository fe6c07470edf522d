//! The real binary on a remote backend: the language server over JSON-RPC and `pyfill
//! complete`, against a fake llama-server in this process (`common::http`: a `TcpListener`
//! answering `/completion` with hand-written server-sent events). No model is loaded anywhere: the
//! `--model` given does not exist.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::http::{Fake, respond};
use common::lsp::{Client, items_text};
use serde_json::{Value, json};

const NO_MODEL: &str = "/nonexistent/pyfill-remote-test.gguf";

/// A fake llama-server on a free port: every `/completion` request gets `pieces` as events, then
/// the end-of-generation event, in one answer with a `Content-Length`.
fn llama_server(pieces: &'static [&'static str]) -> Fake {
    llama_server_on(TcpListener::bind("127.0.0.1:0").unwrap(), pieces)
}

/// [`llama_server`] on a listener the test bound.
fn llama_server_on(listener: TcpListener, pieces: &'static [&'static str]) -> Fake {
    let mut events: String = pieces
        .iter()
        .map(|p| format!("data: {}\n\n", json!({"content": p, "stop": false})))
        .collect();
    events.push_str("data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"eos\"}\n\n");
    Fake::on(listener, move |_, _, s| {
        respond(s, "200 OK", "text/event-stream", &events)
    })
}

/// A port on 127.0.0.1 where nothing listens (bound, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const URI: &str = "file:///work/remote/add.py";
const ADD: &str = "def add(a, b):\n    return \n";

/// A server on `endpoint`'s llama-server, initialized, its status ready.
fn server(endpoint: &str) -> Client {
    let mut client = Client::start(
        &[
            "--backend",
            "llama-cpp",
            "--endpoint",
            endpoint,
            "--model",
            NO_MODEL,
            "--remote-timeout-ms",
            "3000",
        ],
        &[],
    );
    client.initialize(Value::Null, &["utf-16"]);
    let ready = client
        .wait_for(Duration::from_secs(10), |m| {
            m["method"] == "pyfill/status" && m["params"]["state"] != "loading"
        })
        .expect("no status");
    assert_eq!(ready["params"]["state"], "ready", "{ready}");
    assert_eq!(ready["params"]["model"], endpoint, "{ready}");
    client
}

/// `window/showMessage` warnings that name `endpoint`, arriving within `wait`.
fn warnings(client: &mut Client, endpoint: &str, wait: Duration) -> Vec<String> {
    let mut found = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(m) = client.wait_for(deadline.saturating_duration_since(Instant::now()), |m| {
        m["method"] == "window/showMessage"
    }) {
        let text = m["params"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(text.contains(endpoint), "another message: {m}");
        assert_eq!(m["params"]["type"], 2, "a warning: {m}");
        found.push(text);
    }
    found
}

#[test]
fn suggestions_come_from_the_server_and_are_tidied() {
    // The server goes on past the return line; the suggestion ends with the statement.
    let fake = llama_server(&["a", " + b", "\n\n\n", "print(add(1, 2))\n"]);
    let mut client = server(&fake.endpoint());
    client.open(URI, ADD);
    assert_eq!(client.inline(URI, 1, 11), vec!["a + b".to_owned()]);

    assert_eq!(fake.attempts(), 1);
    let body = fake.request(0).body;
    let prompt = body["prompt"].as_str().unwrap();
    let prefix = prompt.find("<|fim_prefix|>").expect(prompt);
    let code = prompt.find("def add(a, b):\n    return ").expect(prompt);
    let suffix = prompt.find("<|fim_suffix|>").expect(prompt);
    assert!(prefix < code && code < suffix, "{prompt:?}");
    assert!(prompt.ends_with("<|fim_middle|>"), "{prompt:?}");
    assert_eq!(body["stream"], true);
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn text_that_is_not_ascii_is_suggested() {
    let fake = llama_server(&["\"Ça ", "fait déjà ", "trois tâches ", "à vérifier\"", "\n"]);
    let mut client = server(&fake.endpoint());
    client.open(URI, "def todo():\n    return \n");
    assert_eq!(
        client.inline(URI, 1, 11),
        vec!["\"Ça fait déjà trois tâches à vérifier\"".to_owned()]
    );
}

#[test]
fn an_outage_gives_empty_answers_and_one_warning_until_the_server_answers() {
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut client = server(&endpoint);
    let uris: Vec<String> = (0..3)
        .map(|i| format!("file:///work/remote/m{i}.py"))
        .collect();
    for uri in &uris {
        client.open(uri, ADD);
    }
    let empty_within = |client: &mut Client, ids: &[i64]| {
        let sent = Instant::now();
        for &id in ids {
            let response = client.response(id, Duration::from_secs(10));
            assert!(response.get("error").is_none(), "{response}");
            assert_eq!(items_text(&response), Vec::<String>::new());
        }
        // Connection refused three times, 200 + 800 ms apart.
        let took = sent.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
    };

    // The first requests fail together (they race to report the outage), then one more.
    let ids: Vec<i64> = uris
        .iter()
        .map(|u| client.inline_request(u, 1, 11))
        .collect();
    empty_within(&mut client, &ids);
    let id = client.inline_request(&uris[0], 1, 11);
    empty_within(&mut client, &[id]);
    let shown = warnings(&mut client, &endpoint, Duration::from_millis(300));
    assert_eq!(shown.len(), 1, "one warning per outage: {shown:?}");

    // The server comes up on that port: suggestions again, no message.
    let fake = llama_server_on(
        TcpListener::bind(("127.0.0.1", port)).unwrap(),
        &["a + b", "\n"],
    );
    assert_eq!(client.inline(&uris[1], 1, 11), vec!["a + b".to_owned()]);
    assert_eq!(fake.attempts(), 1);

    // It goes down again: a new outage, a new warning.
    fake.stop();
    let id = client.inline_request(&uris[2], 1, 11);
    empty_within(&mut client, &[id]);
    let shown = warnings(&mut client, &endpoint, Duration::from_millis(300));
    assert_eq!(shown.len(), 1, "the next outage is told: {shown:?}");
}

fn pyfill(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .args(args)
        .output()
        .unwrap();
    (out, start.elapsed())
}

#[test]
fn complete_on_an_unreachable_server_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("add.py");
    std::fs::write(&file, ADD).unwrap();
    let location = format!("{}:2:12", file.display());
    let endpoint = format!("http://127.0.0.1:{}", closed_port());

    let (out, took) = pyfill(&[
        "complete",
        &location,
        "--backend",
        "llama-cpp",
        "--endpoint",
        &endpoint,
        "--model",
        NO_MODEL,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(out.stdout.is_empty());

    let (out, took) = pyfill(&["complete", &location, "--backend", "tgi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("tgi needs an endpoint"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // And on a server that answers: the suggestion, no model needed.
    let fake = llama_server(&["a + b", "\n"]);
    let (out, _) = pyfill(&[
        "complete",
        &location,
        "--backend",
        "llama-cpp",
        "--endpoint",
        &fake.endpoint(),
        "--model",
        NO_MODEL,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a + b\n");
}
