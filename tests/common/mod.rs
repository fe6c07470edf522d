//! Shared test support: tiny GGUF models with random weights, written by the tests themselves, and
//! the location of the real default model; an LSP client for the real binary (`lsp`) and a fake
//! inference server over HTTP (`http`).
#![allow(dead_code)]

pub mod http;
pub mod lsp;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub const HIDDEN: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const FFN: usize = 128;
pub const LAYERS: usize = 2;

/// Special tokens of the tiny vocabulary (control tokens, type 3), after the byte tokens and merges.
pub const SPECIALS: &[&str] = &[
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|file_sep|>",
    "<|repo_name|>",
    "<|im_start|>",
    "<|im_end|>",
];

/// A handful of merges, enough to exercise BPE.
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("r", "e"),
    ("d", "e"),
    ("de", "f"),
    ("Ċ", "Ġ"),
];

pub struct TinyOptions {
    pub architecture: &'static str,
    /// When set, the model ignores its input and always predicts this token (layers write zeros,
    /// the output head has one row): for testing stop rules and cancellation.
    pub always: Option<u32>,
    pub with_tokenizer: bool,
    pub skip_tensor: Option<&'static str>,
    /// Context length the metadata declares.
    pub context: u32,
    /// More control tokens, after [`SPECIALS`] (other model families' markers).
    pub extra_specials: &'static [&'static str],
}

impl TinyOptions {
    pub fn new(architecture: &'static str) -> Self {
        Self {
            architecture,
            always: None,
            with_tokenizer: true,
            skip_tensor: None,
            context: 512,
            extra_specials: &[],
        }
    }
}

/// GPT-2's byte -> printable character table.
pub fn byte_chars() -> Vec<char> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap();
                next += 1;
                c
            }
        })
        .collect()
}

pub fn vocab() -> Vec<String> {
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.extend(SPECIALS.iter().map(|s| s.to_string()));
    tokens
}

pub fn token_id(content: &str) -> u32 {
    vocab().iter().position(|t| t == content).unwrap() as u32
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(items.into_iter().map(Value::String).collect())
}

fn q8(t: &Tensor) -> QTensor {
    QTensor::quantize(t, GgmlDType::Q8_0).unwrap()
}

/// Like the default model: attention and FFN gate/up projections are Q5_0.
fn q5(t: &Tensor) -> QTensor {
    QTensor::quantize(t, GgmlDType::Q5_0).unwrap()
}

fn f32t(t: &Tensor) -> QTensor {
    QTensor::quantize(t, GgmlDType::F32).unwrap()
}

/// `n` deterministic values, uniform with mean 0 and standard deviation `std` (xorshift).
pub fn uniform_noise(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1);
    let half_width = std * 3f32.sqrt();
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * half_width
        })
        .collect()
}

