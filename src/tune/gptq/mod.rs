//! Error-compensating weight rounding (GPTQ: Frantar, Ashkboos, Hoefler,
//! Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers", ICLR 2023, Algorithm 1, lazy batches
//! included).
//!
//! Rounding every weight to its nearest level treats a layer's inputs as
//! independent; they are not (neighbouring pixels, features that fire
//! together), so the rounding errors of one output channel add up in its
//! output. This pass measures, per quantized Conv (any group count), Gemm
//! and MatMul with a constant weight, the Gram matrix `H = Σ x xᵀ` of the
//! layer's FP32 inputs on the calibration samples (a Conv's receptive
//! fields at up to [`crate::calibrate::gram::MAX_POSITIONS`] positions
//! per image, [`crate::calibrate::gram`]; summed within the calibration
//! pass up to [`FUSED_ENTRIES`], `probe.rs`; the others from their
//! inputs, which the calibration pass keeps up to [`KEPT_INPUT_BYTES`];
//! any left in passes of GPTQ's own),
//! then rounds each weight row column by column, in order of decreasing
//! input energy, moving each rounding error onto the columns still to be
//! rounded along `H⁻¹` (its upper Cholesky factor): the greedy minimum of
//! the layer's output error `Σ_rows (w − q)ᵀ H (w − q)` on that data.
//!
//! The scales are the ones nearest rounding gives (from the plan's own
//! quantized model), so only the level each weight lands on changes. The
//! returned model carries the rounded weights `(q − zp)·scale` in float and
//! [`QuantizeConfig::weight_grids`] pins their scales, so quantizing it
//! reproduces `q` exactly. A layer keeps nearest rounding when its error on
//! the calibration inputs is not lower, when it has more than
//! [`MAX_COLUMNS`] inputs per output (the `K×K` factorization is `O(K³)`),
//! or when its weights are asymmetric or shared. Reads the prepared model,
//! the plan and the samples; the copy it returns is for the quantizer only.

use crate::calibrate::samples::SampleSource;
use crate::calibrate::{gram, worker_pool};
use crate::error::{Error, Result};
use crate::ir::{Model, NodeId, Tensor, ValueId};
use crate::quantize::params::levels;
use crate::quantize::QuantizeConfig;
use crate::tune::weights::{put_back, quantized_layers, Grid, Layer, Original};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Most inputs per output channel (columns of `H`) a layer may have.
pub const MAX_COLUMNS: usize = 4608;
/// Most `H` entries summed in one pass over the samples.
const PASS_ENTRIES: usize = 32 << 20;
/// Most `H` entries measured within the calibration pass
/// ([`gram_probes`]): calibration sums them in f32 per block of samples,
/// one block per worker alive, so 16M entries are at most 64 MiB a block
/// (and 128 MiB of f64 sums across blocks).
pub const FUSED_ENTRIES: usize = 16 << 20;
/// Most bytes of layer inputs the calibration pass keeps for the Gram
/// matrices past [`FUSED_ENTRIES`] (summed after it, a few at a time, so
/// GPTQ needs no pass of its own): ResNet-50's layers past it read 5.1 MiB
/// a sample, 163 MiB for 32 samples; DenseNet-121's, 8 MiB, do not all fit
/// (the last ones go to passes).
pub const KEPT_INPUT_BYTES: usize = 256 << 20;
/// Added to `H`'s diagonal, as a fraction of its mean (GPTQ's default).
const DAMP: f64 = 0.01;

/// What the rounding did to one layer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rounded {
    pub node: String,
    pub op: String,
    /// Inputs per output channel (columns of `H`).
    pub columns: usize,
    /// SQNR of the layer's output on the calibration inputs (dB), with
    /// nearest rounding and with this pass.
    pub nearest_db: f64,
    pub compensated_db: f64,
    /// Whether the compensated weights were taken (they are when their
    /// error is lower).
    pub taken: bool,
    /// The weight before (for [`restore`]).
    #[serde(skip)]
    pub original: Original,
}

/// A layer left to nearest rounding, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

/// How a weight tensor maps to `[rows, columns]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Layout {
    /// Row-major `[rows, columns]`: Conv `[M, C/g, k…]`, Gemm `transB`.
    RowsFirst,
    /// `[columns, rows]`: MatMul and Gemm without `transB`.
    ColumnsFirst,
}

