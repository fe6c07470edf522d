//! Causal grouped-query attention over plain slices, the way a forward pass needs it: each
//! query sees only the keys up to its own position (the masked half is never computed), the
//! softmax runs on a vectorisable exponential, and (head, query) pairs are split between the
//! threads of candle's worker pool. Used by the llama-shaped models for prompts and decoding.

use std::ops::Range;

use half::f16;

use super::exp;

/// What the key/value cache holds: f32, or f16 (half the bytes for a decoding step to read, the
/// attention's main cost on long contexts). Arithmetic is f32 either way.
pub trait KvValue: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;

    /// Sixteen consecutive values as f32.
    ///
    /// # Safety
    /// `p` points at 16 readable values; the CPU runs AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl KvValue for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: as the trait's contract.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl KvValue for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: as the trait's contract (AVX-512 F converts 16 halves at once).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
}

/// Whether a cache of f16 values is read at vector speed for this head size: the AVX-512 loops
/// convert 16 at a time; elsewhere each value would be converted on its own (several times
/// slower than f32 where the build does not enable F16C), so callers keep f32 there.
pub fn f16_is_fast(dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return simd::run(dim).is_some();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = dim;
        false
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Query heads; a multiple of `n_kv`.
    pub n_head: usize,
    /// Key/value heads.
    pub n_kv: usize,
    /// Values per head.
    pub dim: usize,
    /// New positions (queries).
    pub seq: usize,
    /// Cached positions before the queries.
    pub pos: usize,
    /// Distance between two key (or value) heads in the cache slices, in floats.
    pub head_stride: usize,
}

/// `q`: `(seq, n_head * dim)` as projected (after rotary embedding); `k`, `v`: the cache, head
/// `h` of position `j` at `h * head_stride + j * dim`, holding at least `pos + seq` positions.
/// Returns `(seq, n_head * dim)`.
pub fn attention<T: KvValue>(q: &[f32], k: &[T], v: &[T], shape: Heads) -> Vec<f32> {
    let Heads {
        n_head, seq, dim, ..
    } = shape;
    assert_eq!(q.len(), seq * n_head * dim, "query shape");
    let mut out = vec![0f32; seq * n_head * dim];
    let target = Out(out.as_mut_ptr());
    // With the SIMD loops, the query heads sharing a key/value head go together: each key and
    // value is read once for the whole group instead of once per head.
    let group = n_head / shape.n_kv;
    #[cfg(target_arch = "x86_64")]
    let grouped = simd::run(dim).filter(|_| group <= simd::MAX_GROUP);
    #[cfg(not(target_arch = "x86_64"))]
    let grouped: Option<std::convert::Infallible> = None;
    let per = if grouped.is_some() { group } else { 1 };
    let runs = n_head / per;
    let work = |items: Range<usize>| {
        let mut scores = Vec::with_capacity(per * (shape.pos + seq));
        for item in items {
            let (i, r) = (item / runs, item % runs);
            let at = i * n_head * dim + r * per * dim;
            // SAFETY: every item owns its own `per * dim` outputs, inside `out`.
            let dst = unsafe { target.slice(at, per * dim) };
            let q = &q[at..at + per * dim];
            match grouped {
                #[cfg(target_arch = "x86_64")]
                Some(run) => {
                    // Run r is key/value head r; query i sees keys 0..=pos + i.
                    let keys = shape.pos + i + 1;
                    let head = r * shape.head_stride..r * shape.head_stride + keys * dim;
                    let scale = 1.0 / (dim as f32).sqrt();
                    // SAFETY: `simd::run` checked the CPU and the head size; the group fits.
                    unsafe { run.group(q, &k[head.clone()], &v[head], scale, &mut scores, dst) };
                }
                _ => one_query(q, k, v, shape, i, r, &mut scores, dst),
            }
        }
    };
    let items = seq * runs;
    // A single item, or a handful of dot products, is not worth waking the pool for. A decoding
    // step's few items (one per key/value head) each hold a whole group of query heads over the
    // context: worth it from about a thousand (query head, key) pairs.
    if items < 2 || seq * n_head * (shape.pos + seq) < 1024 {
        work(0..items);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(items, work);
    }
    out
}

/// Where the pool's threads write; each (query, head) item writes its own values.
#[derive(Clone, Copy)]
struct Out(*mut f32);

// SAFETY: used only in `attention`, whose items write disjoint ranges.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