/// Writes a tiny model of `opts.architecture` to `path`.
pub fn write_tiny(path: &Path, opts: &TinyOptions) {
    let dev = Device::Cpu;
    let mut tokens = vocab();
    tokens.extend(opts.extra_specials.iter().map(|s| s.to_string()));
    let n_vocab = tokens.len();
    let arch = opts.architecture;
    // Seeded, so every run tests the same model and a failure reproduces.
    let seed = std::cell::Cell::new(opts.architecture.len() as u64);
    let noise = |n: usize, std: f32| {
        seed.set(seed.get() + 1);
        uniform_noise(seed.get(), n, std)
    };
    let rand = |shape: (usize, usize)| {
        Tensor::from_vec(noise(shape.0 * shape.1, 0.2), shape, &dev).unwrap()
    };
    let rand1 = |n: usize| Tensor::from_vec(noise(n, 0.1), n, &dev).unwrap();
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &dev).unwrap();
    let zeros2 = |s: (usize, usize)| Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap();
    let zeros1 = |n: usize| Tensor::zeros(n, candle_core::DType::F32, &dev).unwrap();
    let quiet = opts.always.is_some();
    // Layers whose output projections are zero leave the residual stream untouched.
    let out_proj = |s: (usize, usize)| if quiet { zeros2(s) } else { rand(s) };

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let (embedding, head) = match opts.always {
        Some(tok) => {
            let embedding = Tensor::ones((n_vocab, HIDDEN), candle_core::DType::F32, &dev).unwrap();
            let mut head = vec![0f32; n_vocab * HIDDEN];
            head[tok as usize * HIDDEN..(tok as usize + 1) * HIDDEN].fill(1.0);
            (
                embedding,
                Tensor::from_vec(head, (n_vocab, HIDDEN), &dev).unwrap(),
            )
        }
        None => (rand((n_vocab, HIDDEN)), rand((n_vocab, HIDDEN))),
    };
    tensors.push(("token_embd.weight".into(), q8(&embedding)));
    tensors.push(("output.weight".into(), q8(&head)));

    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("tiny-{arch}"))),
    ];
    let key = |k: &str| format!("{arch}.{k}");
    meta.push((key("block_count"), Value::U32(LAYERS as u32)));
    meta.push((key("embedding_length"), Value::U32(HIDDEN as u32)));
    meta.push((key("feed_forward_length"), Value::U32(FFN as u32)));
    meta.push((key("attention.head_count"), Value::U32(HEADS as u32)));
    meta.push((key("context_length"), Value::U32(opts.context)));

    if arch == "phi2" {
        meta.push((key("attention.head_count_kv"), Value::U32(HEADS as u32)));
        meta.push((key("attention.layer_norm_epsilon"), Value::F32(1e-5)));
        meta.push((key("rope.dimension_count"), Value::U32(8)));
        // Constant embeddings normalise to zero: the output norm's bias carries the signal.
        let out_bias = if quiet { ones(HIDDEN) } else { rand1(HIDDEN) };
        tensors.push(("output_norm.weight".into(), f32t(&ones(HIDDEN))));
        tensors.push(("output_norm.bias".into(), f32t(&out_bias)));
        tensors.push(("output.bias".into(), f32t(&zeros1(n_vocab))));
        for i in 0..LAYERS {
            let p = format!("blk.{i}");
            let bias = |n: usize| if quiet { zeros1(n) } else { rand1(n) };
            tensors.push((format!("{p}.attn_norm.weight"), f32t(&ones(HIDDEN))));
            tensors.push((format!("{p}.attn_norm.bias"), f32t(&zeros1(HIDDEN))));
            tensors.push((
                format!("{p}.attn_qkv.weight"),
                q5(&rand((3 * HIDDEN, HIDDEN))),
            ));
            tensors.push((format!("{p}.attn_qkv.bias"), f32t(&rand1(3 * HIDDEN))));
            tensors.push((
                format!("{p}.attn_output.weight"),
                q8(&out_proj((HIDDEN, HIDDEN))),
            ));
            tensors.push((format!("{p}.attn_output.bias"), f32t(&bias(HIDDEN))));
            tensors.push((format!("{p}.ffn_up.weight"), q5(&rand((FFN, HIDDEN)))));
            tensors.push((format!("{p}.ffn_up.bias"), f32t(&rand1(FFN))));
            tensors.push((format!("{p}.ffn_down.weight"), q8(&out_proj((HIDDEN, FFN)))));
            tensors.push((format!("{p}.ffn_down.bias"), f32t(&bias(HIDDEN))));
        }
    } else {
        meta.push((key("attention.head_count_kv"), Value::U32(KV_HEADS as u32)));
        meta.push((key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)));
        meta.push((key("rope.freq_base"), Value::F32(10_000.0)));
        meta.push((
            key("rope.dimension_count"),
            Value::U32((HIDDEN / HEADS) as u32),
        ));
        tensors.push(("output_norm.weight".into(), f32t(&ones(HIDDEN))));
        let kv = KV_HEADS * HIDDEN / HEADS;
        for i in 0..LAYERS {
            let p = format!("blk.{i}");
            tensors.push((format!("{p}.attn_norm.weight"), f32t(&ones(HIDDEN))));
            tensors.push((format!("{p}.ffn_norm.weight"), f32t(&ones(HIDDEN))));
            tensors.push((format!("{p}.attn_q.weight"), q5(&rand((HIDDEN, HIDDEN)))));
            tensors.push((format!("{p}.attn_k.weight"), q5(&rand((kv, HIDDEN)))));
            tensors.push((format!("{p}.attn_v.weight"), q5(&rand((kv, HIDDEN)))));
            if arch == "qwen2" {
                tensors.push((format!("{p}.attn_q.bias"), f32t(&rand1(HIDDEN))));
                tensors.push((format!("{p}.attn_k.bias"), f32t(&rand1(kv))));
                tensors.push((format!("{p}.attn_v.bias"), f32t(&rand1(kv))));
            }
            tensors.push((
                format!("{p}.attn_output.weight"),
                q8(&out_proj((HIDDEN, HIDDEN))),
            ));
            tensors.push((format!("{p}.ffn_gate.weight"), q5(&rand((FFN, HIDDEN)))));
            tensors.push((format!("{p}.ffn_up.weight"), q5(&rand((FFN, HIDDEN)))));
            tensors.push((format!("{p}.ffn_down.weight"), q8(&out_proj((HIDDEN, FFN)))));
        }
    }

    if opts.with_tokenizer {
        let pre = match arch {
            "qwen2" => "qwen2",
            "phi2" => "phi-2",
            _ => "default",
        };
        meta.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
        meta.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
        meta.push(("tokenizer.ggml.tokens".into(), strings(tokens.clone())));
        meta.push((
            "tokenizer.ggml.merges".into(),
            strings(MERGES.iter().map(|(a, b)| format!("{a} {b}"))),
        ));
        let types = tokens
            .iter()
            .map(|t| {
                let special =
                    SPECIALS.contains(&t.as_str()) || opts.extra_specials.contains(&t.as_str());
                Value::I32(if special { 3 } else { 1 })
            })
            .collect();
        meta.push(("tokenizer.ggml.token_type".into(), Value::Array(types)));
        meta.push((
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(token_id("<|endoftext|>")),
        ));
    }

    tensors.retain(|(name, _)| Some(name.as_str()) != opts.skip_tensor);
    let mut file = std::fs::File::create(path).unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

/// A tiny model in a fresh temporary directory.
pub fn tiny(opts: &TinyOptions) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("tiny-{}.gguf", opts.architecture));
    write_tiny(&path, opts);
    (dir, path)
}

/// The real default model: `$PYFILL_MODEL`, else the fetched default (`.ci/run` fetches it).
pub fn real_model() -> PathBuf {
    if let Ok(p) = std::env::var("PYFILL_MODEL") {
        return PathBuf::from(p);
    }
    let path = pyfill::models::default_model_path().unwrap();
    assert!(
        path.exists(),
        "the default model is missing at {}: run `pyfill model fetch` (or set PYFILL_MODEL)",
        path.display()
    );
    path
}

/// Largest absolute difference between two equally long vectors (logits).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
