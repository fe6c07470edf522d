//! Protocol types <-> internal types, in one place.

use std::path::PathBuf;

use tower_lsp_server::gen_lsp_types as lsp;

use crate::documents::{Change, Encoding, Position, Range};

pub fn position(p: lsp::Position) -> Position {
    Position {
        line: p.line,
        character: p.character,
    }
}

pub fn to_position(p: Position) -> lsp::Position {
    lsp::Position {
        line: p.line,
        character: p.character,
    }
}

pub fn range(r: lsp::Range) -> Range {
    Range {
        start: position(r.start),
        end: position(r.end),
    }
}

pub fn change(c: lsp::TextDocumentContentChangeEvent) -> Change {
    match c {
        lsp::TextDocumentContentChangeEvent::TextDocumentContentChangePartial(p) => Change {
            range: Some(range(p.range)),
            text: p.text,
        },
        lsp::TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(w) => Change {
            range: None,
            text: w.text,
        },
    }
}

/// UTF-8 when the client offers it (no conversion at all), else the protocol's default UTF-16.
pub fn negotiate_encoding(params: &lsp::InitializeParams) -> Encoding {
    let offered = params
        .capabilities
        .general
        .as_ref()
        .and_then(|g| g.position_encodings.as_ref());
    match offered {
        Some(kinds) if kinds.contains(&lsp::PositionEncodingKind::UTF8) => Encoding::Utf8,
        _ => Encoding::Utf16,
    }
}

pub fn encoding_kind(e: Encoding) -> lsp::PositionEncodingKind {
    match e {
        Encoding::Utf8 => lsp::PositionEncodingKind::UTF8,
        Encoding::Utf16 => lsp::PositionEncodingKind::UTF16,
    }
}

/// The local path of a `file:` URI.
pub fn file_path(uri: &str) -> Option<PathBuf> {
    url::Url::parse(uri).ok()?.to_file_path().ok()
}

/// The workspace folders the client opened (or its single root), as local paths.
pub fn workspace_roots(params: &lsp::InitializeParams) -> Vec<PathBuf> {
    let folders = match &params.workspace_folders_initialize_params.workspace_folders {
        Some(lsp::WorkspaceFolders::WorkspaceFolderList(list)) => list
            .iter()
            .filter_map(|f| file_path(f.uri.as_ref()))
            .collect(),
        _ => Vec::new(),
    };
    if !folders.is_empty() {
        return folders;
    }
    // Clients that predate workspace folders send only a root.
    #[allow(deprecated)]
    params
        .root_uri
        .as_ref()
        .and_then(|u| file_path(u.as_ref()))
        .into_iter()
        .collect()
}
