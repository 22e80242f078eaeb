//! Integer convolution (QLinearConv, ConvInteger) from the ONNX Conv
//! specification: the geometry (pads, strides, dilations, auto_pad,
//! groups), the weights centred and packed once, and the exact sums by
//! one GEMM per group (2-D: the im2col columns gathered straight into the
//! GEMM's panels), by depthwise row accumulation (`exec::depthwise`), or
//! row by row for narrow groups; each output row goes through the
//! caller's epilogue (bias, requantization).

use super::depthwise::{depthwise_plane, PaddedPlane};
use super::gemm::{gemm_map_into, PackedA, PackedB, Sums, MR};
use super::kernels::{unravel, Ints};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Convolution geometry (ONNX Conv attributes resolved for one input).
#[derive(Clone, Debug)]
pub struct ConvGeom {
    pub group: usize,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begin pads per spatial axis, then end pads.
    pub pads: Vec<usize>,
    pub out: Vec<usize>,
}

/// Resolves Conv attributes against input spatial dims (ONNX Conv: `pads`
/// or `auto_pad` SAME_UPPER / SAME_LOWER / VALID).
pub fn conv_geom(
    spatial: &[usize],
    kernel: &[usize],
    strides: Option<Vec<i64>>,
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    auto_pad: &str,
    group: usize,
) -> Result<ConvGeom> {
    let r = spatial.len();
    let bad = |m: String| Error::tensor("Conv", m);
    if kernel.len() != r || kernel.contains(&0) || spatial.contains(&0) {
        return Err(bad(format!(
            "kernel {kernel:?} does not fit an input with spatial dims {spatial:?}"
        )));
    }
    let one = |v: Option<Vec<i64>>, what: &str| -> Result<Vec<usize>> {
        match v {
            None => Ok(vec![1; r]),
            Some(v) if v.len() == r && v.iter().all(|&x| x >= 1) => {
                Ok(v.iter().map(|&x| x as usize).collect())
            }
            Some(v) => Err(bad(format!("{what} {v:?} for {r} spatial axes"))),
        }
    };
    let strides = one(strides, "strides")?;
    let dilations = one(dilations, "dilations")?;
    let mut p = vec![0usize; 2 * r];
    let mut out = vec![0usize; r];
    for i in 0..r {
        let ek = dilations[i] * (kernel[i] - 1) + 1;
        match auto_pad {
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = spatial[i].div_ceil(strides[i]);
                let total = ((o - 1) * strides[i] + ek).saturating_sub(spatial[i]);
                let (small, big) = (total / 2, total - total / 2);
                if auto_pad == "SAME_UPPER" {
                    (p[i], p[i + r]) = (small, big);
                } else {
                    (p[i], p[i + r]) = (big, small);
                }
                out[i] = o;
            }
            _ => {
                if auto_pad != "VALID" {
                    if let Some(pads) = &pads {
                        if pads.len() != 2 * r || pads.iter().any(|&x| x < 0) {
                            return Err(bad(format!("pads {pads:?} for {r} spatial axes")));
                        }
                        p[i] = pads[i] as usize;
                        p[i + r] = pads[i + r] as usize;
                    }
                }
                let span = spatial[i] + p[i] + p[i + r];
                if span < ek {
                    return Err(bad(format!(
                        "kernel {ek} (dilated) is larger than the padded input {span}"
                    )));
                }
                out[i] = (span - ek) / strides[i] + 1;
            }
        }
    }
    Ok(ConvGeom {
        group,
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads: p,
        out,
    })
}

/// The weights of one QLinearConv / ConvInteger, centred by their (per
/// output channel) zero points and packed once: one [`PackedA`] `[mg, kk]`
/// per group when a group has at least [`MR`] output channels, the centred
/// rows otherwise (depthwise).
pub struct ConvWeights {
    /// `[M, C/group, k...]`.
    dims: Vec<usize>,
    group: usize,
    wc: Vec<i16>,
    packed: Vec<PackedA>,
}

