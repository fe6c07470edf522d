//! The x86 kernels behind [`super::QMatrix::matmul`]: one generic tile (rows x tokens, integer
//! dot products per group of 32, f32 accumulators per lane), instantiated per weight format and
//! per instruction set, plus a decode tile for one token of the formats with a scale plane
//! (the same arithmetic, scales prepared per row). Each format only says how to unpack one
//! group of its weights (and two at once for 512-bit registers).

use std::arch::x86_64::*;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;

use super::{Acts, Format, GROUP, Isa, QMatrix};

/// Weight rows per tile.
const ROWS: usize = 4;
/// Tokens per tile.
const TOKENS: usize = 4;
/// The most bytes a tile of rows may span for decode to prefetch the next tile in one burst.
/// Short rows (the default model's 896 columns) gain from it; long rows (4,864 columns, 14-19
/// KiB a tile) were slower with it, and take [`AHEAD_GROUPS`] instead (512-bit kernels).
const PREFETCH_MAX: usize = 4096;
/// How far ahead decode prefetches each of a tile's long rows, in groups (16: two K-quant
/// blocks; 352-544 bytes per row as stored, Q4_K 384, Q6_K 512), with the 512-bit kernels.
/// Each row is a stream of its own, four or more per thread, which the hardware prefetchers
/// did not follow well: Q4_K rows streamed at 17-22 GB/s without this and 42 with it on the
/// probe, and decode ran ~12% faster (AMD Zen 5).
const AHEAD_GROUPS: usize = 16;
/// The fewest tiles of rows a thread takes from the shared cursor at once.
const MIN_CHUNK: usize = 4;
/// Bytes of quantized activations per slab of tokens: half of a typical 1-2 MiB L2 cache, so
/// a slab is read from L2 once per tile of weight rows.
const SLAB_BYTES: usize = 512 * 1024;

/// One group of 32 weights in registers: bytes for the integer dot product, an f32 scale for
/// each of its eight i32 lanes (four bytes each), and the Q4_K min subtracted from every value.
#[derive(Clone, Copy)]
struct Group {
    q: __m256i,
    scale: __m256,
    min: f32,
}

/// How one format stores its groups.
trait Layout {
    /// Weights are signed bytes: [`Layout::group`] gives them as such (products via |w| and the
    /// activations with w's sign), [`Layout::pair`] plus 128, unsigned for `vpdpbusd` (the
    /// offset comes off through the lane sums). Otherwise unsigned bytes from both, which go
    /// straight into `vpdpbusd`/`vpmaddubsw`.
    const SIGNED: bool;
    /// Unsigned weights mean `q - 2^OFFSET_LOG2` (0: no offset).
    const OFFSET_LOG2: i32;
    /// Values are `scale * q - min` (Q4_K).
    const HAS_MIN: bool;
    /// Rows begin with a plane of one f16 scale per group (Q5_0, Q8_0; see
    /// [`super::planes`]), which [`tile512_one`] converts once per row and token.
    const PLANES: bool = false;

    /// # Safety
    /// `row` points at a whole row of this format holding `groups` groups, `g < groups`; the
    /// CPU runs AVX2 and F16C.
    unsafe fn group(row: *const u8, groups: usize, g: usize) -> Group;

    /// Asks for the bytes of groups `g..g + 8` of `row` (a whole row of `groups` groups) ahead
    /// of use: the cache lines where each of the row's streams (planes, or blocks) reaches them.
    /// Called for every eighth group in turn, so lines a call leaves out are the next call's.
    /// `g` may lie past the row's end: only addresses are computed, nothing is read.
    fn prefetch(row: *const u8, groups: usize, g: usize);

    /// Groups `g` and `g + 1` in 512-bit registers.
    ///
    /// # Safety
    /// As [`Layout::group`], with `g + 1 < groups`, on a CPU with AVX-512 (F, BW, VL).
    #[inline(always)]
    unsafe fn pair(row: *const u8, groups: usize, g: usize) -> Pair {
        unsafe {
            let (a, b) = (Self::group(row, groups, g), Self::group(row, groups, g + 1));
            let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a.q), b.q);
            Pair {
                // Signed weights plus 128, as `SIGNED` says.
                q: if Self::SIGNED {
                    _mm512_xor_si512(q, _mm512_set1_epi8(-128))
                } else {
                    q
                },
                scale: _mm512_insertf32x8::<1>(_mm512_castps256_ps512(a.scale), b.scale),
                min: if Self::HAS_MIN {
                    _mm512_insertf32x8::<1>(
                        _mm512_castps256_ps512(_mm256_set1_ps(a.min)),
                        _mm256_set1_ps(b.min),
                    )
                } else {
                    _mm512_setzero_ps()
                },
            }
        }
    }
}

/// Asks for the cache line holding `p` ahead of use, into every cache level. (The
/// non-temporal hint measured the same or worse in place: Q4_K ~1.25 against ~1.06 ms per
/// token on AMD Zen 5.)
#[inline(always)]
fn prefetch_line(p: *const u8) {
    // SAFETY: a prefetch is a hint; it reads nothing and never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
}

fn f16_at(p: *const u8) -> f32 {
    // SAFETY: callers pass a pointer to two readable bytes inside a block.
    let bytes = unsafe { [*p, *p.add(1)] };
    f16::from_le_bytes(bytes).to_f32()
}

