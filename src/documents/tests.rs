//! Inline-fixture tests for `documents`: unit conversions, clamping, edit application and tree
//! maintenance. The randomized counterpart lives in `tests/documents_props.rs`.

use proptest::prelude::*;
use tree_sitter::{Point, Tree};

use super::document::input_edit;
use super::*;

fn pos(line: u32, character: u32) -> Position {
    Position { line, character }
}

fn edit(start: (u32, u32), end: (u32, u32), text: &str) -> Change {
    Change {
        range: Some(Range {
            start: pos(start.0, start.1),
            end: pos(end.0, end.1),
        }),
        text: text.to_owned(),
    }
}

fn offset(text: &str, position: Position, encoding: Encoding) -> Result<usize, EditError> {
    Document::new(text, 0).snapshot().offset(position, encoding)
}

/// Walks both trees in step: same shape, kinds, byte ranges and points as a fresh parse.
fn assert_tree_is_fresh_parse(document: &Document) {
    let fresh = Document::new(&document.text(), 0);
    assert_same_tree(document.tree().unwrap(), fresh.tree().unwrap());
}

fn assert_same_tree(got: &Tree, want: &Tree) {
    assert_eq!(got.root_node().to_sexp(), want.root_node().to_sexp());
    let (mut got, mut want) = (got.walk(), want.walk());
    loop {
        let (g, w) = (got.node(), want.node());
        assert_eq!(
            (
                g.kind(),
                g.byte_range(),
                g.start_position(),
                g.end_position()
            ),
            (
                w.kind(),
                w.byte_range(),
                w.start_position(),
                w.end_position()
            )
        );
        if got.goto_first_child() {
            assert!(want.goto_first_child());
            continue;
        }
        loop {
            if got.goto_next_sibling() {
                assert!(want.goto_next_sibling());
                break;
            }
            if !got.goto_parent() {
                return;
            }
            assert!(want.goto_parent());
        }
    }
}

// "a" 1 byte / 1 unit, "é" 2 / 1, "中" 3 / 1, "🐍" 4 / 2 (a surrogate pair).
const MIXED: &str = "aé中🐍b\nz";

#[test]
fn utf16_columns_count_code_units() {
    let cases = [(0, 0), (1, 1), (2, 3), (3, 6), (5, 10), (6, 11)];
    for (character, byte) in cases {
        assert_eq!(offset(MIXED, pos(0, character), Encoding::Utf16), Ok(byte));
    }
}

#[test]
fn utf8_columns_count_bytes() {
    for byte in [0, 1, 3, 6, 10, 11] {
        assert_eq!(
            offset(MIXED, pos(0, byte), Encoding::Utf8),
            Ok(byte as usize)
        );
    }
    assert_eq!(offset(MIXED, pos(1, 1), Encoding::Utf8), Ok(13));
}

#[test]
fn positions_of_offsets_round_trip() {
    let snapshot = Document::new(MIXED, 0).snapshot();
    let cases = [
        (0, 0, 0),
        (1, 1, 1),
        (3, 2, 3),
        (6, 3, 6),
        (10, 5, 10),
        (12, 0, 0),
    ];
    for (byte, utf16, utf8) in cases {
        let line = u32::from(byte >= 12);
        assert_eq!(snapshot.position(byte, Encoding::Utf16), pos(line, utf16));
        assert_eq!(snapshot.position(byte, Encoding::Utf8), pos(line, utf8));
    }
}

#[test]
fn offsets_inside_a_character_round_down_and_past_the_end_clamp() {
    let snapshot = Document::new(MIXED, 0).snapshot();
    assert_eq!(snapshot.position(8, Encoding::Utf16), pos(0, 3));
    assert_eq!(snapshot.position(99, Encoding::Utf16), pos(1, 1));
}

#[test]
fn a_position_inside_a_character_is_an_error() {
    let inside_snake = pos(0, 4);
    assert_eq!(
        offset(MIXED, inside_snake, Encoding::Utf16),
        Err(EditError::InsideCharacter {
            position: inside_snake,
            encoding: Encoding::Utf16
        })
    );
    let inside_e_acute = pos(0, 2);
    assert!(offset(MIXED, inside_e_acute, Encoding::Utf8).is_err());
}

