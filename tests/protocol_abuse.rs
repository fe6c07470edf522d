//! Protocol abuse over the real binary's stdio: every bad frame gets a JSON-RPC error, and the
//! server goes on answering the next ones.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::lsp::Client;
use common::{TinyOptions, tiny, token_id};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};

/// A frame as raw bytes: headers as given, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn bad_frames_get_errors_and_the_server_goes_on() {
    let mut client = Client::start(&["--model", "/nonexistent.gguf"], &[]);
    client.initialize(Value::Null, &["utf-16"]);
    let cases: Vec<(&str, Vec<u8>, i64, Value)> = vec![
        ("not JSON", frame(b"hello"), -32700, Value::Null),
        ("not UTF-8", frame(b"\"\xff\xfe\""), -32700, Value::Null),
        (
            "JSON, not JSON-RPC",
            frame(br#"{"foo": 1}"#),
            -32600,
            Value::Null,
        ),
        (
            "wrong version, id kept",
            frame(br#"{"jsonrpc":"1.0","id":41,"method":"x"}"#),
            -32600,
            json!(41),
        ),
        (
            "a header line that is not one",
            b"garbage\r\n\r\n".to_vec(),
            -32700,
            Value::Null,
        ),
        (
            "a length past the limit",
            b"Content-Length: 99999999999999\r\n\r\n{}".to_vec(),
            -32700,
            Value::Null,
        ),
        (
            "a length that is no number",
            b"Content-Length: 999999999999999999999999\r\n\r\n{}".to_vec(),
            -32700,
            Value::Null,
        ),
        (
            "any content type is read; an empty object is no message",
            b"Content-Length: 2\r\nContent-Type: text/html\r\n\r\n{}".to_vec(),
            -32600,
            Value::Null,
        ),
    ];
    for (what, bytes, code, id) in cases {
        client.send_raw_bytes(&bytes);
        let error = client
            .wait_for(Duration::from_secs(10), |m| {
                m.get("error").is_some() && m["id"] == id
            })
            .unwrap_or_else(|| panic!("{what}: no error response"));
        assert_eq!(error["error"]["code"], code, "{what}: {error}");
        // Still serving: a valid request right after is answered.
        let status = client.call("pyfill/status", Value::Null);
        assert!(status["state"].is_string(), "{what}: {status}");
    }

    // Valid JSON-RPC the server cannot use: errors where JSON-RPC calls for them.
    let id = client.request("no/such/method", json!({}));
    assert_eq!(
        client.response(id, Duration::from_secs(10))["error"]["code"],
        -32601
    );
    let id = client.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": 5, "position": "here"}),
    );
    assert_eq!(
        client.response(id, Duration::from_secs(10))["error"]["code"],
        -32602
    );
    client.notify("textDocument/didOpen", json!({"textDocument": []}));
    client.notify("no/such/notification", json!(null));
    assert_eq!(client.shutdown(), Some(0));
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-2i64..2000).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("textDocument".to_owned()),
                    Just("uri".to_owned()),
                    Just("position".to_owned()),
                    Just("line".to_owned()),
                    Just("character".to_owned()),
                    Just("contentChanges".to_owned()),
                    Just("range".to_owned()),
                    Just("text".to_owned()),
                    Just("settings".to_owned()),
                    Just("id".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A message a confused client might send: real method names with random params, well-formed
/// edits and requests at random places, or any JSON at all.
fn any_message() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just("textDocument/didOpen"),
        Just("textDocument/didChange"),
        Just("textDocument/didClose"),
        Just("textDocument/inlineCompletion"),
        Just("textDocument/completion"),
        Just("workspace/didChangeConfiguration"),
        Just("$/cancelRequest"),
        Just("pyfill/status"),
        Just("initialize"),
        Just("no/such"),
    ];
    let position = (0u32..6, 0u32..40).prop_map(|(l, c)| json!({"line": l, "character": c}));
    prop_oneof![
        (
            method.clone(),
            any_json(),
            prop::option::of(1_000_000i64..1_000_050)
        )
            .prop_map(|(m, params, id)| {
                let mut msg = json!({"jsonrpc": "2.0", "method": m, "params": params});
                if let Some(id) = id {
                    msg["id"] = json!(id);
                }
                msg
            }),
        (position.clone(), position.clone(), ".{0,8}", 1i32..100).prop_map(|(a, b, text, v)| {
            json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": URI, "version": v},
                "contentChanges": [{"range": {"start": a, "end": b}, "text": text}],
            }})
        }),
        (position, 2_000_000i64..2_000_100, 0u8..3).prop_map(|(p, id, which)| {
            let method = [
                "textDocument/inlineCompletion",
                "textDocument/completion",
                "pyfill/status",
            ][which as usize];
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {
                "textDocument": {"uri": URI}, "position": p, "context": {"triggerKind": 1},
            }})
        }),
        any_json()
            .prop_map(|v| json!({"jsonrpc": "2.0", "id": 3_000_000, "method": "x", "params": v})),
        // Ids stay clear of the test client's own (small) ones.
        any_json().prop_filter("no id", |v| v.get("id").is_none()),
    ]
}

const URI: &str = "file:///work/fuzzed.py";

#[test]
fn random_message_streams_never_stop_the_server() {
    let (_dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        ..TinyOptions::new("qwen2")
    });
    let mut client = Client::start(&["--model", path.to_str().unwrap()], &[]);
    client.initialize(json!({"maxTokens": 3}), &["utf-16"]);
    client.wait_ready();
    client.open(URI, "import os\n\ndef f(x):\n    return \n");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let messages = prop::collection::vec(any_message(), 400)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    for message in &messages {
        client.send_raw(&message.to_string());
    }
    // Everything above was read and handled: the server still answers, the document is still
    // open and suggestions still come.
    let status = client.call("pyfill/status", Value::Null);
    assert_eq!(status["state"], "ready", "{status}");
    client.open(URI, "x = \n");
    assert_eq!(client.inline(URI, 0, 4), vec!["aaa".to_owned()]);
    assert_eq!(client.shutdown(), Some(0));
}