/// One byte per bit of `bits`: 0xFF where the bit is set, 0 elsewhere.
#[inline(always)]
unsafe fn spread_bits(bits: u32) -> __m256i {
    // Byte i takes the byte of `bits` that holds bit i; or-ing every other bit position in
    // leaves all ones exactly where bit i was set.
    unsafe {
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
}

/// The two f16 scales at `p` as `[a x 8, b x 8]`.
#[inline(always)]
unsafe fn two_scales(p: *const u8) -> __m512 {
    unsafe {
        let both = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
        let which = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_permutexvar_ps(which, _mm512_castps128_ps512(both))
    }
}

/// Q5_0 rows as planes (see [`super::planes`]): f16 scales, then 32 high bits per
/// group, then the nibbles, in quads of groups and then ggml's 16 bytes per group for the rest.
struct Q5_0;
impl Q5_0 {
    /// Groups `g` and `g + 1` of a tail (after the last whole quad), ggml's nibbles: both
    /// groups' 16 bytes taken twice, [a, a, b, b], the second copy shifted for the high nibbles.
    #[inline(always)]
    unsafe fn tail_pair(nibbles: *const u8) -> __m512i {
        unsafe {
            let qs = _mm512_castsi256_si512(_mm256_loadu_si256(nibbles.cast()));
            let twice = _mm512_shuffle_i64x2::<0b01_01_00_00>(qs, qs);
            let high_copies = 0x0004_0004_0004_0004;
            let shifts = _mm512_set_epi64(
                high_copies,
                high_copies,
                0,
                0,
                high_copies,
                high_copies,
                0,
                0,
            );
            _mm512_srlv_epi16(twice, shifts)
        }
    }
}
impl Layout for Q5_0 {
    const SIGNED: bool = false;
    const OFFSET_LOG2: i32 = 4;
    const HAS_MIN: bool = false;
    const PLANES: bool = true;

    #[inline(always)]
    fn prefetch(row: *const u8, groups: usize, g: usize) {
        // Eight groups: 16 bytes of scales, 32 of high bits, 128 of nibbles.
        prefetch_line(row.wrapping_add(2 * g));
        prefetch_line(row.wrapping_add(2 * groups + 4 * g));
        let nibbles = row.wrapping_add(6 * groups + 16 * g);
        prefetch_line(nibbles);
        prefetch_line(nibbles.wrapping_add(64));
    }

    #[inline(always)]
    unsafe fn group(row: *const u8, groups: usize, g: usize) -> Group {
        unsafe {
            let qh = row.add(2 * groups + 4 * g).cast::<u32>().read_unaligned();
            let nibbles = row.add(6 * groups);
            let whole = groups / 4 * 4;
            let bytes = if g < whole {
                // Values 0..32 in one nibble of 32 consecutive bytes.
                let b = _mm256_loadu_si256(nibbles.add(16 * (g & !3) + 32 * (g % 2)).cast());
                if g % 4 >= 2 {
                    _mm256_srli_epi16::<4>(b)
                } else {
                    b
                }
            } else {
                // Values 0..15 are the low nibbles, 16..31 the high ones.
                let qs = _mm_loadu_si128(nibbles.add(16 * g).cast());
                _mm256_set_m128i(_mm_srli_epi16::<4>(qs), qs)
            };
            let high = _mm256_and_si256(spread_bits(qh), _mm256_set1_epi8(0x10));
            Group {
                q: _mm256_or_si256(_mm256_and_si256(bytes, _mm256_set1_epi8(0x0F)), high),
                scale: _mm256_set1_ps(f16_at(row.add(2 * g))),
                min: 0.0,
            }
        }
    }

    #[inline(always)]
    unsafe fn pair(row: *const u8, groups: usize, g: usize) -> Pair {
        unsafe {
            let nibbles = row.add(6 * groups);
            let bytes = if g < groups / 4 * 4 {
                // g is even: one nibble of the quad's 64 bytes.
                let quad = _mm512_loadu_si512(nibbles.add(16 * (g & !3)).cast());
                if g % 4 == 2 {
                    _mm512_srli_epi16::<4>(quad)
                } else {
                    quad
                }
            } else {
                Self::tail_pair(nibbles.add(16 * g))
            };
            // 64 high bits (4-byte aligned at best) into a mask register, 0x10 where set.
            let bits = _cvtu64_mask64(row.add(2 * groups + 4 * g).cast::<u64>().read_unaligned());
            let high = _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10));
            // (bytes & 0x0F) | high in one instruction.
            let q = _mm512_ternarylogic_epi32::<0xEA>(bytes, _mm512_set1_epi8(0x0F), high);
            Pair {
                q,
                scale: two_scales(row.add(2 * g)),
                min: _mm512_setzero_ps(),
            }
        }
    }
}

/// Q8_0 rows as planes: f16 scales, then 32 bytes per group, each plus 128 (see
/// [`super::planes`]).
struct Q8_0;
impl Layout for Q8_0 {
    const SIGNED: bool = true;
    const OFFSET_LOG2: i32 = 0;
    const HAS_MIN: bool = false;
    const PLANES: bool = true;

