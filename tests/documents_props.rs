//! Property tests for `pyfill::documents`: random LSP-style edit sequences over text mixing ASCII,
//! multi-byte (é, 中) and astral (🐍, 𝔘) characters, "\n", "\r\n" and lone "\r" must leave the
//! rope equal to a `String` edited the slow obvious way and the tree equal to a fresh parse of
//! that text; invalid ranges must change nothing and never panic. The reference model here
//! reimplements the line rules independently: lines split at "\n", the "\r" of "\r\n" is not
//! addressable, a lone "\r" is content, past-the-end positions clamp.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use pyfill::documents::{Change, Document, Encoding, Position, Range};
use tree_sitter::Tree;

/// Python-ish fragments, so that random texts exercise real syntax and error recovery.
const PIECES: &[&str] = &[
    "a", "x", "1", " ", "    ", "\t", "\n", "\n", "\r\n", "\r", "é", "中", "🐍", "𝔘", "def ",
    "class ", "return ", "if ", "(", ")", ":", "=", ",", "[", "]", "'", "\"", "\"\"\"", "#", "\\",
    "\0",
];

fn text(max_pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..max_pieces).prop_map(|p| p.concat())
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop::bool::weighted(0.25).prop_map(|utf8| {
        if utf8 {
            Encoding::Utf8
        } else {
            Encoding::Utf16
        }
    })
}

// ---- The reference model: plain strings, the slow obvious way. ----

struct Line<'a> {
    start: usize,
    content: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let pieces: Vec<&str> = text.split('\n').collect();
    let last = pieces.len() - 1;
    let mut start = 0;
    let mut lines = Vec::new();
    for (i, piece) in pieces.into_iter().enumerate() {
        let content = if i < last {
            piece.strip_suffix('\r').unwrap_or(piece)
        } else {
            piece
        };
        lines.push(Line { start, content });
        start += piece.len() + 1;
    }
    lines
}

fn units(c: char, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Utf8 => c.len_utf8(),
        Encoding::Utf16 => c.len_utf16(),
    }
}

/// None for a position inside a character.
fn reference_offset(text: &str, position: Position, encoding: Encoding) -> Option<usize> {
    let lines = lines(text);
    let Some(line) = lines.get(position.line as usize) else {
        return Some(text.len());
    };
    let wanted = position.character as usize;
    let mut column = 0;
    for (i, c) in line.content.char_indices() {
        if column == wanted {
            return Some(line.start + i);
        }
        if wanted < column + units(c, encoding) {
            return None;
        }
        column += units(c, encoding);
    }
    Some(line.start + line.content.len())
}

/// The column where each character of a line starts, then the line's end.
fn columns(line: &Line, encoding: Encoding) -> Vec<usize> {
    let mut columns = vec![0];
    for c in line.content.chars() {
        columns.push(columns.last().unwrap() + units(c, encoding));
    }
    columns
}

/// A position on a character boundary, now and then past its line's or the document's end.
fn valid_position(text: &str, encoding: Encoding, (a, b): (u32, u32)) -> Position {
    let lines = lines(text);
    let line = a as usize % (lines.len() + 1);
    let Some(found) = lines.get(line) else {
        return Position {
            line: u32::try_from(line).unwrap() + b % 3,
            character: b % 4,
        };
    };
    let mut columns = columns(found, encoding);
    columns.push(columns.last().unwrap() + 1 + b as usize % 3);
    Position {
        line: u32::try_from(line).unwrap(),
        character: u32::try_from(columns[b as usize % columns.len()]).unwrap(),
    }
}

/// Every position strictly inside a character of `text`.
fn positions_inside_characters(text: &str, encoding: Encoding) -> Vec<Position> {
    let mut inside = Vec::new();
    for (number, line) in lines(text).iter().enumerate() {
        let mut column = 0;
        for c in line.content.chars() {
            for within in 1..units(c, encoding) {
                inside.push(Position {
                    line: u32::try_from(number).unwrap(),
                    character: u32::try_from(column + within).unwrap(),
                });
            }
            column += units(c, encoding);
        }
    }
    inside
}

fn key(position: Position) -> (u32, u32) {
    (position.line, position.character)
}

fn ordered(a: Position, b: Position) -> Range {
    let (start, end) = if key(a) <= key(b) { (a, b) } else { (b, a) };
    Range { start, end }
}

// ---- Comparing trees. ----

/// Same s-expression, and the same kind, byte range and points at every node, walking both in
/// step.
fn assert_same_tree(got: &Tree, want: &Tree) {
    assert_eq!(got.root_node().to_sexp(), want.root_node().to_sexp());
    let (mut got, mut want) = (got.walk(), want.walk());
    loop {
        let (g, w) = (got.node(), want.node());
        assert_eq!(
            (
                g.kind_id(),
                g.byte_range(),
                g.start_position(),
                g.end_position()
            ),
            (
                w.kind_id(),
                w.byte_range(),
                w.start_position(),
                w.end_position()
            )
        );
        assert_eq!(
            (g.is_error(), g.is_missing(), got.field_name()),
            (w.is_error(), w.is_missing(), want.field_name())
        );
        if got.goto_first_child() {
            assert!(want.goto_first_child());
            continue;
        }
        assert!(!want.goto_first_child());
        loop {
            if got.goto_next_sibling() {
                assert!(want.goto_next_sibling());
                break;
            }
            assert!(!want.goto_next_sibling());
            if !got.goto_parent() {
                return;
            }
            assert!(want.goto_parent());
        }
    }
}

