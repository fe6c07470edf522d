//! Protocol abuse over the real binary's stdio: every bad frame gets a JSON-RPC error, and the
//! server goes on answering the next ones.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::lsp::Client;
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
