//! Layout invariants checked as ordinary tests.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Source files outside `src/<allowed>` that mention `needle`.
fn used_outside(allowed: &str, needle: &str) -> Vec<PathBuf> {
    used_outside_all(&[allowed], needle)
}

/// Source files outside every one of `allowed` (files or folders under `src/`) that mention
/// `needle`.
fn used_outside_all(allowed: &[&str], needle: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter(|f| !allowed.iter().any(|a| f.starts_with(src.join(a))))
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("readable source")
                .contains(needle)
        })
        .collect()
}

#[test]
fn only_the_engine_knows_about_candle() {
    let offenders = used_outside("engine", "candle_");
    assert!(
        offenders.is_empty(),
        "candle used outside src/engine: {offenders:?}"
    );
}

#[test]
fn only_the_lsp_layer_knows_the_protocol() {
    let offenders = used_outside("lsp", "tower_lsp");
    assert!(
        offenders.is_empty(),
        "tower-lsp used outside src/lsp: {offenders:?}"
    );
}

#[test]
fn every_module_says_what_it_owns() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable source");
        let is_module_root = f.ends_with("mod.rs") || f.parent() == Some(src.as_path());
        if is_module_root || text.len() > 2000 {
            assert!(
                text.starts_with("//!"),
                "{} has no //! module doc",
                f.display()
            );
        }
    }
}

/// Privacy: the only network code is the model download, and only `pyfill model fetch` runs it.
#[test]
fn only_the_model_download_and_a_chosen_remote_backend_touch_the_network() {
    for needle in [
        "ureq",
        "std::net",
        "TcpStream",
        "UdpSocket",
        "reqwest",
        "hyper::",
    ] {
        let offenders = used_outside_all(&["models.rs", "remote.rs"], needle);
        assert!(
            offenders.is_empty(),
            "{needle} used outside src/models.rs and src/remote.rs: {offenders:?}"
        );
    }
    let offenders = used_outside("main.rs", "models::fetch(");
    assert!(
        offenders.is_empty(),
        "the download started outside the CLI's `model fetch`: {offenders:?}"
    );
    // The remote client is made only where a remote backend was chosen: the server's loader
    // (after `settings.remote()`), `pyfill complete`, the engine thread, and the settings.
    let offenders = used_outside_all(
        &[
            "main.rs",
            "lsp/mod.rs",
            "remote.rs",
            "engine/service.rs",
            "config.rs",
        ],
        "remote::",
    );
    assert!(
        offenders.is_empty(),
        "the remote backend reached from elsewhere: {offenders:?}"
    );
    for file in ["main.rs", "lsp/mod.rs"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file))
                .unwrap();
        assert!(
            text.matches("remote::engine(").count() <= text.matches(".remote()").count(),
            "{file}: a remote engine started without a remote backend chosen"
        );
    }
}
