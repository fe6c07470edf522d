//! Helix, at protocol level: no Helix binary can be installed here, so these tests speak to the
//! real server the way Helix does (its capabilities, UTF-8 positions, `config` sent twice,
//! completion requests re-sent on each key while the list is incomplete, never a
//! `$/cancelRequest`), with the settings from `editors/helix/languages.toml`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::lsp::Client;
use common::{TinyOptions, tiny, token_id};
use serde_json::{Value, json};

const URI: &str = "file:///work/helix_demo.py";
const WAIT: Duration = Duration::from_secs(120);

/// `editors/helix/languages.toml`, parsed.
fn languages_toml() -> toml::Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/editors/helix/languages.toml");
    let text = std::fs::read_to_string(path).unwrap();
    text.parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{path} does not parse: {e}"))
}

/// The `config` table Helix sends pyfill, as JSON.
fn pyfill_config() -> Value {
    let toml = languages_toml();
    serde_json::to_value(&toml["language-server"]["pyfill"]["config"]).unwrap()
}

/// Starts the server and initializes it as Helix does: its capabilities (UTF-8 offered first,
/// no inline completion), `config` as initializationOptions and again as
/// `workspace/didChangeConfiguration` after `initialized`.
fn start_as_helix(args: &[&str], config: &Value) -> Client {
    let mut client = Client::start(args, &[]);
    let result = client.call(
        "initialize",
        json!({
            "processId": std::process::id(),
            "rootUri": "file:///work",
            "workspaceFolders": [{"uri": "file:///work", "name": "work"}],
            "clientInfo": {"name": "helix", "version": "25.07.1"},
            "capabilities": {
                "general": {"positionEncodings": ["utf-8", "utf-32", "utf-16"]},
                "window": {"workDoneProgress": true},
                "workspace": {"configuration": true, "didChangeConfiguration": {"dynamicRegistration": false}},
                "textDocument": {
                    "completion": {
                        "completionItem": {
                            "snippetSupport": true,
                            "resolveSupport": {"properties": ["documentation", "detail", "additionalTextEdits"]},
                            "insertReplaceSupport": true,
                            "deprecatedSupport": true,
                            "tagSupport": {"valueSet": [1]},
                        },
                        "completionItemKind": {},
                    },
                },
            },
            "initializationOptions": config,
        }),
    );
    assert_eq!(result["capabilities"]["positionEncoding"], "utf-8");
    assert!(result["capabilities"]["completionProvider"].is_object());
    client.notify("initialized", json!({}));
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": config}),
    );
    client
}

/// A completion request as Helix sends it (`triggerKind` 1 when typing or invoked, 3 when it
/// re-asks for an incomplete list); positions in UTF-8 bytes.
fn completion(client: &mut Client, line: u32, character: u32, trigger_kind: u8) -> i64 {
    client.request(
        "textDocument/completion",
        json!({
            "textDocument": {"uri": URI},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": trigger_kind},
        }),
    )
}

/// The completion list of a response, checked for the shape Helix relies on.
fn list(response: &Value) -> Vec<Value> {
    assert!(response.get("error").is_none(), "{response}");
    let result = &response["result"];
    assert_eq!(result["isIncomplete"], true, "{response}");
    result["items"].as_array().unwrap().clone()
}

/// `text` with a completion item's text edit applied (UTF-8 columns, as negotiated).
fn apply(text: &str, item: &Value) -> String {
    let edit = &item["textEdit"];
    let offset = |p: &Value| {
        let line = p["line"].as_u64().unwrap() as usize;
        let column = p["character"].as_u64().unwrap() as usize;
        let line_start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
        line_start + column
    };
    let (start, end) = (
        offset(&edit["range"]["start"]),
        offset(&edit["range"]["end"]),
    );
    format!(
        "{}{}{}",
        &text[..start],
        edit["newText"].as_str().unwrap(),
        &text[end..]
    )
}

#[test]
fn the_helix_config_adds_pyfill_for_completion_only_with_settings_the_server_takes() {
    let toml = languages_toml();
    assert_eq!(
        toml["language-server"]["pyfill"]["command"].as_str(),
        Some("pyfill")
    );
    let languages = toml["language"].as_array().unwrap();
    let python = languages
        .iter()
        .find(|l| l["name"].as_str() == Some("python"))
        .expect("a [[language]] entry for python");
    let servers = python["language-servers"].as_array().unwrap();
    assert!(servers.len() >= 2, "pyfill goes next to a regular server");
    let pyfill = servers
        .iter()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some("pyfill"))
        .expect("pyfill among python's language servers");
    assert_eq!(
        pyfill["only-features"].as_array().unwrap(),
        &vec![toml::Value::from("completion")]
    );

    // The server takes the config as Helix sends it, twice, without complaint.
    let (_dir, path) = tiny(&TinyOptions::new("qwen2"));
    let mut client = start_as_helix(&["--model", path.to_str().unwrap()], &pyfill_config());
    client.wait_ready();
    assert!(
        client
            .notification("window/showMessage", Duration::from_millis(500))
            .is_none()
    );
    assert_eq!(client.shutdown(), Some(0));
}

