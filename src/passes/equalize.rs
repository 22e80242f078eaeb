//! Cross-layer equalization (Nagel et al., "Data-Free Quantization Through
//! Weight Equalization and Bias Correction", ICCV 2019, §4.1): rescale the
//! channels between two consecutive convolutions so both see the same
//! weight range per channel, without changing what the FP32 model computes.
//!
//! For `Conv₁ → [Relu | LeakyRelu] → Conv₂` (or the same between Gemm /
//! MatMul layers, a MatMul's bias `Add` included), with `r₁[c]` the largest
//! `|W₁|` of Conv₁'s output channel `c` and `r₂[c]` the largest `|W₂|` that
//! multiplies input channel `c` of Conv₂, `s[c] = √(r₁[c] / r₂[c])`:
//! `W₁[c] /= s[c]`, `b₁[c] /= s[c]`, `W₂[:, c] *= s[c]`. Both ranges become
//! `√(r₁ r₂)`. The activation between them is positively homogeneous
//! (`f(x/s) = f(x)/s` for `s > 0`), so the model's function is unchanged up
//! to float rounding. Chains (pointwise → depthwise → pointwise, as in
//! MobileNet-style blocks) share layers, so the pairs are balanced in
//! rounds until no scale moves by more than 0.01%.
//!
//! Why: folding BatchNorm into a depthwise conv leaves per-channel weight
//! ranges orders of magnitude apart, and a following pointwise conv's
//! per-output-channel weight scale must cover all of its input channels at
//! once. It touches only layer weights and biases (new initializers; a
//! weight shared with another node is never changed in place) and the
//! activation ranges calibration sees afterwards. Not part of
//! [`PREPARE`](super::PREPARE): `onnxq quantize` calls [`equalize`] after
//! preparation, before calibration (`--equalize`, on by default with
//! `--calib`).

use super::fold_bn::{float_const, single_use};
use super::{Pass, PassOptions};
use crate::error::Result;
use crate::ir::graph::Graph;
use crate::ir::tensor::Tensor;
use crate::ir::{Model, NodeId};
use std::collections::BTreeMap;

/// Activations that commute with a positive per-channel scale.
const HOMOGENEOUS: &[&str] = &["Relu", "LeakyRelu"];

/// Rounds of balancing before giving up on convergence.
const MAX_ROUNDS: usize = 50;

/// Stop when no scale of a round differs from 1 by more than this.
const CONVERGED: f32 = 1e-4;

/// A channel whose weight range is below this fraction of its layer's
/// widest counts as dead in the reported spread.
const DEAD: f32 = 1e-6;

/// Where a layer's bias lives.
#[derive(Clone, Copy)]
enum BiasAt {
    /// Input 2 of the layer (Conv's B, Gemm's C).
    Input,
    /// The constant input `slot` of the `Add` right after the layer (a
    /// MatMul + Add, as exporters write Dense layers).
    Add(NodeId, usize),
}

/// A bias: its values, where it lives, its stored dims.
type Bias = (Vec<f32>, BiasAt, Vec<usize>);

/// A layer's float weights and bias, as the rounds change them, in one
/// layout for all kinds: `[C_out, C_in/group, k…]` (a Gemm/MatMul weight
/// stored `[K, N]` is transposed in, and back out).
struct Layer {
    w: Vec<f32>,
    dims: Vec<usize>,
    group: usize,
    /// The stored weight is `[C_in, C_out]` (MatMul, Gemm without transB).
    transposed: bool,
    /// A Conv (channels on axis 1) rather than a Gemm/MatMul (channels on
    /// the last axis): a pair must agree.
    conv: bool,
    /// `None`: no bias (a scale leaves it zero).
    bias: Option<Bias>,
    changed: bool,
    /// Product of the scales its outputs were divided by (empty: none).
    out_scale: Vec<f32>,
}

/// `[r, c]` row-major → `[c, r]`.
fn transpose(w: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = w[i * c + j];
        }
    }
    t
}

