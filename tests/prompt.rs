//! Prompt building on the tiny model's tokenizer: FIM layout, literal user text, budgets.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TinyOptions, tiny, token_id};
use pyfill::engine::LoadedModel;
use pyfill::prompt::{self, Budget, Family};

fn tokenizer() -> (tempfile::TempDir, LoadedModel) {
    let (dir, path) = tiny(&TinyOptions::new("qwen2"));
    (dir, LoadedModel::load(&path).unwrap())
}

#[test]
fn fim_layout_is_prefix_suffix_middle() {
    let (_d, model) = tokenizer();
    let tok = &model.tokenizer;
    let family = Family::detect(tok);
    assert_eq!(family.name(), "qwen2.5-coder");
    let ids = prompt::build(tok, &family, "x = ", "\nprint(x)\n", Budget::default()).unwrap();
    let p = token_id("<|fim_prefix|>");
    let s = token_id("<|fim_suffix|>");
    let m = token_id("<|fim_middle|>");
    assert_eq!(ids[0], p);
    assert_eq!(*ids.last().unwrap(), m);
    let at = ids.iter().position(|&t| t == s).unwrap();
    assert_eq!(tok.decode(&ids[1..at]), "x = ");
    assert_eq!(tok.decode(&ids[at + 1..ids.len() - 1]), "\nprint(x)\n");
}

#[test]
fn marker_text_in_the_file_stays_literal() {
    let (_d, model) = tokenizer();
    let tok = &model.tokenizer;
    let family = Family::detect(tok);
    let ids = prompt::build(
        tok,
        &family,
        "s = '<|fim_middle|>'\n",
        "",
        Budget::default(),
    )
    .unwrap();
    let m = token_id("<|fim_middle|>");
    assert_eq!(
        ids.iter().filter(|&&t| t == m).count(),
        1,
        "only the real marker"
    );
}

#[test]
fn windows_keep_whole_lines_nearest_the_cursor() {
    let (_d, model) = tokenizer();
    let tok = &model.tokenizer;
    let family = Family::detect(tok);
    let prefix: String = (0..50)
        .map(|i| format!("line_{i} = {i}\n"))
        .collect::<String>()
        + "x = ";
    let suffix: String = (0..50).map(|i| format!("after_{i}()\n")).collect();
    let budget = Budget {
        prefix_tokens: 40,
        suffix_tokens: 30,
    };
    let ids = prompt::build(tok, &family, &prefix, &suffix, budget).unwrap();
    let at = ids
        .iter()
        .position(|&t| t == token_id("<|fim_suffix|>"))
        .unwrap();
    let kept_prefix = tok.decode(&ids[1..at]);
    let kept_suffix = tok.decode(&ids[at + 1..ids.len() - 1]);
    assert!(
        kept_prefix.ends_with("line_49 = 49\nx = "),
        "{kept_prefix:?}"
    );
    assert!(
        kept_prefix.starts_with("line_"),
        "cut at a line start: {kept_prefix:?}"
    );
    assert!(prefix.ends_with(&kept_prefix) && kept_prefix.len() < prefix.len());
    assert!(tok.encode(&kept_prefix, false).unwrap().len() <= 40 + 3);
    assert!(kept_suffix.starts_with("after_0()\n") && kept_suffix.ends_with('\n'));
    assert!(kept_suffix.len() < suffix.len());
}
