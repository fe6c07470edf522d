//! What the model should see for one suggestion, and what kind of suggestion to ask for. Pure:
//! a snapshot's text and syntax tree plus a cursor in, a [`Context`] out; token counts come from
//! a counting function the caller supplies (the model's tokenizer), files of the workspace from
//! a [`Workspace`] the caller supplies. No IO, no model, no protocol types.
//!
//! - Windows: the text before and after the cursor, cut at line boundaries to a token budget,
//!   each cut moved to the nearest statement boundary of a scope around the cursor (so the window
//!   never starts inside a neighbouring function), with the file's imports kept when the prefix
//!   window no longer reaches them, the headers of the definitions it starts inside, and (for a
//!   window used once) the first lines of a docstring it lost.
//! - Mode: the rest of the line, one statement, or a block, decided from the cursor's line and
//!   the tree around it.
//! - Related code: signatures of names used near the cursor that come from other files
//!   (`related.rs`).

mod related;
#[cfg(test)]
mod tests;

use tree_sitter::{Node, Tree};

pub use related::{Related, Workspace, module_candidates};

/// What kind of text the cursor asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text before or after the cursor on its line: complete this line only.
    Line,
    /// A blank line inside a block that goes on below: one statement (a compound statement
    /// brings its body, unless the body is already there).
    Statement,
    /// A blank line that opens an empty body, ends a block or the file: several lines, until the
    /// indentation returns to the parent level or the block is complete.
    Block,
}

/// Token budgets of the parts of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub prefix_tokens: usize,
    pub suffix_tokens: usize,
    /// Signatures from other files.
    pub related_tokens: usize,
    /// For a prompt used once (the small first window): the innermost definition's docstring,
    /// when the prefix window starts below it, keeps its first lines in the room the window's
    /// cut left.
    pub lost_docstring: bool,
}

impl Default for Budget {
    /// Chosen from the engine's speed on 2 cores (about 200 prompt tokens/s cold): a full
    /// window is about 1,700 tokens (8 s cold), and once cached, a keystroke recomputes only the
    /// tokens after the edit. Most of a function and its neighbours fit in 1,024 tokens.
    fn default() -> Self {
        Self {
            prefix_tokens: 1024,
            suffix_tokens: 256,
            related_tokens: 384,
            lost_docstring: false,
        }
    }
}

/// The document around one cursor.
pub struct Source<'a> {
    pub text: &'a str,
    pub tree: &'a Tree,
    /// Byte offset of the cursor (a char boundary).
    pub offset: usize,
    /// The file's path relative to its workspace (`pkg/mod.py`), if it has one.
    pub path: Option<&'a str>,
}

/// Everything the prompt builder and post-processing need to know about one suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub mode: Mode,
    /// Text before the cursor: the window (preceded by the imports it no longer reaches).
    pub prefix: String,
    /// Text after the cursor: the window.
    pub suffix: String,
    /// The file's workspace-relative path (a default name when it has none).
    pub path: String,
    /// Signatures from other files, most relevant last (nearest the current file).
    pub related: Vec<Related>,
    /// The cursor's line before and after the cursor.
    pub line_before: String,
    pub line_after: String,
    /// Columns of indentation the cursor's statement has.
    pub indent: usize,
    /// The first non-blank line after the cursor's line, if any.
    pub next_line: Option<String>,
    /// The last non-blank line before the cursor's line, if any.
    pub previous_line: Option<String>,
    /// The cursor is in a function body that has nothing yet but a docstring (a block mode
    /// that writes a whole body).
    pub empty_body: bool,
}

/// The name a file without a path goes by in prompts.
pub const UNNAMED: &str = "main.py";

/// Import statements are kept whole only up to this share of the prefix budget.
const IMPORTS_SHARE: usize = 4;

