"""onnxruntime's static-quantization example script (run.py of
quantization/image_classification/cpu), ported to onnxq: the same reader,
the same arguments; the quantize_static call is the one line that changed.

    python run.py --input_model cnn.onnx --output_model cnn.int8.onnx \\
        --calibrate_dataset calibration_images/
"""

import argparse

import digits_data_reader

import onnxq


def get_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input_model", required=True, help="input model")
    parser.add_argument("--output_model", required=True, help="output model")
    parser.add_argument(
        "--calibrate_dataset", default="./test_images", help="calibration data set"
    )
    return parser.parse_args()


def main(args=None):
    args = args or get_args()
    input_model_path = args.input_model
    output_model_path = args.output_model
    calibration_dataset_path = args.calibrate_dataset
    dr = digits_data_reader.DigitsDataReader(calibration_dataset_path, input_model_path)

    # Calibrate and quantize the model (onnxruntime's example:
    # quantize_static(input_model_path, output_model_path, dr,
    #                 quant_format=..., per_channel=..., weight_type=QuantType.QInt8)).
    report = onnxq.quantize(input_model_path, output_model_path, dr)
    print("Calibrated and quantized model saved.")
    return report


if __name__ == "__main__":
    main()
