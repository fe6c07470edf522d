//! The real binary: the command-line contract and end-to-end suggestions on the real default
//! model (fetched by `.ci/run`), and the keystroke-latency benchmark driver on a tiny one.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn pyfill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .args(args)
        .output()
        .expect("run pyfill")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `fixture` (with a `$0` cursor) to a file and returns (dir, "FILE:LINE:COL").
fn fixture_file(fixture: &str) -> (tempfile::TempDir, String) {
    let (before, _) = fixture.split_once("$0").expect("cursor marker");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.py");
    std::fs::write(&path, fixture.replace("$0", "")).unwrap();
    let location = format!("{}:{line}:{col}", path.display());
    (dir, location)
}

fn complete(fixture: &str) -> String {
    let model = common::real_model();
    let (_dir, location) = fixture_file(fixture);
    let out = pyfill(&["complete", &location, "--model", model.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "pyfill complete failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn completes_the_return_line_of_add() {
    let suggestion = complete("def add(a, b):\n    return $0\n");
    assert_eq!(suggestion.trim_end(), "a + b");
}

#[test]
fn fills_a_hole_using_the_suffix() {
    // The suffix says what `message` must be; the suggestion fills the hole and stops there.
    let suggestion = complete(
        "def greet(name):\n    message = $0\n    return message.upper()\n\n\nprint(greet(\"ada\"))\n",
    );
    let line = suggestion.trim_end();
    assert!(line.contains("name"), "{line:?}");
    assert!(!line.contains('\n'), "one line only: {line:?}");
    // The code, not a trailing comment (the model likes to add one, and its words move with
    // the last bits of float rounding: "...because the function returns the message").
    let code = line.split(" #").next().unwrap_or(line);
    assert!(
        !code.contains("return"),
        "does not repeat the suffix: {line:?}"
    );
}

#[test]
fn writes_a_function_body_on_an_empty_line() {
    let suggestion = complete(
        "import math\n\n\ndef circle_area(radius):\n    $0\n\n\nprint(circle_area(2.0))\n",
    );
    assert!(suggestion.contains("math.pi"), "{suggestion:?}");
    assert!(suggestion.contains("radius"), "{suggestion:?}");
}

#[test]
fn a_body_written_after_typed_indentation_keeps_the_files_indent_unit() {
    // The chat prompt ends in the typed indentation; without healing it the model wrote
    // " if" there and indented every later line by 5 and 9 spaces.
    let suggestion = complete("def fibonacci(n):\n    $0\n");
    let lines: Vec<&str> = suggestion.lines().collect();
    assert!(lines.len() > 1, "{suggestion:?}");
    assert!(!lines[0].starts_with(' '), "{suggestion:?}");
    for line in &lines[1..] {
        let indent = line.len() - line.trim_start().len();
        assert!(
            line.trim().is_empty() || (indent >= 4 && indent % 4 == 0),
            "{suggestion:?}"
        );
    }
}

#[test]
fn model_path_prints_the_cache_location() {
    let out = pyfill(&["model", "path"]);
    assert!(out.status.success());
    let path = stdout(&out);
    assert!(
        path.trim_end()
            .ends_with("pyfill/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        "{path}"
    );
}

#[test]
fn bad_model_and_bad_locations_fail_cleanly() {
    let (_dir, location) = fixture_file("x = $0\n");
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, "not a model").unwrap();
    let out = pyfill(&["complete", &location, "--model", garbage.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("garbage.gguf"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "",
        "nothing but the suggestion goes to stdout"
    );

    let missing = Path::new("/nonexistent/model.gguf");
    let out = pyfill(&["complete", &location, "--model", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/model.gguf"));

    for bad in ["nocolons", "file.py:0:1", "file.py:x:1"] {
        let out = pyfill(&["complete", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(
            stderr(&out).contains("LINE") || stderr(&out).contains("FILE:LINE:COL"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    let out = pyfill(&["complete", "/nonexistent/file.py:1:1"]);
    assert!(
        stderr(&out).contains("cannot read /nonexistent/file.py"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_json_reports_the_required_fields() {
    let model = common::real_model();
    let out = pyfill(&["bench", "--json", "--model", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for key in ["prefill_tok_s", "decode_tok_s", "load_s", "peak_rss_mb"] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {report}"
        );
    }
}

#[test]
fn no_arguments_serves_lsp_until_stdin_closes() {
    let out = Command::new(env!("CARGO_BIN_EXE_pyfill"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pyfill");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "no protocol output without a client");
}

#[test]
fn names_imported_from_the_workspace_bring_their_definitions() {
    // The field name cannot be guessed: only the signature of `Invoice`, read from the imported
    // module of the same package, tells the model.
    let model = common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("pyproject.toml"), "").unwrap();
    std::fs::create_dir(root.join("shop")).unwrap();
    std::fs::write(root.join("shop/__init__.py"), "").unwrap();
    std::fs::write(
        root.join("shop/models.py"),
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Invoice:\n    \"\"\"An invoice sent to a customer.\"\"\"\n\n    customer_id: int\n    net_amount_in_cents: int\n    vat_rate_percent: int\n",
    )
    .unwrap();
    let report = root.join("shop/report.py");
    std::fs::write(
        &report,
        "from .models import Invoice\n\n\ndef gross_cents(invoice: Invoice) -> int:\n    \"\"\"Amount due including VAT.\"\"\"\n    return invoice.\n",
    )
    .unwrap();
    let location = format!("{}:6:20", report.display());
    let out = pyfill(&["complete", &location, "--model", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let suggestion = stdout(&out);
    assert!(suggestion.contains("net_amount_in_cents"), "{suggestion:?}");
}

/// The keystroke-latency benchmark runs end to end (a server per line, typing, pauses) on a
/// tiny model; what it measures is for `benches/typing.sh`, not for a test.
#[test]
fn replay_types_lines_through_the_server_and_reports() {
    let (_model_dir, model) = common::tiny(&common::TinyOptions {
        always: Some(common::token_id("a")),
        ..common::TinyOptions::new("qwen2")
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "import os\n\n\ndef main(argv):\n    total_count = len(argv) + 1\n    return 0\n",
    )
    .unwrap();
    let samples = dir.path().join("samples.jsonl");
    let out = pyfill(&[
        "--model",
        model.to_str().unwrap(),
        "replay",
        "--root",
        dir.path().to_str().unwrap(),
        "app.py",
        "--lines",
        "1",
        "--interval-ms",
        "5",
        "--settings",
        r#"{"maxTokens": 3}"#,
        "--out",
        samples.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["lines"], 1);
    assert_eq!(report["cold"]["n"], 1);
    // One pause after each word of the retyped line.
    let line = "total_count = len(argv) + 1";
    let words = line
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .count();
    assert_eq!(report["pause"]["n"], words);
    assert_eq!(report["keystrokes"], line.len());
    let written = std::fs::read_to_string(&samples).unwrap();
    assert_eq!(written.lines().count(), words + 1);
    assert!(written.contains("\"line\":5"), "{written}");
}

/// Sustained typing over five documents on a tiny model: every request is answered, none fails,
/// and the server's memory does not grow with the keystrokes. (Latency under load is for
/// `benches/load.sh` on the real model.)
#[test]
fn load_answers_every_request_and_memory_stays_flat() {
    let (_model_dir, model) = common::tiny(&common::TinyOptions {
        always: Some(common::token_id("a")),
        context: 32_768,
        ..common::TinyOptions::new("qwen2")
    });
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..5 {
        let name = format!("module_{i}.py");
        std::fs::write(
            dir.path().join(&name),
            format!(
                "import os\n\n\ndef handler_{i}(request):\n    total_count = len(request.items) + {i}\n    return total_count\n"
            ),
        )
        .unwrap();
        files.push(name);
    }
    let mut args = vec![
        "--model",
        model.to_str().unwrap(),
        "load",
        "--root",
        dir.path().to_str().unwrap(),
        "--rate",
        "40",
        "--seconds",
        "8",
        "--settings",
        r#"{"maxTokens": 8}"#,
        "--json",
    ];
    args.extend(files.iter().map(String::as_str));
    let out = pyfill(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["documents"], 5, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["answered"], report["requests"], "{report}");
    assert_eq!(report["unanswered"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["with_suggestion"].as_u64().unwrap() > 0, "{report}");
    if let (Some(start), Some(end)) = (
        report["rss_start_mb"].as_f64(),
        report["rss_end_mb"].as_f64(),
    ) {
        assert!(end < start + 64.0, "memory grew from {start} to {end} MB");
    }
}