/// The bits of `|x|`, 0 for NaN: as unsigned integers they order as the
/// magnitudes do (integer maxima vectorize where `f32::max`, which must
/// skip NaN, does not).
fn abs_bits(x: f32) -> u32 {
    let a = x.to_bits() & 0x7fff_ffff;
    if a > 0x7f80_0000 {
        0
    } else {
        a
    }
}

impl Layer {
    fn read(g: &Graph, id: NodeId) -> Result<Option<Layer>> {
        let Some(node) = g.node(id) else {
            return Ok(None);
        };
        if !node.is_onnx() {
            return Ok(None);
        }
        let Some((values, stored)) = float_const(g, node.input(1)) else {
            return Ok(None);
        };
        let (w, dims, group, transposed) = match node.op_type.as_str() {
            "Conv" => {
                let group = node.get_int("group")?.unwrap_or(1);
                if stored.len() < 3 || group < 1 || stored[0] % group as usize != 0 {
                    return Ok(None);
                }
                (values, stored.clone(), group as usize, false)
            }
            "Gemm" | "MatMul" if stored.len() == 2 => {
                if node.get_int("transA")?.unwrap_or(0) != 0 {
                    return Ok(None);
                }
                if node.is("Gemm") && node.get_int("transB")?.unwrap_or(0) != 0 {
                    (values, stored.clone(), 1, false)
                } else {
                    let t = transpose(&values, stored[0], stored[1]);
                    (t, vec![stored[1], stored[0]], 1, true)
                }
            }
            _ => return Ok(None),
        };
        let cout = dims[0];
        if cout == 0 {
            return Ok(None);
        }
        // A bias must be one value per output channel (a scalar or a
        // broadcast matrix could not take a per-channel scale).
        let per_channel = |d: &[usize]| {
            d.iter().product::<usize>() == cout
                && d.iter().filter(|&&x| x != 1).count() <= 1
                && (node.is("Conv") || d.last() == Some(&cout))
        };
        let bias = if node.is("MatMul") {
            bias_add(g, id, cout)?
        } else {
            match node.input(2) {
                None => None,
                Some(b) => match float_const(g, Some(b)) {
                    Some((v, d)) if per_channel(&d) => Some((v, BiasAt::Input, d)),
                    _ => return Ok(None),
                },
            }
        };
        Ok(Some(Layer {
            w,
            dims,
            group,
            transposed,
            conv: node.is("Conv"),
            bias,
            changed: false,
            out_scale: Vec::new(),
        }))
    }

    /// The stored weight: its dims and values.
    fn stored(&self) -> (Vec<usize>, Vec<f32>) {
        if self.transposed {
            let (n, k) = (self.dims[0], self.dims[1]);
            (vec![k, n], transpose(&self.w, n, k))
        } else {
            (self.dims.clone(), self.w.clone())
        }
    }

    fn out_channels(&self) -> usize {
        self.dims[0]
    }

    fn in_channels(&self) -> usize {
        self.dims[1] * self.group
    }

    /// Elements per output channel.
    fn per_out(&self) -> usize {
        self.w.len() / self.dims[0]
    }

    /// Largest |w| of each output channel.
    fn out_ranges(&self) -> Vec<f32> {
        self.w
            .chunks(self.per_out())
            .map(|c| c.iter().fold(0f32, |m, x| m.max(x.abs())))
            .collect()
    }

    /// `(C_in/group, k, C_out/group)`, `None` for an empty layer. W is
    /// `[C_out, C_in/group, k…]`: output `o`'s row of `C_in/group` runs of
    /// `k` elements reads input channels from `(o / (C_out/group))·
    /// (C_in/group)` on. The loops over it go a row at a time: a call per
    /// run was a call per element for 1×1 kernels and MatMuls, and kept
    /// them from vectorizing.
    fn input_rows(&self) -> Option<(usize, usize, usize)> {
        let (cout, cin_g) = (self.dims[0], self.dims[1]);
        let kernel: usize = self.dims[2..].iter().product::<usize>().max(1);
        let cout_g = cout / self.group;
        (cin_g > 0 && cout_g > 0).then_some((cin_g, kernel, cout_g))
    }

