"""Issue 3: multi-teacher stepwise distillation (stages, several teachers, schedules, resume mid-stage)."""

import pytest
import torch
from conftest import TINY_TRAIN, read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd.recipe import Recipe, Schedule


def stepwise(a, b, third_stage=True):
    stages = [{"epochs": [0, 1], "teachers": ["a"], "methods": {"mse": 1.0}},
              {"epochs": [1, 3 if not third_stage else 2], "teachers": ["b"], "methods": {"fgd": 1.0}}]
    if third_stage:
        stages.append({"epochs": [2, 3]})
    return {"teachers": {"a": str(a), "b": str(b)}, "stages": stages}


def test_stage_switches_and_only_stage_teachers_loaded(tiny_data, tiny_teacher, tiny_teacher_b, tmp_path):
    loaded = {}

    def on_batch_end(trainer):
        loaded.setdefault(trainer.epoch, set()).update(trainer.model.pool.loaded)

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_batch_end", on_batch_end)
    yolo_kd.distill(model, cfg=stepwise(tiny_teacher, tiny_teacher_b))
    model.train(data=str(tiny_data), epochs=3, project=str(tmp_path), name="steps", **TINY_TRAIN)
    r = read_results(tmp_path / "steps" / "results.csv")
    assert [row["kd_stage"] for row in r] == ["1", "2", "3"]
    assert float(r[0]["train/mse"]) > 0 and float(r[0]["train/fgd"]) == 0
    assert float(r[1]["train/mse"]) == 0 and float(r[1]["train/fgd"]) > 0
    assert float(r[2]["train/mse"]) == 0 and float(r[2]["train/fgd"]) == 0
    assert loaded == {0: {"a"}, 1: {"b"}, 2: set()}
    # each teacher loaded once at set-up (checked and probed); the first stage's kept, the second's loaded again
    assert model.trainer.model.pool.loads == 3


def test_two_teachers_of_different_widths_in_one_stage(tiny_data, tiny_teacher, tiny_teacher_b, tmp_path):
    cfg = {"teachers": {"s": str(tiny_teacher), "n11": str(tiny_teacher_b)},
           "stages": [{"fraction": [0, 1], "teachers": ["s", "n11"], "teacher_weights": [0.7, 0.3],
                       "methods": {"fgd": 1.0, "pred": 1.0}}]}
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, cfg=cfg)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="two", **TINY_TRAIN)
    distiller = model.trainer.model
    assert set(distiller.methods) == {"s__fgd", "s__pred", "n11__fgd", "n11__pred"}
    # each pair has its own adapters: the align convs map 64->128 (yolov8s) and 64->64 (yolo11n: identity)
    assert distiller.methods["s__fgd"].levels[0].align.out_channels == 128
    assert isinstance(distiller.methods["n11__fgd"].levels[0].align, torch.nn.Identity)
    row = read_results(tmp_path / "two" / "results.csv")[0]
    assert float(row["train/fgd"]) > 0 and float(row["train/pred_cls"]) > 0


def test_resume_mid_stage_restores_stage_and_adapters(tiny_data, tiny_teacher, tiny_teacher_b, tmp_path):
    class Crash(Exception):
        pass

    def crash_after_second_epoch(trainer):
        if trainer.epoch == 1:
            raise Crash

    cfg = stepwise(tiny_teacher, tiny_teacher_b, third_stage=False)  # stage 2 spans epochs 2-3
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_fit_epoch_end", crash_after_second_epoch)
    yolo_kd.distill(model, cfg=cfg)
    with pytest.raises(Crash):
        model.train(data=str(tiny_data), epochs=3, project=str(tmp_path), name="crash", **TINY_TRAIN)
    last = tmp_path / "crash" / "weights" / "last.pt"
    saved = torch.load(last, map_location="cpu", weights_only=False)["yolo_kd"]
    assert saved["stage"] == 1
    live = {k.removeprefix("methods."): v for k, v in saved["continue"]["model"].items() if k.startswith("methods.")}
    seen = {}

    def on_pretrain_end(trainer):
        seen["adapters"] = {k: v.detach().float().cpu().clone() for k, v in trainer.model.methods.state_dict().items()}
        seen["start_epoch"] = trainer.start_epoch

    resumed = YOLO(str(last))
    resumed.add_callback("on_pretrain_routine_end", on_pretrain_end)
    yolo_kd.distill(resumed)  # no options: the recipe comes back from last.pt
    resumed.train(resume=True)
    assert seen["start_epoch"] == 2
    assert seen["adapters"].keys() == saved["adapters"].keys() == live.keys()
    assert all(torch.equal(seen["adapters"][k], live[k]) for k in live)  # the live adapters continue
    r = read_results(tmp_path / "crash" / "results.csv")
    assert [row["kd_stage"] for row in r] == ["1", "2", "2"]
    assert float(r[2]["train/fgd"]) > 0


def test_schedules_and_stage_validation():
    s = Schedule(decay="cosine", final=0.1)
    assert s.factor(0, 0, 10) == pytest.approx(1.0) and s.factor(10, 0, 10) == pytest.approx(0.1)
    assert s.factor(5, 0, 10) == pytest.approx(0.55)
    assert Schedule(decay="linear", final=0.0).factor(5, 0, 10) == pytest.approx(0.5)
    assert Schedule(warmup_epochs=2).factor(1, 0, 10) == pytest.approx(0.5)
    recipe = Recipe.from_dict({"teachers": {"a": "a.pt"}, "stages": [
        {"fraction": [0, 0.5], "teachers": ["a"], "methods": "fgd"}, {"epochs": [4, 9], "teachers": ["a"],
                                                                      "methods": {"mse": 1}}]})
    with pytest.raises(yolo_kd.KDConfigError, match="overlap"):
        recipe.resolve_stages(10)
    with pytest.raises(yolo_kd.KDConfigError, match="ends at epoch 9"):
        recipe.resolve_stages(8)
    assert Recipe.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()


def test_shipped_recipe_parses():
    recipe = Recipe.from_kwargs(cfg="recipes/multi_teacher_stepwise.yaml")
    assert recipe.resolve_stages(100) == [(0, 45), (45, 90), (90, 100)]
    assert [s.teachers for s in recipe.stages] == [["color"], ["scale"], []]


def test_combine_mean_averages_teacher_targets(tiny_data, tiny_teacher, tiny_teacher_b, tmp_path):
    same = {"teachers": {"a": str(tiny_teacher), "b": str(tiny_teacher)},
            "stages": [{"fraction": [0, 1], "teachers": ["a", "b"], "combine": "mean", "methods": "mse+pred"}]}
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, cfg=same)
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="mean", **TINY_TRAIN)
    assert set(model.trainer.model.methods) == {"a__mse", "a__pred"}  # one set of adapters for the mean target
    assert float(read_results(tmp_path / "mean" / "results.csv")[0]["train/mse"]) > 0
    mixed = {**same, "teachers": {"a": str(tiny_teacher), "b": str(tiny_teacher_b)}}
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, cfg=mixed)
    with pytest.raises(yolo_kd.KDConfigError, match="combine: mean needs teachers with equal channels"):
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="mixed", **TINY_TRAIN)
