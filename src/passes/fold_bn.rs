//! Folding per-channel affine ops into the layer that produces their input.
//!
//! - [`FoldBatchNorm`]: inference-mode `BatchNormalization` after Conv,
//!   ConvTranspose or Gemm with constant weights. With
//!   `s = scale / sqrt(var + eps)`: `W'[c] = W[c] · s[c]`,
//!   `b'[c] = (b[c] − mean[c]) · s[c] + B[c]`. For Gemm the per-column scale
//!   goes into B (respecting transB) and the bias into C (beta becomes 1).
//! - [`FoldChannelAffine`]: a `Mul` or `Add` by a per-output-channel (or
//!   scalar) constant right after a Conv: `W'[c] = W[c] · m[c]`,
//!   `b'[c] = b[c] · m[c]` or `b'[c] = b[c] + a[c]`.
//!
//! Both need the intermediate value to have no other consumer (otherwise the
//! unfused value is still needed), new weight tensors are new initializers
//! (a weight shared with another node is never changed in place), and the
//! folded node keeps the output value, hence its name.

use super::{Pass, PassOptions};
use crate::error::Result;
use crate::ir::graph::Graph;
use crate::ir::node::attr;
use crate::ir::tensor::{DataType, Tensor};
use crate::ir::{Model, NodeId, ValueId};

pub struct FoldBatchNorm;
pub struct FoldChannelAffine;

/// A float constant input of a node: its values and shape.
pub(crate) fn float_const(g: &Graph, v: Option<ValueId>) -> Option<(Vec<f32>, Vec<usize>)> {
    let v = v?;
    if g.is_graph_input(v) {
        return None;
    }
    let t = g.initializer(v)?;
    if t.dtype() != DataType::Float {
        return None;
    }
    Some((t.to_f32_vec().ok()?, t.dims().to_vec()))
}

/// `x` feeds only `consumer` (no other node, not a graph output, no subgraph).
pub(crate) fn single_use(g: &Graph, x: ValueId, consumer: NodeId) -> bool {
    let v = g.value(x);
    !v.consumers().is_empty()
        && v.consumers().iter().all(|&(c, _)| c == consumer)
        && !g.is_graph_output(x)
}

/// Layer kinds whose output channels can absorb a per-channel scale and bias.
#[derive(Clone, Copy, PartialEq)]
enum Layer {
    Conv,
    ConvTranspose,
    Gemm,
}

