//! One suggestion, start to end: decide what to ask for (rest of the line or a block), build the
//! prompt, run the engine with the matching stop rule, and tidy the text. The pure parts are
//! separate functions so they can be tested without a model.

use crate::engine::{self, Engine, GenerationParams, Request, StopPredicate};
use crate::prompt::{self, Budget, Family};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Complete the current line only.
    Line,
    /// Write one or more lines (cursor on an empty line).
    Block,
}

/// Longest block suggestion, in lines.
pub const MAX_BLOCK_LINES: usize = 12;

/// Cursor mid-line (text before it on the line, or code after it) -> the rest of the line;
/// cursor on a blank line -> a block.
pub fn mode_at(line_before: &str, line_after: &str) -> Mode {
    if line_before.trim().is_empty() && line_after.trim().is_empty() {
        Mode::Block
    } else {
        Mode::Line
    }
}

/// Where generation stops: at the newline in line mode; in block mode at a line indented less
/// than `indent` (the block is over), at two blank lines in a row, or after [`MAX_BLOCK_LINES`]
/// lines.
pub fn stop_rule(mode: Mode, indent: usize) -> StopPredicate {
    match mode {
        Mode::Line => Box::new(|text: &str| text.find('\n')),
        Mode::Block => Box::new(move |text: &str| block_end(text, indent)),
    }
}

fn block_end(text: &str, indent: usize) -> Option<usize> {
    let mut offset = 0;
    let mut lines = 0;
    let mut blank_run_start = None;
    // Only complete lines are judged; the last one may still be growing.
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    for line in complete.split_inclusive('\n') {
        let body = line.trim_end();
        let line_indent = body.len() - body.trim_start().len();
        if lines > 0 && !body.is_empty() && line_indent < indent {
            return Some(offset);
        }
        if body.is_empty() {
            let run_start = *blank_run_start.get_or_insert(offset);
            // Two blank lines in a row end a top-level block in Python style.
            if offset > run_start {
                return Some(run_start);
            }
        } else {
            blank_run_start = None;
        }
        lines += 1;
        if lines >= MAX_BLOCK_LINES {
            return Some(offset + line.len());
        }
        offset += line.len();
    }
    None
}

/// Tidies generated text: no trailing whitespace, and in line mode no repetition of the text that
/// already follows the cursor (e.g. a closing bracket).
pub fn postprocess(text: &str, mode: Mode, line_after: &str) -> String {
    let mut out = text.trim_end().to_owned();
    if mode == Mode::Line {
        let after = line_after.trim_end();
        if !after.is_empty() && out.ends_with(after) {
            out.truncate(out.len() - after.len());
            out.truncate(out.trim_end().len());
        }
    }
    out
}

/// A document and a cursor in it (byte offset on a char boundary).
pub struct Cursor<'a> {
    pub text: &'a str,
    pub offset: usize,
}

impl Cursor<'_> {
    fn line_before(&self) -> &str {
        let start = self.text[..self.offset].rfind('\n').map_or(0, |i| i + 1);
        &self.text[start..self.offset]
    }

    fn line_after(&self) -> &str {
        let rest = &self.text[self.offset..];
        &rest[..rest.find('\n').unwrap_or(rest.len())]
    }
}

/// Everything the engine needs for one suggestion.
pub struct Plan {
    pub request: Request,
    pub mode: Mode,
    pub line_after: String,
}

pub fn plan(
    tokenizer: &engine::Tokenizer,
    family: &Family,
    cursor: &Cursor,
    budget: Budget,
    params: GenerationParams,
) -> engine::Result<Plan> {
    let line_before = cursor.line_before();
    let line_after = cursor.line_after();
    let mode = mode_at(line_before, line_after);
    let indent = line_before.len() - line_before.trim_start().len();
    let prompt = prompt::build(
        tokenizer,
        family,
        &cursor.text[..cursor.offset],
        &cursor.text[cursor.offset..],
        budget,
    )?;
    Ok(Plan {
        request: Request {
            prompt,
            params,
            stop: Some(stop_rule(mode, indent)),
        },
        mode,
        line_after: line_after.to_owned(),
    })
}

/// A suggestion for the editor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    pub text: String,
    pub mode: Mode,
}

/// Everything a suggestion request needs, owned so it can move to a worker thread.
pub struct Ask {
    pub text: String,
    pub offset: usize,
    pub budget: Budget,
    pub params: GenerationParams,
}

