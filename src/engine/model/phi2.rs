//! The phi-1 / phi-1.5 / phi-2 decoder (GGUF architecture `phi2`): LayerNorm, attention and MLP in
//! parallel from the same normed input, partial NeoX rotary embedding, GELU, biases everywhere.

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};

use super::{
    Bias, Kernels, Linear, LogitsFor, Rope, attention, causal_mask, project_logits, vector,
};
use crate::engine::error::{Error, Result};
use crate::engine::gguf::GgufFile;
use crate::engine::kv_cache::KvCache;

pub struct Phi2 {
    embedding: QMatMul,
    layers: Vec<Layer>,
    norm: candle_nn::LayerNorm,
    output: Linear,
    pub(super) rope: Rope,
    n_head: usize,
    head_dim: usize,
}

enum Qkv {
    Fused(Linear),
    Split(Linear, Linear, Linear),
}

struct Layer {
    norm: candle_nn::LayerNorm,
    qkv: Qkv,
    o: Linear,
    up: Linear,
    down: Linear,
}

impl Phi2 {
    pub fn load(gguf: &mut GgufFile, kernels: Kernels, device: &Device) -> Result<Self> {
        let n_layers = gguf.usize("phi2.block_count")?;
        let hidden = gguf.usize("phi2.embedding_length")?;
        let ffn = gguf.usize("phi2.feed_forward_length")?;
        let n_head = gguf.usize("phi2.attention.head_count")?;
        let eps = f64::from(gguf.f32("phi2.attention.layer_norm_epsilon")?);
        let context = gguf.opt_usize("phi2.context_length")?.unwrap_or(2048);
        if n_head == 0 || hidden % n_head != 0 {
            return Err(Error::InvalidGguf {
                path: gguf.path().to_owned(),
                reason: format!("{hidden} hidden units do not split into {n_head} heads"),
            });
        }
        let head_dim = hidden / n_head;
        let rope_dims = gguf
            .opt_usize("phi2.rope.dimension_count")?
            .unwrap_or(head_dim)
            .min(head_dim);
        let layer_norm = |g: &mut GgufFile, name: &str| -> Result<candle_nn::LayerNorm> {
            Ok(candle_nn::LayerNorm::new(
                vector(g, &format!("{name}.weight"), hidden, device)?,
                vector(g, &format!("{name}.bias"), hidden, device)?,
                eps,
            ))
        };

        let embd = gguf.tensor("token_embd.weight", device)?;
        let vocab = embd.shape().dims().first().copied().unwrap_or(0);
        let embedding = QMatMul::from_qtensor(embd)?;
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let p = format!("blk.{i}");
            let qkv = if gguf.has_tensor(&format!("{p}.attn_qkv.weight")) {
                Qkv::Fused(Linear::load(
                    gguf,
                    &format!("{p}.attn_qkv"),
                    (3 * hidden, hidden),
                    Bias::Required,
                    kernels,
                    device,
                )?)
            } else {
                Qkv::Split(
                    Linear::load(
                        gguf,
                        &format!("{p}.attn_q"),
                        (hidden, hidden),
                        Bias::Required,
                        kernels,
                        device,
                    )?,
                    Linear::load(
                        gguf,
                        &format!("{p}.attn_k"),
                        (hidden, hidden),
                        Bias::Required,
                        kernels,
                        device,
                    )?,
                    Linear::load(
                        gguf,
                        &format!("{p}.attn_v"),
                        (hidden, hidden),
                        Bias::Required,
                        kernels,
                        device,
                    )?,
                )
            };
            layers.push(Layer {
                norm: layer_norm(gguf, &format!("{p}.attn_norm"))?,
                qkv,
                o: Linear::load(
                    gguf,
                    &format!("{p}.attn_output"),
                    (hidden, hidden),
                    Bias::Required,
                    kernels,
                    device,
                )?,
                up: Linear::load(
                    gguf,
                    &format!("{p}.ffn_up"),
                    (ffn, hidden),
                    Bias::Required,
                    kernels,
                    device,
                )?,
                down: Linear::load(
                    gguf,
                    &format!("{p}.ffn_down"),
                    (hidden, ffn),
                    Bias::Required,
                    kernels,
                    device,
                )?,
            });
        }
        Ok(Self {
            embedding,
            layers,
            norm: layer_norm(gguf, "output_norm")?,
            output: Linear::load(
                gguf,
                "output",
                (vocab, hidden),
                Bias::IfPresent,
                kernels,
                device,
            )?,
            rope: Rope::new(rope_dims, 10_000.0, context, true, device)?,
            n_head,
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
    ) -> Result<Option<Tensor>> {
        let device = Device::Cpu;
        let pos = cache.len();
        let seq = tokens.len();
        let hidden = self.n_head * self.head_dim;
        let mut x = self.embedding.embedding(&Tensor::new(tokens, &device)?)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &device)?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.norm.forward(&x)?;
            let (q, k, v) = match &layer.qkv {
                Qkv::Fused(w) => {
                    let qkv = w.forward(&h)?;
                    (
                        qkv.narrow(1, 0, hidden)?,
                        qkv.narrow(1, hidden, hidden)?,
                        qkv.narrow(1, 2 * hidden, hidden)?,
                    )
                }
                Qkv::Split(q, k, v) => (q.forward(&h)?, k.forward(&h)?, v.forward(&h)?),
            };
            let q = self.rope.apply(&self.heads(&q)?, pos)?;
            let k = self.rope.apply(&self.heads(&k)?, pos)?;
            let v = self.heads(&v)?;
            let (k, v) = cache.append(i, &k, &v)?;
            let a = layer.o.forward(&attention(&q, &k, &v, mask.as_ref())?)?;
            let ff = layer.down.forward(&layer.up.forward(&h)?.gelu()?)?;
            x = ((x + a)? + ff)?;
        }
        let x = self.norm.forward(&x)?;
        project_logits(&x, logits, |rows| self.output.forward(rows))
    }

    /// `(seq, hidden)` -> `(heads, seq, head_dim)`.
    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let seq = x.dim(0)?;
        Ok(x.reshape((seq, self.n_head, self.head_dim))?
            .transpose(0, 1)?
            .contiguous()?)
    }
}
