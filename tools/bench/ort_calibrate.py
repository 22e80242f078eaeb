#!/usr/bin/env python3
"""onnxruntime's static-quantization calibration (the part of quantize_static
that runs the model and computes ranges), on a directory of .npz samples.

    ort_calibrate.py MODEL SAMPLES_DIR METHOD(minmax|percentile|entropy)
"""
import glob
import os
import sys
import tempfile

import numpy as np
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator


class Reader(CalibrationDataReader):
    def __init__(self, files):
        self.files = iter(files)

    def get_next(self):
        f = next(self.files, None)
        if f is None:
            return None
        with np.load(f) as z:
            return {k: z[k] for k in z.files}


def main():
    model, samples, method = sys.argv[1:4]
    files = sorted(glob.glob(os.path.join(samples, "*.npz")))
    m = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory() as tmp:
        cal = create_calibrator(model, augmented_model_path=os.path.join(tmp, "aug.onnx"), calibrate_method=m)
        cal.collect_data(Reader(files))
        ranges = cal.compute_data()
    print(len(ranges.data))


if __name__ == "__main__":
    main()
