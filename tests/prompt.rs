//! Prompt layouts on the tiny model's tokenizer: repository-level FIM, literal user text, related
//! files, prefix-only models, forced formats.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TinyOptions, tiny, token_id};
use pyfill::context::{Context, Mode, Related};
use pyfill::engine::{LoadedModel, Tokenizer};
use pyfill::prompt::{self, Family, Layout};

fn model() -> (tempfile::TempDir, LoadedModel) {
    let (dir, path) = tiny(&TinyOptions::new("qwen2"));
    (dir, LoadedModel::load(&path).unwrap())
}

fn context(prefix: &str, suffix: &str) -> Context {
    Context {
        mode: Mode::Line,
        prefix: prefix.into(),
        suffix: suffix.into(),
        path: "pkg/app.py".into(),
        related: Vec::new(),
        line_before: prefix.rsplit('\n').next().unwrap_or_default().into(),
        line_after: String::new(),
        indent: 0,
        next_line: None,
        previous_line: None,
        empty_body: false,
    }
}

/// The prompt with special tokens written out, to compare against a literal layout.
fn render(tok: &Tokenizer, ids: &[u32]) -> String {
    ids.iter().map(|&id| tok.decode(&[id])).collect()
}

#[test]
fn a_lone_file_gets_file_level_fim() {
    let (_d, model) = model();
    let tok = &model.tokenizer;
    let family = Family::detect(tok);
    assert_eq!(family.name(), "qwen2.5-coder");
    let c = context("y = 1\nx = ", "\nprint(x)\n");
    let ids = prompt::build(tok, &family, &c, "demo", Layout::Classic).unwrap();
    assert_eq!(ids[0], token_id("<|fim_prefix|>"));
    assert_eq!(*ids.last().unwrap(), token_id("<|fim_middle|>"));
    assert_eq!(
        render(tok, &ids),
        "<|fim_prefix|>y = 1\nx = <|fim_suffix|>\nprint(x)\n<|fim_middle|>"
    );
    // The typing layout: the line so far after the middle marker, so a keystroke only
    // appends to the previous prompt.
    let ids = prompt::build(tok, &family, &c, "demo", Layout::Typing).unwrap();
    assert_eq!(
        render(tok, &ids),
        "<|fim_prefix|>y = 1\n<|fim_suffix|>\nprint(x)\n<|fim_middle|>x = "
    );
    let mut typed = c.clone();
    typed.prefix.push_str("y +");
    typed.line_before.push_str("y +");
    let longer = prompt::build(tok, &family, &typed, "demo", Layout::Typing).unwrap();
    assert!(longer.starts_with(&ids[..ids.len() - 1]));
}

/// With other files to show, Qwen2.5-Coder's repository-level layout.
#[test]
fn related_files_come_first_each_under_its_path() {
    let (_d, model) = model();
    let tok = &model.tokenizer;
    let family = Family::detect(tok);
    let mut c = context("u = User(", ")\n");
    c.related = vec![Related {
        path: "pkg/models.py".into(),
        text: "class User:\n    name: str\n".into(),
    }];
    let ids = prompt::build(tok, &family, &c, "demo", Layout::Typing).unwrap();
    assert_eq!(
        render(tok, &ids),
        "<|repo_name|>demo\n<|file_sep|>pkg/models.py\nclass User:\n    name: str\n<|file_sep|>pkg/app.py\n<|fim_prefix|><|fim_suffix|>)\n<|fim_middle|>u = User("
    );
    // Forced to a family without repository tokens, related files become comments.
    let plain = Family::named(tok, "prefix-only").unwrap();
    let ids = prompt::build(tok, &plain, &c, "demo", Layout::Typing).unwrap();
    assert_eq!(
        render(tok, &ids),
        "# pkg/models.py\nclass User:\n    name: str\n\n# pkg/app.py\nu = User("
    );
}

#[test]
fn marker_text_in_the_file_stays_literal() {
    let (_d, model) = model();
    let tok = &model.tokenizer;
    let family = Family::detect(tok);
    let ids = prompt::build(
        tok,
        &family,
        &context("s = '<|fim_middle|>'\n", ""),
        "demo",
        Layout::Typing,
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
fn formats_the_model_lacks_are_refused() {
    let (_d, model) = model();
    let tok = &model.tokenizer;
    assert!(Family::named(tok, "starcoder2").is_none());
    assert!(Family::named(tok, "deepseek-coder").is_none());
    assert_eq!(Family::named(tok, "auto").unwrap().name(), "qwen2.5-coder");
    for name in prompt::NAMES {
        // Every name is either usable or refused, never a panic.
        let _ = Family::named(tok, name);
    }
}

#[test]
fn empty_bodies_of_chat_models_are_asked_in_chat_form() {
    let (_d, model) = model();
    let tok = &model.tokenizer;
    let mut c = context("def f(x):\n    \"\"\"Twice x.\"\"\"\n    ", "");
    c.mode = Mode::Block;
    c.empty_body = true;
    let ids = prompt::chat_block(tok, &c).unwrap().unwrap();
    assert_eq!(
        render(tok, &ids),
        "<|im_start|>system\nYou are a helpful coding assistant.<|im_end|>\n<|im_start|>user\nComplete the following Python code.\n```python\ndef f(x):\n    \"\"\"Twice x.\"\"\"\n```<|im_end|>\n<|im_start|>assistant\n```python\ndef f(x):\n    \"\"\"Twice x.\"\"\"\n    "
    );
    assert!(prompt::chat_tuned(Some("Qwen2.5 Coder 0.5B Instruct")));
    assert!(!prompt::chat_tuned(Some("Qwen2.5 Coder 0.5B")));
    assert!(!prompt::chat_tuned(None));
}

#[test]
fn other_families_get_their_own_layouts() {
    let mut opts = TinyOptions::new("qwen2");
    opts.extra_specials = &[
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<repo_name>",
        "<file_sep>",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
    ];
    let (_d, path) = tiny(&opts);
    let model = LoadedModel::load(&path).unwrap();
    let tok = &model.tokenizer;
    let mut c = context("x = ", "\n");
    c.related = vec![Related {
        path: "lib.py".into(),
        text: "def g():\n    ...\n".into(),
    }];
    let layout = |name: &str, c: &Context| {
        let family = Family::named(tok, name).unwrap();
        assert_eq!(family.name(), name);
        render(
            tok,
            &prompt::build(tok, &family, c, "demo", Layout::Typing).unwrap(),
        )
    };
    assert_eq!(
        layout("starcoder2", &c),
        "<repo_name>demo<file_sep>lib.py\ndef g():\n    ...\n<file_sep><fim_prefix>pkg/app.py\n<fim_suffix>\n<fim_middle>x = "
    );
    assert_eq!(
        layout("starcoder", &c),
        "<fim_prefix># lib.py\ndef g():\n    ...\n\n# pkg/app.py\n<fim_suffix>\n<fim_middle>x = "
    );
    assert_eq!(
        layout("deepseek-coder", &c),
        "<｜fim▁begin｜># lib.py\ndef g():\n    ...\n\n# pkg/app.py\n<｜fim▁hole｜>\n<｜fim▁end｜>x = "
    );
    // Without related files, no repository header.
    c.related.clear();
    assert_eq!(
        layout("starcoder2", &c),
        "<fim_prefix><fim_suffix>\n<fim_middle>x = "
    );
}