/// Builds the context for `source`: windows, mode and related code.
pub fn build(
    source: &Source,
    budget: &Budget,
    count: &dyn Fn(&str) -> usize,
    workspace: &dyn Workspace,
) -> Context {
    let text = source.text;
    let offset = text.floor_char_boundary(source.offset);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line_before = &text[line_start..offset];
    let line_after = text[offset..line_end].trim_end_matches('\r');
    // The last non-blank line above, with where it starts.
    let above = text[..line_start].trim_end();
    let previous = (!above.is_empty()).then(|| {
        let start = above.rfind('\n').map_or(0, |i| i + 1);
        (start, &above[start..])
    });
    let previous_line = previous.map(|(_, line)| line);
    let next_line = text[line_end..].lines().find(|l| !l.trim().is_empty());
    let mode = mode_at(source.tree, line_before, line_after, previous, next_line);
    let indent = indentation(line_before);
    let empty_body = mode == Mode::Block && empty_body(source.tree, text, line_start);

    // The scopes are found from the last line above, not the cursor: the line being typed
    // parses differently from keystroke to keystroke, and the windows (so the prompt's cached
    // tokens) should not move with it.
    let scope_probe = previous.map_or(offset, |(start, line)| start + line.len() - 1);
    let ends = statement_ends(source.tree, scope_probe);
    let imports = imports_before(source.tree);
    let (prefix_start, imports_text) =
        prefix_window(source.tree, text, line_start, &imports, budget, count);
    let suffix_end = suffix_window(text, line_end, &ends, budget.suffix_tokens, count);
    let mut prefix = imports_text;
    prefix.push_str(&text[prefix_start..offset]);
    let suffix = text[offset..suffix_end].to_owned();

    let path = source.path.unwrap_or(UNNAMED);
    let related = related::gather(source, path, budget.related_tokens, count, workspace);
    Context {
        mode,
        prefix,
        suffix,
        path: path.to_owned(),
        related,
        line_before: line_before.to_owned(),
        line_after: line_after.to_owned(),
        indent,
        next_line: next_line.map(str::to_owned),
        previous_line: previous_line.map(str::to_owned),
        empty_body,
    }
}

/// Whether the code before the line at `line_start` ends with a function's header, or with the
/// docstring that is its body's first statement.
fn empty_body(tree: &Tree, text: &str, line_start: usize) -> bool {
    let before = text[..line_start].trim_end();
    let last_line = &before[line_start_of(text, before.len())..];
    let header = last_line.trim_start();
    if before.ends_with(':') && (header.starts_with("def ") || header.starts_with("async def ")) {
        return true;
    }
    if !(before.ends_with("\"\"\"") || before.ends_with("'''")) {
        return false;
    }
    let end = before.len();
    let Some(mut node) = tree.root_node().descendant_for_byte_range(end - 1, end) else {
        return false;
    };
    while node.kind() != "string" {
        match node.parent() {
            Some(p) => node = p,
            None => return false,
        }
    }
    let statement = node.parent().filter(|p| p.kind() == "expression_statement");
    let block = statement
        .and_then(|s| s.parent())
        .filter(|b| b.kind() == "block");
    let function = block.and_then(|b| b.parent());
    match (statement, block, function) {
        (Some(statement), Some(block), Some(function)) => {
            function.kind() == "function_definition"
                && block.named_child(0) == Some(statement)
                && node.end_byte() == end
        }
        _ => false,
    }
}

/// Columns of leading whitespace (a tab counts as one).
pub fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches([' ', '\t']).len()
}

/// Line for text around the cursor; on a blank line, a statement if the block goes on below
/// and the line above does not open an empty body, else a block.
fn mode_at(
    tree: &Tree,
    line_before: &str,
    line_after: &str,
    previous: Option<(usize, &str)>,
    next_line: Option<&str>,
) -> Mode {
    if !line_before.trim().is_empty() || !line_after.trim().is_empty() {
        return Mode::Line;
    }
    let next_indent = next_line.map(indentation);
    if let Some((start, line)) = previous
        && opens_block(tree, start, line)
    {
        let body_below = next_indent.is_some_and(|n| n > indentation(line));
        return if body_below {
            Mode::Statement
        } else {
            Mode::Block
        };
    }
    match next_indent {
        Some(n) if n >= indentation(line_before) => Mode::Statement,
        _ => Mode::Block,
    }
}

/// Compound statements whose header ends with the colon that opens a body.
const COMPOUND: &[&str] = &[
    "function_definition",
    "class_definition",
    "if_statement",
    "elif_clause",
    "else_clause",
    "for_statement",
    "while_statement",
    "with_statement",
    "try_statement",
    "except_clause",
    "finally_clause",
    "match_statement",
    "case_clause",
];

