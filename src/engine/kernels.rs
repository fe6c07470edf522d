//! Quantized matrix kernels the model files reach through [`Q5_0Matrix::matmul`]. candle 0.11 has
//! no SIMD dot product for Q5_0 blocks on x86 (it falls back to a scalar loop, ~80% of all engine
//! time on the default model, whose attention and FFN gate/up matrices are Q5_0), so this module
//! has its own: activations are quantized to Q8_0 exactly as candle does it, and each Q5_0 x Q8_0
//! block product is computed with AVX2 integer dot products when the CPU has them (detected at
//! run time), with a scalar path that matches candle's reference loop otherwise. The integer
//! products are exact and the per-block float accumulation follows candle's order, so results
//! are bit-identical to candle's (checked by the tests): Qwen2.5's very large activations amplify
//! a mere change of float summation order to ~0.5 in the final logits.
//!
//! Block layouts (ggml's): Q5_0 = f16 scale, 32 high bits, 16 bytes of low nibbles (22 bytes per
//! 32 weights, value = scale * (nibble | high_bit << 4) - 16 * scale); Q8_0 = f16 scale, 32 i8.
#![allow(unsafe_code)]

use half::f16;

pub const BLOCK: usize = 32;
pub const Q5_0_BYTES: usize = 22;
pub const Q8_0_BYTES: usize = 34;

/// A row-major Q5_0 weight matrix `(rows, cols)`.
pub struct Q5_0Matrix {
    data: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl Q5_0Matrix {
    /// `data` holds `rows * cols / 32` blocks; `cols` must be a multiple of 32.
    pub fn new(data: Vec<u8>, rows: usize, cols: usize) -> Option<Self> {
        (cols.is_multiple_of(BLOCK) && data.len() == rows * cols / BLOCK * Q5_0_BYTES)
            .then_some(Self { data, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn row(&self, r: usize) -> &[u8] {
        let len = self.cols / BLOCK * Q5_0_BYTES;
        &self.data[r * len..(r + 1) * len]
    }

    /// `x` (`n` rows of `cols` values, row-major) times the transposed matrix: `n` rows of
    /// `rows` values. Work is split over weight rows between the threads of rayon's pool.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.cols);
        let blocks = self.cols / BLOCK;
        let mut xq = vec![0u8; n * blocks * Q8_0_BYTES];
        for (row, out) in x
            .chunks_exact(self.cols)
            .zip(xq.chunks_exact_mut(blocks * Q8_0_BYTES))
        {
            quantize_q8_0(row, out);
        }
        let (dot, dot4) = (dot_fn(), dot4_fn());
        let x_row = |i: usize| &xq[i * blocks * Q8_0_BYTES..(i + 1) * blocks * Q8_0_BYTES];
        // Transposed result: each weight row's outputs for all activation rows are contiguous,
        // so threads write disjoint ranges. candle's own worker pool runs it (the caller joins
        // in), so the engine never has two pools competing for the cores.
        let mut out_t = vec![0f32; self.rows * n];
        let out_ptr = SharedOut(out_t.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(self.rows, |range| {
            for r in range {
                let w = self.row(r);
                let mut i = 0;
                while i < n {
                    // SAFETY (both writes): r < rows and i + k < n, so the index is inside
                    // `out_t`, which outlives this call; each (r, i) is written by exactly one
                    // task because the row ranges are disjoint.
                    if i + 4 <= n {
                        let v = dot4(w, [x_row(i), x_row(i + 1), x_row(i + 2), x_row(i + 3)]);
                        for (k, v) in v.into_iter().enumerate() {
                            unsafe { out_ptr.write(r * n + i + k, v) };
                        }
                        i += 4;
                    } else {
                        unsafe { out_ptr.write(r * n + i, dot(w, x_row(i))) };
                        i += 1;
                    }
                }
            }
        });
        if n == 1 {
            return out_t;
        }
        let mut out = vec![0f32; n * self.rows];
        for (r, col) in out_t.chunks_exact(n).enumerate() {
            for (i, v) in col.iter().enumerate() {
                out[i * self.rows + r] = *v;
            }
        }
        out
    }
}

/// Quantizes `x` (a multiple of 32 values) into Q8_0 blocks, as candle's `BlockQ8_0::from_float`.
pub fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (values, block) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        block[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (q, v) in block[2..].iter_mut().zip(values) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

type DotFn = fn(&[u8], &[u8]) -> f32;

/// The output buffer, shared by the pool's threads, each writing its own rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: used only in `matmul`, where every thread writes a disjoint set of indices.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `index` is in bounds of the buffer and no other thread writes it concurrently.
    unsafe fn write(self, index: usize, value: f32) {
        unsafe { *self.0.add(index) = value };
    }
}

/// The best Q5_0 x Q8_0 dot product this CPU can run.
pub fn dot_fn() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return dot_q5_0_q8_0_avx2;
    }
    dot_q5_0_q8_0_scalar
}

fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

type Dot4Fn = fn(&[u8], [&[u8]; 4]) -> [f32; 4];

/// One weight row against four activation rows.
pub fn dot4_fn() -> Dot4Fn {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return dot4_q5_0_q8_0_avx2;
    }
    |w, x| x.map(|x| dot_q5_0_q8_0_scalar(w, x))
}

#[cfg(target_arch = "x86_64")]
fn dot4_q5_0_q8_0_avx2(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
    // SAFETY: only returned by `dot4_fn` after detecting AVX2 and FMA.
    unsafe { avx2::dot4_q5_0_q8_0(w, x) }
}

/// Reference: candle's loop, block by block.
pub fn dot_q5_0_q8_0_scalar(w: &[u8], x: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (wb, xb) in w.chunks_exact(Q5_0_BYTES).zip(x.chunks_exact(Q8_0_BYTES)) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let qs = &wb[6..22];
        let xq = &xb[2..34];
        let mut sumi = 0i32;
        for j in 0..16 {
            let lo = i32::from(qs[j] & 0x0F) | (((qh >> j) & 1) << 4) as i32;
            let hi = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
            sumi += (lo - 16) * i32::from(xq[j] as i8) + (hi - 16) * i32::from(xq[j + 16] as i8);
        }
        sum += sumi as f32 * scale(wb) * scale(xb);
    }
    sum
}

