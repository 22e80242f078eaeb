//! Depthwise 2-D convolution (one input channel per group): each output
//! plane accumulated from shifted rows of its zero-padded input plane,
//! exactly in `i32`, with an AVX2 kernel for stride 1.

use super::conv::ConvGeom;

/// Output columns a depthwise register block computes at once.
const DW_LANES: usize = 16;

/// A centred 2-D input plane with its padding materialised as zeros (the
/// centred pad value): rows `0..hp` are input rows `-pad_top..`, columns
/// `0..wp` input columns `-pad_left..`, and each row has room for a last
/// register block, so every tap of every output reads inside.
pub(super) struct PaddedPlane {
    data: Vec<i16>,
    wp: usize,
}

impl PaddedPlane {
    pub(super) fn new(plane: &[i16], spatial: &[usize], g: &ConvGeom) -> Self {
        let (h, w) = (spatial[0], spatial[1]);
        let extent = |d: usize| {
            (g.out[d] - 1) * g.strides[d] + g.kernel[d].saturating_sub(1) * g.dilations[d] + 1
        };
        let hp = extent(0);
        let wp = extent(1) + DW_LANES * g.strides[1];
        let mut data = vec![0i16; hp * wp];
        let (pt, pl) = (g.pads[0], g.pads[1]);
        // Padded columns pl..pl + w hold the input row (clipped to wp).
        let (c0, c1) = (pl.min(wp), (pl + w).min(wp));
        for (py, row) in data.chunks_exact_mut(wp).enumerate() {
            if py < pt || py - pt >= h || c0 >= c1 {
                continue;
            }
            let src = &plane[(py - pt) * w..(py - pt + 1) * w];
            row[c0..c1].copy_from_slice(&src[..c1 - c0]);
        }
        PaddedPlane { data, wp }
    }
}

