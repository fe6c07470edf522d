//! Forward passes per architecture, as plain structs, and the pieces they share (rotary tables,
//! causal mask, grouped-query attention). The KV cache is passed in; models hold only weights.

mod llama;
mod phi2;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{D, DType, Device, Module, Tensor};

use super::kernels::{Format, QMatrix};

use super::error::{Error, Result};
use super::gguf::GgufFile;
use super::kv_cache::KvCache;

pub use llama::Llama;
pub use phi2::Phi2;

/// Which positions of a forward pass need logits. The output head is the largest matrix, so a
/// prefill that only warms the cache skips it, and a normal prompt computes only the last row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    None,
    Last,
    All,
}

/// Which code multiplies the quantized matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kernels {
    /// The engine's own kernels (`engine::kernels`) for the formats and CPUs they cover, candle
    /// for the rest.
    #[default]
    Fast,
    /// candle's quantized matmul everywhere: the unoptimised path the fast one is checked
    /// against.
    Reference,
    /// Weights dequantized to f32 at load and multiplied in f32: the exact product of the
    /// file's weights, which both quantized paths approximate (tests measure their errors).
    Exact,
}

pub enum Model {
    /// `llama` and `qwen2` (Qwen2 is llama with biases on q/k/v and NeoX rotary embedding).
    Llama(Llama),
    Phi2(Phi2),
}

impl Model {
    pub fn load(gguf: &mut GgufFile, kernels: Kernels, device: &Device) -> Result<Self> {
        let arch = gguf.string("general.architecture")?.to_owned();
        match arch.as_str() {
            "llama" | "qwen2" => Ok(Self::Llama(Llama::load(gguf, &arch, kernels, device)?)),
            "phi2" => Ok(Self::Phi2(Phi2::load(gguf, kernels, device)?)),
            _ => Err(Error::UnsupportedArchitecture {
                path: gguf.path().to_owned(),
                architecture: arch,
            }),
        }
    }

    pub fn n_layers(&self) -> usize {
        match self {
            Self::Llama(m) => m.n_layers(),
            Self::Phi2(m) => m.n_layers(),
        }
    }

    pub fn context_length(&self) -> usize {
        match self {
            Self::Llama(m) => m.rope.max_positions(),
            Self::Phi2(m) => m.rope.max_positions(),
        }
    }

    /// Runs `tokens` after the cached positions, appends their keys/values to `cache`, and
    /// returns logits `(n, vocab)` for the positions `logits` asks for.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: LogitsFor,
    ) -> Result<Option<Tensor>> {
        self.forward_until(tokens, cache, logits, &|| false)
    }

    /// [`Model::forward`] that gives up with [`Error::Interrupted`] when `stop` says so between
    /// two layers (llama-shaped models; phi2 runs to the end), leaving the cache as it was.
    pub fn forward_until(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: LogitsFor,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Tensor>> {
        if tokens.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let end = cache.len() + tokens.len();
        if end > self.context_length() {
            return Err(Error::ContextOverflow {
                tokens: end,
                context: self.context_length(),
            });
        }
        let out = match self {
            Self::Llama(m) => m.forward(tokens, cache, logits, None, stop)?,
            Self::Phi2(m) => m.forward(tokens, cache, logits)?,
        };
        cache.commit(tokens);
        Ok(out)
    }

    /// The hidden state `(n, hidden)` after each layer and then the logits `(n, vocab)` of all
    /// positions, for `tokens` from position 0 (tests compare kernels layer by layer). Only the
    /// llama-shaped models trace their layers; phi2 gives its logits alone.
    pub fn trace(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<Tensor>> {
        let mut states = Vec::new();
        let logits = match self {
            Self::Llama(m) => {
                m.forward(tokens, cache, LogitsFor::All, Some(&mut states), &|| false)?
            }
            Self::Phi2(m) => m.forward(tokens, cache, LogitsFor::All)?,
        };
        cache.commit(tokens);
        states.extend(logits);
        Ok(states)
    }
}

/// Rotary embedding tables for positions `0..max_positions`.
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
    /// The same tables as plain `(max_positions, dims / 2)` rows, for [`Rope::apply_in_place`].
    cos_rows: Vec<f32>,
    sin_rows: Vec<f32>,
    /// Number of leading dimensions of each head that rotate (phi2 rotates part of the head).
    dims: usize,
    /// NeoX style rotates the two halves of the head; the original (GGUF llama) style rotates
    /// adjacent pairs.
    neox: bool,
}

