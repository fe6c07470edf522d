//! Faults injected on purpose, for the robustness tests that prove the server survives them.
//! `PYFILL_FAULT` names one; each fires once. Unset (always, in normal use) nothing happens.
//!
//! - `handler-panic`: the next inline completion handler panics.
//! - `engine-panic`: the engine thread panics outside its per-request guard when it takes its
//!   next request, and dies.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static FIRED: AtomicBool = AtomicBool::new(false);

/// Whether fault `name` is asked for and has not fired yet; true only once.
pub fn fire(name: &str) -> bool {
    static ASKED: OnceLock<Option<String>> = OnceLock::new();
    let asked = ASKED.get_or_init(|| std::env::var("PYFILL_FAULT").ok());
    asked.as_deref() == Some(name) && !FIRED.swap(true, Ordering::SeqCst)
}
