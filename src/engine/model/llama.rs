//! Llama-shaped decoder (GGUF architectures `llama` and `qwen2`): RMSNorm, rotary attention with
//! grouped keys/values, SwiGLU feed-forward.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Storage, Tensor};

use super::{Bias, Kernels, Linear, LogitsFor, Rope, Stack, rms_norm, vector};
use crate::engine::error::{Error, Result};
use crate::engine::gguf::GgufFile;
use crate::engine::kernels::attention::{Heads, attention, f16_is_fast};
use crate::engine::kernels::exp;
use crate::engine::kv_cache::KvCache;

pub struct Llama {
    embedding: QMatMul,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    eps: f32,
    output: Linear,
    pub(super) rope: Rope,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// What the KV cache holds: f16 with the Fast kernels where attention reads f16 at vector
    /// speed (half the bytes per step, as llama.cpp's default cache), f32 otherwise and for the
    /// Reference and Exact paths.
    kv_dtype: DType,
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v projections (stacked when their formats allow).
    qkv: Stack,
    o: Linear,
    ffn_norm: Vec<f32>,
    /// FFN gate and up projections (stacked when their formats allow).
    gate_up: Stack,
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
            let norm = |g: &mut GgufFile, n: &str| -> Result<Vec<f32>> {
                Ok(vector(g, &format!("{p}.{n}.weight"), hidden, device)?.to_vec1()?)
            };
            layers.push(Layer {
                attn_norm: norm(gguf, "attn_norm")?,
                qkv: Stack::new(vec![
                    Linear::load(
                        gguf,
                        &format!("{p}.attn_q"),
                        (hidden, hidden),
                        qkv_bias,
                        kernels,
                        device,
                    )?,
                    Linear::load(
                        gguf,
                        &format!("{p}.attn_k"),
                        (kv_dim, hidden),
                        qkv_bias,
                        kernels,
                        device,
                    )?,
                    Linear::load(
                        gguf,
                        &format!("{p}.attn_v"),
                        (kv_dim, hidden),
                        qkv_bias,
                        kernels,
                        device,
                    )?,
                ]),
                o: Linear::load(
                    gguf,
                    &format!("{p}.attn_output"),
                    (hidden, hidden),
                    Bias::None,
                    kernels,
                    device,
                )?,
                ffn_norm: norm(gguf, "ffn_norm")?,
                gate_up: Stack::new(vec![
                    Linear::load(
                        gguf,
                        &format!("{p}.ffn_gate"),
                        (ffn, hidden),
                        Bias::None,
                        kernels,
                        device,
                    )?,
                    Linear::load(
                        gguf,
                        &format!("{p}.ffn_up"),
                        (ffn, hidden),
                        Bias::None,
                        kernels,
                        device,
                    )?,
                ]),
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
            norm: vector(gguf, "output_norm.weight", hidden, device)?.to_vec1()?,
            eps: eps as f32,
            output,
            rope: Rope::new(head_dim, base, context, arch == "qwen2", device)?,
            n_head,
            n_kv_head,
            head_dim,
            kv_dtype: if kernels == Kernels::Fast && f16_is_fast(head_dim) {
                DType::F16
            } else {
                DType::F32
            },
        })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// The layers run on plain rows of floats: the matrix products on the engine's kernels,
    /// attention straight over the cache's storage, and no tensor bookkeeping per step (which
    /// cost a third of a decoding step's time).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: LogitsFor,
        mut trace: Option<&mut Vec<Tensor>>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Tensor>> {
        let device = Device::Cpu;
        let pos = cache.len();
        let seq = tokens.len();
        let (d, n_head, n_kv) = (self.head_dim, self.n_head, self.n_kv_head);
        let ids = Tensor::new(tokens, &device)?;
        let mut x: Vec<f32> = self.embedding.embedding(&ids)?.flatten_all()?.to_vec1()?;
        let hidden = x.len() / seq;
        for (i, layer) in self.layers.iter().enumerate() {
            if stop() {
                return Err(Error::Interrupted);
            }
            let h = rms_norm(&x, &layer.attn_norm, self.eps);
            let [mut q, mut k, v]: [Vec<f32>; 3] =
                layer.qkv.forward_parts(&h, seq)?.try_into().map_err(|_| {
                    candle_core::Error::Msg("q/k/v projections: wrong number of outputs".into())
                })?;
            self.rope.apply_in_place(&mut q, n_head, d, pos);
            self.rope.apply_in_place(&mut k, n_kv, d, pos);
            let (k_all, v_all) = cache.append(i, &self.heads(k, seq)?, &self.heads(v, seq)?)?;
            let a = cached_attention(&q, &k_all, &v_all, n_head, seq, pos)?;
            for (x, o) in x.iter_mut().zip(layer.o.forward_rows(&a, seq)?) {
                *x += o;
            }
            let h = rms_norm(&x, &layer.ffn_norm, self.eps);
            let [mut ff, up]: [Vec<f32>; 2] = layer
                .gate_up
                .forward_parts(&h, seq)?
                .try_into()
                .map_err(|_| {
                    candle_core::Error::Msg("gate/up projections: wrong number of outputs".into())
                })?;
            for (g, u) in ff.iter_mut().zip(up) {
                *g = *g / (1.0 + exp(-*g)) * u;
            }
            for (x, y) in x.iter_mut().zip(layer.down.forward_rows(&ff, seq)?) {
                *x += y;
            }
            if let Some(states) = trace.as_deref_mut() {
                states.push(Tensor::from_vec(x.clone(), (seq, hidden), &device)?);
            }
        }
        let rows = match logits {
            LogitsFor::None => return Ok(None),
            LogitsFor::Last => &x[(seq - 1) * hidden..],
            LogitsFor::All => &x[..],
        };
        let n = rows.len() / hidden;
        let x = rms_norm(rows, &self.norm, self.eps);
        let out = self.output.forward_rows(&x, n)?;
        let vocab = out.len() / n;
        Ok(Some(Tensor::from_vec(out, (n, vocab), &device)?))
    }