    #[inline(always)]
    fn prefetch(row: *const u8, groups: usize, g: usize) {
        // Eight groups: 16 bytes of scales, 256 of quants.
        prefetch_line(row.wrapping_add(2 * g));
        let quants = row.wrapping_add(2 * groups + 32 * g);
        for line in (0..256).step_by(64) {
            prefetch_line(quants.wrapping_add(line));
        }
    }

    #[inline(always)]
    unsafe fn group(row: *const u8, groups: usize, g: usize) -> Group {
        unsafe {
            let biased = _mm256_loadu_si256(row.add(2 * groups + 32 * g).cast());
            Group {
                q: _mm256_xor_si256(biased, _mm256_set1_epi8(-128)),
                scale: _mm256_set1_ps(f16_at(row.add(2 * g))),
                min: 0.0,
            }
        }
    }

    #[inline(always)]
    unsafe fn pair(row: *const u8, groups: usize, g: usize) -> Pair {
        unsafe {
            Pair {
                q: _mm512_loadu_si512(row.add(2 * groups + 32 * g).cast()),
                scale: two_scales(row.add(2 * g)),
                min: _mm512_setzero_ps(),
            }
        }
    }
}

/// Q4_K blocks as stored (see [`super::Format::stored_block_bytes`]): eight f32 scales, eight
/// f32 mins, 128 bytes of nibbles (groups 2i and 2i + 1 share 32 bytes: low nibbles, then high
/// nibbles).
struct Q4K;
impl Layout for Q4K {
    const SIGNED: bool = false;
    const OFFSET_LOG2: i32 = 0;
    const HAS_MIN: bool = true;

    #[inline(always)]
    fn prefetch(row: *const u8, _groups: usize, g: usize) {
        // Eight groups are one block.
        let block = row.wrapping_add(g / 8 * 192);
        for line in (0..192).step_by(64) {
            prefetch_line(block.wrapping_add(line));
        }
    }

    #[inline(always)]
    unsafe fn group(row: *const u8, _groups: usize, g: usize) -> Group {
        unsafe {
            let b = row.add(g / 8 * 192);
            let j = g % 8;
            let bytes = _mm256_loadu_si256(b.add(64 + 32 * (j / 2)).cast());
            let bytes = if j.is_multiple_of(2) {
                bytes
            } else {
                _mm256_srli_epi16::<4>(bytes)
            };
            Group {
                q: _mm256_and_si256(bytes, _mm256_set1_epi8(0x0F)),
                scale: _mm256_set1_ps(b.add(4 * j).cast::<f32>().read_unaligned()),
                min: b.add(32 + 4 * j).cast::<f32>().read_unaligned(),
            }
        }
    }

    #[inline(always)]
    unsafe fn pair(row: *const u8, _groups: usize, g: usize) -> Pair {
        unsafe {
            // g is even, so both groups share one block and one run of 32 bytes: taken twice,
            // the second copy shifted for its high nibbles.
            let b = row.add(g / 8 * 192);
            let j = g % 8;
            let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(64 + 32 * (j / 2)).cast()));
            let shifts = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
            let q = _mm512_and_si512(_mm512_srlv_epi16(bytes, shifts), _mm512_set1_epi8(0x0F));
            // Two f32s each over eight lanes.
            let which = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            let two = |at: usize| {
                let v = _mm_castsi128_ps(_mm_loadu_si64(b.add(at)));
                _mm512_permutexvar_ps(which, _mm512_castps128_ps512(v))
            };
            Pair {
                q,
                scale: two(4 * j),
                min: two(32 + 4 * j),
            }
        }
    }
}

/// Q6_K blocks as stored: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 f32 scales (one
/// per 16 values).
struct Q6K;
impl Layout for Q6K {
    const SIGNED: bool = false;
    const OFFSET_LOG2: i32 = 5;
    const HAS_MIN: bool = false;

    #[inline(always)]
    fn prefetch(row: *const u8, _groups: usize, g: usize) {
        // Eight groups are one block.
        let block = row.wrapping_add(g / 8 * 256);
        for line in (0..256).step_by(64) {
            prefetch_line(block.wrapping_add(line));
        }
    }

