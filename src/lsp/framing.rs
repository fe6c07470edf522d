//! A guard between stdin and tower-lsp. tower-lsp's reader stops for good at the first frame it
//! cannot decode (a body that is not JSON, JSON that is not JSON-RPC, a bad header): the server
//! would exit. So every frame is checked here first. A good frame is passed on unchanged, with a
//! clean `Content-Length` header. A bad one becomes a `pyfill/invalidMessage` request carrying the
//! error, and the server answers it with that error (id `null` unless the frame's own id could
//! be read). After garbage or an oversized length, the stream is resynchronised at the next
//! `Content-Length` header, without buffering what is skipped.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tower_lsp_server::jsonrpc::{Request, Response};

/// The largest body taken (a 10 MB file escaped into a didOpen fits several times over).
pub const MAX_BODY: usize = 128 << 20;
/// The most header bytes before the blank line that ends them.
const MAX_HEADER: usize = 8 << 10;
const MARKER: &[u8] = b"Content-Length";

/// What a bad frame turns into: the params of a `pyfill/invalidMessage` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invalid {
    pub code: i64,
    pub message: String,
}

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;

/// Parses a header block (without the blank line): the body's length.
pub fn content_length(block: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(block).map_err(|_| "headers are not UTF-8".to_owned())?;
    let mut length = None;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("not a header: {:?}", clip(line)));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let value = value.trim();
            let n: usize = value
                .parse()
                .map_err(|_| format!("Content-Length is not a number: {:?}", clip(value)))?;
            if n > MAX_BODY {
                return Err(format!(
                    "a message of {n} bytes is over the limit of {MAX_BODY} bytes"
                ));
            }
            length = Some(n);
        }
    }
    length.ok_or_else(|| "no Content-Length header".to_owned())
}

/// The body length a header block announces. On error, also the length announced by the last
/// `Content-Length` header inside it, if that one reads well on its own (what follows a
/// miscounted body: its tail, then the next frame's header).
fn header_length(block: &[u8]) -> Result<usize, (String, Option<usize>)> {
    content_length(block).map_err(|problem| {
        let last = block
            .windows(MARKER.len())
            .rposition(|w| w == MARKER)
            .filter(|&at| at > 0)
            .and_then(|at| content_length(&block[at..]).ok());
        (problem, last)
    })
}

/// Checks a body as tower-lsp will read it: UTF-8 JSON that is a JSON-RPC request,
/// notification or response.
pub fn check_body(body: &[u8]) -> Result<(), (Value, Invalid)> {
    let parse_error = |message: String| {
        (
            Value::Null,
            Invalid {
                code: PARSE_ERROR,
                message,
            },
        )
    };
    let text =
        std::str::from_utf8(body).map_err(|e| parse_error(format!("body is not UTF-8: {e}")))?;
    // From the text itself, as tower-lsp reads it: through a `Value` a repeated key would pass
    // here (the last one wins) and then stop tower-lsp's reader.
    if serde_json::from_str::<Request>(text).is_ok()
        || serde_json::from_str::<Response>(text).is_ok()
    {
        return Ok(());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| parse_error(format!("body is not JSON: {e}")))?;
    let id = match value.get("id") {
        Some(id @ (Value::String(_) | Value::Null)) => id.clone(),
        Some(Value::Number(n)) if n.is_i64() => Value::Number(n.clone()),
        _ => Value::Null,
    };
    Err((
        id,
        Invalid {
            code: INVALID_REQUEST,
            message: format!("not a JSON-RPC 2.0 message: {}", clip(text)),
        },
    ))
}

