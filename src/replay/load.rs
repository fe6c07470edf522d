//! `pyfill load`: the server under sustained typing. Several documents are open at once; keys
//! arrive at a fixed rate, round robin over the documents, each followed by an inline completion
//! request and never a `$/cancelRequest` (the server must drop stale work itself). Each document
//! retypes one of its lines over and over (typed, then deleted back to its indentation). The
//! report: request latency p50/p99/max, how many requests went unanswered, the most requests
//! outstanding at once, and the server's resident memory at the start, peak and end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::driver::{Error, Options as ServerOptions, Server, file_uri};
use super::{emptied, rank, sorted_ms, targets};

pub struct Options {
    /// The server, the workspace and its files (one document each), as for `replay`.
    pub server: ServerOptions,
    /// Keystrokes per second, over all documents.
    pub rate: f64,
    pub duration: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub documents: usize,
    pub seconds: f64,
    pub keystrokes: usize,
    pub requests: usize,
    pub answered: usize,
    /// Answers with a suggestion in them (the others were superseded or empty).
    pub with_suggestion: usize,
    pub errors: usize,
    pub unanswered: usize,
    pub most_outstanding: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rss_start_mb: Option<f64>,
    pub rss_peak_mb: Option<f64>,
    pub rss_end_mb: Option<f64>,
}

impl Report {
    pub fn table(&self) -> String {
        let mb = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0} MB"));
        format!(
            "{} documents, {} keystrokes in {:.0} s, a request after each\n\
             requests   answered   with text   errors   unanswered   most outstanding\n\
             {:>8}   {:>8}   {:>9}   {:>6}   {:>10}   {:>16}\n\
             latency    p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms\n\
             server RSS start {}   peak {}   end {}\n",
            self.documents,
            self.keystrokes,
            self.seconds,
            self.requests,
            self.answered,
            self.with_suggestion,
            self.errors,
            self.unanswered,
            self.most_outstanding,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            mb(self.rss_start_mb),
            mb(self.rss_peak_mb),
            mb(self.rss_end_mb),
        )
    }
}

/// One document being typed in.
struct Typist {
    uri: String,
    line: usize,
    indent: usize,
    text: Vec<char>,
    /// Characters of `text` typed so far.
    typed: usize,
    version: i32,
}

/// How long to wait at the end for the requests still out.
const SETTLE: Duration = Duration::from_secs(30);

pub fn run(options: &Options) -> Result<Report, Error> {
    let mut server = Server::start(&options.server)?;
    let pid = server.child.id();
    let mut typists = Vec::new();
    for file in &options.server.files {
        let path = options.server.root.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let Some(target) = targets(&text, 1).into_iter().next() else {
            continue;
        };
        let uri = file_uri(&path);
        server.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                   "text": emptied(&text, &target)}}),
        )?;
        typists.push(Typist {
            uri,
            line: target.line,
            indent: target.indent.encode_utf16().count(),
            text: target.text.chars().collect(),
            typed: 0,
            version: 1,
        });
    }
    if typists.is_empty() {
        return Err(Error::Server("no line to type in the files given".into()));
    }
    let rss_start = rss_mb(pid);
    let mut rss_peak = rss_start;
    let mut sent: HashMap<i64, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    let (mut requests, mut answered, mut with_suggestion, mut errors, mut most_outstanding) =
        (0, 0, 0, 0, 0);
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(0.1));
    let started = Instant::now();
    let mut next_key = started;
    let mut next_sample = started;
    let mut keystrokes = 0;
    // Reads answers until `until`, or until none is outstanding when `settle`.
    let mut receive = |server: &mut Server,
                       until: Instant,
                       sent: &mut HashMap<i64, Instant>,
                       settle: bool|
     -> Result<(), Error> {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if settle && sent.is_empty() {
                break;
            }
            let Some(message) = server.receive(left)? else {
                break;
            };
            let Some(id) = message.get("id").and_then(|i| i.as_i64()) else {
                continue;
            };
            if message.get("method").is_some() {
                continue;
            }
            if let Some(at) = sent.remove(&id) {
                latencies.push(at.elapsed());
                answered += 1;
                if message.get("error").is_some() {
                    errors += 1;
                } else if message["result"]["items"]
                    .as_array()
                    .is_some_and(|items| !items.is_empty())
                {
                    with_suggestion += 1;
                }
            }
        }
        Ok(())
    };
    let mut turn = 0;
    while started.elapsed() < options.duration {
        let count = typists.len();
        let typist = &mut typists[turn % count];
        turn += 1;
        typist.version += 1;
        let column = (typist.indent
            + typist.text[..typist.typed]
                .iter()
                .map(|c| c.len_utf16())
                .sum::<usize>()) as u32;
        let line = typist.line as u32;
        let change = if typist.typed < typist.text.len() {
            let at = json!({"line": line, "character": column});
            let ch = typist.text[typist.typed].to_string();
            typist.typed += 1;
            json!({"range": {"start": at, "end": at}, "text": ch})
        } else {
            // The line is done: delete it back to its indentation and start over.
            typist.typed = 0;
            json!({"range": {"start": {"line": line, "character": typist.indent},
                             "end": {"line": line, "character": column}}, "text": ""})
        };
        server.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": typist.uri, "version": typist.version},
                   "contentChanges": [change]}),
        )?;
        let cursor = typist.indent
            + typist.text[..typist.typed]
                .iter()
                .map(|c| c.len_utf16())
                .sum::<usize>();
        let id = server.inline(&typist.uri, typist.line, cursor)?;
        sent.insert(id, Instant::now());
        requests += 1;
        keystrokes += 1;
        most_outstanding = most_outstanding.max(sent.len());
        next_key += interval;
        receive(&mut server, next_key, &mut sent, false)?;
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(1);
            rss_peak = max_option(rss_peak, rss_mb(pid));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    receive(&mut server, Instant::now() + SETTLE, &mut sent, true)?;
    rss_peak = max_option(rss_peak, rss_mb(pid));
    let rss_end = rss_mb(pid);
    let unanswered = sent.len();
    server.shutdown();
    let spread = percentiles(&latencies);
    Ok(Report {
        documents: typists.len(),
        seconds,
        keystrokes,
        requests,
        answered,
        with_suggestion,
        errors,
        unanswered,
        most_outstanding,
        p50_ms: spread.0,
        p99_ms: spread.1,
        max_ms: spread.2,
        rss_start_mb: rss_start,
        rss_peak_mb: rss_peak,
        rss_end_mb: rss_end,
    })
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// p50, p99 and max in milliseconds (nearest rank).
fn percentiles(latencies: &[Duration]) -> (f64, f64, f64) {
    let ms = sorted_ms(latencies);
    (
        rank(&ms, 0.5),
        rank(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0),
    )
}

/// The resident memory of process `pid`, from /proc (Linux); `None` elsewhere.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentiles(&ms), (50.0, 99.0, 100.0));
        assert_eq!(percentiles(&[]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn memory_is_read_for_this_process() {
        if cfg!(target_os = "linux") {
            assert!(rss_mb(std::process::id()).is_some_and(|mb| mb > 0.0));
        }
    }
}
