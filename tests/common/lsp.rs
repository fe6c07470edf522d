//! A minimal LSP client for tests: spawns the real `pyfill` binary and speaks JSON-RPC over its
//! stdio (Content-Length framing), answering the server's own requests with `null`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Client {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    incoming: Receiver<Value>,
    /// Messages read while waiting for something else.
    backlog: VecDeque<Value>,
    next_id: i64,
}

fn write_message(stdin: &Mutex<ChildStdin>, message: &Value) {
    let body = message.to_string();
    let mut stdin = stdin.lock().unwrap();
    let _ = write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len());
    let _ = stdin.flush();
}

impl Client {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pyfill"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pyfill");
        let stdin = Arc::new(Mutex::new(child.stdin.take().unwrap()));
        let stdout = child.stdout.take().unwrap();
        let (tx, incoming) = channel();
        let replies = stdin.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        length = v.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0u8; length.expect("Content-Length header")];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let message: Value = serde_json::from_slice(&body).expect("server sent JSON");
                if message.get("method").is_some() && message.get("id").is_some() {
                    // A request from the server (e.g. window/workDoneProgress/create).
                    let reply = json!({"jsonrpc": "2.0", "id": message["id"], "result": null});
                    write_message(&replies, &reply);
                }
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        Client {
            child,
            stdin,
            incoming,
            backlog: VecDeque::new(),
            next_id: 0,
        }
    }

    pub fn notify(&self, method: &str, params: Value) {
        write_message(
            &self.stdin,
            &json!({"jsonrpc": "2.0", "method": method, "params": params}),
        );
    }

    pub fn request(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        write_message(
            &self.stdin,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
        id
    }

    pub fn send_raw(&self, body: &str) {
        let mut stdin = self.stdin.lock().unwrap();
        let _ = write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len());
        let _ = stdin.flush();
    }

    /// Bytes exactly as given (headers and body), for malformed frames.
    pub fn send_raw_bytes(&self, bytes: &[u8]) {
        let mut stdin = self.stdin.lock().unwrap();
        let _ = stdin.write_all(bytes);
        let _ = stdin.flush();
    }

    /// The first message (from the backlog or the wire) that matches, within `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, what: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&what) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(m) if what(&m) => return Some(m),
                Ok(m) => self.backlog.push_back(m),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The response to request `id` (the whole message: `result` or `error`).
    pub fn response(&mut self, id: i64, timeout: Duration) -> Value {
        self.wait_for(timeout, |m| {
            m.get("method").is_none() && m["id"] == json!(id)
        })
        .unwrap_or_else(|| panic!("no response to request {id} within {timeout:?}"))
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        let response = self.response(id, Duration::from_secs(120));
        assert!(
            response.get("error").is_none(),
            "{method} failed: {response}"
        );
        response["result"].clone()
    }

    pub fn notification(&mut self, method: &str, timeout: Duration) -> Option<Value> {
        let method = method.to_owned();
        self.wait_for(timeout, move |m| {
            m["method"] == json!(method) && m.get("id").is_none()
        })
    }

    /// initialize + initialized; returns the initialize result.
    pub fn initialize(&mut self, options: Value, encodings: &[&str]) -> Value {
        self.initialize_in(options, encodings, &[])
    }

    /// `initialize` with workspace folders (file URIs).
    pub fn initialize_in(&mut self, options: Value, encodings: &[&str], folders: &[&str]) -> Value {
        let folders: Vec<Value> = folders
            .iter()
            .map(|uri| json!({"uri": uri, "name": "workspace"}))
            .collect();
        let result = self.call(
            "initialize",
            json!({
                "processId": null,
                "rootUri": null,
                "workspaceFolders": folders,
                "capabilities": {
                    "general": {"positionEncodings": encodings},
                    "window": {"workDoneProgress": true},
                },
                "initializationOptions": options,
            }),
        );
        self.notify("initialized", json!({}));
        result
    }

    /// Waits until the server logs that its model is ready; returns that log line.
    pub fn wait_ready(&mut self) -> String {
        let ready = self.wait_for(Duration::from_secs(120), |m| {
            m["method"] == "window/logMessage"
                && m["params"]["message"]
                    .as_str()
                    .is_some_and(|s| s.contains("model ready"))
        });
        let ready = ready.expect("the model never became ready");
        ready["params"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn open(&self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}),
        );
    }

    pub fn change(&self, uri: &str, version: i32, changes: Value) {
        self.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": changes}),
        );
    }

    pub fn inline_request(&mut self, uri: &str, line: u32, character: u32) -> i64 {
        self.request(
            "textDocument/inlineCompletion",
            json!({
                "textDocument": {"uri": uri},
                "position": {"line": line, "character": character},
                "context": {"triggerKind": 2},
            }),
        )
    }

    /// Inline completion texts at a position.
    pub fn inline(&mut self, uri: &str, line: u32, character: u32) -> Vec<String> {
        let id = self.inline_request(uri, line, character);
        let response = self.response(id, Duration::from_secs(120));
        items_text(&response)
    }

    /// Shuts down and returns the exit code.
    pub fn shutdown(mut self) -> Option<i32> {
        self.call("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The insert texts of an inline completion response.
pub fn items_text(response: &Value) -> Vec<String> {
    assert!(
        response.get("error").is_none(),
        "error response: {response}"
    );
    response["result"]["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["insertText"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