    /// Rows `(seq, heads * head_dim)` -> the cache's `(heads, seq, head_dim)`, in its type.
    fn heads(&self, rows: Vec<f32>, seq: usize) -> Result<Tensor> {
        let heads = rows.len() / (seq * self.head_dim);
        Ok(
            Tensor::from_vec(rows, (seq, heads, self.head_dim), &Device::Cpu)?
                .transpose(0, 1)?
                .to_dtype(self.kv_dtype)?
                .contiguous()?,
        )
    }
}

/// Attention of `q` (`(seq, n_head * head_dim)`) over the cached keys and values the cache
/// returned (`(n_kv, pos + seq, head_dim)` views of its buffers), without copying them.
fn cached_attention(
    q: &[f32],
    k: &Tensor,
    v: &Tensor,
    n_head: usize,
    seq: usize,
    pos: usize,
) -> Result<Vec<f32>> {
    let (n_kv, _, dim) = k.dims3()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else {
        return Err(candle_core::Error::Msg("the KV cache is not in CPU memory".into()).into());
    };
    let shape = Heads {
        n_head,
        n_kv,
        dim,
        seq,
        pos,
        head_stride: k_layout.stride()[0],
    };
    debug_assert_eq!(k_layout.stride(), v_layout.stride());
    let (k_at, v_at) = (k_layout.start_offset(), v_layout.start_offset());
    Ok(match k.dtype() {
        DType::F16 => attention(
            q,
            &k_cpu.as_slice::<half::f16>()?[k_at..],
            &v_cpu.as_slice::<half::f16>()?[v_at..],
            shape,
        ),
        DType::F32 => attention(
            q,
            &k_cpu.as_slice::<f32>()?[k_at..],
            &v_cpu.as_slice::<f32>()?[v_at..],
            shape,
        ),
        other => {
            let message = format!("the KV cache holds {other:?}, not f16 or f32");
            return Err(candle_core::Error::Msg(message).into());
        }
    })
}
