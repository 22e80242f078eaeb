#!/usr/bin/env python3
"""Calibration benchmark: onnxq calibrate vs onnxruntime's calibrator.

    .venv/bin/python tools/bench/calibration.py [--onnxq target/release/onnxq] [--samples 32 512]

Builds (seeded, in a temp dir) a conv net (8 convs, 3x64x64 input, batch 1)
and a transformer encoder (2 blocks, d=64, 4 heads, sequence 48), writes N
random-normal samples per model as .npz files, then runs each tool as a
separate process per (model, method, N), --rounds times each, alternating
(default 5), and reports samples/s of the median run (whole process:
load + calibrate + write) and the largest peak RSS. onnxq runs with all cores
(--jobs 0); onnxruntime with its defaults. Prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def conv_net(rng):
    nodes, inits = [], []
    c_in, x = 3, "x"
    for i, (c, s) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1)]):
        w = (rng.standard_normal((c, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"c{i}.w"), numpy_helper.from_array(np.zeros(c, np.float32), f"c{i}.b")]
        nodes += [
            helper.make_node("Conv", [x, f"c{i}.w", f"c{i}.b"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1], strides=[s, s]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        x, c_in = f"r{i}", c
    inits.append(numpy_helper.from_array((rng.standard_normal((10, 128)) * 0.1).astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc.b"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "bench_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), {"x": (1, 3, 64, 64)}


def transformer(rng, d=64, heads=4, ff=256, blocks=2, seq=48):
    hd = d // heads
    nodes, inits = [], []
    w = lambda n, *s: inits.append(numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), n))
    c = lambda n, v: inits.append(numpy_helper.from_array(np.asarray(v), n))
    c("heads", np.array([0, 0, heads, hd], np.int64))
    c("merge", np.array([0, 0, d], np.int64))
    c("scale", np.array(np.sqrt(hd), np.float32))
    x = "x"
    n = helper.make_node
    for b in range(blocks):
        p = f"b{b}."
        for t in "qkvo":
            w(p + t, d, d)
        w(p + "ff1", d, ff)
        w(p + "ff2", ff, d)
        c(p + "ln.s", np.ones(d, np.float32))
        c(p + "ln.b", np.zeros(d, np.float32))
        nodes.append(n("LayerNormalization", [x, p + "ln.s", p + "ln.b"], [p + "ln"], name=p + "ln", axis=-1))
        for t in "qkv":
            nodes += [n("MatMul", [p + "ln", p + t], [p + t + "m"], name=p + t), n("Reshape", [p + t + "m", "heads"], [p + t + "h"], name=p + t + "r")]
        nodes += [
            n("Transpose", [p + "qh"], [p + "qt"], perm=[0, 2, 1, 3], name=p + "qt"),
            n("Transpose", [p + "kh"], [p + "kt"], perm=[0, 2, 3, 1], name=p + "kt"),
            n("Transpose", [p + "vh"], [p + "vt"], perm=[0, 2, 1, 3], name=p + "vt"),
            n("MatMul", [p + "qt", p + "kt"], [p + "s"], name=p + "qk"),
            n("Div", [p + "s", "scale"], [p + "ss"], name=p + "div"),
            n("Softmax", [p + "ss"], [p + "a"], axis=-1, name=p + "softmax"),
            n("MatMul", [p + "a", p + "vt"], [p + "c"], name=p + "av"),
            n("Transpose", [p + "c"], [p + "ct"], perm=[0, 2, 1, 3], name=p + "ct"),
            n("Reshape", [p + "ct", "merge"], [p + "cm"], name=p + "merge"),
            n("MatMul", [p + "cm", p + "o"], [p + "om"], name=p + "o"),
            n("Add", [x, p + "om"], [p + "r1"], name=p + "res1"),
            n("MatMul", [p + "r1", p + "ff1"], [p + "f1"], name=p + "ff1"),
            n("Relu", [p + "f1"], [p + "f1r"], name=p + "relu"),
            n("MatMul", [p + "f1r", p + "ff2"], [p + "f2"], name=p + "ff2"),
            n("Add", [p + "r1", p + "f2"], [p + "out"], name=p + "res2"),
        ]
        x = p + "out"
    nodes.append(n("Identity", [x], ["y"], name="out"))
    g = helper.make_graph(nodes, "bench_transformer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, d])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": (1, seq, d)}


def measure(cmd):
    out = subprocess.run([sys.executable, os.path.join(HERE, "measure.py")] + cmd, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs):
    """The run of median time (any failure wins), with the largest peak memory."""
    failed = [r for r in runs if r["rc"] != 0]
    if failed:
        return failed[0]
    r = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
    r["peak_mib"] = max(x["peak_mib"] for x in runs)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    ap.add_argument("--samples", type=int, nargs="+", default=[32, 512])
    ap.add_argument("--methods", nargs="+", default=["minmax", "percentile", "entropy"])
    ap.add_argument("--rounds", type=int, default=5, help="runs per cell and tool, alternating; the median is reported")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shapes) in (("conv net 3x64x64", conv_net(rng)), ("transformer d64 seq48", transformer(rng))):
            mpath = os.path.join(tmp, name.split()[0] + ".onnx")
            onnx.save(model, mpath)
            for n in args.samples:
                sdir = os.path.join(tmp, f"{name.split()[0]}_{n}")
                os.makedirs(sdir)
                srng = np.random.default_rng(n)
                for i in range(n):
                    np.savez(os.path.join(sdir, f"{i:05d}.npz"), **{k: srng.standard_normal(s).astype(np.float32) for k, s in shapes.items()})
                for method in args.methods:
                    qs, os_ = [], []
                    # Alternating runs, so load from elsewhere on the
                    # machine hits both tools alike; the median is reported.
                    for _ in range(args.rounds):
                        qs.append(measure([args.onnxq, "calibrate", mpath, "--calib", sdir, "--method", method, "-o", os.path.join(tmp, "r.json")]))
                        os_.append(measure([sys.executable, os.path.join(HERE, "ort_calibrate.py"), mpath, sdir, method]))
                    q, o = median_run(qs), median_run(os_)
                    rows.append((name, method, n, q, o))
                    print(f"{name} {method} {n}: onnxq {[r['seconds'] for r in qs]} ort {[r['seconds'] for r in os_]}", file=sys.stderr)
    print("| model | method | samples | onnxq samples/s | onnxruntime samples/s | speed-up | onnxq peak MiB | onnxruntime peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, method, n, q, o in rows:
        qs = n / q["seconds"] if q["rc"] == 0 else float("nan")
        os_ = n / o["seconds"] if o["rc"] == 0 else float("nan")
        cell = lambda r, v: f"{v:.1f}" if r["rc"] == 0 else f"failed (exit {r['rc']})"
        print(f"| {name} | {method} | {n} | {cell(q, qs)} | {cell(o, os_)} | {qs / os_:.1f}x | {q['peak_mib']:.0f} | {o['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
