//! Exact integer GEMM behind the executor's QLinearConv, ConvInteger,
//! QLinearMatMul and MatMulInteger: `C[m, n] = Σ_k A[m, k] · B[k, n]` over
//! zero-point-centred 8-bit operands held as `i16` (|v| ≤ 255).
//!
//! Method (exact, no saturation anywhere):
//! - A is packed in blocks of [`MR`] rows, B in panels of [`NR`] columns;
//!   both interleave the reduction index in pairs `(k, k + 1)`.
//! - The micro-kernel multiplies pairs and adds each pair's two products
//!   into `i32` (x86 `vpmaddwd`): a product is at most 255² = 65025, a pair
//!   at most 130050, so nothing saturates (unlike `vpmaddubsw`, whose `i16`
//!   pair sums saturate on u8 × s8, NOTES.md). An `i32` sum of at most
//!   [`KC`] = 32768 products (≤ 2.13e9) cannot overflow; longer
//!   reductions are split into such blocks and summed in `i64`.
//! - The register tile is `MR × NR` = 6 × 16: twelve 8-lane `i32`
//!   accumulators, two B vectors and one broadcast A pair fill 15 of the 16
//!   AVX2 registers. With AVX-512 VNNI, one `vpdpwssd` per row and pair
//!   does the multiply and both adds on all 16 columns (the same exact
//!   sums). The kernels are chosen by runtime detection (VNNI, else AVX2,
//!   else the portable version, which computes the same integers).
//! - A block of fewer than `MR` rows (a matrix-vector product, the last
//!   block of a matrix) runs a kernel compiled for exactly its height, so
//!   no lanes are spent on padding rows.
//! - Output tiles (row chunk × column chunk) run in parallel with rayon; an
//!   epilogue ([`gemm_map`]) turns each task row (up to `NC` columns) into
//!   outputs (bias, requantization) while it is in cache. Its accumulators
//!   arrive as [`Sums::I32`] when the reduction fits one `i32` block (every
//!   real layer), as [`Sums::I64`] beyond.
//!
//! Pure computation: reads its operands, returns the outputs.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows of A per micro-kernel tile.
pub const MR: usize = 6;
/// Columns of B per micro-kernel tile (one panel).
pub const NR: usize = 16;
/// Longest reduction summed in `i32` (255² · 32768 < 2^31).
pub const KC: usize = 32_768;
/// Rows and columns of one parallel task (multiples of MR and NR).
const MC: usize = 12 * MR;
const NC: usize = 256;

/// A `[m, k]`, packed: `MR`-row blocks, each `[k/2][MR][2]`.
pub struct PackedA {
    m: usize,
    k: usize,
    /// `k` rounded up to even.
    kp: usize,
    data: Vec<i16>,
}

impl PackedA {
    /// Packs `f(row, k)` for `row < m`, `k < k`.
    pub fn new(m: usize, k: usize, f: impl Fn(usize, usize) -> i16 + Sync) -> Self {
        let kp = k.div_ceil(2) * 2;
        let blocks = m.div_ceil(MR);
        let mut data = vec![0i16; blocks * MR * kp];
        if kp > 0 {
            data.par_chunks_mut(MR * kp)
                .enumerate()
                .for_each(|(blk, d)| {
                    for r in 0..MR.min(m - blk * MR) {
                        let row = blk * MR + r;
                        for kk in 0..k {
                            d[(kk / 2) * 2 * MR + r * 2 + kk % 2] = f(row, kk);
                        }
                    }
                });
        }
        PackedA { m, k, kp, data }
    }

    /// Packs a row-major `[m, k]` slice of already centred values: each
    /// row's values, pair by pair, into its lane of the block.
    pub fn from_i16_rows(m: usize, k: usize, a: &[i16]) -> Self {
        let kp = k.div_ceil(2) * 2;
        let mut data = vec![0i16; m.div_ceil(MR) * MR * kp];
        if kp == 0 || a.len() < m * k {
            return PackedA { m, k, kp, data };
        }
        data.par_chunks_mut(MR * kp)
            .enumerate()
            .for_each(|(blk, d)| {
                for r in 0..MR.min(m - blk * MR) {
                    let row = &a[(blk * MR + r) * k..(blk * MR + r + 1) * k];
                    for (lane, pair) in d.chunks_exact_mut(2 * MR).zip(row.chunks(2)) {
                        lane[2 * r] = pair[0];
                        if let Some(&v) = pair.get(1) {
                            lane[2 * r + 1] = v;
                        }
                    }
                }
            });
        PackedA { m, k, kp, data }
    }
}

