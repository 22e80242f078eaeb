"""The runtimes a quantized model is deployed on, behind one interface.

    sess = open_session("openvino", "model.onnx")   # or "ort", "tract"
    outputs = sess.run({"x": array})                # graph output order

- ``ort``: onnxruntime's CPU provider, one thread (what the suite has
  always measured).
- ``openvino``: OpenVINO's CPU plugin, as a user compiles a model: the
  ONNX frontend (``Core.read_model``), ``compile_model(..., "CPU")`` with
  one inference thread and the plugin's own default precision (f32 on a
  CPU without bf16/AMX; the FP32 row of the runtime table shows what the
  runtime itself changes).
- ``tract``: tract's Python package (the same release onnxq links), the
  model typed with its declared input shapes and optimized once (a plan
  per input shape when tract cannot type the declared ones).

A model a runtime cannot load raises; callers report the message as that
runtime's result. ``available()`` lists the runtimes whose package is
installed.
"""
import importlib.util

import numpy as np

RUNTIMES = ("ort", "openvino", "tract")


def available():
    mods = {"ort": "onnxruntime", "openvino": "openvino", "tract": "tract"}
    return [r for r in RUNTIMES if importlib.util.find_spec(mods[r]) is not None]


class Ort:
    def __init__(self, path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def run(self, feed):
        return self.sess.run(None, feed)


class OpenVino:
    def __init__(self, path):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path)
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})
        self.outputs = list(self.compiled.outputs)
        self.output_names = [o.get_any_name() for o in self.outputs]
        self.request = self.compiled.create_infer_request()

    def run(self, feed):
        res = self.request.infer(feed)
        return [np.array(res[o]) for o in self.outputs]


class Tract:
    """As a tract user runs an ONNX file: loaded, typed and optimized once
    with its declared (possibly symbolic) input shapes. A model whose
    inputs tract cannot type that way (no declared shape) gets a plan per
    distinct input shape instead."""

    def __init__(self, path):
        import tract

        self.tract = tract
        self.path = path
        self.plans = {}
        model = tract.onnx().load(path)
        self.input_names = [model.input_name(i) for i in range(model.input_count())]
        self.output_names = [model.output_name(i) for i in range(model.output_count())]
        try:
            self.symbolic = model.into_model().into_runnable()
        except Exception:
            self.symbolic = None

    def plan(self, feed):
        if self.symbolic is not None:
            return self.symbolic
        key = tuple((n, feed[n].shape, str(feed[n].dtype)) for n in self.input_names)
        if key not in self.plans:
            m = self.tract.onnx().load(self.path)
            for i, n in enumerate(self.input_names):
                a = feed[n]
                dt = {"float32": "f32", "int64": "i64", "int32": "i32", "uint8": "u8", "int8": "i8", "bool": "bool"}[str(a.dtype)]
                m.set_input_fact(i, ",".join(str(d) for d in a.shape) + "," + dt if a.ndim else dt)
            self.plans[key] = m.into_model().into_runnable()
        return self.plans[key]

    def run(self, feed):
        outs = self.plan(feed).run([feed[n] for n in self.input_names])
        return [o.to_numpy() for o in outs]


def open_session(runtime, path):
    return {"ort": Ort, "openvino": OpenVino, "tract": Tract}[runtime](path)
