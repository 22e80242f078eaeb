"""onnxq: quantize FP32 ONNX models to INT8, and prove the result still
computes what the original did.

The same pipeline as the ``onnxq`` command (which this package also
installs), from Python::

    import onnxq
    report = onnxq.quantize("model.onnx", "model.int8.onnx", calibration=reader)

``reader`` is any iterable of ``dict[str, numpy.ndarray]`` (input name to
array), an object with onnxruntime's ``CalibrationDataReader`` protocol
(``get_next()`` until it returns ``None``), or a string the command's
``--calib`` takes (a folder of ``.npz`` files, ``random:N``). Keyword
options are the YAML recipe's keys with underscores (``method="percentile"``,
``per_channel=False``, ``exclude=["/head/*"]``, ``min_sqnr=25``,
``auto=False``); ``recipe=`` takes a recipe file or a dict, the keywords
laid over it.

A model that fails the parity gate raises :class:`GateError` (carrying the
report, its ``verdict``); nothing is written unless ``force=True``. Any
other failure raises :class:`Error` naming the node, tensor or file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

import numpy as np

from . import _onnxq
from ._onnxq import Error

__version__ = _onnxq.__version__

__all__ = ["quantize", "check", "calibrate", "Error", "GateError", "__version__"]

PathLike = Union[str, "os.PathLike[str]"]


class GateError(Error):
    """The quantized model failed the parity gate.

    ``report`` is the whole report (a dict, as ``--report`` writes it),
    ``verdict`` its ``parity`` part: per output the metrics, values and
    thresholds. ``written`` says whether the model was written anyway
    (``force=True``).
    """

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report
        self.verdict = report.get("parity")
        self.written = bool(report.get("written"))


def _array(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        if np.isscalar(value) or isinstance(value, (list, tuple)):
            value = np.asarray(value)
        else:
            raise TypeError(f"{where}: expected a numpy.ndarray, got {type(value).__name__}")
    # Shared with onnxq as it is when C-contiguous and native-endian;
    # copied only otherwise.
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return np.ascontiguousarray(value)


def _samples(source: Any, what: str) -> Union[None, str, list]:
    """A reader, an iterable of dicts or a string, as the extension takes it."""
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Mapping):
        raise TypeError(
            f"{what}: expected an iterable of dict[str, numpy.ndarray] "
            "(one dict per sample), got one dict"
        )
    if hasattr(source, "get_next"):
        items: Iterable = iter(source.get_next, None)
    elif isinstance(source, Iterable):
        items = source
    else:
        raise TypeError(
            f"{what}: expected a CalibrationDataReader, an iterable of "
            f"dict[str, numpy.ndarray] or a string, got {type(source).__name__}"
        )
    out = []
    for i, sample in enumerate(items):
        if not isinstance(sample, Mapping):
            raise TypeError(
                f"{what} sample {i}: expected dict[str, numpy.ndarray], "
                f"got {type(sample).__name__}"
            )
        out.append(
            {str(k): _array(v, f"{what} sample {i} input '{k}'") for k, v in sample.items()}
        )
    if not out:
        raise Error(f"{what}: the reader gave no samples")
    if hasattr(source, "rewind"):
        # onnxruntime's readers can be read again after a rewind.
        source.rewind()
    return out


def _options(options: Mapping[str, Any]) -> str:
    """Keyword options as recipe JSON (underscores to the recipe's dashes)."""
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        out[key.replace("_", "-")] = value
    return json.dumps(out)


def _progress(progress: Optional[bool]) -> bool:
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def _recipe(recipe: Union[None, PathLike, Mapping[str, Any]]):
    if recipe is None:
        return None, None
    if isinstance(recipe, (str, os.PathLike)):
        return os.fspath(recipe), None
    if isinstance(recipe, Mapping):
        return None, _options(recipe)
    raise TypeError(f"recipe: expected a path or a dict, got {type(recipe).__name__}")


def quantize(
    model: PathLike,
    output: PathLike,
    calibration: Any = None,
    *,
    validation: Any = None,
    recipe: Union[None, PathLike, Mapping[str, Any]] = None,
    force: bool = False,
    jobs: int = 0,
    arith: str = "ort",
    progress: Optional[bool] = None,
    verbose: bool = False,
    **options: Any,
) -> dict:
    """Quantize ``model`` to ``output``: what ``onnxq quantize`` does.

    ``calibration``: the samples (a reader, an iterable of dicts of arrays,
    or a ``--calib`` string); ``validation``: the gate's samples (default:
    the calibration samples). ``recipe``: a YAML recipe file or a dict of
    its keys; ``**options`` (recipe keys, underscores for dashes) override
    it. ``jobs``: worker threads (0: one per core); ``arith``: the gate's
    requantization (``"ort"`` or ``"exact"``); ``progress``: progress bars
    on stderr (default: when stderr is a terminal); ``verbose``: print the command's summary to stderr.

    Returns the report (a dict, as ``--report`` writes it). Raises
    :class:`GateError` when the model fails the parity gate (written
    anyway with ``force=True``), :class:`Error` on anything else.
    """
    recipe_file, recipe_json = _recipe(recipe)
    # Sample specs go into the recipe, as the command's --calib and
    # --validate do (the model's recorded recipe names them).
    if isinstance(calibration, (str, os.PathLike)):
        options["calib"], calibration = os.fspath(calibration), None
    if isinstance(validation, (str, os.PathLike)):
        options["validate"], validation = os.fspath(validation), None
    report_json, summary = _onnxq.quantize(
        os.fspath(model),
        os.fspath(output),
        _samples(calibration, "calibration"),
        _samples(validation, "validation"),
        recipe_file,
        recipe_json,
        _options(options),
        bool(force),
        int(jobs),
        str(arith),
        _progress(progress),
    )
    report = json.loads(report_json)
    if verbose:
        sys.stderr.write(summary)
    if not report["parity"]["passed"]:
        where = "written anyway (force=True)" if report.get("written") else "nothing written"
        raise GateError(
            f"{os.fspath(model)}: the quantized model failed the parity gate; {where}\n{summary}",
            report,
        )
    return report


def check(
    model: PathLike,
    reference: PathLike,
    data: Any,
    *,
    arith: str = "ort",
    dims: Optional[Mapping[str, int]] = None,
    worst: int = 5,
    verbose: bool = False,
    runtime: Optional[str] = None,
    runtime_lib: Optional[PathLike] = None,
    **gate: Any,
) -> dict:
    """Compare a quantized ``model`` (onnxq's or another tool's, QDQ or
    QOperator) with its FP32 ``reference`` on ``data`` (a reader, an
    iterable of dicts of arrays or a ``--data`` string): what
    ``onnxq check --reference`` does.

    ``runtime="ort"`` or ``"openvino"`` runs the quantized model in that
    runtime instead of onnxq's executor (``--runtime``): the verdict is on
    what the deployment runtime computes. Its shared library is
    ``runtime_lib`` when given, else the one the installed ``onnxruntime``
    or ``openvino`` package ships.

    ``**gate``: thresholds as the recipe names them (``min_sqnr``,
    ``min_cosine``, ``min_top1``, ``gate_outputs={...}``), and
    ``preprocess=`` / ``tokenizer=`` when ``data`` is a folder of images or
    a text file of sentences. Returns the
    verdict (a dict: ``passed``, per output its metrics, the worst layers);
    a failed comparison is ``passed: False``, not an exception.
    """
    if runtime is not None and runtime_lib is None:
        runtime_lib = _runtime_library(runtime)
    verdict_json, text = _onnxq.check(
        os.fspath(model),
        os.fspath(reference),
        _samples(data, "data"),
        _options(gate),
        str(arith),
        dict(dims or {}),
        int(worst),
        None if runtime is None else str(runtime),
        None if runtime_lib is None else os.fspath(runtime_lib),
    )
    if verbose:
        sys.stderr.write(text)
    return json.loads(verdict_json)


def _runtime_library(runtime: str) -> Optional[str]:
    """The folder of the runtime's shared library in its installed Python
    package (onnxruntime/capi, openvino/libs), or None (onnxq then searches
    as ``onnxq check --runtime`` does)."""
    import importlib.util

    package, sub = {"ort": ("onnxruntime", "capi"), "openvino": ("openvino", "libs")}.get(runtime, (None, None))
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], sub)
    return folder if os.path.isdir(folder) else None


def calibrate(
    model: PathLike,
    calibration: Any,
    output: Optional[PathLike] = None,
    *,
    method: str = "minmax",
    percentile: float = 99.999,
    activations: str = "uint8",
    per_channel: bool = False,
    jobs: int = 0,
    dims: Optional[Mapping[str, int]] = None,
    progress: Optional[bool] = None,
) -> dict:
    """Activation ranges of ``model`` on ``calibration``: what
    ``onnxq calibrate`` does. Writes the table to ``output`` (JSON, which
    ``quantize(..., ranges=output)`` reuses) when given, and returns it.
    ``method``: minmax, avg-minmax, percentile, entropy, mse, auto.
    """
    table = _onnxq.calibrate(
        os.fspath(model),
        _samples(calibration, "calibration"),
        None if output is None else os.fspath(output),
        str(method),
        float(percentile),
        str(activations),
        bool(per_channel),
        int(jobs),
        dict(dims or {}),
        _progress(progress),
    )
    return json.loads(table)