/// Whether `line` (starting at byte `start`) ends with the colon of a compound statement's
/// header. Asks the tree first; when the tree has no such colon there (an empty body parses as
/// an error), a trailing colon outside a comment decides.
fn opens_block(tree: &Tree, start: usize, line: &str) -> bool {
    let code = line.trim_end();
    let Some(colon) = code.rfind(':') else {
        return false;
    };
    let at = start + colon;
    if let Some(node) = tree.root_node().descendant_for_byte_range(at, at + 1)
        && node.kind() == ":"
        && let Some(parent) = node.parent()
    {
        if COMPOUND.contains(&parent.kind()) {
            return true;
        }
        if !parent.is_error() && !parent.has_error() {
            // A colon of a slice, a dict or an annotation.
            return false;
        }
    }
    colon + 1 == code.len() && !code.trim_start().starts_with('#')
}

/// Where statements end in the scopes around `offset`: the children of the module and of every
/// block that contains it, sorted.
fn statement_ends(tree: &Tree, offset: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut node = tree
        .root_node()
        .descendant_for_byte_range(offset, offset)
        .unwrap_or(tree.root_node());
    loop {
        if matches!(node.kind(), "module" | "block") {
            let mut cursor = node.walk();
            ends.extend(node.named_children(&mut cursor).map(|c| c.end_byte()));
        }
        match node.parent() {
            Some(parent) => node = parent,
            None => break,
        }
    }
    ends.sort_unstable();
    ends
}

/// Top-level import statements, in order.
fn imports_before(tree: &Tree) -> Vec<Node<'_>> {
    let is_import = |n: &Node| {
        matches!(
            n.kind(),
            "import_statement" | "import_from_statement" | "future_import_statement"
        )
    };
    let root = tree.root_node();
    let mut out = Vec::new();
    let mut cursor = root.walk();
    for child in root.named_children(&mut cursor) {
        if is_import(&child) {
            out.push(child);
        } else if child.kind() == "ERROR" {
            // A half-typed line can leave much of the file in one error node; its imports at
            // the left margin are still the file's imports (and the prompt should not change
            // from keystroke to keystroke with the parse).
            let mut inner = child.walk();
            out.extend(
                child
                    .named_children(&mut inner)
                    .filter(|n| is_import(n) && n.start_position().column == 0),
            );
        }
    }
    out
}

/// Start of the prefix window, and what to put before it: the imports it no longer reaches
/// (each on its own line), the headers of the definitions it starts inside and, with
/// [`Budget::lost_docstring`], the first lines of the innermost one's docstring.
fn prefix_window(
    tree: &Tree,
    text: &str,
    line_start: usize,
    imports: &[Node],
    budget: &Budget,
    count: &dyn Fn(&str) -> usize,
) -> (usize, String) {
    let Some(start) = lines_upward(text, line_start, budget.prefix_tokens, count) else {
        return (0, String::new());
    };
    // The imports the window lost, within their share of the budget.
    let mut imports_text = String::new();
    let mut imports_used = 0;
    for import in imports.iter().filter(|n| n.end_byte() <= start) {
        let Some(statement) = text.get(import.start_byte()..import.end_byte()) else {
            continue;
        };
        let cost = count(statement) + 1;
        if imports_used + cost > budget.prefix_tokens / IMPORTS_SHARE {
            break;
        }
        imports_used += cost;
        imports_text.push_str(statement);
        imports_text.push('\n');
    }
    let mut start = start;
    if imports_used > 0 {
        imports_text.push('\n');
        start = lines_upward(
            text,
            line_start,
            budget.prefix_tokens.saturating_sub(imports_used + 1),
            count,
        )
        .unwrap_or(0);
    }
    // Never start inside a statement of a scope around the cursor: move down to the next
    // line that starts one, if one comes before the cursor's line.
    let settle =
        |start: usize| scope_statement_from(tree, text, start, line_start).unwrap_or(start);
    start = settle(start);
    // The headers of the functions and classes the window starts inside, so the model still
    // sees their names and parameters (the window then reads as valid code, less the first
    // statements).
    let (mut headers, mut innermost) = headers_around(text, start);
    if !headers.is_empty() {
        let used = imports_used + count(&headers);
        if let Some(later) = lines_upward(
            text,
            line_start,
            budget.prefix_tokens.saturating_sub(used + 1),
            count,
        ) {
            start = settle(later.max(start));
        }
        (headers, innermost) = headers_around(text, start);
    }
    // A window used once (the small first one) puts the room its cut left (a statement it could
    // not start inside, often the docstring itself, or part of a line) to use: the first lines
    // of the innermost definition's docstring, what the code is for, when the window starts in
    // that definition's body (not deeper, where the docstring would break the indentation). In a
    // window that stays cached the room shrinks with every line added below, so the docstring
    // would change the prompt's start from line to line.
    let window_indent = text[start..line_start]
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(indentation);
    if let (true, Some(header_end), Some(indent)) =
        (budget.lost_docstring, innermost, window_indent)
    {
        let room = || {
            let used = imports_used
                + count(&headers)
                + text[start..line_start]
                    .split_inclusive('\n')
                    .map(count)
                    .sum::<usize>();
            budget.prefix_tokens.saturating_sub(used + 1)
        };
        let kept = docstring(&text[..start], header_end, indent, room, count);
        headers.push_str(&kept);
    }
    imports_text.push_str(&headers);
    (start, imports_text)
}

