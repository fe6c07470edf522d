//! Panics over the real binary, injected with `PYFILL_FAULT`: a panicking handler answers its
//! request with an error and the server goes on; an engine thread that died is replaced.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::lsp::Client;
use common::{TinyOptions, tiny, token_id};
use serde_json::{Value, json};

const URI: &str = "file:///work/panics.py";

fn server_with_fault(fault: &str) -> (tempfile::TempDir, Client) {
    let (dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        ..TinyOptions::new("qwen2")
    });
    let mut client = Client::start(
        &["--model", path.to_str().unwrap()],
        &[("PYFILL_FAULT", fault)],
    );
    client.initialize(json!({"maxTokens": 3}), &["utf-16"]);
    client.wait_ready();
    client.open(URI, "x = \n");
    (dir, client)
}

#[test]
fn a_panicking_handler_answers_with_an_error_and_the_server_goes_on() {
    let (_dir, mut client) = server_with_fault("handler-panic");
    let id = client.inline_request(URI, 0, 4);
    let response = client.response(id, Duration::from_secs(30));
    assert_eq!(response["error"]["code"], -32603, "{response}");
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("handler failed"),
        "{response}"
    );
    assert_eq!(client.call("pyfill/status", Value::Null)["state"], "ready");
    assert_eq!(client.inline(URI, 0, 4), vec!["aaa".to_owned()]);
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn a_dead_engine_thread_is_replaced() {
    let (_dir, mut client) = server_with_fault("engine-panic");
    // The request the engine died on fails; it does not hang.
    let id = client.inline_request(URI, 0, 4);
    let response = client.response(id, Duration::from_secs(30));
    assert!(
        response.get("error").is_some() || response["result"]["items"] == json!([]),
        "{response}"
    );
    // The next one finds the engine gone and loads a new one.
    assert!(client.inline(URI, 0, 4).is_empty());
    client.wait_ready();
    assert_eq!(client.call("pyfill/status", Value::Null)["state"], "ready");
    assert_eq!(client.inline(URI, 0, 4), vec!["aaa".to_owned()]);
    assert_eq!(client.shutdown(), Some(0));
}