/// B `[k, n]`, packed: `NR`-column panels, each `[k/2][NR][2]`.
pub struct PackedB {
    k: usize,
    n: usize,
    kp: usize,
    data: Vec<i16>,
}

impl PackedB {
    /// Packs `f(k, col)` for `k < k`, `col < n`, panel by panel in
    /// parallel; within a panel row by row, so a row-major source is read
    /// in runs of `NR` consecutive values.
    pub fn new(k: usize, n: usize, f: impl Fn(usize, usize) -> i16 + Sync) -> Self {
        let kp = k.div_ceil(2) * 2;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i16; panels * NR * kp];
        if kp > 0 {
            data.par_chunks_mut(NR * kp).enumerate().for_each(|(p, d)| {
                let width = NR.min(n - p * NR);
                for kk in 0..k {
                    let base = (kk / 2) * 2 * NR + kk % 2;
                    for j in 0..width {
                        d[base + 2 * j] = f(kk, p * NR + j);
                    }
                }
            });
        }
        PackedB { k, n, kp, data }
    }

    /// Packs a row-major `[k, n]` slice, centring column `j` by `zp(j)`.
    pub fn from_rows(k: usize, n: usize, b: &[i32], zp: impl Fn(usize) -> i32 + Sync) -> Self {
        Self::new(k, n, |kk, j| (b[kk * n + j] - zp(j)) as i16)
    }

    /// Packs a row-major `[k, n]` slice of already centred values: each
    /// panel interleaves two rows' runs of `NR` values.
    pub fn from_i16_rows(k: usize, n: usize, b: &[i16]) -> Self {
        if b.len() < k * n {
            return Self::from_row_runs(k, n, |_, _, dst| dst.fill(0));
        }
        Self::packed(k, n, |p, d| {
            let c0 = p * NR;
            let width = NR.min(n - c0);
            for (q, dq) in d.chunks_exact_mut(2 * NR).enumerate() {
                let r0 = &b[2 * q * n + c0..2 * q * n + c0 + width];
                let r1 = if 2 * q + 1 < k {
                    &b[(2 * q + 1) * n + c0..(2 * q + 1) * n + c0 + width]
                } else {
                    &ZEROS[..width]
                };
                interleave(r0, r1, dq);
            }
        })
    }

    /// Packs `[k, n]` from runs: `row(kk, c0, dst)` writes row `kk`'s
    /// columns `c0..c0 + dst.len()` (at most one panel's `NR`) into `dst`.
    /// A convolution's im2col goes straight into the panels this way, with
    /// no `[k, n]` matrix in between.
    pub fn from_row_runs(
        k: usize,
        n: usize,
        row: impl Fn(usize, usize, &mut [i16]) + Sync,
    ) -> Self {
        Self::packed(k, n, |p, d| {
            let c0 = p * NR;
            let width = NR.min(n - c0);
            let (mut r0, mut r1) = ([0i16; NR], [0i16; NR]);
            for (q, dq) in d.chunks_exact_mut(2 * NR).enumerate() {
                row(2 * q, c0, &mut r0[..width]);
                if 2 * q + 1 < k {
                    row(2 * q + 1, c0, &mut r1[..width]);
                } else {
                    r1[..width].fill(0);
                }
                interleave(&r0[..width], &r1[..width], dq);
            }
        })
    }

    /// The panels of a `[k, n]` B, each written whole by `panel(p, d)`
    /// (`d`: panel `p`'s `NR · kp` values, pair rows of `2 · NR`, each
    /// written by [`interleave`]), in parallel. The buffer is not zeroed
    /// first: at 640×640 inputs zeroing it cost more than the GEMM.
    fn packed(k: usize, n: usize, panel: impl Fn(usize, &mut [MaybeUninit<i16>]) + Sync) -> Self {
        let kp = k.div_ceil(2) * 2;
        let len = n.div_ceil(NR) * NR * kp;
        let mut data: Vec<i16> = Vec::with_capacity(len);
        if len > 0 {
            data.spare_capacity_mut()[..len]
                .par_chunks_mut(NR * kp)
                .enumerate()
                .for_each(|(p, d)| panel(p, d));
        }
        // SAFETY: `len` is within the capacity, and every element below it
        // was written: each panel's `kp / 2` pair rows of `2 · NR` values
        // (`chunks_exact_mut` over `NR · kp` covers them all) went through
        // `interleave`, which writes all `2 · NR` of its row.
        unsafe { data.set_len(len) };
        PackedB { k, n, kp, data }
    }
}

