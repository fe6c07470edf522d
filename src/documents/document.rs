//! One open buffer: applies LSP-style changes to its rope, keeps its tree-sitter tree in step by
//! editing the old tree and reparsing incrementally, and hands out snapshots. Unit conversions
//! are `line_index`'s business, not this file's.
//!
//! Parsing must not grow with the file: even an incremental reparse walks every top-level
//! statement (about 1 s for a 10 MB module here). So a document over [`LARGE_DOCUMENT`] keeps
//! no tree, and a request on it, or on a very long line, reads an [`Excerpt`] around the cursor
//! instead, parsed on its own. (What still grows with the file is a copy and a few hashes of its
//! text per request: milliseconds for 10 MB.)

use ropey::Rope;
use tree_sitter::{InputEdit, Parser, Point, Tree};

use super::line_index::{self, Located};
use super::{Change, EditError, Encoding, Position, Range};

/// Documents larger than this (bytes) keep no syntax tree.
pub const LARGE_DOCUMENT: usize = 1 << 20;
/// A cursor line longer than this (bytes) is read as an excerpt, even in a small document.
pub const LONG_LINE: usize = 4 << 10;
/// How much of the text before and after the cursor an excerpt keeps (bytes), and how much of
/// a long cursor line.
const EXCERPT_BEFORE: usize = 64 << 10;
const EXCERPT_AFTER: usize = 16 << 10;
const LINE_BEFORE: usize = 1 << 10;
const LINE_AFTER: usize = 256;
/// The leading lines an excerpt starts with (where imports are), at most this many bytes.
const EXCERPT_HEAD: usize = 8 << 10;

/// An open Python buffer with its syntax tree (none when over [`LARGE_DOCUMENT`]), always
/// describing the same text.
pub struct Document {
    rope: Rope,
    tree: Option<Tree>,
    parser: Parser,
    version: i32,
}

/// How the tree must catch up with the rope after a batch of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reparse {
    Nothing,
    /// The old tree was edited to match; reuse what it still knows.
    Incremental,
    /// The whole text was replaced; the old tree describes nothing that is left.
    Fresh,
}

impl Document {
    pub fn new(text: &str, version: i32) -> Document {
        let rope = Rope::from_str(text);
        let mut parser = super::python_parser();
        let tree = (rope.len_bytes() <= LARGE_DOCUMENT).then(|| parse(&mut parser, &rope, None));
        Document {
            rope,
            tree,
            parser,
            version,
        }
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn text(&self) -> String {
        self.rope.to_string()
    }

    /// None for a document over [`LARGE_DOCUMENT`].
    pub fn tree(&self) -> Option<&Tree> {
        self.tree.as_ref()
    }

    /// Applies changes in order, each range read against the text the earlier ones left (as LSP
    /// says). A change that is invalid (start after end, position inside a surrogate pair or a
    /// multi-byte character) is skipped with a warning and reported; valid ones still apply.
    /// Positions clamp as [`Snapshot::offset`] describes. `version` is stored either way.
    pub fn apply(
        &mut self,
        changes: &[Change],
        version: i32,
        encoding: Encoding,
    ) -> Vec<EditError> {
        self.version = version;
        let mut errors = Vec::new();
        let mut reparse = Reparse::Nothing;
        for change in changes {
            let Some(range) = change.range else {
                self.rope = Rope::from_str(&change.text);
                reparse = Reparse::Fresh;
                continue;
            };
            match self.splice(range, &change.text, encoding) {
                Ok(edit) => {
                    // After a full replacement the old tree is dropped anyway; editing it is moot.
                    if reparse != Reparse::Fresh
                        && let Some(tree) = &mut self.tree
                    {
                        tree.edit(&edit);
                        reparse = Reparse::Incremental;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, version, "skipping an invalid document change");
                    errors.push(error);
                }
            }
        }
        // tree-sitter accepts several edits before one reparse, so a batch costs one parse.
        if self.rope.len_bytes() > LARGE_DOCUMENT {
            self.tree = None;
        } else {
            self.tree = match (reparse, self.tree.take()) {
                (Reparse::Nothing, Some(tree)) => Some(tree),
                (Reparse::Incremental, Some(old)) => {
                    Some(parse(&mut self.parser, &self.rope, Some(&old)))
                }
                // Replaced, or back under the limit.
                _ => Some(parse(&mut self.parser, &self.rope, None)),
            };
        }
        errors
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            rope: self.rope.clone(),
            tree: self.tree.clone(),
        }
    }

    /// Replaces `range` with `text` in the rope and returns the matching tree edit. Leaves the
    /// rope untouched on error.
    fn splice(
        &mut self,
        range: Range,
        text: &str,
        encoding: Encoding,
    ) -> Result<InputEdit, EditError> {
        let edit = input_edit(&self.rope, range, text, encoding)?;
        let start_char = line_index::char_index(&self.rope, edit.start_byte);
        let end_char = line_index::char_index(&self.rope, edit.old_end_byte);
        self.rope.remove(start_char..end_char);
        self.rope.insert(start_char, text);
        Ok(edit)
    }
}

/// An immutable view of one version of a document; cloning is cheap (Rope and Tree share data).
#[derive(Clone)]
pub struct Snapshot {
    pub version: i32,
    pub rope: Rope,
    /// None for a document over [`LARGE_DOCUMENT`].
    pub tree: Option<Tree>,
}

/// Part of a document to build a prompt from, when the whole is too large to read per request:
/// the document's first lines (its imports), then the text around the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    pub text: String,
    /// The cursor, as a byte offset into `text`.
    pub offset: usize,
}