#[test]
fn crlf_is_one_line_break_and_its_cr_is_not_addressable() {
    let text = "ab\r\ncd\r\n";
    assert_eq!(offset(text, pos(0, 2), Encoding::Utf16), Ok(2));
    assert_eq!(offset(text, pos(0, 3), Encoding::Utf16), Ok(2));
    assert_eq!(offset(text, pos(1, 0), Encoding::Utf16), Ok(4));
    assert_eq!(offset(text, pos(1, 9), Encoding::Utf8), Ok(6));
    assert_eq!(offset(text, pos(2, 0), Encoding::Utf16), Ok(8));
    let snapshot = Document::new(text, 0).snapshot();
    assert_eq!(snapshot.position(3, Encoding::Utf16), pos(0, 2));
    assert_eq!(snapshot.position(4, Encoding::Utf16), pos(1, 0));
    assert_eq!(snapshot.position(8, Encoding::Utf16), pos(2, 0));
}

#[test]
fn a_lone_cr_is_ordinary_line_content() {
    let text = "ab\rcd\nef\r";
    assert_eq!(offset(text, pos(0, 3), Encoding::Utf16), Ok(3));
    assert_eq!(offset(text, pos(0, 9), Encoding::Utf16), Ok(5));
    assert_eq!(offset(text, pos(1, 0), Encoding::Utf16), Ok(6));
    assert_eq!(offset(text, pos(1, 3), Encoding::Utf16), Ok(9));
    let snapshot = Document::new(text, 0).snapshot();
    assert_eq!(snapshot.position(4, Encoding::Utf16), pos(0, 4));
}

#[test]
fn positions_past_a_line_or_the_document_clamp() {
    let text = "x = 1\ny";
    assert_eq!(offset(text, pos(0, 99), Encoding::Utf16), Ok(5));
    assert_eq!(offset(text, pos(1, 99), Encoding::Utf16), Ok(7));
    assert_eq!(offset(text, pos(9, 0), Encoding::Utf16), Ok(7));
    assert_eq!(offset(text, pos(u32::MAX, u32::MAX), Encoding::Utf8), Ok(7));
    assert_eq!(offset("", pos(3, 3), Encoding::Utf16), Ok(0));
}

#[test]
fn insertion_with_non_ascii_keeps_byte_columns_in_the_tree() {
    let mut document = Document::new("s = 'é🐍'\nx = 1\n", 1);
    let errors = document.apply(&[edit((0, 8), (0, 8), "中")], 2, Encoding::Utf16);
    assert!(errors.is_empty());
    assert_eq!(document.text(), "s = 'é🐍中'\nx = 1\n");
    assert_eq!(document.version(), 2);
    assert_tree_is_fresh_parse(&document);
}

#[test]
fn start_after_end_is_rejected_and_changes_nothing() {
    let mut document = Document::new("abc\n", 1);
    let errors = document.apply(&[edit((0, 3), (0, 1), "X")], 2, Encoding::Utf16);
    assert_eq!(
        errors,
        [EditError::StartAfterEnd {
            start: pos(0, 3),
            end: pos(0, 1)
        }]
    );
    assert_eq!(document.text(), "abc\n");
    assert_eq!(document.version(), 2);
}

#[test]
fn a_range_inside_a_surrogate_pair_is_rejected_and_valid_changes_still_apply() {
    let mut document = Document::new("🐍 = 1\n", 1);
    let changes = [edit((0, 1), (0, 2), "X"), edit((0, 5), (0, 6), "2")];
    let errors = document.apply(&changes, 2, Encoding::Utf16);
    assert_eq!(errors.len(), 1);
    assert_eq!(document.text(), "🐍 = 2\n");
    assert_tree_is_fresh_parse(&document);
}

#[test]
fn later_changes_see_the_text_earlier_ones_left() {
    let mut document = Document::new("abc", 1);
    let changes = [edit((0, 0), (0, 0), "X"), edit((0, 1), (0, 2), "Y")];
    assert!(document.apply(&changes, 2, Encoding::Utf16).is_empty());
    assert_eq!(document.text(), "XYbc");
    assert_tree_is_fresh_parse(&document);
}

