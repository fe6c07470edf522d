//! Quantized matrix products, the engine's hot loop. The model files reach them only through
//! [`QMatrix::matmul`]; everything about block layouts and instruction sets stays here.
//!
//! candle 0.11 computes a quantized product one dot product per weight row per token, and has no
//! x86 SIMD for Q5_0 at all (the default model's most common type). Here instead:
//! - activations are quantized once per product into groups of 32 signed bytes with an f32 scale
//!   (and the lane sums the offset formats need), the way llama.cpp's Q8 activations work;
//! - weights stay quantized (decode reads every weight once per token, so their size matters)
//!   and are unpacked in registers, two groups of 32 values at a time with AVX-512;
//! - a tile of 4 weight rows x 4 tokens shares each unpacked group and each activation load;
//!   integer dot products (AVX-512 VNNI where the CPU has it, AVX2 otherwise, chosen at run
//!   time) feed per-lane f32 accumulators;
//! - threads share the weight rows through candle's worker pool (no second pool competing for
//!   the cores), and prompt tokens go in slabs whose activations stay in the L2 cache.
//!
//! Results differ from candle's only by float summation order and by the finer activation
//! scales (per 32 values where candle uses one per 256 for K-quants); the tests bound the error
//! against exact f32 products, and the model tests bound the effect on logits.
//!
//! Q5_0 and Q8_0 rows are stored as planes (all scales, then all high bits, then all quants, so
//! a 512-bit register takes two groups in one load; Q5_0's nibbles regrouped so that a pair of
//! groups is one nibble of 64 consecutive bytes, Q8_0's quants plus 128; see [`planes`]).
//! K-quant blocks keep their quants but hold their scales (and Q4_K's mins) as f32, multiplied
//! out at load: 33% (Q4_K) and 22% (Q6_K) more bytes, which decoding pays back in fewer
//! instructions per group. The GGUF block layouts (ggml's; value = what a weight means):
//! - Q5_0, 32 values in 22 bytes: f16 d, 32 high bits, 16 bytes of nibbles; d * (q - 16).
//! - Q8_0, 32 values in 34 bytes: f16 d, 32 i8; d * q.
//! - Q4_K, 256 values in 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8
//!   groups, 128 bytes of nibbles; d * sc * q - dmin * m.
//! - Q6_K, 256 values in 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 i8
//!   scales (one per 16 values), f16 d; d * sc * (q - 32).
#![allow(unsafe_code)]

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Values per activation group (and per Q5_0/Q8_0 block).
pub const GROUP: usize = 32;

/// The GGUF weight formats with kernels here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    /// Values per block.
    pub fn block_values(self) -> usize {
        match self {
            Self::Q5_0 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K => 256,
        }
    }

    /// Bytes per block as held in memory. K-quant blocks get their scales multiplied out to f32
    /// at load (the kernels then load a group's scale instead of converting and multiplying two
    /// small numbers for every row at every token): Q4_K 192 bytes instead of 144, Q6_K 256
    /// instead of 210. The products are the same f32 values the kernels computed before.
    fn stored_block_bytes(self) -> usize {
        match self {
            Self::Q4K => 192,
            Self::Q6K => 256,
            _ => self.block_bytes(),
        }
    }

    /// Bytes per block in a GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q5_0 => 22,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }
}

/// Instruction sets with kernels, fastest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// AVX2 + FMA + F16C: byte products through `vpmaddubsw`.
    Avx2,
    /// AVX-512 (F, BW, VL) with VNNI: byte products through `vpdpbusd`.
    Avx512Vnni,
}

impl Isa {
    /// The best instruction set this CPU runs, if any has kernels here.
    pub fn detect() -> Option<Self> {
        Self::available().last().copied()
    }

    /// Every instruction set this CPU runs (the tests try each).
    pub fn available() -> Vec<Self> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                isas.push(Self::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    isas.push(Self::Avx512Vnni);
                }
            }
        }
        isas
    }
}

/// A row-major quantized weight matrix `(rows, cols)` in its GGUF blocks, with the instruction
/// set its products run on.
pub struct QMatrix {
    format: Format,
    isa: Isa,
    data: WeightBytes,
    rows: usize,
    cols: usize,
}

