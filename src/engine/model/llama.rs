//! Llama-shaped decoder (GGUF architectures `llama` and `qwen2`): RMSNorm, rotary attention with
//! grouped keys/values, SwiGLU feed-forward.

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};

use super::{
    Bias, Kernels, Linear, LogitsFor, Rope, attention, causal_mask, project_logits, vector,
};
use crate::engine::error::Result;
use crate::engine::gguf::GgufFile;
use crate::engine::kv_cache::KvCache;

pub struct Llama {
    embedding: QMatMul,
    layers: Vec<Layer>,
    norm: candle_nn::RmsNorm,
    output: Linear,
    pub(super) rope: Rope,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

struct Layer {
    attn_norm: candle_nn::RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: candle_nn::RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Longest context we precompute rotary tables for, whatever the file claims.
const MAX_POSITIONS: usize = 32_768;

impl Llama {
    pub fn load(
        gguf: &mut GgufFile,
        arch: &str,
        kernels: Kernels,
        device: &Device,
    ) -> Result<Self> {
        let key = |k: &str| format!("{arch}.{k}");
        let n_layers = gguf.usize(&key("block_count"))?;
        let hidden = gguf.usize(&key("embedding_length"))?;
        let ffn = gguf.usize(&key("feed_forward_length"))?;
        let n_head = gguf.usize(&key("attention.head_count"))?;
        let n_kv_head = gguf
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let eps = f64::from(gguf.f32(&key("attention.layer_norm_rms_epsilon"))?);
        let base = gguf.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let context = gguf
            .opt_usize(&key("context_length"))?
            .unwrap_or(4096)
            .min(MAX_POSITIONS);
        let head_dim = hidden.checked_div(n_head).unwrap_or(0);
        if n_head == 0 || n_kv_head == 0 || hidden % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(crate::engine::error::Error::InvalidGguf {
                path: gguf.path().to_owned(),
                reason: format!(
                    "inconsistent attention shape: {hidden} hidden, {n_head} heads, {n_kv_head} kv heads"
                ),
            });
        }
        let kv_dim = n_kv_head * head_dim;
        // Qwen2 always has q/k/v biases; llama files may or may not.
        let qkv_bias = if arch == "qwen2" {
            Bias::Required
        } else {
            Bias::IfPresent
        };

        let embd = gguf.tensor("token_embd.weight", device)?;
        let embedding_rows = embd.shape().dims().first().copied().unwrap_or(0);
        // Tied embeddings: without its own output head the model reuses the embedding matrix.
        let output_name = if gguf.has_tensor("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output =
            Linear::load_matrix(gguf, output_name, (embedding_rows, hidden), kernels, device)?;
        let embedding = QMatMul::from_qtensor(embd)?;

        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let p = format!("blk.{i}");
            let norm = |g: &mut GgufFile, n: &str| -> Result<candle_nn::RmsNorm> {
                Ok(candle_nn::RmsNorm::new(
                    vector(g, &format!("{p}.{n}.weight"), hidden, device)?,
                    eps,
                ))
            };
            layers.push(Layer {
                attn_norm: norm(gguf, "attn_norm")?,
                q: Linear::load(
                    gguf,
                    &format!("{p}.attn_q"),
                    (hidden, hidden),
                    qkv_bias,
                    kernels,
                    device,
                )?,
                k: Linear::load(
                    gguf,
                    &format!("{p}.attn_k"),
                    (kv_dim, hidden),
                    qkv_bias,
                    kernels,
                    device,
                )?,
                v: Linear::load(
                    gguf,
                    &format!("{p}.attn_v"),
                    (kv_dim, hidden),
                    qkv_bias,
                    kernels,
                    device,
                )?,
                o: Linear::load(
                    gguf,
                    &format!("{p}.attn_output"),
                    (hidden, hidden),
                    Bias::None,
                    kernels,
                    device,
                )?,
                ffn_norm: norm(gguf, "ffn_norm")?,
                gate: Linear::load(
                    gguf,
                    &format!("{p}.ffn_gate"),
                    (ffn, hidden),
                    Bias::None,
                    kernels,
                    device,
                )?,
                up: Linear::load(
                    gguf,
                    &format!("{p}.ffn_up"),
                    (ffn, hidden),
                    Bias::None,
                    kernels,
                    device,
                )?,
                down: Linear::load(
                    gguf,
                    &format!("{p}.ffn_down"),
                    (hidden, ffn),
                    Bias::None,
                    kernels,
                    device,
                )?,
            });
        }
        Ok(Self {
            embedding,
            layers,
            norm: candle_nn::RmsNorm::new(vector(gguf, "output_norm.weight", hidden, device)?, eps),
            output,
            rope: Rope::new(head_dim, base, context, arch == "qwen2", device)?,
            n_head,
            n_kv_head,
            head_dim,
        })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: LogitsFor,
        mut trace: Option<&mut Vec<Tensor>>,
    ) -> Result<Option<Tensor>> {
        let device = Device::Cpu;
        let pos = cache.len();
        let seq = tokens.len();
        let ids = Tensor::new(tokens, &device)?;
        let mut x = self.embedding.embedding(&ids)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &device)?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let q = self.heads(&layer.q.forward(&h)?, self.n_head)?;
            let k = self.heads(&layer.k.forward(&h)?, self.n_kv_head)?;
            let v = self.heads(&layer.v.forward(&h)?, self.n_kv_head)?;
            let q = self.rope.apply(&q, pos)?;
            let k = self.rope.apply(&k, pos)?;
            let (k, v) = cache.append(i, &k, &v)?;
            let a = attention(&q, &k, &v, mask.as_ref())?;
            x = (x + layer.o.forward(&a)?)?;
            let h = layer.ffn_norm.forward(&x)?;
            let ff = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&ff)?)?;
            if let Some(states) = trace.as_deref_mut() {
                states.push(x.clone());
            }
        }
        let x = self.norm.forward(&x)?;
        project_logits(&x, logits, |rows| self.output.forward(rows))
    }

    /// `(seq, heads * head_dim)` -> `(heads, seq, head_dim)`.
    fn heads(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let seq = x.dim(0)?;
        Ok(x.reshape((seq, heads, self.head_dim))?
            .transpose(0, 1)?
            .contiguous()?)
    }
}
