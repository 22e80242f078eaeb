//! onnxruntime's com.microsoft quantized operators (what `--target ort`
//! emits), as their contrib schemas define them.
//!
//! - `QGemm`: integer GEMM like QLinearMatMul with `transA`/`transB`, an
//!   int32 bias `C` at scale `a_scale · b_scale[n]`, `alpha` folded into the
//!   multiplier; float output when `y_scale` is absent.
//! - `QLinearAdd`, `QLinearMul`, `QLinearSigmoid`, `QLinearLeakyRelu`,
//!   `QLinearAveragePool`, `QLinearGlobalAveragePool`, `QLinearConcat`:
//!   dequantize the inputs (spec arithmetic), apply the float operator
//!   (through tract, one cached single-op model per shape), quantize the
//!   result: `y = saturate(round_half_even(f(dequantized) / y_scale) +
//!   y_zp)`. onnxruntime's kernels compute the same expression with table
//!   lookups or float32 steps; rare ties may round differently.

use super::kernels::{self, AccStats, Arith, Ints, Params};
use crate::error::{Error, Result};
use crate::ir::{DataType, Node, Tensor};
use crate::onnx::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use crate::tract::Runner;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Operators of this module.
pub const OPS: &[&str] = &[
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
];

type Key = (String, Vec<(DataType, Vec<usize>)>);

/// Cached single-op float models.
#[derive(Default)]
pub struct FloatOps(Mutex<HashMap<Key, Arc<Runner>>>);

