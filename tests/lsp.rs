//! The language server, driven as an editor would: the real binary over stdio JSON-RPC, on tiny
//! test models and on the real default model.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::lsp::{Client, items_text};
use common::{TinyOptions, tiny, token_id};
use serde_json::{Value, json};

const URI: &str = "file:///work/demo.py";

/// A server on a tiny model that always writes "a", with the given settings.
fn server_on_letter_a(settings: Value) -> (tempfile::TempDir, Client) {
    let (dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        // Long enough that a 65536-token request runs until it is cancelled.
        context: 32_768,
        ..TinyOptions::new("qwen2")
    });
    let mut client = Client::start(&["--model", path.to_str().unwrap()], &[]);
    client.initialize(settings, &["utf-16"]);
    client.wait_ready();
    (dir, client)
}

#[test]
fn initialize_declares_exact_capabilities() {
    let mut client = Client::start(&["--model", "/nonexistent.gguf"], &[]);
    let result = client.initialize(Value::Null, &["utf-16"]);
    assert_eq!(
        result["capabilities"],
        json!({
            "positionEncoding": "utf-16",
            "textDocumentSync": {"openClose": true, "change": 2, "save": true},
            "completionProvider": {"resolveProvider": false},
            "inlineCompletionProvider": true,
        })
    );
    assert_eq!(result["serverInfo"]["name"], "pyfill");
    assert_eq!(client.shutdown(), Some(0));

    let mut client = Client::start(&["--model", "/nonexistent.gguf"], &[]);
    let result = client.initialize(Value::Null, &["utf-8", "utf-16"]);
    assert_eq!(result["capabilities"]["positionEncoding"], "utf-8");
}