struct Target {
    /// The layer, its input and its weight's geometry.
    shape: GramShape,
    node: String,
    op: String,
    weight: ValueId,
    w: Vec<f32>,
    /// One per row, or one for the tensor.
    scales: Vec<f32>,
    zero_point: i64,
    qmin: i64,
    qmax: i64,
}

impl Target {
    fn at(&self, r: usize, c: usize) -> usize {
        let g = &self.shape;
        match g.layout {
            Layout::RowsFirst => r * g.columns + c,
            Layout::ColumnsFirst => c * g.rows + r,
        }
    }
    fn scale(&self, r: usize) -> f64 {
        f64::from(*self.scales.get(r).or(self.scales.first()).unwrap_or(&0.0))
    }
    /// Entries of its `H` (all groups).
    fn entries(&self) -> usize {
        self.shape.entries()
    }
}

/// The layers to round, and the ones left to nearest rounding.
fn targets(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
) -> Result<(Vec<Target>, Vec<Skipped>)> {
    let (q, layers) = quantized_layers(fp32, fp32, cfg, ranges)?;
    let g = &fp32.graph;
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for Layer {
        id,
        node: n,
        x,
        w: wv,
        weight: wt,
        act_type,
    } in layers
    {
        if act_type || n.is("ConvTranspose") {
            continue;
        }
        let skip = |reason: &str| Skipped {
            node: n.name.clone(),
            reason: reason.to_string(),
        };
        let shape = match gram_shape(g, id, n, x, wv, wt)? {
            Some(Ok(shape)) => shape,
            Some(Err(reason)) => {
                skipped.push(skip(&reason));
                continue;
            }
            None => continue,
        };
        let (layout, rows, dims) = (shape.layout, shape.rows, &shape.dims);
        let Some((
            Grid {
                scales,
                zero_points: zps,
                qtype: Some(qtype),
                axis,
            },
            _,
        )) = Grid::of(&q.graph, id, 1)
        else {
            continue;
        };
        // Per-channel scales must run along the rows.
        let row_axis = match layout {
            Layout::RowsFirst => 0,
            Layout::ColumnsFirst => 1,
        };
        let axis = axis.map(|a| if a < 0 { a + dims.len() as i64 } else { a });
        if axis.is_some_and(|a| a != row_axis) || (scales.len() != 1 && scales.len() != rows) {
            skipped.push(skip(
                "its weight scales do not run along the output channels",
            ));
            continue;
        }
        let zp = i64::from(qtype.symmetric_zero_point());
        if zps.iter().any(|&z| z != zp) {
            skipped.push(skip("its weights are asymmetric"));
            continue;
        }
        let (qmin, qmax) = levels(qtype, true, cfg.reduce_range);
        let Ok(w) = wt.to_f32_vec() else { continue };
        out.push(Target {
            shape,
            node: n.name.clone(),
            op: n.op_type.clone(),
            weight: wv,
            w,
            scales,
            zero_point: zp,
            qmin: i64::from(qmin),
            qmax: i64::from(qmax),
        });
    }
    Ok((out, skipped))
}

/// Upper `U` with `H⁻¹ = Uᵀ U`, from the reversed matrix: with `J` the
/// reversal and `J H J = L Lᵀ`, `U = J L⁻¹ J` (one Cholesky factorization
/// and one triangular inverse, both blocked, in faer). `None` when `h` is
/// not positive definite. Single precision, as in the GPTQ paper's own
/// implementation: `H` is damped (its condition number bounded by about
/// `1 / DAMP` times the spread of its diagonal), and the factorization is
/// half the cost in double precision, which was most of this pass's time
/// on 3×3 convolutions over 512 channels (`K` = 4608).
fn inverse_upper_factor(h: MatRef<'_, f32>) -> Option<Mat<f32>> {
    let k = h.nrows();
    let reversed = Mat::from_fn(k, k, |i, j| h[(k - 1 - i, k - 1 - j)]);
    let llt = reversed.llt(Side::Lower).ok()?;
    drop(reversed);
    let mut li = Mat::<f32>::zeros(k, k);
    invert_lower_triangular(li.as_mut(), llt.L(), par(k));
    drop(llt);
    let u = Mat::from_fn(k, k, |i, j| {
        if j >= i {
            li[(k - 1 - i, k - 1 - j)]
        } else {
            0.0
        }
    });
    u.is_all_finite().then_some(u)
}

