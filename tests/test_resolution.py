"""Issue 14: a teacher at its own (larger) image size sees real high-resolution pixels; its levels, maps and DFL box
distributions land on the student's grid in the student's units."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd.recipe import Recipe
from yolo_kd.resolution import level_pairs, resample, to_student_grid
from yolo_kd.taps import Taps, head_taps

REG_MAX = 16


def peaked_dfl(grid: int, cells: float) -> torch.Tensor:
    """DFL logits (1, 4 * REG_MAX, grid * grid): every anchor predicts `cells` cells on each side (sharp peak)."""
    logits = torch.full((1, 4, REG_MAX, grid * grid), -20.0)
    logits[:, :, int(cells)] = 20.0
    return logits.reshape(1, 4 * REG_MAX, grid * grid)


def decode(boxes: torch.Tensor, grid: int) -> torch.Tensor:
    """Expected DFL distances -> boxes (A, 4) xyxy normalised to the image, anchors at cell centres."""
    dist = (boxes.reshape(4, REG_MAX, -1).softmax(1) * torch.arange(REG_MAX).view(1, -1, 1)).sum(1).T  # (A, ltrb)
    ys, xs = torch.meshgrid(torch.arange(grid) + 0.5, torch.arange(grid) + 0.5, indexing="ij")
    cx, cy = xs.flatten(), ys.flatten()
    return torch.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], 1) / grid


def convert(t_grid: int, s_grid: int, boxes: torch.Tensor) -> torch.Tensor:
    teacher = Taps(feats=[torch.zeros(1, 1, t_grid, t_grid)], scores=torch.zeros(1, 1, t_grid ** 2), boxes=boxes)
    return to_student_grid(teacher, [(s_grid, s_grid)], [0], [(s_grid, s_grid)], [0], [(t_grid, t_grid)], REG_MAX).boxes


def test_teacher_boxes_decode_to_the_same_image_boxes_on_a_non_multiple_grid():
    """12x12 -> 8x8 (no whole blocks): the map is resampled and 6 teacher cells become 4 student cells."""
    out = convert(12, 8, peaked_dfl(12, 6))
    dist = (out.reshape(4, REG_MAX, -1).softmax(1) * torch.arange(REG_MAX).view(1, -1, 1)).sum(1)
    torch.testing.assert_close(dist, torch.full_like(dist, 4.0), atol=1e-3, rtol=0)
    sizes = decode(out, 8)[:, 2:] - decode(out, 8)[:, :2]
    torch.testing.assert_close(sizes, torch.full_like(sizes, 1.0), atol=1e-3, rtol=0)  # 12 teacher cells wide


def one_object_teacher(t_grid: int, cell: tuple[int, int], ltrb: tuple[int, int, int, int], reg_max: int = REG_MAX):
    """A teacher level where one cell (row, col) sees an object (class-1 logit 4, box ltrb in its cells) and every other
    cell sees nothing (logits -6) and predicts random boxes."""
    torch.manual_seed(0)
    scores = torch.full((1, 2, t_grid, t_grid), -6.0)
    scores[0, 1, cell[0], cell[1]] = 4.0
    if reg_max == 1:
        boxes = torch.rand(1, 4, t_grid, t_grid) * 5
        boxes[0, :, cell[0], cell[1]] = torch.tensor(ltrb, dtype=torch.float32)
    else:
        boxes = torch.randn(1, 4, reg_max, t_grid, t_grid)
        boxes[0, :, :, cell[0], cell[1]] = -20.0
        for side, d in enumerate(ltrb):
            boxes[0, side, d, cell[0], cell[1]] = 20.0
        boxes = boxes.reshape(1, 4 * reg_max, t_grid, t_grid)
    return scores, boxes


@pytest.mark.parametrize("cell", [(5, 9), (6, 2)])
def test_block_select_keeps_the_detection_and_its_image_box(cell):
    """16x16 -> 8x8: the student cell over the object's teacher cell gets that cell's class logits undiluted (area
    pooling would average them with three empty cells) and a box that decodes to the same image box."""
    ltrb = (2, 3, 4, 1)
    scores, boxes = one_object_teacher(16, cell, ltrb)
    teacher = Taps(feats=[torch.zeros(1, 1, 16, 16)], scores=scores.flatten(2), boxes=boxes.flatten(2))
    out = to_student_grid(teacher, [(8, 8)], [0], [(8, 8)], [0], [(16, 16)], REG_MAX)
    row, col = cell[0] // 2, cell[1] // 2
    a = row * 8 + col
    torch.testing.assert_close(out.scores[0, :, a], scores[0, :, cell[0], cell[1]])
    assert F.avg_pool2d(scores, 2)[0, 1, row, col] < 0  # what area pooling would have taught: below 0.5 confidence
    t_box = decode(boxes.flatten(2)[0], 16)[cell[0] * 16 + cell[1]]
    torch.testing.assert_close(decode(out.boxes[0], 8)[a], t_box, atol=1e-3, rtol=0)
    x1, y1 = (cell[1] + 0.5 - ltrb[0]) / 16, (cell[0] + 0.5 - ltrb[1]) / 16
    torch.testing.assert_close(t_box[:2], torch.tensor([x1, y1]), atol=1e-3, rtol=0)


def test_block_select_direct_distances_for_reg_max_1():
    """YOLO26 heads (reg_max 1, distances in cells): the same box after the block move, 2x and 3x blocks."""
    for m in (2, 3):
        scores, boxes = one_object_teacher(6 * m, (m + 1, 2 * m + 1), (2, 3, 4, 1), reg_max=1)
        teacher = Taps(feats=[torch.zeros(1, 1, 6 * m, 6 * m)], scores=scores.flatten(2), boxes=boxes.flatten(2))
        out = to_student_grid(teacher, [(6, 6)], [0], [(6, 6)], [0], [(6 * m, 6 * m)], 1)
        a = 1 * 6 + 2
        cx, cy = (2 * m + 1 + 0.5) / (6 * m), (m + 1 + 0.5) / (6 * m)
        image_box = torch.tensor([cx - 2 / (6 * m), cy - 3 / (6 * m), cx + 4 / (6 * m), cy + 1 / (6 * m)])
        d = out.boxes[0, :, a]
        s_box = torch.tensor([2.5 - d[0], 1.5 - d[1], 2.5 + d[2], 1.5 + d[3]]) / 6
        torch.testing.assert_close(s_box, image_box, atol=1e-5, rtol=0)


def test_level_shift_at_2x_keeps_the_dfl_unit():
    """At 2x, teacher P4 has the student's P3 grid and unit: its logits pass unchanged; the student's P5 is taught by
    the teacher's P5, one cell of each 2x2 block, its distances halved."""
    assert level_pairs([8, 16, 32], [8, 16, 32], 2.0) == [1, 2, 2]
    assert level_pairs([8, 16, 32], [8, 16, 32], 1.0) == [0, 1, 2]
    t_grid, s_grid = [(16, 16), (8, 8), (4, 4)], [(8, 8), (4, 4), (2, 2)]
    boxes = torch.cat([peaked_dfl(16, 2), peaked_dfl(8, 5), peaked_dfl(4, 6)], -1)
    teacher = Taps(feats=[torch.rand(1, c, *g) for c, g in zip((4, 8, 16), t_grid)],
                   scores=torch.rand(1, 2, 16 * 16 + 8 * 8 + 4 * 4), boxes=boxes)
    out = to_student_grid(teacher, s_grid, [1, 2, 2], s_grid, [1, 2, 2], t_grid, REG_MAX)
    assert [f.shape[1] for f in out.feats] == [8, 16, 16]
    assert torch.equal(out.feats[0], teacher.feats[1]) and torch.equal(out.feats[1], teacher.feats[2])
    assert torch.equal(out.boxes[..., :64], boxes[..., 256:320])  # teacher P4 -> student P3, unchanged
    assert torch.equal(out.scores[..., :64], teacher.scores[..., 256:320])
    p5 = out.boxes[..., 64 + 16:].reshape(4, REG_MAX, -1).softmax(1)
    dist = (p5 * torch.arange(REG_MAX).view(1, -1, 1)).sum(1)  # 6 teacher cells each side: a box 6 student cells wide
    torch.testing.assert_close(dist[0] + dist[2], torch.full_like(dist[0], 6.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(dist[1] + dist[3], torch.full_like(dist[1], 6.0), atol=1e-3, rtol=0)


def high_frequency(img: torch.Tensor) -> float:
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    return F.conv2d(img, lap, groups=3).abs().mean().item()


def test_student_batch_is_the_downsample_of_the_teachers_real_pixels(tiny_data, tiny_teacher, tmp_path):
    """The batch the distiller receives (after the trainer's preprocessing and the engine's downsample)."""
    seen = []

    def record_batches(trainer):  # a forward pre-hook on the distiller: the batch dict exactly as it is trained on
        trainer.model.register_forward_pre_hook(
            lambda module, args: seen.append((args[0]["img"].clone(), args[0]["teacher_img"].clone()))
            if module.training else None)

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_pretrain_routine_end", record_batches)
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="pred", teacher_imgsz=128)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="hr", **{**TINY_TRAIN, "mosaic": 1.0})
    img, source = seen[0]
    assert img.shape[-1] == 64 and source.shape[-1] == 128
    assert torch.equal(img, resample(source, (64, 64)))
    assert torch.allclose(img, F.avg_pool2d(source, 2), atol=1e-6)  # area = 2x2 box filter at 2x
    upsampled = F.interpolate(img, size=(128, 128), mode="bilinear", align_corners=False)  # what the teacher saw before
    assert high_frequency(source) > 1.5 * high_frequency(upsampled)
    assert model.trainer.args.imgsz == 64  # validation, args.yaml and checkpoints stay at the student's size


