//! Odd documents over the real binary: huge files, a 1 MB line, binary characters, CRLF, tabs,
//! deep nesting and invalid positions. Each gets an answer or a clear error, and the buffer
//! stays usable. (How long they take is measured by hand, see README: timings are not tests.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::lsp::Client;
use common::{TinyOptions, tiny, token_id};
use serde_json::json;

/// A server on a tiny model that always writes "a", three tokens per suggestion. Its context is
/// as long as the real model's: a tiny model's byte-sized tokens would fill a short one with a
/// single long line.
fn server() -> (tempfile::TempDir, Client) {
    let (dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        context: 32_768,
        ..TinyOptions::new("qwen2")
    });
    let mut client = Client::start(&["--model", path.to_str().unwrap()], &[]);
    client.initialize(json!({"maxTokens": 3}), &["utf-16"]);
    client.wait_ready();
    (dir, client)
}

fn insert(client: &Client, uri: &str, version: i32, line: u32, character: u32, text: &str) {
    let at = json!({"line": line, "character": character});
    client.change(
        uri,
        version,
        json!([{"range": {"start": at, "end": at}, "text": text}]),
    );
}

#[test]
fn a_10_mb_file_and_a_1_mb_line_are_served_and_edited() {
    let (_dir, mut client) = server();
    let uri = "file:///work/huge.py";
    let mut text = String::from("import os\n\n");
    for i in 0..300_000 {
        text.push_str(&format!("def f{i}(x):\n    return x * {i}\n\n"));
    }
    text.push_str("y = \n");
    assert!(text.len() > 10_000_000);
    let last = text.matches('\n').count() as u32 - 1;
    client.open(uri, &text);
    assert_eq!(client.inline(uri, last, 4), vec!["aaa".to_owned()]);
    // Typing at the end and in the middle keeps the buffer in step.
    insert(&client, uri, 2, last, 4, "z");
    assert_eq!(client.inline(uri, last, 5), vec!["aaa".to_owned()]);
    // Line 450,003 is `    return x * 150000`: type a word at its start, and the completion
    // item (which replaces the word before the cursor) shows the edit landed there.
    insert(&client, uri, 3, 450_003, 4, "value");
    let result = client.call(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 450_003, "character": 9}}),
    );
    let edit = &result["items"][0]["textEdit"];
    assert_eq!(edit["newText"], "valueaaa", "{result}");
    assert_eq!(
        edit["range"]["start"],
        json!({"line": 450_003, "character": 4})
    );
    assert_eq!(client.inline(uri, last, 5), vec!["aaa".to_owned()]);

    let uri = "file:///work/long_line.py";
    let line = format!("x = [{}]\n", vec!["1234"; 200_000].join(", "));
    assert!(line.len() > 1_000_000);
    client.open(uri, &format!("{line}y = \n"));
    // Mid-line in a list of numbers, "aaa" may be dropped as not fitting: an answer, not an
    // error, is what counts here.
    assert!(client.inline(uri, 0, 500_000).len() <= 1);
    assert_eq!(client.inline(uri, 1, 4), vec!["aaa".to_owned()]);
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn binary_characters_line_endings_tabs_and_deep_nesting() {
    let (_dir, mut client) = server();
    let documents = [
        (
            "nul",
            "s = '\u{0}\u{1}\u{7f}\u{fffd}'\nt = \n".to_owned(),
            1,
            4,
        ),
        ("crlf", "def f(a, b):\r\n    return \r\n".to_owned(), 1, 11),
        ("tabs", "def f(a, b):\n\treturn \n".to_owned(), 1, 8),
        (
            "parens",
            format!("x = {}1{}\ny = \n", "(".repeat(50_000), ")".repeat(50_000)),
            1,
            4,
        ),
        (
            "unclosed",
            format!("x = {}\ny = \n", "[".repeat(50_000)),
            1,
            4,
        ),
        (
            "indent",
            (0..800)
                .map(|i| format!("{}if x:\n", "    ".repeat(i)))
                .chain([format!("{}z = \n", "    ".repeat(800))])
                .collect(),
            800,
            3204,
        ),
        ("astral", "s = '🐍🐍'\nt = \n".to_owned(), 1, 4),
    ];
    for (name, text, line, character) in &documents {
        let uri = format!("file:///work/{name}.py");
        client.open(&uri, text);
        assert_eq!(
            client.inline(&uri, *line, *character),
            vec!["aaa".to_owned()],
            "{name}"
        );
    }
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn invalid_positions_get_errors_or_clamp_and_bad_edits_lose_nothing() {
    let (_dir, mut client) = server();
    let uri = "file:///work/positions.py";
    client.open(uri, "s = '🐍'\nt = \n");
    // Inside the surrogate pair of 🐍 (UTF-16 columns 5 and 6).
    let id = client.inline_request(uri, 0, 6);
    let error = client.response(id, Duration::from_secs(30));
    assert_eq!(error["error"]["code"], -32602, "{error}");
    // Negative numbers are not positions at all.
    let id = client.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": {"uri": uri}, "position": {"line": -1, "character": 0}, "context": {"triggerKind": 1}}),
    );
    assert_eq!(
        client.response(id, Duration::from_secs(30))["error"]["code"],
        -32602
    );
    // Past a line's end clamps to it; past the document's end clamps to the end.
    assert_eq!(client.inline(uri, 1, 999), vec!["aaa".to_owned()]);
    assert_eq!(client.inline(uri, 99, 0), vec!["aaa".to_owned()]);

    // An edit whose start is after its end, or inside a character, is skipped; the buffer
    // keeps its text, so the next good edit lands where the editor means it.
    client.change(
        uri,
        2,
        json!([
            {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 0, "character": 2}}, "text": "X"},
            {"range": {"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 6}}, "text": "X"},
        ]),
    );
    insert(&client, uri, 3, 1, 4, "b");
    // A completion item replaces the word before the cursor: it shows what the buffer holds.
    let result = client.call(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 1, "character": 5}}),
    );
    let edit = &result["items"][0]["textEdit"];
    assert_eq!(edit["newText"], "baaa", "{result}");
    assert_eq!(
        edit["range"],
        json!({"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 5}})
    );
    assert_eq!(client.shutdown(), Some(0));
}
