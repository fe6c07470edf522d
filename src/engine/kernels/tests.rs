//! Kernels against candle's dequantization and exact f32 products, on random blocks of every
//! format and awkward shapes, on every instruction set this CPU runs.

use candle_core::Device;
use candle_core::quantized::{GgmlDType, ggml_file::qtensor_from_ggml};

use half::f16;

use super::*;

/// Deterministic pseudo-random numbers in [-1, 1) (xorshift).
pub(super) fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 20_000) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    noise(seed, n)
        .into_iter()
        .map(|v| ((v + 1.0) * 127.99) as u8)
        .collect()
}

/// `blocks` random blocks of `format`: random quants, random but sane f16 scales.
fn random_blocks(format: Format, seed: u64, blocks: usize) -> Vec<u8> {
    let size = format.block_bytes();
    let mut data = random_bytes(seed, blocks * size);
    let scales = noise(seed + 1, blocks * 2);
    for (b, block) in data.chunks_exact_mut(size).enumerate() {
        let mut put = |at: usize, v: f32| {
            block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        };
        match format {
            Format::Q5_0 | Format::Q8_0 => put(0, scales[2 * b] * 0.05),
            Format::Q4K => {
                put(0, scales[2 * b] * 0.01);
                put(2, scales[2 * b + 1].abs() * 0.01);
            }
            Format::Q6K => put(208, scales[2 * b] * 0.002),
        }
    }
    data
}

fn ggml_dtype(format: Format) -> GgmlDType {
    match format {
        Format::Q5_0 => GgmlDType::Q5_0,
        Format::Q8_0 => GgmlDType::Q8_0,
        Format::Q4K => GgmlDType::Q4K,
        Format::Q6K => GgmlDType::Q6K,
    }
}

/// The weights as f32, by candle (an implementation independent of the kernels).
fn dequantized(format: Format, data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let t = qtensor_from_ggml(ggml_dtype(format), data, vec![rows, cols], &Device::Cpu).unwrap();
    t.dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

const FORMATS: [Format; 4] = [Format::Q5_0, Format::Q8_0, Format::Q4K, Format::Q6K];

/// (rows, blocks per row, tokens): odd row counts, tails of rows and tokens outside full tiles,
/// one token (decode) to many (prefill, more than one slab for the widest rows).
const SHAPES: [(usize, usize, usize); 13] = [
    (1, 1, 1),
    (5, 4, 9),
    (8, 2, 12),
    (3, 2, 1),
    (5, 3, 2),
    (4, 1, 4),
    (17, 2, 5),
    (9, 28, 7),
    (6, 19, 33),
    (9, 28, 1),
    (6, 70, 1),
    (5, 34, 3),
    (5, 6, 9),
];

#[test]
fn every_format_matches_exact_products_within_the_activation_rounding() {
    for format in FORMATS {
        for (seed, (rows, blocks, n)) in SHAPES.into_iter().enumerate() {
            let cols = blocks * format.block_values();
            let data = random_blocks(format, seed as u64, rows * blocks);
            let weights = dequantized(format, &data, rows, cols);
            // Activations with a wide range, like a transformer's hidden states.
            let x: Vec<f32> = noise(seed as u64 + 100, n * cols)
                .iter()
                .enumerate()
                .map(|(i, v)| v * if i % 7 == 0 { 20.0 } else { 1.0 })
                .collect();
            let m = QMatrix::new(format, data, rows, cols).unwrap();
            // What the kernels multiply: the activations after their rounding to bytes.
            let acts = Acts::quantize(&x, n, cols, m.isa);
            let x_rounded: Vec<f32> = acts
                .q
                .iter()
                .enumerate()
                .map(|(i, &q)| f32::from(q) * acts.d[i / GROUP])
                .collect();
            for isa in Isa::available() {
                let m = QMatrix { isa, ..clone(&m) };
                let got = m.matmul(&x, n);
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    for r in 0..rows {
                        let w = &weights[r * cols..(r + 1) * cols];
                        let exact: f64 = w.iter().zip(xt).map(|(a, b)| f64::from(a * b)).sum();
                        // Each activation is rounded to the nearest step of its group's scale
                        // (amax / 127): at most half a step per value.
                        let bound: f64 = w
                            .chunks(GROUP)
                            .zip(xt.chunks(GROUP))
                            .map(|(wg, xg)| {
                                let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs()));
                                let sum_w: f32 = wg.iter().map(|v| v.abs()).sum();
                                f64::from(sum_w * amax / 127.0 / 2.0)
                            })
                            .sum();
                        let magnitude: f64 = w
                            .iter()
                            .zip(xt)
                            .map(|(a, b)| f64::from((a * b).abs()))
                            .sum();
                        let err = (f64::from(got[t * rows + r]) - exact).abs();
                        // Against the rounded activations only float rounding remains.
                        let rounded: f64 = w
                            .iter()
                            .zip(&x_rounded[t * cols..(t + 1) * cols])
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum();
                        let float_err = (f64::from(got[t * rows + r]) - rounded).abs();
                        assert!(
                            float_err <= magnitude * 2e-6 + 1e-6,
                            "{format:?} {isa:?} ({rows}x{cols}, {n} tokens) [{t},{r}]: \
                             {} vs {rounded} with rounded activations",
                            got[t * rows + r]
                        );
                        assert!(
                            err <= bound * 1.001 + magnitude * 1e-5 + 1e-6,
                            "{format:?} {isa:?} ({rows}x{cols}, {n} tokens) [{t},{r}]: \
                             {} vs {exact} (error {err}, bound {bound})",
                            got[t * rows + r]
                        );
                    }
                }
            }
        }
    }
}

