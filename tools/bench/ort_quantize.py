#!/usr/bin/env python3
"""onnxruntime's quantize_static on a directory of .npz samples, as a user
runs it: per_channel=True, every other setting at its default.

    ort_quantize.py MODEL SAMPLES_DIR OUT FORMAT(qdq|qoperator) METHOD(minmax|percentile|entropy)
"""
import glob
import os
import sys

from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

from ort_calibrate import Reader  # the .npz sample reader (same folder)


def main():
    model, samples, out, fmt, method = sys.argv[1:6]
    files = sorted(glob.glob(os.path.join(samples, "*.npz")))
    quantize_static(
        model,
        out,
        Reader(files),
        quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[fmt],
        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy}[method],
        per_channel=True,
    )


if __name__ == "__main__":
    main()