def assert_declared_encoding(distiller, img):
    """Every target the methods get is on the student's grid, float32, its DFL boxes log-probabilities per side."""
    with torch.no_grad():
        s_taps = head_taps(distiller.student.train()(img))
        targets = distiller._teacher_target(distiller.recipe.stages[0], img, None, s_taps)
    for _, t, _ in targets:
        assert t.grid == s_taps.grid and t.boxes.shape == s_taps.boxes.shape and t.boxes.dtype == torch.float32
        p = t.boxes.reshape(len(img), 4, REG_MAX, -1).exp().sum(2)
        torch.testing.assert_close(p, torch.ones_like(p))
    return targets


def test_teacher_at_128_student_at_64_every_method(tiny_data, tiny_teacher, tmp_path):
    methods = "mse+fgd+cskd+pred+cwd+mgd+pkd+sl2+crosskd"
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method=methods, teacher_imgsz=128)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="res", **TINY_TRAIN)
    distiller = model.trainer.model
    assert distiller.head_pairs["teacher"] == [0, 1, 2]  # the default pairing: level with level, blocks selected
    row = read_results(tmp_path / "res")[0]
    assert float(row["kd_nan_skips"]) == 0  # no step's KD dropped
    for col in distiller.term_names:
        assert math.isfinite(float(row[f"train/{col}"])) and float(row[f"train/{col}"]) > 0, col
    assert_declared_encoding(distiller, torch.rand(2, 3, 64, 64))