/// Lines looked at above a window for the headers around it.
const HEADER_SCAN_LINES: usize = 2000;

/// The header lines (`def f(x):`, `class C(B):`) of the definitions whose bodies hold the line
/// at `start` but start before it, outermost first, and where the innermost one's header ends.
/// Found from the indentation of the text above `start`, not from the tree: a half-typed line
/// below can turn a whole definition into an error node from one keystroke to the next, and the
/// prompt's start should not move with it.
fn headers_around(text: &str, start: usize) -> (String, Option<usize>) {
    let Some(first) = text[start..].lines().find(|l| !l.trim().is_empty()) else {
        return (String::new(), None);
    };
    let mut innermost = None;
    let mut limit = indentation(first);
    let mut headers = Vec::new();
    let above = &text[..start];
    let mut end = above.len();
    let mut scanned = 0;
    while end > 0 && limit > 0 && scanned < HEADER_SCAN_LINES {
        let body_end = end - usize::from(above[..end].ends_with('\n'));
        let begin = above[..body_end].rfind('\n').map_or(0, |i| i + 1);
        let line = &above[begin..body_end];
        end = begin;
        scanned += 1;
        let indent = indentation(line);
        if line.trim().is_empty() || indent >= limit {
            continue;
        }
        limit = indent;
        let code = line.trim_start();
        if !["def ", "async def ", "class "]
            .iter()
            .any(|k| code.starts_with(k))
        {
            continue;
        }
        // Through the line that ends the header with its colon.
        let mut header = String::new();
        let mut header_end = begin;
        for l in above[begin..].split_inclusive('\n').take(8) {
            header.push_str(l.trim_end());
            header.push('\n');
            header_end += l.len();
            // The colon may come before a comment (`def f(x):  # noqa`).
            let code = l.split_once('#').map_or(l, |(code, _)| code);
            if l.trim_end().ends_with(':') || code.trim_end().ends_with(':') {
                innermost = innermost.or(Some(header_end));
                headers.push(header);
                break;
            }
        }
    }
    headers.reverse();
    (headers.concat(), innermost)
}

/// The docstring that starts the body after `header_end` (the end of a definition's header), if
/// it is at `indent` and ends within `above`: whole if it fits in `tokens` (asked only when there
/// is one), else its first lines that do with the quotes closed after them; empty if there is
/// none or not even one line of its text fits.
fn docstring(
    above: &str,
    header_end: usize,
    indent: usize,
    tokens: impl FnOnce() -> usize,
    count: &dyn Fn(&str) -> usize,
) -> String {
    let body = &above[header_end..];
    let Some(first) = body.lines().find(|l| !l.trim().is_empty()) else {
        return String::new();
    };
    let opening = first.trim_start().trim_start_matches(['r', 'R', 'u', 'U']);
    let Some(quote) = ["\"\"\"", "'''"]
        .into_iter()
        .find(|q| opening.starts_with(q))
    else {
        return String::new();
    };
    if indentation(first) != indent {
        return String::new();
    }
    let from = header_end + body.find(first).unwrap_or(0);
    let after_open = from + (first.len() - opening.len()) + quote.len();
    let Some(close) = closing_quote(&above[after_open..], quote) else {
        return String::new();
    };
    let close_end = after_open + close + quote.len();
    let to = above[close_end..]
        .find('\n')
        .map_or(above.len(), |i| close_end + i + 1);
    let whole = &above[from..to];
    let tokens = tokens();
    let closing = format!("{}{quote}\n", &first[..indent]);
    let mut kept = String::new();
    let mut used = count(&closing);
    for line in whole.split_inclusive('\n') {
        let cost = count(line);
        if used + cost > tokens {
            // Cut: only if some of its text is kept, not just the opening quotes.
            let text = kept.trim_start().trim_start_matches(['r', 'R', 'u', 'U']);
            if text.strip_prefix(quote).is_none_or(|t| t.trim().is_empty()) {
                return String::new();
            }
            kept.push_str(&closing);
            return kept;
        }
        used += cost;
        kept.push_str(line);
    }
    kept
}

