"""The Python package against the built extension: readers, options,
errors, the gate's exception, check, calibrate and the installed command."""

import json
import os
import subprocess
import threading

import numpy as np
import onnxq
import pytest
from conftest import DIGITS, ONNXQ, exists


def test_a_list_of_dicts_quantizes_and_writes_a_model_that_passed(cnn, calib_dicts, out):
    report = onnxq.quantize(cnn, out, calibration=calib_dicts)
    assert exists(out) and report["written"]
    assert report["parity"]["passed"]
    assert report["calibration"]["samples"] == 32
    assert report["quantization"]["quantized"]["Conv"] == 2
    assert report["output"] == out
    assert report["timings"]["total"] > 0
    [logits] = report["parity"]["outputs"]
    assert logits["sqnr_db"] > 30


def test_the_report_is_the_commands_report(cnn, out, tmp_path):
    """The same samples from Python and from a folder give the same
    model, byte for byte (the pipeline is deterministic and the same)."""
    calib = str(DIGITS / "cnn_calib")
    onnxq.quantize(cnn, out, calibration=calib)
    other = str(tmp_path / "cli.onnx")
    rc = subprocess.run(
        [ONNXQ, "quantize", cnn, "-o", other, "--calib", calib], capture_output=True
    ).returncode
    assert rc == 0
    assert open(out, "rb").read() == open(other, "rb").read()


class Reader:
    """onnxruntime's CalibrationDataReader protocol, without onnxruntime."""

    def __init__(self, samples):
        self.samples, self.it, self.rewound = samples, None, 0

    def get_next(self):
        if self.it is None:
            self.it = iter(self.samples)
        return next(self.it, None)

    def rewind(self):
        self.it, self.rewound = None, self.rewound + 1


def test_a_calibration_data_reader_is_read_to_its_end_and_rewound(cnn, calib_dicts, out):
    reader = Reader(calib_dicts[:20])
    report = onnxq.quantize(cnn, out, calibration=reader)
    assert report["calibration"]["samples"] == 20
    assert reader.rewound == 1
    assert reader.get_next() is calib_dicts[0]


def test_a_generator_is_a_reader(cnn, calib_dicts, out):
    report = onnxq.quantize(cnn, out, calibration=(s for s in calib_dicts[:10]))
    assert report["calibration"]["samples"] == 10


def test_arrays_in_any_layout_give_the_same_model(cnn, calib_dicts, out, tmp_path):
    """Fortran-ordered, strided and big-endian arrays are converted (the
    C-contiguous native ones are shared as they are): same bytes out."""
    onnxq.quantize(cnn, out, calibration=calib_dicts)
    odd = []
    for k, s in enumerate(calib_dicts):
        x = s["image"]
        if k % 3 == 0:
            x = np.asfortranarray(x)
        elif k % 3 == 1:
            x = np.repeat(x, 2, axis=3)[:, :, :, ::2]
        else:
            x = x.astype(">f4")
        odd.append({"image": x})
    other = str(tmp_path / "odd.onnx")
    onnxq.quantize(cnn, other, calibration=odd)
    assert open(out, "rb").read() == open(other, "rb").read()


def test_keyword_options_are_the_recipes_keys(cnn, calib_dicts, out):
    report = onnxq.quantize(
        cnn, out, calibration=calib_dicts, format="qdq", per_channel=False, gptq=False
    )
    assert report["format"] == "qdq"
    assert report["gptq"] is None


