//! From generated text to what the editor shows. Pure: the [`Context`] a suggestion was asked
//! for and the model's text in, decisions out.
//!
//! - [`stop_rule`]: when generation is done, judged on the text so far (the end of the line;
//!   the end of one statement, compound statements with their body; the end of a block: a
//!   dedent below the cursor, a completed `return`/`raise`, two blank lines, a repeat of the code
//!   that follows, a line cap).
//! - [`tidy`]: trailing whitespace, indentation style, text the document already has after the
//!   cursor (closing brackets and quotes, the next line), empty and repeated suggestions, and a
//!   syntax check with tree-sitter (a suggestion may not add parse errors to its surroundings;
//!   it is cut to its longest prefix of whole lines that does not, or dropped).

#[cfg(test)]
mod tests;

use tree_sitter::Tree;

use crate::context::{Context, Mode, indentation};

/// Longest block suggestion, in lines.
pub const MAX_BLOCK_LINES: usize = 32;

/// Called with all generated text so far; `Some(n)` keeps the first `n` bytes and stops.
pub type Stop = Box<dyn FnMut(&str) -> Option<usize> + Send>;

/// The stop rule for a context's mode.
pub fn stop_rule(context: &Context) -> Stop {
    let indent = context.indent;
    let body_below = context.next_line.as_deref().map(indentation);
    let next_line = context.next_line.as_deref().map(|l| l.trim().to_owned());
    match context.mode {
        Mode::Line => Box::new(|text: &str| text.find('\n')),
        Mode::Statement => Box::new(move |text: &str| statement_end(text, indent, body_below)),
        Mode::Block => Box::new(move |text: &str| block_end(text, indent, next_line.as_deref())),
    }
}

/// What the lexer carries from one line to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Lexer {
    /// Open brackets.
    depth: i32,
    /// Inside a triple-quoted string: its quote character.
    triple: Option<u8>,
}

impl Lexer {
    /// Updates the state over one line; returns whether the line ends with a colon outside
    /// brackets, strings and comments (a compound statement's header).
    fn line(&mut self, line: &str) -> bool {
        let bytes = line.as_bytes();
        let mut i = 0;
        let mut last_code = None;
        while i < bytes.len() {
            let c = bytes[i];
            if let Some(q) = self.triple {
                if bytes[i..].starts_with(&[q, q, q]) {
                    self.triple = None;
                    i += 3;
                } else {
                    i += if c == b'\\' { 2 } else { 1 };
                }
                continue;
            }
            match c {
                b'#' => break,
                b'\'' | b'"' => {
                    if bytes[i..].starts_with(&[c, c, c]) {
                        self.triple = Some(c);
                        i += 3;
                        last_code = Some(c);
                        continue;
                    }
                    // A one-line string: skip to its closing quote (or the line's end).
                    i += 1;
                    while i < bytes.len() && bytes[i] != c {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    last_code = Some(c);
                }
                b'(' | b'[' | b'{' => {
                    self.depth += 1;
                    last_code = Some(c);
                }
                b')' | b']' | b'}' => {
                    self.depth = (self.depth - 1).max(0);
                    last_code = Some(c);
                }
                b' ' | b'\t' | b'\r' => {}
                _ => last_code = Some(c),
            }
            i += 1;
        }
        self.depth == 0 && self.triple.is_none() && last_code == Some(b':')
    }

    /// Whether the next line starts a new logical line (not a continuation).
    fn at_statement_start(&self) -> bool {
        self.depth == 0 && self.triple.is_none()
    }
}

/// The complete lines of `text` (each with its end), the last, still growing one left out.
fn complete_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.split_inclusive('\n').scan(0, |offset, line| {
        let start = *offset;
        *offset += line.len();
        Some((start, line))
    })
}

/// One statement at the cursor: ends with its first logical line, unless that line opens a
/// body the document does not already have below (`body_below` is the next line's indentation),
/// in which case the body comes too, up to the first line indented no deeper than the cursor.
fn statement_end(text: &str, indent: usize, next_indent: Option<usize>) -> Option<usize> {
    let mut lexer = Lexer::default();
    let mut in_body = false;
    for (start, line) in complete_lines(text) {
        let body = line.trim_end();
        let statement_start = lexer.at_statement_start();
        if in_body && statement_start && !body.trim().is_empty() {
            // The first line generated has no indentation of its own: the cursor has it.
            if indentation(body) <= indent {
                return Some(start);
            }
        }
        let header = lexer.line(body);
        if !lexer.at_statement_start() {
            continue;
        }
        if !in_body {
            if header && next_indent.is_none_or(|n| n <= indent) {
                in_body = true;
                continue;
            }
            // The statement is complete: keep it without its newline.
            return Some(start + body.len());
        }
    }
    None
}

/// A block at the cursor's indentation: ends before a line indented less than the cursor, at a
/// completed `return`/`raise`/`continue`/`break`/`pass` at the cursor's own level, before two
/// blank lines or a line repeating `next_line` (the code after the cursor), or after
/// [`MAX_BLOCK_LINES`] lines.
fn block_end(text: &str, indent: usize, next_line: Option<&str>) -> Option<usize> {
    let mut lexer = Lexer::default();
    let mut lines = 0;
    let mut blank_run_start = None;
    for (start, line) in complete_lines(text) {
        let body = line.trim_end();
        let statement_start = lexer.at_statement_start();
        let first = start == 0;
        let line_indent = if first { indent } else { indentation(body) };
        if statement_start && !body.trim().is_empty() {
            if !first && line_indent < indent {
                return Some(start);
            }
            if !first && next_line.is_some_and(|n| !n.is_empty() && body.trim() == n) {
                return Some(start);
            }
        }
        if body.trim().is_empty() {
            let run_start = *blank_run_start.get_or_insert(start);
            if start > run_start {
                return Some(run_start);
            }
        } else {
            blank_run_start = None;
        }
        lexer.line(body);
        lines += 1;
        let ends_block = statement_start
            && lexer.at_statement_start()
            && indent > 0
            && line_indent == indent
            && ["return", "raise", "continue", "break", "pass"]
                .iter()
                .any(|k| keyword_starts(body.trim_start(), k));
        if ends_block || lines >= MAX_BLOCK_LINES {
            return Some(start + body.len());
        }
    }
    None
}