impl FloatOps {
    /// Runs float op `op` (default domain, opset 13) with `attrs` on `inputs`.
    fn run(
        &self,
        key: &str,
        op: &str,
        attrs: &[AttributeProto],
        inputs: &[Tensor],
    ) -> Result<Tensor> {
        let names: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}")).collect();
        let sig: Vec<(DataType, Vec<usize>)> = inputs
            .iter()
            .map(|t| (t.dtype(), t.dims().to_vec()))
            .collect();
        let k = (key.to_string(), sig.clone());
        let cached = self.0.lock().ok().and_then(|c| c.get(&k).cloned());
        let runner = match cached {
            Some(r) => r,
            None => {
                let node = NodeProto {
                    name: Some(op.into()),
                    op_type: Some(op.into()),
                    input: names.clone(),
                    output: vec!["out".into()],
                    attribute: attrs.to_vec(),
                    ..Default::default()
                };
                let proto = ModelProto {
                    ir_version: Some(8),
                    opset_import: vec![OperatorSetIdProto {
                        domain: Some(String::new()),
                        version: Some(13),
                    }],
                    graph: Some(GraphProto {
                        name: Some(op.into()),
                        node: vec![node],
                        input: names
                            .iter()
                            .zip(&sig)
                            .map(|(n, (dt, d))| crate::onnx::value_info(n, *dt, d))
                            .collect(),
                        output: vec![crate::onnx::proto::ValueInfoProto {
                            name: Some("out".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let specs: Vec<_> = names
                    .iter()
                    .zip(&sig)
                    .map(|(n, (dt, d))| (n.clone(), *dt, d.clone()))
                    .collect();
                let r = Arc::new(Runner::new(&proto, &specs, None)?);
                if let Ok(mut c) = self.0.lock() {
                    c.insert(k, r.clone());
                }
                r
            }
        };
        let feeds: Vec<(String, Tensor)> = names.into_iter().zip(inputs.iter().cloned()).collect();
        runner
            .run(&feeds)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid(format!("{op} produced no output")))
    }
}

/// Tensors and parameters of a contrib node's inputs.
pub struct Inputs<'a> {
    pub get: &'a dyn Fn(usize) -> Result<Option<&'a Tensor>>,
}

impl Inputs<'_> {
    fn need(&self, slot: usize) -> Result<&Tensor> {
        (self.get)(slot)?.ok_or_else(|| Error::Invalid(format!("input {slot} is missing")))
    }

    /// Per-tensor (or per-column) parameters from slots `s`, `z`.
    fn params(&self, s: usize, z: usize, dt: DataType) -> Result<(Params, DataType)> {
        let scale = self.need(s)?.to_f32_vec()?;
        let (zp, dt) = match (self.get)(z)? {
            Some(t) => (Ints::from_tensor(t, "zero_point")?.data, t.dtype()),
            None => (vec![0; scale.len().max(1)], dt),
        };
        Ok((Params::new(scale, zp, "scale")?, dt))
    }

    /// Dequantized input `x` with parameters at `s`, `z`.
    fn dequantized(&self, x: usize, s: usize, z: usize) -> Result<(Tensor, DataType)> {
        let q = Ints::from_tensor(self.need(x)?, "x")?;
        let (p, _) = self.params(s, z, q.dtype)?;
        if p.scale.len() != 1 {
            return Err(Error::Invalid(
                "per-axis parameters are not supported here".into(),
            ));
        }
        let f = kernels::dequantize_linear(&q, &p, 0)?;
        Ok((Tensor::from_f32(q.dims.clone(), &f), q.dtype))
    }
}

fn quantized(y: &Tensor, p: &Params, dt: DataType) -> Result<Tensor> {
    Ok(kernels::quantize_linear(&y.to_f32_vec()?, y.dims(), p, 0, dt)?.to_tensor())
}

/// Runs contrib node `n`.
pub fn run(
    n: &Node,
    ins: &Inputs,
    float_ops: &FloatOps,
    arith: Arith,
    stats: &mut AccStats,
) -> Result<Vec<Tensor>> {
    let key = format!("{}#{}", n.name, n.op_type);
    let unary = |op: &str, attrs: Vec<AttributeProto>| -> Result<Vec<Tensor>> {
        if n.get_int("channels_last")?.unwrap_or(0) != 0 {
            return Err(Error::Invalid("channels_last = 1 is not supported".into()));
        }
        let (x, dt) = ins.dequantized(0, 1, 2)?;
        let (yp, ydt) = ins.params(3, 4, dt)?;
        let yp = yp.scalar("Y_scale")?;
        let y = float_ops.run(&key, op, &attrs, &[x])?;
        Ok(vec![quantized(&y, &yp, ydt)?])
    };
    let keep = |skip: &[&str]| -> Vec<AttributeProto> {
        n.attrs
            .iter()
            .filter(|a| !skip.contains(&a.name()))
            .cloned()
            .collect()
    };
    match n.op_type.as_str() {
        "QLinearAdd" | "QLinearMul" => {
            let (a, dt) = ins.dequantized(0, 1, 2)?;
            let (b, _) = ins.dequantized(3, 4, 5)?;
            let (yp, ydt) = ins.params(6, 7, dt)?;
            let op = if n.op_type == "QLinearAdd" {
                "Add"
            } else {
                "Mul"
            };
            let y = float_ops.run(&key, op, &[], &[a, b])?;
            Ok(vec![quantized(&y, &yp, ydt)?])
        }
        "QLinearSigmoid" => unary("Sigmoid", vec![]),
        "QLinearLeakyRelu" => unary("LeakyRelu", keep(&[])),
        "QLinearGlobalAveragePool" => unary("GlobalAveragePool", vec![]),
        "QLinearAveragePool" => unary("AveragePool", keep(&["channels_last"])),
        "QLinearConcat" => {
            let (yp, ydt) = ins.params(0, 1, DataType::Uint8)?;
            let mut xs = Vec::new();
            let mut slot = 2;
            while (ins.get)(slot)?.is_some() {
                xs.push(ins.dequantized(slot, slot + 1, slot + 2)?.0);
                slot += 3;
            }
            let y = float_ops.run(&key, "Concat", &keep(&[]), &xs)?;
            Ok(vec![quantized(&y, &yp, ydt)?])
        }
        "QGemm" => qgemm(n, ins, arith, stats),
        other => Err(Error::Invalid(format!(
            "com.microsoft.{other} is not supported"
        ))),
    }
}

fn transposed(t: &Ints) -> Ints {
    let (r, c) = (t.dims[0], t.dims[1]);
    let mut data = vec![0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    Ints {
        dtype: t.dtype,
        dims: vec![c, r],
        data,
    }
}

fn qgemm(n: &Node, ins: &Inputs, arith: Arith, stats: &mut AccStats) -> Result<Vec<Tensor>> {
    let mut a = Ints::from_tensor(ins.need(0)?, "A")?;
    let (ap, _) = ins.params(1, 2, a.dtype)?;
    let mut b = Ints::from_tensor(ins.need(3)?, "B")?;
    let (bp, _) = ins.params(4, 5, b.dtype)?;
    if a.dims.len() != 2 || b.dims.len() != 2 {
        return Err(Error::Invalid("QGemm takes 2-D A and B".into()));
    }
    if n.get_int("transA")?.unwrap_or(0) != 0 {
        a = transposed(&a);
    }
    if n.get_int("transB")?.unwrap_or(0) != 0 {
        b = transposed(&b);
    }
    let alpha = n.get_float("alpha")?.unwrap_or(1.0);
    let ap = ap.scalar("a_scale")?;
    let mb = kernels::MatB::new(&b, &bp.zero_point)?;
    let cols = mb.cols();
    let (acc, dims) = kernels::matmul_acc(&a, ap.zero_point[0], &mb)?;
    let bp = bp.for_channels(cols, "b_scale")?;
    let bias = (ins.get)(6)?
        .map(|t| Ints::from_tensor(t, "C"))
        .transpose()?;
    let with_bias: Vec<i64> = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = match &bias {
                None => 0,
                Some(c) if c.data.len() == 1 => c.data[0] as i64,
                Some(c) if c.data.len() == cols => c.data[i % cols] as i64,
                Some(c) => c.data.get(i).copied().unwrap_or(0) as i64,
            };
            v + c
        })
        .collect();
    match (ins.get)(7)? {
        Some(_) => {
            let (yp, ydt) = ins.params(7, 8, DataType::Uint8)?;
            let yp = yp.scalar("y_scale")?;
            let data = kernels::requantize(
                &with_bias,
                ap.scale[0] * alpha,
                &bp,
                &yp,
                ydt,
                arith,
                stats,
                |i| i % cols.max(1),
            );
            Ok(vec![Ints {
                dtype: ydt,
                dims,
                data,
            }
            .to_tensor()])
        }
        None => {
            let f: Vec<f32> = with_bias
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f32 * alpha * ap.scale[0] * bp.at(i % cols.max(1)).0)
                .collect();
            Ok(vec![Tensor::from_f32(dims, &f)])
        }
    }
}