fn clone(m: &QMatrix) -> QMatrix {
    QMatrix {
        format: m.format,
        isa: m.isa,
        data: WeightBytes::new(m.data.len(), |out| out.copy_from_slice(&m.data)),
        rows: m.rows,
        cols: m.cols,
    }
}

#[test]
fn one_token_at_a_time_equals_a_batch() {
    // Decode (one token) and prefill (tiles of four) must agree exactly: the KV cache mixes
    // positions computed both ways.
    for format in FORMATS {
        for (rows, blocks, n) in [(7, 3, 9), (9, 2, 13), (9, 36, 9), (9, 34, 5)] {
            let cols = blocks * format.block_values();
            let m =
                QMatrix::new(format, random_blocks(format, 3, rows * blocks), rows, cols).unwrap();
            let x = noise(4, n * cols);
            let batch = m.matmul(&x, n);
            for t in 0..n {
                let one = m.matmul(&x[t * cols..(t + 1) * cols], 1);
                assert_eq!(one, batch[t * rows..(t + 1) * rows], "{format:?} token {t}");
            }
        }
    }
}

#[test]
fn shapes_that_do_not_fit_the_format_are_refused() {
    if Isa::detect().is_none() {
        return;
    }
    assert!(QMatrix::new(Format::Q5_0, vec![0; 22], 1, 32).is_some());
    assert!(QMatrix::new(Format::Q5_0, vec![0; 22], 1, 31).is_none());
    assert!(QMatrix::new(Format::Q5_0, vec![0; 21], 1, 32).is_none());
    assert!(QMatrix::new(Format::Q4K, vec![0; 144], 1, 128).is_none());
    assert!(QMatrix::new(Format::Q6K, vec![0; 210], 1, 0).is_none());
}

#[test]
fn zero_activations_give_zero() {
    for format in FORMATS {
        let cols = format.block_values();
        let Some(m) = QMatrix::new(format, random_blocks(format, 1, 2), 2, cols) else {
            return;
        };
        assert_eq!(m.matmul(&vec![0.0; cols], 1), vec![0.0, 0.0]);
    }
}

