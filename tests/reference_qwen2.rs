//! Our qwen2 forward pass against candle-transformers' `quantized_qwen2` on the real default
//! model: same weights, same (candle's) kernels, so the logits must agree (prefill and a decode
//! step). The engine's own kernels are checked against these in `kernels_equivalence.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;
use pyfill::engine::{Kernels, LoadedModel, LogitsFor};

#[test]
fn logits_match_candle_transformers_quantized_qwen2() {
    let path = common::real_model();
    let ours = LoadedModel::load_with(&path, Kernels::Reference).unwrap();
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
    assert!(diff < 1e-4, "prefill logits differ by {diff}");

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
    assert!(diff < 1e-4, "decode logits differ by {diff}");
}
