//! The tokenizers a remote backend budgets prompts with: a Hugging Face `tokenizer.json` must
//! encode exactly as the GGUF's own tokenizer (checked on the default model's vocabulary,
//! written out the way Hugging Face writes Qwen2's), and the byte estimate keeps the FIM
//! markers as special tokens and round-trips any text.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::quantized::gguf_file::Value as GgufValue;
use pyfill::engine::{GgufFile, Tokenizer};
use serde_json::{Map, Value, json};

/// The default model's tokenizer as a `tokenizer.json`: BPE vocabulary and merges, special
/// tokens as added tokens, and Qwen2's pre-tokenizer.
fn tokenizer_json(gguf: &GgufFile) -> Value {
    let strings = |key: &str| -> Vec<String> {
        gguf.array(key)
            .unwrap()
            .iter()
            .map(|v| match v {
                GgufValue::String(s) => s.clone(),
                other => panic!("{key}: {other:?}"),
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let merges = strings("tokenizer.ggml.merges");
    let types: Vec<i32> = gguf
        .array("tokenizer.ggml.token_type")
        .unwrap()
        .iter()
        .map(|v| v.to_i32().unwrap())
        .collect();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, ty)) in tokens.iter().zip(&types).enumerate() {
        if *ty == 3 || *ty == 4 {
            added.push(json!({"id": id, "content": token, "special": *ty == 3}));
        } else {
            vocab.insert(token.clone(), json!(id));
        }
    }
    json!({
        "version": "1.0",
        "added_tokens": added,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
        ]},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    })
}

#[test]
fn a_tokenizer_json_encodes_like_the_gguf() {
    let gguf = GgufFile::open(&common::real_model()).unwrap();
    let from_gguf = Tokenizer::from_gguf(&gguf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tokenizer_json(&gguf).to_string()).unwrap();
    let from_json = Tokenizer::from_json(&path).unwrap();
    assert!(!from_json.is_estimate());
    let text = format!(
        "{}<|fim_prefix|>x = 1234567<|fim_suffix|>\n<|fim_middle|>héllo wörld 日本 'll",
        include_str!("../benches/data/textwrap.py")
    );
    for parse_special in [false, true] {
        assert_eq!(
            from_json.encode(&text, parse_special).unwrap(),
            from_gguf.encode(&text, parse_special).unwrap(),
            "parse_special {parse_special}"
        );
    }
    // The FIM markers by name (this GGUF has no `fim_*_token_id` keys; prompts find them by
    // name either way).
    let fim = from_json.fim_ids();
    assert_eq!(fim.prefix, from_gguf.special("<|fim_prefix|>"));
    assert_eq!(fim.middle, from_gguf.special("<|fim_middle|>"));
    assert_eq!(fim.file_separator, from_gguf.special("<|file_sep|>"));
    assert_eq!(from_json.vocab_size(), from_gguf.vocab_size());
    let endoftext = from_gguf.special("<|endoftext|>").unwrap();
    assert!(from_json.is_end_of_generation(endoftext));
}

#[test]
fn bad_tokenizer_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("garbage.json", "not json {"),
        (
            "unigram.json",
            r#"{"model": {"type": "Unigram", "vocab": []}}"#,
        ),
        (
            "gaps.json",
            r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 5}, "merges": []}}"#,
        ),
        (
            "merges.json",
            r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}}"#,
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let message = Tokenizer::from_json(&path).err().unwrap().to_string();
        assert!(message.contains(name), "{name}: {message}");
    }
    let missing = Tokenizer::from_json(&dir.path().join("nope.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("nope.json"), "{missing}");
}

#[test]
fn the_byte_estimate_counts_bytes_and_keeps_the_markers() {
    let t = Tokenizer::estimate();
    assert!(t.is_estimate());
    let text = "def f(x):\n    return 'héllo' # 日本\n";
    let ids = t.encode(text, false).unwrap();
    assert_eq!(ids.len(), text.len());
    assert_eq!(t.decode(&ids), text);
    let prompt = "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>";
    let ids = t.encode(prompt, true).unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(t.decode(&ids), prompt);
    let fim = t.fim_ids();
    assert_eq!(
        (fim.prefix, fim.suffix, fim.middle),
        (Some(ids[0]), Some(ids[2]), Some(ids[4]))
    );
    // A file that contains a marker literally keeps it as text.
    let literal = t.encode("<|fim_prefix|>", false).unwrap();
    assert_eq!(literal.len(), "<|fim_prefix|>".len());
    assert!(t.is_end_of_generation(t.special("<|endoftext|>").unwrap()));
}