    #[inline(always)]
    unsafe fn group(row: *const u8, _groups: usize, g: usize) -> Group {
        unsafe {
            let b = row.add(g / 8 * 256);
            // Each half of the block (128 values) holds four groups: low nibbles of bytes
            // 0..32, of 32..64, then the high nibbles of both; two high bits per group in a
            // 32-byte run, at bit 2k for group k.
            let (half, k) = ((g % 8) / 4, g % 4);
            let low = _mm256_loadu_si256(b.add(64 * half + 32 * (k & 1)).cast());
            let low = if k < 2 {
                low
            } else {
                _mm256_srli_epi16::<4>(low)
            };
            let low = _mm256_and_si256(low, _mm256_set1_epi8(0x0F));
            let high = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
            let high = _mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * k as i32));
            let high = _mm256_slli_epi16::<4>(_mm256_and_si256(high, _mm256_set1_epi8(3)));
            // One scale per 16 values: lanes 0..4 hold the first 16 bytes, 4..8 the rest.
            let scales = b.add(192 + 4 * (8 * half + 2 * k)).cast::<f32>();
            Group {
                q: _mm256_or_si256(low, high),
                scale: _mm256_set_m128(
                    _mm_set1_ps(scales.add(1).read_unaligned()),
                    _mm_set1_ps(scales.read_unaligned()),
                ),
                min: 0.0,
            }
        }
    }
    #[inline(always)]
    unsafe fn pair(row: *const u8, _groups: usize, g: usize) -> Pair {
        unsafe {
            // g is even: groups k and k + 1 of one half-block, whose low nibbles are the same
            // nibble of two consecutive 32-byte runs, and whose high bits sit 2 bits apart.
            let b = row.add(g / 8 * 256);
            let (half, k) = ((g % 8) / 4, g % 4);
            let low = _mm512_loadu_si512(b.add(64 * half).cast());
            let low = if k < 2 {
                low
            } else {
                _mm512_srli_epi16::<4>(low)
            };
            let low = _mm512_and_si512(low, _mm512_set1_epi8(0x0F));
            let high = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(128 + 32 * half).cast()));
            // Group k's two bits (2k, 2k + 1) go to bits 4 and 5: left by 4 and 2 for groups 0
            // and 1, right by 0 and 2 for groups 2 and 3. A 16-bit shift carries bits across
            // the two bytes of a lane, but only into bits the mask clears.
            let two_shifts = |a: i16, b: i16| {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_set1_epi16(a)),
                    _mm256_set1_epi16(b),
                )
            };
            let high = if k < 2 {
                _mm512_sllv_epi16(high, two_shifts(4, 2))
            } else {
                _mm512_srlv_epi16(high, two_shifts(0, 2))
            };
            // (high & 0x30) | low in one instruction.
            let q = _mm512_ternarylogic_epi32::<0xEA>(high, _mm512_set1_epi8(0x30), low);
            // Four scales, one per 16 values, each over four lanes.
            let scales = _mm_loadu_ps(b.add(192 + 4 * (8 * half + 2 * k)).cast());
            let which = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
            Pair {
                q,
                scale: _mm512_permutexvar_ps(which, _mm512_castps128_ps512(scales)),
                min: _mm512_setzero_ps(),
            }
        }
    }
}

/// Sums of four consecutive unsigned x signed byte products into eight i32 lanes, plus `init`.
#[inline(always)]
unsafe fn dot<const VNNI: bool>(init: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(init, unsigned, signed)
        } else {
            // Pairs of products fit i16: the formats' unsigned values are at most 63 (128 for
            // |Q8_0|), activations at most 127 in magnitude.
            let pairs = _mm256_maddubs_epi16(unsigned, signed);
            _mm256_add_epi32(init, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// `R` weight rows times `T` tokens over all groups.
#[inline(always)]
unsafe fn tile<L: Layout, const VNNI: bool, const R: usize, const T: usize>(
    w: [*const u8; R],
    acts: &Acts,
    tokens: [usize; T],
) -> [[f32; T]; R] {
    unsafe {
        let groups = acts.groups;
        let zero = _mm256_setzero_si256();
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for g in 0..groups {
            let wg: [Group; R] = std::array::from_fn(|r| L::group(w[r], groups, g));
            let w_abs: [__m256i; R] = std::array::from_fn(|r| {
                if L::SIGNED {
                    _mm256_sign_epi8(wg[r].q, wg[r].q)
                } else {
                    wg[r].q
                }
            });
            for (t, &token) in tokens.iter().enumerate() {
                let i = token * groups + g;
                let y = _mm256_loadu_si256(acts.q.as_ptr().add(i * GROUP).cast());
                let dy = _mm256_set1_ps(*acts.d.get_unchecked(i));
                let neg_sums = if L::OFFSET_LOG2 > 0 || L::HAS_MIN {
                    _mm256_loadu_si256(acts.neg_lane_sums.as_ptr().add(i).cast())
                } else {
                    zero
                };
                let init = if L::OFFSET_LOG2 > 0 {
                    _mm256_sll_epi32(neg_sums, _mm_cvtsi32_si128(L::OFFSET_LOG2))
                } else {
                    zero
                };
                let neg_y_sums = if L::HAS_MIN {
                    _mm256_mul_ps(_mm256_cvtepi32_ps(neg_sums), dy)
                } else {
                    _mm256_setzero_ps()
                };
                for r in 0..R {
                    let products = if L::SIGNED {
                        dot::<VNNI>(zero, w_abs[r], _mm256_sign_epi8(y, wg[r].q))
                    } else {
                        dot::<VNNI>(init, wg[r].q, y)
                    };
                    let scale = _mm256_mul_ps(wg[r].scale, dy);
                    let mut a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products), scale, acc[r][t]);
                    if L::HAS_MIN {
                        a = _mm256_fmadd_ps(_mm256_set1_ps(wg[r].min), neg_y_sums, a);
                    }
                    acc[r][t] = a;
                }
            }
        }
        acc.map(|row| row.map(|v| hsum(v)))
    }
}

/// Two consecutive groups of one weight row in a 512-bit register each.
#[derive(Clone, Copy)]
struct Pair {
    q: __m512i,
    scale: __m512,
    min: __m512,
}

/// Weight rows unpacked once for all the tokens of a slab (prompt processing): per row and
/// group, 32 bytes, eight lane scales and (Q4_K) eight lane mins, read back two groups at a time.
#[derive(Default)]
struct Unpacked {
    q: Vec<__m256i>,
    scale: Vec<__m256>,
    min: Vec<__m256>,
}

