"""`unlabeled_kd: false`: the pool trains the student's detection loss on the teacher's boxes made once, and nothing
else; the KD terms read the labeled images only and the teacher's forward skips the pool (one teacher forward on
the labeled batch per step instead of on twice as many images)."""

import copy

import pytest
import torch
from conftest import read_results

from yolo_kd import KDConfigError
from yolo_kd.distiller import POOL_DETECTION_TERM
from yolo_kd.hooks import add_unlabeled
from yolo_kd.recipe import Recipe
from yolo_kd.ultra import train_args
from yolo_kd.unlabeled import resolve_images
from yolo_kd.unlabeled_loader import UnlabeledLoader

from test_pool_labels import LOW
from test_unlabeled import NAMES, distiller, labeled_batch, recorded_run, student_with_args

DENSE = ("sl2", "pred_cls", "pred_ld")  # the default recipe's KD terms


def with_pool_boxes(batch: dict) -> dict:
    """`labeled_batch(pool_images=3)` with one box per pool image, as the pool's loader carries them (`label+conf`)."""
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.6, 0.2, 0.3], [0.6, 0.4, 0.3, 0.2]])
    return {**batch, "unlabeled_boxes": {"batch_idx": torch.tensor([0.0, 1.0, 2.0]),
                                         "cls": torch.tensor([[0.0], [1.0], [0.0]]), "bboxes": boxes}}


def test_the_kd_terms_read_the_labeled_images_only_and_the_pool_trains_its_boxes(tiny_teacher):
    """On one batch from the same weights: with `unlabeled_kd=false` the KD terms are bit for bit those of the same
    batch without its pool images, where the default's change with them; `pool_det` is the student's loss on the
    pool's boxes in both."""
    student = student_with_args()
    pool_batch = with_pool_boxes(labeled_batch(pool_images=3))
    _, alone = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_kd=False).loss(labeled_batch())
    _, skipped = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_kd=False).loss(pool_batch)
    _, default = distiller(tiny_teacher, student, unlabeled=["pool"]).loss(copy.deepcopy(pool_batch))
    for term in DENSE:
        assert skipped[term] > 0 and torch.equal(skipped[term], alone[term]), term
        assert not torch.isclose(default[term], skipped[term]), term
    assert alone[POOL_DETECTION_TERM] == 0  # no pool images in that batch
    assert skipped[POOL_DETECTION_TERM] > 0 and torch.equal(skipped[POOL_DETECTION_TERM], default[POOL_DETECTION_TERM])


def test_a_run_feeds_the_teacher_the_labeled_images_and_the_student_the_pool(tiny_data, tiny_teacher, tiny_pool,
                                                                             tmp_path):
    """A real run: each step the teacher's input is the student's labeled input (same images, nothing more), the
    student also reads as many pool images, and the log holds `pool_det` and the KD terms, all trained."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, tiny_pool, unlabeled_boxes=f"label+{LOW}",
                        unlabeled_kd=False, batch=3, nbs=3, mosaic=1.0, workers=0)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert len(seen["teacher"]) == len(labeled) == len(pooled) == 6  # 2 epochs of 3 steps
    for student_labeled, student_pool, teacher in zip(labeled, pooled, seen["teacher"]):
        assert torch.equal(teacher, student_labeled)
        assert len(student_pool) == len(student_labeled) and not torch.equal(student_pool, student_labeled)
    for row in read_results(tmp_path / "run"):
        assert all(float(row[f"train/{term}"]) > 0 for term in (*DENSE, POOL_DETECTION_TERM)), row


def test_the_pool_gets_no_teacher_views_when_the_teacher_does_not_read_it(tiny_pool):
    """With two views and a teacher at its own size: the step's batch gets the student's pool view always, and the
    teacher's (the weak view; its view at the teacher's size) only when the teacher reads the pool."""
    loader = UnlabeledLoader(resolve_images(tiny_pool), train_args(imgsz=64, workers=0), {"names": NAMES, "channels": 3},
                             64, 2, 32, 0, two_views=True)
    teacher_keys = {"unlabeled_weak_img", "unlabeled_teacher_img"}
    for teacher_views in (True, False):
        batch = {"img": torch.zeros(2, 3, 64, 64), "teacher_img": torch.zeros(2, 3, 128, 128)}
        add_unlabeled(batch, loader, 1.0, teacher_views=teacher_views)
        assert batch["unlabeled_img"].shape == (2, 3, 64, 64)
        assert (teacher_keys <= batch.keys()) if teacher_views else not (teacher_keys & batch.keys())
        if teacher_views:
            assert batch["unlabeled_teacher_img"].shape == (2, 3, 128, 128)
    loader.close()


@pytest.mark.parametrize("kd, needs", [
    ({"unlabeled_boxes": "match"}, "unlabeled_boxes=label\\+0.25"),
    ({"unlabeled_boxes": False}, "unlabeled_boxes=label\\+0.25"),
    ({"unlabeled_topk": 0.03}, "unlabeled_topk reads the teacher's forward"),
    ({"unlabeled_views": "weak-strong"}, "unlabeled_views reads the teacher's forward"),
])
def test_options_that_need_the_teachers_pool_forward_are_refused_in_one_line(kd, needs):
    with pytest.raises(KDConfigError, match=needs) as err:
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=False, **kd)
    assert "\n" not in str(err.value)


def test_the_option_is_kept_for_resume_and_checked():
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=False)
    assert recipe.unlabeled_kd is False and Recipe.from_saved(recipe.to_dict()).unlabeled_kd is False
    saved = recipe.to_dict()
    del saved["unlabeled_kd"]  # a checkpoint from before the option: the pool read by the KD terms, as it ran
    assert Recipe.from_saved(saved).unlabeled_kd is True
    with pytest.raises(KDConfigError, match="'unlabeled_kd' must be true or false"):
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd="no")