    /// Largest |w| multiplying each input channel.
    fn in_ranges(&self) -> Vec<f32> {
        let mut r = vec![0f32; self.in_channels()];
        let Some((cin_g, kernel, cout_g)) = self.input_rows() else {
            return r;
        };
        for (o, row) in self.w.chunks_exact(cin_g * kernel).enumerate() {
            let first = (o / cout_g) * cin_g;
            let dst = &mut r[first..first + cin_g];
            if kernel == 1 {
                dst.iter_mut()
                    .zip(row)
                    .for_each(|(m, x)| *m = f32::from_bits(m.to_bits().max(abs_bits(*x))));
            } else {
                for (m, run) in dst.iter_mut().zip(row.chunks_exact(kernel)) {
                    let b = run.iter().map(|&x| abs_bits(x)).max().unwrap_or(0);
                    *m = f32::from_bits(m.to_bits().max(b));
                }
            }
        }
        r
    }

    fn divide_outputs(&mut self, s: &[f32]) {
        let per = self.per_out();
        for (c, chunk) in self.w.chunks_mut(per).enumerate() {
            chunk.iter_mut().for_each(|x| *x /= s[c]);
        }
        if let Some((b, _, _)) = &mut self.bias {
            b.iter_mut().zip(s).for_each(|(x, s)| *x /= s);
        }
        if self.out_scale.is_empty() {
            self.out_scale = s.to_vec();
        } else {
            self.out_scale.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
        self.changed = true;
    }

    fn multiply_inputs(&mut self, s: &[f32]) {
        if let Some((cin_g, kernel, cout_g)) = self.input_rows() {
            for (o, row) in self.w.chunks_exact_mut(cin_g * kernel).enumerate() {
                let first = (o / cout_g) * cin_g;
                for (run, &sc) in row.chunks_exact_mut(kernel).zip(&s[first..first + cin_g]) {
                    run.iter_mut().for_each(|x| *x *= sc);
                }
            }
        }
        self.changed = true;
    }
}

/// The bias of a MatMul: the constant `[N]` (or `[1, N]`) input of an
/// `Add` that alone consumes its output.
fn bias_add(g: &Graph, id: NodeId, n: usize) -> Result<Option<Bias>> {
    let Some(y) = g.node(id).and_then(|m| m.output(0)) else {
        return Ok(None);
    };
    let uses = g.value(y).consumers();
    let [(add, _)] = uses else { return Ok(None) };
    let Some(a) = g.node(*add) else {
        return Ok(None);
    };
    if !a.is("Add") || g.is_graph_output(y) {
        return Ok(None);
    }
    for slot in 0..2 {
        if a.input(1 - slot) != Some(y) {
            continue;
        }
        if let Some((v, d)) = float_const(g, a.input(slot)) {
            if d.iter().product::<usize>() == n && d.last() == Some(&n) {
                return Ok(Some((v, BiasAt::Add(*add, slot), d)));
            }
        }
    }
    Ok(None)
}

/// `(first, second)` layer pairs, in graph order, whose channels can be
/// rescaled.
fn pairs(g: &Graph, layers: &BTreeMap<NodeId, Layer>) -> Result<Vec<(NodeId, NodeId)>> {
    let mut out = Vec::new();
    for second in g.topo_order()? {
        let (Some(node), Some(l2)) = (g.node(second), layers.get(&second)) else {
            continue;
        };
        let Some(mut x) = node.input(0) else { continue };
        let mut consumer = second;
        if let Some((act, a)) = g.producer_node(x) {
            if a.is_onnx() && HOMOGENEOUS.contains(&a.op_type.as_str()) {
                if !single_use(g, x, second) {
                    continue;
                }
                let Some(y) = a.input(0) else { continue };
                (x, consumer) = (y, act);
            }
        }
        let Some((mut first, _)) = g.producer_node(x) else {
            continue;
        };
        // A MatMul's bias Add sits between it and the activation.
        if let Some((&id, _)) = layers
            .iter()
            .find(|(_, l)| matches!(l.bias, Some((_, BiasAt::Add(add, _), _)) if add == first))
        {
            if !single_use(g, x, consumer) {
                continue;
            }
            let Some(y) = g.node(id).and_then(|n| n.output(0)) else {
                continue;
            };
            (x, consumer, first) = (y, first, id);
        }
        let Some(l1) = layers.get(&first) else {
            continue;
        };
        if first != second
            && single_use(g, x, consumer)
            && l1.conv == l2.conv
            && l1.out_channels() == l2.in_channels()
        {
            out.push((first, second));
        }
    }
    Ok(out)
}

/// The activations carrying a rescaled layer's outputs: its output, then
/// through its bias `Add` and homogeneous activations while each is the
/// value's only reader.
fn rescaled_activations(
    g: &Graph,
    layers: &BTreeMap<NodeId, Layer>,
) -> BTreeMap<String, ChannelScale> {
    let mut out = BTreeMap::new();
    for (&id, l) in layers {
        if l.out_scale.iter().all(|&s| s == 1.0) {
            continue;
        }
        let scale = ChannelScale {
            channel_axis_is_1: l.conv,
            divisors: l.out_scale.clone(),
        };
        let bias_add = match l.bias {
            Some((_, BiasAt::Add(add, _), _)) => Some(add),
            _ => None,
        };
        let mut v = g.node(id).and_then(|n| n.output(0));
        while let Some(x) = v {
            out.insert(g.value_name(x).to_string(), scale.clone());
            v = match g.value(x).consumers() {
                [(c, 0 | 1)] if Some(*c) == bias_add && !g.is_graph_output(x) => {
                    g.node(*c).and_then(|n| n.output(0))
                }
                [(c, 0)] if !g.is_graph_output(x) => g
                    .node(*c)
                    .filter(|n| n.is_onnx() && HOMOGENEOUS.contains(&n.op_type.as_str()))
                    .and_then(|n| n.output(0)),
                _ => None,
            };
        }
    }
    out
}

/// What [`equalize`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Equalized {
    /// Layer pairs balanced.
    pub pairs: usize,
    pub rounds: usize,
    /// Largest ratio between two channels' weight ranges where the layers
    /// of a pair meet (the first's output channels, the second's input
    /// channels: the spread one per-tensor or per-output-channel scale
    /// must cover), before and after.
    pub worst_spread_before: f32,
    pub worst_spread_after: f32,
    /// Activations the balance rescaled, by name: the equalized model
    /// computes the original values divided per channel by these (what a
    /// per-layer comparison with the original model must undo).
    #[serde(skip)]
    pub rescaled: BTreeMap<String, ChannelScale>,
}

