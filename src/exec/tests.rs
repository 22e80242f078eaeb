//! Bit-exactness of the integer kernels against tract (which computes
//! QLinearConv/QLinearMatMul as onnxruntime does, NOTES.md), on random
//! single-op models: u8s8, s8s8, u8u8; per tensor and per channel; with and
//! without bias; odd shapes, groups, pads, strides, dilations.

use super::kernels::Arith;
use super::Executor;
use crate::ir::node::attr;
use crate::ir::{DataType, Model, Tensor};
use crate::onnx::proto::AttributeProto;
use crate::passes::testutil::{model, node};
use crate::tract::Runner;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (self.next() % 10_000) as f32 / 10_000.0 * (hi - lo)
    }
}

fn ints(dt: DataType, dims: Vec<usize>, rng: &mut Rng) -> Tensor {
    let n: usize = dims.iter().product();
    match dt {
        DataType::Uint8 => {
            let v: Vec<u8> = (0..n).map(|_| rng.int(0, 255) as u8).collect();
            Tensor::from_u8(dims, &v)
        }
        _ => {
            let v: Vec<i8> = (0..n).map(|_| rng.int(-128, 127) as i8).collect();
            Tensor::from_i8(dims, &v)
        }
    }
}

fn zp(dt: DataType, n: usize, rng: &mut Rng, scalar: bool) -> Tensor {
    let dims = if scalar { vec![] } else { vec![n] };
    // onnxruntime wants equal per-channel weight zero points.
    let z = match dt {
        DataType::Uint8 => rng.int(0, 255),
        _ => rng.int(-20, 20),
    };
    match dt {
        DataType::Uint8 => Tensor::from_u8(dims, &vec![z as u8; n]),
        _ => Tensor::from_i8(dims, &vec![z as i8; n]),
    }
}

fn scales(n: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.f(lo, hi)).collect()
}

/// Runs `m` (input `x` only) in tract and in the executor; asserts equal.
fn assert_bit_exact(m: &Model, x: Tensor, what: &str) {
    let inputs = vec![("x".to_string(), x.clone())];
    let specs = vec![("x".to_string(), x.dtype(), x.dims().to_vec())];
    let want = Runner::new(&m.to_proto().unwrap(), &specs, None)
        .unwrap()
        .run(&inputs)
        .unwrap();
    let exec = Executor::new(m, Arith::Ort, &[]).unwrap();
    let (got, _) = exec.run(&inputs).unwrap();
    let got = &got["y"];
    assert_eq!(got.dims(), want[0].dims(), "{what}");
    assert_eq!(got.dtype(), want[0].dtype(), "{what}");
    let (a, b) = (got.to_i64_vec().unwrap(), want[0].to_i64_vec().unwrap());
    let diff = a.iter().zip(&b).filter(|(p, q)| p != q).count();
    assert_eq!(diff, 0, "{what}: {diff} of {} elements differ", a.len());
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    rng: &mut Rng,
    xdt: DataType,
    wdt: DataType,
    per_channel: bool,
    bias: bool,
    (n, c, h, w): (usize, usize, usize, usize),
    (m, k, group): (usize, usize, usize),
    attrs: Vec<AttributeProto>,
) {
    let cg = c / group;
    let kk = cg * k * k;
    let xs = rng.f(0.005, 0.05);
    let ws = scales(if per_channel { m } else { 1 }, rng, 0.001, 0.02);
    // y_scale near the accumulator's typical magnitude.
    let ys = xs * ws[0] * (kk as f32).sqrt() * 40.0;
    let mut inits = vec![
        ("xs", Tensor::from_f32(vec![], &[xs])),
        ("xz", zp(xdt, 1, rng, true)),
        ("w", ints(wdt, vec![m, cg, k, k], rng)),
        (
            "ws",
            Tensor::from_f32(if per_channel { vec![m] } else { vec![] }, &ws),
        ),
        ("wz", zp(wdt, ws.len(), rng, !per_channel)),
        ("ys", Tensor::from_f32(vec![], &[ys])),
        ("yz", zp(xdt, 1, rng, true)),
    ];
    let mut ins = vec!["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"];
    if bias {
        let b: Vec<i32> = (0..m).map(|_| rng.int(-30_000, 30_000)).collect();
        inits.push(("b", Tensor::from_i32(vec![m], &b)));
        ins.push("b");
    }
    let mut attrs = attrs;
    attrs.push(attr::int("group", group as i64));
    let nodes = vec![node("QLinearConv", "conv", &ins, &["y"], attrs)];
    let x = ints(xdt, vec![n, c, h, w], rng);
    let mdl = model(10, &[("x", &[1])], &["y"], nodes, inits);
    let what = format!(
        "conv {xdt:?}×{wdt:?} pc={per_channel} bias={bias} x={:?} m={m} k={k} g={group}",
        x.dims()
    );
    assert_bit_exact(&with_input(mdl, &x), x, &what);
}