#[cfg(target_arch = "x86_64")]
fn dot_q5_0_q8_0_avx2(w: &[u8], x: &[u8]) -> f32 {
    // SAFETY: only returned by `dot_fn` after detecting AVX2 and FMA.
    unsafe { avx2::dot_q5_0_q8_0(w, x) }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Q5_0_BYTES, Q8_0_BYTES, scale};

    /// One byte per bit of `bits`: 0xFF where the bit is set, 0 elsewhere.
    #[target_feature(enable = "avx2")]
    fn spread_bits(bits: u32) -> __m256i {
        // Byte i takes the byte of `bits` that holds bit i, then keeps only that bit's position
        // clear in an otherwise all-ones mask: all ones afterwards means the bit was set.
        let which_byte = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), which_byte);
        let other_bits = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, other_bits), _mm256_set1_epi64x(-1))
    }

    /// The 32 weights of one Q5_0 block as signed bytes.
    #[target_feature(enable = "avx2")]
    fn unpack(wb: &[u8]) -> __m256i {
        // SAFETY: wb has Q5_0_BYTES bytes, so wb[6..22] is in bounds; unaligned loads are fine.
        let qs = unsafe { _mm_loadu_si128(wb.as_ptr().add(6).cast()) };
        // Values 0..15 from the low nibbles, 16..31 from the high ones.
        let nibbles = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(qs, 4), qs),
            _mm256_set1_epi8(0x0F),
        );
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        // Where the fifth bit is clear the value is nibble - 16, i.e. nibble | 0xF0 as i8.
        let high = _mm256_andnot_si256(spread_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
        _mm256_or_si256(nibbles, high)
    }

    /// Eight i32 partial sums of the signed byte products of `w` and the Q8_0 block `xb`.
    #[target_feature(enable = "avx2")]
    fn products(w: __m256i, w_abs: __m256i, xb: &[u8]) -> __m256i {
        // SAFETY: xb has Q8_0_BYTES bytes, so xb[2..34] is in bounds.
        let xq = unsafe { _mm256_loadu_si256(xb.as_ptr().add(2).cast()) };
        // Signed x signed bytes via |w| * (x with w's sign), pairwise into i16 then i32.
        let pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xq, w));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// The exact integer sum of the eight lanes.
    #[target_feature(enable = "avx2")]
    fn sum_i32(v: __m256i) -> i32 {
        let half = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let quarter = _mm_add_epi32(half, _mm_unpackhi_epi64(half, half));
        _mm_cvtsi128_si32(_mm_add_epi32(quarter, _mm_shuffle_epi32(quarter, 1)))
    }

    /// The eight exact lane sums of `v[0..8]`, as floats, in order.
    #[target_feature(enable = "avx2")]
    fn sums8(v: &[__m256i; 8]) -> __m256 {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        let s0123 = _mm_add_epi32(
            _mm256_castsi256_si128(h0123),
            _mm256_extracti128_si256(h0123, 1),
        );
        let s4567 = _mm_add_epi32(
            _mm256_castsi256_si128(h4567),
            _mm256_extracti128_si256(h4567, 1),
        );
        _mm256_cvtepi32_ps(_mm256_set_m128i(s4567, s0123))
    }

    /// Adds `(sum_b * dw_b) * dx_b` for eight blocks to `acc` one block after the other, the
    /// float operations in candle's order (the products lane-wise, the additions in sequence).
    #[target_feature(enable = "avx2")]
    fn accumulate8(acc: f32, sums: __m256, dw: &[f32; 8], dx: &[f32; 8]) -> f32 {
        // SAFETY: both arrays hold eight floats; unaligned loads are fine.
        let (dw, dx) = unsafe { (_mm256_loadu_ps(dw.as_ptr()), _mm256_loadu_ps(dx.as_ptr())) };
        let mut terms = [0f32; 8];
        // SAFETY: `terms` holds eight floats.
        unsafe {
            _mm256_storeu_ps(
                terms.as_mut_ptr(),
                _mm256_mul_ps(_mm256_mul_ps(sums, dw), dx),
            )
        };
        terms.iter().fold(acc, |a, t| a + t)
    }

    /// One weight row against four activation rows: each weight block is unpacked once.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; every `x` holds as many blocks as `w`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_q5_0_q8_0(w: &[u8], x: [&[u8]; 4]) -> [f32; 4] {
        let blocks = w.len() / Q5_0_BYTES;
        let mut acc = [0f32; 4];
        let mut b = 0;
        while b + 8 <= blocks {
            let mut wq = [_mm256_setzero_si256(); 8];
            let mut w_abs = [_mm256_setzero_si256(); 8];
            let mut dw = [0f32; 8];
            for k in 0..8 {
                let wb = &w[(b + k) * Q5_0_BYTES..(b + k + 1) * Q5_0_BYTES];
                wq[k] = unpack(wb);
                w_abs[k] = _mm256_sign_epi8(wq[k], wq[k]);
                dw[k] = scale(wb);
            }
            for (a, xr) in acc.iter_mut().zip(x) {
                let mut p = [_mm256_setzero_si256(); 8];
                let mut dx = [0f32; 8];
                for k in 0..8 {
                    let xb = &xr[(b + k) * Q8_0_BYTES..(b + k + 1) * Q8_0_BYTES];
                    p[k] = products(wq[k], w_abs[k], xb);
                    dx[k] = scale(xb);
                }
                *a = accumulate8(*a, sums8(&p), &dw, &dx);
            }
            b += 8;
        }
        for b in b..blocks {
            let wb = &w[b * Q5_0_BYTES..(b + 1) * Q5_0_BYTES];
            let wq = unpack(wb);
            let w_abs = _mm256_sign_epi8(wq, wq);
            let dw = scale(wb);
            for (a, xr) in acc.iter_mut().zip(x) {
                let xb = &xr[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
                *a += sum_i32(products(wq, w_abs, xb)) as f32 * dw * scale(xb);
            }
        }
        acc
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `w` and `x` hold the same number of blocks.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q5_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
        debug_assert_eq!(x.len() / Q8_0_BYTES, w.len() / Q5_0_BYTES);
        let blocks = w.len() / Q5_0_BYTES;
        let mut acc = 0f32;
        let mut b = 0;
        while b + 8 <= blocks {
            let mut p = [_mm256_setzero_si256(); 8];
            let (mut dw, mut dx) = ([0f32; 8], [0f32; 8]);
            for k in 0..8 {
                let wb = &w[(b + k) * Q5_0_BYTES..(b + k + 1) * Q5_0_BYTES];
                let xb = &x[(b + k) * Q8_0_BYTES..(b + k + 1) * Q8_0_BYTES];
                let wq = unpack(wb);
                p[k] = products(wq, _mm256_sign_epi8(wq, wq), xb);
                dw[k] = scale(wb);
                dx[k] = scale(xb);
            }
            acc = accumulate8(acc, sums8(&p), &dw, &dx);
            b += 8;
        }
        for (wb, xb) in w[b * Q5_0_BYTES..]
            .chunks_exact(Q5_0_BYTES)
            .zip(x[b * Q8_0_BYTES..].chunks_exact(Q8_0_BYTES))
        {
            let wq = unpack(wb);
            let sumi = sum_i32(products(wq, _mm256_sign_epi8(wq, wq), xb));
            acc += sumi as f32 * scale(wb) * scale(xb);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers (xorshift), no dependency needed.
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// Random Q5_0 blocks: random scales, high bits and nibbles.
    fn q5_0_blocks(seed: u64, blocks: usize) -> Vec<u8> {
        let raw = noise(seed, blocks * Q5_0_BYTES);
        let mut data = Vec::with_capacity(blocks * Q5_0_BYTES);
        for b in 0..blocks {
            let r = &raw[b * Q5_0_BYTES..(b + 1) * Q5_0_BYTES];
            data.extend_from_slice(&f16::from_f32(r[0] * 0.05).to_le_bytes());
            data.extend(r[2..22].iter().map(|v| ((v + 1.0) * 127.9) as u8));
        }
        data
    }

    /// Dequantized Q5_0 row, the straightforward way.
    fn dequantize(w: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        for wb in w.chunks_exact(Q5_0_BYTES) {
            let d = scale(wb);
            let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
            let mut vals = [0f32; 32];
            for j in 0..16 {
                let lo = (wb[6 + j] & 0x0F) as i32 | (((qh >> j) & 1) << 4) as i32;
                let hi = (wb[6 + j] >> 4) as i32 | (((qh >> (j + 16)) & 1) << 4) as i32;
                vals[j] = d * (lo - 16) as f32;
                vals[j + 16] = d * (hi - 16) as f32;
            }
            out.extend_from_slice(&vals);
        }
        out
    }

    #[test]
    fn simd_dot_equals_the_scalar_reference() {
        for blocks in [1, 2, 7, 8, 9, 16, 28, 152] {
            let w = q5_0_blocks(blocks as u64, blocks);
            let x = noise(99 + blocks as u64, blocks * BLOCK);
            let mut xq = vec![0u8; blocks * Q8_0_BYTES];
            quantize_q8_0(&x, &mut xq);
            let reference = dot_q5_0_q8_0_scalar(&w, &xq);
            let fast = dot_fn()(&w, &xq);
            assert!(
                reference.to_bits() == fast.to_bits(),
                "{blocks} blocks: {reference} vs {fast}"
            );
        }
    }

    #[test]
    fn four_row_dot_equals_four_single_dots() {
        for blocks in [3, 8, 28] {
            four_rows(blocks);
        }
    }

    fn four_rows(blocks: usize) {
        let w = q5_0_blocks(5 + blocks as u64, blocks);
        let xs: Vec<Vec<u8>> = (0..4)
            .map(|k| {
                let mut q = vec![0u8; blocks * Q8_0_BYTES];
                quantize_q8_0(&noise(k + 11, blocks * BLOCK), &mut q);
                q
            })
            .collect();
        let four = dot4_fn()(&w, [&xs[0], &xs[1], &xs[2], &xs[3]]);
        for (k, x) in xs.iter().enumerate() {
            let one = dot_q5_0_q8_0_scalar(&w, x);
            assert_eq!(
                four[k].to_bits(),
                one.to_bits(),
                "{k}: {} vs {one}",
                four[k]
            );
        }
    }

    #[test]
    fn matmul_matches_dequantized_f32_within_quantization_error() {
        // Awkward shapes: odd row counts, one to many activation rows.
        for (rows, cols, n) in [
            (1, 32, 1),
            (17, 64, 3),
            (33, 96, 5),
            (16, 896, 1),
            (50, 128, 19),
        ] {
            let w = q5_0_blocks((rows * cols) as u64, rows * cols / BLOCK);
            let m = Q5_0Matrix::new(w.clone(), rows, cols).unwrap();
            let x = noise((rows + cols + n) as u64, n * cols);
            let got = m.matmul(&x, n);
            let dense: Vec<Vec<f32>> = (0..rows).map(|r| dequantize(m.row(r))).collect();
            for i in 0..n {
                let xi = &x[i * cols..(i + 1) * cols];
                for r in 0..rows {
                    let exact: f32 = dense[r].iter().zip(xi).map(|(a, b)| a * b).sum();
                    let scale: f32 = dense[r].iter().zip(xi).map(|(a, b)| (a * b).abs()).sum();
                    let err = (got[i * rows + r] - exact).abs();
                    // Q8_0 activations carry at most 1/254 relative error per value.
                    assert!(
                        err <= scale / 200.0 + 1e-6,
                        "({rows},{cols},{n}) [{i},{r}]: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn matrices_of_the_wrong_size_are_refused() {
        assert!(Q5_0Matrix::new(vec![0; 22], 1, 31).is_none());
        assert!(Q5_0Matrix::new(vec![0; 21], 1, 32).is_none());
    }
}
