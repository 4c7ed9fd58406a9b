"""Issue 9: a teacher at its own (larger) image size; maps resampled onto the student's grid."""


import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd.taps import Taps, match_grid


def test_teacher_maps_land_on_student_grid_at_same_cells():
    # a box covering x in [0.25, 0.5), y in [0.5, 0.75) of the image, drawn on a 16x16 (teacher) and 8x8 (student) grid
    def grid(n):
        m = torch.zeros(1, 1, n, n)
        m[..., n // 2: 3 * n // 4, n // 4: n // 2] = 1.0
        return m

    teacher = Taps(feats=[grid(16)], scores=grid(16).flatten(2), boxes=grid(16).flatten(2).repeat(1, 4, 1))
    out = match_grid(teacher, [(8, 8)])
    assert out.feats[0].shape[-2:] == (8, 8)
    assert torch.equal(out.feats[0], grid(8))  # same cells, exactly (area pooling of an aligned box)
    assert out.scores.shape == (1, 1, 64) and torch.equal(out.scores, grid(8).flatten(2))
    assert out.boxes.shape == (1, 4, 64)


def test_teacher_at_128_student_at_64_trains(tiny_data, tiny_teacher, tmp_path):
    seen = {}

    def on_batch_end(trainer):
        distiller = trainer.model
        seen["teacher_input"] = distiller._teacher_input("teacher", torch.zeros(2, 3, 64, 64)).shape[-1]

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_batch_end", on_batch_end)
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="fgd+pred+cskd", teacher_imgsz=128)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="res", **TINY_TRAIN)
    assert seen["teacher_input"] == 128
    row = read_results(tmp_path / "res")[0]
    for col in ("fgd", "pred_cls", "pred_ld", "cskd_feat", "cskd_pred"):
        assert 0 < float(row[f"train/{col}"]) < float("inf"), col
