//! Runs typing sessions against the real server: a `pyfill` process per session (so the cold
//! request really is cold), spoken to over stdio JSON-RPC with Content-Length framing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Key, Report, Sample, Target, emptied, keystrokes, targets, verdict};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the server {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the server went away")]
    Gone,
    #[error("no answer from the server within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("the server failed: {0}")]
    Server(String),
}

pub struct Options {
    /// The workspace folder the files belong to.
    pub root: PathBuf,
    /// Files to retype lines of, relative to `root`.
    pub files: Vec<PathBuf>,
    /// Lines per file.
    pub lines: usize,
    /// Between two keystrokes.
    pub interval: Duration,
    /// The server binary and its arguments (model, threads).
    pub server: PathBuf,
    pub server_args: Vec<String>,
    /// `initializationOptions`.
    pub settings: Value,
}

/// Longest wait for one answer (a cold request on a slow machine included).
pub(super) const ANSWER_LIMIT: Duration = Duration::from_secs(180);

pub fn run(options: &Options, progress: &mut dyn FnMut(&Sample)) -> Result<Report, Error> {
    let mut samples = Vec::new();
    let mut keys = 0;
    for file in &options.files {
        let path = options.root.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        for target in targets(&text, options.lines) {
            let mut server = Server::start(options)?;
            let name = file.display().to_string();
            let session = Session {
                uri: file_uri(&path),
                file: name,
                target: &target,
                interval: options.interval,
            };
            let typed = keystrokes(&target.text);
            keys += typed.len();
            session.run(&mut server, &text, &typed, &mut |s| {
                progress(&s);
                samples.push(s);
            })?;
            server.shutdown();
        }
    }
    Ok(Report::new(
        samples,
        options.files.len(),
        keys,
        options.interval,
    ))
}

pub(super) fn file_uri(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    url::Url::from_file_path(&absolute)
        .map(|u| u.to_string())
        .unwrap_or_else(|()| format!("file://{}", absolute.display()))
}

struct Session<'a> {
    uri: String,
    file: String,
    target: &'a Target,
    interval: Duration,
}

impl Session<'_> {
    fn run(
        &self,
        server: &mut Server,
        text: &str,
        keys: &[Key],
        record: &mut dyn FnMut(Sample),
    ) -> Result<(), Error> {
        let line = self.target.line;
        let indent = self.target.indent.chars().count();
        let mut version = 1;
        server.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": self.uri, "languageId": "python", "version": version,
                   "text": emptied(text, self.target)}}),
        )?;
        let sample = |typed: usize, cold: bool, elapsed: Duration, answer: &Value| {
            let suggestion = answer["result"]["items"][0]["insertText"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let rest: String = self.target.text.chars().skip(typed).collect();
            Sample {
                file: self.file.clone(),
                line: line + 1,
                typed,
                cold,
                ms: elapsed.as_secs_f64() * 1e3,
                verdict: verdict(&suggestion, &rest),
                suggestion,
            }
        };
        let started = Instant::now();
        let id = server.inline(&self.uri, line, indent)?;
        let answer = server.answer(id, ANSWER_LIMIT)?;
        record(sample(0, true, started.elapsed(), &answer));

        let mut pending = None;
        for (typed, key) in keys.iter().enumerate() {
            let pressed = Instant::now();
            let column = indent + typed;
            version += 1;
            let at = json!({"line": line, "character": column});
            server.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": self.uri, "version": version},
                       "contentChanges": [{"range": {"start": at, "end": at}, "text": key.ch.to_string()}]}),
            )?;
            if let Some(old) = pending.take() {
                server.notify("$/cancelRequest", json!({"id": old}))?;
            }
            let id = server.inline(&self.uri, line, column + 1)?;
            if key.pause {
                let answer = server.answer(id, ANSWER_LIMIT)?;
                record(sample(typed + 1, false, pressed.elapsed(), &answer));
                // The next key comes no sooner than the interval after the answer.
                server.drain_until(Instant::now() + self.interval);
            } else {
                pending = Some(id);
                server.drain_until(pressed + self.interval);
            }
        }
        if let Some(old) = pending {
            server.notify("$/cancelRequest", json!({"id": old}))?;
        }
        server.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": self.uri}}),
        )
    }
}

