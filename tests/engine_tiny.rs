//! The engine on tiny random-weight models written by the tests: loading each architecture, the
//! tokenizer from GGUF metadata, KV-cache truncation equivalence, stop rules, cancellation, and
//! clear errors for broken files.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TinyOptions, tiny, token_id};
use pyfill::engine::{
    Engine, Event, FALLBACK_SAVING, FOREGROUND_LIMIT, FinishReason, GenerationParams, LoadedModel,
    LogitsFor, Request,
};

const ARCHS: [&str; 3] = ["qwen2", "llama", "phi2"];

fn rows(t: pyfill::engine::Logits) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

#[test]
fn every_architecture_loads_and_reports_itself() {
    for arch in ARCHS {
        let (_dir, path) = tiny(&TinyOptions::new(arch));
        let model = LoadedModel::load(&path).unwrap();
        assert_eq!(model.info.architecture, arch);
        assert_eq!(model.info.layers, common::LAYERS);
        assert_eq!(model.info.vocab_size, common::vocab().len());
        assert_eq!(
            model.info.name.as_deref(),
            Some(format!("tiny-{arch}").as_str())
        );
    }
}

#[test]
fn tokenizer_round_trips_any_text() {
    let (_dir, path) = tiny(&TinyOptions::new("qwen2"));
    let model = LoadedModel::load(&path).unwrap();
    let tok = &model.tokenizer;
    let samples = [
        "def the_answer():\n    return 42\n",
        "tabs\tand\r\nCRLF\r\n",
        "unicode: é ü 中文 Привет 🐍 𝔘",
        "",
        "   \n\n\n",
        "literal <|fim_prefix|> stays text",
    ];
    for s in samples {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(tok.decode(&ids), s, "{s:?} -> {ids:?}");
    }
    // Merges apply: " the" is one token.
    let ids = tok.encode(" the", false).unwrap();
    assert_eq!(ids, vec![token_id("Ġthe")]);
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let (_dir, path) = tiny(&TinyOptions::new("qwen2"));
    let model = LoadedModel::load(&path).unwrap();
    let tok = &model.tokenizer;
    let text = "<|fim_prefix|>x<|fim_suffix|>";
    let parsed = tok.encode(text, true).unwrap();
    assert_eq!(parsed.first(), Some(&token_id("<|fim_prefix|>")));
    assert_eq!(parsed.last(), Some(&token_id("<|fim_suffix|>")));
    assert_eq!(parsed.len(), 3);
    let literal = tok.encode(text, false).unwrap();
    assert!(!literal.contains(&token_id("<|fim_prefix|>")));
    assert_eq!(tok.decode(&literal), text);
}

/// The property later latency work stands on: computing a prefix, truncating the cache to the
/// common part and appending new tokens gives the logits a fresh computation gives.
#[test]
fn truncated_cache_plus_new_tokens_equals_fresh_computation() {
    for arch in ARCHS {
        let (_dir, path) = tiny(&TinyOptions::new(arch));
        let model = LoadedModel::load(&path).unwrap();
        let tok = &model.tokenizer;
        let a = tok
            .encode("def first(x):\n    return x + 1\n", false)
            .unwrap();
        let b = tok
            .encode("def first(y):\n    return y * 2\n", false)
            .unwrap();
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert!(common > 3 && common < b.len());

        let mut fresh = model.new_cache();
        let expected = rows(
            model
                .prefill(&mut fresh, &b, LogitsFor::All)
                .unwrap()
                .unwrap(),
        );

        let mut cache = model.new_cache();
        model.prefill(&mut cache, &a, LogitsFor::None).unwrap();
        assert_eq!(cache.common_prefix_len(&b), common);
        cache.truncate(common);
        let got = rows(
            model
                .prefill(&mut cache, &b[common..], LogitsFor::All)
                .unwrap()
                .unwrap(),
        );
        assert_eq!(cache.tokens(), b.as_slice());
        for (i, row) in got.iter().enumerate() {
            let diff = common::max_abs_diff(row, &expected[common + i]);
            assert!(
                diff < 1e-4,
                "{arch}: position {} differs by {diff}",
                common + i
            );
        }

        // Token-by-token decoding agrees with the batched prefill too.
        let mut stepwise = model.new_cache();
        model
            .prefill(&mut stepwise, &b[..common], LogitsFor::None)
            .unwrap();
        for (i, &t) in b[common..].iter().enumerate() {
            let row = rows(model.decode(&mut stepwise, t).unwrap());
            let diff = common::max_abs_diff(&row[0], &expected[common + i]);
            assert!(
                diff < 1e-4,
                "{arch}: decode at {} differs by {diff}",
                common + i
            );
        }
    }
}

