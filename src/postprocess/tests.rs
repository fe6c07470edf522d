//! Stop rules and tidy-up on cursor-marked fixtures (`$0`): the document, what the model wrote,
//! what the editor gets.

use super::*;
use crate::context::{self, Budget, Source};

fn context(fixture: &str) -> Context {
    let offset = fixture.find("$0").expect("fixture has a $0 cursor");
    let text = fixture.replacen("$0", "", 1);
    let tree = crate::documents::parse(&text);
    let source = Source {
        text: &text,
        tree: &tree,
        offset,
        path: None,
    };
    context::build(&source, &Budget::default(), &|s| s.len().div_ceil(4), &())
}

/// What the editor would get for `generated` at the fixture's cursor: the text the stop rule
/// keeps, tidied.
fn suggest(fixture: &str, generated: &str) -> String {
    let c = context(fixture);
    let mut stop = stop_rule(&c);
    // Feed the text as a model would, a few characters at a time.
    let mut kept = generated.to_owned();
    let mut end = 0;
    while end < generated.len() {
        end = (end + 3).min(generated.len());
        while !generated.is_char_boundary(end) {
            end += 1;
        }
        if let Some(n) = stop(&generated[..end]) {
            kept = generated[..n].to_owned();
            break;
        }
    }
    tidy(&kept, &c)
}

#[test]
fn line_mode_stops_at_the_newline() {
    assert_eq!(
        suggest("def add(a, b):\n    return $0\n", "a + b\n    x = 1\n"),
        "a + b"
    );
}

#[test]
fn statement_mode_writes_one_statement() {
    let fixture = "def f(xs):\n    total = 0\n    $0\n    return total\n";
    assert_eq!(
        suggest(
            fixture,
            "for x in xs:\n        total += x\n    return total\n"
        ),
        "for x in xs:\n        total += x"
    );
    assert_eq!(
        suggest(fixture, "total = sum(xs)\n    return total\n"),
        "total = sum(xs)"
    );
    // A statement spanning lines inside brackets is one statement.
    assert_eq!(
        suggest(fixture, "total = sum(\n        xs\n    )\n    print(1)\n"),
        "total = sum(\n        xs\n    )"
    );
}

#[test]
fn statement_mode_leaves_a_body_that_is_already_there() {
    // The header line is missing; its body is below the cursor.
    let fixture = "def f(xs):\n    total = 0\n    $0\n        total += x\n    return total\n";
    assert_eq!(
        suggest(
            fixture,
            "for x in xs:\n        total += x\n    return total\n"
        ),
        "for x in xs:"
    );
}

#[test]
fn block_mode_stops_at_the_dedent_and_at_a_return() {
    let fixture = "def f(xs):\n    $0\n\nprint(f([1]))\n";
    assert_eq!(
        suggest(
            fixture,
            "total = 0\n    for x in xs:\n        total += x\n    return total\n\n\ndef g():\n"
        ),
        "total = 0\n    for x in xs:\n        total += x\n    return total"
    );
    assert_eq!(
        suggest(fixture, "total = 0\n    print(total)\nprint(2)\n"),
        "total = 0\n    print(total)"
    );
    // A return nested deeper than the cursor does not end the block.
    assert_eq!(
        suggest(
            fixture,
            "if not xs:\n        return 0\n    return xs[0]\n    x = 1\n"
        ),
        "if not xs:\n        return 0\n    return xs[0]"
    );
}

#[test]
fn block_mode_stops_before_the_code_that_follows() {
    let fixture = "def f(xs):\n    for x in xs:\n        $0\n    print(xs)\n";
    assert_eq!(
        suggest(fixture, "x += 1\n        print(x)\n    print(xs)\n"),
        "x += 1\n        print(x)"
    );
}

#[test]
fn block_mode_stops_at_two_blank_lines_and_caps_lines() {
    assert_eq!(suggest("x = 1\n$0", "y = 2\n\n\nz = 3\n"), "y = 2");
    let many = "a = 1\n".repeat(MAX_BLOCK_LINES + 5);
    let kept = suggest("x = 1\n$0", &many);
    assert_eq!(kept.lines().count(), MAX_BLOCK_LINES);
}

#[test]
fn closing_brackets_and_quotes_already_there_are_dropped() {
    assert_eq!(suggest("print(f($0))\n", "a, b))"), "a, b");
    assert_eq!(suggest("x = foo($0)\n", "1, 2)"), "1, 2");
    assert_eq!(suggest("s = '$0'\n", "hello'"), "hello");
    assert_eq!(suggest("if ok($0):\n    pass\n", "a):"), "a");
    // The whole rest of the line, repeated.
    assert_eq!(suggest("y = $0 + 1\n", "x + 1"), "x");
    // Identifier characters are not closers: "max" stays whole before "x".
    assert_eq!(suggest("v = $0x\n", "max"), "max");
}

#[test]
fn whitespace_and_repeats_are_not_suggestions() {
    assert_eq!(suggest("def f():\n    $0\n", "   \n\n"), "");
    assert_eq!(
        suggest("def f():\n    x = 1\n    $0\n    y = 2\n", "x = 1\n"),
        ""
    );
    assert_eq!(suggest("x = 1  $0\n", "   "), "");
    // Trailing whitespace goes.
    assert_eq!(suggest("x = $0\n", "1   "), "1");
}

#[test]
fn indentation_follows_the_document() {
    let fixture = "def f(xs):\n\tfor x in xs:\n\t\t$0\n\tprint(xs)\n";
    assert_eq!(
        suggest(fixture, "if x:\n            print(x)\n\tprint(xs)\n"),
        "if x:\n\t\t\tprint(x)"
    );
    // The cursor already stands at the statement's indentation.
    assert_eq!(
        suggest(
            "def f():\n    x = 1\n    $0\n    return x\n",
            "    x += 1\n"
        ),
        "x += 1"
    );
}

#[test]
fn suggestions_that_break_the_parse_are_cut_or_dropped() {
    // An unclosed bracket on the last line goes; the complete lines stay.
    let fixture = "def f(xs):\n    $0\n";
    assert_eq!(
        suggest(fixture, "total = 0\n    print(total\n"),
        "total = 0"
    );
    // A single line that breaks the file is dropped.
    assert_eq!(suggest("x = $0\ny = 2\n", "(1, 2"), "");
    // A file that is already broken elsewhere is judged by the errors the suggestion adds.
    assert_eq!(
        suggest("def broken(:\n    pass\n\nx = $0\n", "1 + 2"),
        "1 + 2"
    );
}
