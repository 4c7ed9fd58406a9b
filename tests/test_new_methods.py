"""Issue 17: pkd, sl2 and crosskd against hand-computed values; crosskd never trains the teacher's head; LD on the
GT region; KD off in the no-mosaic epochs; the default method."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

import yolo_kd
from yolo_kd.recipe import DEFAULT_METHOD
from yolo_kd.losses import PearsonFeatureLoss, ScoreWeightedL2
from yolo_kd.methods import build_method, method_weight
from yolo_kd.taps import Targets, anchors_in_boxes, head_taps
from yolo_kd.teachers import freeze, probe
from yolo_kd.ultra import detect_head


def test_pkd_matches_the_pearson_correlation():
    """L = mean over channels of (1 - r_c), r_c the Pearson correlation of channel c over (N, H, W)."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g) * 7 + 3
    s_np, t_np = s.double().numpy(), t.double().numpy()
    n = s_np.size // 3
    expected = []
    for c in range(3):
        a, b = s_np[:, c].ravel(), t_np[:, c].ravel()
        r = np.corrcoef(a, b)[0, 1]
        # with unbiased std: mean((za - zb)^2) / 2 = (n - 1) / n * (1 - r)
        expected.append((n - 1) / n * (1 - r))
    assert PearsonFeatureLoss()(s, t).item() == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert PearsonFeatureLoss()(t * 0.1 - 4, t).item() == pytest.approx(0.0, abs=1e-6)  # scale/offset-free


def test_sl2_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    score = torch.rand(2, 1, 2, 2, generator=g)
    num = den = 0.0
    for i in range(2):
        for y in range(2):
            for x in range(2):
                w = score[i, 0, y, x].item()
                den += w
                num += w * sum((s[i, c, y, x].item() - t[i, c, y, x].item()) ** 2 for c in range(3))
    assert ScoreWeightedL2()(s, t, score).item() == pytest.approx(num / (3 * den), rel=1e-5)


def test_anchors_in_boxes_marks_the_cells_whose_centre_is_inside():
    mask = anchors_in_boxes([(4, 4), (2, 2)], [torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.zeros(0, 4)])
    level3 = mask[0, :16].reshape(4, 4)
    assert level3[:2, :2].sum() == 4 and level3.sum() == 4  # centres 0.125, 0.375 inside; 0.625 outside
    assert mask[0, 16:].tolist() == [1.0, 0.0, 0.0, 0.0]  # 2x2 centres at 0.25 / 0.75: only (0.25, 0.25) inside
    assert mask[1].sum() == 0


def models():
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    teacher = freeze(DetectionModel("yolov8s.yaml", nc=2, verbose=False))
    return student, teacher


def batch():
    return {"img": torch.rand(2, 3, 64, 64), "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]]),
            "cls": torch.tensor([[0.0], [1.0]]), "batch_idx": torch.tensor([0.0, 1.0])}


def test_crosskd_trains_student_and_adapters_never_the_teacher_head():
    """The teacher is not frozen (requires_grad on) and the optimizer holds its head: the head stays bit-identical
    only because crosskd runs it with detached weights."""
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    teacher = DetectionModel("yolov8s.yaml", nc=2, verbose=False).eval()
    m = build_method("crosskd", {}, probe(student, 64, 3), probe(teacher, 64, 3))
    head = detect_head(teacher)
    assert all(p.requires_grad for p in head.cv2.parameters())  # not frozen
    before = {k: v.clone() for k, v in head.state_dict().items()}
    opt = torch.optim.SGD([*student.parameters(), *m.parameters(), *head.parameters()], lr=0.1, weight_decay=1e-2)
    b = batch()
    student.train()
    for _ in range(2):
        with torch.no_grad():
            t_taps = replace(head_taps(teacher(b["img"])), head=head)
        opt.zero_grad(set_to_none=True)
        terms = m(head_taps(student(b["img"])), t_taps, Targets.from_batch(b))
        sum(terms.values()).backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.align.parameters())
        assert student.model[0].conv.weight.grad.abs().sum() > 0
        assert student.model[-1].cv2[0][0].conv.weight.grad is None  # the student's own head: GT only
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())