fn assert_tree_is_fresh_parse(document: &Document) {
    assert_same_tree(
        document.tree().unwrap(),
        Document::new(&document.text(), 0).tree().unwrap(),
    );
}

// ---- Edit sequences. ----

#[derive(Debug, Clone)]
struct RawEdit {
    from: (u32, u32),
    to: (u32, u32),
    text: String,
    whole_document: bool,
}

/// One didChange notification.
#[derive(Debug, Clone)]
struct Call {
    encoding: Encoding,
    edits: Vec<RawEdit>,
}

fn raw_edit() -> impl Strategy<Value = RawEdit> {
    (
        any::<(u32, u32)>(),
        any::<(u32, u32)>(),
        text(6),
        prop::bool::weighted(0.04),
    )
        .prop_map(|(from, to, text, whole_document)| RawEdit {
            from,
            to,
            text,
            whole_document,
        })
}

fn call() -> impl Strategy<Value = Call> {
    (encoding(), prop::collection::vec(raw_edit(), 1..4))
        .prop_map(|(encoding, edits)| Call { encoding, edits })
}

/// Turns raw numbers into changes valid for the text as it stands, applying each to `reference`
/// since later ranges refer to the text earlier changes left.
fn changes_for(reference: &mut String, call: &Call) -> Vec<Change> {
    let mut changes = Vec::new();
    for raw in &call.edits {
        if raw.whole_document {
            reference.clone_from(&raw.text);
            changes.push(Change {
                range: None,
                text: raw.text.clone(),
            });
            continue;
        }
        let range = ordered(
            valid_position(reference, call.encoding, raw.from),
            valid_position(reference, call.encoding, raw.to),
        );
        let start = reference_offset(reference, range.start, call.encoding).unwrap();
        let end = reference_offset(reference, range.end, call.encoding).unwrap();
        reference.replace_range(start..end, &raw.text);
        changes.push(Change {
            range: Some(range),
            text: raw.text.clone(),
        });
    }
    changes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn edit_sequences_match_the_reference_and_a_fresh_parse(
        initial in text(40),
        calls in prop::collection::vec(call(), 1..4),
    ) {
        let mut document = Document::new(&initial, 0);
        let mut reference = initial;
        for (version, call) in (1..).zip(&calls) {
            let changes = changes_for(&mut reference, call);
            let errors = document.apply(&changes, version, call.encoding);
            prop_assert!(errors.is_empty(), "{errors:?}");
            prop_assert_eq!(document.version(), version);
            prop_assert_eq!(&document.text(), &reference);
        }
        assert_tree_is_fresh_parse(&document);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn offsets_and_positions_match_the_reference(
        text in text(40),
        encoding in encoding(),
        raw in prop::collection::vec(any::<(u32, u32)>(), 1..8),
    ) {
        let snapshot = Document::new(&text, 0).snapshot();
        let line_count = lines(&text).len();
        for (a, b) in raw {
            // Lines up to one past the end, columns up to a little past the line's end.
            let position = Position { line: a % (line_count as u32 + 1), character: b % 12 };
            let want = reference_offset(&text, position, encoding);
            prop_assert_eq!(snapshot.offset(position, encoding).ok(), want);
        }
        for (byte, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let position = snapshot.position(byte, encoding);
            let back = snapshot.offset(position, encoding);
            let splits_crlf = text[..byte].ends_with('\r') && text[byte..].starts_with('\n');
            let want = if splits_crlf { byte - 1 } else { byte };
            prop_assert_eq!(back, Ok(want));
        }
    }

    #[test]
    fn invalid_changes_are_reported_and_change_nothing(
        before in text(20),
        after in text(20),
        encoding in encoding(),
        bad in prop::collection::vec((any::<bool>(), any::<(u32, u32)>(), any::<(u32, u32)>()), 1..4),
        valid in prop::option::of(raw_edit()),
    ) {
        // An astral character guarantees that both encodings have a position inside one.
        let initial = format!("{before}𝔘{after}");
        let mut document = Document::new(&initial, 0);
        let mut changes = Vec::new();
        for (reversed, from, to) in bad {
            let other = valid_position(&initial, encoding, to);
            let range = if reversed {
                let Range { start, end } = ordered(valid_position(&initial, encoding, from), other);
                // Reversing an empty range would leave it valid; one column later is after it.
                let later = Position { character: end.character + 1, ..end };
                let end = if key(start) == key(end) { later } else { end };
                Range { start: end, end: start }
            } else {
                let inside = positions_inside_characters(&initial, encoding);
                ordered(inside[from.0 as usize % inside.len()], other)
            };
            changes.push(Change { range: Some(range), text: "X".to_owned() });
        }
        let bad_count = changes.len();
        let mut reference = initial.clone();
        if let Some(edit) = valid {
            let edit = RawEdit { whole_document: false, ..edit };
            changes.extend(changes_for(&mut reference, &Call { encoding, edits: vec![edit] }));
        }
        let errors = document.apply(&changes, 1, encoding);
        prop_assert_eq!(errors.len(), bad_count);
        prop_assert_eq!(document.text(), reference);
        assert_tree_is_fresh_parse(&document);
    }
}
