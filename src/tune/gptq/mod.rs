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
//! fields, extracted in the graph by a one-hot depthwise Conv at a stride
//! widened until at most [`MAX_POSITIONS`] positions per sample remain,
//! sizes at the first sample's input dimensions where the model declares
//! symbolic ones),
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

use crate::calibrate::samples::{Sample, SampleSource};
use crate::calibrate::{sum_on_samples, worker_pool};
use crate::error::{Error, Result};
use crate::ir::node::attr;
use crate::ir::types::static_shape;
use crate::ir::{Graph, Model, Node, NodeId, Tensor, ValueId};
use crate::quantize::params::levels;
use crate::quantize::QuantizeConfig;
use crate::tract::Level;
use crate::tune::weights::{put_back, quantized_layers, Grid, Layer, Original};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Most inputs per output channel (columns of `H`) a layer may have.
pub const MAX_COLUMNS: usize = 4608;
/// Most receptive fields per sample a Conv's `H` is summed over.
pub const MAX_POSITIONS: usize = 1024;
/// Most `H` entries summed in one pass over the samples.
const PASS_ENTRIES: usize = 32 << 20;
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
enum Layout {
    /// Row-major `[rows, columns]`: Conv `[M, C/g, k…]`, Gemm `transB`.
    RowsFirst,
    /// `[columns, rows]`: MatMul and Gemm without `transB`.
    ColumnsFirst,
}

struct Target {
    id: NodeId,
    node: String,
    op: String,
    weight: ValueId,
    input: ValueId,
    layout: Layout,
    rows: usize,
    /// Per group (Conv `group`; 1 otherwise).
    columns: usize,
    groups: usize,
    w: Vec<f32>,
    dims: Vec<usize>,
    /// One per row, or one for the tensor.
    scales: Vec<f32>,
    zero_point: i64,
    qmin: i64,
    qmax: i64,
}

impl Target {
    fn at(&self, r: usize, c: usize) -> usize {
        match self.layout {
            Layout::RowsFirst => r * self.columns + c,
            Layout::ColumnsFirst => c * self.rows + r,
        }
    }
    fn scale(&self, r: usize) -> f64 {
        f64::from(*self.scales.get(r).or(self.scales.first()).unwrap_or(&0.0))
    }
    /// Entries of its `H` (all groups).
    fn entries(&self) -> usize {
        self.groups * self.columns * self.columns
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
        if g.value(wv).consumers().len() != 1 || g.has_implicit_uses(wv) {
            skipped.push(skip("its weight is shared"));
            continue;
        }
        let dims = wt.dims().to_vec();
        let trans_b = n.is("Gemm") && n.get_int("transB")?.unwrap_or(0) != 0;
        if n.is("Gemm") && n.get_int("transA")?.unwrap_or(0) != 0 {
            skipped.push(skip("Gemm with transA"));
            continue;
        }
        let (layout, rows, columns, groups) = match n.op_type.as_str() {
            "Conv" => {
                let groups = n.get_int("group")?.unwrap_or(1).max(1) as usize;
                let per: usize = dims.iter().skip(1).product();
                if dims.len() < 3 || dims[0] % groups != 0 {
                    continue;
                }
                (Layout::RowsFirst, dims[0], per, groups)
            }
            _ if dims.len() != 2 => {
                skipped.push(skip("its weight is not 2-D"));
                continue;
            }
            _ if trans_b => (Layout::RowsFirst, dims[0], dims[1], 1),
            _ => (Layout::ColumnsFirst, dims[1], dims[0], 1),
        };
        if columns > MAX_COLUMNS {
            skipped.push(skip(&format!(
                "{columns} inputs per output channel (more than {MAX_COLUMNS})"
            )));
            continue;
        }
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
            id,
            node: n.name.clone(),
            op: n.op_type.clone(),
            weight: wv,
            input: x,
            layout,
            rows,
            columns,
            groups,
            w,
            dims,
            scales,
            zero_point: zp,
            qmin: i64::from(qmin),
            qmax: i64::from(qmax),
        });
    }
    Ok((out, skipped))
}

