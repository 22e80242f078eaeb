#!/usr/bin/env python3
"""Cross-checks `onnxq optimize` against onnx and onnxruntime.

    .venv/bin/python tools/crosscheck_optimize.py [--onnxq target/release/onnxq]

For every model of the corpus (see crosscheck_roundtrip.py) that onnxruntime
can run: `onnxq optimize` (and `--opset 13` for models below 13) must write a
model that onnx's full checker accepts and whose outputs on the same random
inputs stay within 1e-4 of each output's range (the passes reorder float
arithmetic: BatchNorm folding, constant folding). Also reports what the
passes did: nodes before/after, Constant nodes left.

Prints one line per model and `optimize: N passed, M failed`; exits 1 on any
failure.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crosscheck_roundtrip import ROOT, corpus, random_feed  # noqa: E402

ort.set_default_logger_severity(4)


def session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    # No onnxruntime graph optimizations: compare the models as written.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def compare(o1, o2):
    for k, (x, y) in enumerate(zip(o1, o2)):
        if isinstance(x, list):
            # Sequences (e.g. ZipMap's list of dicts): exact equality.
            if x != y:
                return f"output {k} (a sequence) differs"
            continue
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return f"output {k}: shape {x.shape} vs {y.shape}"
        if x.dtype.kind not in "fc":
            if not np.array_equal(x, y):
                return f"output {k} differs"
            continue
        finite = np.isfinite(x)
        if not np.array_equal(finite, np.isfinite(y)):
            return f"output {k}: non-finite values differ"
        if not finite.any():
            continue
        xf, yf = x[finite].astype(np.float64), y[finite].astype(np.float64)
        rng = max(xf.max() - xf.min(), 1e-6)
        worst = np.abs(xf - yf).max()
        if worst > 1e-4 * rng:
            return f"output {k} differs by {worst:.3g} (range {rng:.3g})"
    return None


def check(onnxq, path, tmp):
    try:
        s1 = session(path)
    except Exception:
        return "skip", "onnxruntime cannot load the original"
    feed = random_feed(s1, np.random.default_rng(0))
    if feed is None:
        return "skip", "inputs of a type the harness does not generate"
    try:
        o1 = s1.run(None, feed)
    except Exception:
        return "skip", "onnxruntime cannot run the original on random inputs"
    opset = next((o.version for o in onnx.load(path, load_external_data=False).opset_import if o.domain in ("", "ai.onnx")), 0)
    notes = []
    for extra in ([], ["--opset", "13"]) if opset < 13 else ([],):
        out = os.path.join(tmp, "opt.onnx")
        r = subprocess.run([onnxq, "optimize", path, "-o", out, "--force"] + extra, capture_output=True, text=True)
        if r.returncode != 0:
            return "fail", f"optimize {' '.join(extra)} failed: {r.stderr.strip()}"
        try:
            onnx.checker.check_model(out, full_check=True)
        except Exception as e:
            return "fail", f"checker rejects optimize {' '.join(extra)}: {str(e).splitlines()[0]}"
        try:
            o2 = session(out).run(None, feed)
        except Exception as e:
            return "fail", f"onnxruntime cannot run optimize {' '.join(extra)}: {str(e).splitlines()[0]}"
        diff = compare(o1, o2)
        if diff:
            return "fail", f"optimize {' '.join(extra)}: {diff}"
        m0, m1 = onnx.load(path), onnx.load(out)
        consts = sum(n.op_type == "Constant" for n in m1.graph.node)
        notes.append(f"{' '.join(extra) or 'default'}: {len(m0.graph.node)}->{len(m1.graph.node)} nodes, {consts} Constant left")
    return "ok", "; ".join(notes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    args = ap.parse_args()
    counts = {"ok": 0, "fail": 0, "skip": 0}
    for path in corpus():
        with tempfile.TemporaryDirectory() as tmp:
            status, msg = check(args.onnxq, path, tmp)
        counts[status] += 1
        name = os.path.relpath(path, ROOT) if path.startswith(ROOT) else path.split("site-packages" + os.sep)[-1]
        print(f"{status:4} {name}: {msg}")
    print(f"optimize: {counts['ok']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