impl Out {
    /// # Safety
    /// `at..at + len` is inside the buffer and no one else uses it meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

#[allow(clippy::too_many_arguments)]
fn one_query<T: KvValue>(
    q: &[f32],
    k: &[T],
    v: &[T],
    shape: Heads,
    i: usize,
    h: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Heads {
        n_head,
        n_kv,
        dim,
        pos,
        head_stride,
        ..
    } = shape;
    let kv = h / (n_head / n_kv);
    let keys = pos + i + 1;
    let k = &k[kv * head_stride..kv * head_stride + keys * dim];
    let v = &v[kv * head_stride..kv * head_stride + keys * dim];
    let scale = 1.0 / (dim as f32).sqrt();
    scores.clear();
    #[cfg(target_arch = "x86_64")]
    let simd = simd::run(dim);
    #[cfg(not(target_arch = "x86_64"))]
    let simd: Option<std::convert::Infallible> = None;
    match simd {
        // SAFETY: `simd::run` checked the CPU and the head size.
        #[cfg(target_arch = "x86_64")]
        Some(run) => unsafe { run.scores(q, k, scale, scores) },
        _ => scores.extend(k.chunks_exact(dim).map(|key| dot(q, key) * scale)),
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for s in scores.iter_mut() {
        *s = exp(*s - max);
    }
    let inv = 1.0 / scores.iter().sum::<f32>();
    match simd {
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Some(run) => unsafe { run.weighted_sum(scores, v, inv, out) },
        _ => {
            out.fill(0.0);
            for (p, value) in scores.iter().zip(v.chunks_exact(dim)) {
                for (o, x) in out.iter_mut().zip(value) {
                    *o += p * x.to_f32();
                }
            }
            for o in out.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// AVX-512 score and value loops for head sizes of 64 and 128 (the query, and the running sum
/// of values, stay in registers across all keys).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::KvValue;

    #[derive(Clone, Copy)]
    pub enum Run {
        Dim64,
        Dim128,
    }

    /// Most query heads per key/value head that [`Run::group`] takes.
    pub const MAX_GROUP: usize = 8;

    pub fn run(dim: usize) -> Option<Run> {
        if !is_x86_feature_detected!("avx512f") {
            return None;
        }
        match dim {
            64 => Some(Run::Dim64),
            128 => Some(Run::Dim128),
            _ => None,
        }
    }

    impl Run {
        /// # Safety
        /// The CPU runs AVX-512 F; `q` has the run's head size and `keys` whole heads of it.
        pub unsafe fn scores<T: KvValue>(
            self,
            q: &[f32],
            keys: &[T],
            scale: f32,
            out: &mut Vec<f32>,
        ) {
            unsafe {
                match self {
                    Self::Dim64 => scores::<T, 4>(q, keys, scale, out),
                    Self::Dim128 => scores::<T, 8>(q, keys, scale, out),
                }
            }
        }

        /// `out = inv * sum_j p_j * v_j`.
        ///
        /// # Safety
        /// As [`Run::scores`], with `out` of the head size.
        pub unsafe fn weighted_sum<T: KvValue>(
            self,
            p: &[f32],
            values: &[T],
            inv: f32,
            out: &mut [f32],
        ) {
            unsafe {
                match self {
                    Self::Dim64 => weighted_sum::<T, 4>(p, values, inv, out),
                    Self::Dim128 => weighted_sum::<T, 8>(p, values, inv, out),
                }
            }
        }
    }

    impl Run {
        /// Attention for the `q.len() / dim` query heads (at most [`MAX_GROUP`]) that share
        /// `keys` and `values` (whole rows of the head size, all of them visible), into `out`.
        ///
        /// # Safety
        /// As [`Run::scores`].
        pub unsafe fn group<T: KvValue>(
            self,
            q: &[f32],
            keys: &[T],
            values: &[T],
            scale: f32,
            scores: &mut Vec<f32>,
            out: &mut [f32],
        ) {
            unsafe {
                match self {
                    Self::Dim64 => group::<T, 4>(q, keys, values, scale, scores, out),
                    Self::Dim128 => group::<T, 8>(q, keys, values, scale, scores, out),
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn group<T: KvValue, const C: usize>(
        q: &[f32],
        keys: &[T],
        values: &[T],
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let dim = 16 * C;
        let (heads, n) = (q.len() / dim, keys.len() / dim);
        debug_assert!(heads <= MAX_GROUP);
        scores.clear();
        scores.resize(heads * n, 0.0);
        unsafe {
            // Scores, sixteen keys at a time for each head (the keys stay in L1 across the
            // group's heads): sixteen dot products' lanes summed by one transposing tree instead
            // of a horizontal sum each.
            let blocks = n / 16;
            for b in 0..blocks {
                let block = keys.as_ptr().add(16 * b * dim);
                for h in 0..heads {
                    let qh = q.as_ptr().add(h * dim);
                    let qc: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(qh.add(16 * c)));
                    let lanes: [__m512; 16] = std::array::from_fn(|j| {
                        let key = block.add(j * dim);
                        let mut acc = _mm512_mul_ps(qc[0], T::load16(key));
                        for (c, part) in qc.iter().enumerate().skip(1) {
                            acc = _mm512_fmadd_ps(*part, T::load16(key.add(16 * c)), acc);
                        }
                        acc
                    });
                    let sums = _mm512_mul_ps(sum16(lanes), _mm512_set1_ps(scale));
                    _mm512_storeu_ps(scores.as_mut_ptr().add(h * n + 16 * b), sums);
                }
            }
            // The last few keys one at a time, each loaded once for every head of the group.
            for (j, key) in keys.chunks_exact(dim).enumerate().skip(16 * blocks) {
                let k: [__m512; C] = std::array::from_fn(|c| T::load16(key.as_ptr().add(16 * c)));
                for h in 0..heads {
                    let qh = q.as_ptr().add(h * dim);
                    let mut acc = _mm512_mul_ps(_mm512_loadu_ps(qh), k[0]);
                    for (c, kc) in k.iter().enumerate().skip(1) {
                        acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(16 * c)), *kc, acc);
                    }
                    *scores.get_unchecked_mut(h * n + j) = _mm512_reduce_add_ps(acc) * scale;
                }
            }
            let mut inv = [0f32; MAX_GROUP];
            for (h, row) in scores.chunks_exact_mut(n).enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                for s in row.iter_mut() {
                    *s = super::exp(*s - max);
                }
                inv[h] = 1.0 / row.iter().sum::<f32>();
            }
            // Values, 16 dimensions at a time: each value slice loaded once for every head.
            for c in 0..C {
                let mut acc = [_mm512_setzero_ps(); MAX_GROUP];
                for (j, value) in values.chunks_exact(dim).enumerate() {
                    let vc = T::load16(value.as_ptr().add(16 * c));
                    for (h, a) in acc.iter_mut().enumerate().take(heads) {
                        let p = _mm512_set1_ps(*scores.get_unchecked(h * n + j));
                        *a = _mm512_fmadd_ps(p, vc, *a);
                    }
                }
                for (h, a) in acc.iter().enumerate().take(heads) {
                    let o = out.as_mut_ptr().add(h * dim + 16 * c);
                    _mm512_storeu_ps(o, _mm512_mul_ps(*a, _mm512_set1_ps(inv[h])));
                }
            }
        }
    }

    /// Lane `i` of the result is the sum of the sixteen lanes of `v[i]`: pairs of vectors are
    /// interleaved and added, halving the vectors and doubling the sums each holds, in four
    /// rounds (45 instructions where sixteen horizontal sums take about 130).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum16(v: [__m512; 16]) -> __m512 {
        // Per 128-bit lane: partial sums of v[2k] in elements 0 and 2, of v[2k + 1] in 1 and 3.
        let a: [__m512; 8] = std::array::from_fn(|k| {
            let (x, y) = (v[2 * k], v[2 * k + 1]);
            _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
        });
        // Per 128-bit lane: element e holds a partial sum of v[4k + e].
        let b: [__m512; 4] = std::array::from_fn(|k| {
            let (x, y) = (_mm512_castps_pd(a[2 * k]), _mm512_castps_pd(a[2 * k + 1]));
            _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
            )
        });
        // The four 128-bit lanes of each b[k] added together, into lane k.
        let pairs = |x: __m512, y: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
            )
        };
        pairs(pairs(b[0], b[1]), pairs(b[2], b[3]))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn scores<T: KvValue, const C: usize>(
        q: &[f32],
        keys: &[T],
        scale: f32,
        out: &mut Vec<f32>,
    ) {
        unsafe {
            let q: [__m512; C] = std::array::from_fn(|c| _mm512_loadu_ps(q.as_ptr().add(16 * c)));
            for key in keys.chunks_exact(16 * C) {
                let mut acc = _mm512_mul_ps(q[0], T::load16(key.as_ptr()));
                for (c, qc) in q.iter().enumerate().skip(1) {
                    acc = _mm512_fmadd_ps(*qc, T::load16(key.as_ptr().add(16 * c)), acc);
                }
                out.push(_mm512_reduce_add_ps(acc) * scale);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn weighted_sum<T: KvValue, const C: usize>(
        p: &[f32],
        values: &[T],
        inv: f32,
        out: &mut [f32],
    ) {
        unsafe {
            let mut acc = [_mm512_setzero_ps(); C];
            for (pj, value) in p.iter().zip(values.chunks_exact(16 * C)) {
                let pj = _mm512_set1_ps(*pj);
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(pj, T::load16(value.as_ptr().add(16 * c)), *a);
                }
            }
            for (c, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(
                    out.as_mut_ptr().add(16 * c),
                    _mm512_mul_ps(*a, _mm512_set1_ps(inv)),
                );
            }
        }
    }
}

/// A dot product in sixteen independent lanes (so it vectorises).
fn dot<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = a.chunks_exact(16).zip(b.chunks_exact(16));
    for (x, y) in chunks {
        for l in 0..16 {
            lanes[l] += x[l] * y[l].to_f32();
        }
    }
    let tail = a.len() / 16 * 16;
    let rest: f32 = a[tail..]
        .iter()
        .zip(&b[tail..])
        .map(|(x, y)| x * y.to_f32())
        .sum();
    lanes.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::tests::noise;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_horizontal_sums_at_once() {
        use std::arch::x86_64::*;
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let values = noise(7, 256);
        let mut got = [0f32; 16];
        // SAFETY: the CPU runs AVX-512 F (checked above); every load and store is in bounds.
        unsafe {
            let v: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(values.as_ptr().add(16 * i)));
            _mm512_storeu_ps(got.as_mut_ptr(), simd::sum16(v));
        }
        for (i, got) in got.iter().enumerate() {
            let want: f32 = values[16 * i..16 * (i + 1)].iter().sum();
            assert!((got - want).abs() < 1e-5, "lane {i}: {got} vs {want}");
        }
    }

    /// Attention the textbook way: full score matrix, mask, softmax, weighted sum.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: Heads) -> Vec<f32> {
        let mut out = vec![0f32; s.seq * s.n_head * s.dim];
        for i in 0..s.seq {
            for h in 0..s.n_head {
                let kv = h / (s.n_head / s.n_kv);
                let qi = &q[i * s.n_head * s.dim + h * s.dim..][..s.dim];
                let total = s.pos + s.seq;
                let mut w: Vec<f64> = (0..total)
                    .map(|j| {
                        if j > s.pos + i {
                            return f64::NEG_INFINITY;
                        }
                        let kj = &k[kv * s.head_stride + j * s.dim..][..s.dim];
                        qi.iter()
                            .zip(kj)
                            .map(|(a, b)| f64::from(a * b))
                            .sum::<f64>()
                            / (s.dim as f64).sqrt()
                    })
                    .collect();
                let max = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                w.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum: f64 = w.iter().sum();
                for (j, p) in w.iter().enumerate() {
                    let vj = &v[kv * s.head_stride + j * s.dim..][..s.dim];
                    for d in 0..s.dim {
                        out[i * s.n_head * s.dim + h * s.dim + d] +=
                            (p / sum * f64::from(vj[d])) as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_textbook_attention() {
        // Decode (one query), prompts with and without cached positions, a head size that is
        // not a multiple of 16, groups of 1 and 7 query heads per key head.
        for (n_head, n_kv, dim, seq, pos) in [
            (14, 2, 64, 1, 40),
            (8, 2, 128, 3, 17),
            (14, 2, 64, 9, 0),
            (4, 4, 24, 5, 3),
            (7, 1, 16, 70, 20),
            (7, 1, 64, 33, 20),
            (18, 2, 64, 4, 11),
        ] {
            let capacity = pos + seq + 5;
            let head_stride = capacity * dim;
            let shape = Heads {
                n_head,
                n_kv,
                dim,
                seq,
                pos,
                head_stride,
            };
            let q: Vec<f32> = noise(1, seq * n_head * dim)
                .iter()
                .map(|x| x * 3.0)
                .collect();
            let k = noise(2, n_kv * head_stride);
            let v = noise(3, n_kv * head_stride);
            let got = attention(&q, &k, &v, shape);
            let want = reference(&q, &k, &v, shape);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{shape:?}: {a} vs {b}");
            }
            // An f16 cache: the same arithmetic on the values it holds.
            let (k16, v16): (Vec<f16>, Vec<f16>) = (
                k.iter().map(|&x| f16::from_f32(x)).collect(),
                v.iter().map(|&x| f16::from_f32(x)).collect(),
            );
            let widened = |h: &[f16]| h.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
            let got = attention(&q, &k16, &v16, shape);
            let want = reference(&q, &widened(&k16), &widened(&v16), shape);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "f16 {shape:?}: {a} vs {b}");
            }
        }
    }
}