const ZEROS: [i16; NR] = [0; NR];

/// `out[2j] = r0[j]`, `out[2j + 1] = r1[j]` for `j < r0.len()`, zeros for
/// the rest of the `2 · NR` values (a narrower last panel); fixed width
/// for full panels so the compiler vectorizes it. Writes all of `out`.
#[inline(always)]
fn interleave(r0: &[i16], r1: &[i16], out: &mut [MaybeUninit<i16>]) {
    let Ok(o) = <&mut [MaybeUninit<i16>; 2 * NR]>::try_from(out) else {
        return;
    };
    if let (Ok(a), Ok(b)) = (<&[i16; NR]>::try_from(r0), <&[i16; NR]>::try_from(r1)) {
        for j in 0..NR {
            o[2 * j].write(a[j]);
            o[2 * j + 1].write(b[j]);
        }
        return;
    }
    for j in 0..NR {
        o[2 * j].write(r0.get(j).copied().unwrap_or(0));
        o[2 * j + 1].write(r1.get(j).copied().unwrap_or(0));
    }
}

/// A run of exact accumulators handed to an epilogue: `i32` when the
/// reduction is short enough that no sum can overflow it, `i64` beyond.
#[derive(Clone, Copy, Debug)]
pub enum Sums<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl Sums<'_> {
    pub fn len(&self) -> usize {
        match self {
            Sums::I32(v) => v.len(),
            Sums::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `sum + bias` into `out` as a 32-bit accumulator would hold
    /// it (wrapping beyond i32), as many as both hold.
    pub fn write_i32(&self, bias: i64, out: &mut [i32]) {
        match self {
            Sums::I32(v) => {
                let b = bias as i32;
                out.iter_mut()
                    .zip(*v)
                    .for_each(|(o, &a)| *o = a.wrapping_add(b));
            }
            Sums::I64(v) => out
                .iter_mut()
                .zip(*v)
                .for_each(|(o, &a)| *o = a.wrapping_add(bias) as i32),
        }
    }

    /// Writes the sums into `out` (as many as both hold).
    pub fn write_i64(&self, out: &mut [i64]) {
        match self {
            Sums::I32(v) => out.iter_mut().zip(*v).for_each(|(o, &a)| *o = a as i64),
            Sums::I64(v) => out.iter_mut().zip(*v).for_each(|(o, &a)| *o = a),
        }
    }
}

/// `C = A · B` as `i64`, row-major `[m, n]`.
pub fn gemm(a: &PackedA, b: &PackedB) -> Vec<i64> {
    gemm_map(a, b, |_, _, acc, out| acc.write_i64(out))
}

/// `C = A · B` through an epilogue: `f(row, col0, acc, out)` turns the
/// accumulators `acc` of row `row`, columns `col0..col0 + acc.len()` (one
/// task's columns, at most `NC`) into the output values `out` (bias,
/// requantization), while the task's accumulators are still in cache.
/// Returns the outputs row-major `[m, n]`.
pub fn gemm_map<T: Copy + Default + Send>(
    a: &PackedA,
    b: &PackedB,
    f: impl Fn(usize, usize, Sums, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); a.m * b.n];
    gemm_map_into(a, b, &mut out, f);
    out
}

/// The row-major `[m, n]` slice tasks write their tiles into, each task
/// its own rows × columns.
struct Tiles<T>(*mut T, usize);

// SAFETY: tasks write through the pointer to disjoint parts only
// (see `gemm_map_into`).
unsafe impl<T: Send> Sync for Tiles<T> {}

impl<T> Tiles<T> {
    /// Row `r`, columns `c0..c0 + cols`.
    ///
    /// # Safety
    /// In bounds (`r < m`, `c0 + cols <= n`), and no other live slice
    /// overlaps it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize, c0: usize, cols: usize) -> &mut [T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(r * self.1 + c0), cols) }
    }
}