/// Rewrites `layer` so it also applies `y = y · scale[c] + shift[c]` per
/// output channel. Returns false (changing nothing) when it cannot.
fn absorb(g: &mut Graph, layer: NodeId, scale: &[f32], shift: &[f32]) -> Result<bool> {
    let Some(node) = g.node(layer) else {
        return Ok(false);
    };
    let kind = match node.op_type.as_str() {
        _ if !node.is_onnx() => return Ok(false),
        "Conv" => Layer::Conv,
        "ConvTranspose" => Layer::ConvTranspose,
        "Gemm" => Layer::Gemm,
        _ => return Ok(false),
    };
    let Some((w, wdims)) = float_const(g, node.input(1)) else {
        return Ok(false);
    };
    let c = scale.len();
    let group = node.get_int("group")?.unwrap_or(1).max(1) as usize;
    let mut w2 = w.clone();
    // Map every weight element to its output channel.
    match kind {
        Layer::Conv => {
            if wdims.first() != Some(&c) {
                return Ok(false);
            }
            let per = w.len() / c;
            for (i, x) in w2.iter_mut().enumerate() {
                *x *= scale[i / per];
            }
        }
        Layer::ConvTranspose => {
            // W: [C_in, C_out / group, k...]; out channel = grp * (C_out/group) + j.
            if wdims.len() < 2 || wdims[1] * group != c || wdims[0] % group != 0 {
                return Ok(false);
            }
            let (cin, cpg) = (wdims[0], wdims[1]);
            let inner: usize = wdims[2..].iter().product();
            let cin_per_group = cin / group;
            for ci in 0..cin {
                let grp = ci / cin_per_group;
                for j in 0..cpg {
                    let s = scale[grp * cpg + j];
                    let base = (ci * cpg + j) * inner;
                    for x in &mut w2[base..base + inner] {
                        *x *= s;
                    }
                }
            }
        }
        Layer::Gemm => {
            if wdims.len() != 2 {
                return Ok(false);
            }
            let trans_b = node.get_int("transB")?.unwrap_or(0) != 0;
            let (rows, cols) = (wdims[0], wdims[1]);
            let out = if trans_b { rows } else { cols };
            if out != c {
                return Ok(false);
            }
            for r in 0..rows {
                for k in 0..cols {
                    w2[r * cols + k] *= scale[if trans_b { r } else { k }];
                }
            }
        }
    }
    // The bias, as a per-channel vector.
    let bias_slot = 2;
    let old_bias: Vec<f32> = match node.input(bias_slot) {
        None => vec![0.0; c],
        Some(_) => {
            let Some((b, bdims)) = float_const(g, node.input(bias_slot)) else {
                return Ok(false);
            };
            let beta = if kind == Layer::Gemm {
                node.get_float("beta")?.unwrap_or(1.0)
            } else {
                1.0
            };
            match b.len() {
                n if n == c
                    && bdims.iter().filter(|&&d| d != 1).count() <= 1
                    && bdims.last() == Some(&c) =>
                {
                    b.iter().map(|v| v * beta).collect()
                }
                n if n == c && kind != Layer::Gemm => b.iter().map(|v| v * beta).collect(),
                1 => vec![b[0] * beta; c],
                _ => return Ok(false),
            }
        }
    };
    let bias: Vec<f32> = old_bias
        .iter()
        .zip(scale.iter().zip(shift))
        .map(|(b, (s, t))| b * s + t)
        .collect();

    let name = node.name.clone();
    let w_new = g.add_initializer(
        &format!("{name}.weight_folded"),
        Tensor::from_f32(wdims, &w2),
    );
    let b_new = g.add_initializer(
        &format!("{name}.bias_folded"),
        Tensor::from_f32(vec![c], &bias),
    );
    g.set_input(layer, 1, Some(w_new));
    g.set_input(layer, bias_slot, Some(b_new));
    if kind == Layer::Gemm {
        if let Some(n) = g.node_mut(layer) {
            n.set_attr(attr::float("beta", 1.0));
        }
    }
    Ok(true)
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&self, model: &mut Model, _opts: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        let mut changed = 0;
        let bns: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| n.is("BatchNormalization"))
            .map(|(id, _)| id)
            .collect();
        for bn in bns {
            let Some(node) = g.node(bn) else { continue };
            if node.get_int("training_mode")?.unwrap_or(0) != 0 {
                continue;
            }
            let Some(x) = node.input(0) else { continue };
            let params: Option<Vec<Vec<f32>>> = (1..5)
                .map(|i| float_const(g, node.input(i)).map(|p| p.0))
                .collect();
            let Some(p) = params else { continue };
            let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
            let c = gamma.len();
            if [beta.len(), mean.len(), var.len()] != [c, c, c] {
                continue;
            }
            let eps = node.get_float("epsilon")?.unwrap_or(1e-5);
            let Some((layer, _)) = g.producer_node(x) else {
                continue;
            };
            if !single_use(g, x, bn) {
                continue;
            }
            let scale: Vec<f32> = gamma
                .iter()
                .zip(var)
                .map(|(gm, v)| gm / (v + eps).sqrt())
                .collect();
            let shift: Vec<f32> = beta
                .iter()
                .zip(mean.iter().zip(&scale))
                .map(|(b, (m, s))| b - m * s)
                .collect();
            if !absorb(g, layer, &scale, &shift)? {
                continue;
            }
            if g.splice_out(bn, 0) {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

impl Pass for FoldChannelAffine {
    fn name(&self) -> &'static str {
        "fold-channel-affine"
    }

    fn run(&self, model: &mut Model, _opts: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        let mut changed = 0;
        let cands: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| n.is("Mul") || n.is("Add"))
            .map(|(id, _)| id)
            .collect();
        for id in cands {
            let Some(node) = g.node(id) else { continue };
            let is_mul = node.op_type == "Mul";
            // Which side is the Conv output, which the constant.
            let sides = [(0, 1), (1, 0)];
            let found = sides.iter().find_map(|&(xs, cs)| {
                let x = node.input(xs)?;
                let (layer, ln) = g.producer_node(x)?;
                (ln.is("Conv") && single_use(g, x, id)).then_some((x, layer, cs))
            });
            let Some((_, layer, cs)) = found else {
                continue;
            };
            let Some((k, kdims)) = float_const(g, node.input(cs)) else {
                continue;
            };
            let Some(wdims) = g
                .node(layer)
                .and_then(|l| l.input(1))
                .and_then(|w| g.initializer(w))
                .map(|t| t.dims().to_vec())
            else {
                continue;
            };
            let (c, out_rank) = (wdims[0], wdims.len());
            let Some(per_channel) = channel_vector(&k, &kdims, c, out_rank) else {
                continue;
            };
            let (scale, shift) = if is_mul {
                (per_channel, vec![0.0; c])
            } else {
                (vec![1.0; c], per_channel)
            };
            if !absorb(g, layer, &scale, &shift)? {
                continue;
            }
            // The Conv output feeds slot xs of this node; splice through it.
            let xs = 1 - cs;
            if g.splice_out(id, xs) {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

/// A constant of shape `dims` broadcast onto an `[N, C, spatial…]` tensor of
/// rank `out_rank`, as one value per channel, if it varies only along C.
fn channel_vector(k: &[f32], dims: &[usize], c: usize, out_rank: usize) -> Option<Vec<f32>> {
    if k.len() == 1 && dims.len() <= out_rank {
        return Some(vec![k[0]; c]);
    }
    if k.len() != c || dims.len() > out_rank {
        return None;
    }
    // Right-align dims against the output; the non-1 dim must be axis 1.
    let offset = out_rank - dims.len();
    let axis = dims.iter().position(|&d| d != 1)? + offset;
    (axis == 1).then(|| k.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testutil::*;

    fn conv_bn(extra_consumer: bool) -> Model {
        let w: Vec<f32> = (0..3 * 2 * 9)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
            .collect();
        let mut nodes = vec![
            node(
                "Conv",
                "conv",
                &["x", "w", "b"],
                &["c"],
                vec![attr::ints("pads", &[1, 1, 1, 1])],
            ),
            node(
                "BatchNormalization",
                "bn",
                &["c", "g", "beta", "m", "v"],
                &["y"],
                vec![attr::float("epsilon", 1e-3)],
            ),
        ];
        let mut outs = vec!["y"];
        if extra_consumer {
            nodes.push(node("Relu", "side", &["c"], &["side"], vec![]));
            outs.push("side");
        }
        model(
            13,
            &[("x", &[1, 2, 5, 5])],
            &outs,
            nodes,
            vec![
                ("w", Tensor::from_f32(vec![3, 2, 3, 3], &w)),
                ("b", Tensor::from_f32(vec![3], &[0.1, -0.2, 0.3])),
                ("g", Tensor::from_f32(vec![3], &[1.5, 0.5, -1.0])),
                ("beta", Tensor::from_f32(vec![3], &[0.0, 1.0, -2.0])),
                ("m", Tensor::from_f32(vec![3], &[0.2, -0.1, 0.4])),
                ("v", Tensor::from_f32(vec![3], &[0.5, 2.0, 1.0])),
            ],
        )
    }

    #[test]
    fn batchnorm_folds_into_conv() {
        let m0 = conv_bn(false);
        let mut m = m0.clone();
        assert_eq!(
            FoldBatchNorm.run(&mut m, &PassOptions::default()).unwrap(),
            1
        );
        assert_eq!(ops(&m), ["Conv"]);
        // The graph output keeps its name.
        assert_eq!(m.graph.value_name(m.graph.outputs().next().unwrap()), "y");
        let xs = inputs(&m0, 5);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-5);
    }

    #[test]
    fn batchnorm_whose_input_has_another_consumer_stays() {
        let mut m = conv_bn(true);
        assert_eq!(
            FoldBatchNorm.run(&mut m, &PassOptions::default()).unwrap(),
            0
        );
        assert_eq!(ops(&m), ["Conv", "BatchNormalization", "Relu"]);
    }

    #[test]
    fn batchnorm_folds_into_gemm_and_conv_transpose() {
        let bn = |x: &str| {
            node(
                "BatchNormalization",
                "bn",
                &[x, "g", "beta", "m", "v"],
                &["y"],
                vec![],
            )
        };
        let params = || {
            vec![
                ("g", Tensor::from_f32(vec![3], &[1.5, 0.5, -1.0])),
                ("beta", Tensor::from_f32(vec![3], &[0.0, 1.0, -2.0])),
                ("m", Tensor::from_f32(vec![3], &[0.2, -0.1, 0.4])),
                ("v", Tensor::from_f32(vec![3], &[0.5, 2.0, 1.0])),
            ]
        };
        for trans_b in [0, 1] {
            let wdims = if trans_b == 1 { vec![3, 4] } else { vec![4, 3] };
            let mut inits = params();
            inits.push((
                "w",
                Tensor::from_f32(
                    wdims,
                    &(0..12).map(|i| i as f32 / 7.0 - 0.8).collect::<Vec<_>>(),
                ),
            ));
            inits.push(("c", Tensor::from_f32(vec![3], &[0.3, 0.2, 0.1])));
            let m0 = model(
                13,
                &[("x", &[2, 4])],
                &["y"],
                vec![
                    node(
                        "Gemm",
                        "gemm",
                        &["x", "w", "c"],
                        &["h"],
                        vec![attr::int("transB", trans_b), attr::float("beta", 0.5)],
                    ),
                    bn("h"),
                ],
                inits,
            );
            let mut m = m0.clone();
            assert_eq!(
                FoldBatchNorm.run(&mut m, &PassOptions::default()).unwrap(),
                1
            );
            assert_eq!(ops(&m), ["Gemm"]);
            let xs = inputs(&m0, 9);
            assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-5);
        }
        let mut inits = params();
        inits.push((
            "w",
            Tensor::from_f32(
                vec![2, 3, 2, 2],
                &(0..24).map(|i| i as f32 / 13.0 - 0.9).collect::<Vec<_>>(),
            ),
        ));
        let m0 = model(
            13,
            &[("x", &[1, 2, 3, 3])],
            &["y"],
            vec![
                node(
                    "ConvTranspose",
                    "ct",
                    &["x", "w"],
                    &["h"],
                    vec![attr::ints("strides", &[2, 2])],
                ),
                bn("h"),
            ],
            inits,
        );
        let mut m = m0.clone();
        assert_eq!(
            FoldBatchNorm.run(&mut m, &PassOptions::default()).unwrap(),
            1
        );
        let xs = inputs(&m0, 2);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-5);
    }

    #[test]
    fn training_mode_batchnorm_stays() {
        let mut m = conv_bn(false);
        let bn = m
            .graph
            .nodes()
            .find(|(_, n)| n.op_type == "BatchNormalization")
            .unwrap()
            .0;
        m.graph
            .node_mut(bn)
            .unwrap()
            .set_attr(attr::int("training_mode", 1));
        assert_eq!(
            FoldBatchNorm.run(&mut m, &PassOptions::default()).unwrap(),
            0
        );
    }

    #[test]
    fn per_channel_mul_and_add_fold_into_conv() {
        let w: Vec<f32> = (0..2 * 2 * 9)
            .map(|i| ((i * 5 % 9) as f32 - 4.0) / 8.0)
            .collect();
        let m0 = model(
            13,
            &[("x", &[1, 2, 4, 4])],
            &["y"],
            vec![
                node("Conv", "conv", &["x", "w"], &["c"], vec![]),
                node("Mul", "mul", &["c", "k"], &["cm"], vec![]),
                node("Add", "add", &["a", "cm"], &["y"], vec![]),
            ],
            vec![
                ("w", Tensor::from_f32(vec![2, 2, 3, 3], &w)),
                ("k", Tensor::from_f32(vec![2, 1, 1], &[2.0, -0.5])),
                ("a", Tensor::from_f32(vec![1, 2, 1, 1], &[0.25, 1.0])),
            ],
        );
        let mut m = m0.clone();
        assert_eq!(
            FoldChannelAffine
                .run(&mut m, &PassOptions::default())
                .unwrap(),
            2
        );
        assert_eq!(ops(&m), ["Conv"]);
        let xs = inputs(&m0, 4);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 1e-5);

        // A constant that varies along a spatial axis is not per-channel.
        assert_eq!(channel_vector(&[1.0, 2.0], &[1, 1, 2], 2, 4), None);
        assert_eq!(channel_vector(&[3.0], &[1], 4, 4), Some(vec![3.0; 4]));
    }
}
