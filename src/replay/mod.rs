//! `pyfill replay`: the keystroke-latency benchmark. A person retypes lines of real Python files
//! through the language server, as an editor would send it: the file is opened with one line
//! emptied (its indentation kept), asked for a suggestion at once (the cold request), then the
//! line is typed back one character at a time, a fixed interval apart, with an inline completion
//! request after every keystroke that cancels the one before. After the last key of each word the
//! typist pauses and waits for the answer: those requests are the warm figures.
//!
//! This file is the pure part (which lines, which keystrokes, the figures); `driver.rs` runs the
//! real server process over JSON-RPC.

mod driver;
pub mod load;

use std::time::Duration;

pub use driver::{Error, Options, run};

/// One line to retype: where it is and what is on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// 0-based line number.
    pub line: usize,
    pub indent: String,
    /// The line after its indentation: what gets typed.
    pub text: String,
}

/// Lines worth retyping: code (not comments, docstrings or blank lines) long enough to be
/// worth a suggestion, `count` of them spread evenly over the file.
pub fn targets(text: &str, count: usize) -> Vec<Target> {
    let mut candidates = Vec::new();
    let mut in_string = false;
    for (line, raw) in text.lines().enumerate() {
        let body = raw.trim_start();
        let quotes = body.matches("\"\"\"").count() + body.matches("'''").count();
        let was_in_string = in_string;
        if quotes % 2 == 1 {
            in_string = !in_string;
        }
        if was_in_string || quotes > 0 {
            continue;
        }
        let len = body.trim_end().chars().count();
        let code = !body.starts_with('#') && !body.starts_with('@') && body.is_ascii();
        if code && (16..=80).contains(&len) {
            candidates.push(Target {
                line,
                indent: raw[..raw.len() - body.len()].to_owned(),
                text: body.trim_end().to_owned(),
            });
        }
    }
    if count == 0 || candidates.is_empty() {
        return Vec::new();
    }
    let step = candidates.len() as f64 / count as f64;
    let mut chosen: Vec<Target> = (0..count)
        .map(|i| ((i as f64 + 0.5) * step) as usize)
        .filter(|&i| i < candidates.len())
        .map(|i| candidates[i].clone())
        .collect();
    chosen.dedup();
    chosen
}

/// The document as the session opens it: `target`'s line holds only its indentation.
pub fn emptied(text: &str, target: &Target) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i == target.line {
            out.push_str(&target.indent);
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

/// One keystroke: the character typed and whether the typist then waits for the suggestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub ch: char,
    pub pause: bool,
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The keystrokes that type `text`: a pause after the last character of each word.
pub fn keystrokes(text: &str) -> Vec<Key> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .iter()
        .enumerate()
        .map(|(i, &ch)| Key {
            ch,
            pause: word_char(ch) && !chars.get(i + 1).copied().is_some_and(word_char),
        })
        .collect()
}

/// How a suggestion compares with what the typist goes on to type on that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    /// Nothing was suggested.
    Empty,
    /// The suggestion's first line is the rest of the line, exactly.
    Exact,
    /// The suggestion's first line starts the rest of the line (accepting it saves typing).
    Prefix,
    Wrong,
}

pub fn verdict(suggestion: &str, rest: &str) -> Verdict {
    let first = suggestion.lines().next().unwrap_or_default().trim_end();
    if first.trim().is_empty() {
        Verdict::Empty
    } else if first == rest.trim_end() {
        Verdict::Exact
    } else if rest.starts_with(first) {
        Verdict::Prefix
    } else {
        Verdict::Wrong
    }
}

/// p50/p90/max of some latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spread {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentiles.
pub fn spread(latencies: &[Duration]) -> Spread {
    let ms = sorted_ms(latencies);
    Spread {
        n: ms.len(),
        p50_ms: rank(&ms, 0.5),
        p90_ms: rank(&ms, 0.9),
        max_ms: ms.last().copied().unwrap_or(0.0),
    }
}