pub(super) struct Server {
    pub(super) child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
}

impl Server {
    pub(super) fn start(options: &Options) -> Result<Server, Error> {
        let spawn_err = |source| Error::Spawn {
            exe: options.server.clone(),
            source,
        };
        let mut child = Command::new(&options.server)
            .args(&options.server_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(spawn_err)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Gone);
        };
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            while let Some(message) = read_message(&mut reader) {
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        let mut server = Server {
            child,
            stdin,
            incoming,
            next_id: 0,
        };
        let root = file_uri(&options.root);
        let id = server.request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": root,
                "workspaceFolders": [{"uri": root, "name": "replay"}],
                "capabilities": {"general": {"positionEncodings": ["utf-16"]},
                                 "window": {"workDoneProgress": false}},
                "initializationOptions": options.settings,
            }),
        )?;
        server.answer(id, ANSWER_LIMIT)?;
        server.notify("initialized", json!({}))?;
        server.wait_ready()?;
        Ok(server)
    }

    fn send(&mut self, message: &Value) -> Result<(), Error> {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len())
            .and_then(|()| self.stdin.flush())
            .map_err(|_| Error::Gone)
    }

    pub(super) fn notify(&mut self, method: &str, params: Value) -> Result<(), Error> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }

    pub(super) fn request(&mut self, method: &str, params: Value) -> Result<i64, Error> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        Ok(id)
    }

    pub(super) fn inline(
        &mut self,
        uri: &str,
        line: usize,
        character: usize,
    ) -> Result<i64, Error> {
        self.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri},
                   "position": {"line": line, "character": character},
                   "context": {"triggerKind": 2}}),
        )
    }

    /// Handles one incoming message: answers the server's own requests; returns the rest.
    pub(super) fn receive(&mut self, timeout: Duration) -> Result<Option<Value>, Error> {
        match self.incoming.recv_timeout(timeout) {
            Ok(message) => {
                if message.get("method").is_some() && message.get("id").is_some() {
                    let reply = json!({"jsonrpc": "2.0", "id": message["id"], "result": null});
                    self.send(&reply)?;
                }
                Ok(Some(message))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Gone),
        }
    }

    /// The answer to request `id`; other messages are dropped.
    fn answer(&mut self, id: i64, limit: Duration) -> Result<Value, Error> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(limit, "request"));
            }
            if let Some(m) = self.receive(left)?
                && m.get("method").is_none()
                && m["id"] == json!(id)
            {
                if let Some(e) = m.get("error") {
                    return Err(Error::Server(e.to_string()));
                }
                return Ok(m);
            }
        }
    }

    /// Reads (and drops) messages until `until`.
    fn drain_until(&mut self, until: Instant) {
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.receive(left).is_err() {
                return;
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + ANSWER_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(ANSWER_LIMIT, "model load"));
            }
            let Some(m) = self.receive(left)? else {
                continue;
            };
            if m["method"] == "window/logMessage" || m["method"] == "window/showMessage" {
                let text = m["params"]["message"].as_str().unwrap_or_default();
                if text.contains("model ready") {
                    return Ok(());
                }
                if m["params"]["type"] == 1 {
                    return Err(Error::Server(text.to_owned()));
                }
            }
        }
    }

    pub(super) fn shutdown(mut self) {
        if let Ok(id) = self.request("shutdown", Value::Null) {
            let _ = self.answer(id, Duration::from_secs(10));
        }
        let _ = self.notify("exit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn read_message(reader: &mut impl BufRead) -> Option<Value> {
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = v.parse::<usize>().ok();
        }
    }
    let mut body = vec![0u8; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}
