//! Layer input Gram matrices, taken while calibrating, for
//! error-compensating weight rounding (`tune::gptq`).
//!
//! The output error a layer's rounded weights cause on its inputs,
//! `Σ_x ((w − q)·x)²`, is `(w − q)ᵀ H (w − q)` with `H = Σ x xᵀ` the Gram
//! matrix of the input vectors `x` each output is computed from:
//!
//! - MatMul / Gemm: the rows of the input `[…, K]`;
//! - Conv: the receptive fields, per group `[C/g, k₁…k_r]` in the weight's
//!   order (channel, then kernel offset), padding read as zeros. Fields at
//!   neighbouring positions overlap and their contributions to `H` are
//!   alike, so they are taken at the output positions whose every index is
//!   a multiple of a step `m`, the smallest leaving at most
//!   [`MAX_POSITIONS`] per image (every position when that many or fewer).
//!
//! Calibration has each layer's input in hand (it observes it), so the
//! probe gathers the vectors of one sample into the rows of a matrix `R`
//! and adds the upper triangle of `Rᵀ R` (one single-precision product,
//! faer; `H` is symmetric, [`GramProbe::mirror`] completes it once summed)
//! to its block's sums: f32 within a block of samples, f64 across blocks
//! in sample order, so the result does not depend on the number of
//! workers. Geometry from `calibrate::window` (the ONNX specification's
//! Conv; every layout checked against tract's outputs in this module's
//! tests).

use super::samples::SampleSource;
use super::window::Window;
use super::{Calibrator, CollectOptions};
use crate::error::{Error, Result};
use crate::ir::{Model, Node};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use std::collections::{BTreeMap, BTreeSet};

/// Most receptive fields per image a Conv's `H` is summed over.
pub const MAX_POSITIONS: usize = 1024;

/// How a layer's input becomes the vectors of `H`.
#[derive(Clone, Debug, PartialEq)]
enum Vectors {
    /// Rows of `[…, k]`.
    Rows { k: usize },
    /// Receptive fields of a Conv with `groups` groups.
    Fields { window: Window, groups: usize },
}

/// One layer whose input Gram matrix is summed: `node` reads `input`.
#[derive(Clone, Debug, PartialEq)]
pub struct GramProbe {
    pub node: String,
    pub input: String,
    vectors: Vectors,
}

impl GramProbe {
    /// A MatMul or Gemm reading rows of `k` values.
    pub fn rows(node: &str, input: &str, k: usize) -> Self {
        GramProbe {
            node: node.to_string(),
            input: input.to_string(),
            vectors: Vectors::Rows { k },
        }
    }

    /// Conv `n` (weight `[M, C/g, k…]` of `weight_dims`) reading `input`;
    /// `None` when the weight has rank < 3.
    pub fn fields(n: &Node, input: &str, weight_dims: &[usize]) -> Result<Option<Self>> {
        let groups = n.get_int("group")?.unwrap_or(1).max(1) as usize;
        let Some(window) = Window::of(n, weight_dims)? else {
            return Ok(None);
        };
        if window.transpose || window.channels % groups != 0 {
            return Ok(None);
        }
        Ok(Some(GramProbe {
            node: n.name.clone(),
            input: input.to_string(),
            vectors: Vectors::Fields { window, groups },
        }))
    }

    /// `H` per group, each `columns × columns`.
    pub fn groups(&self) -> usize {
        match &self.vectors {
            Vectors::Rows { .. } => 1,
            Vectors::Fields { groups, .. } => *groups,
        }
    }

    /// Values per vector (per group).
    pub fn columns(&self) -> usize {
        match &self.vectors {
            Vectors::Rows { k } => *k,
            Vectors::Fields { window, groups } => {
                window.channels / groups * window.kernel.iter().product::<usize>()
            }
        }
    }

    /// Entries of its `[groups, columns, columns]` sum.
    pub fn entries(&self) -> usize {
        let k = self.columns();
        self.groups() * k * k
    }