impl Unpacked {
    #[inline(always)]
    unsafe fn fill<L: Layout, const R: usize>(&mut self, w: [*const u8; R], groups: usize) {
        self.q.clear();
        self.scale.clear();
        self.min.clear();
        for row in w {
            for g in 0..groups {
                // SAFETY: the caller passes whole rows of `groups` groups, on a CPU with AVX2.
                unsafe {
                    let group = L::group(row, groups, g);
                    // As `Layout::pair` gives them: signed weights plus 128.
                    self.q.push(if L::SIGNED {
                        _mm256_xor_si256(group.q, _mm256_set1_epi8(-128))
                    } else {
                        group.q
                    });
                    self.scale.push(group.scale);
                    if L::HAS_MIN {
                        self.min.push(_mm256_set1_ps(group.min));
                    }
                }
            }
        }
    }

    /// Groups `g` and `g + 1` of row `r`.
    #[inline(always)]
    unsafe fn pair<L: Layout>(&self, r: usize, groups: usize, g: usize) -> Pair {
        let i = r * groups + g;
        // SAFETY: `fill` stored `groups` entries per row and g + 1 < groups.
        unsafe {
            Pair {
                q: _mm512_loadu_si512(self.q.as_ptr().add(i).cast()),
                scale: _mm512_loadu_ps(self.scale.as_ptr().add(i).cast()),
                min: if L::HAS_MIN {
                    _mm512_loadu_ps(self.min.as_ptr().add(i).cast())
                } else {
                    _mm512_setzero_ps()
                },
            }
        }
    }
}

/// Where [`tile512`] reads its weights, two groups of one row at a time.
trait Pairs {
    /// # Safety
    /// `r` is one of the tile's rows and `g + 1` one of its groups.
    unsafe fn pair(&self, r: usize, g: usize) -> Pair;

    /// Called at every eighth group `g`: where the source streams the rows (decode's long rows),
    /// asks for their bytes [`AHEAD_GROUPS`] ahead (see [`prefetch_rows`]).
    fn prefetch(&self, g: usize);
}

/// Straight from the rows' blocks (one pass over the weights: decode). `AHEAD`: whether
/// [`Pairs::prefetch`] asks for the rows' bytes (long rows, see [`AHEAD_GROUPS`]); a constant,
/// so that the short rows' loops carry no trace of it.
struct FromBlocks<L, const R: usize, const AHEAD: bool> {
    rows: [*const u8; R],
    groups: usize,
    layout: PhantomData<L>,
}

impl<L: Layout, const R: usize, const AHEAD: bool> FromBlocks<L, R, AHEAD> {
    fn new(rows: [*const u8; R], groups: usize) -> Self {
        Self {
            rows,
            groups,
            layout: PhantomData,
        }
    }
}

/// Decode's prefetch for long rows at group `g` (a multiple of 8): each of the tile's rows
/// [`AHEAD_GROUPS`] ahead. Near a row's end that lands past it: in block layouts the next row
/// (read already, but for the tile's last row: the next tile's first). Asking instead for the
/// start of the same row in the next tile made the K-quant products ~0.3-0.5 ms per token
/// faster but, unexplained, the output head 0.7-1.1 ms slower (whole step 2-4% slower in three
/// alternating runs, with and without 64-byte loop alignment).
#[inline(always)]
fn prefetch_rows<L: Layout, const R: usize>(rows: [*const u8; R], groups: usize, g: usize) {
    for row in rows {
        L::prefetch(row, groups, g + AHEAD_GROUPS);
    }
}

impl<L: Layout, const R: usize, const AHEAD: bool> Pairs for FromBlocks<L, R, AHEAD> {
    #[inline(always)]
    unsafe fn pair(&self, r: usize, g: usize) -> Pair {
        // SAFETY: the caller's rows hold `self.groups` groups.
        unsafe { L::pair(self.rows[r], self.groups, g) }
    }

    #[inline(always)]
    fn prefetch(&self, g: usize) {
        if AHEAD {
            prefetch_rows::<L, R>(self.rows, self.groups, g);
        }
    }
}

/// From rows unpacked once for many tokens (prompts).
struct FromUnpacked<'a, L>(&'a Unpacked, usize, PhantomData<L>);

impl<L: Layout> Pairs for FromUnpacked<'_, L> {
    #[inline(always)]
    unsafe fn pair(&self, r: usize, g: usize) -> Pair {
        // SAFETY: as `Unpacked::pair`.
        unsafe { self.0.pair::<L>(r, self.1, g) }
    }

    /// Unpacked rows are read many times, from the caches.
    fn prefetch(&self, _g: usize) {}
}

