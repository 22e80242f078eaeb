//! Executor kernel throughput: single-op QLinearConv / QLinearMatMul models
//! of real-model sizes, run by onnxq's int8 executor and by tract.
//!
//! `cargo bench --bench kernels` (criterion). Every case's model and input
//! are also written to `target/bench-kernels/<case>.onnx` and `<case>/0000.npz`, so
//! `tools/bench/kernels.py` times onnxruntime on exactly the same models
//! and prints the three side by side (reading criterion's estimates).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onnxq::exec::{kernels::Arith, Executor};
use onnxq::ir::{DataType, Model, Tensor};
use onnxq::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto,
};
use onnxq::onnx::tensor::tensor_to_proto;
use onnxq::onnx::value_info;
use onnxq::tract::Runner;
use std::path::PathBuf;

/// The allocator the CLI uses (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 255) as i8).collect()
    }
}

/// One benchmark case: a single-op model, its input, and its MAC count.
struct Case {
    name: &'static str,
    model: ModelProto,
    input: Tensor,
    macs: u64,
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn single_op(
    op: NodeProto,
    x: &Tensor,
    inits: Vec<(&str, Tensor)>,
    y_dims: &[usize],
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            name: Some("bench".into()),
            input: vec![value_info("x", x.dtype(), x.dims())],
            output: vec![value_info("y", DataType::Uint8, y_dims)],
            node: vec![op],
            initializer: inits.iter().map(|(n, t)| tensor_to_proto(n, t)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// u8 activations, s8 per-channel weights (what `onnxq quantize` emits),
/// int32 bias.
fn conv(
    name: &'static str,
    (c, h, w): (usize, usize, usize),
    (m, k, stride, group): (usize, usize, usize, usize),
    rng: &mut Rng,
) -> Case {
    let cg = c / group;
    let pad = (k / 2) as i64;
    let (oh, ow) = (
        (h + 2 * (k / 2) - k) / stride + 1,
        (w + 2 * (k / 2) - k) / stride + 1,
    );
    let x = Tensor::from_u8(vec![1, c, h, w], &rng.u8s(c * h * w));
    let ws: Vec<f32> = (0..m).map(|i| 0.002 + 0.00001 * i as f32).collect();
    let ys = 0.02 * 0.002 * (cg * k * k) as f32;
    let bias: Vec<i32> = (0..m as i32).map(|i| i * 37 - 500).collect();
    let inits = vec![
        ("xs", Tensor::from_f32(vec![], &[0.02])),
        ("xz", Tensor::from_u8(vec![], &[128])),
        (
            "w",
            Tensor::from_i8(vec![m, cg, k, k], &rng.i8s(m * cg * k * k)),
        ),
        ("ws", Tensor::from_f32(vec![m], &ws)),
        ("wz", Tensor::from_i8(vec![m], &vec![0; m])),
        ("ys", Tensor::from_f32(vec![], &[ys])),
        ("yz", Tensor::from_u8(vec![], &[128])),
        ("b", Tensor::from_i32(vec![m], &bias)),
    ];
    let node = NodeProto {
        name: Some("conv".into()),
        op_type: Some("QLinearConv".into()),
        input: ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
            .map(String::from)
            .to_vec(),
        output: vec!["y".into()],
        attribute: vec![
            ints("kernel_shape", &[k as i64, k as i64]),
            ints("pads", &[pad, pad, pad, pad]),
            ints("strides", &[stride as i64, stride as i64]),
            int("group", group as i64),
        ],
        ..Default::default()
    };
    let macs = (m * oh * ow * cg * k * k) as u64;
    Case {
        name,
        model: single_op(node, &x, inits, &[1, m, oh, ow]),
        input: x,
        macs,
    }
}

/// `[rows, k] × [k, n]`, u8 × s8 per column.
fn matmul(name: &'static str, rows: usize, k: usize, n: usize, rng: &mut Rng) -> Case {
    let x = Tensor::from_u8(vec![rows, k], &rng.u8s(rows * k));
    let bs: Vec<f32> = (0..n).map(|i| 0.002 + 0.00001 * i as f32).collect();
    let inits = vec![
        ("as", Tensor::from_f32(vec![], &[0.02])),
        ("az", Tensor::from_u8(vec![], &[128])),
        ("b", Tensor::from_i8(vec![k, n], &rng.i8s(k * n))),
        ("bs", Tensor::from_f32(vec![n], &bs)),
        ("bz", Tensor::from_i8(vec![n], &vec![0; n])),
        ("ys", Tensor::from_f32(vec![], &[0.02 * 0.002 * k as f32])),
        ("yz", Tensor::from_u8(vec![], &[128])),
    ];
    let node = NodeProto {
        name: Some("matmul".into()),
        op_type: Some("QLinearMatMul".into()),
        input: ["x", "as", "az", "b", "bs", "bz", "ys", "yz"]
            .map(String::from)
            .to_vec(),
        output: vec!["y".into()],
        ..Default::default()
    };
    Case {
        name,
        model: single_op(node, &x, inits, &[rows, n]),
        input: x,
        macs: (rows * k * n) as u64,
    }
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    vec![
        // ResNet-50 stage 1: 3×3, 64 → 64 at 56×56.
        conv("conv3x3_64x56x56", (64, 56, 56), (64, 3, 1, 1), &mut rng),
        // ResNet-50 stage 3 bottleneck: 1×1, 512 → 128 at 28×28.
        conv(
            "conv1x1_512to128x28x28",
            (512, 28, 28),
            (128, 1, 1, 1),
            &mut rng,
        ),
        // Stem-like strided 3×3 with 3 input channels.
        conv(
            "conv3x3s2_3to32x224",
            (3, 224, 224),
            (32, 3, 2, 1),
            &mut rng,
        ),
        // MobileNet depthwise 3×3, 144 channels at 56×56.
        conv(
            "dwconv3x3_144x56x56",
            (144, 56, 56),
            (144, 3, 1, 144),
            &mut rng,
        ),
        // BERT-base projection, sequence 128.
        matmul("matmul_128x768x768", 128, 768, 768, &mut rng),
        // Classifier head, batch 1.
        matmul("matmul_1x2048x1000", 1, 2048, 1000, &mut rng),
    ]
}

fn dump(case: &Case, dir: &std::path::Path) -> std::io::Result<()> {
    use prost::Message;
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(format!("{}.onnx", case.name)),
        case.model.encode_to_vec(),
    )?;
    // A folder of one sample, as `onnxq run --data` reads it.
    let samples = dir.join(case.name);
    std::fs::create_dir_all(&samples)?;
    let arrays = vec![("x".to_string(), case.input.clone())];
    onnxq::calibrate::samples::write_npz(&samples.join("0000.npz"), &arrays)
        .map_err(std::io::Error::other)
}

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-kernels");
    for case in cases() {
        if let Err(e) = dump(&case, &dir) {
            eprintln!("could not write {}: {e}", case.name);
        }
        let model = Model::from_proto(&case.model).expect("bench model is valid");
        let exec = Executor::new(&model, Arith::Ort, &[]).expect("executor plans");
        let inputs = vec![("x".to_string(), case.input.clone())];
        let specs = vec![(
            "x".to_string(),
            case.input.dtype(),
            case.input.dims().to_vec(),
        )];
        let tract = Runner::new(&case.model, &specs, None).expect("tract plans");
        // Same result from both engines before timing anything.
        let ours = exec.run(&inputs).expect("executor runs").0;
        let theirs = tract.run(&inputs).expect("tract runs");
        let (a, b) = (
            ours["y"].to_i64_vec().unwrap_or_default(),
            theirs[0].to_i64_vec().unwrap_or_default(),
        );
        let differ = a.iter().zip(&b).filter(|(p, q)| p != q).count();
        if a.len() != b.len() || differ > 0 {
            eprintln!(
                "{}: executor and tract differ in {differ} of {} elements",
                case.name,
                a.len()
            );
        }
        let mut group = c.benchmark_group(case.name);
        group.throughput(Throughput::Elements(case.macs));
        group.sample_size(20);
        group.bench_function("onnxq", |b| b.iter(|| exec.run(&inputs).expect("runs")));
        group.bench_function("tract", |b| b.iter(|| tract.run(&inputs).expect("runs")));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