    /// Adds the upper triangles of the Gram matrices of one sample's input
    /// `x` (shape `dims`; `relu`: read `max(x, 0)`, a Relu output
    /// calibration derives from its input) to `acc` (`[groups, columns,
    /// columns]` row-major, zeroed when empty; [`GramProbe::mirror`] fills
    /// the lower triangles once the samples are summed).
    pub fn add(&self, x: &[f32], dims: &[usize], relu: bool, acc: &mut Vec<f32>) -> Result<()> {
        let in_node =
            |msg: String| Error::Invalid(format!("input Gram matrix of '{}': {msg}", self.node));
        if dims.iter().product::<usize>() != x.len() {
            return Err(in_node(format!("{} values for shape {dims:?}", x.len())));
        }
        let k = self.columns();
        if acc.is_empty() {
            acc.resize(self.entries(), 0.0);
        }
        if acc.len() != self.entries() {
            return Err(in_node(format!(
                "a sum of {} entries, expected {}",
                acc.len(),
                self.entries()
            )));
        }
        match &self.vectors {
            Vectors::Rows { k } => {
                if dims.last() != Some(k) || *k == 0 {
                    return Err(in_node(format!(
                        "input of shape {dims:?}, expected rows of {k}"
                    )));
                }
                let rows = x.len() / k;
                let owned: Vec<f32>;
                let values = if relu {
                    owned = x.iter().map(|&v| v.max(0.0)).collect();
                    &owned
                } else {
                    x
                };
                let r = MatRef::from_row_major_slice(values, rows, *k);
                add_gram(r, acc, *k);
            }
            Vectors::Fields { window, groups } => {
                let fields = Fields::of(window, dims).map_err(|e| in_node(e.to_string()))?;
                let cg = window.channels / groups;
                let plane: usize = dims[2..].iter().product();
                let mut r = Mat::<f32>::zeros(fields.rows(dims[0]), k);
                for gi in 0..*groups {
                    for cl in 0..cg {
                        let ch = gi * cg + cl;
                        for (p, (offsets, runs)) in
                            fields.offsets.iter().zip(&fields.runs).enumerate()
                        {
                            let col = r.col_as_slice_mut(cl * fields.offsets.len() + p);
                            for (n, dst) in col.chunks_exact_mut(offsets.len()).enumerate() {
                                let base = (n * window.channels + ch) * plane;
                                let src = &x[base..base + plane];
                                // Runs of consecutive reads are copied,
                                // PAD runs zeroed.
                                for &(at, from, len) in runs {
                                    let d = &mut dst[at..at + len];
                                    match src.get(from..from.saturating_add(len)) {
                                        Some(s) if from != PAD => d.copy_from_slice(s),
                                        _ => d.fill(0.0),
                                    }
                                }
                                if relu {
                                    dst.iter_mut().for_each(|v| *v = v.max(0.0));
                                }
                            }
                        }
                    }
                    add_gram(r.as_ref(), &mut acc[gi * k * k..(gi + 1) * k * k], k);
                }
            }
        }
        Ok(())
    }

    /// Copies each group's upper triangle of `sums` (`[groups, columns,
    /// columns]`, from [`GramProbe::add`]) onto its lower one.
    pub fn mirror(&self, sums: &mut [f64]) {
        let k = self.columns();
        for h in sums.chunks_exact_mut((k * k).max(1)) {
            for i in 0..k {
                for j in i + 1..k {
                    h[j * k + i] = h[i * k + j];
                }
            }
        }
    }
}