def test_crosskd_value_is_the_teachers_head_on_adapted_student_features():
    student, teacher = models()
    m = build_method("crosskd", {}, probe(student, 64, 3), probe(teacher, 64, 3))
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        t_taps = replace(head_taps(teacher(img)), head=detect_head(teacher))
        s_taps = head_taps(student.train()(img))
        feats = [a(f) for a, f in zip(m.align, s_taps.feats)]
        cross = head_taps(detect_head(teacher).forward_head(feats, **detect_head(teacher).one2many))
        terms = m(s_taps, t_taps, None)
    assert terms["crosskd_cls"].item() == pytest.approx(m.cls_loss(cross.scores, t_taps.scores).item(), rel=1e-6)
    weight = t_taps.scores.sigmoid().amax(1)
    assert terms["crosskd_ld"].item() == pytest.approx(m.ld_loss(cross.boxes, t_taps.boxes, weight).item(), rel=1e-6)


def test_pred_ld_region_gt_weights_only_anchors_inside_boxes():
    student, teacher = models()
    all_region = build_method("pred", {}, probe(student, 64, 3), probe(teacher, 64, 3))
    gt_region = build_method("pred", {"ld_region": "gt"}, probe(student, 64, 3), probe(teacher, 64, 3))
    b = batch()
    with torch.no_grad():
        s, t = head_taps(student.train()(b["img"])), head_taps(teacher(b["img"]))
        targets = Targets.from_batch(b)
        mask = anchors_in_boxes(s.grid, targets.boxes)
        weight = t.scores.sigmoid().amax(1) * mask
        expected = gt_region.ld_loss(s.boxes, t.boxes, weight)
        assert gt_region(s, t, targets)["pred_ld"].item() == pytest.approx(expected.item(), rel=1e-6)
        assert all_region(s, t, targets)["pred_ld"].item() != pytest.approx(expected.item(), rel=1e-3)
    with pytest.raises(yolo_kd.KDConfigError, match="ld_region"):
        build_method("pred", {"ld_region": "everywhere"}, probe(student, 64, 3), probe(teacher, 64, 3))


def test_kd_is_off_in_the_no_mosaic_epochs(tiny_data, tiny_teacher, tmp_path):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="pred", schedule={"off_close_mosaic": True})
    model.train(data=str(tiny_data), epochs=3, project=str(tmp_path), name="nm", **{**TINY_TRAIN, "close_mosaic": 1})
    rows = read_results(tmp_path / "nm")
    assert [r["kd_stage"] for r in rows] == ["1", "1", "0"]
    assert float(rows[1]["train/pred_cls"]) > 0 and float(rows[2]["train/pred_cls"]) == 0
    assert float(rows[2]["train/pred_ld"]) == 0


def test_default_method_is_the_one_the_readme_names():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    named = re.search(r"default method[^`]*`([a-z0-9+]+)`", readme, re.IGNORECASE)
    assert named, "README names no default method"
    assert named.group(1) == DEFAULT_METHOD


def test_distill_without_method_uses_the_default(tiny_teacher):
    model = yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher))
    recipe = model.train.args[2]  # the partial over model.train holds the recipe
    assert "+".join(m.name for m in recipe.stages[0].methods) == DEFAULT_METHOD
    assert [method_weight(m) for m in recipe.stages[0].methods] == [6.0, 1.0]  # sl2 at the built-in's dis


def test_sl2_at_weight_6_is_the_builtin_loss_on_the_same_batch(tiny_teacher):
    """The same student, batch and projector weights through Ultralytics' DistillationModel and through the distiller
    with `sl2`: the KD term is the built-in's dis_loss, so the bench compares losses, not engines."""
    import copy

    from yolo_kd.distiller import Distiller
    from yolo_kd.recipe import Recipe
    from yolo_kd.ultra import builtin_distillation_model, train_args

    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    student.args = train_args(imgsz=64, dis=6.0)
    builtin = builtin_distillation_model(str(tiny_teacher), copy.deepcopy(student)).train()
    ours = Distiller(copy.deepcopy(student), Recipe.from_kwargs(teacher=str(tiny_teacher), method="sl2"), epochs=1,
                     names={0: "square", 1: "disc"}).train()
    ours.methods["teacher__sl2"].projector.load_state_dict(builtin.projector.state_dict())
    ours.set_epoch(0, 1)
    g = torch.Generator().manual_seed(3)
    batch = {"img": torch.rand(2, 3, 64, 64, generator=g), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.4, 0.2]]), "batch_idx": torch.tensor([0.0, 1.0])}
    b_loss, b_items = builtin.loss(copy.deepcopy(batch))
    o_loss, o_items = ours.loss(copy.deepcopy(batch))
    assert b_items["dis_loss"].item() > 0
    assert o_items["sl2"].item() == pytest.approx(b_items["dis_loss"].item(), rel=1e-5)
    torch.testing.assert_close(o_loss, b_loss, rtol=1e-5, atol=1e-6)  # detection terms and KD * batch size alike