/// Where `quote` closes a string in `text` (which starts inside it): its first occurrence not
/// escaped by a backslash.
fn closing_quote(text: &str, quote: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(quote) {
        let at = from + i;
        let backslashes = text[..at].bytes().rev().take_while(|&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The first line from `start` on, before `line_start`, that starts a statement of a scope
/// around the cursor: a statement (a child of a block or the module) no line below it, down to
/// the cursor's, is indented less than. Judged from the lines above the cursor's, so the answer
/// stays the same while the cursor's line is typed (and parses differently each keystroke).
fn scope_statement_from(tree: &Tree, text: &str, start: usize, line_start: usize) -> Option<usize> {
    let cursor_indent = indentation(
        &text[line_start
            ..text[line_start..]
                .find('\n')
                .map_or(text.len(), |i| line_start + i)],
    );
    // (line start, indentation) of the non-blank lines, top down.
    let mut lines: Vec<(usize, usize)> = Vec::new();
    let mut at = start;
    for line in text[start..line_start].split_inclusive('\n') {
        if !line.trim().is_empty() {
            lines.push((at, indentation(line)));
        }
        at += line.len();
    }
    let mut lowest_below = cursor_indent;
    let mut candidates = Vec::new();
    for &(begin, indent) in lines.iter().rev() {
        if indent <= lowest_below {
            candidates.push(begin + indent);
        }
        lowest_below = lowest_below.min(indent);
    }
    candidates.into_iter().rev().find_map(|first| {
        let mut node = tree.root_node().descendant_for_byte_range(first, first)?;
        loop {
            let parent = node.parent()?;
            if parent.start_byte() != first || matches!(parent.kind(), "block" | "module") {
                break;
            }
            node = parent;
        }
        let parent = node.parent()?;
        (node.start_byte() == first
            && node.is_named()
            && matches!(parent.kind(), "block" | "module" | "ERROR"))
        .then(|| line_start_of(text, first))
    })
}

/// Where whole lines above `line_start` that fit `budget` begin; `None` if all of them fit.
fn lines_upward(
    text: &str,
    line_start: usize,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Option<usize> {
    let mut start = line_start;
    let mut used = 0;
    for line in text[..line_start].split_inclusive('\n').rev() {
        let cost = count(line);
        if used + cost > budget {
            return Some(start);
        }
        used += cost;
        start -= line.len();
    }
    None
}

/// End of the suffix window: whole lines after the cursor's line within `budget`, the cut moved
/// up to the end of a statement of a scope around the cursor.
fn suffix_window(
    text: &str,
    line_end: usize,
    ends: &[usize],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> usize {
    let mut end = line_end;
    let mut used = 0;
    let mut reached_end = true;
    for line in text[line_end..].split_inclusive('\n') {
        let cost = count(line);
        if used + cost > budget {
            reached_end = false;
            break;
        }
        used += cost;
        end += line.len();
    }
    if reached_end {
        return text.len();
    }
    if let Some(&b) = ends.iter().rev().find(|&&b| b <= end)
        && b > line_end
    {
        // Through the end of the line the statement ends on.
        end = text[b..]
            .find('\n')
            .map_or(text.len(), |i| b + i + 1)
            .min(end);
    }
    end
}

pub(super) fn line_start_of(text: &str, offset: usize) -> usize {
    text[..offset].rfind('\n').map_or(0, |i| i + 1)
}
