//! `Constant` nodes → initializers.
//!
//! Exporters such as PaddlePaddle's store every weight as a `Constant` node;
//! a quantizer that only looks at initializers never sees them. This pass
//! turns each `Constant` (every attribute form: `value`, `value_float(s)`,
//! `value_int(s)`, `value_string(s)`, and `sparse_value` densified up to the
//! fold limit) into an initializer of the same name. A `Constant` whose
//! output a subgraph reads by name is left alone.

use super::{Pass, PassOptions};
use crate::error::{Error, Result};
use crate::ir::tensor::{numel, DataType, Tensor};
use crate::ir::{Model, Node};
use crate::onnx::proto::SparseTensorProto;
use crate::onnx::tensor::tensor_from_proto;
use prost::bytes::Bytes;

pub struct ConstantToInitializer;

impl Pass for ConstantToInitializer {
    fn name(&self) -> &'static str {
        "constant-to-initializer"
    }

    fn run(&self, model: &mut Model, opts: &PassOptions) -> Result<usize> {
        let g = &mut model.graph;
        let ids: Vec<_> = g
            .nodes()
            .filter(|(_, n)| n.is("Constant"))
            .map(|(id, _)| id)
            .collect();
        let mut changed = 0;
        for id in ids {
            let Some(node) = g.node(id) else { continue };
            let Some(out) = node.output(0) else { continue };
            if g.has_implicit_uses(out) {
                continue;
            }
            let Some(tensor) = constant_value(node, opts.fold_limit_bytes)? else {
                continue;
            };
            g.remove_node(id);
            g.set_initializer(out, tensor);
            changed += 1;
        }
        Ok(changed)
    }
}

/// The tensor a `Constant` node produces (`None`: a sparse value too large
/// to densify).
pub fn constant_value(node: &Node, limit_bytes: usize) -> Result<Option<Tensor>> {
    let bad = |reason: String| Error::BadNode {
        node: node.name.clone(),
        op: node.op_type.clone(),
        reason,
    };
    let [a] = node.attrs.as_slice() else {
        return Err(bad(format!(
            "a Constant needs exactly one value attribute, found {}",
            node.attrs.len()
        )));
    };
    let t = match a.name() {
        "value" => node.get_tensor("value")?,
        "value_float" => node
            .get_float("value_float")?
            .map(|v| Tensor::from_f32(vec![], &[v])),
        "value_floats" => node
            .get_floats("value_floats")?
            .map(|v| Tensor::from_f32(vec![v.len()], &v)),
        "value_int" => node
            .get_int("value_int")?
            .map(|v| Tensor::from_i64(vec![], &[v])),
        "value_ints" => node
            .get_ints("value_ints")?
            .map(|v| Tensor::from_i64(vec![v.len()], &v)),
        "value_string" => Some(
            Tensor::from_strings(vec![], vec![a.s.clone().unwrap_or_default()])
                .map_err(|e| bad(e.to_string()))?,
        ),
        "value_strings" => Some(
            Tensor::from_strings(vec![a.strings.len()], a.strings.clone())
                .map_err(|e| bad(e.to_string()))?,
        ),
        "sparse_value" => match &a.sparse_tensor {
            Some(s) => return densify(s, limit_bytes).map_err(|e| bad(e.to_string())),
            None => None,
        },
        other => return Err(bad(format!("unknown Constant attribute '{other}'"))),
    };
    t.map(Some)
        .ok_or_else(|| bad(format!("attribute '{}' holds no value", a.name())))
}

