//! load → IR → save keeps everything, and the saved file computes the same.

use crate::common::*;
use onnxq::ir::Model;
use onnxq::onnx::proto::ModelProto;
use onnxq::onnx::{load_model, save_model, ExternalDataOptions, SaveOptions};
use onnxq::tract::Runner;

fn ir(path: &std::path::Path) -> (ModelProto, Model) {
    let loaded = load_model(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let model =
        Model::from_proto(&loaded.proto).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (loaded.proto, model)
}

/// The two models have the same graph, initializers, metadata and opsets.
fn assert_same(a: &ModelProto, b: &ModelProto, what: &str) {
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    assert_eq!(a.opset_import, b.opset_import, "{what}: opsets");
    assert_eq!(a.ir_version, b.ir_version, "{what}: ir_version");
    assert_eq!(a.producer_name, b.producer_name, "{what}: producer");
    assert_eq!(a.metadata_props, b.metadata_props, "{what}: metadata");
    assert_eq!(a.functions, b.functions, "{what}: functions");
    assert_eq!(ga.node, gb.node, "{what}: nodes");
    assert_eq!(ga.input, gb.input, "{what}: inputs");
    assert_eq!(ga.output, gb.output, "{what}: outputs");
    assert_eq!(ga.value_info, gb.value_info, "{what}: value_info");
    assert_eq!(ga.name, gb.name, "{what}: graph name");
    assert_eq!(
        ga.initializer.len(),
        gb.initializer.len(),
        "{what}: initializer count"
    );
    for (x, y) in ga.initializer.iter().zip(&gb.initializer) {
        let tx = onnxq::onnx::tensor::tensor_from_proto(x).unwrap();
        let ty = onnxq::onnx::tensor::tensor_from_proto(y).unwrap();
        assert_eq!(x.name, y.name, "{what}: initializer names");
        assert_eq!(tx, ty, "{what}: initializer '{}'", x.name());
    }
}

fn run(model: &ModelProto, ir: &Model) -> Vec<onnxq::ir::Tensor> {
    let specs = input_specs(ir, 3);
    let runner = Runner::new(model, &specs, None).expect("tract builds the model");
    runner
        .run(&inputs_for(ir, 3, 7))
        .expect("tract runs the model")
}

#[test]
fn every_testdata_model_round_trips() {
    let dir = tempdir();
    for path in good_models() {
        let (orig, model) = ir(&path);
        let written = model.to_proto().unwrap();
        let out = dir.path().join("rt.onnx");
        save_model(&written, &out, &SaveOptions::default()).unwrap();
        let (reloaded, reloaded_ir) = ir(&out);
        let what = path.display().to_string();
        assert_same(&orig, &reloaded, &what);

        // Saving the reloaded model again gives the same bytes.
        let out2 = dir.path().join("rt2.onnx");
        save_model(
            &reloaded_ir.to_proto().unwrap(),
            &out2,
            &SaveOptions::default(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&out2).unwrap(),
            "{what}: deterministic"
        );

        // tract loads the saved file and computes exactly what the original computes.
        let a = run(&orig, &model);
        let b = run(&reloaded, &reloaded_ir);
        assert_eq!(a, b, "{what}: outputs differ after the round trip");
    }
}

#[test]
fn external_data_is_read_and_written() {
    let (orig, model) = ir(&testdata("external/model.onnx"));
    let loaded = load_model(testdata("external/model.onnx")).unwrap();
    assert_eq!(loaded.external.len(), 1);
    assert_eq!(loaded.external[0].location, "model.onnx.data");
    assert!(loaded.external[0].tensors >= 2);

    // Same values as the same model stored inline.
    let (inline, _) = ir(&testdata("quirks/gemm_transb_dynbatch_opset13.onnx"));
    assert_eq!(
        inline.graph.as_ref().unwrap().initializer.len(),
        orig.graph.as_ref().unwrap().initializer.len()
    );
    for (a, b) in inline
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .zip(&orig.graph.as_ref().unwrap().initializer)
    {
        assert_eq!(
            onnxq::onnx::tensor::tensor_from_proto(a).unwrap(),
            onnxq::onnx::tensor::tensor_from_proto(b).unwrap()
        );
    }

    // Write with external data, then read back.
    let dir = tempdir();
    let out = dir.path().join("ext.onnx");
    let opts = SaveOptions {
        external_data: Some(ExternalDataOptions {
            location: None,
            threshold: 16,
        }),
        ..Default::default()
    };
    save_model(&model.to_proto().unwrap(), &out, &opts).unwrap();
    assert!(dir.path().join("ext.onnx.data").exists());
    let small = std::fs::metadata(&out).unwrap().len();
    assert!(
        small < 1024,
        "weights moved out of the protobuf ({small} bytes left)"
    );
    let (back, back_ir) = ir(&out);
    assert_same(&orig, &back, "external write");
    assert_eq!(run(&orig, &model), run(&back, &back_ir));
}

#[test]
fn writes_are_atomic_and_never_clobber_the_input() {
    let dir = tempdir();
    let src = dir.path().join("m.onnx");
    std::fs::copy(testdata("digits/mlp.onnx"), &src).unwrap();
    let before = std::fs::read(&src).unwrap();
    let (_, model) = ir(&src);
    let opts = SaveOptions {
        input: Some(src.clone()),
        ..Default::default()
    };
    let err = save_model(&model.to_proto().unwrap(), &src, &opts).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&src).unwrap(), before);

    let forced = SaveOptions {
        input: Some(src.clone()),
        force: true,
        ..Default::default()
    };
    save_model(&model.to_proto().unwrap(), &src, &forced).unwrap();
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn subgraph_outer_values_are_kept() {
    let (_, model) = ir(&testdata("quirks/if_branch_opset13.onnx"));
    let g = &model.graph;
    let w = g.find_value("w").unwrap();
    let x = g.find_value("x").unwrap();
    assert!(g.has_implicit_uses(w), "the If branches read 'w' by name");
    assert!(g.has_implicit_uses(x));
    let (_, iff) = g.nodes().find(|(_, n)| n.op_type == "If").unwrap();
    assert_eq!(iff.implicit_inputs.len(), 2);
}
