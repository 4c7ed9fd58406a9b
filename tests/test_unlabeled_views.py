"""Issue 32: weak/strong views of the pool (`unlabeled_views: weak-strong`): the teacher sees each pool image without
the photometric augmentation, the student with it, with the same geometry (mosaic, affine, flips), so the dense
target stays aligned. Photometric steps act pixel by pixel, so two pixels equal in the weak view are equal in the
strong one: a geometric mismatch (a flip on one view only, another crop) breaks that."""

import numpy as np
import pytest
import torch

from yolo_kd.recipe import Recipe
from yolo_kd.ultra import train_args
from yolo_kd.unlabeled import resolve_images
from yolo_kd.unlabeled_loader import UnlabeledLoader

from test_unlabeled import NAMES, recorded_run

PHOTOMETRIC = {"hsv_h": 0.1, "hsv_s": 0.9, "hsv_v": 0.6, "augmentations": []}  # HSV only: no blur


def pixelwise(weak: torch.Tensor, strong: torch.Tensor) -> bool:
    """Whether strong = f(weak) pixel by pixel for one (3, H, W) image: every weak colour maps to one strong colour."""
    w = weak.reshape(3, -1).T.double() @ torch.tensor([1.0, 256.0, 65536.0], dtype=torch.float64)
    s = strong.reshape(3, -1).T.double() @ torch.tensor([1.0, 256.0, 65536.0], dtype=torch.float64)
    pairs = np.unique(np.stack([w.numpy(), s.numpy()], 1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs)


def test_the_two_views_share_their_geometry(tiny_pool):
    args = train_args(imgsz=64, workers=0, mosaic=1.0, fliplr=0.5, flipud=0.5, degrees=20.0, **PHOTOMETRIC)
    loader = UnlabeledLoader(resolve_images(tiny_pool), args, {"names": NAMES, "channels": 3}, 64, 4, 32, 0,
                             two_views=True)
    loader.restart(1)
    for _ in range(3):
        batch = loader.next(3)
        assert batch["img"].shape == batch["img_strong"].shape == (3, 3, 64, 64)
        assert batch["img"].dtype == batch["img_strong"].dtype == torch.uint8
        for weak, strong in zip(batch["img"], batch["img_strong"]):
            assert not torch.equal(weak, strong) and pixelwise(weak, strong)
            assert not pixelwise(weak, torch.flip(strong, (-1,)))  # the check sees a flip on one view
    loader.close_mosaic()  # rebuilt without mosaic: still two views
    batch = loader.next(2)
    assert all(pixelwise(w, s) for w, s in zip(batch["img"], batch["img_strong"]))


def test_the_teacher_sees_the_weak_view_the_student_the_strong(tiny_data, tiny_teacher, tiny_pool, tmp_path):
    """In a real run (same views: `test_unlabeled.test_the_teacher_sees_the_students_pool_images`)."""
    seen = recorded_run(tmp_path, tiny_data, tiny_teacher, tiny_pool, epochs=1, unlabeled_views="weak-strong",
                        **PHOTOMETRIC)
    labeled, pooled = seen["student"][0::2], seen["student"][1::2]
    assert len(seen["teacher"]) == len(pooled) == 2
    for n, student_pool, teacher in zip((len(x) for x in labeled), pooled, seen["teacher"]):
        teacher_pool = teacher[n:]
        assert teacher_pool.shape == student_pool.shape and not torch.equal(teacher_pool, student_pool)
        assert all(pixelwise((w * 255).round(), (s * 255).round()) for w, s in zip(teacher_pool, student_pool))


def test_views_are_a_recipe_choice():
    assert Recipe.from_kwargs(teacher="t.pt").unlabeled_views == "same"
    with pytest.raises(Exception, match="unlabeled_views"):
        Recipe.from_kwargs(teacher="t.pt", unlabeled_views="strong")