#[test]
fn last_logits_match_the_last_row_of_all() {
    let (_dir, path) = tiny(&TinyOptions::new("qwen2"));
    let model = LoadedModel::load(&path).unwrap();
    let ids = model
        .tokenizer
        .encode("import os\nprint(os.getcwd())\n", false)
        .unwrap();
    let all = rows(
        model
            .prefill(&mut model.new_cache(), &ids, LogitsFor::All)
            .unwrap()
            .unwrap(),
    );
    let last = rows(
        model
            .prefill(&mut model.new_cache(), &ids, LogitsFor::Last)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(last.len(), 1);
    assert!(common::max_abs_diff(&last[0], all.last().unwrap()) < 1e-5);
    assert!(
        model
            .prefill(&mut model.new_cache(), &ids, LogitsFor::None)
            .unwrap()
            .is_none()
    );
}

fn always(arch: &'static str, token: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    tiny(&TinyOptions {
        always: Some(token_id(token)),
        ..TinyOptions::new(arch)
    })
}

fn request(engine: &Engine, text: &str, max_tokens: usize) -> Request {
    Request {
        prompt: engine.tokenizer().encode(text, false).unwrap(),
        fallback: None,
        fallback_max_time: None,
        params: GenerationParams {
            max_tokens,
            ..GenerationParams::default()
        },
        stop: None,
        heal: false,
    }
}

#[test]
fn end_of_generation_token_stops_with_no_text() {
    for arch in ARCHS {
        let (_dir, path) = always(arch, "<|endoftext|>");
        let engine = Engine::start(&path).unwrap();
        let done = engine
            .generate(request(&engine, "x = ", 50))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(done.reason, FinishReason::EndOfGeneration, "{arch}");
        assert_eq!(done.text, "");
    }
}

#[test]
fn other_control_tokens_stop_generation_too() {
    let (_dir, path) = always("qwen2", "<|file_sep|>");
    let engine = Engine::start(&path).unwrap();
    let done = engine
        .generate(request(&engine, "x = ", 50))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(done.reason, FinishReason::EndOfGeneration);
}

#[test]
fn max_tokens_and_stop_predicates_end_generation() {
    let (_dir, path) = always("llama", "a");
    let engine = Engine::start(&path).unwrap();
    let done = engine
        .generate(request(&engine, "x = ", 7))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(done.reason, FinishReason::MaxTokens);
    assert_eq!(done.text, "aaaaaaa");

    let mut req = request(&engine, "x = ", 50);
    req.stop = Some(Box::new(|text: &str| (text.len() >= 3).then_some(3)));
    let mut generation = engine.generate(req).unwrap();
    let mut streamed = String::new();
    let done = loop {
        match generation.events.blocking_recv().unwrap() {
            Event::Text(t) => streamed.push_str(&t),
            Event::Done(d) => break d,
            Event::Failed(e) => panic!("{e}"),
        }
    };
    assert_eq!(done.reason, FinishReason::StopPredicate);
    assert_eq!(done.text, "aaa");
    assert_eq!(streamed, "aaa", "streamed text never goes past the stop");
}

#[test]
fn time_limit_ends_generation() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let mut req = request(&engine, "x = ", usize::MAX);
    req.params.max_time = Some(Duration::from_millis(2));
    let done = engine.generate(req).unwrap().wait().unwrap();
    assert_eq!(done.reason, FinishReason::TimeLimit);
}

#[test]
fn a_full_context_ends_generation_cleanly() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let done = engine
        .generate(request(&engine, "x = ", usize::MAX))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(done.reason, FinishReason::ContextFull);
    // The tiny model's context is 512 positions: the prompt plus what was generated.
    assert_eq!(done.prompt_tokens + done.tokens.len(), 512 + 1);
}

