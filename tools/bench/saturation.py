#!/usr/bin/env python3
"""Does this CPU's onnxruntime / OpenVINO saturate u8 x s8 pair sums?

    .venv/bin/python tools/bench/saturation.py

Builds one QDQ Conv (4 -> 8 channels, 3x3, pads 1, opset 13; its output
quantized and dequantized, so that runtimes fuse it into an integer Conv)
per case: activations uint8 or int8, the input using all 256 levels;
weights int8 per output channel or per tensor, on 8 bits (|w| up to 127)
or 7 (up to 63). Runs each in the installed runtimes
(tools/bench/runtimes.py) and counts the output levels that differ from
the exact result (the dequantized input and weights convolved in float64,
quantized with round half to even: what the QDQ model means). A runtime
that computes the int8 Conv exactly differs nowhere (or by one level on a
rare float tie); one whose x86 kernels sum two u8 x s8 products in int16
(vpmaddubsw, CPUs without VNNI) is off on many outputs with 8-bit weights
and exact with 7. That is why onnxq's weights are 7-bit
by default where a runtime computes u8 x s8 (docs/defaults.md).
"""

import itertools
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runtimes  # noqa: E402

SCALE = 0.02


def weights(w, per_channel, bits):
    """(int8 levels, scales, dequantized float64) of `w`."""
    qmax = 2 ** (bits - 1) - 1
    ws = np.abs(w).reshape(len(w), -1).max(1) / qmax if per_channel else np.array(np.abs(w).max() / qmax)
    wide = ws[:, None, None, None] if per_channel else ws
    wq = np.round(w / wide).astype(np.int8)
    return wq, ws.astype(np.float32), wq.astype(np.float64) * wide.astype(np.float32)


def build(path, wq, ws, act, ys, yz):
    """The QDQ Conv of int8 weights `wq` (scales `ws`) with `act` ("uint8" /
    "int8") activations at zero point 0 / -128 (the same real values), its
    output quantized with scale `ys`, zero point `yz`."""
    dt = np.uint8 if act == "uint8" else np.int8
    zp = np.array(0 if act == "uint8" else -128, dt)
    inits = [numpy_helper.from_array(np.array(SCALE, np.float32), "xs"), numpy_helper.from_array(zp, "xz"),
             numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(ws, "ws"),
             numpy_helper.from_array(np.array(ys, np.float32), "ys"), numpy_helper.from_array(np.array(yz, dt), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def exact(x, wd):
    """Conv of the dequantized input (x on the 0.02 grid already) and weights, in float64."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((1, len(wd), 16, 16))
    for i, j in itertools.product(range(3), range(3)):
        y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 16, j:j + 16], wd[:, :, i, j])
    return y


def main():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    work = tempfile.mkdtemp(prefix="onnxq-saturation-")
    names = [r for r in runtimes.available() if r != "tract"]
    print("| activations | weights | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    # Every input level used: real values on the quantization grid, 0..5.1.
    x = (rng.integers(0, 256, (1, 4, 16, 16)) * SCALE).astype(np.float32)
    for act, per_channel, bits in itertools.product(("uint8", "int8"), (True, False), (8, 7)):
        path = os.path.join(work, f"{act}_{per_channel}_{bits}.onnx")
        wq, ws, wd = weights(w, per_channel, bits)
        conv = exact(x, wd)
        lo, hi = (0, 255) if act == "uint8" else (-128, 127)
        ys, yz = np.float32(np.abs(conv).max() / 127), (128 if act == "uint8" else 0)
        build(path, wq, ws, act, ys, yz)
        want = np.clip(np.round(conv / np.float64(ys)) + yz, lo, hi)
        cells = []
        for rt in names:
            got = np.round(runtimes.open_session(rt, path).run({"x": x})[0] / np.float64(ys)) + yz
            off = np.abs(got - want)
            cells.append(f"{int((off > 0).sum())} of {off.size} off (max {int(off.max())} levels)")
        kind = f"{'per channel' if per_channel else 'per tensor'}, {bits}-bit"
        print(f"| {act} | {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