#[test]
fn inline_and_plain_completion_on_a_tiny_model() {
    let (_dir, mut client) = server_on_letter_a(json!({"maxTokens": 5}));
    client.open(URI, "x = ab\n");
    assert_eq!(client.inline(URI, 0, 6), vec!["aaaaa".to_owned()]);

    let result = client.call(
        "textDocument/completion",
        json!({"textDocument": {"uri": URI}, "position": {"line": 0, "character": 6}}),
    );
    assert_eq!(result["isIncomplete"], true);
    let item = &result["items"][0];
    assert_eq!(item["filterText"], "abaaaaa");
    assert_eq!(item["textEdit"]["newText"], "abaaaaa");
    assert_eq!(
        item["textEdit"]["range"],
        json!({"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 6}})
    );
    assert_eq!(item["sortText"], "0");
    assert!(
        item["documentation"]["value"]
            .as_str()
            .unwrap()
            .contains("abaaaaa")
    );
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn typing_along_a_suggestion_is_answered_from_it() {
    let (_dir, mut client) = server_on_letter_a(json!({"maxTokens": 5}));
    client.open(URI, "x = ab\n");
    assert_eq!(client.inline(URI, 0, 6), vec!["aaaaa".to_owned()]);
    // The user types the suggestion's first letter: the rest of it comes back (the model
    // would have written five letters again).
    let at = json!({"line": 0, "character": 6});
    client.change(
        URI,
        2,
        json!([{"range": {"start": at, "end": at}, "text": "a"}]),
    );
    assert_eq!(client.inline(URI, 0, 7), vec!["aaaa".to_owned()]);
    // Something else typed: the model again.
    let at = json!({"line": 0, "character": 7});
    client.change(
        URI,
        3,
        json!([{"range": {"start": at, "end": at}, "text": "b"}]),
    );
    assert_eq!(client.inline(URI, 0, 8), vec!["aaaaa".to_owned()]);
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn typing_along_a_running_suggestion_keeps_it_going() {
    // Long enough that the first request still runs when the letter is typed; a restart would
    // write all of them again.
    const LETTERS: usize = 4000;
    let (_dir, mut client) = server_on_letter_a(json!({"maxTokens": LETTERS, "timeoutMs": 0}));
    client.open(URI, "x = ab\n");
    let first = client.inline_request(URI, 0, 6);
    std::thread::sleep(Duration::from_millis(100));
    let at = json!({"line": 0, "character": 6});
    client.change(
        URI,
        2,
        json!([{"range": {"start": at, "end": at}, "text": "a"}]),
    );
    let second = client.inline_request(URI, 0, 7);
    // The editor gives up the first request; the second still wants its generation.
    client.notify("$/cancelRequest", json!({"id": first}));
    let answer = client.response(second, Duration::from_secs(120));
    assert_eq!(items_text(&answer), vec!["a".repeat(LETTERS - 1)]);
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn a_newer_request_supersedes_and_cancel_request_stops_work() {
    let (_dir, mut client) = server_on_letter_a(json!({"maxTokens": 65536, "timeoutMs": 0}));
    client.open(URI, "x = \n");
    let first = client.inline_request(URI, 0, 4);
    std::thread::sleep(Duration::from_millis(200));
    let second = client.inline_request(URI, 0, 4);
    let start = Instant::now();
    let superseded = client.response(first, Duration::from_secs(5));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "superseded after {:?}",
        start.elapsed()
    );
    assert!(items_text(&superseded).is_empty(), "{superseded}");

    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    client.notify("$/cancelRequest", json!({"id": second}));
    let cancelled = client.response(second, Duration::from_secs(5));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "cancelled after {:?}",
        start.elapsed()
    );
    assert_eq!(cancelled["error"]["code"], -32800, "{cancelled}");

    // The engine is free again: a short request is served at once.
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": 3}}),
    );
    assert_eq!(client.inline(URI, 0, 4), vec!["aaa".to_owned()]);
}

#[test]
fn requests_without_a_usable_model_answer_empty_and_the_user_is_told() {
    let cache = tempfile::tempdir().unwrap();
    let mut client = Client::start(&[], &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())]);
    client.initialize(Value::Null, &["utf-16"]);
    let message = client
        .notification("window/showMessage", Duration::from_secs(10))
        .unwrap();
    let text = message["params"]["message"].as_str().unwrap();
    assert!(
        text.contains("pyfill model fetch") && text.contains("`model` setting"),
        "{text}"
    );
    // The status says what fixes it, for an editor's "fetch the model" button.
    let status = client
        .notification("pyfill/status", Duration::from_secs(10))
        .unwrap();
    assert_eq!(status["params"]["state"], "error", "{status}");
    assert_eq!(status["params"]["modelMissing"], true, "{status}");
    client.open(URI, "x = 1\n");
    assert!(client.inline(URI, 0, 4).is_empty());

    // A broken file is named in the message.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("broken.gguf");
    std::fs::write(&garbage, "not a model").unwrap();
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"pyfill": {"model": garbage}}}),
    );
    let message = client
        .notification("window/showMessage", Duration::from_secs(10))
        .unwrap();
    assert!(
        message["params"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.gguf"),
        "{message}"
    );
    let status = client.call("pyfill/status", Value::Null);
    assert_eq!(status["state"], "error", "{status}");
    assert!(status.get("modelMissing").is_none(), "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("broken.gguf"),
        "{status}"
    );
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn loading_is_reported_as_status_until_ready_and_disabling_says_so() {
    let (_dir, path) = tiny(&TinyOptions::new("qwen2"));
    let mut client = Client::start(&["--model", path.to_str().unwrap()], &[]);
    client.initialize(Value::Null, &["utf-16"]);
    let mut seen = Vec::new();
    loop {
        let status = client
            .notification("pyfill/status", Duration::from_secs(60))
            .expect("the status never became ready");
        let params = status["params"].clone();
        let state = params["state"].as_str().unwrap().to_owned();
        seen.push(params);
        if state != "loading" {
            assert_eq!(state, "ready", "{seen:?}");
            break;
        }
    }
    let percentages: Vec<u64> = seen
        .iter()
        .filter_map(|s| s["percentage"].as_u64())
        .collect();
    assert_eq!(percentages.first(), Some(&0), "{seen:?}");
    assert!(percentages.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(percentages.iter().any(|&p| p >= 90), "{seen:?}");
    let ready = seen.last().unwrap();
    assert_eq!(ready["model"], path.display().to_string(), "{ready}");
    assert!(
        ready["message"].as_str().unwrap().contains("model ready"),
        "{ready}"
    );
    assert_eq!(client.call("pyfill/status", Value::Null), *ready);

    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"pyfill": {"enable": false}}}),
    );
    let status = client
        .notification("pyfill/status", Duration::from_secs(10))
        .unwrap();
    assert_eq!(status["params"]["state"], "disabled", "{status}");
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn requests_while_the_model_loads_answer_empty_at_once() {
    let model = common::real_model();
    let mut client = Client::start(&["--model", model.to_str().unwrap()], &[]);
    client.initialize(Value::Null, &["utf-16"]);
    client.open(URI, "def add(a, b):\n    return \n");
    let start = Instant::now();
    let items = client.inline(URI, 1, 11);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert!(items.is_empty());
    // Loading reports progress to a client that supports it.
    let progress = client
        .notification("$/progress", Duration::from_secs(60))
        .unwrap();
    assert_eq!(progress["params"]["value"]["kind"], "begin");
}

