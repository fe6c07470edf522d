//! Our qwen2 forward pass against candle-transformers' `quantized_qwen2` on the real default
//! model, both with the weights dequantized to f32 (`Kernels::Exact` here, candle's
//! `CANDLE_DEQUANTIZE_ALL` there): no 8-bit rounding of activations, whose flips would amplify
//! the two implementations' different float summation orders, so the logits must agree closely
//! (prefill and a decode step). The quantized kernels are checked in `kernels_equivalence.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;
use pyfill::engine::{Kernels, LoadedModel, LogitsFor};

/// Logits of this model are up to ~30 in magnitude.
const TOLERANCE: f32 = 1e-3;

#[test]
#[allow(unsafe_code)]
fn logits_match_candle_transformers_quantized_qwen2() {
    // SAFETY: the only test in this binary, before any thread reads the environment.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    let path = common::real_model();
    let ours = LoadedModel::load_with(&path, Kernels::Exact).unwrap();
    let prompt = ours
        .tokenizer
        .encode("import os\n\n\ndef list_python_files(root):\n    \"\"\"Yield .py files.\"\"\"\n    for ", false)
        .unwrap();

    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();

    let mut cache = ours.new_cache();
    let got = ours
        .prefill(&mut cache, &prompt, LogitsFor::Last)
        .unwrap()
        .unwrap();
    let got = got.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let expected = reference
        .forward(&input, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let diff = common::max_abs_diff(&got, &expected);
    eprintln!("prefill logits differ by {diff}");
    assert!(diff < TOLERANCE, "prefill logits differ by {diff}");

    let next = 13u32;
    let got = ours
        .decode(&mut cache, next)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let input = Tensor::new(&[[next]], &Device::Cpu).unwrap();
    let expected = reference
        .forward(&input, prompt.len())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let diff = common::max_abs_diff(&got, &expected);
    eprintln!("decode logits differ by {diff}");
    assert!(diff < TOLERANCE, "decode logits differ by {diff}");
}