impl QMatrix {
    /// `None` when the CPU has no instruction set with kernels here, or the shape does not fit
    /// the format (`cols` not a multiple of the block size, or `data` of the wrong length).
    pub fn new(format: Format, data: Vec<u8>, rows: usize, cols: usize) -> Option<Self> {
        let isa = Isa::detect()?;
        let fits = cols > 0
            && cols.is_multiple_of(format.block_values())
            && data.len() == rows * cols / format.block_values() * format.block_bytes();
        if !fits {
            return None;
        }
        let len = data.len() / format.block_bytes() * format.stored_block_bytes();
        let data = WeightBytes::new(len, |out| match format {
            Format::Q5_0 | Format::Q8_0 => planes(format, &data, cols / GROUP, out),
            Format::Q4K => q4k_scales_out(&data, out),
            Format::Q6K => q6k_scales_out(&data, out),
        });
        Some(Self {
            format,
            isa,
            data,
            rows,
            cols,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.format.block_values() * self.format.stored_block_bytes()
    }

    /// Whether [`QMatrix::stack`] takes these: same format, width and instruction set.
    pub fn stackable(parts: &[&QMatrix]) -> bool {
        parts
            .windows(2)
            .all(|w| (w[0].format, w[0].isa, w[0].cols) == (w[1].format, w[1].isa, w[1].cols))
    }

    /// Stackable matrices (see [`QMatrix::stackable`]) as one, rows in order: to multiply the
    /// same input by all of them in one pass. `None` for an empty or unstackable list.
    pub fn stack(parts: Vec<QMatrix>) -> Option<QMatrix> {
        let first = parts.first()?;
        let (format, isa, cols) = (first.format, first.isa, first.cols);
        if !Self::stackable(&parts.iter().collect::<Vec<_>>()) {
            return None;
        }
        let rows = parts.iter().map(|m| m.rows).sum();
        // Rows are independent in every stored layout, so stacking is concatenation.
        let len = parts.iter().map(|m| m.data.len()).sum();
        let data = WeightBytes::new(len, |mut out| {
            for m in &parts {
                let (part, rest) = out.split_at_mut(m.data.len());
                part.copy_from_slice(&m.data);
                out = rest;
            }
        });
        Some(QMatrix {
            format,
            isa,
            data,
            rows,
            cols,
        })
    }

    /// `x` (`n` rows of `cols` values, row-major) times the transposed matrix: `n` rows of
    /// `rows` values.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activation shape");
        let acts = Acts::quantize(x, n, self.cols, self.isa);
        let mut out = vec![0f32; n * self.rows];
        #[cfg(target_arch = "x86_64")]
        x86::matmul(self, &acts, &mut out);
        out
    }
}

/// A matrix's bytes, on anonymous memory that the kernel is asked to back with transparent huge
/// pages (2 MiB) where it offers them: decode streams every weight once per token (~0.4 GB for
/// the default model), which with 4 KiB pages means a page walk every 4 KiB.
pub(crate) enum WeightBytes {
    Mapped(memmap2::MmapMut),
    /// Where anonymous memory cannot be had (or is empty).
    Heap(Vec<u8>),
}

impl WeightBytes {
    /// `len` bytes, written by `fill`.
    fn new(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        let Some(mut map) = (len > 0)
            .then(|| memmap2::MmapMut::map_anon(len).ok())
            .flatten()
        else {
            let mut bytes = vec![0; len];
            fill(&mut bytes);
            return Self::Heap(bytes);
        };
        // Advice only: without huge pages the products are the same, a little slower.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        fill(&mut map);
        Self::Mapped(map)
    }
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Heap(bytes) => bytes,
        }
    }
}