/// [`tile`] with 512-bit registers, two groups per instruction (AVX-512 VNNI, an even number of
/// groups). `weights.pair(r, g)` gives groups `g` and `g + 1` of row `r`; whether they come
/// straight from the blocks or from [`Unpacked`], the arithmetic per (row, token) is the same,
/// so one token computed alone equals the same token in a batch ([`tile512_one`], which
/// decodes the formats with a scale plane, does the same arithmetic too).
#[inline(always)]
unsafe fn tile512<L: Layout, const R: usize, const T: usize>(
    weights: impl Pairs,
    acts: &Acts,
    tokens: [usize; T],
) -> [[f32; T]; R] {
    unsafe {
        let groups = acts.groups;
        let zero = _mm512_setzero_si512();
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        for g in (0..groups).step_by(2) {
            if g % 8 == 0 {
                weights.prefetch(g);
            }
            // Plain loops: the weight source must inline here, not sit behind a closure call.
            let mut w = [Pair {
                q: zero,
                scale: _mm512_setzero_ps(),
                min: _mm512_setzero_ps(),
            }; R];
            for (r, pair) in w.iter_mut().enumerate() {
                *pair = weights.pair(r, g);
            }
            // Signed weights come with an offset of 128 (see `Layout::SIGNED`), which `vpdpbusd`
            // takes directly; the offset comes off through the lane sums.
            let offset_log2 = if L::SIGNED { 7 } else { L::OFFSET_LOG2 };
            for (t, &token) in tokens.iter().enumerate() {
                let i = token * groups + g;
                let y = _mm512_loadu_si512(acts.q.as_ptr().add(i * GROUP).cast());
                let dy = _mm512_loadu_ps(acts.d_lanes.as_ptr().add(i).cast());
                let neg_sums = if offset_log2 > 0 || L::HAS_MIN {
                    _mm512_loadu_si512(acts.neg_lane_sums.as_ptr().add(i).cast())
                } else {
                    zero
                };
                let init = if offset_log2 > 0 {
                    _mm512_sll_epi32(neg_sums, _mm_cvtsi32_si128(offset_log2))
                } else {
                    zero
                };
                let neg_y_sums = if L::HAS_MIN {
                    _mm512_mul_ps(_mm512_cvtepi32_ps(neg_sums), dy)
                } else {
                    _mm512_setzero_ps()
                };
                for r in 0..R {
                    let products = _mm512_dpbusd_epi32(init, w[r].q, y);
                    let scale = _mm512_mul_ps(w[r].scale, dy);
                    let mut a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(products), scale, acc[r][t]);
                    if L::HAS_MIN {
                        a = _mm512_fmadd_ps(w[r].min, neg_y_sums, a);
                    }
                    acc[r][t] = a;
                }
            }
        }
        acc.map(|row| row.map(|v| _mm512_reduce_add_ps(v)))
    }
}

/// [`tile512`] for one token straight from the blocks of a format with a scale plane (decode's
/// tile): each row's f16 scales are converted and multiplied by the token's activation scales
/// 32 groups at a time, so a pair of groups only picks its two products out of registers. The
/// same f32 products as [`tile512`]'s, so the results are bit-identical.
///
/// `AHEAD`: prefetch the rows [`AHEAD_GROUPS`] ahead (long rows, see [`prefetch_rows`]).
///
/// # Safety
/// As [`Layout::pair`], for every even group of `R` whole rows (an even number of groups), on a
/// CPU with AVX-512 (F, BW, VL, VNNI); `token` is one of `acts`' tokens.
#[inline(always)]
unsafe fn tile512_one<L: Layout, const R: usize, const AHEAD: bool>(
    w: [*const u8; R],
    acts: &Acts,
    [token]: [usize; 1],
) -> [[f32; 1]; R] {
    // Instantiated for every format (behind `if L::PLANES`), so checked at run time.
    debug_assert!(L::PLANES && !L::HAS_MIN && acts.groups.is_multiple_of(2));
    unsafe {
        let groups = acts.groups;
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); R];
        // Per row, groups g0..g0 + 32's scale products in two registers.
        let mut scales = [[_mm512_setzero_ps(); 2]; R];
        let first = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let mut which = first;
        let dy = acts.d.as_ptr().add(token * groups);
        let offset_log2 = if L::SIGNED { 7 } else { L::OFFSET_LOG2 };
        for g in (0..groups).step_by(2) {
            if g % 32 == 0 {
                let left = groups - g;
                let mask = |n: usize| -> __mmask16 {
                    if n >= 16 {
                        0xFFFF
                    } else {
                        ((1u32 << n) - 1) as __mmask16
                    }
                };
                let (lo, hi) = (mask(left), mask(left.saturating_sub(16)));
                // Masked lanes are not read; the addresses may pass the token's last group (a
                // pointer, not a reference, so `wrapping_add`).
                let dy_lo = _mm512_maskz_loadu_ps(lo, dy.wrapping_add(g));
                let dy_hi = _mm512_maskz_loadu_ps(hi, dy.wrapping_add(g + 16));
                for (r, s) in scales.iter_mut().enumerate() {
                    let half = |m: __mmask16, at: usize| {
                        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w[r].add(2 * at).cast()))
                    };
                    *s = [
                        _mm512_mul_ps(half(lo, g), dy_lo),
                        _mm512_mul_ps(half(hi, g + 16), dy_hi),
                    ];
                }
                which = first;
            }
            if AHEAD && g % 8 == 0 {
                prefetch_rows::<L, R>(w, groups, g);
            }
            let i = token * groups + g;
            let y = _mm512_loadu_si512(acts.q.as_ptr().add(i * GROUP).cast());
            let init = if offset_log2 > 0 {
                let neg_sums = _mm512_loadu_si512(acts.neg_lane_sums.as_ptr().add(i).cast());
                _mm512_sll_epi32(neg_sums, _mm_cvtsi32_si128(offset_log2))
            } else {
                zero
            };
            for r in 0..R {
                let q = L::pair(w[r], groups, g).q;
                let products = _mm512_dpbusd_epi32(init, q, y);
                let scale = _mm512_permutex2var_ps(scales[r][0], which, scales[r][1]);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(products), scale, acc[r]);
            }
            which = _mm512_add_epi32(which, _mm512_set1_epi32(2));
        }
        acc.map(|v| [_mm512_reduce_add_ps(v)])
    }
}

