"""Formats whose packages or hardware are missing fail before anything is written, naming what to install."""

import importlib.util
import os
import shutil

import pytest
import torch

from yolo_kd.errors import KDConfigError
from yolo_kd.export import export_command, missing_requirements


@pytest.fixture
def ckpt_copy(tiny_student_ckpt, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    ckpt = folder / "best.pt"
    shutil.copyfile(tiny_student_ckpt, ckpt)
    return ckpt


def listing(*folders):
    return {str(f): sorted(os.listdir(f)) for f in folders}


def test_openvino_missing_raises_and_writes_nothing(ckpt_copy, tiny_data, tmp_path, monkeypatch):
    if importlib.util.find_spec("openvino") is not None:
        pytest.skip("openvino is installed here, so format=openvino would really export")
    monkeypatch.chdir(tmp_path)
    before = listing(ckpt_copy.parent, tmp_path, tiny_data.parent)
    with pytest.raises(KDConfigError, match=r"pip install openvino") as err:
        export_command({"model": str(ckpt_copy), "format": "openvino", "data": str(tiny_data)})
    assert "\n" not in str(err.value)
    assert listing(ckpt_copy.parent, tmp_path, tiny_data.parent) == before


@pytest.mark.parametrize(
    "fmt, int8, module, pip_name",
    [
        ("tflite", False, "litert_torch", "litert-torch"),
        ("openvino", True, "nncf", "nncf"),
        ("engine", False, "tensorrt", "tensorrt"),
    ],
)
def test_missing_packages_are_named(ckpt_copy, tiny_data, fmt, int8, module, pip_name):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    assert pip_name in missing_requirements(fmt, int8=int8)
    before = listing(ckpt_copy.parent)
    with pytest.raises(KDConfigError, match=pip_name):
        export_command({"model": str(ckpt_copy), "format": fmt, "int8": int8, "data": str(tiny_data)})
    assert listing(ckpt_copy.parent) == before


def test_onnx_needs_nothing_extra_and_torchscript_really_exports(ckpt_copy):
    assert missing_requirements("onnx", int8=True, evaluate=True) == []
    export_command({"model": str(ckpt_copy), "format": "torchscript", "imgsz": 64})
    exported = ckpt_copy.with_suffix(".torchscript")
    module = torch.jit.load(str(exported))
    out = module(torch.rand(1, 3, 64, 64))
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert out.shape[0] == 1 and out.shape[1] == 4 + 2  # xywh + the tiny set's two class scores


def test_engine_needs_cuda_whatever_is_installed(ckpt_copy):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = listing(ckpt_copy.parent)
    with pytest.raises(KDConfigError, match="needs an NVIDIA GPU with CUDA"):
        export_command({"model": str(ckpt_copy), "format": "engine"})
    assert listing(ckpt_copy.parent) == before


def test_argument_mistakes(ckpt_copy, tiny_data):
    before = listing(ckpt_copy.parent)
    with pytest.raises(KDConfigError, match="format=coreml is not supported"):
        export_command({"model": str(ckpt_copy), "format": "coreml"})
    with pytest.raises(KDConfigError, match="int8=True needs calibration images"):
        export_command({"model": str(ckpt_copy), "format": "onnx", "int8": True})
    with pytest.raises(KDConfigError, match="torchscript"):
        export_command({"model": str(ckpt_copy), "format": "torchscript", "int8": True, "data": str(tiny_data)})
    with pytest.raises(KDConfigError, match="must be a .pt file"):
        export_command({"model": str(tiny_data), "format": "onnx"})
    with pytest.raises(KDConfigError, match="int8_act=int4"):
        export_command({"model": str(ckpt_copy), "int8": True, "data": str(tiny_data), "int8_act": "int4"})
    with pytest.raises(KDConfigError, match="calib="):
        export_command({"model": str(ckpt_copy), "int8": True, "data": str(tiny_data), "calib": "1.5"})
    assert listing(ckpt_copy.parent) == before