/// Appends to `g` the graph that computes `Σ x xᵀ` of `t`'s inputs for one
/// sample: `[groups, columns, columns]`. Returns its name.
fn gram_probe(
    g: &mut Graph,
    k: usize,
    t: &Target,
    shaped: Option<&Graph>,
) -> Result<Option<String>> {
    let Some(n) = g.node(t.id).cloned() else {
        return Ok(None);
    };
    let base = format!("__onnxq_gptq/{k}");
    let mut step = 0;
    let mut add = |g: &mut Graph, op: &str, inputs: Vec<ValueId>, attrs: Vec<_>| -> ValueId {
        step += 1;
        let y = g.new_value(&format!("{base}/{step}/{op}"));
        let mut node = Node::new(format!("{base}/{step}/{op}"), op);
        node.inputs = inputs.into_iter().map(Some).collect();
        node.outputs = vec![Some(y)];
        node.attrs = attrs;
        g.insert_node(node);
        y
    };
    let shape = |g: &mut Graph, name: &str, s: &[i64]| {
        g.add_initializer(
            &format!("{base}/{name}"),
            Tensor::from_i64(vec![s.len()], s),
        )
    };
    let rows = if n.is("Conv") {
        // Receptive fields: a depthwise Conv with one output channel per
        // (input channel, kernel position), one-hot, so channel c·P + p of
        // its output is input channel c seen at kernel offset p. Group gi's
        // columns are then channels gi·K … (gi+1)·K, in the weight's order.
        let kernel: Vec<usize> = t.dims[2..].to_vec();
        let p: usize = kernel.iter().product();
        let channels = t.columns * t.groups / p;
        let mut onehot = vec![0f32; channels * p * p];
        for c in 0..channels {
            for q in 0..p {
                onehot[(c * p + q) * p + q] = 1.0;
            }
        }
        let mut wdims = vec![channels * p, 1];
        wdims.extend(&kernel);
        let e = g.add_initializer(&format!("{base}/onehot"), Tensor::from_f32(wdims, &onehot));
        let rank = kernel.len();
        let strides = n.get_ints("strides")?.unwrap_or_else(|| vec![1; rank]);
        let same = n
            .get_string("auto_pad")?
            .is_some_and(|a| a.starts_with("SAME"));
        // A wider stride keeps a subset of the same receptive fields
        // (explicit pads do not depend on the stride; SAME pads do).
        // The output's shape as declared, or at the first sample's input
        // dimensions (symbolic dims: the PaddleOCR exports).
        let declared = n.output(0).and_then(|y| static_shape(g, y));
        let at_sample = || {
            let sg = shaped?;
            let y = sg.find_value(g.value_name(n.output(0)?))?;
            static_shape(sg, y)
        };
        let widen = match (same, declared.or_else(at_sample)) {
            (false, Some(y)) if y.len() == rank + 2 => {
                let spatial = &y[2..];
                let mut m = 1usize;
                while spatial.iter().map(|d| d.div_ceil(m)).product::<usize>() > MAX_POSITIONS {
                    m += 1;
                }
                m
            }
            _ => 1,
        };
        let mut attrs = vec![
            attr::int("group", channels as i64),
            attr::ints(
                "kernel_shape",
                &kernel.iter().map(|&k| k as i64).collect::<Vec<_>>(),
            ),
            attr::ints(
                "strides",
                &strides
                    .iter()
                    .map(|&s| s * widen as i64)
                    .collect::<Vec<_>>(),
            ),
        ];
        for a in ["pads", "dilations", "auto_pad"] {
            if let Some(v) = n.attr(a) {
                attrs.push(v.clone());
            }
        }
        let patches = add(g, "Conv", vec![t.input, e], attrs);
        // [N, g·K, L…] → [g, K, N·L]
        let s1 = shape(g, "s1", &[0, t.groups as i64, t.columns as i64, -1]);
        let r1 = add(g, "Reshape", vec![patches, s1], vec![]);
        let tr = add(
            g,
            "Transpose",
            vec![r1],
            vec![attr::ints("perm", &[1, 2, 0, 3])],
        );
        let s2 = shape(g, "s2", &[t.groups as i64, t.columns as i64, -1]);
        add(g, "Reshape", vec![tr, s2], vec![])
    } else {
        // [… , K] → [1, K, L]
        let s1 = shape(g, "s1", &[-1, t.columns as i64]);
        let r1 = add(g, "Reshape", vec![t.input, s1], vec![]);
        let tr = add(g, "Transpose", vec![r1], vec![attr::ints("perm", &[1, 0])]);
        let s2 = shape(g, "s2", &[1, t.columns as i64, -1]);
        add(g, "Reshape", vec![tr, s2], vec![])
    };
    let rows_t = add(
        g,
        "Transpose",
        vec![rows],
        vec![attr::ints("perm", &[0, 2, 1])],
    );
    let gram = add(g, "MatMul", vec![rows, rows_t], vec![]);
    Ok(Some(g.value_name(gram).to_string()))
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

/// Rounds one layer; `gram` is its summed `[groups, K, K]`. Returns the
/// new float weights, or `None` (nearest rounding kept), and the report.
fn round_layer(t: &Target, gram: &[f64]) -> (Option<Vec<f32>>, Rounded, Option<String>) {
    let k = t.columns;
    let per_group = t.rows / t.groups;
    let mut new = t.w.clone();
    let (mut near, mut comp, mut energy) = (0.0, 0.0, 0.0);
    let mut failed = None;
    for gi in 0..t.groups {
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
            id: t.id,
            value: t.weight,
            tensor: Tensor::from_f32(t.dims.clone(), &t.w),
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
/// error compensation on the inputs `source` gives.
pub fn round_weights(
    fp32: &Model,
    cfg: &QuantizeConfig,
    ranges: &BTreeMap<String, (f32, f32)>,
    source: &dyn SampleSource,
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
    // Passes over the samples, each summing at most PASS_ENTRIES entries.
    let mut passes: Vec<Vec<&Target>> = vec![Vec::new()];
    let mut size = 0;
    for t in &targets {
        if size + t.entries() > PASS_ENTRIES && !passes.last().is_none_or(|p| p.is_empty()) {
            passes.push(Vec::new());
            size = 0;
        }
        size += t.entries();
        if let Some(p) = passes.last_mut() {
            p.push(t);
        }
    }
    // Shapes at the first sample's input dimensions, when a Conv's output
    // shape is not declared: without them its stride cannot be widened and
    // every position of every sample is summed (the PaddleOCR detector: 4x
    // to 16x the positions of MAX_POSITIONS on its early layers).
    let undeclared = targets.iter().any(|t| {
        fp32.graph.node(t.id).is_some_and(|n| {
            n.is("Conv")
                && n.output(0)
                    .is_none_or(|y| static_shape(&fp32.graph, y).is_none())
        })
    });
    let shaped = if undeclared {
        shapes_at_sample(fp32, &source.load(0)?)
    } else {
        None
    };
    let (pool, _) = worker_pool(jobs)?;
    for pass in passes {
        let mut aug = fp32.clone();
        let mut names = Vec::new();
        let mut kept = Vec::new();
        for (k, t) in pass.into_iter().enumerate() {
            if let Some(name) = gram_probe(&mut aug.graph, k, t, shaped.as_ref().map(|m| &m.graph))?
            {
                names.push(name);
                kept.push(t);
            }
        }
        let proto = aug.to_proto()?;
        let sums = sum_on_samples(&proto, &names, Level::for_model(&proto), source, jobs)?;
        let results: Vec<_> = pool.install(|| {
            kept.par_iter()
                .zip(sums.par_iter())
                .map(|(t, gram)| {
                    if gram.len() != t.entries() {
                        return Err(Error::Invalid(format!(
                            "{}: input Gram matrix has {} entries, expected {}",
                            t.node,
                            gram.len(),
                            t.entries()
                        )));
                    }
                    Ok(round_layer(t, gram))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        for (t, (new, report, failed)) in kept.iter().zip(results) {
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
                    .set_initializer(t.weight, Tensor::from_f32(t.dims.clone(), &w));
                out.grids.insert(t.weight, t.scales.clone());
            }
            out.rounded.push(report);
        }
    }
    out.skipped = skipped;
    Ok(out)
}

/// `fp32` with its inputs fixed to `sample`'s dimensions and the shapes of
/// its values inferred again (tract), or `None` when that fails (the
/// strides are then not widened: slower, the same result).
fn shapes_at_sample(fp32: &Model, sample: &Sample) -> Option<Model> {
    use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
    use crate::onnx::proto::{type_proto, TensorShapeProto};
    let mut proto = fp32.to_proto().ok()?;
    let g = proto.graph.as_mut()?;
    g.value_info.clear();
    for input in &mut g.input {
        let Some((_, t)) = sample.iter().find(|(n, _)| n == input.name()) else {
            continue;
        };
        if let Some(type_proto::Value::TensorType(tt)) =
            input.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            tt.shape = Some(TensorShapeProto {
                dim: t
                    .dims()
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(dimension::Value::DimValue(d as i64)),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
    }
    let mut m = Model::from_proto(&proto).ok()?;
    crate::passes::shapes::infer_shapes(&mut m).ok()?;
    Some(m)
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

#[cfg(test)]
mod tests;
