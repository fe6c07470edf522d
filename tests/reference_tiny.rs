//! Each architecture's forward pass against candle-transformers' reference implementation of it
//! (`quantized_qwen2`, `quantized_llama`, `quantized_phi`) on tiny random models: same logits
//! after a prefill and after a decode step, within 1e-4, both with the weights dequantized to f32
//! (`Kernels::Exact` here, `CANDLE_DEQUANTIZE_ALL` there): 8-bit activation rounding would turn
//! the implementations' different float summation orders into occasional rounding flips. The
//! quantized kernels are checked in `kernels_equivalence.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_phi, quantized_qwen2};
use common::{TinyOptions, tiny};
use pyfill::engine::{Kernels, LoadedModel, LogitsFor};

/// candle-transformers' models behind one signature: `forward(tokens (1, n), position)`.
type Reference = Box<dyn FnMut(&Tensor, usize) -> Tensor>;

fn reference(arch: &str, path: &std::path::Path) -> Reference {
    let mut file = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let dev = Device::Cpu;
    match arch {
        "qwen2" => {
            let mut m = quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &dev).unwrap();
            Box::new(move |x, pos| m.forward(x, pos).unwrap())
        }
        "llama" => {
            let mut m = quantized_llama::ModelWeights::from_gguf(content, &mut file, &dev).unwrap();
            Box::new(move |x, pos| m.forward(x, pos).unwrap())
        }
        "phi2" => {
            let mut m = quantized_phi::ModelWeights::from_gguf(content, &mut file, &dev).unwrap();
            Box::new(move |x, pos| m.forward(x, pos).unwrap())
        }
        _ => unreachable!(),
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
#[allow(unsafe_code)]
fn every_architecture_matches_candle_transformers() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    for arch in ["qwen2", "llama", "phi2"] {
        let (_dir, path) = tiny(&TinyOptions::new(arch));
        let ours = LoadedModel::load_with(&path, Kernels::Exact).unwrap();
        let mut theirs = reference(arch, &path);
        let prompt = ours
            .tokenizer
            .encode("def area(r):\n    return 3.14 * r * r\n", false)
            .unwrap();

        let mut cache = ours.new_cache();
        let got = flat(
            &ours
                .prefill(&mut cache, &prompt, LogitsFor::Last)
                .unwrap()
                .unwrap(),
        );
        let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let expected = flat(&theirs(&input, 0));
        let diff = common::max_abs_diff(&got, &expected);
        assert!(diff < 1e-4, "{arch}: prefill logits differ by {diff}");

        let next = prompt[3];
        let got = flat(&ours.decode(&mut cache, next).unwrap());
        let expected = flat(&theirs(
            &Tensor::new(&[[next]], &Device::Cpu).unwrap(),
            prompt.len(),
        ));
        let diff = common::max_abs_diff(&got, &expected);
        assert!(diff < 1e-4, "{arch}: decode logits differ by {diff}");
    }
}