/// `m` with graph input `x` declared like `t`.
fn with_input(m: Model, t: &Tensor) -> Model {
    let mut p = m.to_proto().unwrap();
    let g = p.graph.as_mut().unwrap();
    let mut v =
        crate::passes::testutil::vi("x", &t.dims().iter().map(|&d| d as i64).collect::<Vec<_>>());
    if let Some(crate::onnx::proto::type_proto::Value::TensorType(tt)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        tt.elem_type = Some(t.dtype().code());
    }
    g.input = vec![v];
    Model::from_proto(&p).unwrap()
}

#[test]
fn qlinearconv_matches_tract_bit_for_bit() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    use DataType::{Int8 as S8, Uint8 as U8};
    for (xdt, wdt) in [(U8, S8), (S8, S8), (U8, U8)] {
        for per_channel in [false, true] {
            for bias in [false, true] {
                conv_case(
                    &mut rng,
                    xdt,
                    wdt,
                    per_channel,
                    bias,
                    (1, 3, 7, 5),
                    (4, 3, 1),
                    vec![],
                );
            }
        }
        // Per-channel weights with a bias, one case per kernel path:
        // (input [n, c, h, w], (m, k, group), attributes).
        let cases = [
            // Odd shapes, pads, strides, dilations, groups, batch 2.
            (
                (2, 4, 9, 11),
                (6, 3, 2),
                vec![
                    attr::ints("pads", &[1, 2, 0, 1]),
                    attr::ints("strides", &[2, 1]),
                    attr::ints("dilations", &[1, 2]),
                ],
            ),
            // Wide groups (GEMM path: several MR-row blocks, partial panels).
            (
                (1, 16, 13, 17),
                (22, 3, 2),
                vec![attr::ints("pads", &[1, 1, 1, 1])],
            ),
            // Depthwise, channel multiplier 2, stride 1, dilation and
            // uneven pads (the direct depthwise kernel), batch 2.
            (
                (2, 3, 9, 10),
                (6, 3, 3),
                vec![
                    attr::ints("pads", &[2, 1, 0, 1]),
                    attr::ints("dilations", &[2, 1]),
                ],
            ),
            // Depthwise over rows wider than one register block (several
            // blocks and a partial one), stride 1 and 2, pads wider than
            // the kernel's reach on one side.
            (
                (1, 4, 6, 41),
                (4, 3, 4),
                vec![
                    attr::ints("pads", &[1, 4, 3, 1]),
                    attr::ints("strides", &[1, 1]),
                ],
            ),
            (
                (1, 4, 6, 41),
                (4, 3, 4),
                vec![
                    attr::ints("pads", &[1, 4, 3, 1]),
                    attr::ints("strides", &[1, 2]),
                ],
            ),
            // Depthwise with SAME_UPPER.
            (
                (1, 5, 8, 7),
                (5, 3, 5),
                vec![
                    attr::string("auto_pad", "SAME_UPPER"),
                    attr::ints("strides", &[2, 2]),
                ],
            ),
        ];
        for (x, w, attrs) in cases {
            conv_case(&mut rng, xdt, wdt, true, true, x, w, attrs);
        }
    }
}