impl Rope {
    pub(crate) fn new(
        dims: usize,
        base: f32,
        max_positions: usize,
        neox: bool,
        device: &Device,
    ) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..dims)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / dims as f32))
            .collect();
        let n = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, n), device)?;
        let positions = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let angles = positions.matmul(&inv_freq)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        Ok(Self {
            cos_rows: cos.flatten_all()?.to_vec1()?,
            sin_rows: sin.flatten_all()?.to_vec1()?,
            cos,
            sin,
            dims,
            neox,
        })
    }

    pub(crate) fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// `x`: `(heads, seq, head_dim)` for positions `pos..pos + seq`.
    pub(crate) fn apply(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (heads, seq, head_dim) = x.dims3()?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let rotate = |t: &Tensor| -> Result<Tensor> {
            let t = t.contiguous()?.reshape((1, heads, seq, self.dims))?;
            let r = if self.neox {
                candle_nn::rotary_emb::rope(&t, &cos, &sin)?
            } else {
                candle_nn::rotary_emb::rope_i(&t, &cos, &sin)?
            };
            Ok(r.reshape((heads, seq, self.dims))?)
        };
        if self.dims == head_dim {
            rotate(x)
        } else {
            let rotated = rotate(&x.narrow(D::Minus1, 0, self.dims)?)?;
            let pass = x.narrow(D::Minus1, self.dims, head_dim - self.dims)?;
            Ok(Tensor::cat(&[&rotated, &pass], D::Minus1)?)
        }
    }
}

impl Rope {
    /// Rotates `x` (`(seq, heads * head_dim)`, as projected) for positions `pos..pos + seq`.
    pub(crate) fn apply_in_place(&self, x: &mut [f32], heads: usize, head_dim: usize, pos: usize) {
        let half = self.dims / 2;
        for (i, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let at = (pos + i) * half;
            let (cos, sin) = (&self.cos_rows[at..at + half], &self.sin_rows[at..at + half]);
            for head in row.chunks_exact_mut(head_dim) {
                for j in 0..half {
                    let (a, b) = if self.neox {
                        (j, j + half)
                    } else {
                        (2 * j, 2 * j + 1)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[j] - x1 * sin[j];
                    head[b] = x0 * sin[j] + x1 * cos[j];
                }
            }
        }
    }
}

/// `x / sqrt(mean(x^2) + eps) * weight` for each row of `x`, as candle's RmsNorm.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let n = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let sum2: f32 = row.iter().map(|v| v * v).sum();
        let m = (sum2 / n as f32 + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(v, w)| v / m * w));
    }
    out
}

/// Additive causal mask `(seq, pos + seq)`: query `i` (at position `pos + i`) sees keys `0..=pos + i`.
pub(crate) fn causal_mask(seq: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let total = pos + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?)
}

/// Grouped-query attention without copying keys per query head: the query heads that share a
/// key/value head are stacked along the sequence axis.
/// `q`: `(n_head, seq, d)`, `k`/`v`: `(n_kv, total, d)`, `mask`: `(seq, total)`.
/// Returns `(seq, n_head * d)`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (n_head, seq, d) = q.dims3()?;
    let (n_kv, total, _) = k.dims3()?;
    let group = n_head / n_kv;
    let q = q.contiguous()?.reshape((n_kv, group * seq, d))?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match mask {
        Some(mask) => scores
            .reshape((n_kv, group, seq, total))?
            .broadcast_add(mask)?
            .reshape((n_kv, group * seq, total))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let y = probs.matmul(&v.contiguous()?)?;
    Ok(y.reshape((n_head, seq, d))?
        .transpose(0, 1)?
        .reshape((seq, n_head * d))?)
}

/// Projects the final hidden states `(n, hidden)` to logits for the positions asked for.
pub(crate) fn project_logits(
    hidden: &Tensor,
    which: LogitsFor,
    head: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Option<Tensor>> {
    let n = hidden.dim(0)?;
    let rows = match which {
        LogitsFor::None => return Ok(None),
        LogitsFor::Last => hidden.narrow(0, n - 1, 1)?,
        LogitsFor::All => hidden.clone(),
    };
    Ok(Some(head(&rows)?))
}

/// Matrices that multiply the same input (q/k/v, gate/up): one stacked product on our kernels
/// when their formats allow (one activation quantization and one pass of the thread pool instead
/// of several), else one product each.
pub(crate) enum Stack {
    One { linear: Linear, widths: Vec<usize> },
    Each(Vec<Linear>),
}

impl Stack {
    pub(crate) fn new(parts: Vec<Linear>) -> Self {
        let widths: Vec<usize> = parts.iter().map(Linear::rows).collect();
        match Linear::stack(parts) {
            Ok(linear) => Self::One { linear, widths },
            Err(parts) => Self::Each(parts),
        }
    }

    /// Each part's output for `x` (`n` rows), `(n, rows_i)` each.
    pub(crate) fn forward_parts(&self, x: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Each(parts) => parts.iter().map(|l| l.forward_rows(x, n)).collect(),
            Self::One { linear, widths } => {
                let y = linear.forward_rows(x, n)?;
                let total: usize = widths.iter().sum();
                let mut parts: Vec<Vec<f32>> =
                    widths.iter().map(|w| Vec::with_capacity(n * w)).collect();
                for row in y.chunks_exact(total) {
                    let mut at = 0;
                    for (part, w) in parts.iter_mut().zip(widths) {
                        part.extend_from_slice(&row[at..at + w]);
                        at += w;
                    }
                }
                Ok(parts)
            }
        }
    }
}

/// A quantized weight matrix with an optional bias.
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Vec<f32>>,
}

enum Weight {
    Fast(QMatrix),
    Candle(QMatMul),
}

