//! Hostile inputs that crashed, aborted or hung onnxq before the schema
//! checks and the tract guard (issue #29): every command refuses each with
//! exit code 1, one terminal-safe line naming the node or file, nothing
//! written, in bounded time and memory.

use crate::common::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// (file under testdata/bad/hostile, words the error must contain)
const CASES: &[(&str, &[&str])] = &[
    (
        "transpose_perm.onnx",
        &["node 'tr' (Transpose)", "'perm'", "4294967296"],
    ),
    (
        "transpose_perm_repeat.onnx",
        &["'perm': expected a permutation of 0..4", "[0, 1, 1, 2]"],
    ),
    ("conv_pads_rank.onnx", &["node 'conv' (Conv)", "'pads'"]),
    ("conv_stride_zero.onnx", &["'strides'", "[0, 1]"]),
    ("conv_group_zero.onnx", &["'group'", "found 0"]),
    ("conv_group_channels.onnx", &["'group'", "found 2"]),
    ("conv_kernel_rank.onnx", &["'kernel_shape'", "[3]"]),
    (
        "maxpool_no_kernel.onnx",
        &["node 'pool' (MaxPool)", "absent"],
    ),
    (
        "constant_of_shape_huge.onnx",
        &["node 'cos' (ConstantOfShape)", "137438953472"],
    ),
    ("expand_huge.onnx", &["node 'expand' (Expand)", "elements"]),
    (
        "batchnorm_rank1.onnx",
        &["node 'bn' (BatchNormalization)", "rank 1"],
    ),
    (
        "layernorm_axis.onnx",
        &["node 'ln' (LayerNormalization)", "found -9"],
    ),
    ("softmax_axis.onnx", &["node 'sm' (Softmax)", "found 7"]),
    (
        "control_bytes.onnx",
        &["add\\u{7}\\nnext line", "gh\\u{1b}[31mo\\nst"],
    ),
];

/// The commands that reach tract, with their arguments around the model.
fn commands(model: &str, out: &Path) -> Vec<Vec<String>> {
    let o = out.join("out.onnx").display().to_string();
    let dir = out.join("run").display().to_string();
    let m = model.to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        s(&["optimize", &m, "-o", &o]),
        s(&["quantize", &m, "-o", &o, "--calib", "random:1"]),
        s(&["calibrate", &m, "--calib", "random:1", "-o", &o]),
        s(&["check", &m, "--reference", &m, "--data", "random:1"]),
        s(&["run", &m, "--data", "random:1", "-o", &dir]),
    ]
}

/// Asserts a clean refusal: exit 1, one `error:` line, no panic, no file.
fn assert_refused(b: &Bounded, what: &str, words: &[&str], out: &Path) {
    assert!(!b.timed_out, "{what}: still running after the limit");
    assert_eq!(b.signal, None, "{what}: killed by a signal: {}", b.stderr);
    assert_eq!(b.code, Some(1), "{what}: {}", b.stderr);
    let err = b.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        !err.chars().any(|c| c.is_control()),
        "{what}: raw control characters: {err:?}"
    );
    for w in words {
        assert!(err.contains(w), "{what}: expected '{w}' in: {err}");
    }
    assert!(
        b.max_rss_kib < 4 << 20,
        "{what}: peak RSS {} KiB",
        b.max_rss_kib
    );
    let left: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".stderr")
        .collect();
    assert!(left.is_empty(), "{what}: wrote {left:?}");
}

#[test]
fn hostile_models_are_refused_by_every_command() {
    for (file, words) in CASES {
        let path = testdata(&format!("bad/hostile/{file}"));
        let path = path.to_str().unwrap();
        let out = tempdir();
        for args in commands(path, out.path()) {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let b = onnxq_bounded(&refs, out.path(), Duration::from_secs(60));
            assert_refused(&b, &format!("{} {file}", args[0]), words, out.path());
        }
    }
}

/// An `.npy` stream: numpy's header for `shape` float32, then `payload`.
fn npy(shape: &str, payload: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(payload);
    v
}

/// Writes a one-array `.npz` (`deflate`: compressed) at `path`, the
/// payload streamed in 1 MiB pieces of zeros after the header.
fn npz(path: &Path, array: &str, shape: &str, zeros: usize, deflate: bool) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::FileOptions::default()
        .compression_method(method)
        .large_file(zeros > u32::MAX as usize / 2);
    z.start_file(format!("{array}.npy"), opts).unwrap();
    z.write_all(&npy(shape, &[])).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        z.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    z.finish().unwrap();
}