/// One output plane of a 2-D convolution over one padded input plane:
/// `acc[y·ow + x] = Σ_taps w[tap] · x[y·sh + ky·dh, x·sw + kx·dw]`. Exact
/// in i32 (|w|, |x| ≤ 255, the caller bounds the taps). Stride 1 on a CPU
/// with AVX2 runs [`depthwise_s1_avx2`]; otherwise tap by tap over whole
/// rows (compiled with AVX2 when the CPU has it).
pub(super) fn depthwise_plane(pad: &PaddedPlane, w: &[i16], g: &ConvGeom, acc: &mut [i32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    // (offset from the output's top-left input, weight) of non-zero taps.
    let taps: Vec<(usize, i16)> = (0..kh * kw)
        .filter(|&t| w[t] != 0)
        .map(|t| {
            (
                (t / kw) * g.dilations[0] * pad.wp + (t % kw) * g.dilations[1],
                w[t],
            )
        })
        .collect();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            let (oh, ow) = (g.out[0], g.out[1]);
            // The furthest value a register block reads.
            let reach = taps.iter().map(|t| t.0).max().unwrap_or(0)
                + (oh - 1) * g.strides[0] * pad.wp
                + (ow - 1)
                + DW_LANES;
            if g.strides[1] == 1 && reach <= pad.data.len() && acc.len() >= oh * ow {
                // SAFETY: the CPU supports AVX2 (checked just above), and
                // every load stays below `reach` ≤ the plane's length.
                unsafe { depthwise_s1_avx2(pad, &taps, g, acc) };
                return;
            }
            // SAFETY: as above; the body is safe code.
            unsafe { depthwise_rows_avx2(pad, &taps, g, acc) };
            return;
        }
    }
    depthwise_rows(pad, &taps, g, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn depthwise_rows_avx2(pad: &PaddedPlane, taps: &[(usize, i16)], g: &ConvGeom, acc: &mut [i32]) {
    depthwise_rows(pad, taps, g, acc);
}

/// Tap by tap: each output row gains `w · (input row, every sw-th value)`.
#[inline(always)]
fn depthwise_rows(pad: &PaddedPlane, taps: &[(usize, i16)], g: &ConvGeom, acc: &mut [i32]) {
    let (oh, ow) = (g.out[0], g.out[1]);
    let (sh, sw) = (g.strides[0], g.strides[1]);
    acc.fill(0);
    for &(off, wv) in taps {
        let wv = wv as i32;
        for (y, row) in acc.chunks_exact_mut(ow).enumerate().take(oh) {
            let src = &pad.data[y * sh * pad.wp + off..];
            if sw == 1 {
                for (d, &v) in row.iter_mut().zip(src) {
                    *d += wv * v as i32;
                }
            } else {
                for (d, &v) in row.iter_mut().zip(src.iter().step_by(sw)) {
                    *d += wv * v as i32;
                }
            }
        }
    }
}

/// Stride-1 depthwise plane, [`DW_LANES`] output columns per register
/// block, taps two at a time: the two taps' input runs are interleaved
/// (`vpunpck{l,h}wd`) and multiplied by the broadcast weight pair
/// (`vpmaddwd`: `x₀·w₀ + x₁·w₁` per 32-bit lane, exact, |·| ≤ 2·255²), so
/// 16 outputs gain two taps in two multiply-adds. The unpacks leave
/// columns 0–3 and 8–11 in one accumulator, 4–7 and 12–15 in the other;
/// two lane permutes restore the order before the store.
///
/// # Safety
/// The CPU must support AVX2; for every output row `y` and tap offset
/// `off`, `y·sh·wp + off + (ow − 1) + DW_LANES` must not exceed the
/// plane's length, and `acc` must hold `oh·ow` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_s1_avx2(
    pad: &PaddedPlane,
    taps: &[(usize, i16)],
    g: &ConvGeom,
    acc: &mut [i32],
) {
    use std::arch::x86_64::*;
    let (oh, ow, sh) = (g.out[0], g.out[1], g.strides[0]);
    // Taps in pairs (an odd last one paired with a zero weight), each
    // pair's weights packed into one 32-bit lane as vpmaddwd reads them.
    let pairs: Vec<(usize, usize, i32)> = taps
        .chunks(2)
        .map(|p| {
            let (o0, w0) = p[0];
            let (o1, w1) = p.get(1).copied().unwrap_or((o0, 0));
            (o0, o1, (w0 as u16 as u32 | (w1 as u16 as u32) << 16) as i32)
        })
        .collect();
    let src = pad.data.as_ptr();
    let mut block = [0i32; DW_LANES];
    for y in 0..oh {
        let base = y * sh * pad.wp;
        for x0 in (0..ow).step_by(DW_LANES) {
            // SAFETY (whole block): loads read DW_LANES values from
            // base + off + x0 with x0 ≤ ow − 1, within the plane (the
            // caller's bound); the stores write `block` or acc[y·ow + x0..]
            // for DW_LANES values when they fit in the row.
            unsafe {
                let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                let at = src.add(base + x0);
                for &(o0, o1, wpair) in &pairs {
                    let v0 = _mm256_loadu_si256(at.add(o0) as *const __m256i);
                    let v1 = _mm256_loadu_si256(at.add(o1) as *const __m256i);
                    let w = _mm256_set1_epi32(wpair);
                    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(v0, v1), w));
                    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(v0, v1), w));
                }
                let first = _mm256_permute2x128_si256(lo, hi, 0x20);
                let second = _mm256_permute2x128_si256(lo, hi, 0x31);
                let n = DW_LANES.min(ow - x0);
                let dst = if n == DW_LANES {
                    acc.as_mut_ptr().add(y * ow + x0)
                } else {
                    block.as_mut_ptr()
                };
                _mm256_storeu_si256(dst as *mut __m256i, first);
                _mm256_storeu_si256(dst.add(8) as *mut __m256i, second);
                if n < DW_LANES {
                    acc[y * ow + x0..y * ow + x0 + n].copy_from_slice(&block[..n]);
                }
            }
        }
    }
}