#[test]
fn deletion_spanning_lines() {
    let mut document = Document::new("def f():\r\n    return 1\r\nx = 2\r\n", 1);
    assert!(
        document
            .apply(&[edit((0, 7), (1, 4), "")], 2, Encoding::Utf16)
            .is_empty()
    );
    assert_eq!(document.text(), "def f()return 1\r\nx = 2\r\n");
    assert_tree_is_fresh_parse(&document);
}

#[test]
fn whole_document_replacement_then_an_edit_in_the_same_batch() {
    let mut document = Document::new("old = 1\n", 1);
    let changes = [
        Change {
            range: None,
            text: "def g():\n    pass\n".to_owned(),
        },
        edit((1, 4), (1, 8), "return 中"),
    ];
    assert!(document.apply(&changes, 2, Encoding::Utf8).is_empty());
    assert_eq!(document.text(), "def g():\n    return 中\n");
    assert_tree_is_fresh_parse(&document);
}

#[test]
fn snapshots_do_not_see_later_edits() {
    let mut document = Document::new("a = 1\n", 1);
    let before = document.snapshot();
    document.apply(&[edit((0, 4), (0, 5), "2")], 2, Encoding::Utf16);
    assert_eq!((before.version, before.text()), (1, "a = 1\n".to_owned()));
    assert_eq!(document.snapshot().text(), "a = 2\n");
}

#[test]
fn odd_content_never_panics() {
    let long_line = "x = 1; ".repeat(150_000);
    for text in [
        "\0\0def\0(\n\0",
        "\r\r\n\n\r",
        "(((((((",
        long_line.as_str(),
    ] {
        let mut document = Document::new(text, 1);
        document.apply(
            &[edit((0, 1), (0, u32::MAX), "\0é\r\n🐍")],
            2,
            Encoding::Utf16,
        );
        document.apply(&[edit((3, 0), (0, 0), "x")], 3, Encoding::Utf8);
        assert_tree_is_fresh_parse(&document);
    }
}

#[test]
fn state_can_live_behind_a_mutex_and_snapshots_can_cross_threads() {
    fn shareable<T: Send + Sync>() {}
    fn sendable<T: Send>() {}
    sendable::<Documents>();
    shareable::<Snapshot>();
}

#[test]
fn documents_open_change_close() {
    let mut documents = Documents::default();
    assert!(documents.is_empty());
    documents.open("file:///a.py", "a = 1\n", 1);
    let changes = [edit((0, 0), (0, 1), "b")];
    assert_eq!(
        documents.change("file:///a.py", &changes, 2, Encoding::Utf16),
        Some(vec![])
    );
    assert_eq!(
        documents.change("file:///b.py", &changes, 2, Encoding::Utf16),
        None
    );
    let snapshot = documents.snapshot("file:///a.py");
    assert_eq!(
        snapshot.map(|s| (s.version, s.text())),
        Some((2, "b = 1\n".to_owned()))
    );
    assert_eq!(documents.len(), 1);
    assert!(documents.close("file:///a.py"));
    assert!(!documents.close("file:///a.py"));
    assert!(documents.is_empty());
    assert!(documents.snapshot("file:///a.py").is_none());
}

/// Row and byte column of `byte`, counted the slow obvious way.
fn obvious_point(text: &str, byte: usize) -> Point {
    let before = &text[..byte];
    let row_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Point {
        row: before.matches('\n').count(),
        column: byte - row_start,
    }
}

const PIECES: &[&str] = &["a", " ", "\n", "\r\n", "\r", "é", "中", "🐍", "𝔘", "(", ":"];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..30).prop_map(|p| p.concat())
}