fn keyword_starts(line: &str, keyword: &str) -> bool {
    line.strip_prefix(keyword).is_some_and(|rest| {
        rest.is_empty() || !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

/// Characters that close something the cursor's line may already close.
const CLOSERS: &[char] = &[')', ']', '}', '"', '\'', ':', ',', ';'];

/// The suggestion as the editor should show it; empty means "show nothing".
pub fn tidy(text: &str, context: &Context) -> String {
    // The stop rule judges complete lines only; generation may end in the middle of one.
    let complete = format!("{text}\n");
    let text = match stop_rule(context)(&complete) {
        Some(n) => &text[..n.min(text.len())],
        None => text,
    };
    let mut lines: Vec<String> = text.split('\n').map(|l| l.trim_end().to_owned()).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return String::new();
    }
    // The cursor already stands at the statement's indentation.
    if context.mode != Mode::Line && !context.line_before.is_empty() {
        let first = lines[0].trim_start().to_owned();
        lines[0] = first;
    }
    let unit = indent_unit(&context.prefix, &context.suffix);
    for line in lines.iter_mut().skip(1) {
        *line = reindent(line, &unit);
    }
    // Lines the document already has right after the cursor.
    if context.mode != Mode::Line
        && let Some(next) = context.next_line.as_deref().map(str::trim)
        && !next.is_empty()
        && let Some(at) = lines.iter().skip(1).position(|l| l.trim() == next)
    {
        lines.truncate(at + 1);
    }
    let mut out = lines.join("\n");
    if context.mode == Mode::Line {
        out = drop_line_overlap(&out, &context.line_after);
    }
    if out.trim().is_empty() {
        return String::new();
    }
    let whole_line = format!("{}{}", context.line_before, out);
    if !out.contains('\n')
        && context
            .previous_line
            .as_deref()
            .is_some_and(|p| p.trim() == whole_line.trim())
    {
        return String::new();
    }
    syntax_cut(&out, context)
}

/// `text` without the part the cursor's line already has after the cursor: all of it, or the
/// closing brackets and quotes the suggestion repeats.
fn drop_line_overlap(text: &str, line_after: &str) -> String {
    let after = line_after.trim();
    if after.is_empty() {
        return text.to_owned();
    }
    if let Some(kept) = text.strip_suffix(after) {
        // Not when it would split a word: `max` before `x` stays `max`.
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let splits_word = kept.ends_with(word) && after.starts_with(word);
        if !splits_word {
            return kept.trim_end().to_owned();
        }
    }
    // The longest run of closers both at the end of the suggestion and the start of the line's
    // rest.
    let closers: String = after.chars().take_while(|c| CLOSERS.contains(c)).collect();
    for n in (1..=closers.len()).rev() {
        if let Some(kept) = text.strip_suffix(&closers[..n]) {
            return kept.to_owned();
        }
    }
    text.to_owned()
}

/// The document's indentation unit: a tab if its lines indent with tabs, else spaces.
fn indent_unit(prefix: &str, suffix: &str) -> String {
    let tabs = prefix
        .lines()
        .chain(suffix.lines())
        .filter(|l| l.starts_with('\t'))
        .count();
    let spaces = prefix
        .lines()
        .chain(suffix.lines())
        .filter(|l| l.starts_with(' '))
        .count();
    if tabs > spaces {
        "\t".into()
    } else {
        "    ".into()
    }
}

/// The line with its leading tabs or spaces in the document's style.
fn reindent(line: &str, unit: &str) -> String {
    let indent = &line[..indentation(line)];
    let rest = &line[indent.len()..];
    if unit == "\t" && indent.contains(' ') {
        let width: usize = indent.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum();
        format!("{}{}{rest}", "\t".repeat(width / 4), " ".repeat(width % 4))
    } else if unit != "\t" && indent.contains('\t') {
        let width: usize = indent.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum();
        format!("{}{rest}", " ".repeat(width))
    } else {
        line.to_owned()
    }
}

/// The suggestion, or its longest prefix of whole lines, that adds no parse errors to the
/// context windows; empty if none does.
fn syntax_cut(text: &str, context: &Context) -> String {
    let mut parser = crate::documents::python_parser();
    let mut errors = |middle: &str| -> usize {
        let document = format!("{}{middle}{}", context.prefix, context.suffix);
        parser
            .parse(&document, None)
            .as_ref()
            .map_or(0, count_errors)
    };
    let before = errors("");
    if errors(text) <= before {
        return text.to_owned();
    }
    let ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
    for &end in ends.iter().rev() {
        let candidate = text[..end].trim_end();
        if !candidate.trim().is_empty() && errors(candidate) <= before {
            return candidate.to_owned();
        }
    }
    String::new()
}

/// ERROR and MISSING nodes in the tree.
fn count_errors(tree: &Tree) -> usize {
    let root = tree.root_node();
    if !root.has_error() {
        return 0;
    }
    let mut count = 0;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.is_error() || node.is_missing() {
            count += 1;
        }
        if node.has_error() {
            let mut cursor = node.walk();
            stack.extend(node.children(&mut cursor));
        }
    }
    count
}