impl ConvWeights {
    pub fn new(w: &Ints, w_zp: &[i32], group: usize) -> Result<Self> {
        let m = w.dims.first().copied().unwrap_or(0);
        if w.dims.len() < 3 || m == 0 || group == 0 || !m.is_multiple_of(group) {
            return Err(Error::tensor(
                "QLinearConv",
                format!("weight {:?} with group {group}", w.dims),
            ));
        }
        if w_zp.len() != 1 && w_zp.len() != m {
            return Err(Error::tensor(
                "w_zero_point",
                format!("{} zero points for {m} output channels", w_zp.len()),
            ));
        }
        let kk: usize = w.dims[1..].iter().product();
        let wc: Vec<i16> = w
            .data
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - w_zp[if w_zp.len() == 1 { 0 } else { i / kk }]) as i16)
            .collect();
        let mg = m / group;
        let packed = if mg >= MR {
            (0..group)
                .map(|gi| PackedA::new(mg, kk, |r, k| wc[(gi * mg + r) * kk + k]))
                .collect()
        } else {
            Vec::new()
        };
        Ok(ConvWeights {
            dims: w.dims.clone(),
            group,
            wc,
            packed,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.dims[0]
    }
}

/// Integer convolution `[N, M, out...]` through an epilogue: the
/// accumulators `Σ (x − x_zp)(w − w_zp[m])`, with zero padding in the
/// centred domain (a pad is the real value 0, i.e. `x_zp`), are handed run
/// by run to `f(output channel, bias, acc, out)`, which turns them (bias
/// not yet added) into output values. `xc` is the input `[N, C,
/// spatial...]` already centred by `x_zp`.
pub fn conv_map<T: Copy + Default + Send>(
    xc: &[i16],
    xdims: &[usize],
    w: &ConvWeights,
    bias: Option<&[i32]>,
    g: &ConvGeom,
    f: impl Fn(usize, i64, Sums, &mut [T]) + Sync,
) -> Result<Vec<T>> {
    let (nb, c) = (xdims[0], xdims[1]);
    let spatial = &xdims[2..];
    let m = w.dims[0];
    let cg = w.dims[1];
    if g.group != w.group || c != cg * g.group || xc.len() != xdims.iter().product::<usize>() {
        return Err(Error::tensor(
            "QLinearConv",
            format!(
                "input {xdims:?} does not fit weight {:?} with group {}",
                w.dims, g.group
            ),
        ));
    }
    if bias.is_some_and(|b| b.len() != m) || w.dims[2..] != g.kernel[..] {
        return Err(Error::tensor(
            "QLinearConv",
            format!(
                "weight {:?}, kernel {:?}, bias of {:?} values",
                w.dims,
                g.kernel,
                bias.map(<[i32]>::len)
            ),
        ));
    }
    let mg = m / g.group;
    let ksz: usize = g.kernel.iter().product();
    let kk = cg * ksz;
    let osz: usize = g.out.iter().product();
    let isz: usize = spatial.iter().product();
    let mut out = vec![T::default(); nb * m * osz];
    if osz == 0 {
        return Ok(out);
    }
    let pointwise = ksz == 1
        && g.strides.iter().all(|&s| s == 1)
        && g.pads.iter().all(|&p| p == 0)
        && g.out[..] == spatial[..];
    let im2col = |n: usize, gi: usize| -> std::borrow::Cow<'_, [i16]> {
        let x0 = (n * c + gi * cg) * isz;
        if pointwise {
            // 1×1, stride 1, no padding: the input planes are the columns.
            std::borrow::Cow::Borrowed(&xc[x0..x0 + cg * isz])
        } else {
            std::borrow::Cow::Owned(im2col(&xc[x0..x0 + cg * isz], spatial, cg, g))
        }
    };
    let bias_of = |mo: usize| bias.map_or(0, |b| b[mo] as i64);
    // 2-D, one input channel per group, few enough taps for i32 sums.
    let depthwise = cg == 1 && spatial.len() == 2 && ksz <= 33_000;
    // One output row: Σ_k w[mo, k] · cols[k, ·] (exact in i32 up to 33025
    // terms, i64 beyond), plus the bias.
    let row = |mo: usize, cols: &[i16], orow: &mut [T]| {
        let wrow = &w.wc[mo * kk..(mo + 1) * kk];
        if kk <= 33_000 {
            let mut acc = vec![0i32; osz];
            row_i32(wrow, cols, &mut acc);
            f(mo, bias_of(mo), Sums::I32(&acc), orow);
        } else {
            let mut acc64 = vec![0i64; osz];
            for (k, &wv) in wrow.iter().enumerate() {
                for (o, &cv) in acc64.iter_mut().zip(&cols[k * osz..(k + 1) * osz]) {
                    *o += wv as i64 * cv as i64;
                }
            }
            f(mo, bias_of(mo), Sums::I64(&acc64), orow);
        }
    };
    for (n, on) in out.chunks_mut(m * osz).enumerate() {
        if !w.packed.is_empty() {
            // Groups with at least MR output channels: one GEMM each,
            // weights `[mg, kk]` × columns `[kk, osz]` (see `gemm`), the
            // epilogue adds the bias, applies `f` and writes in place.
            // 2-D columns are gathered straight into the GEMM's panels.
            for (gi, pw) in w.packed.iter().enumerate() {
                let cols = if spatial.len() == 2 && !pointwise {
                    let x0 = (n * c + gi * cg) * isz;
                    let taps = Taps2d::new(&xc[x0..x0 + cg * isz], spatial, g);
                    PackedB::from_row_runs(kk, osz, |k, c0, dst| taps.run(k, c0, dst))
                } else {
                    PackedB::from_i16_rows(kk, osz, &im2col(n, gi))
                };
                let c0 = gi * mg;
                gemm_map_into(
                    pw,
                    &cols,
                    &mut on[c0 * osz..(c0 + mg) * osz],
                    |r, _, acc, out| f(c0 + r, bias_of(c0 + r), acc, out),
                );
            }
        } else if depthwise {
            // One input plane per group (depthwise, any channel
            // multiplier): taps straight from the plane, no im2col.
            on.par_chunks_mut(mg * osz)
                .enumerate()
                .for_each(|(gi, og)| {
                    let x0 = (n * c + gi) * isz;
                    let pad = PaddedPlane::new(&xc[x0..x0 + isz], spatial, g);
                    let mut acc = vec![0i32; osz];
                    for (mi, orow) in og.chunks_mut(osz).enumerate() {
                        let mo = gi * mg + mi;
                        depthwise_plane(&pad, &w.wc[mo * ksz..(mo + 1) * ksz], g, &mut acc);
                        f(mo, bias_of(mo), Sums::I32(&acc), orow);
                    }
                });
        } else {
            // Narrow groups: groups in parallel, row by row.
            on.par_chunks_mut(mg * osz)
                .enumerate()
                .for_each(|(gi, og)| {
                    let cols = im2col(n, gi);
                    for (mi, orow) in og.chunks_mut(osz).enumerate() {
                        row(gi * mg + mi, &cols, orow);
                    }
                });
        }
    }
    Ok(out)
}