/// Q5_0/Q8_0 blocks rearranged, row by row, into planes: the f16 scales of the row's groups,
/// then (Q5_0) their 32-bit high-bit masks, then their quants. Q8_0 quants stay in order, 32
/// bytes per group, each plus 128 (`q ^ 0x80`: unsigned, as `vpdpbusd` takes them). Q5_0
/// nibbles go in quads of groups, 64 bytes per quad: byte `j` holds value `j` of groups
/// `4k, 4k + 1` (values 0..32 of the first, then of the second) in its low nibble and value
/// `j` of groups `4k + 2, 4k + 3` in its high nibble, so a pair of groups is one load, at most
/// one shift and one mask. Groups after the last whole quad keep ggml's 16 bytes
/// each (values 0..16 in the low nibbles, 16..32 in the high ones).
fn planes(format: Format, blocks: &[u8], groups: usize, out: &mut [u8]) {
    let size = format.block_bytes();
    for (src, dst) in blocks
        .chunks_exact(groups * size)
        .zip(out.chunks_exact_mut(groups * size))
    {
        for (g, block) in src.chunks_exact(size).enumerate() {
            dst[2 * g..2 * g + 2].copy_from_slice(&block[..2]);
            if format == Format::Q5_0 {
                dst[2 * groups + 4 * g..2 * groups + 4 * g + 4].copy_from_slice(&block[2..6]);
            } else {
                for (d, q) in dst[2 * groups + 32 * g..2 * groups + 32 * g + 32]
                    .iter_mut()
                    .zip(&block[2..])
                {
                    *d = q ^ 0x80;
                }
            }
        }
        if format == Format::Q5_0 {
            q5_0_quads(src, groups, &mut dst[6 * groups..]);
        }
    }
}

/// One row's Q5_0 nibbles (`row`: its ggml blocks) in the quad layout of [`planes`].
fn q5_0_quads(row: &[u8], groups: usize, out: &mut [u8]) {
    let quads = groups / 4;
    // The low four bits of value i of group g.
    let nibble = |g: usize, i: usize| {
        let qs = &row[22 * g + 6..22 * g + 22];
        if i < 16 {
            qs[i] & 0x0F
        } else {
            qs[i - 16] >> 4
        }
    };
    for k in 0..quads {
        for j in 0..64 {
            let (g, i) = (4 * k + j / 32, j % 32);
            out[64 * k + j] = nibble(g, i) | (nibble(g + 2, i) << 4);
        }
    }
    for (t, g) in (4 * quads..groups).enumerate() {
        out[64 * quads + 16 * t..64 * quads + 16 * t + 16]
            .copy_from_slice(&row[22 * g + 6..22 * g + 22]);
    }
}

/// Q4_K blocks with each group's scale and min as f32 (`d * scale`, `dmin * min`): eight
/// scales, eight mins, then the 128 bytes of nibbles.
fn q4k_scales_out(blocks: &[u8], out: &mut [u8]) {
    for (block, dst) in blocks.chunks_exact(144).zip(out.chunks_exact_mut(192)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let dmin = half::f16::from_le_bytes([block[2], block[3]]).to_f32();
        let packed = &block[4..16];
        for j in 0..8 {
            let (scale, min) = q4k_scale_min(j, packed);
            dst[4 * j..4 * j + 4].copy_from_slice(&(d * f32::from(scale)).to_le_bytes());
            dst[32 + 4 * j..32 + 4 * j + 4].copy_from_slice(&(dmin * f32::from(min)).to_le_bytes());
        }
        dst[64..].copy_from_slice(&block[16..]);
    }
}