/// `Σ_rows δᵀ H δ` for each of `ds` (all `rows×k`): one product of the
/// stacked rows with `h`, the sums in double precision.
fn quadratics<const N: usize>(h: MatRef<'_, f32>, ds: [MatRef<'_, f32>; N]) -> [f64; N] {
    let rows = ds[0].nrows();
    let mut d = Mat::<f32>::zeros(rows * N, h.nrows());
    for (i, di) in ds.iter().enumerate() {
        d.as_mut().subrows_mut(i * rows, rows).copy_from(di);
    }
    let mut p = Mat::<f32>::zeros(d.nrows(), d.ncols());
    matmul(
        p.as_mut(),
        Accum::Replace,
        d.as_ref(),
        h,
        1.0,
        par(h.nrows()),
    );
    let mut out = [0.0; N];
    for j in 0..d.ncols() {
        let (pj, dj) = (p.col_as_slice(j), d.col_as_slice(j));
        for (i, o) in out.iter_mut().enumerate() {
            let r = i * rows..(i + 1) * rows;
            *o += pj[r.clone()]
                .iter()
                .zip(&dj[r])
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>();
        }
    }
    out
}

/// How a `k×k` product or factorization runs: on the workers of the
/// current pool once `k` is large enough to split (faer's `Mat::llt`
/// takes the same from its global setting), so a pass whose last layers
/// are fewer than the workers (the 3×3 convolutions over 512 channels
/// that end ResNet-50) still uses them all.
fn par(k: usize) -> Par {
    if k >= 256 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// Columns rounded between two updates of the rest (GPTQ's lazy batch:
/// the update of the columns beyond the batch is one matrix product).
const BATCH: usize = 128;

/// One group of a layer: `w` its `rows×k` weights, `h` their inputs'
/// `k×k` Gram matrix. Returns the levels (row-major `rows×k`) and the
/// output error of nearest rounding, of this rounding, and the output
/// energy, all on `h`; `None` if `h` stays singular with damping.
fn round_group(
    t: &Target,
    row0: usize,
    w: MatRef<'_, f32>,
    h: MatRef<'_, f64>,
) -> Option<(Vec<i64>, f64, f64, f64)> {
    let (rows, k) = (w.nrows(), w.ncols());
    let scale: Vec<f64> = (0..rows).map(|r| t.scale(row0 + r)).collect();
    let level = |r: usize, v: f64| -> i64 {
        if scale[r] <= 0.0 {
            return t.zero_point;
        }
        ((v / scale[r]).round_ties_even() as i64 + t.zero_point).clamp(t.qmin, t.qmax)
    };
    let value = |r: usize, q: i64| (q - t.zero_point) as f64 * scale[r];
    // Inputs that never fire carry no information: a unit diagonal keeps
    // them at nearest rounding, passing nothing on.
    let diag: Vec<f64> = (0..k)
        .map(|i| if h[(i, i)] > 0.0 { h[(i, i)] } else { 1.0 })
        .collect();
    let mean = diag.iter().sum::<f64>() / k as f64;
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    let mut u = None;
    let mut damp = DAMP;
    for _ in 0..4 {
        let hp = Mat::from_fn(k, k, |i, j| {
            let (a, b) = (order[i], order[j]);
            if a == b {
                (diag[a] + damp * mean) as f32
            } else {
                h[(a, b)] as f32
            }
        });
        u = inverse_upper_factor(hp.as_ref());
        if u.is_some() {
            break;
        }
        damp *= 10.0;
    }
    let u = u?;
    let mut wp = Mat::from_fn(rows, k, |r, i| w[(r, order[i])]);
    let mut q = vec![0i64; rows * k];
    let mut j0 = 0;
    while j0 < k {
        let j1 = (j0 + BATCH).min(k);
        let mut err = Mat::<f32>::zeros(rows, j1 - j0);
        for j in j0..j1 {
            let d = f64::from(u[(j, j)]);
            for r in 0..rows {
                let v = f64::from(wp[(r, j)]);
                let lv = level(r, v);
                q[r * k + order[j]] = lv;
                err[(r, j - j0)] = ((v - value(r, lv)) / d) as f32;
            }
            let e = err.col_as_slice(j - j0).to_vec();
            for jj in j + 1..j1 {
                let c = u[(j, jj)];
                if c != 0.0 {
                    let col = wp.col_as_slice_mut(jj);
                    col.iter_mut().zip(&e).for_each(|(x, e)| *x -= e * c);
                }
            }
        }
        if j1 < k {
            let rest = u.as_ref().submatrix(j0, j1, j1 - j0, k - j1);
            matmul(
                wp.as_mut().subcols_mut(j1, k - j1),
                Accum::Add,
                err.as_ref(),
                rest,
                -1.0,
                par(k),
            );
        }
        j0 = j1;
    }
    drop(wp);
    drop(u);
    let at = |r: usize, c: usize| f64::from(w[(r, c)]);
    let near = Mat::from_fn(rows, k, |r, c| {
        (at(r, c) - value(r, level(r, at(r, c)))) as f32
    });
    let comp = Mat::from_fn(rows, k, |r, c| (at(r, c) - value(r, q[r * k + c])) as f32);
    let h32 = Mat::from_fn(k, k, |i, j| h[(i, j)] as f32);
    let [n, c, e] = quadratics(h32.as_ref(), [near.as_ref(), comp.as_ref(), w]);
    Some((q, n, c, e))
}

fn db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// One layer's rounding: the new float weights, or `None` (nearest
/// rounding kept), the report, and why it failed.
type Rounding = (Option<Vec<f32>>, Rounded, Option<String>);

/// Rounds one layer; `gram` is its summed `[groups, K, K]`.
fn round_layer(t: &Target, gram: &[f64]) -> Rounding {
    let k = t.shape.columns;
    let per_group = t.shape.rows / t.shape.groups;
    let mut new = t.w.clone();
    let (mut near, mut comp, mut energy) = (0.0, 0.0, 0.0);
    let mut failed = None;
    for gi in 0..t.shape.groups {
        let h = MatRef::from_row_major_slice(&gram[gi * k * k..(gi + 1) * k * k], k, k);
        let row0 = gi * per_group;
        let w = Mat::from_fn(per_group, k, |r, c| t.w[t.at(row0 + r, c)]);
        match round_group(t, row0, w.as_ref(), h) {
            Some((q, n, c, e)) => {
                near += n;
                comp += c;
                energy += e;
                for r in 0..per_group {
                    for c in 0..k {
                        let v = (q[r * k + c] - t.zero_point) as f64 * t.scale(row0 + r);
                        new[t.at(row0 + r, c)] = v as f32;
                    }
                }
            }
            None => {
                failed = Some(format!(
                    "group {gi}: its input Gram matrix is not positive definite even with damping"
                ));
                break;
            }
        }
    }
    let taken = failed.is_none() && comp < near;
    let report = Rounded {
        node: t.node.clone(),
        op: t.op.clone(),
        columns: k,
        nearest_db: db(energy, near),
        compensated_db: db(energy, comp),
        taken,
        original: Original {
            id: t.shape.id,
            value: t.weight,
            tensor: Tensor::from_f32(t.shape.dims.clone(), &t.w),
        },
    };
    (taken.then_some(new), report, failed)
}

/// The rounded model (for the quantizer), the scales to pin
/// ([`QuantizeConfig::weight_grids`]), what was done per layer, and the
/// layers left to nearest rounding.
pub struct Outcome {
    pub model: Model,
    pub grids: BTreeMap<ValueId, Vec<f32>>,
    pub rounded: Vec<Rounded>,
    pub skipped: Vec<Skipped>,
}

/// Rounds the weights of every eligible quantized layer of `fp32` with
/// error compensation on the inputs `source` gives. `measured`: Gram
/// matrices already summed over `source` by layer (node name; the
/// calibration pass's [`gram_probes`]); `kept`: layer inputs the
/// calibration pass kept, summed here a few layers at a time; the other
/// layers are measured here, in passes of their own.
pub fn round_weights(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    source: &dyn SampleSource,
    (measured, kept): (&BTreeMap<String, Vec<f64>>, &gram::KeptInputs),
    jobs: usize,
) -> Result<Outcome> {
    let (targets, mut skipped) = targets(fp32, cfg, ranges)?;
    let mut out = Outcome {
        model: fp32.clone(),
        grids: BTreeMap::new(),
        rounded: Vec::new(),
        skipped: Vec::new(),
    };
    if targets.is_empty() || source.is_empty() {
        out.skipped = skipped;
        return Ok(out);
    }
    // Each layer's rounding, by its index in `targets`: from the Gram
    // matrices measured already, then from passes over the samples, each
    // summing at most PASS_ENTRIES entries.
    let (pool, _) = worker_pool(jobs)?;
    let gram_of = |t: &Target| measured.get(&t.node).filter(|h| h.len() == t.entries());
    let mut results: BTreeMap<usize, Rounding> = pool.install(|| {
        targets
            .par_iter()
            .enumerate()
            .filter_map(|(i, t)| gram_of(t).map(|h| (i, round_layer(t, h))))
            .collect()
    });
    // Groups of layers whose Gram matrices together have at most
    // PASS_ENTRIES entries: what is summed and held at once.
    let groups = |of: &dyn Fn(&Target) -> bool| -> Vec<Vec<(usize, &Target)>> {
        let mut groups: Vec<Vec<(usize, &Target)>> = vec![Vec::new()];
        let mut size = 0;
        for (i, t) in targets
            .iter()
            .enumerate()
            .filter(|(_, t)| gram_of(t).is_none() && of(t))
        {
            if size + t.entries() > PASS_ENTRIES && !groups.last().is_none_or(|p| p.is_empty()) {
                groups.push(Vec::new());
                size = 0;
            }
            size += t.entries();
            if let Some(p) = groups.last_mut() {
                p.push((i, t));
            }
        }
        groups.retain(|p| !p.is_empty());
        groups
    };
    // From the kept inputs: each layer's Gram matrix summed and rounded on
    // one worker, no model run.
    for group in groups(&|t| kept.has(&t.node)) {
        let done: Vec<(usize, Rounding)> = pool.install(|| {
            group
                .par_iter()
                .map(|(i, t)| {
                    let gram = kept.sum(&t.node).unwrap_or_else(|| Ok(Vec::new()))?;
                    check_entries(t, &gram)?;
                    Ok((*i, round_layer(t, &gram)))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        results.extend(done);
    }
    for pass in groups(&|t| !kept.has(&t.node)) {
        let mut probes = Vec::new();
        let mut kept = Vec::new();
        for (i, t) in pass {
            if let Some(p) = probe_of(&fp32.graph, &t.shape)? {
                probes.push(p);
                kept.push((i, t));
            }
        }
        let mut sums = gram::measure(fp32, probes, source, jobs)?;
        let done: Vec<(usize, Rounding)> = pool.install(|| {
            kept.par_iter()
                .map(|(i, t)| {
                    let gram = sums.get(&t.node).map_or(&[][..], Vec::as_slice);
                    check_entries(t, gram)?;
                    Ok((*i, round_layer(t, gram)))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        sums.clear();
        results.extend(done);
    }
    for (i, (new, report, failed)) in results {
        let t = &targets[i];
        if let Some(reason) = failed {
            skipped.push(Skipped {
                node: t.node.clone(),
                reason,
            });
            continue;
        }
        if let Some(w) = new {
            out.model
                .graph
                .set_initializer(t.weight, Tensor::from_f32(t.shape.dims.clone(), &w));
            out.grids.insert(t.weight, t.scales.clone());
        }
        out.rounded.push(report);
    }
    out.skipped = skipped;
    Ok(out)
}

/// That `gram` is `t`'s `[groups, K, K]`.
fn check_entries(t: &Target, gram: &[f64]) -> Result<()> {
    if gram.len() == t.entries() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{}: input Gram matrix has {} entries, expected {}",
        t.node,
        gram.len(),
        t.entries()
    )))
}

/// `rounded` (from [`round_weights`]) with the weights of the layers in
/// `float` put back as they were: a layer that stays float computes with
/// its exact weights.
pub fn restore(rounded: &Model, done: &[Rounded], float: &BTreeMap<NodeId, String>) -> Model {
    put_back(
        rounded,
        done.iter().filter(|r| r.taken).map(|r| &r.original),
        float,
    )
}

mod probe;
pub use probe::gram_probes;
use probe::{gram_shape, probe_of, GramShape};

#[cfg(test)]
mod tests;