/// For kernel column `kx` of a 2-D convolution over rows `w` wide: the
/// offset `off` with input column `xo·stride + off` for output column
/// `xo`, and the output columns `lo..hi` whose input column lies in
/// `[0, w)` (empty when `lo >= hi`).
fn tap_columns(kx: usize, g: &ConvGeom, w: usize) -> (isize, usize, usize) {
    let (sw, ow) = (g.strides[1], g.out[1]);
    let off = (kx * g.dilations[1]) as isize - g.pads[1] as isize;
    let lo = if off >= 0 {
        0
    } else {
        (-off as usize).div_ceil(sw)
    };
    let hi = if (w as isize) - off <= 0 {
        0
    } else {
        ((w as isize - off - 1) as usize / sw + 1).min(ow)
    };
    (off, lo, hi)
}

/// The im2col matrix of one image's group of a 2-D convolution, read a
/// run at a time (`[`PackedB::from_row_runs`]`) instead of built: row
/// `k = ci · ksz + tap`, column `o = y · ow + x`; padding is the centred
/// value 0.
struct Taps2d<'a> {
    /// `cg` centred input planes.
    xg: &'a [i16],
    h: usize,
    w: usize,
    g: &'a ConvGeom,
    /// Per tap: kernel row, and the kernel column's [`tap_columns`].
    taps: Vec<(usize, (isize, usize, usize))>,
}

impl<'a> Taps2d<'a> {
    fn new(xg: &'a [i16], spatial: &[usize], g: &'a ConvGeom) -> Self {
        let (h, w) = (spatial[0], spatial[1]);
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let taps = (0..kh * kw)
            .map(|t| (t / kw, tap_columns(t % kw, g, w)))
            .collect();
        Taps2d { xg, h, w, g, taps }
    }

