//! The executor's integer steps: each integer node's operands and
//! quantization parameters read from the values computed so far, its
//! constant weights prepared once, and its kernel ([`super::kernels`],
//! [`super::contrib`]) run.

use super::kernels::{self, AccStats, Ints, Params};
use super::{contrib, conv, is_contrib, Executor};
use crate::error::{Error, Result};
use crate::ir::{DataType, Graph, Node, NodeId, Tensor, ValueId};
use std::collections::HashMap;
use std::sync::Arc;

/// A node's constant weight operand, ready for the GEMM.
pub(super) enum Prepared {
    Conv(conv::ConvWeights),
    Mat(kernels::MatB),
}

impl Executor {
    /// The prepared weights of node `id`: built by `build` on first use and
    /// kept when `constant` (the operands are initializers), rebuilt every
    /// run otherwise.
    fn prepared(
        &self,
        id: NodeId,
        constant: bool,
        build: impl FnOnce() -> Result<Prepared>,
    ) -> Result<Arc<Prepared>> {
        if !constant {
            return Ok(Arc::new(build()?));
        }
        if let Some(p) = self.prepared.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(p);
        }
        let p = Arc::new(build()?);
        if let Ok(mut c) = self.prepared.lock() {
            c.insert(id, p.clone());
        }
        Ok(p)
    }

    pub(super) fn integer(
        &self,
        g: &Graph,
        id: NodeId,
        n: &Node,
        env: &HashMap<ValueId, Tensor>,
        stats: &mut AccStats,
    ) -> Result<Vec<Tensor>> {
        let get = |slot: usize| -> Result<Option<&Tensor>> {
            let Some(v) = n.input(slot) else {
                return Ok(None);
            };
            if let Some(t) = env.get(&v) {
                return Ok(Some(t));
            }
            g.initializer(v)
                .map(Some)
                .ok_or_else(|| Error::tensor(g.value_name(v), "value not computed"))
        };
        let need = |slot: usize| -> Result<&Tensor> {
            get(slot)?.ok_or_else(|| Error::Invalid(format!("input {slot} is missing")))
        };
        // An absent optional input or an initializer nobody fed at run time.
        let constant = |slot: usize| match n.input(slot) {
            None => true,
            Some(v) => !env.contains_key(&v) && g.initializer(v).is_some(),
        };

        let params = |s: usize, z: usize, dt_default: DataType| -> Result<(Params, DataType)> {
            let scale = need(s)?.to_f32_vec()?;
            let (zero_point, dt) = match get(z)? {
                Some(t) => (Ints::from_qdq_tensor(t, "zero_point")?.data, t.dtype()),
                None => (vec![0; scale.len().max(1)], dt_default),
            };
            Ok((Params::new(scale, zero_point, &n.name)?, dt))
        };
        let axis = |rank: usize| -> Result<usize> {
            let a = n.get_int("axis")?.unwrap_or(1);
            if rank == 0 {
                return Ok(0);
            }
            kernels::norm_axis(a, rank, &n.name)
        };
        let arith = self.arith;
        if is_contrib(n) {
            let ins = contrib::Inputs { get: &get };
            return contrib::run(n, &ins, &self.float_ops, arith, stats);
        }
        Ok(match n.op_type.as_str() {
            "QuantizeLinear" => {
                if n.attr("block_size").is_some() {
                    return Err(Error::Invalid(
                        "blocked quantization (block_size) is not supported".into(),
                    ));
                }
                let x = need(0)?;
                let mut out_dt = DataType::Uint8;
                let (p, dt) = params(1, 2, out_dt)?;
                out_dt = dt;
                if let Some(code) = n.get_int("output_dtype")?.filter(|&c| c != 0) {
                    out_dt = DataType::from_code(code as i32).unwrap_or(out_dt);
                }
                let a = if p.scale.len() > 1 {
                    axis(x.dims().len())?
                } else {
                    0
                };
                let owned;
                let xs = match x.as_f32_slice() {
                    Some(xs) => xs,
                    None => {
                        owned = x.to_f32_vec()?;
                        &owned
                    }
                };
                match kernels::quantize_to_bytes(xs, x.dims(), &p, a, out_dt)? {
                    Some(y) => vec![y],
                    None => {
                        vec![kernels::quantize_linear(xs, x.dims(), &p, a, out_dt)?.to_tensor()]
                    }
                }
            }
            "DequantizeLinear" => {
                let t = need(0)?;
                let (p, _) = params(1, 2, t.dtype())?;
                let a = if p.scale.len() > 1 {
                    axis(t.dims().len())?
                } else {
                    0
                };
                let y = kernels::dequantize_tensor(t, &p, a)?;
                vec![Tensor::from_f32(t.dims().to_vec(), &y)]
            }
            "QLinearMatMul" => {
                let a = need(0)?;
                Ints::check_dtype(a, "a")?;
                let (ap, _) = params(1, 2, a.dtype())?;
                let b = need(3)?;
                let (bp, _) = params(4, 5, b.dtype())?;
                let mb = self.prepared(id, constant(3) && constant(5), || {
                    let b = Ints::from_tensor(b, "b")?;
                    Ok(Prepared::Mat(kernels::MatB::new(&b, &bp.zero_point)?))
                })?;
                let Prepared::Mat(mb) = &*mb else {
                    return Err(Error::Invalid("prepared weights of another kind".into()));
                };
                let (yp, ydt) = params(6, 7, DataType::Uint8)?;
                vec![kernels::qlinear_matmul(
                    a, &ap, mb, &bp, &yp, ydt, arith, stats,
                )?]
            }
            "MatMulInteger" => {
                let a = need(0)?;
                Ints::check_dtype(a, "A")?;
                let az = match get(2)? {
                    Some(t) => Ints::from_tensor(t, "a_zero_point")?.data,
                    None => vec![0],
                };
                if az.len() != 1 {
                    return Err(Error::Invalid(
                        "per-row a_zero_point is not supported".into(),
                    ));
                }
                let mb = self.prepared(id, constant(1) && constant(3), || {
                    let b = Ints::from_tensor(need(1)?, "B")?;
                    let bz = match get(3)? {
                        Some(t) => Ints::from_tensor(t, "b_zero_point")?.data,
                        None => vec![0],
                    };
                    Ok(Prepared::Mat(kernels::MatB::new(&b, &bz)?))
                })?;
                let Prepared::Mat(mb) = &*mb else {
                    return Err(Error::Invalid("prepared weights of another kind".into()));
                };
                // int32 accumulators (wrapping beyond i32, as a 32-bit
                // accumulator would).
                let (v, dims) = kernels::matmul_map(
                    a.dims(),
                    &kernels::centred_tensor(a, az[0], "A")?,
                    mb,
                    |_, acc, out| acc.write_i32(0, out),
                )?;
                vec![Tensor::from_i32(dims, &v)]
            }
            "QLinearConv" | "ConvInteger" => {
                let qlinear = n.op_type == "QLinearConv";
                let (xi, wi, wzi) = if qlinear { (0, 3, 5) } else { (0, 1, 3) };
                let xt = need(xi)?;
                Ints::check_dtype(xt, "x")?;
                let (x_dtype, x_dims) = (xt.dtype(), xt.dims().to_vec());
                let wt = need(wi)?;
                let m = wt.dims().first().copied().unwrap_or(0);
                let zero_points = |s: usize| -> Result<Vec<i32>> {
                    Ok(match get(s)? {
                        Some(t) => Ints::from_tensor(t, "zero_point")?.data,
                        None => vec![0],
                    })
                };
                let (xp, wp) = if qlinear {
                    (
                        params(1, 2, x_dtype)?.0.scalar("x_scale")?,
                        params(4, 5, wt.dtype())?.0.for_channels(m, "w_scale")?,
                    )
                } else {
                    (
                        Params {
                            scale: vec![1.0],
                            zero_point: zero_points(2)?,
                        },
                        Params {
                            scale: vec![1.0],
                            zero_point: zero_points(3)?,
                        },
                    )
                };
                if x_dims.len() < 3 || wt.dims().len() != x_dims.len() {
                    return Err(Error::Invalid(format!(
                        "input {:?} and weight {:?} do not make a convolution",
                        x_dims,
                        wt.dims()
                    )));
                }
                let kernel: Vec<usize> = match n.get_ints("kernel_shape")? {
                    Some(k) => k.iter().map(|&v| v.max(1) as usize).collect(),
                    None => wt.dims()[2..].to_vec(),
                };
                let group = n.get_int("group")?.unwrap_or(1).max(1) as usize;
                let auto_pad = n.get_string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
                let geom = conv::conv_geom(
                    &x_dims[2..],
                    &kernel,
                    n.get_ints("strides")?,
                    n.get_ints("dilations")?,
                    n.get_ints("pads")?,
                    &auto_pad,
                    group,
                )?;
                let bias = if qlinear {
                    get(8)?.map(|t| Ints::from_tensor(t, "B")).transpose()?
                } else {
                    None
                };
                let cw = self.prepared(id, constant(wi) && constant(wzi), || {
                    let w = Ints::from_tensor(wt, "w")?;
                    Ok(Prepared::Conv(conv::ConvWeights::new(
                        &w,
                        &wp.zero_point,
                        group,
                    )?))
                })?;
                let Prepared::Conv(cw) = &*cw else {
                    return Err(Error::Invalid("prepared weights of another kind".into()));
                };
                let xc = kernels::centred_tensor(xt, xp.zero_point[0], "x")?;
                let bias = bias.as_ref().map(|b| b.data.as_slice());
                let mut dims = vec![x_dims[0], m];
                dims.extend(&geom.out);
                if qlinear {
                    let (yp, ydt) = params(6, 7, DataType::Uint8)?;
                    let yp = yp.scalar("y_scale")?;
                    let rq = kernels::Requantizer::new(xp.scale[0], &wp, &yp, ydt, arith);
                    let y = if matches!(ydt, DataType::Uint8 | DataType::Int8) {
                        // 8-bit outputs written straight as the tensor's bytes.
                        let data: Vec<u8> =
                            conv::conv_map(&xc, &x_dims, cw, bias, &geom, |c, b, acc, out| {
                                rq.channel_run(c, b, acc, out)
                            })?;
                        Tensor::from_raw(ydt, dims, data.into())?
                    } else {
                        let data: Vec<i32> =
                            conv::conv_map(&xc, &x_dims, cw, bias, &geom, |c, b, acc, out| {
                                rq.channel_run(c, b, acc, out)
                            })?;
                        Ints {
                            dtype: ydt,
                            dims,
                            data,
                        }
                        .to_tensor()
                    };
                    stats.beyond_f32 += rq.beyond();
                    vec![y]
                } else {
                    // ConvInteger: int32 accumulators (wrapping beyond i32,
                    // as a 32-bit accumulator would).
                    let data = conv::conv_map(&xc, &x_dims, cw, bias, &geom, |_, b, acc, out| {
                        acc.write_i32(b, out)
                    })?;
                    vec![Tensor::from_i32(dims, &data)]
                }
            }
            "DynamicQuantizeLinear" => {
                let x = need(0)?;
                let (q, s, z) = kernels::dynamic_quantize_linear(&x.to_f32_vec()?, x.dims());
                vec![
                    q.to_tensor(),
                    Tensor::from_f32(vec![], &[s]),
                    Tensor::from_u8(vec![], &[z as u8]),
                ]
            }
            other => {
                return Err(Error::Invalid(format!(
                    "{other} is not an integer operator"
                )))
            }
        })
    }
}
