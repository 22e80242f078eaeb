//! Calibration throughput: collecting activation statistics through tract
//! and computing the ranges, on the testdata models with their own samples.
//!
//! `cargo bench --bench calibration` (criterion). Cases: the digits CNN on
//! its 32 calibration images and the variable-length transformer on its
//! samples (sequence 3..10), each with statistics for MinMax (extremes
//! only) and with histograms (Percentile / Entropy / MSE), on 1 worker and
//! on all cores; and the range computation alone per method. The
//! comparison with onnxruntime's calibrator, whole process, is
//! `tools/bench/calibration.py`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use onnxq::calibrate::methods::{Method, RangeOptions};
use onnxq::calibrate::samples::open_source;
use onnxq::calibrate::table::RangeTable;
use onnxq::calibrate::{Calibrator, CollectOptions};
use onnxq::ir::Model;
use onnxq::passes::{prepare, PassOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The allocator the CLI uses (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

fn bench(c: &mut Criterion) {
    for (name, model, samples) in [
        ("digits_cnn", "digits/cnn.onnx", "digits/cnn_calib"),
        (
            "transformer_varlen",
            "quirks/transformer_opset17.onnx",
            "quirks/transformer_calib",
        ),
    ] {
        let loaded = onnxq::onnx::load_model(testdata(model)).expect("testdata model loads");
        let mut m = Model::from_proto(&loaded.proto).expect("testdata model parses");
        prepare(&mut m, &PassOptions::default()).expect("testdata model prepares");
        let calibrator = Calibrator::new(&m).expect("calibrator plans");
        let spec = testdata(samples).to_string_lossy().into_owned();
        let source =
            open_source(&spec, calibrator.inputs(), &BTreeMap::new()).expect("samples open");
        let count = source.len();
        // Throughput in samples per second.
        let mut group = c.benchmark_group(format!("calibrate_{name}"));
        group.throughput(Throughput::Elements(count as u64));
        group.sample_size(20);
        for (label, histograms) in [("minmax", false), ("histograms", true)] {
            for jobs in [1, 0] {
                let opts = CollectOptions {
                    histograms,
                    jobs,
                    ..Default::default()
                };
                let id = format!(
                    "{label}/jobs{}",
                    if jobs == 0 {
                        "all".into()
                    } else {
                        jobs.to_string()
                    }
                );
                group.bench_function(id, |b| {
                    b.iter(|| {
                        calibrator
                            .collect(source.as_ref(), &opts)
                            .expect("collects")
                    })
                });
            }
        }
        group.finish();
        let collected = calibrator
            .collect(source.as_ref(), &CollectOptions::default())
            .expect("collects");
        let mut group = c.benchmark_group(format!("ranges_{name}"));
        group.sample_size(20);
        for method in [
            Method::Minmax,
            Method::Percentile,
            Method::Entropy,
            Method::Mse,
        ] {
            let opts = RangeOptions {
                method,
                ..RangeOptions::default()
            };
            group.bench_function(method.name(), |b| {
                b.iter(|| RangeTable::compute(&collected, &opts, "bench"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
