"""ONNX FP32 + INT8 export of the tiny student: raw-output parity with PyTorch, INT8 evaluated, report fields."""

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_kd.errors import KDConfigError
from yolo_kd.export import export_command


@pytest.fixture(scope="module")
def onnx_export(tiny_student_ckpt, tiny_data, tmp_path_factory):
    """export_command(format=onnx, int8=True, data=tiny) on a copy of the checkpoint (exports land beside it)."""
    folder = tmp_path_factory.mktemp("export")
    ckpt = folder / "best.pt"
    shutil.copyfile(tiny_student_ckpt, ckpt)
    result = export_command({"model": str(ckpt), "format": "onnx", "int8": "True", "data": str(tiny_data),
                             "imgsz": "64", "calib": "8", "runs": "5", "warmup": "2",
                             "project": str(folder / "runs"), "name": "exp"})
    return ckpt, result


def test_files_land_beside_checkpoint(onnx_export):
    ckpt, result = onnx_export
    assert result["files"] == {"pytorch": str(ckpt), "onnx_fp32": str(ckpt.with_suffix(".onnx")),
                               "onnx_int8": str(ckpt.with_name("best_int8.onnx"))}
    assert sorted(os.listdir(ckpt.parent)) == ["best.onnx", "best.pt", "best_int8.onnx", "runs"]
    assert (Path(result["save_dir"]) / "export_metrics.json").is_file()


def test_onnx_raw_outputs_match_pytorch(onnx_export):
    import onnxruntime as ort
    from ultralytics import YOLO

    ckpt, result = onnx_export
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = YOLO(str(ckpt)).model.float().eval()
    with torch.inference_mode():
        expected = model(x)[0].numpy()  # decoded (1, 4 + nc, anchors): boxes in pixels, class probabilities
    session = ort.InferenceSession(result["files"]["onnx_fp32"], providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert actual.shape == expected.shape == (1, 6, 84)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-3)


def test_int8_model_is_quantized_runs_and_is_evaluated(onnx_export):
    import onnx
    import onnxruntime as ort

    _, result = onnx_export
    int8_file = result["files"]["onnx_int8"]
    graph = onnx.load(int8_file)
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["names"] == "{0: 'square', 1: 'disc'}" and "int8 static QDQ" in meta["quantization"]
    session = ort.InferenceSession(int8_file, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)})
    assert out.shape == (1, 6, 84) and np.isfinite(out).all()

    rows = result["models"]
    assert rows["onnx_int8"]["size_mb"] < rows["onnx_fp32"]["size_mb"]
    for label in ("pytorch", "onnx_fp32", "onnx_int8"):
        row = rows[label]
        assert math.isfinite(row["coco"]["mAP50-95"]) and 0.0 <= row["coco"]["mAP50-95"] <= 1.0
        assert row["latency"]["median_ms"] > 0 and row["latency"]["runs"] == 5
        assert row["params"] > 1_000_000 and row["gflops"] > 0
        assert Path(row["predictions"]).is_file()


def test_parity_reported(onnx_export):
    _, result = onnx_export
    parity = result["parity"]
    assert parity["model"] == "onnx_fp32" and parity["target_points"] == 0.5
    assert abs(parity["delta_points"]) <= 0.5 and parity["met"] is True


def test_failed_int8_export_leaves_nothing_behind(tiny_student_ckpt, tmp_path):
    """Calibration fails (unreadable train images) after best.onnx was written: the partial files are removed."""
    from conftest import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "broken", n_train=2, n_val=1)
    for image in (tmp_path / "broken" / "images" / "train").iterdir():
        image.write_bytes(b"not an image")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    ckpt = folder / "best.pt"
    shutil.copyfile(tiny_student_ckpt, ckpt)
    before = sorted(os.listdir(folder))
    with pytest.raises(KDConfigError, match="cannot read calibration image"):
        export_command({"model": str(ckpt), "format": "onnx", "int8": True, "data": str(data), "imgsz": 64,
                        "runs": 0, "project": str(tmp_path / "runs")})
    assert sorted(os.listdir(folder)) == before
    assert not (tmp_path / "runs").exists()
