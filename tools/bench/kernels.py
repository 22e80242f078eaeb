#!/usr/bin/env python3
"""Executor kernels: onnxq vs tract vs onnxruntime on the same single-op models.

    cargo bench --bench kernels            # times onnxq and tract (criterion),
                                           # writes target/bench-kernels/*.onnx|.npz
    .venv/bin/python tools/bench/kernels.py [--onnxq target/release/onnxq] [--threads 2]

For every model `cargo bench --bench kernels` wrote, this script times
onnxruntime (CPU provider, `--threads` intra-op threads, all graph
optimizations; median of repeated runs after warm-up), reads criterion's
mean estimates for onnxq and tract from target/criterion/, and prints one
Markdown table with the ratios. It also runs `onnxq run` on the same input
and counts output elements that differ from onnxruntime's, twice: on the
model as benchmarked (full-range int8 weights, what quantizers emit) and on
a copy whose weights are halved to 7 bits. On CPUs without AVX-512 VNNI
onnxruntime's u8 x s8 kernels saturate int16 pair sums (NOTES.md), so the
first count is onnxruntime's error there; with 7-bit weights nothing
saturates and the count must be 0 (onnxq is exact either way).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def criterion_ms(case, engine):
    p = os.path.join(ROOT, "target", "criterion", case, engine, "new", "estimates.json")
    try:
        with open(p) as f:
            return json.load(f)["mean"]["point_estimate"] / 1e6
    except OSError:
        return None


def ort_ms(model, feeds, threads, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        out = sess.run(None, feeds)
    times = []
    deadline = time.perf_counter() + 3.0
    while len(times) < runs or (time.perf_counter() < deadline and len(times) < 10 * runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out[0]


def seven_bit(model, out):
    """`model` with its int8 weight ("w" / "b" of the single op) halved."""
    m = onnx.load(model)
    for i, t in enumerate(m.graph.initializer):
        if t.name in ("w", "b") and t.data_type == onnx.TensorProto.INT8:
            a = numpy_helper.to_array(t)
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array((a // 2).astype(np.int8), t.name))
    onnx.save(m, out)


def differing(onnxq, model, data, feeds):
    """Elements where `onnxq run` and onnxruntime (1 thread) disagree."""
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([onnxq, "run", model, "--data", data, "-o", d], check=True,
                       stdout=subprocess.DEVNULL)
        got = np.load(os.path.join(d, "0000.npz"))["y"]
    return int((got != want).sum()), want.size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    models = sorted(glob.glob(os.path.join(ROOT, "target", "bench-kernels", "*.onnx")))
    if not models:
        sys.exit("no models in target/bench-kernels: run `cargo bench --bench kernels` first")
    print(f"onnxruntime {ort.__version__}, {args.threads} threads\n")
    print("| case | onnxq ms | tract ms | onnxruntime ms | onnxq / onnxruntime | tract / onnxq "
          "| onnxruntime ≠ onnxq (int8 weights) | onnxruntime ≠ onnxq (7-bit weights) |")
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        case = os.path.splitext(os.path.basename(model))[0]
        data = os.path.splitext(model)[0]
        feeds = dict(np.load(os.path.join(data, "0000.npz")))
        ms, _ = ort_ms(model, feeds, args.threads, args.runs)
        differ, size = differing(args.onnxq, model, data, feeds)
        with tempfile.TemporaryDirectory() as d:
            reduced = os.path.join(d, "model.onnx")
            seven_bit(model, reduced)
            differ7, _ = differing(args.onnxq, reduced, data, feeds)
        ours, tract = criterion_ms(case, "onnxq"), criterion_ms(case, "tract")
        fmt = lambda v: "—" if v is None else f"{v:.2f}"
        ratio = lambda a, b: "—" if a is None or b is None else f"{a / b:.2f}x"
        print(f"| {case} | {fmt(ours)} | {fmt(tract)} | {ms:.2f} | {ratio(ours, ms)} | {ratio(tract, ours)} "
              f"| {differ} of {size} | {differ7} of {size} |")


if __name__ == "__main__":
    main()
