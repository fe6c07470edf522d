//! The engine's own matrix kernels (`Kernels::Fast`) against candle's quantized matmul
//! (`Kernels::Reference`, the unoptimised path) and against exact f32 products of the same
//! weights (`Kernels::Exact`), after every layer and on the final logits, on the tiny models
//! and on the real default model.
//!
//! Both quantized paths round activations to 8 bits, so they are not bit-identical: a value on
//! a rounding boundary can round either way and layers amplify it. The stated tolerance:
//! - after every layer and on the logits, the fast path's relative RMS error against exact f32
//!   products is at most 1.25x the reference path's (plus 1e-3 for float noise): optimising
//!   may not cost accuracy;
//! - the fast and reference paths differ by at most 5% relative RMS after any layer and on the
//!   logits, and pick the same most likely next token at (nearly) every position.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::Tensor;
use common::{TinyOptions, tiny};
use pyfill::engine::{Kernels, LoadedModel};

/// Relative RMS difference `rms(a - b) / rms(b)`.
fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        diff += f64::from(x - y).powi(2);
        norm += f64::from(*y).powi(2);
    }
    (diff / norm.max(1e-30)).sqrt()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn argmaxes(logits: &Tensor) -> Vec<u32> {
    logits.argmax(1).unwrap().to_vec1().unwrap()
}

/// Traces `prompt` with the three kernel choices and checks the stated tolerance.
fn check(path: &std::path::Path, prompt: &str, name: &str) {
    let trace = |kernels| {
        let model = LoadedModel::load_with(path, kernels).unwrap();
        let tokens = model.tokenizer.encode(prompt, false).unwrap();
        model.trace(&tokens).unwrap()
    };
    let fast = trace(Kernels::Fast);
    let reference = trace(Kernels::Reference);
    let exact = trace(Kernels::Exact);
    assert_eq!(fast.len(), reference.len());
    for (i, ((f, r), e)) in fast.iter().zip(&reference).zip(&exact).enumerate() {
        let what = if i + 1 == fast.len() {
            "logits".to_owned()
        } else {
            format!("layer {i}")
        };
        let (f, r, e) = (flat(f), flat(r), flat(e));
        let fast_err = rel_rms(&f, &e);
        let reference_err = rel_rms(&r, &e);
        let apart = rel_rms(&f, &r);
        eprintln!(
            "{name} {what}: fast vs exact {fast_err:.2e}, reference vs exact {reference_err:.2e}, \
             fast vs reference {apart:.2e}"
        );
        assert!(
            fast_err <= 1.25 * reference_err + 1e-3,
            "{name} {what}: fast path error {fast_err:.3e} vs reference {reference_err:.3e}"
        );
        assert!(apart <= 0.05, "{name} {what}: paths {apart:.3e} apart");
    }
    let last = |t: &[Tensor]| argmaxes(t.last().unwrap());
    let (f, r) = (last(&fast), last(&reference));
    let same = f.iter().zip(&r).filter(|(a, b)| a == b).count();
    eprintln!("{name}: same next token at {same} of {} positions", f.len());
    assert!(
        same * 10 >= f.len() * 9,
        "{name}: same next token at only {same} of {} positions",
        f.len()
    );
}

#[test]
fn tiny_models_fast_kernels_are_as_accurate_as_candles() {
    for arch in ["qwen2", "llama", "phi2"] {
        let (_dir, path) = tiny(&TinyOptions::new(arch));
        check(
            &path,
            "def area(r):\n    return 3.14 * r * r\n\nclass Point:\n    x: int\n",
            arch,
        );
    }
}

#[test]
fn real_model_fast_kernels_are_as_accurate_as_candles() {
    let path = common::real_model();
    check(
        &path,
        include_str!("../benches/data/textwrap.py")
            .get(..3000)
            .unwrap(),
        "qwen2.5-coder",
    );
}
