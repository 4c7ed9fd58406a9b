"""`unlabeled_kd: false`: the pool trains the student's detection loss on the teacher's boxes made once, and nothing
else; the KD terms read the labeled images only and the teacher's forward skips the pool (one teacher forward on
the labeled batch per step instead of on twice as many images). `unlabeled_kd: 0.25` (a share): the KD terms and the
teacher's forward read that share of each step's pool images, the detection term all of them."""

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
    """`labeled_batch(pool_images=n)` (n <= 4) with one box per pool image, as the pool's loader carries them
    (`label+conf`)."""
    n = len(batch["unlabeled_img"])
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.6, 0.2, 0.3], [0.6, 0.4, 0.3, 0.2], [0.4, 0.4, 0.2, 0.4]])
    return {**batch, "unlabeled_boxes": {"batch_idx": torch.arange(n).float(),
                                         "cls": torch.tensor([[0.0], [1.0], [0.0], [1.0]])[:n], "bboxes": boxes[:n]}}


def first_pool_images(batch: dict, n: int) -> dict:
    """`batch` with its first `n` pool images and their boxes only."""
    boxes = batch["unlabeled_boxes"]
    keep = boxes["batch_idx"] < n
    return {**batch, "unlabeled_img": batch["unlabeled_img"][:n],
            "unlabeled_boxes": {k: v[keep] for k, v in boxes.items()}}


def with_running_stats(d, images: torch.Tensor):
    """The distiller with its student's BatchNorm on running statistics, measured on `images`: each image's outputs
    are its own, whatever else is in the batch (so a forward on the first n pool images compares with one on all)."""
    norms = [m for m in d.student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # the plain average over the calibration forward
    with torch.no_grad():
        d.student(images)
    for m in norms:
        m.eval()
    return d


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


def test_a_share_reads_the_first_pool_images_for_kd_and_all_of_them_for_the_boxes(tiny_teacher):
    """`unlabeled_kd=0.5` on 4 pool images: the KD terms are those of the default on the first 2 pool images alone,
    unlike the default's on all 4; `pool_det` is that of `unlabeled_kd=false` on all 4 (the student on running
    statistics, so each image's outputs are its own)."""
    student = student_with_args()
    batch = with_pool_boxes(labeled_batch(pool_images=4))

    def items(share, b):
        d = distiller(tiny_teacher, student, unlabeled=["pool"], unlabeled_kd=share)
        return with_running_stats(d, torch.cat([batch["img"], batch["unlabeled_img"]])).loss(copy.deepcopy(b))[1]

    share, first_two, every, boxes_only = (items(0.5, batch), items(True, first_pool_images(batch, 2)),
                                           items(True, batch), items(False, batch))
    for term in DENSE:
        assert share[term] > 0 and torch.allclose(share[term], first_two[term], rtol=1e-5, atol=0), term
        assert not torch.isclose(share[term], every[term]), term
    assert share[POOL_DETECTION_TERM] > 0
    assert torch.allclose(share[POOL_DETECTION_TERM], boxes_only[POOL_DETECTION_TERM], rtol=1e-5, atol=0)
    assert not torch.isclose(share[POOL_DETECTION_TERM], first_two[POOL_DETECTION_TERM])


def test_a_run_with_a_share_feeds_the_teacher_the_labeled_images_and_the_first_pool_images(tiny_data, tiny_teacher,
                                                                                         tiny_pool, tmp_path, caplog):
    """A real run at `unlabeled_kd=0.5`, batches of 3, 3 and 2 labeled images: each step the student reads as many
    pool images, the teacher the labeled ones and then the first round(0.5 x n) pool images (2, 2, 1), the same
    tensors the student read; the run says so in its log, and results.csv holds `pool_det` and the KD terms, all
    trained."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, tiny_pool, unlabeled_boxes=f"label+{LOW}",
                        unlabeled_kd=0.5, batch=3, nbs=3, mosaic=1.0, workers=0)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert "the KD terms and the teacher's forward read 50% of each step's pool images" in caplog.text
    assert "; the teacher reads the labeled images and 50% of the pool images" in caplog.text  # the stage's line
    assert [len(t) for t in seen["teacher"]] == [5, 5, 3] * 2
    for student_labeled, student_pool, teacher in zip(labeled, pooled, seen["teacher"]):
        assert len(student_pool) == len(student_labeled)
        assert torch.equal(teacher, torch.cat([student_labeled, student_pool[:len(teacher) - len(student_labeled)]]))
    for row in read_results(tmp_path / "run"):
        assert all(float(row[f"train/{term}"]) > 0 for term in (*DENSE, POOL_DETECTION_TERM)), row


def test_a_run_feeds_the_teacher_the_labeled_images_and_the_student_the_pool(tiny_data, tiny_teacher, tiny_pool,
                                                                             tmp_path, caplog):
    """A real run: each step the teacher's input is the student's labeled input (same images, nothing more), the
    student also reads as many pool images, and the log holds `pool_det` and the KD terms, all trained."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, tiny_pool, unlabeled_boxes=f"label+{LOW}",
                        unlabeled_kd=False, batch=3, nbs=3, mosaic=1.0, workers=0)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert "; the teacher reads the labeled images only" in caplog.text  # the stage's log line
    assert len(seen["teacher"]) == len(labeled) == len(pooled) == 6  # 2 epochs of 3 steps
    for student_labeled, student_pool, teacher in zip(labeled, pooled, seen["teacher"]):
        assert torch.equal(teacher, student_labeled)
        assert len(student_pool) == len(student_labeled) and not torch.equal(student_pool, student_labeled)
    for row in read_results(tmp_path / "run"):
        assert all(float(row[f"train/{term}"]) > 0 for term in (*DENSE, POOL_DETECTION_TERM)), row