    /// Row `k`, columns `c0..c0 + dst.len()`, into `dst` (all of it).
    fn run(&self, k: usize, c0: usize, dst: &mut [i16]) {
        let (h, w, g) = (self.h, self.w, self.g);
        let (ow, sh, sw) = (g.out[1], g.strides[0], g.strides[1]);
        let (ci, t) = (k / self.taps.len(), k % self.taps.len());
        let (ky, (off, lo, hi)) = self.taps[t];
        let plane = &self.xg[ci * h * w..(ci + 1) * h * w];
        let mut o = c0;
        let mut rest = dst;
        while !rest.is_empty() {
            let (y, x0) = (o / ow, o % ow);
            let len = (ow - x0).min(rest.len());
            let (seg, tail) = rest.split_at_mut(len);
            let iy = (y * sh + ky * g.dilations[0]) as isize - g.pads[0] as isize;
            if iy < 0 || iy >= h as isize {
                seg.fill(0);
            } else {
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                // Output columns x0..x0 + len; those in lo..hi read the row.
                let a = lo.clamp(x0, x0 + len);
                let b = hi.clamp(a, x0 + len);
                seg[..a - x0].fill(0);
                seg[b - x0..].fill(0);
                let inside = &mut seg[a - x0..b - x0];
                let first = (a * sw) as isize + off;
                if b > a {
                    let first = first as usize;
                    if sw == 1 {
                        inside.copy_from_slice(&src[first..first + (b - a)]);
                    } else {
                        for (d, s) in inside.iter_mut().zip(src[first..].iter().step_by(sw)) {
                            *d = *s;
                        }
                    }
                }
            }
            o += len;
            rest = tail;
        }
    }
}

/// im2col of one image's group (`xg`: `cg` centred input planes),
/// K-major: `cols[k · osz + o]` with `k = ci · ksz + tap`; padding is the
/// centred value 0. 2-D convolutions copy whole runs of a row (stride 1)
/// or step through it; other ranks go element by element.
fn im2col(xg: &[i16], spatial: &[usize], cg: usize, g: &ConvGeom) -> Vec<i16> {
    let ksz: usize = g.kernel.iter().product();
    let osz: usize = g.out.iter().product();
    let isz: usize = spatial.iter().product();
    let r = spatial.len();
    let mut cols = vec![0i16; cg * ksz * osz];
    let kpos: Vec<Vec<usize>> = (0..ksz).map(|t| unravel(t, &g.kernel)).collect();
    let opos: Vec<Vec<usize>> = if r == 2 {
        Vec::new()
    } else {
        (0..osz).map(|t| unravel(t, &g.out)).collect()
    };
    cols.par_chunks_mut(osz).enumerate().for_each(|(k, row)| {
        let (ci, t) = (k / ksz, k % ksz);
        let plane = &xg[ci * isz..(ci + 1) * isz];
        let kp = &kpos[t];
        if r == 2 {
            let (h, w) = (spatial[0], spatial[1]);
            let (oh, ow) = (g.out[0], g.out[1]);
            let (sh, sw) = (g.strides[0], g.strides[1]);
            let (off, lo, hi) = tap_columns(kp[1], g, w);
            for y in 0..oh {
                let iy = (y * sh + kp[0] * g.dilations[0]) as isize - g.pads[0] as isize;
                if iy < 0 || iy >= h as isize || lo >= hi {
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                let dst = &mut row[y * ow..(y + 1) * ow];
                let first = (lo * sw) as isize + off;
                if sw == 1 {
                    dst[lo..hi].copy_from_slice(&src[first as usize..first as usize + hi - lo]);
                } else {
                    for (d, s) in dst[lo..hi]
                        .iter_mut()
                        .zip(src[first as usize..].iter().step_by(sw))
                    {
                        *d = *s;
                    }
                }
            }
            return;
        }
        for (o, op) in opos.iter().enumerate() {
            let mut idx = 0usize;
            let mut inside = true;
            for d in 0..r {
                let pos =
                    (op[d] * g.strides[d] + kp[d] * g.dilations[d]) as isize - g.pads[d] as isize;
                if pos < 0 || pos as usize >= spatial[d] {
                    inside = false;
                    break;
                }
                idx = idx * spatial[d] + pos as usize;
            }
            if inside {
                row[o] = plane[idx];
            }
        }
    });
    cols
}

/// `acc[o] += Σ_k w[k] · cols[k · len + o]` in i32 (the caller bounds the
/// number of terms so it cannot overflow). Compiled twice: with AVX2 when
/// the CPU has it (runtime detection), and for the baseline target.
fn row_i32(w: &[i16], cols: &[i16], acc: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { row_i32_avx2(w, cols, acc) };
            return;
        }
    }
    row_i32_portable(w, cols, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_i32_avx2(w: &[i16], cols: &[i16], acc: &mut [i32]) {
    row_i32_portable(w, cols, acc);
}

#[inline(always)]
fn row_i32_portable(w: &[i16], cols: &[i16], acc: &mut [i32]) {
    let len = acc.len();
    for (k, &wv) in w.iter().enumerate() {
        if wv == 0 {
            continue;
        }
        let wv = wv as i32;
        for (a, &cv) in acc.iter_mut().zip(&cols[k * len..(k + 1) * len]) {
            *a += wv * cv as i32;
        }
    }
}
