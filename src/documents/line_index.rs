//! The one place that converts between units: byte offsets into the rope, LSP positions (line +
//! UTF-16 or UTF-8 column) and tree-sitter points (row + byte column). Nothing else in
//! `documents` does arithmetic across units.
//!
//! Lines are counted over "\n" here rather than with ropey's line index: with its default
//! features ropey also breaks lines at a lone "\r", U+000B, U+000C, U+0085, U+2028 and U+2029,
//! while tree-sitter's rows count "\n" only. One definition keeps an LSP line equal to a
//! tree-sitter row. The cost is a scan from the start of the rope to find a line (counting
//! newlines in whole chunks, so well under a millisecond for a megabyte); columns within a line
//! use ropey's UTF-16 index and are O(log n) even on a single megabyte-long line.

use ropey::Rope;
use tree_sitter::Point;

use super::{EditError, Encoding, Position};

/// A byte offset into the rope together with the tree-sitter point of the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Located {
    pub byte: usize,
    pub point: Point,
}

/// Resolves an LSP position, clamping as the LSP spec asks: a column past its line's end goes to
/// the line's end (before its line break), a line past the document's end goes to the document's
/// end. A column inside a character is an error.
pub(super) fn locate(
    rope: &Rope,
    position: Position,
    encoding: Encoding,
) -> Result<Located, EditError> {
    let row = position.line as usize;
    let Some(start) = line_start(rope, row) else {
        return Ok(end_of_document(rope));
    };
    let end = content_end(rope, start);
    let character = position.character as usize;
    let byte = match encoding {
        Encoding::Utf8 => utf8_column_to_byte(rope, start, end, character),
        Encoding::Utf16 => utf16_column_to_byte(rope, start, end, character),
    }
    .ok_or(EditError::InsideCharacter { position, encoding })?;
    Ok(Located {
        byte,
        point: Point {
            row,
            column: byte - start,
        },
    })
}

/// The LSP position of a byte offset. An offset past the end means the end; one inside a
/// character means that character's start; one between the "\r" and "\n" of a line break
/// means the line's end, since the "\r" cannot be addressed.
pub(super) fn position(rope: &Rope, offset: usize, encoding: Encoding) -> Position {
    let mut byte = floor_char_boundary(rope, offset.min(rope.len_bytes()));
    let (row, start) = row_of(rope, byte);
    if splits_crlf(rope, byte) {
        byte -= 1;
    }
    let character = match encoding {
        Encoding::Utf8 => byte - start,
        Encoding::Utf16 => utf16_index(rope, byte) - utf16_index(rope, start),
    };
    Position {
        line: saturating_u32(row),
        character: saturating_u32(character),
    }
}

/// Where `text`, inserted at `start`, ends, as a tree-sitter point.
pub(super) fn point_after(start: Point, text: &str) -> Point {
    match text.rfind('\n') {
        Some(last) => Point {
            row: start.row + count_newlines(text.as_bytes()),
            column: text.len() - last - 1,
        },
        None => Point {
            row: start.row,
            column: start.column + text.len(),
        },
    }
}

/// The char index ropey's editing methods want for a byte offset on a char boundary.
pub(super) fn char_index(rope: &Rope, byte: usize) -> usize {
    rope.byte_to_char(byte)
}

fn utf8_column_to_byte(rope: &Rope, start: usize, end: usize, character: usize) -> Option<usize> {
    let wanted = start.saturating_add(character);
    if wanted >= end {
        return Some(end);
    }
    (floor_char_boundary(rope, wanted) == wanted).then_some(wanted)
}

fn utf16_column_to_byte(rope: &Rope, start: usize, end: usize, character: usize) -> Option<usize> {
    let wanted = utf16_index(rope, start).saturating_add(character);
    if wanted >= utf16_index(rope, end) {
        return Some(end);
    }
    // ropey answers the containing char for an index inside a surrogate pair; detect that.
    let char_idx = rope.utf16_cu_to_char(wanted);
    (rope.char_to_utf16_cu(char_idx) == wanted).then(|| rope.char_to_byte(char_idx))
}

fn utf16_index(rope: &Rope, byte: usize) -> usize {
    rope.char_to_utf16_cu(rope.byte_to_char(byte))
}

fn floor_char_boundary(rope: &Rope, byte: usize) -> usize {
    rope.char_to_byte(rope.byte_to_char(byte))
}

fn end_of_document(rope: &Rope) -> Located {
    let byte = rope.len_bytes();
    let (row, start) = row_of(rope, byte);
    Located {
        byte,
        point: Point {
            row,
            column: byte - start,
        },
    }
}

/// Byte offset where row `row` starts; None when the document has fewer rows.
fn line_start(rope: &Rope, row: usize) -> Option<usize> {
    if row == 0 {
        return Some(0);
    }
    let mut newlines_to_pass = row;
    let mut chunk_start = 0;
    for chunk in rope.chunks() {
        let bytes = chunk.as_bytes();
        let here = count_newlines(bytes);
        if here >= newlines_to_pass {
            let (index, _) = bytes
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .nth(newlines_to_pass - 1)?;
            return Some(chunk_start + index + 1);
        }
        newlines_to_pass -= here;
        chunk_start += bytes.len();
    }
    None
}

/// The row holding `byte` and the byte offset where that row starts.
fn row_of(rope: &Rope, byte: usize) -> (usize, usize) {
    let (mut row, mut row_start, mut chunk_start) = (0, 0, 0);
    for chunk in rope.chunks() {
        if chunk_start >= byte {
            break;
        }
        let bytes = chunk.as_bytes();
        let before = &bytes[..bytes.len().min(byte - chunk_start)];
        row += count_newlines(before);
        if let Some(last) = before.iter().rposition(|&b| b == b'\n') {
            row_start = chunk_start + last + 1;
        }
        chunk_start += bytes.len();
    }
    (row, row_start)
}

/// End of the addressable content of the line starting at `start`: its "\n", or the "\r" of its
/// "\r\n", or the document's end.
fn content_end(rope: &Rope, start: usize) -> usize {
    let (chunks, mut chunk_start, _, _) = rope.chunks_at_byte(start);
    for chunk in chunks {
        let bytes = chunk.as_bytes();
        let from = start.saturating_sub(chunk_start).min(bytes.len());
        if let Some(index) = bytes[from..].iter().position(|&b| b == b'\n') {
            let newline = chunk_start + from + index;
            let crlf = newline > start && rope.byte(newline - 1) == b'\r';
            return if crlf { newline - 1 } else { newline };
        }
        chunk_start += bytes.len();
    }
    rope.len_bytes()
}

fn splits_crlf(rope: &Rope, byte: usize) -> bool {
    byte > 0 && byte < rope.len_bytes() && rope.byte(byte - 1) == b'\r' && rope.byte(byte) == b'\n'
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

fn saturating_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