fn matmul_case(
    rng: &mut Rng,
    adt: DataType,
    bdt: DataType,
    per_column: bool,
    a_dims: Vec<usize>,
    k: usize,
    n: usize,
) {
    let mut as_ = rng.f(0.005, 0.05);
    let mut bs = scales(if per_column { n } else { 1 }, rng, 0.001, 0.02);
    let mut ys = as_ * bs[0] * (k as f32).sqrt() * 40.0;
    if a_dims[0] == 64 {
        // Power-of-two scales: the multiplier is exactly 1/4096, so every
        // accumulator ≡ 2048 (mod 4096) is a tie and rounding to even is
        // tested for real.
        (as_, ys) = (1.0 / 64.0, 1.0);
        bs = vec![1.0 / 64.0; bs.len()];
    }
    let inits = vec![
        ("as", Tensor::from_f32(vec![], &[as_])),
        ("az", zp(adt, 1, rng, true)),
        ("b", ints(bdt, vec![k, n], rng)),
        (
            "bs",
            Tensor::from_f32(if per_column { vec![n] } else { vec![] }, &bs),
        ),
        ("bz", zp(bdt, bs.len(), rng, !per_column)),
        ("ys", Tensor::from_f32(vec![], &[ys])),
        ("yz", zp(adt, 1, rng, true)),
    ];
    let ins = ["x", "as", "az", "b", "bs", "bz", "ys", "yz"];
    let nodes = vec![node("QLinearMatMul", "mm", &ins, &["y"], vec![])];
    let mdl = model(10, &[("x", &[1])], &["y"], nodes, inits);
    let x = ints(adt, a_dims, rng);
    let what = format!(
        "matmul {adt:?}×{bdt:?} pc={per_column} a={:?} k={k} n={n}",
        x.dims()
    );
    assert_bit_exact(&with_input(mdl, &x), x, &what);
}

#[test]
fn qlinearmatmul_matches_tract_bit_for_bit() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    use DataType::{Int8 as S8, Uint8 as U8};
    for (adt, bdt) in [(U8, S8), (S8, S8), (U8, U8)] {
        for per_column in [false, true] {
            matmul_case(&mut rng, adt, bdt, per_column, vec![5, 7], 7, 3);
            matmul_case(&mut rng, adt, bdt, per_column, vec![2, 3, 13], 13, 9);
            matmul_case(&mut rng, adt, bdt, per_column, vec![64, 40], 40, 96);
        }
    }
}

#[test]
fn float_regions_and_integer_steps_compose() {
    // x → QuantizeLinear → DequantizeLinear → Relu (tract) → y.
    let inits = vec![
        ("s", Tensor::from_f32(vec![], &[0.1])),
        ("z", Tensor::from_u8(vec![], &[128])),
    ];
    let nodes = vec![
        node("QuantizeLinear", "q", &["x", "s", "z"], &["xq"], vec![]),
        node("DequantizeLinear", "dq", &["xq", "s", "z"], &["xd"], vec![]),
        node("Relu", "relu", &["xd"], &["y"], vec![]),
    ];
    let m = model(13, &[("x", &[4])], &["y"], nodes, inits);
    let exec = Executor::new(&m, Arith::Ort, &["xq".to_string()]).unwrap();
    let x = Tensor::from_f32(vec![4], &[-1.04, 0.05, 0.15, 30.0]);
    let (out, _) = exec.run(&[("x".into(), x)]).unwrap();
    // 0.05/0.1 = 0.5 rounds to even (0), 0.15/0.1 = 1.5 rounds to 2; 30
    // saturates at 255 - 128 = 127 steps.
    assert_eq!(out["xq"].to_i64_vec().unwrap(), [118, 128, 130, 255]);
    let y = out["y"].to_f32_vec().unwrap();
    assert_eq!(y, [0.0, 0.0, 0.2, 127.0 * 0.1]);
}