@pytest.mark.parametrize("share", [True, 0.5])
def test_ground_truth_only_methods_train_the_pool_on_its_boxes_without_the_teachers_pool_forward(
        tiny_data, tiny_teacher, tiny_pool, tmp_path, share, caplog):
    """A real run with FGD alone (it reads ground truth, so its term sees the labeled images only) and the pool labeled
    once: each step the student reads as many pool images as labeled ones and trains `pool_det` on them, and the
    teacher's input is the labeled batch alone (no term reads its pool rows), whatever `unlabeled_kd` says."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, tiny_pool, unlabeled_boxes=f"label+{LOW}",
                        unlabeled_kd=share, method="fgd", batch=3, nbs=3, mosaic=1.0, workers=0)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert "methods fgdx1; the teacher reads the labeled images only" in caplog.text  # the stage's log line
    assert len(seen["teacher"]) == len(labeled) == len(pooled) == 6  # 2 epochs of 3 steps
    for student_labeled, student_pool, teacher in zip(labeled, pooled, seen["teacher"]):
        assert torch.equal(teacher, student_labeled) and len(student_pool) == len(student_labeled)
    for row in read_results(tmp_path / "run"):
        assert float(row["train/fgd"]) > 0 and float(row[f"train/{POOL_DETECTION_TERM}"]) > 0, row


def test_the_pool_gets_teacher_views_only_of_the_images_the_teacher_reads(tiny_pool):
    """With two views and a teacher at its own size: the step's batch gets the student's pool view of every pool image
    always, and the teacher's (the weak view; its view at the teacher's size) only of the images the teacher reads:
    all (the default), the first (a share) or none (`unlabeled_kd=false`)."""
    loader = UnlabeledLoader(resolve_images(tiny_pool), train_args(imgsz=64, workers=0), {"names": NAMES, "channels": 3},
                             64, 2, 32, 0, two_views=True)
    teacher_keys = {"unlabeled_weak_img", "unlabeled_teacher_img"}
    for teacher_rows in (2, 1, 0):
        batch = {"img": torch.zeros(2, 3, 64, 64), "teacher_img": torch.zeros(2, 3, 128, 128)}
        add_unlabeled(batch, loader, 2, teacher_rows=teacher_rows)
        assert batch["unlabeled_img"].shape == (2, 3, 64, 64)
        assert (teacher_keys <= batch.keys()) if teacher_rows else not (teacher_keys & batch.keys())
        if teacher_rows:
            assert batch["unlabeled_weak_img"].shape == (teacher_rows, 3, 64, 64)
            assert batch["unlabeled_teacher_img"].shape == (teacher_rows, 3, 128, 128)
    loader.close()


@pytest.mark.parametrize("share, images, rows", [(True, 8, 8), (False, 8, 0), (0.25, 8, 2), (0.25, 2, 1),
                                                   (0.1, 3, 1), (0.5, 3, 2)])
def test_the_share_is_a_count_of_pool_images_at_least_one(share, images, rows):
    assert Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=share).pool_kd_rows(images) == rows


def test_a_share_keeps_the_options_that_read_the_teachers_pool_forward_and_refuses_online_boxes():
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=0.25, unlabeled_topk=0.03,
                                unlabeled_views="weak-strong")
    assert (recipe.unlabeled_kd, recipe.unlabeled_topk, recipe.unlabeled_views) == (0.25, 0.03, "weak-strong")
    with pytest.raises(KDConfigError, match="unlabeled_kd=0.25 trains the pool on the teacher's boxes made once") as e:
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=0.25, unlabeled_boxes="match")
    assert "\n" not in str(e.value)


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
    share = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=0.25)
    assert Recipe.from_saved(share.to_dict()).unlabeled_kd == 0.25
    assert [Recipe.from_kwargs(teacher="t.pt", unlabeled_kd=v).unlabeled_kd for v in (1, 0, 1.0)] == [True, False, True]
    for bad in ("no", 1.5, -0.25):
        with pytest.raises(KDConfigError, match="'unlabeled_kd' must be true, false or a share of the pool images "
                                                "between 0 and 1"):
            Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_kd=bad)
