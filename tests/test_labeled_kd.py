"""`labeled_kd: false`: with a pool, the teacher's forward and the KD terms read the pool images only, and the labeled
images train on their labels alone; everything else is the default's (the pool's detection term, the labeled
detection loss). The teacher's forward reads half the images of the default's step."""

import copy

import pytest
import torch
from conftest import read_results

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.api import build_recipe
from yolo_kd.bench.steptime import step_benchmark
from yolo_kd.distiller import POOL_DENSE_TERM, POOL_DETECTION_TERM
from yolo_kd.recipe import Recipe
from ultralytics import YOLO

from test_pool_labels import LOW
from test_pool_without_kd import DENSE, first_pool_images, with_pool_boxes, with_running_stats
from test_unlabeled import distiller, labeled_batch, recorded_run, student_with_args

DETECTION = ("box_loss", "cls_loss", "dfl_loss")


@pytest.mark.parametrize("pool_terms", [{}, {"unlabeled_boxes": "match"}, {"unlabeled_topk": 0.03}])
def test_the_kd_terms_are_the_defaults_on_the_pool_images_alone(tiny_teacher, pool_terms):
    """One batch, the same weights: with `labeled_kd=false` the KD terms equal the default's on a batch of the pool
    images alone (the pool's forward normalises with its own batch statistics, as a forward of those images alone
    does), unlike the default's on labeled + pool images; the labeled detection loss and the pool's own terms are the
    default's: `pool_det` on the boxes the loader carries or decoded online from the teacher's pool rows (`match`),
    `pool_dense` on those rows (`unlabeled_topk`)."""
    student = student_with_args()
    online = pool_terms.get("unlabeled_boxes") == "match"
    batch = labeled_batch(pool_images=3) if online else with_pool_boxes(labeled_batch(pool_images=3))
    kd = {"unlabeled": ["pool"], **pool_terms}
    _, pool_only = distiller(tiny_teacher, student, labeled_kd=False, **kd).loss(copy.deepcopy(batch))
    _, default = distiller(tiny_teacher, student, **kd).loss(copy.deepcopy(batch))
    pool_as_batch = {"img": batch["unlabeled_img"].clone(), **with_pool_boxes(labeled_batch(3))["unlabeled_boxes"]}
    _, alone = distiller(tiny_teacher, student, **kd).loss(pool_as_batch)
    for term in DENSE:
        assert pool_only[term] > 0 and torch.allclose(pool_only[term], alone[term], rtol=1e-5, atol=0), term
        assert not torch.isclose(pool_only[term], default[term]), term
    for key in DETECTION:
        assert pool_only[key] > 0 and torch.equal(pool_only[key], default[key]), key
    for key in (POOL_DETECTION_TERM, *([POOL_DENSE_TERM] if "unlabeled_topk" in pool_terms else [])):
        assert pool_only[key] > 0 and torch.allclose(pool_only[key], default[key], rtol=1e-5, atol=0), key


def test_with_a_share_the_kd_terms_read_the_first_pool_images_alone(tiny_teacher):
    """`unlabeled_kd=0.5` with `labeled_kd=false` on 4 pool images: the KD terms are the default's on a batch of the
    first 2 pool images alone, unlike those on all 4 (the student on running statistics, so each image's outputs are
    its own whatever else is in the batch)."""
    student = student_with_args()
    batch = with_pool_boxes(labeled_batch(pool_images=4))
    images = torch.cat([batch["img"], batch["unlabeled_img"]])

    def items(b, **kd):
        return with_running_stats(distiller(tiny_teacher, student, unlabeled=["pool"], **kd), images).loss(b)[1]

    share = items(copy.deepcopy(batch), unlabeled_kd=0.5, labeled_kd=False)
    every = items(copy.deepcopy(batch), labeled_kd=False)
    first_two = {"img": batch["unlabeled_img"][:2].clone(), **first_pool_images(batch, 2)["unlabeled_boxes"]}
    alone = items(first_two)
    for term in DENSE:
        assert share[term] > 0 and torch.allclose(share[term], alone[term], rtol=1e-5, atol=0), term
        assert not torch.isclose(share[term], every[term]), term