/// Per-channel divisors of an activation (channels on axis 1 for a Conv's
/// output, on the last axis for a Gemm / MatMul's).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelScale {
    pub channel_axis_is_1: bool,
    pub divisors: Vec<f32>,
}

impl ChannelScale {
    /// `values` (of shape `dims`) multiplied back to the original scale;
    /// `None` when the channel count does not match.
    pub fn undo(&self, values: &mut [f32], dims: &[usize]) -> Option<()> {
        let c = self.divisors.len();
        let (axis_len, inner) = if self.channel_axis_is_1 {
            (*dims.get(1)?, dims.get(2..)?.iter().product::<usize>())
        } else {
            (*dims.last()?, 1)
        };
        if axis_len != c || c == 0 {
            return None;
        }
        for (run, chunk) in values.chunks_mut(inner.max(1)).enumerate() {
            let d = self.divisors[run % c];
            chunk.iter_mut().for_each(|x| *x *= d);
        }
        Some(())
    }
}

/// Max/min ratio of the live channel ranges `r`.
fn spread(r: &[f32]) -> f32 {
    let hi = r.iter().fold(0f32, |m, &x| m.max(x));
    // Channels below a millionth of the widest are dead (their weights
    // round to zero whatever the scale), not a spread.
    let lo = r
        .iter()
        .filter(|&&x| x > hi * DEAD)
        .fold(f32::INFINITY, |m, &x| m.min(x));
    if lo.is_finite() && lo > 0.0 {
        hi / lo
    } else {
        1.0
    }
}