/// Async: one suggestion, or `None` when cancelled (by a newer request or the client). Prompt
/// building runs on a blocking worker and generation on the engine thread, never on the caller's
/// async runtime.
pub async fn suggest(
    engine: std::sync::Arc<Engine>,
    ask: Ask,
    cancel: engine::CancelToken,
) -> engine::Result<Option<Suggestion>> {
    let tokenizer = engine.tokenizer().clone();
    let plan = tokio::task::spawn_blocking(move || {
        let family = Family::detect(&tokenizer);
        let cursor = Cursor {
            text: &ask.text,
            offset: ask.offset,
        };
        plan(&tokenizer, &family, &cursor, ask.budget, ask.params)
    })
    .await
    .map_err(|e| engine::Error::Panicked(e.to_string()))??;
    if cancel.is_cancelled() {
        return Ok(None);
    }
    let mut generation = engine.generate_with(plan.request, cancel)?;
    let finished = generation.finish().await?;
    if finished.reason == engine::FinishReason::Cancelled {
        return Ok(None);
    }
    Ok(Some(Suggestion {
        text: postprocess(&finished.text, plan.mode, &plan.line_after),
        mode: plan.mode,
    }))
}

/// Blocking: one suggestion for `cursor` from `engine` (for the command line; the language server
/// drives the same steps asynchronously).
pub fn complete(
    engine: &Engine,
    cursor: &Cursor,
    params: GenerationParams,
) -> engine::Result<String> {
    let tokenizer = engine.tokenizer();
    let family = Family::detect(tokenizer);
    let plan = plan(tokenizer, &family, cursor, Budget::default(), params)?;
    let finished = engine.generate(plan.request)?.wait()?;
    Ok(postprocess(&finished.text, plan.mode, &plan.line_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a fixture at its `$0` cursor marker.
    fn at_cursor(fixture: &str) -> (String, String) {
        let (before, after) = fixture.split_once("$0").expect("fixture has a $0 cursor");
        let line_before = before.rsplit('\n').next().unwrap_or("").to_owned();
        let line_after = after.split('\n').next().unwrap_or("").to_owned();
        (line_before, line_after)
    }

    #[test]
    fn mode_follows_the_cursor_line() {
        let cases = [
            ("def add(a, b):\n    return $0\n", Mode::Line),
            ("x = foo($0)\n", Mode::Line),
            ("def f():\n    $0\n", Mode::Block),
            ("def f():\n$0", Mode::Block),
            ("$0print(1)\n", Mode::Line),
        ];
        for (fixture, expected) in cases {
            let (before, after) = at_cursor(fixture);
            assert_eq!(mode_at(&before, &after), expected, "{fixture:?}");
        }
    }

    #[test]
    fn line_mode_stops_at_newline() {
        let mut stop = stop_rule(Mode::Line, 4);
        assert_eq!(stop("a + b"), None);
        assert_eq!(stop("a + b\n    x"), Some(5));
    }

    #[test]
    fn block_mode_stops_at_dedent() {
        let mut stop = stop_rule(Mode::Block, 4);
        let text = "if x:\n        return 1\n    return 2\nprint(3)\n";
        // The line "print(3)" is indented less than the cursor's 4 columns.
        assert_eq!(
            stop(text),
            Some("if x:\n        return 1\n    return 2\n".len())
        );
        assert_eq!(stop("if x:\n        ret"), None);
    }

    #[test]
    fn block_mode_stops_at_two_blank_lines() {
        let mut stop = stop_rule(Mode::Block, 0);
        assert_eq!(stop("x = 1\n\ny = 2\n"), None);
        assert_eq!(stop("x = 1\n\n\ndef g():\n"), Some("x = 1\n".len()));
    }

    #[test]
    fn block_mode_caps_lines() {
        let mut stop = stop_rule(Mode::Block, 0);
        let text = "x = 1\n".repeat(MAX_BLOCK_LINES + 3);
        assert_eq!(stop(&text), Some(MAX_BLOCK_LINES * "x = 1\n".len()));
    }

    #[test]
    fn postprocess_drops_text_already_after_the_cursor() {
        assert_eq!(postprocess("a, b)  \n", Mode::Line, ")"), "a, b");
        assert_eq!(postprocess("a + b", Mode::Line, ""), "a + b");
        assert_eq!(postprocess("    x = 1\n\n", Mode::Block, ""), "    x = 1");
    }
}