def test_two_teachers_each_at_its_own_size(tiny_data, tiny_teacher, tiny_teacher_b, tmp_path):
    cfg = {"teachers": {"big": {"model": str(tiny_teacher), "imgsz": 128, "levels": "area"}, "same": str(tiny_teacher_b)},
           "stages": [{"fraction": [0, 1], "teachers": ["big", "same"], "methods": "pred+pkd"}]}
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, cfg=cfg)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="two", **TINY_TRAIN)
    assert model.trainer.model.head_pairs == {"big": [1, 2, 2], "same": [0, 1, 2]}
    row = read_results(tmp_path / "two")[0]
    assert float(row["kd_nan_skips"]) == 0
    assert all(float(row[f"train/{c}"]) > 0 for c in ("pred_cls", "pred_ld", "pkd"))
    (big, t_big, _), (same, t_same, _) = assert_declared_encoding(model.trainer.model, torch.rand(2, 3, 64, 64))
    assert (big, same) == ("big", "same") and not torch.allclose(t_big.scores, t_same.scores)  # each its own target
    assert [f.shape[1] for f in t_big.feats] == [256, 512, 512]  # big's P4, P5, P5 (area pairing) on P3, P4, P5


def test_levels_index_pairs_same_levels_and_converts_distances(tiny_teacher):
    from ultralytics.nn.tasks import DetectionModel

    from yolo_kd.distiller import Distiller
    from yolo_kd.ultra import train_args

    def distiller(levels=None):
        student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
        student.args = train_args(imgsz=64)
        teacher = {"model": str(tiny_teacher), "imgsz": 128, **({"levels": levels} if levels else {})}
        cfg = {"teachers": {"t": teacher},
               "stages": [{"fraction": [0, 1], "teachers": ["t"], "methods": "pred"}]}
        return Distiller(student, Recipe.from_kwargs(cfg=cfg), epochs=1, names={0: "square", 1: "disc"})

    assert distiller("area").head_pairs["t"] == [1, 2, 2]
    assert distiller("index").head_pairs["t"] == [0, 1, 2]
    assert distiller().head_pairs["t"] == [0, 1, 2]  # index is the default
    with pytest.raises(yolo_kd.KDConfigError, match="levels='shifted' is unknown"):
        distiller("shifted")