/// Over `pairs`, the largest spread of the channel ranges that meet between
/// the two layers: the first layer's output channels, the second's input
/// channels.
fn worst_spread(layers: &BTreeMap<NodeId, Layer>, pairs: &[(NodeId, NodeId)]) -> f32 {
    let mut worst = 1f32;
    for (first, second) in pairs {
        if let (Some(a), Some(b)) = (layers.get(first), layers.get(second)) {
            worst = worst
                .max(spread(&a.out_ranges()))
                .max(spread(&b.in_ranges()));
        }
    }
    worst
}

/// Balances every eligible Conv pair of `model` (see the module doc).
pub fn equalize(model: &mut Model) -> Result<Equalized> {
    let g = &mut model.graph;
    let mut layers = BTreeMap::new();
    let ids: Vec<NodeId> = g.nodes().map(|(id, _)| id).collect();
    for id in ids {
        if let Some(l) = Layer::read(g, id)? {
            layers.insert(id, l);
        }
    }
    let pairs = pairs(g, &layers)?;
    let mut report = Equalized {
        pairs: pairs.len(),
        worst_spread_before: worst_spread(&layers, &pairs),
        ..Default::default()
    };
    for round in 1..=MAX_ROUNDS {
        report.rounds = round;
        let mut moved = 0f32;
        for &(first, second) in &pairs {
            let (Some(r1), Some(r2)) = (
                layers.get(&first).map(Layer::out_ranges),
                layers.get(&second).map(Layer::in_ranges),
            ) else {
                continue;
            };
            // A dead channel on either side keeps its scale.
            let s: Vec<f32> = r1
                .iter()
                .zip(&r2)
                .map(|(&a, &b)| {
                    let s = (a / b).sqrt();
                    if a > 0.0 && b > 0.0 && s.is_finite() {
                        s
                    } else {
                        1.0
                    }
                })
                .collect();
            moved = s.iter().fold(moved, |m, &x| m.max((x - 1.0).abs()));
            if let Some(l) = layers.get_mut(&first) {
                l.divide_outputs(&s);
            }
            if let Some(l) = layers.get_mut(&second) {
                l.multiply_inputs(&s);
            }
        }
        if moved <= CONVERGED {
            break;
        }
    }
    report.worst_spread_after = worst_spread(&layers, &pairs);
    report.rescaled = rescaled_activations(g, &layers);
    for (id, l) in layers.into_iter().filter(|(_, l)| l.changed) {
        let name = g.node(id).map(|n| n.name.clone()).unwrap_or_default();
        let (dims, values) = l.stored();
        let w = g.add_initializer(
            &format!("{name}.weight_equalized"),
            Tensor::from_f32(dims, &values),
        );
        g.set_input(id, 1, Some(w));
        if let Some((b, at, dims)) = &l.bias {
            let b = g.add_initializer(
                &format!("{name}.bias_equalized"),
                Tensor::from_f32(dims.clone(), b),
            );
            match *at {
                BiasAt::Input => g.set_input(id, 2, Some(b)),
                BiasAt::Add(add, slot) => g.set_input(add, slot, Some(b)),
            }
        }
    }
    // The replaced weights and biases are unread now.
    if report.pairs > 0 {
        super::cleanup::RemoveDeadNodes.run(model, &PassOptions::default())?;
        model.graph.validate()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::node::attr;
    use crate::passes::testutil::{assert_close, inputs, model, node, run};

    /// Values with per-channel magnitudes `scale[c]` (a BatchNorm-folded
    /// look: some channels 100x others).
    fn weights(dims: &[usize], scale: impl Fn(usize) -> f32) -> Tensor {
        let per: usize = dims[1..].iter().product();
        let n = dims[0] * per;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.7).sin() + 0.1) * scale(i / per))
            .collect();
        Tensor::from_f32(dims.to_vec(), &v)
    }

    /// conv1 (3→4, 3x3) → Relu → depthwise (4, 3x3) → LeakyRelu → pointwise
    /// (4→5, 1x1): the MobileNet block shape, with two equalizable pairs.
    fn block(pointwise_input_is_output: bool) -> Model {
        let mut outputs = vec!["y"];
        if pointwise_input_is_output {
            outputs.push("a2");
        }
        model(
            13,
            &[("x", &[1, 3, 6, 6])],
            &outputs,
            vec![
                node(
                    "Conv",
                    "conv1",
                    &["x", "w1", "b1"],
                    &["c1"],
                    vec![attr::ints("pads", &[1, 1, 1, 1])],
                ),
                node("Relu", "relu1", &["c1"], &["a1"], vec![]),
                node(
                    "Conv",
                    "dw",
                    &["a1", "w2", "b2"],
                    &["c2"],
                    vec![attr::ints("pads", &[1, 1, 1, 1]), attr::int("group", 4)],
                ),
                node(
                    "LeakyRelu",
                    "lrelu",
                    &["c2"],
                    &["a2"],
                    vec![attr::float("alpha", 0.1)],
                ),
                node("Conv", "pw", &["a2", "w3"], &["y"], vec![]),
            ],
            vec![
                ("w1", weights(&[4, 3, 3, 3], |c| [1.0, 0.01, 3.0, 0.2][c])),
                ("b1", Tensor::from_f32(vec![4], &[0.1, -0.02, 0.5, 0.0])),
                ("w2", weights(&[4, 1, 3, 3], |c| [0.05, 20.0, 1.0, 4.0][c])),
                ("b2", Tensor::from_f32(vec![4], &[0.0, 1.0, -0.3, 0.2])),
                ("w3", weights(&[5, 4, 1, 1], |_| 1.0)),
            ],
        )
    }

    fn layer(m: &Model, name: &str) -> Layer {
        let g = &m.graph;
        let id = g
            .nodes()
            .find(|(_, n)| n.name == name)
            .map(|(id, _)| id)
            .unwrap();
        Layer::read(g, id).unwrap().unwrap()
    }

    #[test]
    fn pairs_get_equal_ranges_and_the_function_stays() {
        let m0 = block(false);
        let mut m = m0.clone();
        let r = equalize(&mut m).unwrap();
        assert_eq!(r.pairs, 2);
        assert!(r.worst_spread_before > 50.0, "{r:?}");
        assert!(r.worst_spread_after < r.worst_spread_before / 10.0, "{r:?}");
        // Per channel, the first layer's output range equals the second
        // layer's input range (the converged balance).
        for (a, b) in [("conv1", "dw"), ("dw", "pw")] {
            let (r1, r2) = (layer(&m, a).out_ranges(), layer(&m, b).in_ranges());
            for (x, y) in r1.iter().zip(&r2) {
                assert!(
                    (x - y).abs() <= 1e-3 * x.max(*y),
                    "{a}/{b}: {r1:?} vs {r2:?}"
                );
            }
        }
        let xs = inputs(&m0, 3);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-5);
    }

    #[test]
    fn an_observed_intermediate_blocks_its_pair() {
        // a2 is a graph output: rescaling dw's channels would change it.
        let m0 = block(true);
        let mut m = m0.clone();
        assert_eq!(equalize(&mut m).unwrap().pairs, 1);
        let xs = inputs(&m0, 4);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-5);
        assert_eq!(layer(&m, "pw").w, layer(&m0, "pw").w);
    }
}