#[test]
fn a_shape_computed_in_another_region_reaches_reshape() {
    // Shape (region 1) → QuantizeLinear/DequantizeLinear (ours) → Reshape
    // (region 2) reading the shape: tract plans Reshape only with a constant
    // target shape, so small integer inputs are baked into the region.
    let inits = vec![
        ("s", Tensor::from_f32(vec![], &[0.1])),
        ("z", Tensor::from_u8(vec![], &[128])),
        ("flat", Tensor::from_i64(vec![1], &[-1])),
    ];
    let nodes = vec![
        node("Shape", "shape", &["x"], &["xs"], vec![]),
        node(
            "ReduceProd",
            "numel",
            &["xs"],
            &["n"],
            vec![attr::int("keepdims", 1)],
        ),
        node("QuantizeLinear", "q", &["x", "s", "z"], &["xq"], vec![]),
        node("DequantizeLinear", "dq", &["xq", "s", "z"], &["xd"], vec![]),
        node("Reshape", "reshape", &["xd", "n"], &["y"], vec![]),
    ];
    let m = model(13, &[("x", &[2, 3])], &["y"], nodes, inits);
    let exec = Executor::new(&m, Arith::Ort, &[]).unwrap();
    let x = Tensor::from_f32(vec![2, 3], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
    let (out, _) = exec.run(&[("x".into(), x)]).unwrap();
    assert_eq!(out["y"].dims(), &[6]);
}

#[test]
fn sixteen_bit_qdq_runs_here_and_its_emulation_in_tract_agrees() {
    // x → QuantizeLinear(uint16 | int16) → DequantizeLinear → y (opset 21).
    for (z, zero) in [
        (
            Tensor::from_ints(DataType::Uint16, vec![], &[30000]).unwrap(),
            30000i64,
        ),
        (
            Tensor::from_ints(DataType::Int16, vec![], &[-5]).unwrap(),
            -5,
        ),
    ] {
        let wide_u = z.dtype() == DataType::Uint16;
        let inits = vec![("s", Tensor::from_f32(vec![], &[0.001])), ("z", z)];
        let nodes = vec![
            node("QuantizeLinear", "q", &["x", "s", "z"], &["xq"], vec![]),
            node("DequantizeLinear", "dq", &["xq", "s", "z"], &["y"], vec![]),
        ];
        let m = model(21, &[("x", &[6])], &["y"], nodes, inits);
        let exec = Executor::new(&m, Arith::Exact, &["xq".to_string()]).unwrap();
        let xs = [-100.0f32, -0.0015, 0.0005, 0.0025, 12.3456, 100.0];
        let x = Tensor::from_f32(vec![6], &xs);
        let (out, _) = exec.run(&[("x".into(), x)]).unwrap();
        let q = out["xq"].to_i64_vec().unwrap();
        assert_eq!(
            out["xq"].dtype(),
            m.graph
                .initializer(m.graph.find_value("z").unwrap())
                .unwrap()
                .dtype()
        );
        // Half to even: −1.5 → −2, 0.5 → 0, 2.5 → 2; ±100 saturate.
        let (lo, hi) = if wide_u { (0, 65535) } else { (-32768, 32767) };
        let want: Vec<i64> = [-100000i64, -2, 0, 2, 12346, 100000]
            .iter()
            .map(|v| (v + zero).clamp(lo, hi))
            .collect();
        assert_eq!(q, want);
        // The float emulation tract runs gives the same numbers away from
        // exact ties (tract divides by a constant as a multiply by its
        // reciprocal, as its own 8-bit QuantizeLinear does).
        let x = Tensor::from_f32(
            vec![6],
            &[-100.0, -0.00162, 0.00037, 0.0026, 12.3456, 100.0],
        );
        let (out, _) = exec.run(&[("x".into(), x.clone())]).unwrap();
        let y = out["y"].to_f32_vec().unwrap();
        let emulated = crate::tune::wide::emulate_wide_qdq(&m).unwrap();
        let r = Runner::new(
            &emulated.to_proto().unwrap(),
            &[("x".into(), DataType::Float, vec![6])],
            None,
        )
        .unwrap();
        let got = r.run(&[("x".into(), x)]).unwrap();
        assert_eq!(got[0].to_f32_vec().unwrap(), y);
    }
}

/// Elementwise regions fed by a per-tensor DequantizeLinear run as byte
/// tables (HardSwish into a QuantizeLinear, SiLU into a float output),
/// bit for bit what the same regions give in tract on the whole tensor:
/// the second model adds a graph input (a zero) to each region, which
/// makes it a region of two inputs, run as it is.
#[test]
fn elementwise_regions_run_as_tables_bit_for_bit() {
    fn hardswish_and_silu(through_zero: bool) -> Model {
        let (d, d2) = if through_zero {
            ("dz", "d2z")
        } else {
            ("d", "d2")
        };
        let mut nodes = vec![
            node("QuantizeLinear", "q", &["x", "s", "z"], &["xq"], vec![]),
            node("DequantizeLinear", "dq", &["xq", "s", "z"], &["d"], vec![]),
            node(
                "DequantizeLinear",
                "dq2",
                &["xq", "s", "z"],
                &["d2"],
                vec![],
            ),
        ];
        if through_zero {
            nodes.push(node("Add", "z1", &["d", "zero"], &["dz"], vec![]));
            nodes.push(node("Add", "z2", &["d2", "zero"], &["d2z"], vec![]));
        }
        nodes.extend([
            node("Add", "a", &[d, "three"], &["a"], vec![]),
            node("Clip", "c", &["a", "lo", "hi"], &["c"], vec![]),
            node("Div", "v", &["c", "six"], &["v"], vec![]),
            node("Mul", "m", &[d, "v"], &["h"], vec![]),
            node("QuantizeLinear", "q2", &["h", "s2", "z2"], &["y"], vec![]),
            node("Sigmoid", "sg", &[d2], &["sg"], vec![]),
            node("Mul", "m2", &[d2, "sg"], &["y2"], vec![]),
        ]);
        let mut inputs: Vec<(&str, &[i64])> = vec![("x", &[1, 4, 9, 11])];
        if through_zero {
            inputs.push(("zero", &[1]));
        }
        let scalar = |v: f32| Tensor::from_f32(vec![], &[v]);
        model(
            13,
            &inputs,
            &["y", "y2"],
            nodes,
            vec![
                ("s", scalar(0.05)),
                ("z", Tensor::from_u8(vec![], &[131])),
                ("s2", scalar(0.03)),
                ("z2", Tensor::from_i8(vec![], &[-7])),
                ("three", scalar(3.0)),
                ("six", scalar(6.0)),
                ("lo", scalar(0.0)),
                ("hi", scalar(6.0)),
            ],
        )
    }
    let (tabled, plain) = (hardswish_and_silu(false), hardswish_and_silu(true));
    let a = Executor::new(&tabled, Arith::Ort, &[]).unwrap();
    let b = Executor::new(&plain, Arith::Ort, &[]).unwrap();
    assert_eq!((a.table_steps(), b.table_steps()), (2, 0));
    let mut rng = Rng(7);
    // Every level, and more.
    let xs: Vec<f32> = (0..4 * 9 * 11).map(|_| rng.f(-7.0, 7.0)).collect();
    let x = Tensor::from_f32(vec![1, 4, 9, 11], &xs);
    let (ga, _) = a.run(&[("x".into(), x.clone())]).unwrap();
    let zero = Tensor::from_f32(vec![1], &[0.0]);
    let (gb, _) = b.run(&[("x".into(), x), ("zero".into(), zero)]).unwrap();
    for out in ["y", "y2"] {
        assert_eq!(ga[out].dtype(), gb[out].dtype(), "{out}");
        assert_eq!(ga[out].dims(), gb[out].dims(), "{out}");
        assert_eq!(ga[out].raw(), gb[out].raw(), "{out}");
    }
    assert_eq!(ga["y"].dtype(), DataType::Int8);
    let levels: std::collections::BTreeSet<u8> = ga["y"].raw().unwrap().iter().copied().collect();
    assert!(levels.len() > 50, "{}", levels.len());
}

/// Regions of two 8-bit inputs (a residual Sum and its Relu into a
/// QuantizeLinear; an Add into a float output) run as 65,536-entry tables,
/// bit for bit what the same regions give in tract; with inputs of two
/// shapes (which broadcast) the tables step aside and the regions run.
#[test]
fn two_input_regions_run_as_tables_bit_for_bit() {
    fn residual(through_zero: bool, x2: &[i64]) -> Model {
        let mut nodes = vec![
            node("QuantizeLinear", "q1", &["x1", "s1", "z1"], &["q1"], vec![]),
            node("QuantizeLinear", "q2", &["x2", "s2", "z2"], &["q2"], vec![]),
            node(
                "DequantizeLinear",
                "dq1",
                &["q1", "s1", "z1"],
                &["d1"],
                vec![],
            ),
            node(
                "DequantizeLinear",
                "dq2",
                &["q2", "s2", "z2"],
                &["d2"],
                vec![],
            ),
            node(
                "DequantizeLinear",
                "dq1b",
                &["q1", "s1", "z1"],
                &["e1"],
                vec![],
            ),
            node(
                "DequantizeLinear",
                "dq2b",
                &["q2", "s2", "z2"],
                &["e2"],
                vec![],
            ),
        ];
        let d1 = if through_zero {
            nodes.push(node("Add", "z", &["d1", "zero"], &["d1z"], vec![]));
            nodes.push(node("Add", "zb", &["e1", "zero"], &["e1z"], vec![]));
            ("d1z", "e1z")
        } else {
            ("d1", "e1")
        };
        nodes.extend([
            node("Sum", "sum", &[d1.0, "d2"], &["r"], vec![]),
            node("Relu", "relu", &["r"], &["rr"], vec![]),
            node("QuantizeLinear", "q3", &["rr", "s3", "z3"], &["y"], vec![]),
            node("Sub", "sub", &[d1.1, "e2"], &["y2"], vec![]),
        ]);
        let mut inputs: Vec<(&str, &[i64])> = vec![("x1", &[1, 4, 9, 11]), ("x2", x2)];
        if through_zero {
            inputs.push(("zero", &[1]));
        }
        let scalar = |v: f32| Tensor::from_f32(vec![], &[v]);
        model(
            13,
            &inputs,
            &["y", "y2"],
            nodes,
            vec![
                ("s1", scalar(0.05)),
                ("z1", Tensor::from_u8(vec![], &[131])),
                ("s2", scalar(0.07)),
                ("z2", Tensor::from_i8(vec![], &[3])),
                ("s3", scalar(0.06)),
                ("z3", Tensor::from_i8(vec![], &[-100])),
            ],
        )
    }
    let mut rng = Rng(11);
    for x2 in [&[1i64, 4, 9, 11][..], &[1, 4, 1, 1]] {
        let (tabled, plain) = (residual(false, x2), residual(true, x2));
        let a = Executor::new(&tabled, Arith::Ort, &[]).unwrap();
        let b = Executor::new(&plain, Arith::Ort, &[]).unwrap();
        assert_eq!((a.table_steps(), b.table_steps()), (2, 0));
        let dims2: Vec<usize> = x2.iter().map(|&d| d as usize).collect();
        let n2: usize = dims2.iter().product();
        let x1: Vec<f32> = (0..4 * 9 * 11).map(|_| rng.f(-8.0, 8.0)).collect();
        let xs2: Vec<f32> = (0..n2).map(|_| rng.f(-9.0, 9.0)).collect();
        let feed = vec![
            ("x1".to_string(), Tensor::from_f32(vec![1, 4, 9, 11], &x1)),
            ("x2".to_string(), Tensor::from_f32(dims2, &xs2)),
        ];
        let (ga, _) = a.run(&feed).unwrap();
        let mut feed_b = feed.clone();
        feed_b.push(("zero".into(), Tensor::from_f32(vec![1], &[0.0])));
        let (gb, _) = b.run(&feed_b).unwrap();
        for out in ["y", "y2"] {
            assert_eq!(ga[out].dtype(), gb[out].dtype(), "{out}");
            assert_eq!(ga[out].dims(), gb[out].dims(), "{out}");
            assert_eq!(ga[out].raw(), gb[out].raw(), "{out} {x2:?}");
        }
        assert_eq!(ga["y"].dtype(), DataType::Int8);
        let levels: std::collections::BTreeSet<u8> =
            ga["y"].raw().unwrap().iter().copied().collect();
        assert!(levels.len() > 50, "{}", levels.len());
    }
}

/// `ids` → Gather of a float table (region 1) → Q/DQ (ours) → Relu
/// (region 2): token ids are data, not a shape, so they are not baked and
/// one plan serves every input of a shape.
fn embedding(table: f32) -> Model {
    let inits = vec![
        (
            "table",
            Tensor::from_f32(vec![4, 2], &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, table]),
        ),
        ("s", Tensor::from_f32(vec![], &[0.01])),
        ("z", Tensor::from_u8(vec![], &[128])),
    ];
    let nodes = vec![
        node("Gather", "g", &["table", "ids"], &["e"], vec![]),
        node("QuantizeLinear", "q", &["e", "s", "z"], &["eq"], vec![]),
        node("DequantizeLinear", "dq", &["eq", "s", "z"], &["ed"], vec![]),
        node("Relu", "relu", &["ed"], &["y"], vec![]),
    ];
    model(13, &[("ids", &[1, 3])], &["y"], nodes, inits)
}