def test_a_run_feeds_the_teacher_the_pool_images_only(tiny_data, tiny_teacher, tiny_pool, tmp_path, caplog):
    """A real run, batches of 3, 3 and 2 labeled images: each step the teacher's input is exactly the student's pool
    input (as many images as the labeled batch, none of them labeled), the log says so, and results.csv holds the KD
    terms and `pool_det`, all trained."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, tiny_pool, unlabeled_boxes=f"label+{LOW}",
                        labeled_kd=False, batch=3, nbs=3, mosaic=1.0, workers=0)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert "the KD terms and the teacher's forward skip the labeled images" in caplog.text
    assert "; the teacher reads the pool images only" in caplog.text  # the stage's log line
    assert len(seen["teacher"]) == len(labeled) == len(pooled) == 6  # 2 epochs of 3 steps
    for student_labeled, student_pool, teacher in zip(labeled, pooled, seen["teacher"]):
        assert torch.equal(teacher, student_pool) and len(student_pool) == len(student_labeled)
        assert not torch.equal(student_pool, student_labeled)
    for row in read_results(tmp_path / "run"):
        assert all(float(row[f"train/{term}"]) > 0 for term in (*DENSE, POOL_DETECTION_TERM)), row


@pytest.mark.parametrize("kd, refused", [
    ({"unlabeled_kd": False}, "labeled_kd=false and unlabeled_kd=false leave the KD terms no image to read"),
    ({"method": "fgd+pred"}, "labeled_kd=false: fgd reads ground truth, which only the labeled images have"),
    ({"method": "pred"}, None),
])
def test_what_needs_the_labeled_images_is_refused_in_one_line(tiny_teacher, kd, refused):
    """Refused when the options are read: no image left for the KD terms, or a method that reads ground truth."""
    options = {"teacher": str(tiny_teacher), "unlabeled": None, "labeled_kd": False, **kd}
    if refused is None:
        assert build_recipe(**options).labeled_kd is False
        return
    with pytest.raises(KDConfigError, match=refused) as err:
        build_recipe(**options)
    assert "\n" not in str(err.value)


def test_pred_on_ground_truth_cells_is_refused_too(tiny_teacher):
    cfg = {"teachers": {"t": {"model": str(tiny_teacher)}}, "labeled_kd": False,
           "stages": [{"fraction": [0, 1], "teachers": ["t"], "methods": {"pred": {"ld_region": "gt"}}}]}
    with pytest.raises(KDConfigError, match="labeled_kd=false: pred reads ground truth") as err:
        build_recipe(cfg=cfg)
    assert "\n" not in str(err.value)


def test_a_run_without_unlabeled_images_is_refused_before_its_folder_exists(tiny_data, tiny_teacher, tmp_path):
    model = yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher), labeled_kd=False)
    with pytest.raises(KDConfigError, match="labeled_kd=false: the KD terms read the unlabeled images only, and this "
                                            "run has none") as err:
        model.train(data=str(tiny_data), project=str(tmp_path), name="run", epochs=1, imgsz=64, workers=0)
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_the_option_is_kept_for_resume_and_checked():
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], labeled_kd=False)
    assert recipe.labeled_kd is False and Recipe.from_saved(recipe.to_dict()).labeled_kd is False
    saved = recipe.to_dict()
    del saved["labeled_kd"]  # a checkpoint from before the option: the KD terms read the labeled images, as it ran
    assert Recipe.from_saved(saved).labeled_kd is True
    with pytest.raises(KDConfigError, match="'labeled_kd' must be true or false"):
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], labeled_kd="no")


def test_the_step_bench_times_the_teacher_on_the_pool_images_only(tiny_teacher):
    """The step-time bench times the pool row with `labeled_kd=false` beside the default's, and its teacher forward
    on the pool images alone (batch 2: 2 images, where the default's reads 4)."""
    step = step_benchmark({"model": "yolov8n.yaml", "teacher": str(tiny_teacher), "methods": ["pred"], "imgsz": 64,
                           "dis": 6.0}, steps=1, rounds=1, batch=2)
    label = "yolo-kd pred + unlabeled pool (ratio 1), labeled_kd=False"
    assert step["rows"][label]["ms"] > 0 and 0 < step["rows"][label]["teacher_share"] < 1.5
    assert {"yolo-kd on 2 pool images", "yolo-kd + 2 pool images"} <= set(step["teacher_forward_ms"])