/// [`gemm_map`] into `out` (`[m, n]` row-major; nothing is written when it
/// has another length): each task's epilogue writes its rows straight
/// into their place.
pub fn gemm_map_into<T: Copy + Default + Send>(
    a: &PackedA,
    b: &PackedB,
    out: &mut [T],
    f: impl Fn(usize, usize, Sums, &mut [T]) + Sync,
) {
    let (m, n) = (a.m, b.n);
    if m == 0 || n == 0 || a.k != b.k || a.kp != b.kp || out.len() != m * n {
        return;
    }
    let kp = a.kp;
    let row_chunks = m.div_ceil(MC);
    let col_chunks = n.div_ceil(NC);
    let tiles = Tiles(out.as_mut_ptr(), n);
    (0..row_chunks * col_chunks).into_par_iter().for_each(|t| {
        let (rc, cc) = (t / col_chunks, t % col_chunks);
        let (r0, r1) = (rc * MC, ((rc + 1) * MC).min(m));
        let (c0, c1) = (cc * NC, ((cc + 1) * NC).min(n));
        let (rows, cols) = (r1 - r0, c1 - c0);
        // The task's accumulators (MC × NC, cache-resident), handed to
        // the epilogue a whole task row at a time: i32 when one block
        // covers the reduction, i64 sums of i32 blocks beyond.
        let narrow = kp <= KC;
        let mut sums32 = vec![0i32; if narrow { rows * cols } else { 0 }];
        let mut sums64 = vec![0i64; if narrow { 0 } else { rows * cols }];
        let mut acc = [0i32; MR * NR];
        for p in c0 / NR..c1.div_ceil(NR) {
            let panel = &b.data[p * NR * kp..(p + 1) * NR * kp];
            let width = NR.min(c1 - p * NR);
            for blk in r0 / MR..r1.div_ceil(MR) {
                let ablk = &a.data[blk * MR * kp..(blk + 1) * MR * kp];
                let height = MR.min(r1 - blk * MR);
                let at = |r: usize| (blk * MR + r - r0) * cols + p * NR - c0;
                if narrow {
                    tile(ablk, panel, height, &mut acc);
                    for r in 0..height {
                        sums32[at(r)..at(r) + width].copy_from_slice(&acc[r * NR..r * NR + width]);
                    }
                } else {
                    // Longer reductions: i32 blocks of at most KC
                    // terms, summed in i64.
                    for q0 in (0..kp / 2).step_by(KC / 2) {
                        let q1 = (q0 + KC / 2).min(kp / 2);
                        tile(
                            &ablk[q0 * 2 * MR..q1 * 2 * MR],
                            &panel[q0 * 2 * NR..q1 * 2 * NR],
                            height,
                            &mut acc,
                        );
                        for r in 0..height {
                            let dst = &mut sums64[at(r)..at(r) + width];
                            for (w, &v) in dst.iter_mut().zip(&acc[r * NR..]) {
                                *w += v as i64;
                            }
                        }
                    }
                }
            }
        }
        for i in 0..rows {
            let run = if narrow {
                Sums::I32(&sums32[i * cols..(i + 1) * cols])
            } else {
                Sums::I64(&sums64[i * cols..(i + 1) * cols])
            };
            // SAFETY: r0 + i < m and c1 <= n, so the row is inside `out`
            // (m · n long, checked above); this task alone covers rows
            // r0..r1 × columns c0..c1, and the slice lives only for `f`.
            let dst = unsafe { tiles.row(r0 + i, c0, cols) };
            f(r0 + i, c0, run, dst);
        }
    });
}

