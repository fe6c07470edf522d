//! Quantized matrix products, the engine's hot loop. The model files reach them only through
//! [`QMatrix::matmul`]; everything about block layouts and instruction sets stays here.
//!
//! candle 0.11 computes a quantized product one dot product per weight row per token, and has no
//! x86 SIMD for Q5_0 at all (the default model's most common type). Here instead:
//! - activations are quantized once per product into groups of 32 signed bytes with an f32 scale
//!   (and the lane sums the offset formats need), the way llama.cpp's Q8 activations work;
//! - weights stay in their GGUF blocks (decode reads every weight once per token, so their size
//!   is the speed) and are unpacked in registers, one group of 32 values at a time;
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
//! Block layouts (ggml's; value = what a weight means):
//! - Q5_0, 32 values in 22 bytes: f16 d, 32 high bits, 16 bytes of nibbles; d * (q - 16).
//! - Q8_0, 32 values in 34 bytes: f16 d, 32 i8; d * q.
//! - Q4_K, 256 values in 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8
//!   groups, 128 bytes of nibbles; d * sc * q - dmin * m.
//! - Q6_K, 256 values in 210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 i8
//!   scales (one per 16 values), f16 d; d * sc * (q - 32).
#![allow(unsafe_code)]

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

    /// Bytes per block.
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
    data: Vec<u8>,
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
        fits.then_some(Self {
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
        self.cols / self.format.block_values() * self.format.block_bytes()
    }

    /// `x` (`n` rows of `cols` values, row-major) times the transposed matrix: `n` rows of
    /// `rows` values.
    pub fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(x.len(), n * self.cols, "activation shape");
        let acts = Acts::quantize(x, n, self.cols);
        let mut out = vec![0f32; n * self.rows];
        #[cfg(target_arch = "x86_64")]
        x86::matmul(self, &acts, &mut out);
        out
    }
}

/// Activations quantized for one product: per token, `cols / 32` groups of 32 i8 values `q`
/// with scale `d` (value ~ d * q), also repeated once per lane of a group's dot product
/// (`d_lanes`, what the 512-bit kernels load), and per group the eight sums of four consecutive
/// `q`s, negated (the lanes of a 256-bit integer dot product, which the offset formats
/// subtract).
pub(crate) struct Acts {
    groups: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    d_lanes: Vec<[f32; 8]>,
    neg_lane_sums: Vec<[i32; 8]>,
}

impl Acts {
    fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let groups = cols / GROUP;
        let mut acts = Self {
            groups,
            q: vec![0; n * cols],
            d: vec![0.0; n * groups],
            d_lanes: vec![[0.0; 8]; n * groups],
            neg_lane_sums: vec![[0; 8]; n * groups],
        };
        for (((values, q), d), sums) in x
            .chunks_exact(GROUP)
            .zip(acts.q.chunks_exact_mut(GROUP))
            .zip(acts.d.iter_mut())
            .zip(acts.neg_lane_sums.iter_mut())
        {
            let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            *d = amax / 127.0;
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            for (q, v) in q.iter_mut().zip(values) {
                *q = (v * inv).round() as i8;
            }
            for (sum, four) in sums.iter_mut().zip(q.chunks_exact(4)) {
                *sum = -four.iter().map(|&v| i32::from(v)).sum::<i32>();
            }
        }
        for (lanes, d) in acts.d_lanes.iter_mut().zip(&acts.d) {
            *lanes = [*d; 8];
        }
        acts
    }
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