def test_a_recipe_file_or_dict_with_keywords_laid_over_it(cnn, calib_dicts, out, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("format: qdq\nmethod: percentile\npercentile: 99.99\n")
    report = onnxq.quantize(cnn, out, calibration=calib_dicts, recipe=recipe)
    assert report["format"] == "qdq"
    assert report["calibration"]["method"] == "percentile"
    report = onnxq.quantize(
        cnn, out, calibration=calib_dicts, recipe={"format": "qdq"}, format="qoperator"
    )
    assert report["format"] == "qoperator"


def test_an_unknown_keyword_is_a_type_error_naming_it(cnn, calib_dicts, out):
    with pytest.raises(TypeError, match="unknown field `min_snr`"):
        onnxq.quantize(cnn, out, calibration=calib_dicts, min_snr=25)
    assert not exists(out)


def test_a_failed_gate_raises_with_the_verdict_and_writes_nothing(cnn, calib_dicts, out):
    with pytest.raises(onnxq.GateError) as e:
        onnxq.quantize(cnn, out, calibration=calib_dicts, min_sqnr=90, auto=False)
    assert not exists(out)
    err = e.value
    assert isinstance(err, onnxq.Error)
    assert not err.written and not err.verdict["passed"]
    [logits] = err.verdict["outputs"]
    sqnr = [c for c in logits["gate"] if c["metric"] == "sqnr"][0]
    assert sqnr["min"] == 90 and sqnr["value"] < 90 and not sqnr["passed"]
    assert "failed the parity gate; nothing written" in str(err)


def test_force_writes_a_failed_model_and_still_raises(cnn, calib_dicts, out):
    with pytest.raises(onnxq.GateError) as e:
        onnxq.quantize(cnn, out, calibration=calib_dicts, min_sqnr=90, auto=False, force=True)
    assert e.value.written and exists(out)


def test_samples_that_do_not_fit_the_model_name_the_input(cnn, calib_dicts, out):
    with pytest.raises(onnxq.Error, match="pixels"):
        onnxq.quantize(cnn, out, calibration=[{"pixels": calib_dicts[0]["image"]}])
    with pytest.raises(onnxq.Error, match="image"):
        onnxq.quantize(cnn, out, calibration=[{"image": np.zeros((1, 1, 9, 9), np.float32)}])
    with pytest.raises(TypeError, match="sample 1: expected dict"):
        onnxq.quantize(cnn, out, calibration=[calib_dicts[0], calib_dicts[1]["image"]])
    with pytest.raises(TypeError, match="input 'image': numpy dtype"):
        onnxq.quantize(cnn, out, calibration=[{"image": np.zeros((1, 1, 8, 8), np.complex64)}])
    with pytest.raises(onnxq.Error, match="no samples"):
        onnxq.quantize(cnn, out, calibration=[])
    assert not exists(out)


def test_a_missing_or_broken_model_is_an_error_naming_the_file(calib_dicts, out, tmp_path):
    with pytest.raises(onnxq.Error, match="nothere.onnx"):
        onnxq.quantize(str(tmp_path / "nothere.onnx"), out, calibration=calib_dicts)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(onnxq.Error, match="bad.onnx"):
        onnxq.quantize(str(bad), out, calibration=calib_dicts)
    assert not exists(out)


def test_other_python_threads_run_while_it_quantizes(cnn, calib_dicts, out):
    """The interpreter is detached during the call: a Python loop in the
    main thread keeps most of its pace while one worker quantizes (with
    the interpreter held it would stall for the whole call)."""
    import time

    def spin(seconds, stop=None):
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end and not (stop and stop.is_set()):
            n += 1
        return n

    alone = spin(0.3) / 0.3
    done = threading.Event()

    def work():
        try:
            for _ in range(5):
                onnxq.quantize(cnn, out, calibration=calib_dicts, jobs=1)
        finally:
            done.set()

    t = threading.Thread(target=work)
    start = time.perf_counter()
    t.start()
    ticks = spin(60, done)
    t.join()
    rate = ticks / (time.perf_counter() - start)
    assert rate > 0.3 * alone, f"{rate:.0f} loops/s beside the call, {alone:.0f} alone"


def test_check_compares_any_quantized_model_with_its_fp32_model(cnn, calib_dicts, out):
    onnxq.quantize(cnn, out, calibration=calib_dicts, format="qdq")
    verdict = onnxq.check(out, cnn, calib_dicts)
    assert verdict["passed"] and verdict["samples"] == 32
    assert verdict["layers"]
    strict = onnxq.check(out, cnn, str(DIGITS / "cnn_calib"), min_sqnr=90)
    assert not strict["passed"]


@pytest.mark.parametrize("runtime,package", [("ort", "onnxruntime"), ("openvino", "openvino")])
def test_check_runs_the_model_in_a_deployment_runtime(cnn, calib_dicts, out, runtime, package):
    pytest.importorskip(package)
    onnxq.quantize(cnn, out, calibration=calib_dicts, target="openvino")
    own = onnxq.check(out, cnn, calib_dicts)
    there = onnxq.check(out, cnn, calib_dicts, runtime=runtime)
    assert there["passed"] and package.lower()[:6] in there["runtime"].lower()
    assert "runtime" not in own and not there["layers"]
    # The runtime computes what onnxq's executor computes, to well within
    # the gate's resolution.
    assert abs(there["outputs"][0]["sqnr_db"] - own["outputs"][0]["sqnr_db"]) < 1.0
    with pytest.raises(ValueError, match="runtime"):
        onnxq.check(out, cnn, calib_dicts, runtime="tensorrt")


def test_calibrate_writes_the_table_quantize_reuses(cnn, calib_dicts, out, tmp_path):
    table_path = tmp_path / "ranges.json"
    table = onnxq.calibrate(cnn, calib_dicts, table_path, method="percentile")
    assert table["method"] == "percentile" and table["samples"] == 32
    assert json.loads(table_path.read_text()) == table
    report = onnxq.quantize(cnn, out, ranges=table_path)
    assert report["parity"]["passed"]
    with pytest.raises(ValueError, match="method"):
        onnxq.calibrate(cnn, calib_dicts, method="median")


def test_the_wheel_installs_the_onnxq_command():
    assert os.access(ONNXQ, os.X_OK), f"{ONNXQ}: not installed with the package"
    v = subprocess.run([ONNXQ, "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.strip() == f"onnxq {onnxq.__version__}"
    usage = subprocess.run([ONNXQ, "quantize"], capture_output=True, text=True)
    assert usage.returncode == 2 and "--output" in usage.stderr


def test_the_command_exits_3_on_a_failed_gate(cnn, out):
    r = subprocess.run(
        [ONNXQ, "quantize", cnn, "-o", out, "--calib", str(DIGITS / "cnn_calib"),
         "--min-sqnr", "90", "--no-auto"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 3 and "failed the parity gate" in r.stderr
    assert not exists(out)


def test_a_folder_of_images_with_a_preprocessing_spec(cnn, digit_images, out):
    calibration, _, _ = digit_images
    report = onnxq.quantize(cnn, out, calibration=calibration, preprocess="gray")
    assert report["parity"]["passed"] and report["calibration"]["samples"] == 64
    with pytest.raises(onnxq.Error, match="give --preprocess"):
        onnxq.quantize(cnn, out, calibration=calibration)


def test_a_text_file_of_sentences_with_a_tokenizer(out):
    text = DIGITS.parent / "text"
    report = onnxq.quantize(
        str(text / "encoder.onnx"),
        out,
        calibration=str(text / "sentences.txt"),
        tokenizer=str(text / "tokenizer.json"),
        max_length=32,
    )
    assert report["parity"]["passed"] and report["calibration"]["samples"] == 32
    verdict = onnxq.check(
        out,
        str(text / "encoder.onnx"),
        str(text / "sentences.txt"),
        tokenizer=str(text / "tokenizer.json"),
        max_length=32,
    )
    assert verdict["passed"] and verdict["samples"] == 32