/// A dense tensor from a COO sparse tensor (`None` if over `limit_bytes`).
pub fn densify(s: &SparseTensorProto, limit_bytes: usize) -> Result<Option<Tensor>> {
    let values = s
        .values
        .as_ref()
        .ok_or_else(|| Error::tensor("", "sparse tensor without values"))?;
    let name = values.name().to_string();
    let vals = tensor_from_proto(values)?;
    let dims: Vec<usize> = s
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Error::tensor(&name, format!("negative dimension {d}")))
        })
        .collect::<Result<_>>()?;
    let n = numel(&dims).ok_or_else(|| Error::tensor(&name, "sparse shape overflows"))?;
    let dtype = vals.dtype();
    let Some(bits) = dtype.bits().filter(|b| b % 8 == 0) else {
        return Ok(None);
    };
    let esize = bits / 8;
    let Some(total) = n.checked_mul(esize).filter(|&t| t <= limit_bytes) else {
        return Ok(None);
    };
    let indices = match &s.indices {
        Some(i) => tensor_from_proto(i)?.to_i64_vec()?,
        None => Vec::new(),
    };
    let nnz = vals.len();
    let rank = dims.len();
    // Indices are either [nnz] linear positions or [nnz, rank] coordinates.
    let linear: Vec<usize> = if indices.len() == nnz {
        indices.iter().map(|&i| i as usize).collect()
    } else if indices.len() == nnz * rank {
        indices
            .chunks(rank.max(1))
            .map(|c| {
                c.iter()
                    .zip(&dims)
                    .fold(0usize, |acc, (&i, &d)| acc * d + i as usize)
            })
            .collect()
    } else {
        return Err(Error::tensor(
            &name,
            format!(
                "{} sparse indices for {nnz} values of rank {rank}",
                indices.len()
            ),
        ));
    };
    let raw_vals = vals.raw().cloned().unwrap_or_default();
    let mut dense = vec![0u8; total];
    for (k, &pos) in linear.iter().enumerate() {
        if pos >= n {
            return Err(Error::tensor(
                &name,
                format!("sparse index {pos} is outside {dims:?}"),
            ));
        }
        dense[pos * esize..(pos + 1) * esize]
            .copy_from_slice(&raw_vals[k * esize..(k + 1) * esize]);
    }
    if dtype == DataType::String {
        return Ok(None);
    }
    Tensor::from_raw(dtype, dims, Bytes::from(dense)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::node::attr;
    use crate::onnx::tensor::tensor_to_proto;
    use crate::passes::testutil::*;

    #[test]
    fn every_form_becomes_an_initializer() {
        let w = Tensor::from_f32(vec![2], &[1.5, -2.0]);
        let m0 = model(
            13,
            &[("x", &[2])],
            &["y", "c2", "c3"],
            vec![
                node(
                    "Constant",
                    "w",
                    &[],
                    &["w"],
                    vec![attr::tensor("value", tensor_to_proto("w", &w))],
                ),
                node(
                    "Constant",
                    "c2",
                    &[],
                    &["c2"],
                    vec![attr::float("value_float", 3.0)],
                ),
                node(
                    "Constant",
                    "c3",
                    &[],
                    &["c3"],
                    vec![attr::ints("value_ints", &[1, 2, 3])],
                ),
                node("Add", "add", &["x", "w"], &["y"], vec![]),
            ],
            vec![],
        );
        let mut m = m0.clone();
        let n = ConstantToInitializer
            .run(&mut m, &PassOptions::default())
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(ops(&m), ["Add"]);
        let g = &m.graph;
        assert_eq!(g.initializer(g.find_value("w").unwrap()), Some(&w));
        assert_eq!(
            g.initializer(g.find_value("c3").unwrap())
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            vec![1, 2, 3]
        );
        let xs = inputs(&m0, 1);
        assert_close(&run(&m0, &xs), &run(&m, &xs), 0.0);
    }

    #[test]
    fn constant_read_by_a_subgraph_stays() {
        use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto, GraphProto};
        let branch = |name: &str| GraphProto {
            name: Some(name.into()),
            node: vec![node(
                "Add",
                name,
                &["x", "k"],
                &[&format!("{name}_out")],
                vec![],
            )],
            output: vec![vi(&format!("{name}_out"), &[2])],
            ..Default::default()
        };
        let g_attr = |n: &str, g: GraphProto| AttributeProto {
            name: Some(n.into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(g),
            ..Default::default()
        };
        let k = Tensor::from_f32(vec![2], &[1.0, 2.0]);
        let mut m = model(
            13,
            &[("x", &[2])],
            &["y"],
            vec![
                node(
                    "Constant",
                    "k",
                    &[],
                    &["k"],
                    vec![attr::tensor("value", tensor_to_proto("k", &k))],
                ),
                node(
                    "Constant",
                    "c",
                    &[],
                    &["c"],
                    vec![attr::tensor(
                        "value",
                        tensor_to_proto("c", &Tensor::from_u8(vec![], &[1])),
                    )],
                ),
                node("Cast", "cond", &["c"], &["cond"], vec![attr::int("to", 9)]),
                node(
                    "If",
                    "if",
                    &["cond"],
                    &["y"],
                    vec![
                        g_attr("then_branch", branch("t")),
                        g_attr("else_branch", branch("e")),
                    ],
                ),
            ],
            vec![],
        );
        ConstantToInitializer
            .run(&mut m, &PassOptions::default())
            .unwrap();
        assert_eq!(
            ops(&m),
            ["Constant", "Cast", "If"],
            "the Constant read by the branches stays"
        );
    }

    #[test]
    fn sparse_values_are_densified() {
        let values = tensor_to_proto("s", &Tensor::from_f32(vec![2], &[5.0, 7.0]));
        let indices = tensor_to_proto("i", &Tensor::from_i64(vec![2], &[1, 3]));
        let s = SparseTensorProto {
            values: Some(values),
            indices: Some(indices),
            dims: vec![2, 2],
        };
        let t = densify(&s, 1 << 20).unwrap().unwrap();
        assert_eq!(t.to_f32_vec().unwrap(), vec![0.0, 5.0, 0.0, 7.0]);
        assert_eq!(densify(&s, 4).unwrap(), None, "over the limit: left sparse");
    }
}