/// The upper triangle of `acc` (`k × k`, row-major) += `rᵀ r`.
fn add_gram(r: MatRef<'_, f32>, acc: &mut [f32], k: usize) {
    // Row-major `acc` is the transpose of the column-major view: its upper
    // triangle is the view's lower one.
    let h = MatMut::from_column_major_slice_mut(acc, k, k);
    triangular::matmul(
        h,
        BlockStructure::TriangularLower,
        Accum::Add,
        r.transpose(),
        BlockStructure::Rectangular,
        r,
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}

/// Marks a read that falls in the padding.
const PAD: usize = usize::MAX;

/// The receptive fields a Conv's `H` is summed over, at one input shape:
/// per kernel offset (row-major over the kernel), the offset within an
/// input plane that each sampled output position reads ([`PAD`] in the
/// padding), positions row-major.
struct Fields {
    offsets: Vec<Vec<usize>>,
    /// Per kernel offset, its reads as runs `(position, first offset,
    /// length)` of consecutive offsets (or of [`PAD`]s).
    runs: Vec<Vec<(usize, usize, usize)>>,
}

impl Fields {
    fn of(w: &Window, dims: &[usize]) -> Result<Self> {
        let r = w.kernel.len();
        if dims.len() != r + 2 || dims[1] != w.channels {
            return Err(Error::Invalid(format!(
                "input of shape {dims:?}, expected [N, {}, {r} spatial dims]",
                w.channels
            )));
        }
        let spans: Vec<(i64, i64)> = (0..r)
            .map(|i| w.span(i, dims[i + 2]))
            .collect::<Result<_>>()?;
        let mut step = 1usize;
        while spans
            .iter()
            .map(|&(out, _)| (out as usize).div_ceil(step))
            .product::<usize>()
            > MAX_POSITIONS
        {
            step += 1;
        }
        // Per dimension and kernel offset: the input index each sampled
        // output reads, times the dimension's stride within a plane.
        let mut inner = 1usize;
        let mut per_dim: Vec<Vec<Vec<usize>>> = vec![Vec::new(); r];
        for i in (0..r).rev() {
            let (out, begin) = spans[i];
            let (size, s, d) = (
                dims[i + 2] as i64,
                w.strides[i] as i64,
                w.dilations[i] as i64,
            );
            per_dim[i] = (0..w.kernel[i] as i64)
                .map(|p| {
                    (0..out)
                        .step_by(step)
                        .map(|o| {
                            let at = o * s - begin + p * d;
                            if (0..size).contains(&at) {
                                at as usize * inner
                            } else {
                                PAD
                            }
                        })
                        .collect()
                })
                .collect();
            inner *= dims[i + 2];
        }
        // Kernel offsets row-major; each one's positions, row-major.
        let mut offsets: Vec<Vec<usize>> = vec![vec![0]];
        for dim in &per_dim {
            let mut next = Vec::with_capacity(offsets.len() * dim.len());
            for prev in &offsets {
                for reads in dim {
                    let mut v = Vec::with_capacity(prev.len() * reads.len());
                    for &a in prev {
                        for &b in reads {
                            v.push(if a == PAD || b == PAD { PAD } else { a + b });
                        }
                    }
                    next.push(v);
                }
            }
            offsets = next;
        }
        let runs = offsets.iter().map(|o| runs_of(o)).collect();
        Ok(Fields { offsets, runs })
    }

    /// Rows of `R` for a batch of `n` images.
    fn rows(&self, n: usize) -> usize {
        n * self.offsets.first().map_or(0, Vec::len)
    }
}

/// `offsets` as runs `(position, first offset, length)`: consecutive
/// offsets, or consecutive [`PAD`]s (first offset `PAD`).
fn runs_of(offsets: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (i, &o) in offsets.iter().enumerate() {
        match runs.last_mut() {
            Some((_, from, len)) if *from == PAD && o == PAD => *len += 1,
            Some((_, from, len)) if *from != PAD && o != PAD && *from + *len == o => *len += 1,
            _ => runs.push((i, o, 1)),
        }
    }
    runs
}

/// Samples per block of a Gram matrix's sum: f32 within a block, f64
/// across blocks in sample order (a calibration pass's blocks when it sums
/// Gram matrices, and [`KeptInputs::sum`]'s, so both give the same sums).
pub fn block_of(samples: usize) -> usize {
    (samples / 4).clamp(1, 8)
}

/// One observed tensor's values on each sample, in sample order.
pub type SampleValues = Vec<(Vec<f32>, Vec<usize>)>;

/// Layer inputs a calibration pass kept (up to a budget of bytes) so that
/// their Gram matrices can be summed later, one layer at a time, without
/// running the model again: a layer's input is a few hundred KiB a sample
/// where its `H` is up to 170 MiB, too many of which to sum at once.
#[derive(Clone, Debug, Default)]
pub struct KeptInputs {
    /// Per kept tensor, its values on every sample.
    tensors: Vec<SampleValues>,
    /// Per layer: its probe, the tensor it reads in `tensors`, and whether
    /// it reads `max(x, 0)` of it (a Relu output calibration derives).
    probes: Vec<(GramProbe, usize, bool)>,
}

impl KeptInputs {
    /// `probes` reading `tensors` (by index; a probe whose tensor is
    /// missing is left out).
    pub fn new(tensors: Vec<SampleValues>, probes: Vec<(GramProbe, usize, bool)>) -> Self {
        let probes = probes
            .into_iter()
            .filter(|(_, k, _)| tensors.get(*k).is_some_and(|t| !t.is_empty()))
            .collect();
        KeptInputs { tensors, probes }
    }

    /// Bytes of kept values.
    pub fn bytes(&self) -> usize {
        self.tensors
            .iter()
            .flatten()
            .map(|(v, _)| v.len() * 4)
            .sum()
    }

    /// Whether layer `node`'s inputs are kept.
    pub fn has(&self, node: &str) -> bool {
        self.probes.iter().any(|(p, ..)| p.node == node)
    }

    /// Layer `node`'s Gram matrix (`[groups, K, K]`, both triangles),
    /// summed in the blocks and order a pass of its own would use (the
    /// same sums from the same inputs; the calibration plan may compute
    /// those inputs to a different float rounding than a pass's plan,
    /// which fuses more); `None` when its inputs are not kept.
    pub fn sum(&self, node: &str) -> Option<Result<Vec<f64>>> {
        let (probe, k, relu) = self.probes.iter().find(|(p, ..)| p.node == node)?;
        let samples = self.tensors.get(*k)?;
        let sum = || -> Result<Vec<f64>> {
            let mut total: Vec<f64> = Vec::new();
            for block in samples.chunks(block_of(samples.len())) {
                let mut acc = Vec::new();
                for (x, dims) in block {
                    probe.add(x, dims, *relu, &mut acc)?;
                }
                if total.is_empty() {
                    total = vec![0.0; acc.len()];
                }
                total
                    .iter_mut()
                    .zip(acc)
                    .for_each(|(t, v)| *t += f64::from(v));
            }
            probe.mirror(&mut total);
            Ok(total)
        };
        Some(sum())
    }
}

/// The Gram matrices of `probes` on `source`, by node, in a pass of their
/// own (the layers a calibration did not take): a calibration of their
/// inputs without histograms.
pub fn measure(
    model: &Model,
    probes: Vec<GramProbe>,
    source: &dyn SampleSource,
    jobs: usize,
) -> Result<BTreeMap<String, Vec<f64>>> {
    let wanted: BTreeSet<String> = probes.iter().map(|p| p.input.clone()).collect();
    let calibrator = Calibrator::observing(model, Some(&wanted))?.summing_grams(probes);
    let opts = CollectOptions {
        histograms: false,
        jobs,
        ..Default::default()
    };
    Ok(calibrator.collect(source, &opts)?.grams)
}

#[cfg(test)]
mod tests;