def test_target_decode_puts_one_anchors_box_in_pixels():
    """The target check decodes like the Detect head: cell centre -/+ expected DFL distances, times the stride."""
    from yolo_kd.target_check import decode, top_detections

    grids, strides = [(4, 4), (2, 2), (1, 1)], [8.0, 16.0, 32.0]
    scores = torch.full((1, 2, 21), -9.0)
    boxes = torch.zeros(1, 4 * REG_MAX, 21)
    anchor = 16 + 1 * 2 + 1  # P4 (stride 16), row 1, column 1
    scores[0, 1, anchor] = 5.0
    boxes[0, :, anchor] = -20.0
    for side, d in enumerate((1, 2, 3, 1)):  # ... and peak them at l, t, r, b = 1, 2, 3, 1 cells
        boxes[0, side * REG_MAX + d, anchor] = 20.0
    xyxy, conf = decode(scores, boxes, grids, strides, REG_MAX)
    b, c, k = top_detections(xyxy[0], conf[0])
    torch.testing.assert_close(b[0], torch.tensor([(1.5 - 1) * 16, (1.5 - 2) * 16, (1.5 + 3) * 16, (1.5 + 1) * 16]),
                               atol=1e-3, rtol=0)
    assert k[0] == 1 and abs(c[0].item() - torch.sigmoid(torch.tensor(5.0)).item()) < 1e-6


def test_target_map_rows_for_a_teacher_at_its_own_size(tiny_data, tiny_teacher):
    from yolo_kd.target_check import target_map

    same = target_map(tiny_teacher, tiny_data, 64)
    assert list(same) == ["teacher at 64 (the student's size)"]
    own = target_map(tiny_teacher, tiny_data, 64, teacher_imgsz=128)
    assert list(own) == ["teacher at 64 (the student's size)", "teacher at 128, its own grid (upper bound)",
                         "teacher at 128 on the student's grid, levels: index",
                         "teacher at 128 on the student's grid, levels: area"]
    assert own["teacher at 64 (the student's size)"] == same["teacher at 64 (the student's size)"]
    assert all(0.0 <= s["mAP50-95"] <= s["mAP50"] <= 1.0 for s in own.values())