// The tree is reparsed right after each edit, and the reparse happens to repair wrong points in
// an `InputEdit`, so tree comparisons cannot catch them: check the points directly.
proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    #[test]
    fn input_edit_points_are_rows_and_byte_columns(
        old in text(),
        inserted in text(),
        utf8 in any::<bool>(),
        ends in any::<[(u8, u8); 2]>(),
    ) {
        let encoding = if utf8 { Encoding::Utf8 } else { Encoding::Utf16 };
        let [a, b] = ends.map(|(line, character)| pos(u32::from(line % 6), u32::from(character % 12)));
        let (start, end) = if (a.line, a.character) <= (b.line, b.character) { (a, b) } else { (b, a) };
        let rope = ropey::Rope::from_str(&old);
        let Ok(edit) = input_edit(&rope, Range { start, end }, &inserted, encoding) else {
            return Ok(());
        };
        let new = format!("{}{inserted}{}", &old[..edit.start_byte], &old[edit.old_end_byte..]);
        prop_assert_eq!(edit.start_position, obvious_point(&old, edit.start_byte));
        prop_assert_eq!(edit.old_end_position, obvious_point(&old, edit.old_end_byte));
        prop_assert_eq!(edit.new_end_byte, edit.start_byte + inserted.len());
        prop_assert_eq!(edit.new_end_position, obvious_point(&new, edit.new_end_byte));
    }
}

/// A module of `n` small functions after two imports, and its text.
fn big_module(n: usize) -> String {
    let mut text = String::from("import os\nfrom typing import List\n\n");
    for i in 0..n {
        text.push_str(&format!("def f{i}(x):\n    return x * {i}\n\n"));
    }
    text
}

#[test]
fn a_large_document_keeps_no_tree_and_requests_read_an_excerpt() {
    let text = big_module(40_000);
    assert!(text.len() > LARGE_DOCUMENT);
    let document = Document::new(&text, 1);
    assert!(document.tree().is_none());
    let cursor = text.find("def f20000(x):\n    return").unwrap() + "def f20000(x):\n    ".len();
    let excerpt = document.snapshot().excerpt(cursor).unwrap();
    // Bounded: the head, 64 KiB before and 16 KiB after (whole lines), not the document.
    assert!(excerpt.text.len() < 90 << 10, "{}", excerpt.text.len());
    assert!(
        excerpt
            .text
            .starts_with("import os\nfrom typing import List\n")
    );
    let (before, after) = excerpt.text.split_at(excerpt.offset);
    assert!(text[..cursor].ends_with(&before[before.len() - 200..]));
    assert!(text[cursor..].starts_with(after));
    assert!(after.ends_with('\n'));
    // The excerpt's own lines are whole: the part after the head starts a line.
    let body = &excerpt.text[excerpt.text.find("\ndef ").unwrap() + 1..];
    assert!(body.starts_with("def f"), "{}", &body[..40]);
}

#[test]
fn the_tree_comes_back_when_a_large_document_shrinks() {
    let text = big_module(40_000);
    let mut document = Document::new(&text, 1);
    let lines = text.matches('\n').count() as u32;
    // Delete all but the first 1,000 lines.
    document.apply(&[edit((1_000, 0), (lines, 0), "")], 2, Encoding::Utf8);
    assert!(document.tree().is_some());
    assert_tree_is_fresh_parse(&document);
    assert!(document.snapshot().excerpt(10).is_none());
    document.apply(
        &[Change {
            range: None,
            text: text.clone(),
        }],
        3,
        Encoding::Utf8,
    );
    assert!(document.tree().is_none());
}

#[test]
fn a_long_cursor_line_is_read_around_the_cursor_on_character_boundaries() {
    // 2-byte characters, so cut points at odd offsets must move to a character's start.
    let long = format!("data = \"{}\"\n", "é".repeat(20_000));
    let text = format!("import json\n\n{long}x = 1\n");
    let document = Document::new(&text, 1);
    assert!(document.tree().is_some());
    for cursor in [13 + 10_001, 13 + 10_002, 13 + 30_000] {
        let cursor = (0..=cursor)
            .rev()
            .find(|&b| text.is_char_boundary(b))
            .unwrap();
        let excerpt = document.snapshot().excerpt(cursor).unwrap();
        assert!(excerpt.text.len() < 4 << 10, "{}", excerpt.text.len());
        assert!(excerpt.text.starts_with("import json\n\n"));
        let (before, after) = excerpt.text.split_at(excerpt.offset);
        assert!(text[..cursor].ends_with(&before["import json\n\n".len()..]));
        assert!(text[cursor..].starts_with(after));
    }
    // Short lines in a small document need no excerpt.
    assert!(document.snapshot().excerpt(text.len() - 2).is_none());
}