#[test]
fn npz_headers_that_lie_are_refused_unread() {
    let model = testdata("digits/cnn.onnx");
    let model = model.to_str().unwrap();
    // (2^38, 4) float32 declared, 64 bytes present: was an abort in the
    // allocator (4 TiB).
    let lying = tempdir();
    let calib = lying.path().join("calib");
    std::fs::create_dir(&calib).unwrap();
    npz(
        &calib.join("0000.npz"),
        "image",
        "(274877906944, 4)",
        64,
        false,
    );
    let out = tempdir();
    let b = onnxq_bounded(
        &[
            "calibrate",
            model,
            "--calib",
            calib.to_str().unwrap(),
            "-o",
            "t.json",
        ],
        out.path(),
        Duration::from_secs(60),
    );
    assert_refused(
        &b,
        "lying header",
        &["0000.npz", "array 'image'", "the file holds"],
        out.path(),
    );
    // 256 MiB of zeros, deflated to a few hundred KiB, of a shape the model
    // cannot take: refused from its header, before it is inflated.
    let bomb = tempdir();
    let stacked = bomb.path().join("bomb.npz");
    npz(&stacked, "image", "(1, 1, 1, 8192, 8192)", 256 << 20, true);
    assert!(std::fs::metadata(&stacked).unwrap().len() < 4 << 20);
    let b = onnxq_bounded(
        &[
            "quantize",
            model,
            "-o",
            "q.onnx",
            "--calib",
            stacked.to_str().unwrap(),
        ],
        out.path(),
        Duration::from_secs(60),
    );
    assert_refused(
        &b,
        "zip bomb",
        &["bomb.npz", "array 'image'", "the model takes"],
        out.path(),
    );
    assert!(
        b.max_rss_kib < 128 << 10,
        "zip bomb inflated: peak RSS {} KiB",
        b.max_rss_kib
    );
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn fifos_are_refused_not_read() {
    let out = tempdir();
    let limit = Duration::from_secs(30);
    // External data that is a FIFO.
    let ext = tempdir();
    std::fs::copy(
        testdata("external/model.onnx"),
        ext.path().join("model.onnx"),
    )
    .unwrap();
    mkfifo(&ext.path().join("model.onnx.data"));
    let m = ext.path().join("model.onnx");
    let b = onnxq_bounded(&["inspect", m.to_str().unwrap()], out.path(), limit);
    assert_refused(
        &b,
        "external FIFO",
        &["model.onnx.data", "not a regular file"],
        out.path(),
    );
    // A sample that is a FIFO, in a folder and named directly; the model
    // itself as a FIFO.
    let calib = tempdir();
    mkfifo(&calib.path().join("0000.npz"));
    let model = testdata("digits/cnn.onnx");
    for src in [calib.path().to_path_buf(), calib.path().join("0000.npz")] {
        let b = onnxq_bounded(
            &[
                "quantize",
                model.to_str().unwrap(),
                "-o",
                "q.onnx",
                "--calib",
                src.to_str().unwrap(),
            ],
            out.path(),
            limit,
        );
        assert_refused(
            &b,
            "sample FIFO",
            &["0000.npz", "not a regular file"],
            out.path(),
        );
    }
    let fifo_model = calib.path().join("0000.npz");
    let b = onnxq_bounded(
        &["inspect", fifo_model.to_str().unwrap()],
        out.path(),
        limit,
    );
    assert_refused(&b, "model FIFO", &["not a regular file"], out.path());
}

#[test]
fn long_chains_finish_in_bounded_time() {
    // 10,000 MatMuls: tract's optimizer alone took hours on this; plans of
    // graphs past tract::OPTIMIZE_MAX_NODES are typed only.
    let dir = tempdir();
    let path = dir.path().join("chain.onnx");
    write_matmul_chain(&path, 10_000);
    let out = tempdir();
    let b = onnxq_bounded(
        &[
            "quantize",
            path.to_str().unwrap(),
            "-o",
            "q.onnx",
            "--calib",
            "random:1",
            "--force",
        ],
        out.path(),
        Duration::from_secs(300),
    );
    assert!(!b.timed_out, "10,000 MatMuls: still running after 300 s");
    assert_eq!(b.code, Some(0), "{}", b.stderr);
}

/// A chain of `n` MatMuls by the 4×4 identity, input and output [1, 4].
fn write_matmul_chain(path: &Path, n: usize) {
    use onnxq::ir::{Model, Tensor};
    use onnxq::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    let eye: Vec<f32> = (0..16)
        .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
        .collect();
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    for i in 0..n {
        let input = if i == 0 {
            "x".into()
        } else {
            format!("t{}", i - 1)
        };
        let output = if i + 1 == n {
            "y".into()
        } else {
            format!("t{i}")
        };
        nodes.push(NodeProto {
            name: Some(format!("mm{i}")),
            op_type: Some("MatMul".into()),
            input: vec![input, format!("w{i}")],
            output: vec![output],
            ..Default::default()
        });
        inits.push(onnxq::onnx::tensor::tensor_to_proto(
            &format!("w{i}"),
            &Tensor::from_f32(vec![4, 4], &eye),
        ));
    }
    let vi = |name: &str| onnxq::onnx::value_info(name, onnxq::ir::DataType::Float, &[1, 4]);
    let proto = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("chain".into()),
            node: nodes,
            initializer: inits,
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = Model::from_proto(&proto).unwrap();
    onnxq::onnx::save_model(&model.to_proto().unwrap(), path, &Default::default()).unwrap();
}