impl Linear {
    pub(crate) fn load(
        gguf: &mut GgufFile,
        name: &str,
        out_in: (usize, usize),
        bias: Bias,
        kernels: Kernels,
        device: &Device,
    ) -> Result<Self> {
        let weight = Self::weight(gguf, &format!("{name}.weight"), out_in, kernels, device)?;
        let bias_name = format!("{name}.bias");
        let bias = match bias {
            Bias::Required => Some(gguf.tensor_shaped(&bias_name, &[out_in.0], device)?),
            Bias::IfPresent if gguf.has_tensor(&bias_name) => {
                Some(gguf.tensor_shaped(&bias_name, &[out_in.0], device)?)
            }
            Bias::IfPresent | Bias::None => None,
        };
        Ok(Self {
            weight,
            bias: bias.map(|b| b.dequantize(device)?.to_vec1()).transpose()?,
        })
    }

    /// A matrix on the engine's kernels when they cover its format and this CPU, else candle's.
    fn weight(
        gguf: &mut GgufFile,
        name: &str,
        (rows, cols): (usize, usize),
        kernels: Kernels,
        device: &Device,
    ) -> Result<Weight> {
        let tensor = gguf.tensor_shaped(name, &[rows, cols], device)?;
        let format = match tensor.dtype() {
            GgmlDType::Q5_0 => Some(Format::Q5_0),
            GgmlDType::Q8_0 => Some(Format::Q8_0),
            GgmlDType::Q4K => Some(Format::Q4K),
            GgmlDType::Q6K => Some(Format::Q6K),
            _ => None,
        };
        if kernels == Kernels::Exact {
            return Ok(Weight::Candle(QMatMul::Tensor(tensor.dequantize(device)?)));
        }
        let fast = match (kernels, format) {
            (Kernels::Fast, Some(format)) => {
                QMatrix::new(format, tensor.data()?.into_owned(), rows, cols)
            }
            _ => None,
        };
        Ok(match fast {
            Some(m) => Weight::Fast(m),
            None => Weight::Candle(QMatMul::from_qtensor(tensor)?),
        })
    }

    /// A bias-free matrix (the output head).
    pub(crate) fn load_matrix(
        gguf: &mut GgufFile,
        name: &str,
        out_in: (usize, usize),
        kernels: Kernels,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: Self::weight(gguf, name, out_in, kernels, device)?,
            bias: None,
        })
    }

    fn rows(&self) -> usize {
        match &self.weight {
            Weight::Fast(m) => m.rows(),
            Weight::Candle(m) => match m {
                QMatMul::QTensor(t) => t.shape().dims().first().copied().unwrap_or(0),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dim(0).unwrap_or(0),
            },
        }
    }

    /// One linear map for several on our kernels (see [`QMatrix::stack`]), biases stacked too
    /// (zeros for parts without one); the parts back, untouched, when they cannot be stacked.
    fn stack(parts: Vec<Linear>) -> std::result::Result<Linear, Vec<Linear>> {
        let matrices: Vec<&QMatrix> = parts
            .iter()
            .filter_map(|l| match &l.weight {
                Weight::Fast(m) => Some(m),
                Weight::Candle(_) => None,
            })
            .collect();
        if parts.len() < 2 || matrices.len() != parts.len() || !QMatrix::stackable(&matrices) {
            return Err(parts);
        }
        let bias = parts.iter().any(|l| l.bias.is_some()).then(|| {
            parts
                .iter()
                .flat_map(|l| l.bias.clone().unwrap_or_else(|| vec![0.0; l.rows()]))
                .collect()
        });
        let matrices = parts
            .into_iter()
            .filter_map(|l| match l.weight {
                Weight::Fast(m) => Some(m),
                Weight::Candle(_) => None,
            })
            .collect();
        Ok(Linear {
            weight: Weight::Fast(QMatrix::stack(matrices).ok_or(Vec::new())?),
            bias,
        })
    }

    /// `x` (`n` rows) times the matrix, plus the bias, as plain rows.
    pub(crate) fn forward_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut y = match &self.weight {
            Weight::Fast(w) => w.matmul(x, n),
            Weight::Candle(w) => {
                let t = Tensor::from_vec(x.to_vec(), (n, x.len() / n.max(1)), &Device::Cpu)?;
                w.forward(&t)?.flatten_all()?.to_vec1()?
            }
        };
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        Ok(y)
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.weight {
            Weight::Candle(w) => w.forward(x)?,
            Weight::Fast(w) => {
                let (n, _) = x.dims2()?;
                let values = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(w.matmul(&values, n), (n, w.rows()), x.device())?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&Tensor::from_slice(b, b.len(), x.device())?),
            None => Ok(y),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Bias {
    Required,
    IfPresent,
    None,
}

/// Loads an F32 (or dequantizable) vector such as a norm weight.
pub(crate) fn vector(
    gguf: &mut GgufFile,
    name: &str,
    len: usize,
    device: &Device,
) -> Result<Tensor> {
    Ok(gguf
        .tensor_shaped(name, &[len], device)?
        .dequantize(device)?)
}