/// Executors sharing [`super::RegionPlans`] plan a region once for all
/// of them; a region whose weight differs gets a plan of its own, and
/// the outputs are those of an executor planning alone.
#[test]
fn executors_share_the_plans_of_identical_regions() {
    let plans = std::sync::Arc::new(super::RegionPlans::new());
    let run = |m: &Model, ids: &[i64]| {
        let exec = Executor::new(m, Arith::Ort, &[])
            .unwrap()
            .sharing(plans.clone());
        let alone = Executor::new(m, Arith::Ort, &[]).unwrap();
        let feed = [("ids".to_string(), Tensor::from_i64(vec![1, 3], ids))];
        let (got, _) = exec.run(&feed).unwrap();
        let (want, _) = alone.run(&feed).unwrap();
        assert_eq!(got["y"], want["y"]);
        // Levels of 0.01 (the DequantizeLinear's float product).
        let levels: Vec<i64> = got["y"]
            .to_f32_vec()
            .unwrap()
            .iter()
            .map(|&v| (v / 0.01).round() as i64)
            .collect();
        assert_eq!(
            got["y"].to_f32_vec().unwrap(),
            levels.iter().map(|&l| l as f32 * 0.01).collect::<Vec<_>>()
        );
        levels
    };
    let (a, b) = (embedding(0.7), embedding(0.9));
    assert_eq!(run(&a, &[1, 2, 3]), [20, 30, 40, 50, 60, 70]);
    // The Gather region and the Relu region.
    assert_eq!(plans.len(), 2);
    // Other ids of the same shape, another executor of the same model.
    assert_eq!(run(&a, &[0, 0, 3]), [0, 10, 0, 10, 60, 70]);
    assert_eq!(plans.len(), 2);
    // Another table: its Gather region is planned anew, Relu's is shared.
    assert_eq!(run(&b, &[3, 3, 3]), [60, 90, 60, 90, 60, 90]);
    assert_eq!(plans.len(), 3);
}