/// Q6_K blocks with their 16 scales as f32 (`d * scale`) in place of the i8 scales and f16 `d`:
/// 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 f32 scales.
fn q6k_scales_out(blocks: &[u8], out: &mut [u8]) {
    for (block, dst) in blocks.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
        let d = half::f16::from_le_bytes([block[208], block[209]]).to_f32();
        dst[..192].copy_from_slice(&block[..192]);
        for (i, &scale) in block[192..208].iter().enumerate() {
            let value = d * f32::from(scale.cast_signed());
            dst[192 + 4 * i..192 + 4 * i + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// Activations quantized for one product: per token, `cols / 32` groups of 32 i8 values `q`
/// with scale `d` (value ~ d * q), also repeated once per lane of a group's dot product
/// (`d_lanes`, what the 512-bit prompt kernels load; the decode tile reads `d`), and per group
/// the eight sums of four consecutive `q`s, negated (the lanes of a 256-bit integer dot
/// product, which the offset formats subtract).
pub(crate) struct Acts {
    groups: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    d_lanes: Vec<[f32; 8]>,
    neg_lane_sums: Vec<[i32; 8]>,
}

impl Acts {
    /// Quantizes `n` tokens of `cols` values, the tokens split between the pool's threads.
    fn quantize(x: &[f32], n: usize, cols: usize, isa: Isa) -> Self {
        let groups = cols / GROUP;
        let mut acts = Self {
            groups,
            q: vec![0; n * cols],
            d: vec![0.0; n * groups],
            d_lanes: vec![[0.0; 8]; n * groups],
            neg_lane_sums: vec![[0; 8]; n * groups],
        };
        let out = ActsOut {
            q: acts.q.as_mut_ptr(),
            d: acts.d.as_mut_ptr(),
            d_lanes: acts.d_lanes.as_mut_ptr(),
            neg_lane_sums: acts.neg_lane_sums.as_mut_ptr(),
        };
        let work = |tokens: std::ops::Range<usize>| {
            for g in tokens.start * groups..tokens.end * groups {
                // SAFETY: g < n * groups, the length of every buffer (in groups), and each
                // token's groups are written by one thread only.
                let (q, d, d_lanes, sums) = unsafe { out.group(g) };
                let values = &x[g * GROUP..(g + 1) * GROUP];
                quantize_group(values, q, d, sums, isa);
                *d_lanes = [*d; 8];
            }
        };
        // Below a few tokens waking the pool costs more than it saves.
        if n < 8 {
            work(0..n);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(n, work);
        }
        acts
    }
}

/// Where [`Acts::quantize`]'s threads write.
#[derive(Clone, Copy)]
struct ActsOut {
    q: *mut i8,
    d: *mut f32,
    d_lanes: *mut [f32; 8],
    neg_lane_sums: *mut [i32; 8],
}

// SAFETY: only used by `Acts::quantize`, whose threads write disjoint tokens.
unsafe impl Sync for ActsOut {}
unsafe impl Send for ActsOut {}

impl ActsOut {
    /// # Safety
    /// `g` is inside the buffers and no other thread uses group `g` meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn group(&self, g: usize) -> (&mut [i8; GROUP], &mut f32, &mut [f32; 8], &mut [i32; 8]) {
        unsafe {
            (
                &mut *self.q.add(g * GROUP).cast::<[i8; GROUP]>(),
                &mut *self.d.add(g),
                &mut *self.d_lanes.add(g),
                &mut *self.neg_lane_sums.add(g),
            )
        }
    }
}

/// One group of 32 activations to bytes: `d = amax / 127`, `q = round(v / d)`, and the negated
/// sums of each four consecutive `q`s.
fn quantize_group(
    values: &[f32],
    q: &mut [i8; GROUP],
    d: &mut f32,
    neg_lane_sums: &mut [i32; 8],
    isa: Isa,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        // SAFETY: an `Isa` is only chosen among those `Isa::available` found on this CPU.
        unsafe { x86::quantize_group_avx512(values, q, d, neg_lane_sums) };
        return;
    }
    let _ = isa;
    let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    *d = amax / 127.0;
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    for (q, v) in q.iter_mut().zip(values) {
        // Round half to even, as the vector path does.
        *q = (v * inv).round_ties_even() as i8;
    }
    for (sum, four) in neg_lane_sums.iter_mut().zip(q.chunks_exact(4)) {
        *sum = -four.iter().map(|&v| i32::from(v)).sum::<i32>();
    }
}

/// e^x, branch-free so loops over it vectorise (softmax, SwiGLU): 2^n times a degree-6
/// polynomial on the remainder, relative error below 2e-6; arguments are clamped to [-87, 88]
/// (e^88 is near the largest f32, e^-87 near the smallest normal one), NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Q4_K's 6-bit scale and min of group `j` (0..8) from its 12 packed bytes.
fn q4k_scale_min(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests;
