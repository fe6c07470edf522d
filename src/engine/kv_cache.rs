//! The attention keys and values computed so far, owned by the engine (not hidden in the layers),
//! with the tokens they belong to. A new prompt keeps the longest common token prefix and computes
//! only the rest; truncation is O(1) (positions past `len` are simply overwritten later).

use candle_core::Tensor;

use super::error::Result;

pub struct KvCache {
    layers: Vec<LayerKv>,
    tokens: Vec<u32>,
}

/// One layer's keys and values, `(n_kv_heads, capacity, head_dim)` each; the first
/// `KvCache::len()` positions are valid.
struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

/// Positions are added in steps of this many, to avoid a copy per decoded token.
const GROWTH: usize = 256;

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: (0..n_layers)
                .map(|_| LayerKv { k: None, v: None })
                .collect(),
            tokens: Vec::new(),
        }
    }

    /// The tokens whose keys and values are cached, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// Releases the memory too.
    pub fn reset(&mut self) {
        self.tokens.clear();
        for layer in &mut self.layers {
            layer.k = None;
            layer.v = None;
        }
    }

    pub fn common_prefix_len(&self, tokens: &[u32]) -> usize {
        common_prefix(&self.tokens, tokens)
    }

    /// Writes `k`, `v` (`(n_kv_heads, n_new, head_dim)`) for the positions after the committed
    /// ones and returns views of all keys and values up to and including them. Nothing is
    /// committed until [`KvCache::commit`], so a forward pass that fails leaves the cache as it was.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let pos = self.tokens.len();
        let slot = &mut self.layers[layer];
        let k = write_at(&mut slot.k, k, pos)?;
        let v = write_at(&mut slot.v, v, pos)?;
        Ok((k, v))
    }

    pub(crate) fn commit(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }
}

fn write_at(buf: &mut Option<Tensor>, new: &Tensor, pos: usize) -> Result<Tensor> {
    let (heads, n, dim) = new.dims3()?;
    let needed = pos + n;
    let b = match buf {
        Some(b) if b.dim(1)? >= needed => b.clone(),
        _ => {
            let grown = needed.div_ceil(GROWTH) * GROWTH;
            let fresh = Tensor::zeros((heads, grown, dim), new.dtype(), new.device())?;
            if let Some(old) = buf.as_ref()
                && pos > 0
            {
                fresh.slice_set(&old.narrow(1, 0, pos)?.contiguous()?, 1, 0)?;
            }
            *buf = Some(fresh.clone());
            fresh
        }
    };
    b.slice_set(&new.contiguous()?, 1, pos)?;
    Ok(b.narrow(1, 0, needed)?)
}

/// How many tokens `a` and `b` start with in common.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
