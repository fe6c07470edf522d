//! The tokenizer built from the default GGUF's metadata gives llama.cpp's ids exactly, on the
//! committed fixture made with llama.cpp's `llama-tokenize` (see scripts/tokenizer-golden/).
#![allow(clippy::unwrap_used)]

mod common;

use pyfill::engine::{GgufFile, Tokenizer};

#[derive(serde::Deserialize)]
struct Golden {
    model_sha256: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    parse_special: bool,
    text: String,
    ids: Vec<u32>,
}

fn golden() -> Golden {
    let raw = include_str!("fixtures/tokenizer/qwen2_golden.json");
    serde_json::from_str(raw).expect("valid fixture")
}

fn tokenizer() -> Tokenizer {
    let gguf = GgufFile::open(&common::real_model()).unwrap();
    Tokenizer::from_gguf(&gguf).unwrap()
}

#[test]
fn ids_equal_llama_cpp_on_every_golden_case() {
    let golden = golden();
    assert_eq!(golden.model_sha256, pyfill::models::default_model().sha256);
    assert!(golden.cases.len() >= 20);
    let tok = tokenizer();
    let mut failures = Vec::new();
    for case in &golden.cases {
        let ids = tok.encode(&case.text, case.parse_special).unwrap();
        if ids != case.ids {
            let at = ids
                .iter()
                .zip(&case.ids)
                .take_while(|(a, b)| a == b)
                .count();
            failures.push(format!(
                "{}: first difference at {at}: ours {:?} llama.cpp {:?}",
                case.name,
                &ids[at..(at + 5).min(ids.len())],
                &case.ids[at..(at + 5).min(case.ids.len())]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_texts_round_trip() {
    let tok = tokenizer();
    for case in golden().cases {
        assert_eq!(tok.decode(&case.ids), case.text, "{}", case.name);
    }
}

#[test]
fn fim_and_repo_tokens_are_single_specials() {
    let tok = tokenizer();
    for (text, id) in [
        ("<|fim_prefix|>", 151659),
        ("<|fim_middle|>", 151660),
        ("<|fim_suffix|>", 151661),
        ("<|repo_name|>", 151663),
        ("<|file_sep|>", 151664),
        ("<|endoftext|>", 151643),
    ] {
        assert_eq!(tok.special(text), Some(id), "{text}");
        assert_eq!(tok.encode(text, true).unwrap(), vec![id]);
        assert!(
            tok.is_end_of_generation(id) || text.starts_with("<|fim") || text == "<|repo_name|>"
        );
    }
    for stop in ["<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>"] {
        let id = tok.special(stop).unwrap();
        assert!(tok.is_end_of_generation(id), "{stop} ends generation");
    }
}
