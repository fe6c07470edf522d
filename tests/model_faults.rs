//! Model faults over the real binary: a missing, truncated, corrupt, wrong-architecture or
//! tokenizer-less GGUF is named in a message and a `pyfill/status` error, suggestions are empty
//! meanwhile, and configuring a good model recovers without a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::lsp::Client;
use common::{TinyOptions, tiny, token_id};
use serde_json::{Value, json};

const URI: &str = "file:///work/faults.py";

/// The next `pyfill/status` that is not "loading".
fn settled(client: &mut Client) -> Value {
    loop {
        let status = client
            .notification("pyfill/status", Duration::from_secs(60))
            .expect("a status");
        if status["params"]["state"] != "loading" {
            return status["params"].clone();
        }
    }
}

#[test]
fn every_bad_model_is_named_and_a_good_one_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (_good_dir, good) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        ..TinyOptions::new("qwen2")
    });
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let corrupt = dir.path().join("corrupt.gguf");
    let mut flipped = bytes.clone();
    for b in &mut flipped[8..64] {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &flipped).unwrap();
    let (_mamba_dir, mamba) = tiny(&TinyOptions::new("mamba"));
    let (_no_tok_dir, no_tokenizer) = tiny(&TinyOptions {
        with_tokenizer: false,
        ..TinyOptions::new("qwen2")
    });
    let missing = dir.path().join("missing.gguf");

    let mut client = Client::start(&["--model", missing.to_str().unwrap()], &[]);
    client.initialize(json!({"maxTokens": 3}), &["utf-16"]);
    client.open(URI, "x = \n");
    let faults = [
        (&missing, "missing.gguf"),
        (&truncated, "truncated"),
        (&corrupt, "corrupt.gguf"),
        (&mamba, "mamba"),
        (&no_tokenizer, "tokenizer"),
    ];
    for (i, (path, named)) in faults.iter().enumerate() {
        if i > 0 {
            client.notify(
                "workspace/didChangeConfiguration",
                json!({"settings": {"model": path}}),
            );
        }
        let status = settled(&mut client);
        assert_eq!(status["state"], "error", "{named}: {status}");
        let text = status["message"].as_str().unwrap();
        assert!(text.contains(named), "{named}: {text}");
        let shown = client
            .notification("window/showMessage", Duration::from_secs(10))
            .unwrap();
        assert!(
            shown["params"]["message"].as_str().unwrap().contains(named),
            "{named}: {shown}"
        );
        assert!(client.inline(URI, 0, 4).is_empty(), "{named}");
    }

    client.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"model": good}}),
    );
    assert_eq!(settled(&mut client)["state"], "ready");
    assert_eq!(client.inline(URI, 0, 4), vec!["aaa".to_owned()]);
    assert_eq!(client.shutdown(), Some(0));
}