#[test]
fn the_threads_setting_applies_before_the_model_loads() {
    let (_dir, path) = tiny(&TinyOptions::new("qwen2"));
    let mut client = Client::start(&["--model", path.to_str().unwrap()], &[]);
    client.initialize(json!({"threads": 1}), &["utf-16"]);
    let text = client.wait_ready();
    assert!(text.contains("1 threads"), "{text}");
}

#[test]
fn invalid_settings_are_refused_and_the_previous_ones_stay() {
    let (_dir, mut client) = server_on_letter_a(json!({"maxTokens": 4}));
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": 0}}),
    );
    let message = client
        .notification("window/showMessage", Duration::from_secs(10))
        .unwrap();
    assert!(
        message["params"]["message"]
            .as_str()
            .unwrap()
            .contains("maxTokens"),
        "{message}"
    );
    client.open(URI, "x = \n");
    assert_eq!(client.inline(URI, 0, 4), vec!["aaaa".to_owned()]);
}

#[test]
fn closed_and_unknown_documents_get_empty_answers() {
    let (_dir, mut client) = server_on_letter_a(json!({"maxTokens": 2}));
    assert!(client.inline("file:///never/opened.py", 0, 0).is_empty());
    client.open(URI, "x = \n");
    client.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": URI}}),
    );
    assert!(client.inline(URI, 0, 4).is_empty());
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn real_model_completes_after_incremental_edits() {
    let model = common::real_model();
    let mut client = Client::start(&["--model", model.to_str().unwrap()], &[]);
    client.initialize(Value::Null, &["utf-16"]);
    client.wait_ready();
    client.open(URI, "def add(a, b):\n    pass\n");
    // Replace "pass" with "return " in two edits of one notification.
    client.change(
        URI,
        2,
        json!([
            {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 8}}, "text": ""},
            {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}}, "text": "return "},
        ]),
    );
    assert_eq!(client.inline(URI, 1, 11), vec!["a + b".to_owned()]);

    let result = client.call(
        "textDocument/completion",
        json!({"textDocument": {"uri": URI}, "position": {"line": 1, "character": 11}}),
    );
    assert_eq!(result["items"][0]["textEdit"]["newText"], "a + b");

    // Interleaved: a request, then an edit before its answer: nothing computed on a stale
    // buffer is returned; the next request sees the new text. (The function is renamed first,
    // so the request is not answered at once from the suggestion above.)
    client.change(
        URI,
        3,
        json!([{"range": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 7}}, "text": "plus"}]),
    );
    let id = client.inline_request(URI, 1, 11);
    client.change(
        URI,
        4,
        json!([{"range": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 8}}, "text": "mul"}]),
    );
    let stale = client.response(id, Duration::from_secs(60));
    assert!(
        items_text(&stale).is_empty(),
        "a suggestion for a stale buffer: {stale}"
    );
    let fresh = client.inline(URI, 1, 11);
    assert_eq!(fresh.len(), 1);
    assert!(fresh[0].contains('*'), "{fresh:?}");
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn unsaved_buffers_of_the_workspace_inform_suggestions() {
    // `shop/models.py` exists only as an open, unsaved buffer: the field name the suggestion
    // needs can only come from it, through the import in `shop/report.py`.
    let model = common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let root = url::Url::from_directory_path(dir.path()).unwrap();
    let models = root.join("shop/models.py").unwrap();
    let report = root.join("shop/report.py").unwrap();
    let mut client = Client::start(&["--model", model.to_str().unwrap()], &[]);
    client.initialize_in(Value::Null, &["utf-16"], &[root.as_str()]);
    client.wait_ready();
    client.open(
        models.as_str(),
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Invoice:\n    \"\"\"An invoice sent to a customer.\"\"\"\n\n    customer_id: int\n    net_amount_in_cents: int\n    vat_rate_percent: int\n",
    );
    client.open(
        report.as_str(),
        "from .models import Invoice\n\n\ndef gross_cents(invoice: Invoice) -> int:\n    \"\"\"Amount due including VAT.\"\"\"\n    return invoice.\n",
    );
    let suggestions = client.inline(report.as_str(), 5, 19);
    assert_eq!(suggestions.len(), 1, "{suggestions:?}");
    assert!(
        suggestions[0].contains("net_amount_in_cents"),
        "{suggestions:?}"
    );
    assert_eq!(client.shutdown(), Some(0));
}