/// The first `height` rows (at most `MR`) of one `MR × NR` tile over
/// `pairs = b.len() / (2·NR)` reduction pairs, written (not added) to
/// `acc`; rows from `height` on are left as they were.
fn tile(a: &[i16], b: &[i16], height: usize, acc: &mut [i32; MR * NR]) {
    let pairs = b.len() / (2 * NR);
    if a.len() < pairs * 2 * MR || height == 0 || height > MR {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            // SAFETY (every arm): the CPU has AVX-512F and AVX-512 VNNI
            // (checked just above); the lengths as for AVX2 below.
            unsafe {
                match height {
                    1 => tile_vnni::<1>(a, b, pairs, acc),
                    2 => tile_vnni::<2>(a, b, pairs, acc),
                    3 => tile_vnni::<3>(a, b, pairs, acc),
                    4 => tile_vnni::<4>(a, b, pairs, acc),
                    5 => tile_vnni::<5>(a, b, pairs, acc),
                    _ => tile_vnni::<MR>(a, b, pairs, acc),
                }
            }
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY (every arm): the CPU has AVX2 (checked just above),
            // and `a` holds `pairs · 2·MR`, `b` `pairs · 2·NR` values
            // (checked above).
            unsafe {
                match height {
                    1 => tile_avx2::<1>(a, b, pairs, acc),
                    2 => tile_avx2::<2>(a, b, pairs, acc),
                    3 => tile_avx2::<3>(a, b, pairs, acc),
                    4 => tile_avx2::<4>(a, b, pairs, acc),
                    5 => tile_avx2::<5>(a, b, pairs, acc),
                    _ => tile_avx2::<MR>(a, b, pairs, acc),
                }
            }
            return;
        }
    }
    tile_portable(a, b, pairs, height, acc);
}

fn tile_portable(a: &[i16], b: &[i16], pairs: usize, height: usize, acc: &mut [i32; MR * NR]) {
    acc[..height * NR].fill(0);
    for q in 0..pairs {
        let bq = &b[q * 2 * NR..(q + 1) * 2 * NR];
        let aq = &a[q * 2 * MR..(q + 1) * 2 * MR];
        for r in 0..height {
            let (a0, a1) = (aq[2 * r] as i32, aq[2 * r + 1] as i32);
            for j in 0..NR {
                acc[r * NR + j] += a0 * bq[2 * j] as i32 + a1 * bq[2 * j + 1] as i32;
            }
        }
    }
}

/// AVX2 micro-kernel for `H` rows: per reduction pair, two 16-lane loads
/// of B (8 columns × 2 k each), one broadcast `(a[k], a[k+1])` per row,
/// and `vpmaddwd` + `vpaddd` into `2·H` accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const H: usize>(a: &[i16], b: &[i16], pairs: usize, acc: &mut [i32; MR * NR]) {
    use std::arch::x86_64::*;
    let mut c = [_mm256_setzero_si256(); 2 * MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for q in 0..pairs {
        // SAFETY (whole block): q < pairs, and the caller checked that `a`
        // and `b` hold `pairs` pairs of `MR` and `NR` lanes; H ≤ MR.
        unsafe {
            let b0 = _mm256_loadu_si256(bp.add(q * 2 * NR) as *const __m256i);
            let b1 = _mm256_loadu_si256(bp.add(q * 2 * NR + 16) as *const __m256i);
            let aq = ap.add(q * 2 * MR) as *const i32;
            for r in 0..H {
                let av = _mm256_set1_epi32(aq.add(r).read_unaligned());
                c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(av, b0));
                c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(av, b1));
            }
        }
    }
    // Lanes of c[2r] are columns 0..8 of row r, c[2r+1] columns 8..16.
    for (i, v) in c.iter().enumerate().take(2 * H) {
        // SAFETY: acc holds MR·NR = 8 · (2·MR) i32, chunk i < 2·H is 8 lanes.
        unsafe { _mm256_storeu_si256(acc.as_mut_ptr().add(i * 8) as *mut __m256i, *v) };
    }
}