#[test]
fn typing_with_helix_requeries_and_the_newest_answer_replaces_the_word() {
    let (_dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        context: 32_768,
        ..TinyOptions::new("qwen2")
    });
    let mut config = pyfill_config();
    config["maxTokens"] = json!(4);
    let mut client = start_as_helix(&["--model", path.to_str().unwrap()], &config);
    client.wait_ready();

    // Non-ASCII before the cursor: columns are UTF-8 bytes.
    let mut text = "naïve = \"é\"; \n".to_owned();
    client.open(URI, &text);
    let line_start_col = "naïve = \"é\"; ".len() as u32;
    let mut ids = Vec::new();
    for (i, ch) in "val".chars().enumerate() {
        let col = line_start_col + i as u32;
        text.insert(col as usize, ch);
        client.change(
            URI,
            i as i32 + 2,
            json!([{"range": {"start": {"line": 0, "character": col}, "end": {"line": 0, "character": col}}, "text": ch.to_string()}]),
        );
        // Helix asks once the word reaches `completion-trigger-len` (2), then re-asks on each
        // key because the list is incomplete; it drops older requests without cancelling them.
        if i + 1 >= 2 {
            let kind = if i + 1 == 2 { 1 } else { 3 };
            ids.push(completion(&mut client, 0, col + 1, kind));
        }
    }
    let responses: Vec<Value> = ids.iter().map(|&id| client.response(id, WAIT)).collect();
    for (response, word) in responses.iter().zip(["va", "val"]) {
        for item in list(response) {
            assert!(
                item["textEdit"]["newText"]
                    .as_str()
                    .unwrap()
                    .starts_with(word),
                "{item}"
            );
        }
    }
    let newest = list(responses.last().unwrap());
    assert_eq!(newest.len(), 1, "{newest:?}");
    let item = &newest[0];
    assert_eq!(
        item["textEdit"]["range"],
        json!({"start": {"line": 0, "character": line_start_col}, "end": {"line": 0, "character": line_start_col + 3}})
    );
    // Helix filters by `filterText` against the word typed so far.
    assert!(item["filterText"].as_str().unwrap().starts_with("val"));
    assert_eq!(apply(&text, item), "naïve = \"é\"; valaaaa\n");
}

#[test]
fn a_request_helix_dropped_stops_when_the_next_key_asks_again() {
    let (_dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        context: 32_768,
        ..TinyOptions::new("qwen2")
    });
    // Long enough that the first request runs until something stops it.
    let mut config = pyfill_config();
    config["maxTokens"] = json!(65_536);
    config["timeoutMs"] = json!(0);
    let mut client = start_as_helix(&["--model", path.to_str().unwrap()], &config);
    client.wait_ready();
    client.open(URI, "x = ab\n");
    let dropped = completion(&mut client, 0, 6, 1);
    std::thread::sleep(Duration::from_millis(300));
    client.change(
        URI,
        2,
        json!([{"range": {"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 6}}, "text": "c"}]),
    );
    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": 3}}),
    );
    let newest = completion(&mut client, 0, 7, 3);
    // The dropped request is answered (empty), not left running for Helix's 20 s timeout.
    assert!(list(&client.response(dropped, WAIT)).is_empty());
    let items = list(&client.response(newest, WAIT));
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["textEdit"]["newText"], "abcaaa");
}

#[test]
fn helix_gets_the_real_model_suggestion_as_a_completion_item() {
    let model = common::real_model();
    let mut client = start_as_helix(&["--model", model.to_str().unwrap()], &pyfill_config());
    client.wait_ready();
    let text = "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n    re\n";
    client.open(URI, text);
    let id = completion(&mut client, 2, 6, 1);
    let items = list(&client.response(id, WAIT));
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert!(
        item["label"].as_str().unwrap().starts_with("return"),
        "{item}"
    );
    assert_eq!(item["detail"], "pyfill");
    let applied = apply(text, item);
    assert!(
        applied.contains("    return a + b\n"),
        "accepted text: {applied}"
    );
}