/// Only the inputs whose values can reach a shape are baked: a target
/// shape through a Concat is, token ids and a tensor read only by Shape
/// are not.
#[test]
fn only_inputs_that_reach_a_shape_are_baked() {
    let inits = vec![
        ("table", Tensor::from_f32(vec![4, 2], &[0.0; 8])),
        ("two", Tensor::from_i64(vec![1], &[2])),
    ];
    let nodes = vec![
        node("Gather", "g", &["table", "ids"], &["e"], vec![]),
        node(
            "Concat",
            "c",
            &["head", "two"],
            &["shape"],
            vec![attr::int("axis", 0)],
        ),
        node("Reshape", "r", &["e", "shape"], &["y"], vec![]),
        node("Shape", "s", &["other"], &["os"], vec![]),
        node("Cast", "k", &["os"], &["y2"], vec![attr::int("to", 1)]),
    ];
    let m = model(
        13,
        &[("ids", &[1, 3]), ("head", &[1]), ("other", &[2])],
        &["y", "y2"],
        nodes,
        inits,
    );
    let g = &m.graph;
    let order = g.topo_order().unwrap();
    let reg = super::regions::region(g, order, &g.outputs().collect());
    let named: std::collections::BTreeSet<&str> =
        reg.shaping.iter().map(|&v| g.value_name(v)).collect();
    assert_eq!(named, ["head"].into());
}