#[test]
fn cancellation_frees_the_engine_for_the_next_request() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let mut generation = engine
        .generate(request(&engine, "x = ", usize::MAX))
        .unwrap();
    match generation.events.blocking_recv() {
        Some(Event::Text(_)) => generation.cancel(),
        _ => panic!("expected text first"),
    }
    let done = generation.wait().unwrap();
    assert_eq!(done.reason, FinishReason::Cancelled);

    let next = engine
        .generate(request(&engine, "x = ", 3))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(next.text, "aaa");
}

#[test]
fn dropping_the_receiver_cancels_the_request() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    drop(
        engine
            .generate(request(&engine, "x = ", usize::MAX))
            .unwrap(),
    );
    // The engine is only free for this one if the abandoned request stopped.
    let next = engine
        .generate(request(&engine, "x = ", 2))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(next.text, "aa");
}

#[test]
fn repeated_prompts_reuse_the_cache() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let first = engine
        .generate(request(&engine, "def f(x):\n    return", 4))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(first.reused_tokens, 0);
    let second = engine
        .generate(request(&engine, "def f(x):\n    return x", 4))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(second.reused_tokens, first.prompt_tokens);
}

#[test]
fn broken_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = |path: &std::path::Path| match LoadedModel::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };

    let missing = dir.path().join("missing.gguf");
    let e = err(&missing);
    assert!(
        e.contains("missing.gguf") && e.contains("cannot open"),
        "{e}"
    );

    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a model at all, just some text").unwrap();
    let e = err(&garbage);
    assert!(
        e.contains("garbage.gguf") && e.contains("not a usable GGUF"),
        "{e}"
    );

    let (_d, good) = tiny(&TinyOptions::new("qwen2"));
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = err(&truncated);
    assert!(
        e.contains("truncated.gguf") && e.contains("truncated"),
        "{e}"
    );
    let header_only = dir.path().join("header.gguf");
    std::fs::write(&header_only, &bytes[..100]).unwrap();
    assert!(err(&header_only).contains("header.gguf"));

    let (_d, mamba) = tiny(&TinyOptions::new("mamba"));
    let e = err(&mamba);
    assert!(e.contains("unsupported model architecture 'mamba'"), "{e}");

    let (_d, no_tok) = tiny(&TinyOptions {
        with_tokenizer: false,
        ..TinyOptions::new("qwen2")
    });
    let e = err(&no_tok);
    assert!(e.contains("tokenizer.ggml.model"), "{e}");

    let (_d, no_tensor) = tiny(&TinyOptions {
        skip_tensor: Some("blk.1.ffn_up.weight"),
        ..TinyOptions::new("qwen2")
    });
    let e = err(&no_tensor);
    assert!(e.contains("missing tensor 'blk.1.ffn_up.weight'"), "{e}");

    // An engine that fails to load reports the same error instead of hanging.
    assert!(Engine::start(&garbage).is_err());
}

#[test]
fn two_documents_keep_their_own_caches() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let run = |text: &str| {
        engine
            .generate(request(&engine, text, 2))
            .unwrap()
            .wait()
            .unwrap()
    };
    let a = "def first_document(x):\n    return x + 1\n";
    let b = "class SecondDocument:\n    value = 2\n";
    assert_eq!(run(a).reused_tokens, 0);
    assert_eq!(run(b).reused_tokens, 0);
    let again = run(a);
    assert_eq!(again.reused_tokens, again.prompt_tokens - 1);
}

#[test]
fn long_prompts_answer_from_their_fallback_while_the_engine_computes_them() {
    let (_dir, path) = tiny(&TinyOptions {
        always: Some(token_id("a")),
        context: 4096,
        ..TinyOptions::new("qwen2")
    });
    let engine = Engine::start(&path).unwrap();
    let long = "value = compute(value, 1)\n".repeat(40);
    let ask = || {
        let mut r = request(&engine, &long, 2);
        r.fallback = Some(engine.tokenizer().encode("x = ", false).unwrap());
        engine.generate(r).unwrap().wait().unwrap()
    };
    let first = ask();
    let long_tokens = engine.tokenizer().encode(&long, false).unwrap().len();
    assert!(long_tokens > FOREGROUND_LIMIT + 64, "{long_tokens} tokens");
    assert!(first.fallback);
    let fallback_tokens = engine.tokenizer().encode("x = ", false).unwrap().len();
    assert_eq!(first.prompt_tokens, fallback_tokens);
    assert_eq!(first.text, "aa");
    // Meanwhile the long prompt is computed in the background, in another cache.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let warmed = loop {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let next = ask();
        if !next.fallback || std::time::Instant::now() > deadline {
            break next;
        }
    };
    assert!(!warmed.fallback, "the long prompt was never computed");
    assert_eq!(warmed.prompt_tokens, long_tokens);
    // Whole once only what the fallback would not save is left to compute (the background may
    // or may not have finished by then).
    let left = warmed.prompt_tokens - warmed.reused_tokens;
    assert!(
        left <= FOREGROUND_LIMIT.max(FALLBACK_SAVING + fallback_tokens),
        "{left} tokens left"
    );
    // Short prompts never take the fallback.
    let mut short = request(&engine, "y = ", 1);
    short.fallback = Some(vec![1]);
    assert!(!engine.generate(short).unwrap().wait().unwrap().fallback);
}