/// Latencies in milliseconds, in ascending order.
fn sorted_ms(latencies: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The nearest-rank `p` percentile of sorted values (0 when there are none).
fn rank(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// One timed request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub file: String,
    /// 1-based, as editors show it.
    pub line: usize,
    /// Characters of the line typed when it was asked.
    pub typed: usize,
    pub cold: bool,
    pub ms: f64,
    pub suggestion: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub files: usize,
    pub lines: usize,
    pub keystrokes: usize,
    pub key_interval_ms: u64,
    pub cold: Spread,
    pub pause: Spread,
    /// Pauses whose suggestion was the rest of the line, or a start of it.
    pub pause_exact: usize,
    pub pause_prefix: usize,
    pub pause_empty: usize,
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn new(samples: Vec<Sample>, files: usize, keystrokes: usize, interval: Duration) -> Self {
        let (cold, pause): (Vec<&Sample>, Vec<&Sample>) = samples.iter().partition(|s| s.cold);
        let ms = |s: &[&Sample]| -> Vec<Duration> {
            s.iter()
                .map(|s| Duration::from_secs_f64(s.ms / 1e3))
                .collect()
        };
        let count = |v: Verdict| pause.iter().filter(|s| s.verdict == v).count();
        Report {
            files,
            lines: cold.len(),
            keystrokes,
            key_interval_ms: interval.as_millis() as u64,
            cold: spread(&ms(&cold)),
            pause: spread(&ms(&pause)),
            pause_exact: count(Verdict::Exact),
            pause_prefix: count(Verdict::Prefix),
            pause_empty: count(Verdict::Empty),
            samples,
        }
    }

    pub fn table(&self) -> String {
        let row = |name: &str, s: &Spread| {
            format!(
                "{name:<8} {:>5} {:>8.0} {:>8.0} {:>8.0}\n",
                s.n, s.p50_ms, s.p90_ms, s.max_ms
            )
        };
        let mut out = format!(
            "typing replay: {} lines in {} files, {} keystrokes {} ms apart\n\
             request      n  p50 ms   p90 ms   max ms\n",
            self.lines, self.files, self.keystrokes, self.key_interval_ms
        );
        out += &row("cold", &self.cold);
        out += &row("pause", &self.pause);
        out += &format!(
            "pauses: {} rest of line exactly, {} a start of it, {} empty, {} other\n",
            self.pause_exact,
            self.pause_prefix,
            self.pause_empty,
            self.pause.n - self.pause_exact - self.pause_prefix - self.pause_empty
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_code_lines_spread_over_the_file() {
        let text = "import os\n\
                    \"\"\"A docstring line that is long enough\n\
                    still inside the docstring here\"\"\"\n\
                    # a comment that is long enough to count\n\
                    def function_name(argument):\n    \
                        return argument + 1  # done\n\
                    \n\
                    value = function_name(41)\n";
        let chosen = targets(text, 2);
        assert_eq!(
            chosen,
            vec![
                Target {
                    line: 4,
                    indent: String::new(),
                    text: "def function_name(argument):".into()
                },
                Target {
                    line: 7,
                    indent: String::new(),
                    text: "value = function_name(41)".into()
                },
            ]
        );
        assert_eq!(targets(text, 3)[1].text, "return argument + 1  # done");
        assert_eq!(targets(text, 0), vec![]);
        assert_eq!(targets(text, 9).len(), 3);
    }

    #[test]
    fn the_target_line_keeps_only_its_indentation() {
        let text = "a = 1\n    b = 2\nc = 3";
        let target = Target {
            line: 1,
            indent: "    ".into(),
            text: "b = 2".into(),
        };
        assert_eq!(emptied(text, &target), "a = 1\n    \nc = 3");
        let last = Target {
            line: 2,
            indent: String::new(),
            text: "c = 3".into(),
        };
        assert_eq!(emptied(text, &last), "a = 1\n    b = 2\n");
    }

    #[test]
    fn pauses_follow_the_last_key_of_each_word() {
        let keys = keystrokes("x = f(ab)");
        let paused: String = keys.iter().filter(|k| k.pause).map(|k| k.ch).collect();
        assert_eq!(paused, "xfb");
        assert_eq!(keys.len(), 9);
    }

    #[test]
    fn verdicts_compare_the_first_line_with_the_rest() {
        assert_eq!(verdict("", "abc"), Verdict::Empty);
        assert_eq!(verdict("  \nx", "abc"), Verdict::Empty);
        assert_eq!(verdict("abc\nmore", "abc"), Verdict::Exact);
        assert_eq!(verdict("ab", "abc"), Verdict::Prefix);
        assert_eq!(verdict("abd", "abc"), Verdict::Wrong);
    }

    #[test]
    fn spreads_use_nearest_ranks() {
        let ms: Vec<Duration> = (1..=10).map(|i| Duration::from_millis(i * 10)).collect();
        let s = spread(&ms);
        assert_eq!((s.n, s.p50_ms, s.p90_ms, s.max_ms), (10, 50.0, 90.0, 100.0));
        assert_eq!(spread(&[]).n, 0);
    }
}
