#!/usr/bin/env python3
"""Cross-checks onnxq's load/save against onnx and onnxruntime.

    .venv/bin/python tools/crosscheck_roundtrip.py [--onnxq target/release/onnxq]

For every model in the corpus (testdata/, the models the `onnx` wheel ships
under onnx/backend/test/data, real PaddlePaddle exports shipped by the
rapidocr_onnxruntime wheel, and scikit-learn models converted by skl2onnx:
ai.onnx.ml ops, ZipMap sequence-of-map outputs):

1. `onnxq inspect --json` succeeds;
2. `onnxq convert` writes a model that onnx's checker accepts (full check)
   whenever the original passes it, with the same nodes, inputs, outputs,
   opsets, metadata and initializer values;
3. for models onnxruntime can run, the converted model gives bit-identical
   outputs on the same random inputs;
4. the same with `--external-data`, reloaded through onnx.load.

Prints one line per model and a summary `N passed, M failed`; exits 1 on any
failure.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


_SKLEARN_DIR = None


def sklearn_exports():
    """Real scikit-learn converter output (skl2onnx): ai.onnx.ml ops and a
    ZipMap output (sequence of maps), written once per run to a temp dir."""
    global _SKLEARN_DIR
    try:
        from skl2onnx import to_onnx
        from sklearn.datasets import load_digits
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return []
    if _SKLEARN_DIR is None:
        _SKLEARN_DIR = tempfile.mkdtemp(prefix="onnxq-sklearn-")
        x, y = load_digits(return_X_y=True)
        x = x.astype(np.float32)
        models = {
            "sklearn_logreg_pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
            "sklearn_random_forest": RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0),
        }
        for name, m in models.items():
            m.fit(x, y)
            onx = to_onnx(m, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
            with open(os.path.join(_SKLEARN_DIR, name + ".onnx"), "wb") as f:
                f.write(onx.SerializeToString())
    return sorted(glob.glob(os.path.join(_SKLEARN_DIR, "*.onnx")))


def corpus():
    models = sorted(
        p for p in glob.glob(os.path.join(ROOT, "testdata", "**", "*.onnx"), recursive=True)
        if os.sep + "bad" + os.sep not in p
    )
    data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    models += sorted(glob.glob(os.path.join(data, "*", "*", "model.onnx")))
    models += sorted(glob.glob(os.path.join(data, "light", "*.onnx")))
    try:
        import importlib.util

        spec = importlib.util.find_spec("rapidocr_onnxruntime")
        if spec and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                models += sorted(glob.glob(os.path.join(loc, "models", "*.onnx")))
    except ImportError:
        pass
    models += sklearn_exports()
    return models


def node_key(n):
    """A node's bytes with tensor attributes replaced by their values, so
    that a payload moved to (and back from) external data compares equal."""
    n = onnx.NodeProto.FromString(n.SerializeToString())
    values = []
    for a in n.attribute:
        if a.HasField("t"):
            arr = numpy_helper.to_array(a.t)
            values.append((a.name, arr.dtype.str, arr.shape, arr.tobytes()))
            a.ClearField("t")
    return n.SerializeToString(), values


def same_graph(a, b):
    ga, gb = a.graph, b.graph
    if len(ga.node) != len(gb.node):
        return "node counts differ"
    for x, y in zip(ga.node, gb.node):
        if node_key(x) != node_key(y):
            return f"node '{x.name}' ({x.op_type}) differs"
    for field in ("input", "output"):
        if [x.SerializeToString() for x in getattr(ga, field)] != [x.SerializeToString() for x in getattr(gb, field)]:
            return f"graph {field} differ"
    if list(a.opset_import) != list(b.opset_import):
        return "opset imports differ"
    if list(a.metadata_props) != list(b.metadata_props):
        return "metadata differs"
    ia = {t.name: numpy_helper.to_array(t) for t in ga.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in gb.initializer}
    if ia.keys() != ib.keys():
        return "initializer names differ"
    for k in ia:
        if ia[k].dtype != ib[k].dtype or ia[k].shape != ib[k].shape or not np.array_equal(ia[k], ib[k], equal_nan=True):
            return f"initializer {k} differs"
    return None


def random_feed(sess, rng):
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        if "float" in i.type:
            dt = np.float16 if "float16" in i.type else (np.float64 if "double" in i.type else np.float32)
            feed[i.name] = rng.standard_normal(shape).astype(dt)
        elif "int64" in i.type:
            feed[i.name] = rng.integers(0, 3, shape).astype(np.int64)
        elif "int32" in i.type:
            feed[i.name] = rng.integers(0, 3, shape).astype(np.int32)
        elif "bool" in i.type:
            feed[i.name] = rng.integers(0, 2, shape).astype(bool)
        elif "uint8" in i.type:
            feed[i.name] = rng.integers(0, 256, shape).astype(np.uint8)
        elif "int8" in i.type:
            feed[i.name] = rng.integers(-128, 128, shape).astype(np.int8)
        else:
            return None
    return feed


def outputs_equal(orig_path, new_path):
    """None if equal or not runnable; an error string if outputs differ."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    ort.set_default_logger_severity(4)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        s1 = ort.InferenceSession(orig_path, opts, providers=["CPUExecutionProvider"])
    except Exception:
        return None  # onnxruntime cannot run the original either
    feed = random_feed(s1, np.random.default_rng(0))
    if feed is None:
        return None
    try:
        o1 = s1.run(None, feed)
    except Exception:
        return None
    s2 = ort.InferenceSession(new_path, opts, providers=["CPUExecutionProvider"])
    o2 = s2.run(None, feed)
    for k, (x, y) in enumerate(zip(o1, o2)):
        if isinstance(x, list):
            # Sequences (e.g. ZipMap's list of dicts): exact equality.
            same = x == y
        else:
            same = np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
        if not same:
            return f"output {k} differs"
    return None


def check(onnxq, path, tmp):
    r = subprocess.run([onnxq, "inspect", "--json", path], capture_output=True, text=True)
    if r.returncode != 0:
        return f"inspect failed: {r.stderr.strip()}"
    json.loads(r.stdout)
    orig = onnx.load(path)
    try:
        onnx.checker.check_model(orig, full_check=True)
        orig_valid = True
    except Exception:
        orig_valid = False
    for variant, extra in (("inline", []), ("external", ["--external-data", "--external-threshold", "64"])):
        out = os.path.join(tmp, variant, "out.onnx")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        r = subprocess.run([onnxq, "convert", path, "-o", out] + extra, capture_output=True, text=True)
        if r.returncode != 0:
            return f"convert ({variant}) failed: {r.stderr.strip()}"
        new = onnx.load(out)
        if orig_valid:
            try:
                onnx.checker.check_model(out, full_check=True)
            except Exception as e:
                return f"checker rejects the {variant} output: {str(e).splitlines()[0]}"
        diff = same_graph(orig, new)
        if diff:
            return f"{variant}: {diff}"
        diff = outputs_equal(path, out)
        if diff:
            return f"{variant}: onnxruntime {diff}"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnxq", default=os.path.join(ROOT, "target", "release", "onnxq"))
    args = ap.parse_args()
    passed = failed = 0
    for path in corpus():
        with tempfile.TemporaryDirectory() as tmp:
            err = check(args.onnxq, path, tmp)
        name = os.path.relpath(path, ROOT) if path.startswith(ROOT) else path.split("site-packages" + os.sep)[-1]
        if err:
            failed += 1
            print(f"FAIL {name}: {err}")
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"roundtrip: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