fn clip(text: &str) -> String {
    let mut s: String = text.chars().take(80).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Copies frames from `input` to `output` until `input` ends or `output` closes, replacing bad
/// frames by `pyfill/invalidMessage` requests.
pub async fn guard(input: impl AsyncRead + Unpin, mut output: impl AsyncWrite + Unpin) {
    let mut input = tokio::io::BufReader::with_capacity(64 << 10, input);
    // What resynchronising read of the next header block.
    let mut start: &[u8] = b"";
    loop {
        let block = match read_header_block(&mut input, start).await {
            Ok(Some(block)) => {
                start = b"";
                block
            }
            Ok(None) => return,
            Err(problem) => {
                if write_invalid(&mut output, Value::Null, PARSE_ERROR, problem)
                    .await
                    .is_err()
                    || !skip_to_marker(&mut input).await
                {
                    return;
                }
                start = MARKER;
                continue;
            }
        };
        let length = match header_length(&block) {
            Ok(n) => n,
            Err((problem, Some(n))) => {
                // Garbage ran into a good header (the tail of a body whose length was
                // miscounted): report it and read the frame that header announces.
                if write_invalid(&mut output, Value::Null, PARSE_ERROR, problem)
                    .await
                    .is_err()
                {
                    return;
                }
                n
            }
            Err((problem, None)) => {
                if write_invalid(&mut output, Value::Null, PARSE_ERROR, problem)
                    .await
                    .is_err()
                    || !skip_to_marker(&mut input).await
                {
                    return;
                }
                start = MARKER;
                continue;
            }
        };
        let mut body = vec![0; length];
        if input.read_exact(&mut body).await.is_err() {
            return;
        }
        let written = match check_body(&body) {
            Ok(()) => write_frame(&mut output, &body).await,
            Err((id, invalid)) => {
                tracing::warn!("invalid message: {}", invalid.message);
                write_invalid(&mut output, id, invalid.code, invalid.message).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// The header lines up to the blank line, without it, after `start` (what resynchronising
/// already read of the first line). `Ok(None)` at a clean end of input; `Err` for garbage (a
/// header block too long, or input ending inside one).
async fn read_header_block(
    input: &mut (impl AsyncBufRead + Unpin),
    start: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let mut block = start.to_vec();
    loop {
        let mut line = Vec::new();
        let limit = (MAX_HEADER + 2).saturating_sub(block.len()) as u64;
        if limit == 0 {
            return Err(format!("headers longer than {MAX_HEADER} bytes"));
        }
        let n = (&mut *input)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return if block.iter().all(u8::is_ascii_whitespace) {
                Ok(None)
            } else {
                Err("input ended inside headers".into())
            };
        }
        if !line.ends_with(b"\n") {
            return Err(format!("headers longer than {MAX_HEADER} bytes"));
        }
        let blank = line == b"\r\n" || line == b"\n";
        if blank && block.is_empty() {
            // Blank lines between frames are tolerated.
            continue;
        }
        if blank && block.ends_with(b"\n") {
            return Ok(Some(block));
        }
        block.extend_from_slice(&line);
    }
}

/// Discards input up to and including the next `Content-Length` (the next frame's header block
/// starts with it). False at the end of input. Byte by byte, so a marker cut between two reads
/// is found too; nothing skipped is kept.
async fn skip_to_marker(input: &mut (impl AsyncBufRead + Unpin)) -> bool {
    // No proper prefix of the marker is also a suffix of it, so a mismatch restarts the match.
    let mut matched = 0;
    loop {
        let buf = match input.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(buf) => buf,
        };
        let mut used = buf.len();
        let mut found = false;
        for (i, &b) in buf.iter().enumerate() {
            if b == MARKER[matched] {
                matched += 1;
            } else {
                matched = usize::from(b == MARKER[0]);
            }
            if matched == MARKER.len() {
                used = i + 1;
                found = true;
                break;
            }
        }
        input.consume(used);
        if found {
            return true;
        }
    }
}

async fn write_frame(output: &mut (impl AsyncWrite + Unpin), body: &[u8]) -> std::io::Result<()> {
    output
        .write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await?;
    output.write_all(body).await?;
    output.flush().await
}

async fn write_invalid(
    output: &mut (impl AsyncWrite + Unpin),
    id: Value,
    code: i64,
    message: String,
) -> std::io::Result<()> {
    let request = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "pyfill/invalidMessage",
        "params": Invalid { code, message },
    });
    write_frame(output, request.to_string().as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_give_the_length_or_say_what_is_wrong() {
        assert_eq!(content_length(b"Content-Length: 12\r\n"), Ok(12));
        assert_eq!(
            content_length(
                b"content-length:7\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
            ),
            Ok(7)
        );
        assert!(
            content_length(b"Content-Type: x\r\n")
                .unwrap_err()
                .contains("no Content-Length")
        );
        assert!(
            content_length(b"Content-Length: lots\r\n")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            content_length(b"Content-Length: 99999999999999\r\n")
                .unwrap_err()
                .contains("limit")
        );
        assert!(
            content_length(b"Content-Length: 999999999999999999999999999\r\n")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            content_length(b"garbage\r\n")
                .unwrap_err()
                .contains("not a header")
        );
    }

    #[test]
    fn bodies_are_checked_as_tower_lsp_reads_them() {
        assert!(
            check_body(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#).is_ok()
        );
        assert!(check_body(br#"{"jsonrpc":"2.0","method":"initialized"}"#).is_ok());
        assert!(check_body(br#"{"jsonrpc":"2.0","id":"a","result":null}"#).is_ok());
        let (id, invalid) = check_body(b"hello").unwrap_err();
        assert_eq!((id, invalid.code), (Value::Null, PARSE_ERROR));
        let (_, invalid) = check_body(b"\"\xff\"").unwrap_err();
        assert_eq!(invalid.code, PARSE_ERROR);
        let (id, invalid) = check_body(br#"{"foo": 1}"#).unwrap_err();
        assert_eq!((id, invalid.code), (Value::Null, INVALID_REQUEST));
        let (id, invalid) = check_body(br#"{"jsonrpc":"1.0","id":4,"method":"x"}"#).unwrap_err();
        assert_eq!((id, invalid.code), (json!(4), INVALID_REQUEST));
        let (id, _) = check_body(br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#).unwrap_err();
        assert_eq!(id, Value::Null);
        assert!(check_body(br#"{"jsonrpc":"2.0","id":5,"method":7}"#).is_err());
        // serde_json::Value keeps the last of repeated keys; tower-lsp refuses them.
        let (_, invalid) =
            check_body(br#"{"jsonrpc":"2.0","method":"initialized","params":{},"params":{}}"#)
                .unwrap_err();
        assert_eq!(invalid.code, INVALID_REQUEST);
    }

    async fn guarded(input: &[u8]) -> String {
        let mut out = Vec::new();
        guard(input, &mut out).await;
        String::from_utf8(out).unwrap()
    }

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[tokio::test]
    async fn good_frames_pass_and_bad_ones_become_errors_without_losing_the_next() {
        let good = r#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#;
        let input = format!(
            "{}{}garbage line\r\n\r\n{}Content-Length: 99999999999999\r\n\r\n{{}}{}",
            frame("not json"),
            frame(good),
            frame(good),
            frame(good),
        );
        let out = guarded(input.as_bytes()).await;
        let frames: Vec<&str> = out.split("Content-Length: ").skip(1).collect();
        assert_eq!(frames.len(), 6, "{out}");
        assert!(frames[0].contains("pyfill/invalidMessage") && frames[0].contains("-32700"));
        assert!(frames[1].ends_with(good));
        assert!(frames[2].contains("not a header"));
        assert!(frames[3].ends_with(good));
        assert!(frames[4].contains("limit"));
        assert!(frames[5].ends_with(good));
    }

    #[tokio::test]
    async fn a_miscounted_body_costs_only_itself() {
        // Content-Length counted in characters, not bytes: the body's tail runs into the next
        // header, which must still be read.
        let short = r#"{"jsonrpc":"2.0","method":"x","params":"é"}"#;
        let good = r#"{"jsonrpc":"2.0","id":2,"method":"shutdown"}"#;
        let input = format!(
            "Content-Length: {}\r\n\r\n{short}{}",
            short.chars().count(),
            frame(good)
        );
        let out = guarded(input.as_bytes()).await;
        assert!(out.ends_with(&frame(good)), "{out}");
        // A stray line before a good header costs nothing else either.
        let input = format!("garbage\r\n{}", frame(good));
        assert!(guarded(input.as_bytes()).await.ends_with(&frame(good)));
    }

    #[tokio::test]
    async fn whitespace_filling_the_header_limit_is_an_error_not_the_end() {
        let good = r#"{"jsonrpc":"2.0","method":"exit"}"#;
        let input = format!("{}\n{}", " ".repeat(MAX_HEADER + 1), frame(good));
        let out = guarded(input.as_bytes()).await;
        assert!(
            out.contains("headers longer"),
            "{}",
            &out[..200.min(out.len())]
        );
        assert!(out.ends_with(&frame(good)));
    }

    #[tokio::test]
    async fn a_marker_cut_by_the_buffer_is_still_found() {
        // Garbage longer than the reader's buffer, then a frame.
        let good = r#"{"jsonrpc":"2.0","method":"exit"}"#;
        let input = format!("junk:\r\n\r\n{}{}", "x".repeat(200_003), frame(good));
        let out = guarded(input.as_bytes()).await;
        assert!(
            out.ends_with(&frame(good)),
            "{}",
            &out[..200.min(out.len())]
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Splits the guard's output into frame bodies; fails on anything that is not a frame.
    fn frames(out: &[u8]) -> Vec<Vec<u8>> {
        let mut rest = out;
        let mut bodies = Vec::new();
        while !rest.is_empty() {
            let header_end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a header block");
            let length = content_length(&rest[..header_end + 2]).expect("a good header");
            let body = &rest[header_end + 4..header_end + 4 + length];
            bodies.push(body.to_vec());
            rest = &rest[header_end + 4 + length..];
        }
        bodies
    }

    /// Garbage: arbitrary bytes, often line breaks and header-like text, never the marker.
    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                Just(b"\r\n".to_vec()),
                Just(b"\r\n\r\n".to_vec()),
                Just(b": ".to_vec()),
                Just(b"Content-Type: x".to_vec()),
                Just(b"Conte".to_vec()),
                Just(b"{\"jsonrpc\":\"2.0\"".to_vec()),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
        .prop_filter("no marker", |g| {
            !g.windows(MARKER.len()).any(|w| w == MARKER)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// Random garbage between good frames: every good frame comes through, in order, and
        /// the output is always well-formed frames of JSON-RPC that tower-lsp can read.
        #[test]
        fn good_frames_survive_any_garbage_around_them(
            chunks in prop::collection::vec((garbage(), 0u32..1000), 1..12)
        ) {
            let mut input = Vec::new();
            let mut sent = Vec::new();
            for (junk, id) in &chunks {
                input.extend_from_slice(junk);
                let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"pyfill/status"}}"#);
                input.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                input.extend_from_slice(body.as_bytes());
                sent.push(body.into_bytes());
            }
            let mut out = Vec::new();
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(guard(&input[..], &mut out));
            let bodies = frames(&out);
            for body in &bodies {
                prop_assert!(check_body(body).is_ok(), "{}", String::from_utf8_lossy(body));
            }
            let passed: Vec<&Vec<u8>> = bodies
                .iter()
                .filter(|b| !b.windows(13).any(|w| w == b"invalidMessag"))
                .collect();
            prop_assert_eq!(passed, sent.iter().collect::<Vec<_>>());
        }
    }
}