impl Snapshot {
    pub fn text(&self) -> String {
        self.rope.to_string()
    }

    /// What to read for a request at byte `offset`: None when the whole document and its tree
    /// will do; an [`Excerpt`] when the document has no tree (too large) or the cursor's line
    /// is longer than [`LONG_LINE`]. Its size does not depend on the document's.
    pub fn excerpt(&self, offset: usize) -> Option<Excerpt> {
        let rope = &self.rope;
        let offset = offset.min(rope.len_bytes());
        let line = rope.byte_to_line(offset);
        let line_start = rope.line_to_byte(line);
        let line_end = rope.line_to_byte((line + 1).min(rope.len_lines()));
        if self.tree.is_some() && line_end - line_start <= LONG_LINE {
            return None;
        }
        let floor = |byte: usize| floor_char(rope, byte);
        let ceil = |byte: usize| ceil_char(rope, byte);
        let (mut start, mut end);
        if line_end - line_start > LONG_LINE {
            // The middle of the cursor's line only.
            start = floor(offset.saturating_sub(LINE_BEFORE).max(line_start));
            end = ceil((offset + LINE_AFTER).min(line_end));
        } else {
            start = offset.saturating_sub(EXCERPT_BEFORE);
            end = (offset + EXCERPT_AFTER).min(rope.len_bytes());
            // Whole lines where a line break is near; else a cut inside a (long) line.
            let after_start = rope.line_to_byte(rope.byte_to_line(start) + 1);
            start = if start == 0 || after_start > line_start {
                floor(start)
            } else {
                after_start
            };
            let end_line_start = rope.line_to_byte(rope.byte_to_line(end));
            end = if end == rope.len_bytes() || end_line_start < line_end {
                ceil(end)
            } else {
                end_line_start
            };
        }
        let mut text = String::new();
        if start > 0 {
            let mut head_end = 0;
            for l in 0..rope.len_lines() {
                let next = rope.line_to_byte(l + 1);
                if next > EXCERPT_HEAD || next > start {
                    break;
                }
                head_end = next;
            }
            text.push_str(&rope.byte_slice(..head_end).to_string());
        }
        let at = text.len() + (offset - start);
        text.push_str(&rope.byte_slice(start..end).to_string());
        Some(Excerpt { text, offset: at })
    }

    /// Byte offset of an LSP position. A column past its line's end clamps to the line's end
    /// (before its "\n" or "\r\n"); a line past the document's end clamps to the document's end.
    /// Err for a position inside a character (a surrogate pair, or a multi-byte UTF-8 sequence).
    pub fn offset(&self, pos: Position, encoding: Encoding) -> Result<usize, EditError> {
        line_index::locate(&self.rope, pos, encoding).map(|located| located.byte)
    }

    /// LSP position of a byte offset. Offsets past the end clamp to the end; an offset inside a
    /// character means that character's start.
    pub fn position(&self, offset: usize, encoding: Encoding) -> Position {
        line_index::position(&self.rope, offset, encoding)
    }
}

/// The start of the character holding `byte`.
fn floor_char(rope: &Rope, byte: usize) -> usize {
    let byte = byte.min(rope.len_bytes());
    rope.char_to_byte(rope.byte_to_char(byte))
}

/// `byte` if a character starts there, else the start of the next one.
fn ceil_char(rope: &Rope, byte: usize) -> usize {
    let floor = floor_char(rope, byte);
    if floor == byte.min(rope.len_bytes()) {
        floor
    } else {
        rope.char_to_byte(rope.byte_to_char(byte) + 1)
    }
}

/// The tree edit for replacing `range` of `rope` with `text`, read from the rope before it
/// changes. Points are rows and byte columns, as tree-sitter counts them.
pub(super) fn input_edit(
    rope: &Rope,
    range: Range,
    text: &str,
    encoding: Encoding,
) -> Result<InputEdit, EditError> {
    let (start, end) = resolve(rope, range, encoding)?;
    Ok(InputEdit {
        start_byte: start.byte,
        old_end_byte: end.byte,
        new_end_byte: start.byte + text.len(),
        start_position: start.point,
        old_end_position: end.point,
        new_end_position: line_index::point_after(start.point, text),
    })
}

/// Both ends of a range, rejected before any clamping if the editor sent them reversed. Clamping
/// preserves order, so the resolved ends are ordered too.
fn resolve(rope: &Rope, range: Range, encoding: Encoding) -> Result<(Located, Located), EditError> {
    let Range { start, end } = range;
    if (start.line, start.character) > (end.line, end.character) {
        return Err(EditError::StartAfterEnd { start, end });
    }
    let start = line_index::locate(rope, start, encoding)?;
    let end = line_index::locate(rope, end, encoding)?;
    Ok((start, end))
}

/// Parses the rope's chunks in place, without copying the text out.
fn parse(parser: &mut Parser, rope: &Rope, old_tree: Option<&Tree>) -> Tree {
    parser
        .parse_with_options(&mut |byte, _: Point| chunk_from(rope, byte), old_tree, None)
        .expect("a parser with a language and no cancellation callback always returns a tree")
}

/// The rest of the chunk holding `byte`; empty at or past the end, which ends the parse.
fn chunk_from(rope: &Rope, byte: usize) -> &[u8] {
    if byte >= rope.len_bytes() {
        return &[];
    }
    let (chunk, chunk_start, _, _) = rope.chunk_at_byte(byte);
    &chunk.as_bytes()[byte - chunk_start..]
}