#[test]
fn the_prefill_rate_is_known_from_load_on() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let rate = engine.prefill_rate().expect("measured at load");
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
}

#[test]
fn warmed_prompts_are_computed_in_the_background_in_a_spare_cache() {
    let (_dir, path) = always("qwen2", "a");
    let engine = Engine::start(&path).unwrap();
    let run = |text: &str| {
        engine
            .generate(request(&engine, text, 1))
            .unwrap()
            .wait()
            .unwrap()
    };
    let typing = "def typed_here(x):\n    return x + 1\n";
    let expected = "class ExpectedNext:\n    value = 2\n    other = 3\n";
    assert_eq!(run(typing).reused_tokens, 0);
    let tokens = engine.tokenizer().encode(expected, false).unwrap();
    engine.warm(tokens.clone()).unwrap();
    // Once computed, the expected prompt needs only its last token (whose logits the request
    // needs); the typing cache was left alone. (A request before that would pre-empt the
    // background work and find only part of it.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while engine.warmed() == 0 {
        assert!(std::time::Instant::now() < deadline, "never warmed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let warmed = run(expected);
    assert_eq!(warmed.reused_tokens, tokens.len() - 1);
    let again = run(typing);
    assert_eq!(again.reused_tokens, again.prompt_tokens - 1);
}

#[test]
fn healing_rewrites_the_half_typed_word_and_emits_only_what_follows() {
    let (_dir, path) = always("qwen2", "Ġthe");
    let engine = Engine::start(&path).unwrap();
    let tok = engine.tokenizer();
    // The last word's tokens, up to the one that starts it; never a line break or a special.
    let ids = tok.encode("x = re", false).unwrap();
    assert_eq!(tok.decode(&ids[ids.len() - tok.healing_len(&ids)..]), " re");
    let ids = tok.encode("x\n", false).unwrap();
    assert_eq!(tok.healing_len(&ids), 0);
    let ids = tok.encode("x<|fim_middle|>", true).unwrap();
    assert_eq!(tok.healing_len(&ids), 0);

    let run = |heal: bool| {
        let mut r = request(&engine, "x = t", 2);
        r.heal = heal;
        engine.generate(r).unwrap().wait().unwrap()
    };
    // " t" is taken back; the model's " the" spells it out, and only "he" is new.
    let healed = run(true);
    assert_eq!(healed.text, "he the");
    assert_eq!(run(false).text, " the the");
}

#[test]
fn prompt_lookup_drafts_change_speed_not_output() {
    for (always, prompt) in [
        (Some(token_id("a")), "x = aaaa\ny = aaaa"),
        (
            None,
            "def f(x):\n    return x\ndef f(x):\n    return x\ndef f(",
        ),
    ] {
        let (_dir, path) = tiny(&TinyOptions {
            always,
            ..TinyOptions::new("qwen2")
        });
        let engine = Engine::start(&path).unwrap();
        let run = |draft_tokens: usize| {
            let mut r = request(&engine, prompt, 24);
            r.params.draft_tokens = draft_tokens;
            engine.generate(r).unwrap().wait().unwrap()
        };
        let plain = run(0);
        let drafted = run(6);
        assert_eq!(plain.tokens, drafted.tokens, "{prompt:?}");
        assert_eq!(plain.text, drafted.text);
        assert_eq!(plain.drafted_tokens, 0);
        if always.is_some() {
            assert!(drafted.drafted_tokens > 0, "the repeats were drafted");
        }
    }
}