/// Not a test: decode and prompt throughput of each format on the default model's shapes, plus
/// two long-row streams (`cargo test --release --lib kernel_throughput -- --ignored --nocapture`).
#[test]
#[ignore]
fn kernel_throughput() {
    for (format, rows, cols) in [
        (Format::Q5_0, 4864, 896),
        (Format::Q8_0, 151_936, 896),
        // Q5_0 over the head's shape: a stream no cache holds.
        (Format::Q5_0, 151_936, 896),
        (Format::Q4K, 896, 4864),
        (Format::Q6K, 896, 4864),
        (Format::Q5_0, 896, 896),
        // The FFN down projections of all 24 layers in one: long rows, a stream no cache holds.
        (Format::Q4K, 24 * 896, 4864),
        (Format::Q6K, 24 * 896, 4864),
    ] {
        let blocks = rows * cols / format.block_values();
        let m = QMatrix::new(format, random_blocks(format, 1, blocks), rows, cols).unwrap();
        // Bytes as stored: K-quants hold f32 scales, more than their GGUF blocks.
        let bytes = m.data.len() as f64;
        for n in [1, 64] {
            let x = noise(2, n * cols);
            m.matmul(&x, n);
            let reps = if n == 1 { 50 } else { 5 };
            let mut times: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = std::time::Instant::now();
                    std::hint::black_box(m.matmul(&x, n));
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let s = times[reps / 2];
            eprintln!(
                "{format:?} {rows}x{cols} n={n}: {:.2} ms, {:.1} GB/s, {:.1} GMAC/s",
                s * 1e3,
                bytes / s / 1e9,
                (rows * cols * n) as f64 / s / 1e9
            );
        }
    }
}

#[test]
fn a_stack_multiplies_like_its_parts() {
    let Some(isa) = Isa::detect() else {
        return;
    };
    for format in FORMATS {
        let cols = 2 * format.block_values();
        let sizes = [5, 3, 8];
        let parts: Vec<QMatrix> = sizes
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let data = random_blocks(format, 40 + i as u64, rows * 2);
                QMatrix::new(format, data, rows, cols).unwrap()
            })
            .collect();
        let n = 6;
        let x = noise(9, n * cols);
        let each: Vec<Vec<f32>> = parts.iter().map(|m| m.matmul(&x, n)).collect();
        let stacked = QMatrix::stack(parts).unwrap();
        assert_eq!(stacked.isa, isa);
        let got = stacked.matmul(&x, n);
        for t in 0..n {
            let want: Vec<f32> = each
                .iter()
                .zip(sizes)
                .flat_map(|(e, rows)| e[t * rows..(t + 1) * rows].to_vec())
                .collect();
            assert_eq!(got[t * 16..(t + 1) * 16], want, "{format:?} token {t}");
        }
    }
    let a = QMatrix::new(Format::Q5_0, random_blocks(Format::Q5_0, 1, 1), 1, 32).unwrap();
    let b = QMatrix::new(Format::Q8_0, random_blocks(Format::Q8_0, 1, 1), 1, 32).unwrap();
    assert!(QMatrix::stack(vec![a, b]).is_none());
}

#[test]
fn exponential_is_accurate_over_the_whole_range() {
    for i in -8700..=8800 {
        let x = i as f32 / 100.0;
        let (got, want) = (exp(x), x.exp());
        assert!(
            (got - want).abs() <= want * 2e-6 + 1e-37,
            "exp({x}) = {got}, expected {want}"
        );
    }
    // Beyond the range: clamped, finite, and a SwiGLU gate still goes to 0 or x.
    assert!(exp(1000.0).is_finite() && exp(-1000.0) >= 0.0);
    let silu = |g: f32| g / (1.0 + exp(-g));
    assert!(silu(-1000.0).abs() < 1e-30 && silu(1000.0) == 1000.0);
}
