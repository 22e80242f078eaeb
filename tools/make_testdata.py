#!/usr/bin/env python3
"""Generates every file under testdata/ (run from the repository root).

    .venv/bin/python tools/make_testdata.py

Deterministic: seeded numpy, seeded scikit-learn, so re-running gives the same
bytes. What each file is and how it was made is listed in testdata/README.md.

- digits/: an MLP (scikit-learn) and a small CNN (trained here with numpy) on
  scikit-learn's digits data set (8x8 images, 10 classes), with held-out and
  calibration samples, plus the same CNN exported PaddlePaddle-style
  (weights in Constant nodes, opset 12).
- quirks/: small models with the shapes real exporters produce (Gemm with
  transB and a dynamic batch, opset-11 attribute forms, an opset-17
  transformer block with dynamic batch and sequence, an If node).
- detector/: a YOLO-style detector whose head concatenates boxes (~360)
  and class scores (~1e-5), with calibration and held-out images.
- external/: a model whose weights live in an external data file.
- bad/: malformed inputs onnxq must refuse with a clear error.
"""

import json
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata")
PRODUCER = "onnxq-tools"


def path(*parts):
    p = os.path.join(ROOT, *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def make_model(graph, opset, ir_version=None, check=True):
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=PRODUCER
    )
    if ir_version is not None:
        model.ir_version = ir_version
    else:
        # The oldest IR version that supports the opset, as exporters write it.
        model.ir_version = {11: 6, 12: 7, 13: 7, 17: 8}.get(opset, 8)
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def save(model, *parts):
    with open(path(*parts), "wb") as f:
        f.write(model.SerializeToString())


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def const_node(name, array):
    return helper.make_node(
        "Constant", [], [name], name=name + "/Constant", value=numpy_helper.from_array(np.asarray(array), name)
    )


# ---------------------------------------------------------------- digits --


def digits_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    hold = order[:300]
    train = order[300:]
    return x[train], y[train], x[hold], y[hold]


def train_mlp(xtr, ytr):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu", max_iter=400, random_state=0)
    clf.fit(xtr, ytr)
    return clf


def export_mlp(clf):
    w1, w2, w3 = [c.astype(np.float32) for c in clf.coefs_]
    b1, b2, b3 = [b.astype(np.float32) for b in clf.intercepts_]
    nodes = [
        # First layer stored [out, in] with transB=1, as PyTorch exports Linear.
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["fc2"], name="fc2"),
        helper.make_node("Relu", ["fc2"], ["relu2"], name="relu2"),
        helper.make_node("Gemm", ["relu2", "fc3.weight", "fc3.bias"], ["logits"], name="fc3"),
    ]
    g = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [
            init("fc1.weight", w1.T.copy()),
            init("fc1.bias", b1),
            init("fc2.weight", w2),
            init("fc2.bias", b2),
            init("fc3.weight", w3),
            init("fc3.bias", b3),
        ],
    )
    return make_model(g, 13)