/// [`super::quantize_group`] with AVX-512.
///
/// # Safety
/// The CPU runs AVX-512 F, BW, VL and VNNI; `values` holds 32 floats.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn quantize_group_avx512(
    values: &[f32],
    q: &mut [i8; GROUP],
    d: &mut f32,
    neg_lane_sums: &mut [i32; 8],
) {
    unsafe {
        let a = _mm512_loadu_ps(values.as_ptr());
        let b = _mm512_loadu_ps(values.as_ptr().add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        *d = amax / 127.0;
        let inv = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        // Nearest, ties to even (the default rounding mode); saturating to i8.
        let qa = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(a, inv)));
        let qb = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(b, inv)));
        let bytes = _mm256_set_m128i(qb, qa);
        _mm256_storeu_si256(q.as_mut_ptr().cast(), bytes);
        let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), bytes);
        _mm256_storeu_si256(
            neg_lane_sums.as_mut_ptr().cast(),
            _mm256_sub_epi32(_mm256_setzero_si256(), sums),
        );
    }
}

/// The output buffer, shared by the pool's threads, each writing its own rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: used only in `matmul`, where every thread writes a disjoint set of indices.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// Rows `rows` of `m` times tokens `tokens` into `out` (`(tokens, m.rows)` row-major).
#[inline(always)]
unsafe fn run<L: Layout, const VNNI: bool>(
    m: &QMatrix,
    acts: &Acts,
    rows: Range<usize>,
    tokens: Range<usize>,
    out: SharedOut,
) {
    unsafe {
        let row_bytes = m.row_bytes();
        let base = m.data.as_ptr();
        let groups = acts.groups;
        let wide = VNNI && groups.is_multiple_of(2);
        // Unpacking a tile of rows once pays off when several token tiles reuse it.
        let unpack = wide && tokens.len() >= 2 * TOKENS;
        // Rows read once (decode): short ones prefetched a tile at a time, long ones (with the
        // 512-bit kernels) each `AHEAD_GROUPS` ahead.
        let (next_tile, ahead) = if unpack {
            (false, false)
        } else {
            let short = ROWS * row_bytes <= PREFETCH_MAX;
            (short, !short)
        };
        let mut unpacked = Unpacked::default();
        let mut r = rows.start;
        while r < rows.end {
            let store = Store {
                out,
                first_row: r,
                n_rows: m.rows,
            };
            if r + ROWS <= rows.end {
                let w: [*const u8; ROWS] = std::array::from_fn(|k| base.add((r + k) * row_bytes));
                if next_tile {
                    // Ask for the next tile of rows now, so memory works while this tile
                    // computes.
                    let next = base.wrapping_add((r + ROWS) * row_bytes);
                    for line in (0..ROWS * row_bytes).step_by(64) {
                        prefetch_line(next.wrapping_add(line));
                    }
                }
                if unpack {
                    unpacked.fill::<L, ROWS>(w, groups);
                    let u = &unpacked;
                    token_tiles::<ROWS>(
                        tokens.clone(),
                        store,
                        |t| {
                            tile512::<L, ROWS, TOKENS>(
                                FromUnpacked::<L>(u, groups, PhantomData),
                                acts,
                                t,
                            )
                        },
                        |t| {
                            tile512::<L, ROWS, 1>(
                                FromUnpacked::<L>(u, groups, PhantomData),
                                acts,
                                t,
                            )
                        },
                    );
                } else if wide && ahead {
                    from_blocks::<L, ROWS, true>(w, acts, tokens.clone(), store);
                } else if wide {
                    from_blocks::<L, ROWS, false>(w, acts, tokens.clone(), store);
                } else {
                    token_tiles::<ROWS>(
                        tokens.clone(),
                        store,
                        |t| tile::<L, VNNI, ROWS, TOKENS>(w, acts, t),
                        |t| tile::<L, VNNI, ROWS, 1>(w, acts, t),
                    );
                }
                r += ROWS;
            } else {
                let w = [base.add(r * row_bytes)];
                if wide && ahead {
                    from_blocks::<L, 1, true>(w, acts, tokens.clone(), store);
                } else if wide {
                    from_blocks::<L, 1, false>(w, acts, tokens.clone(), store);
                } else {
                    token_tiles::<1>(
                        tokens.clone(),
                        store,
                        |t| tile::<L, VNNI, 1, TOKENS>(w, acts, t),
                        |t| tile::<L, VNNI, 1, 1>(w, acts, t),
                    );
                }
                r += 1;
            }
        }
    }
}