/// AVX-512 VNNI micro-kernel for `H` rows: per reduction pair, one
/// 32-lane load of B (16 columns × 2 k), one broadcast `(a[k], a[k+1])`
/// per row, and one `vpdpwssd` per row, which adds both `i16` products of
/// each lane pair into its `i32` lane without saturating (the same sums
/// as `vpmaddwd` + `vpaddd`). Even and odd pairs go to two sets of
/// accumulators (twice the independent chains to hide the instruction's
/// latency), added at the end: integer sums, so the result is exact and
/// the same as the other kernels'.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_vnni<const H: usize>(a: &[i16], b: &[i16], pairs: usize, acc: &mut [i32; MR * NR]) {
    use std::arch::x86_64::*;
    let mut even = [_mm512_setzero_si512(); MR];
    let mut odd = [_mm512_setzero_si512(); MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let step = |c: &mut [__m512i; MR], q: usize| {
        // SAFETY: q < pairs, and the caller checked that `a` and `b` hold
        // `pairs` pairs of `MR` and `NR` lanes; H ≤ MR.
        unsafe {
            let bv = _mm512_loadu_si512(bp.add(q * 2 * NR) as *const __m512i);
            let aq = ap.add(q * 2 * MR) as *const i32;
            for (r, cr) in c.iter_mut().enumerate().take(H) {
                let av = _mm512_set1_epi32(aq.add(r).read_unaligned());
                *cr = _mm512_dpwssd_epi32(*cr, av, bv);
            }
        }
    };
    let mut q = 0;
    while q + 1 < pairs {
        step(&mut even, q);
        step(&mut odd, q + 1);
        q += 2;
    }
    if q < pairs {
        step(&mut even, q);
    }
    // Lanes of row r's accumulators are its 16 columns.
    for r in 0..H {
        let v = _mm512_add_epi32(even[r], odd[r]);
        // SAFETY: acc holds MR·NR i32; row r < H ≤ MR is NR = 16 lanes.
        unsafe { _mm512_storeu_si512(acc.as_mut_ptr().add(r * NR) as *mut __m512i, v) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i16s(v: &[i32]) -> Vec<i16> {
        v.iter().map(|&x| x as i16).collect()
    }

    fn naive(a: &[i32], b: &[i32], m: usize, k: usize, n: usize) -> Vec<i64> {
        let mut c = vec![0i64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|t| a[i * k + t] as i64 * b[t * n + j] as i64)
                    .sum();
            }
        }
        c
    }

    #[test]
    fn equals_the_naive_product_on_odd_shapes_and_extreme_values() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 511) as i32 - 255
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 16),
            (5, 33, 17),
            (70, 9, 300),
            (9, 300, 33),
            (1, 64, 40),
            (2, 7, 16),
            (77, 20, 5),
        ] {
            let a: Vec<i32> = (0..m * k).map(|_| rnd()).collect();
            let b: Vec<i32> = (0..k * n).map(|_| rnd()).collect();
            let got = gemm(
                &PackedA::from_i16_rows(m, k, &i16s(&a)),
                &PackedB::from_rows(k, n, &b, |_| 0),
            );
            assert_eq!(got, naive(&a, &b, m, k, n), "{m}x{k}x{n}");
            // Portable kernel gives the same integers.
            let pa = PackedA::from_i16_rows(m, k, &i16s(&a));
            let pb = PackedB::from_rows(k, n, &b, |_| 0);
            let pairs = pb.kp / 2;
            for height in 1..=MR {
                let mut t1 = [7i32; MR * NR];
                let mut t2 = [7i32; MR * NR];
                tile(
                    &pa.data[..pairs * 2 * MR],
                    &pb.data[..pairs * 2 * NR],
                    height,
                    &mut t1,
                );
                tile_portable(&pa.data, &pb.data, pairs, height, &mut t2);
                assert_eq!(t1, t2, "height {height}");
                assert!(t1[height * NR..].iter().all(|&v| v == 7));
                // The AVX2 kernel too, where VNNI took its place above.
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") && height == MR {
                    let mut t3 = [7i32; MR * NR];
                    // SAFETY: AVX2 checked; both slices hold `pairs` pairs.
                    unsafe { tile_avx2::<MR>(&pa.data, &pb.data, pairs, &mut t3) };
                    assert_eq!(t3, t2, "AVX2");
                }
            }
            // Row interleaving packs the same panels as the general path.
            let b16: Vec<i16> = b.iter().map(|&v| v as i16).collect();
            assert_eq!(PackedB::from_i16_rows(k, n, &b16).data, pb.data);
        }
        // All-extreme operands: every pair is 2 · 255² and the sum is exact.
        let (m, k, n) = (4, 40_000, 16);
        let a = vec![-255; m * k];
        let b = vec![-255; k * n];
        let got = gemm(
            &PackedA::from_i16_rows(m, k, &i16s(&a)),
            &PackedB::from_rows(k, n, &b, |_| 0),
        );
        assert!(got.iter().all(|&v| v == 65025 * 40_000));
    }
}
