#!/usr/bin/env python3
"""Why a top-1 agreement moved: per-sample top-two margins of the FP32
class scores against the quantized models' errors.

    .venv/bin/python tools/bench/margins.py FP32.onnx QUANT.onnx [QUANT.onnx ...] --data DIR

Runs every model in onnxruntime (CPU) on the .npz samples of DIR (arrays
named like the model inputs) and prints, per quantized model, the SQNR of
the first output against FP32 and, per sample: FP32's top-1 class and
its margin over the runner-up, the quantized model's top-1, the error's
RMS over all scores and the errors on FP32's top two classes. A top-1
that changes where the margin is a fraction of the error RMS is a
near-tie, not a broken model; a model that keeps such near-ties does so
by errors that favour the winning class.
"""
import argparse
import glob
import os

import numpy as np
import onnxruntime as ort


def run(path, files):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = []
    for f in files:
        z = np.load(f)
        outs.append(s.run(None, {i.name: z[i.name] for i in s.get_inputs()})[0].ravel().astype(np.float64))
    return np.array(outs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fp32")
    ap.add_argument("quantized", nargs="+")
    ap.add_argument("--data", required=True, help="directory of .npz samples")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.data, "*.npz")))
    if not files:
        raise SystemExit(f"no .npz samples in {args.data}")
    fp = run(args.fp32, files)
    for path in args.quantized:
        q = run(path, files)
        err = q - fp
        sqnr = 10 * np.log10((fp ** 2).sum() / max((err ** 2).sum(), 1e-300))
        agree = np.mean(np.argmax(q, 1) == np.argmax(fp, 1))
        print(f"{os.path.basename(path)}: SQNR {sqnr:.1f} dB, top-1 agreement {100 * agree:.1f}% on {len(files)} samples")
        for i, name in enumerate(files):
            o = np.argsort(-fp[i])
            print(
                f"  {os.path.basename(name)}: FP32 top-1 {o[0]} margin {fp[i][o[0]] - fp[i][o[1]]:.4f}"
                f" (scores RMS {np.sqrt((fp[i] ** 2).mean()):.3f}); quantized top-1 {np.argmax(q[i])},"
                f" error RMS {np.sqrt((err[i] ** 2).mean()):.4f}, on the top two {err[i][o[0]]:+.4f} {err[i][o[1]]:+.4f}"
            )


if __name__ == "__main__":
    main()
