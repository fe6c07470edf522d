//! One open buffer: applies LSP-style changes to its rope, keeps its tree-sitter tree in step by
//! editing the old tree and reparsing incrementally, and hands out snapshots. Unit conversions
//! are `line_index`'s business, not this file's.

use ropey::Rope;
use tree_sitter::{InputEdit, Parser, Point, Tree};

use super::line_index::{self, Located};
use super::{Change, EditError, Encoding, Position, Range};

/// An open Python buffer with its syntax tree, always describing the same text.
pub struct Document {
    rope: Rope,
    tree: Tree,
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
        let tree = parse(&mut parser, &rope, None);
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

    pub fn tree(&self) -> &Tree {
        &self.tree
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
                    if reparse != Reparse::Fresh {
                        self.tree.edit(&edit);
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
        match reparse {
            Reparse::Nothing => {}
            Reparse::Incremental => {
                self.tree = parse(&mut self.parser, &self.rope, Some(&self.tree));
            }
            Reparse::Fresh => self.tree = parse(&mut self.parser, &self.rope, None),
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
    pub tree: Tree,
}

impl Snapshot {
    pub fn text(&self) -> String {
        self.rope.to_string()
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