def im2col(x, k, pad, stride):
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    cols = np.empty((b, c, k, k, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(b * oh * ow, c * k * k), oh, ow


def col2im(dcols, shape, k, pad, stride, oh, ow):
    b, c, h, w = shape
    d = dcols.reshape(b, oh, ow, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dx = np.zeros((b, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += d[:, :, i, j]
    return dx[:, :, pad : pad + h, pad : pad + w]


class Cnn:
    """conv(1->8, 3x3, pad 1) relu, conv(8->16, 3x3, pad 1, stride 2) relu, dense(256->10)."""

    def __init__(self, rng):
        self.w1 = (rng.standard_normal((8, 1, 3, 3)) * np.sqrt(2 / 9)).astype(np.float32)
        self.b1 = np.zeros(8, np.float32)
        self.w2 = (rng.standard_normal((16, 8, 3, 3)) * np.sqrt(2 / 72)).astype(np.float32)
        self.b2 = np.zeros(16, np.float32)
        self.w3 = (rng.standard_normal((10, 256)) * np.sqrt(1 / 256)).astype(np.float32)
        self.b3 = np.zeros(10, np.float32)

    def params(self):
        return [self.w1, self.b1, self.w2, self.b2, self.w3, self.b3]

    def forward(self, x):
        b = x.shape[0]
        c1, oh1, ow1 = im2col(x, 3, 1, 1)
        z1 = c1 @ self.w1.reshape(8, -1).T + self.b1
        a1 = np.maximum(z1, 0).reshape(b, oh1, ow1, 8).transpose(0, 3, 1, 2)
        c2, oh2, ow2 = im2col(a1, 3, 1, 2)
        z2 = c2 @ self.w2.reshape(16, -1).T + self.b2
        a2 = np.maximum(z2, 0).reshape(b, oh2, ow2, 16).transpose(0, 3, 1, 2)
        f = a2.reshape(b, -1)
        logits = f @ self.w3.T + self.b3
        cache = (x, c1, z1, a1, c2, z2, f, (oh1, ow1, oh2, ow2))
        return logits, cache

    def backward(self, dlogits, cache):
        x, c1, z1, a1, c2, z2, f, (oh1, ow1, oh2, ow2) = cache
        b = x.shape[0]
        gw3 = dlogits.T @ f
        gb3 = dlogits.sum(0)
        df = dlogits @ self.w3
        da2 = df.reshape(b, 16, oh2, ow2).transpose(0, 2, 3, 1).reshape(-1, 16)
        dz2 = da2 * (z2 > 0)
        gw2 = (dz2.T @ c2).reshape(self.w2.shape)
        gb2 = dz2.sum(0)
        dc2 = dz2 @ self.w2.reshape(16, -1)
        da1 = col2im(dc2, a1.shape, 3, 1, 2, oh2, ow2)
        dz1 = da1.transpose(0, 2, 3, 1).reshape(-1, 8) * (z1 > 0)
        gw1 = (dz1.T @ c1).reshape(self.w1.shape)
        gb1 = dz1.sum(0)
        return [gw1, gb1, gw2, gb2, gw3, gb3]


def train_cnn(xtr, ytr):
    rng = np.random.default_rng(1)
    net = Cnn(rng)
    x = xtr.reshape(-1, 1, 8, 8)
    velocity = [np.zeros_like(p) for p in net.params()]
    lr, momentum, batch = 0.05, 0.9, 64
    for epoch in range(30):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            logits, cache = net.forward(x[idx])
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(idx)), ytr[idx]] -= 1
            grads = net.backward(p / len(idx), cache)
            for param, g, v in zip(net.params(), grads, velocity):
                v *= momentum
                v -= lr * (g + 1e-4 * param)
                param += v
    return net


def bn_params(pre, eps):
    """BatchNorm parameters that reproduce `pre + bias` exactly, with the
    real per-channel statistics of the pre-activation as running stats, so the
    exported Conv -> BatchNormalization pair computes the trained function."""
    axes = (0, 2, 3)
    mean = pre.mean(axis=axes).astype(np.float32)
    var = pre.var(axis=axes).astype(np.float32)
    scale = np.sqrt(var + eps).astype(np.float32)
    return scale, mean, var


def export_cnn(net, xtr, style):
    """style: 'initializers' (PyTorch-like, opset 13, BatchNorm after each Conv)
    or 'constants' (PaddlePaddle-like: every weight a Constant node, opset 12)."""
    eps = 1e-5
    x = xtr.reshape(-1, 1, 8, 8)
    # Pre-activations without bias, on the training data, for the BN statistics.
    c1, oh1, ow1 = im2col(x, 3, 1, 1)
    pre1 = (c1 @ net.w1.reshape(8, -1).T).reshape(-1, oh1, ow1, 8).transpose(0, 3, 1, 2)
    a1 = np.maximum(pre1 + net.b1[None, :, None, None], 0)
    c2, oh2, ow2 = im2col(a1, 3, 1, 2)
    pre2 = (c2 @ net.w2.reshape(16, -1).T).reshape(-1, oh2, ow2, 16).transpose(0, 3, 1, 2)
    s1, m1, v1 = bn_params(pre1, eps)
    s2, m2, v2 = bn_params(pre2, eps)
    # BN(y) = s * (y - m) / sqrt(v + eps) + beta = y - m + beta; beta = b + m.
    tensors = {
        "conv1.weight": net.w1,
        "bn1.scale": s1,
        "bn1.bias": (net.b1 + m1).astype(np.float32),
        "bn1.mean": m1,
        "bn1.var": v1,
        "conv2.weight": net.w2,
        "bn2.scale": s2,
        "bn2.bias": (net.b2 + m2).astype(np.float32),
        "bn2.mean": m2,
        "bn2.var": v2,
        "fc.weight": net.w3,
        "fc.bias": net.b3,
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight"], ["conv1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["bn1"], name="bn1", epsilon=eps),
        helper.make_node("Relu", ["bn1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "conv2.weight"], ["conv2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["conv2", "bn2.scale", "bn2.bias", "bn2.mean", "bn2.var"], ["bn2"], name="bn2", epsilon=eps),
        helper.make_node("Relu", ["bn2"], ["relu2"], name="relu2"),
        helper.make_node("Flatten", ["relu2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])]
    if style == "initializers":
        g = helper.make_graph(nodes, "digits_cnn", inputs, outputs, [init(k, v) for k, v in tensors.items()])
        return make_model(g, 13)
    consts = [const_node(k, v) for k, v in tensors.items()]
    # Paddle also wraps the output in a Softmax with an explicit axis and
    # flattens with a Reshape whose shape is a Constant.
    nodes[6] = helper.make_node("Reshape", ["relu2", "flat.shape"], ["flat"], name="reshape")
    consts.append(const_node("flat.shape", np.array([-1, 256], np.int64)))
    g = helper.make_graph(consts + nodes, "digits_cnn_paddle", inputs, outputs)
    return make_model(g, 12)


def train_mlp_wide(xtr, ytr):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(256, 128), activation="relu", max_iter=300, random_state=0)
    clf.fit(xtr, ytr)
    return clf


def export_mlp_wide(clf):
    """MatMul + Add per layer, as tf2onnx and Keras exporters write Dense."""
    nodes, inits = [], []
    x = "input"
    n = len(clf.coefs_)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_), start=1):
        inits += [init(f"dense{i}/kernel", w.astype(np.float32)), init(f"dense{i}/bias", b.astype(np.float32))]
        nodes.append(helper.make_node("MatMul", [x, f"dense{i}/kernel"], [f"dense{i}/MatMul:0"], name=f"dense{i}/MatMul"))
        out = "logits" if i == n else f"dense{i}/BiasAdd:0"
        nodes.append(helper.make_node("Add", [f"dense{i}/MatMul:0", f"dense{i}/bias"], [out], name=f"dense{i}/BiasAdd"))
        if i < n:
            nodes.append(helper.make_node("Relu", [out], [f"dense{i}/Relu:0"], name=f"dense{i}/Relu"))
            x = f"dense{i}/Relu:0"
    g = helper.make_graph(
        nodes,
        "digits_mlp_wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return make_model(g, 13)


def cnn_logits(net, x):
    return net.forward(x.reshape(-1, 1, 8, 8))[0]


def write_digits():
    xtr, ytr, xho, yho = digits_split()
    clf = train_mlp(xtr, ytr)
    mlp = export_mlp(clf)
    save(mlp, "digits", "mlp.onnx")
    wide = train_mlp_wide(xtr, ytr)
    save(export_mlp_wide(wide), "digits", "mlp_wide.onnx")
    net = train_cnn(xtr, ytr)
    save(export_cnn(net, xtr, "initializers"), "digits", "cnn.onnx")
    save(export_cnn(net, xtr, "constants"), "digits", "cnn_paddle_opset12.onnx")

    np.savez(path("digits", "mlp_holdout.npz"), input=xho.reshape(-1, 1, 64))
    np.savez(path("digits", "cnn_holdout.npz"), image=xho.reshape(-1, 1, 1, 8, 8))
    np.savez(path("digits", "holdout_labels.npz"), label=yho)
    calib = os.path.join(ROOT, "digits", "cnn_calib")
    shutil.rmtree(calib, ignore_errors=True)
    for i in range(32):
        np.savez(path("digits", "cnn_calib", f"{i:04d}.npz"), image=xtr[i].reshape(1, 1, 8, 8))
    # The same 32 training images for the MLPs (leading sample axis).
    np.savez(path("digits", "mlp_calib.npz"), input=xtr[:32].reshape(-1, 1, 64))

    mlp_acc = (clf.predict(xho) == yho).mean()
    wide_acc = (wide.predict(xho) == yho).mean()
    print(f"digits: wide mlp held-out accuracy {wide_acc:.4f}")
    cnn_acc = (cnn_logits(net, xho).argmax(1) == yho).mean()
    print(f"digits: mlp held-out accuracy {mlp_acc:.4f}, cnn held-out accuracy {cnn_acc:.4f}")
    return mlp_acc, cnn_acc


# ---------------------------------------------------------------- quirks --


def gemm_dynbatch():
    rng = np.random.default_rng(10)
    nodes = [
        helper.make_node("Gemm", ["x", "l1.weight", "l1.bias"], ["h"], name="l1", transB=1, alpha=1.0, beta=1.0),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "l2.weight", "l2.bias"], ["z"], name="l2", transB=1),
        helper.make_node("Sigmoid", ["z"], ["y"], name="sigmoid"),
    ]
    g = helper.make_graph(
        nodes,
        "gemm_transb_dynbatch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        [
            init("l1.weight", rng.standard_normal((30, 20)).astype(np.float32) * 0.3),
            init("l1.bias", rng.standard_normal(30).astype(np.float32) * 0.1),
            init("l2.weight", rng.standard_normal((5, 30)).astype(np.float32) * 0.3),
            init("l2.bias", rng.standard_normal(5).astype(np.float32) * 0.1),
        ],
    )
    return make_model(g, 13)


def opset11_ops():
    """Attribute forms that changed later: Squeeze/Unsqueeze/ReduceSum axes and
    Split's split as attributes (inputs from 13), Clip bounds as inputs (11),
    Resize with roi/scales (11)."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["xu"], name="unsqueeze", axes=[1]),
        helper.make_node("Squeeze", ["xu"], ["xs"], name="squeeze", axes=[1]),
        helper.make_node("Split", ["xs"], ["s0", "s1"], name="split", axis=2, split=[2, 4]),
        helper.make_node("ReduceSum", ["s1"], ["r"], name="reducesum", axes=[2], keepdims=1),
        helper.make_node("Mul", ["s0", "r"], ["m"], name="mul"),
        helper.make_node("Clip", ["m", "clip.min", "clip.max"], ["c"], name="clip"),
        helper.make_node("MatMul", ["c", "proj.weight"], ["y"], name="proj"),
        helper.make_node("Resize", ["img", "roi", "scales"], ["img2"], name="resize", mode="nearest"),
    ]
    g = helper.make_graph(
        nodes,
        "opset11_ops",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6]),
            helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, 4, 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3]),
            helper.make_tensor_value_info("img2", TensorProto.FLOAT, [1, 2, 8, 8]),
        ],
        [
            init("clip.min", np.array(-2.0, np.float32)),
            init("clip.max", np.array(2.0, np.float32)),
            init("proj.weight", rng.standard_normal((2, 3)).astype(np.float32)),
            init("roi", np.array([], np.float32)),
            init("scales", np.array([1, 1, 2, 2], np.float32)),
        ],
    )
    return make_model(g, 11)


def transformer_block():
    """One pre-norm encoder block, shapes [batch, seq, 16], 2 heads."""
    rng = np.random.default_rng(17)
    d, h, f = 16, 2, 32
    hd = d // h
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)
    b = lambda n: (rng.standard_normal(n) * 0.02).astype(np.float32)
    inits = [
        init("ln1.scale", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)),
        init("ln1.bias", b(d)),
        init("q.weight", w(d, d)), init("q.bias", b(d)),
        init("k.weight", w(d, d)), init("k.bias", b(d)),
        init("v.weight", w(d, d)), init("v.bias", b(d)),
        init("o.weight", w(d, d)), init("o.bias", b(d)),
        init("ln2.scale", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)),
        init("ln2.bias", b(d)),
        init("ff1.weight", w(d, f)), init("ff1.bias", b(f)),
        init("ff2.weight", w(f, d)), init("ff2.bias", b(d)),
        init("heads.shape", np.array([0, 0, h, hd], np.int64)),
        init("merge.shape", np.array([0, 0, d], np.int64)),
        init("scale", np.array(np.sqrt(hd), np.float32)),
        init("half", np.array(0.5, np.float32)),
        init("one", np.array(1.0, np.float32)),
        init("sqrt2", np.array(np.sqrt(2.0), np.float32)),
    ]
    n = helper.make_node
    nodes = [n("LayerNormalization", ["x", "ln1.scale", "ln1.bias"], ["ln1"], name="ln1", axis=-1, epsilon=1e-5)]
    for p in "qkv":
        nodes += [
            n("MatMul", ["ln1", f"{p}.weight"], [f"{p}_mm"], name=f"{p}_proj"),
            n("Add", [f"{p}_mm", f"{p}.bias"], [f"{p}_b"], name=f"{p}_bias"),
            n("Reshape", [f"{p}_b", "heads.shape"], [f"{p}_h"], name=f"{p}_split_heads"),
        ]
    nodes += [
        n("Transpose", ["q_h"], ["q_t"], name="q_t", perm=[0, 2, 1, 3]),
        n("Transpose", ["k_h"], ["k_t"], name="k_t", perm=[0, 2, 3, 1]),
        n("Transpose", ["v_h"], ["v_t"], name="v_t", perm=[0, 2, 1, 3]),
        n("MatMul", ["q_t", "k_t"], ["scores"], name="qk"),
        n("Div", ["scores", "scale"], ["scores_s"], name="scale_scores"),
        n("Softmax", ["scores_s"], ["attn"], name="softmax", axis=-1),
        n("MatMul", ["attn", "v_t"], ["ctx"], name="attn_v"),
        n("Transpose", ["ctx"], ["ctx_t"], name="ctx_t", perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merge.shape"], ["ctx_m"], name="merge_heads"),
        n("MatMul", ["ctx_m", "o.weight"], ["o_mm"], name="o_proj"),
        n("Add", ["o_mm", "o.bias"], ["o_b"], name="o_bias"),
        n("Add", ["x", "o_b"], ["res1"], name="residual1"),
        n("LayerNormalization", ["res1", "ln2.scale", "ln2.bias"], ["ln2"], name="ln2", axis=-1, epsilon=1e-5),
        n("MatMul", ["ln2", "ff1.weight"], ["ff1_mm"], name="ff1"),
        n("Add", ["ff1_mm", "ff1.bias"], ["ff1_b"], name="ff1_bias"),
        # GELU as exporters before opset 20 write it: x * 0.5 * (1 + erf(x / sqrt 2)).
        n("Div", ["ff1_b", "sqrt2"], ["g_div"], name="gelu/div"),
        n("Erf", ["g_div"], ["g_erf"], name="gelu/erf"),
        n("Add", ["g_erf", "one"], ["g_add"], name="gelu/add"),
        n("Mul", ["ff1_b", "g_add"], ["g_mul"], name="gelu/mul"),
        n("Mul", ["g_mul", "half"], ["gelu"], name="gelu/half"),
        n("MatMul", ["gelu", "ff2.weight"], ["ff2_mm"], name="ff2"),
        n("Add", ["ff2_mm", "ff2.bias"], ["ff2_b"], name="ff2_bias"),
        n("Add", ["res1", "ff2_b"], ["y"], name="residual2"),
    ]
    g = helper.make_graph(
        nodes,
        "transformer_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        inits,
    )
    return make_model(g, 17)


def if_model():
    """An If whose branches read outer-scope values by name."""
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["then_out"], name="then_mul")],
        "then_branch",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["x", "w"], ["else_out"], name="else_sub")],
        "else_branch",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], name="sum", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"], name="positive"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(
        nodes,
        "if_branch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [init("w", np.arange(6, dtype=np.float32).reshape(2, 3) / 4), init("zero", np.array(0.0, np.float32))],
    )
    return make_model(g, 13)


def write_quirks():
    save(gemm_dynbatch(), "quirks", "gemm_transb_dynbatch_opset13.onnx")
    save(opset11_ops(), "quirks", "opset11_ops.onnx")
    save(transformer_block(), "quirks", "transformer_opset17.onnx")
    # Variable-length calibration samples: batch 1, sequence 3..10.
    calib = os.path.join(ROOT, "quirks", "transformer_calib")
    shutil.rmtree(calib, ignore_errors=True)
    rng = np.random.default_rng(170)
    for i in range(16):
        seq = 3 + (i * 5) % 8
        np.savez(path("quirks", "transformer_calib", f"{i:04d}.npz"), x=rng.standard_normal((1, seq, 16)).astype(np.float32))
    save(if_model(), "quirks", "if_branch_opset13.onnx")


# -------------------------------------------------------------- detector --


def detector():
    """A YOLO-style single-scale detector: backbone of three stride-2
    Conv+Relu, a box branch decoded as YOLOv5 does (sigmoid, grid offsets
    times the stride, squared sizes times anchors: up to ~360 pixels) and a
    class branch (sigmoid scores, ~1e-5 for absent classes: the bias
    exporters initialise to log(0.01/C)-ish), concatenated into one
    [N, 256, 4 + C] output as real exports write it."""
    rng = np.random.default_rng(23)
    c = 4  # classes
    chans = [3, 8, 16, 32]
    inits, nodes = [], []
    n = helper.make_node
    x = "image"
    for i in range(3):
        ci, co = chans[i], chans[i + 1]
        inits += [
            init(f"backbone.{i}.weight", (rng.standard_normal((co, ci, 3, 3)) * np.sqrt(2.0 / (ci * 9))).astype(np.float32)),
            init(f"backbone.{i}.bias", (rng.standard_normal(co) * 0.05).astype(np.float32)),
        ]
        nodes += [
            n("Conv", [x, f"backbone.{i}.weight", f"backbone.{i}.bias"], [f"conv{i}"], name=f"backbone.{i}.conv", pads=[1, 1, 1, 1], strides=[2, 2]),
            n("Relu", [f"conv{i}"], [f"act{i}"], name=f"backbone.{i}.relu"),
        ]
        x = f"act{i}"
    gh = gw = 8
    gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    inits += [
        init("head.box.weight", (rng.standard_normal((4, 32, 1, 1)) * 0.1).astype(np.float32)),
        init("head.box.bias", np.zeros(4, np.float32)),
        init("head.cls.weight", (rng.standard_normal((c, 32, 1, 1)) * 0.3).astype(np.float32)),
        init("head.cls.bias", np.full(c, -11.0, np.float32)),
        init("grid", np.stack([gx, gy])[None].astype(np.float32)),
        init("anchors", np.array([60.0, 90.0], np.float32).reshape(1, 2, 1, 1)),
        init("two", np.array(2.0, np.float32)),
        init("half", np.array(0.5, np.float32)),
        init("stride", np.array(8.0, np.float32)),
        init("xy_split", np.array([2, 2], np.int64)),
        init("flat", np.array([0, 4 + c, gh * gw], np.int64)),
    ]
    nodes += [
        n("Conv", [x, "head.box.weight", "head.box.bias"], ["box_raw"], name="head.box.conv"),
        n("Sigmoid", ["box_raw"], ["box_sig"], name="head.box.sigmoid"),
        n("Split", ["box_sig", "xy_split"], ["xy_sig", "wh_sig"], name="head.box.split", axis=1),
        n("Mul", ["xy_sig", "two"], ["xy_2"], name="head.xy.mul2"),
        n("Sub", ["xy_2", "half"], ["xy_off"], name="head.xy.sub"),
        n("Add", ["xy_off", "grid"], ["xy_grid"], name="head.xy.add_grid"),
        n("Mul", ["xy_grid", "stride"], ["xy"], name="head.xy.stride"),
        n("Mul", ["wh_sig", "two"], ["wh_2"], name="head.wh.mul2"),
        n("Mul", ["wh_2", "wh_2"], ["wh_sq"], name="head.wh.square"),
        n("Mul", ["wh_sq", "anchors"], ["wh"], name="head.wh.anchors"),
        n("Concat", ["xy", "wh"], ["boxes"], name="head.boxes", axis=1),
        n("Conv", [x, "head.cls.weight", "head.cls.bias"], ["cls_logits"], name="head.cls.conv"),
        n("Sigmoid", ["cls_logits"], ["scores"], name="head.cls.sigmoid"),
        n("Concat", ["boxes", "scores"], ["det"], name="head.concat", axis=1),
        n("Reshape", ["det", "flat"], ["det_flat"], name="head.flatten"),
        n("Transpose", ["det_flat"], ["detections"], name="head.transpose", perm=[0, 2, 1]),
    ]
    g = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["N", gh * gw, 4 + c])],
        inits,
    )
    return make_model(g, 13)


def detector_images(rng, k):
    """Images with structure, in 8-bit steps as decoded photos are: a
    smooth background, bright rectangles, a little noise (stored
    compressed)."""
    out = np.zeros((k, 1, 3, 64, 64), np.float32)
    yy, xx = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 64), indexing="ij")
    for i in range(k):
        a, b = rng.uniform(0.0, 0.3, 2)
        img = np.repeat((0.1 + a * yy + b * xx)[None], 3, axis=0)
        for _ in range(3):
            y0, x0 = rng.integers(0, 48, 2)
            h, w = rng.integers(6, 20, 2)
            img[:, y0:y0 + h, x0:x0 + w] += rng.uniform(0.2, 0.6, (3, 1, 1))
        img += rng.normal(0.0, 0.01, img.shape)
        out[i, 0] = np.round(np.clip(img, 0.0, 1.0) * 255) / 255
    return out


def write_detector():
    save(detector(), "detector", "detector_opset13.onnx")
    calib = os.path.join(ROOT, "detector", "calib")
    shutil.rmtree(calib, ignore_errors=True)
    rng = np.random.default_rng(230)
    for i, img in enumerate(detector_images(rng, 8)):
        np.savez_compressed(path("detector", "calib", f"{i:04d}.npz"), image=img)
    np.savez_compressed(path("detector", "holdout.npz"), image=detector_images(rng, 8))


def write_external():
    d = os.path.join(ROOT, "external")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    m = gemm_dynbatch()
    onnx.save_model(
        m,
        os.path.join(d, "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=64,
    )
    onnx.checker.check_model(os.path.join(d, "model.onnx"), full_check=True)


# ------------------------------------------------------------------- bad --


def tiny_graph(nodes, inits=(), inputs=None, outputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    return helper.make_graph(nodes, "bad", inputs, outputs, list(inits))


def external_ref(name, location, offset=0, length=8, dims=(2,)):
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def write_bad():
    d = os.path.join(ROOT, "bad")
    # bad/fuzz/ holds what the fuzz harness found (tests/it/fuzz.rs): kept.
    for entry in os.listdir(d) if os.path.isdir(d) else []:
        if entry != "fuzz":
            p = os.path.join(d, entry)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    os.makedirs(d, exist_ok=True)
    add_w = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]

    with open(path("digits", "mlp.onnx"), "rb") as f:
        full = f.read()
    with open(path("bad", "truncated.onnx"), "wb") as f:
        f.write(full[: len(full) // 2])
    with open(path("bad", "not_onnx.onnx"), "wb") as f:
        f.write(b"this is a text file, not a protobuf\n")

    w = init("w", np.ones(2, np.float32))
    w.raw_data = w.raw_data[:5]
    save(make_model(tiny_graph(add_w, [w]), 13, check=False), "bad", "raw_data_length.onnx")

    huge = TensorProto()
    huge.name, huge.data_type = "w", TensorProto.FLOAT
    huge.dims.extend([1 << 31, 1 << 31])
    huge.raw_data = b"\0" * 8
    save(make_model(tiny_graph(add_w, [huge]), 13, check=False), "bad", "huge_dims.onnx")

    cyc = [
        helper.make_node("Add", ["x", "b"], ["a"], name="add_a"),
        helper.make_node("Add", ["a", "x"], ["b"], name="add_b"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    save(make_model(tiny_graph(cyc), 13, check=False), "bad", "cycle.onnx")

    ghost = [helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")]
    save(make_model(tiny_graph(ghost), 13, check=False), "bad", "undefined_input.onnx")

    with open(path("bad", "outside.bin"), "wb") as f:
        f.write(np.ones(2, np.float32).tobytes())
    for sub, loc, off in (
        ("external_escape", "../outside.bin", 0),
        ("external_absolute", os.path.abspath(path("bad", "outside.bin")), 0),
        ("external_symlink", "link.bin", 0),
        ("external_past_end", "weights.bin", 4),
    ):
        m = make_model(tiny_graph(add_w, [external_ref("w", loc, off)]), 13, check=False)
        if sub == "external_absolute":
            # The absolute path is machine-specific; use a fixed one.
            m.graph.initializer[0].external_data[0].value = "/etc/passwd"
        save(m, "bad", sub, "model.onnx")
    os.symlink("../outside.bin", path("bad", "external_symlink", "link.bin"))
    with open(path("bad", "external_past_end", "weights.bin"), "wb") as f:
        f.write(np.ones(2, np.float32).tobytes())


def write_hostile():
    """Well-formed protobufs whose nodes crashed or hung tract (issue #29)."""
    f32 = TensorProto.FLOAT

    def vi(name, shape):
        return helper.make_tensor_value_info(name, f32, shape)

    def one(file, nodes, inits=(), x=(1, 3, 8, 8), y=None):
        g = helper.make_graph(nodes, "hostile", [vi("x", list(x))], [vi("y", y)], list(inits))
        save(make_model(g, 17, check=False), "bad", "hostile", file)

    w = init("w", np.ones((4, 3, 3, 3), np.float32))
    one("transpose_perm.onnx", [helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[0, 1, 2, 1 << 32])])
    one("transpose_perm_repeat.onnx", [helper.make_node("Transpose", ["x"], ["y"], name="tr", perm=[0, 1, 1, 2])])
    one("conv_pads_rank.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1])], [w])
    one("conv_stride_zero.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=[0, 1])], [w])
    one("conv_group_zero.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=0)], [w])
    one("conv_group_channels.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=2)], [w])
    one("conv_kernel_rank.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3])], [w])
    one("maxpool_no_kernel.onnx", [helper.make_node("MaxPool", ["x"], ["y"], name="pool")])
    one(
        "constant_of_shape_huge.onnx",
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos"),
            helper.make_node("Add", ["x", "big"], ["y"], name="add"),
        ],
        [init("shape", np.array([1 << 37], np.int64))],
    )
    one(
        "expand_huge.onnx",
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")],
        [init("shape", np.array([1 << 20, 1 << 20, 8, 8], np.int64))],
    )
    one(
        "batchnorm_rank1.onnx",
        [
            helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="bn"),
            helper.make_node("Add", ["x", "bn"], ["y"], name="add"),
        ],
        [init("c", np.ones(3, np.float32))] + [init(n, np.ones(3, np.float32)) for n in "sbmv"],
    )
    one(
        "layernorm_axis.onnx",
        [helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="ln", axis=-9)],
        [init("s", np.ones(8, np.float32))],
        x=(1, 4, 8),
    )
    one("softmax_axis.onnx", [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=7)])
    ghost = [helper.make_node("Add", ["x", "gh\x1b[31mo\nst"], ["y"], name="add\x07\nnext line")]
    save(make_model(tiny_graph(ghost), 13, check=False), "bad", "hostile", "control_bytes.onnx")


# ---------------------------------------------------------------- golden --


def write_golden():
    """Integer ops with outputs computed by ONNX's own reference
    implementation (onnx.reference.ReferenceEvaluator), as backend-test
    folders: the ground truth for `onnxq check --golden`."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(11)

    def case(name, node, inits, x):
        g = helper.make_graph(
            [node], name,
            [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, [f"d{i}" for i in range(x.ndim)])],
            [numpy_helper.from_array(v, k) for k, v in inits.items()],
        )
        m = make_model(g, 13)
        d = path("golden", name)
        shutil.rmtree(d, ignore_errors=True)
        save(m, "golden", name, "model.onnx")
        ref = ReferenceEvaluator(m)
        for i in range(2):
            xi = x if i == 0 else rng.integers(0, 256, size=x.shape).astype(np.uint8)
            y = ref.run(None, {"x": xi})[0]
            sd = path("golden", name, f"test_data_set_{i}")
            os.makedirs(sd, exist_ok=True)
            if i == 0:
                for k, t in (("input_0", numpy_helper.from_array(xi, "x")), ("output_0", numpy_helper.from_array(y, "y"))):
                    with open(os.path.join(sd, f"{k}.pb"), "wb") as f:
                        f.write(t.SerializeToString())
            else:
                np.savez(os.path.join(sd, "inputs.npz"), x=xi)
                np.savez(os.path.join(sd, "outputs.npz"), y=y)

    x = rng.integers(0, 256, size=(1, 3, 7, 6)).astype(np.uint8)
    conv = {
        "xs": np.float32(0.02), "xz": np.uint8(120),
        "w": rng.integers(-128, 128, size=(4, 3, 3, 3)).astype(np.int8),
        "ws": rng.uniform(0.002, 0.01, size=4).astype(np.float32), "wz": np.zeros(4, np.int8),
        "ys": np.float32(0.3), "yz": np.uint8(128),
        "b": rng.integers(-2000, 2000, size=4).astype(np.int32),
    }
    case("qlinearconv", helper.make_node(
        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
        pads=[1, 0, 1, 2], strides=[2, 1]), conv, x)
    a = rng.integers(0, 256, size=(2, 5, 9)).astype(np.uint8)
    mm = {
        "as": np.float32(0.03), "az": np.uint8(100),
        "b": rng.integers(-128, 128, size=(9, 7)).astype(np.int8),
        "bs": rng.uniform(0.002, 0.01, size=7).astype(np.float32), "bz": np.zeros(7, np.int8),
        "ys": np.float32(0.2), "yz": np.uint8(110),
    }
    case("qlinearmatmul", helper.make_node(
        "QLinearMatMul", ["x", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]), mm, a)



# ------------------------------------------------------------------ text --

TEXT_WORDS = (
    "the a an this that model runtime quantize quantized calibration sample samples "
    "layer layers weight weights output outputs input inputs image images text token "
    "tokens sentence sentences fast slow small large accurate broken good bad works "
    "fails is are was were be run runs ran on in of to for with from and or not it "
    "we you they user users export exports file files phone edge server cpu gpu int8 "
    "float fp32 accuracy error errors gate passes refused written report reports "
    "detector recognizer classifier encoder embedding embeddings attention mask head "
    "heads batch sequence length every each one two three many few today tomorrow"
).split()
TEXT_SUFFIXES = ["##s", "##ed", "##ing", "##er", "##ly", "##ation"]


def text_tokenizer():
    """A BERT-style WordPiece tokenizer.json (Hugging Face's format):
    lowercasing BertNormalizer, BertPreTokenizer, [CLS] A [SEP] (B [SEP])
    with token type ids, a 140-token vocabulary."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab_list = special + TEXT_WORDS + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + TEXT_SUFFIXES
    vocab = {}
    for t in vocab_list:
        vocab.setdefault(t, len(vocab))
    added = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
        for t in special
    ]
    tok = lambda t, ty: {"SpecialToken": {"id": t, "type_id": ty}}
    seq = lambda s, ty: {"Sequence": {"id": s, "type_id": ty}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": True, "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [tok("[CLS]", 0), seq("A", 0), tok("[SEP]", 0)],
            "pair": [tok("[CLS]", 0), seq("A", 0), tok("[SEP]", 0), seq("B", 1), tok("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [vocab["[CLS]"]], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [vocab["[SEP]"]], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }, len(vocab)


def text_encoder(vocab_size, fixed_seq=None):
    """A BERT-style sentence classifier head on token embeddings: word +
    token-type (16 types) + position (64) embeddings (Gather), LayerNorm, attention-masked
    mean pooling, MatMul-Relu-MatMul to 3 logits. Inputs input_ids,
    attention_mask, token_type_ids int64 [batch, seq]. Seeded random
    weights."""
    rng = np.random.default_rng(23)
    d, f, max_pos = 32, 64, 64
    seq = fixed_seq or "seq"
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)
    inits = [
        init("word_embeddings", (rng.standard_normal((vocab_size, d)) * 0.5).astype(np.float32)),
        # 16 token types (BERT has 2): the cross-checks' and tests' random
        # integer inputs (0..9) stay in range.
        init("type_embeddings", (rng.standard_normal((16, d)) * 0.1).astype(np.float32)),
        init("position_embeddings", (rng.standard_normal((max_pos, d)) * 0.1).astype(np.float32)),
        init("ln.scale", (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)),
        init("ln.bias", (0.02 * rng.standard_normal(d)).astype(np.float32)),
        init("fc1.weight", w(d, f)), init("fc1.bias", (0.02 * rng.standard_normal(f)).astype(np.float32)),
        init("fc2.weight", w(f, 3)), init("fc2.bias", (0.02 * rng.standard_normal(3)).astype(np.float32)),
        init("zero", np.array(0, np.int64)), init("one_i", np.array(1, np.int64)),
        init("axis1", np.array([1], np.int64)), init("axis2", np.array([2], np.int64)),
        init("eps", np.array(1e-6, np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["word_embeddings", "input_ids"], ["we"], name="embeddings/word", axis=0),
        n("Gather", ["type_embeddings", "token_type_ids"], ["te"], name="embeddings/type", axis=0),
        n("Shape", ["input_ids"], ["ids_shape"], name="embeddings/shape"),
        n("Gather", ["ids_shape", "one_i"], ["seq_len"], name="embeddings/seq_len", axis=0),
        n("Range", ["zero", "seq_len", "one_i"], ["positions"], name="embeddings/positions"),
        n("Gather", ["position_embeddings", "positions"], ["pe"], name="embeddings/position", axis=0),
        n("Add", ["we", "te"], ["wte"], name="embeddings/add_type"),
        n("Add", ["wte", "pe"], ["emb"], name="embeddings/add_position"),
        n("LayerNormalization", ["emb", "ln.scale", "ln.bias"], ["h"], name="embeddings/ln", axis=-1, epsilon=1e-12),
        n("Cast", ["attention_mask"], ["mask_f"], name="pool/cast", to=TensorProto.FLOAT),
        n("Unsqueeze", ["mask_f", "axis2"], ["mask_u"], name="pool/unsqueeze"),
        n("Mul", ["h", "mask_u"], ["hm"], name="pool/mask"),
        n("ReduceSum", ["hm", "axis1"], ["hsum"], name="pool/sum", keepdims=0),
        n("ReduceSum", ["mask_u", "axis1"], ["msum"], name="pool/count", keepdims=0),
        n("Max", ["msum", "eps"], ["msafe"], name="pool/safe"),
        n("Div", ["hsum", "msafe"], ["pooled"], name="pool/mean"),
        n("MatMul", ["pooled", "fc1.weight"], ["fc1_mm"], name="classifier/fc1"),
        n("Add", ["fc1_mm", "fc1.bias"], ["fc1_b"], name="classifier/fc1_bias"),
        n("Relu", ["fc1_b"], ["fc1_r"], name="classifier/relu"),
        n("MatMul", ["fc1_r", "fc2.weight"], ["fc2_mm"], name="classifier/fc2"),
        n("Add", ["fc2_mm", "fc2.bias"], ["logits"], name="classifier/fc2_bias"),
    ]
    ins = [helper.make_tensor_value_info(k, TensorProto.INT64, ["batch", seq])
           for k in ("input_ids", "attention_mask", "token_type_ids")]
    g = helper.make_graph(nodes, "text_encoder", ins,
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    return make_model(g, 17)


def write_text():
    tok, vocab_size = text_tokenizer()
    os.makedirs(path("text"), exist_ok=True)
    with open(path("text", "tokenizer.json"), "w") as fh:
        json.dump(tok, fh, indent=1)
        fh.write("\n")
    save(text_encoder(vocab_size), "text", "encoder.onnx")
    save(text_encoder(vocab_size, fixed_seq=16), "text", "encoder_seq16.onnx")
    rng = np.random.default_rng(230)
    lines = []
    for i in range(32):
        k = int(rng.integers(3, 14))
        words = [TEXT_WORDS[int(j)] for j in rng.integers(0, len(TEXT_WORDS), k)]
        # Some words the vocabulary splits (##s, ##ing) or does not know.
        if i % 4 == 1:
            words[0] = words[0] + "ing"
        if i % 7 == 3:
            words.append("zebra")
        s = " ".join(words).capitalize() + ("." if i % 3 else "?")
        if i % 5 == 4:
            s += "\t" + " ".join(TEXT_WORDS[int(j)] for j in rng.integers(0, len(TEXT_WORDS), 4))
        lines.append(s)
    with open(path("text", "sentences.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main():
    if sys.argv[1:] == ["text"]:
        # Only the text models (tools/make_testdata.py text).
        write_text()
        return 0
    write_text()
    write_golden()
    write_digits()
    write_quirks()
    write_detector()
    write_external()
    write_bad()
    write_hostile()
    print("testdata written under", os.path.normpath(ROOT))


if __name__ == "__main__":
    sys.exit(main())
