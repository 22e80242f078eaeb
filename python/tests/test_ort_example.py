"""onnxruntime's static-quantization example, ported (ort_example/): the
same CalibrationDataReader over a folder of images, onnxq.quantize in place
of quantize_static. Both tools' models run in onnxruntime on the 300
held-out digits."""

import argparse

import digits_data_reader
import numpy as np
import run
from conftest import outputs
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static


def test_the_ported_example_writes_a_model_onnxruntime_runs_as_well_as_quantize_static(
    cnn, digit_images, tmp_path
):
    calibration, holdout, labels = digit_images
    ours = str(tmp_path / "cnn.onnxq.onnx")
    report = run.main(
        argparse.Namespace(
            input_model=cnn, output_model=ours, calibrate_dataset=calibration
        )
    )
    assert report["written"] and report["parity"]["passed"]
    assert report["calibration"]["samples"] == 64

    # The example as onnxruntime ships it: the same reader, quantize_static.
    theirs = str(tmp_path / "cnn.ort.onnx")
    dr = digits_data_reader.DigitsDataReader(calibration, cnn)
    quantize_static(
        cnn,
        theirs,
        dr,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
    )

    images = digits_data_reader._preprocess_images(holdout, 8, 8)
    fp32 = outputs(cnn, images).argmax(1)
    agree = {
        name: float(np.mean(outputs(path, images).argmax(1) == fp32))
        for name, path in (("onnxq", ours), ("onnxruntime", theirs))
    }
    accuracy = float(np.mean(outputs(ours, images).argmax(1) == labels))
    print(f"top-1 agreement with FP32 in onnxruntime: {agree}; onnxq accuracy {accuracy:.4f}")
    assert float(np.mean(fp32 == labels)) >= 0.97
    assert agree["onnxq"] >= 0.99
    assert agree["onnxq"] >= agree["onnxruntime"] - 0.005
    assert accuracy >= float(np.mean(fp32 == labels)) - 0.01