/// `R` rows straight from their blocks times `tokens` with 512-bit registers (decode, and
/// prompts too short to unpack for), prefetching the rows ahead where `AHEAD`.
///
/// # Safety
/// As [`tile512`]: whole rows, an even number of groups, AVX-512 VNNI; `tokens` inside `acts`
/// and `store`.
#[inline(always)]
unsafe fn from_blocks<L: Layout, const R: usize, const AHEAD: bool>(
    w: [*const u8; R],
    acts: &Acts,
    tokens: Range<usize>,
    store: Store,
) {
    let groups = acts.groups;
    // SAFETY: as this function's contract.
    unsafe {
        token_tiles::<R>(
            tokens,
            store,
            |t| {
                let blocks = FromBlocks::<L, R, AHEAD>::new(w, groups);
                tile512::<L, R, TOKENS>(blocks, acts, t)
            },
            |t| {
                if L::PLANES {
                    tile512_one::<L, R, AHEAD>(w, acts, t)
                } else {
                    let blocks = FromBlocks::<L, R, AHEAD>::new(w, groups);
                    tile512::<L, R, 1>(blocks, acts, t)
                }
            },
        );
    }
}

/// Where a tile's results go.
#[derive(Clone, Copy)]
struct Store {
    out: SharedOut,
    first_row: usize,
    n_rows: usize,
}

/// Runs `four` over the tokens four at a time and `one` over the rest, storing the results.
#[inline(always)]
unsafe fn token_tiles<const R: usize>(
    tokens: Range<usize>,
    store: Store,
    four: impl Fn([usize; TOKENS]) -> [[f32; TOKENS]; R],
    one: impl Fn([usize; 1]) -> [[f32; 1]; R],
) {
    let Store {
        out,
        first_row,
        n_rows,
    } = store;
    let mut t = tokens.start;
    while t < tokens.end {
        if t + TOKENS <= tokens.end {
            let v = four(std::array::from_fn(|k| t + k));
            for (r, row) in v.iter().enumerate() {
                for (k, value) in row.iter().enumerate() {
                    // SAFETY: the caller's rows and tokens are inside `out`, and only this
                    // thread writes these rows.
                    unsafe { *out.0.add((t + k) * n_rows + first_row + r) = *value };
                }
            }
            t += TOKENS;
        } else {
            let v = one([t]);
            for (r, row) in v.iter().enumerate() {
                // SAFETY: as above.
                unsafe { *out.0.add(t * n_rows + first_row + r) = row[0] };
            }
            t += 1;
        }
    }
}

type Runner = unsafe fn(&QMatrix, &Acts, Range<usize>, Range<usize>, SharedOut);

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2<L: Layout>(
    m: &QMatrix,
    acts: &Acts,
    rows: Range<usize>,
    tokens: Range<usize>,
    out: SharedOut,
) {
    unsafe { run::<L, false>(m, acts, rows, tokens, out) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn run_vnni<L: Layout>(
    m: &QMatrix,
    acts: &Acts,
    rows: Range<usize>,
    tokens: Range<usize>,
    out: SharedOut,
) {
    unsafe { run::<L, true>(m, acts, rows, tokens, out) }
}

fn runner(isa: Isa, format: Format) -> Runner {
    match (isa, format) {
        (Isa::Avx2, Format::Q5_0) => run_avx2::<Q5_0>,
        (Isa::Avx2, Format::Q8_0) => run_avx2::<Q8_0>,
        (Isa::Avx2, Format::Q4K) => run_avx2::<Q4K>,
        (Isa::Avx2, Format::Q6K) => run_avx2::<Q6K>,
        (Isa::Avx512Vnni, Format::Q5_0) => run_vnni::<Q5_0>,
        (Isa::Avx512Vnni, Format::Q8_0) => run_vnni::<Q8_0>,
        (Isa::Avx512Vnni, Format::Q4K) => run_vnni::<Q4K>,
        (Isa::Avx512Vnni, Format::Q6K) => run_vnni::<Q6K>,
    }
}

/// `out` (`(tokens, m.rows)`) = `acts` x `m` transposed, split over weight rows between the
/// threads of candle's worker pool (the caller joins in).
pub(super) fn matmul(m: &QMatrix, acts: &Acts, out: &mut [f32]) {
    let run = runner(m.isa, m.format);
    let n = acts.d.len() / acts.groups;
    debug_assert_eq!(out.len(), n * m.rows);
    let slab = (SLAB_BYTES / m.cols).max(TOKENS) / TOKENS * TOKENS;
    let out = SharedOut(out.as_mut_ptr());
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let tiles = m.rows.div_ceil(ROWS);
    let next = AtomicUsize::new(0);
    // One item per thread, each taking tiles of rows from a shared cursor in shrinking chunks
    // (half of an even share of what is left, at least `MIN_CHUNK`): long runs over the rows
    // first, for the prefetchers, and a short tail, so no thread waits long for the others.
    // (The pool runs the items inline when called from one of its own threads.)
    pool.execute_chunked(threads, |_| {
        loop {
            let left = tiles.saturating_sub(next.load(Ordering::Relaxed));
            let chunk = (left / (2 * threads)).max(MIN_CHUNK);
            let first = next.fetch_add(chunk, Ordering::Relaxed);
            if first >= tiles {
                break;
            }
            let rows = first * ROWS..((first + chunk) * ROWS).min(m.rows);
            let mut start = 0;
            while start < n {
                let end = (start + slab).min(n);
                // SAFETY: `QMatrix` only exists with an `Isa` that `Isa::available` found on
                // this CPU (see `Linear::load` and the tests) and with whole rows of blocks;
                // `acts` holds `n` tokens of `cols` values; the cursor gives every tile to one
                // thread, which alone writes its rows of `out`.
                unsafe { run(m, acts, rows.clone(), start..end, out) };
                start = end;
            }
        }
    });
}
