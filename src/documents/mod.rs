//! Open Python buffers: per URI, a `ropey::Rope` with an incrementally maintained tree-sitter
//! syntax tree, the version the editor gave it, edits in LSP's shape (line + column ranges) and
//! cheap immutable snapshots for completion requests. Pure: no IO, no protocol crate types (the
//! `lsp` layer converts its types into the plain ones here), nothing about JSON-RPC or models.
//!
//! Lines: a line ends at "\n", and a "\r" right before that "\n" belongs to the line break (it
//! cannot be addressed; columns past it clamp before it). A lone "\r" and the Unicode line
//! separators are ordinary characters of their line. So an LSP line here is exactly a
//! tree-sitter row. All unit conversions (byte offsets, UTF-16 / UTF-8 columns, tree-sitter
//! points) live in `line_index`.

mod document;
mod line_index;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use document::{Document, Excerpt, LARGE_DOCUMENT, LONG_LINE, Snapshot};

/// How LSP positions count characters within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Columns count UTF-8 bytes.
    Utf8,
    /// Columns count UTF-16 code units: characters outside the BMP (🐍) count 2. LSP's default.
    #[default]
    Utf16,
}

/// A place in a document as LSP gives it: zero-based line, column in the negotiated encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u32,
    pub character: u32,
}

/// A half-open span between two positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

/// One content change of a didChange notification; `range: None` replaces the whole document.
#[derive(Debug, Clone)]
pub struct Change {
    pub range: Option<Range>,
    pub text: String,
}

/// Why one change of a didChange notification was skipped.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EditError {
    #[error(
        "range start {}:{} is after its end {}:{}",
        .start.line, .start.character, .end.line, .end.character
    )]
    StartAfterEnd { start: Position, end: Position },
    /// Inside a UTF-16 surrogate pair, or inside a multi-byte character when counting UTF-8.
    #[error(
        "position {}:{} falls inside a character when counting {encoding:?}",
        .position.line, .position.character
    )]
    InsideCharacter {
        position: Position,
        encoding: Encoding,
    },
}

/// A parser for the bundled Python grammar.
pub fn python_parser() -> tree_sitter::Parser {
    let mut parser = tree_sitter::Parser::new();
    parser
        .set_language(&tree_sitter_python::LANGUAGE.into())
        .expect("the bundled Python grammar is built for this tree-sitter's ABI");
    parser
}

/// Parses text that is not an open document (another file of the workspace, a suggestion in
/// its surroundings, a file given on the command line).
pub fn parse(text: &str) -> tree_sitter::Tree {
    python_parser()
        .parse(text, None)
        .expect("a parser with a language and no cancellation callback always returns a tree")
}

/// All open documents by URI string.
#[derive(Default)]
pub struct Documents {
    open: HashMap<String, Document>,
}

impl Documents {
    /// Opens (or, if the editor reopens it, replaces) a document.
    pub fn open(&mut self, uri: &str, text: &str, version: i32) {
        self.open
            .insert(uri.to_owned(), Document::new(text, version));
    }

    /// None if the document is not open.
    pub fn change(
        &mut self,
        uri: &str,
        changes: &[Change],
        version: i32,
        encoding: Encoding,
    ) -> Option<Vec<EditError>> {
        let document = self.open.get_mut(uri)?;
        Some(document.apply(changes, version, encoding))
    }

    /// Forgets the document and frees its buffer and tree; false if it was not open.
    pub fn close(&mut self, uri: &str) -> bool {
        self.open.remove(uri).is_some()
    }

    pub fn snapshot(&self, uri: &str) -> Option<Snapshot> {
        self.open.get(uri).map(Document::snapshot)
    }

    /// Open documents by URI, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Document)> {
        self.open.iter().map(|(uri, d)| (uri.as_str(), d))
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}
