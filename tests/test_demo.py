"""Issues 2 and 5: the demos' quick profiles run end to end and write their table and figures."""

import json

import cv2
import numpy as np
import pytest

from yolo_kd.demo import demo_command


@pytest.mark.parametrize("domain", ["defect", "agriculture"])
def test_demo_quick_profile(domain, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative project and weights folders, like the command's defaults
    report = demo_command(domain, {"profile": "quick", "project": "runs", "weights": "w"})
    printed = capsys.readouterr().out
    assert "profile=quick is a smoke run" in printed and "minutes on this machine" in printed
    out = tmp_path / "runs" / f"{domain}_quick"
    labels = ["teacher", "baseline", "distilled (sl2+pred)"] + (["distilled (sl2+pred) + unlabeled pool"]
                                                                 if domain == "defect" else [])
    saved = json.loads((out / "demo_results.json").read_text())
    assert list(saved["models"]) == list(report["models"]) == labels
    assert (out / "demo_table.md").read_text().count("\n| ") == len(labels)  # one row per model
    for row in saved["models"].values():
        assert all(0 <= m <= 1 for m in row["mAP50-95"]) and row["params_M"] > 0 and row["cpu_ms"] > 0
    base = saved["models"]["baseline"]["mAP50-95"]
    assert len(base) == 2  # the quick profile's two seeds
    for label in labels[2:]:
        row = saved["models"][label]
        assert row["gains"] == pytest.approx([100 * (m - b) for m, b in zip(row["mAP50-95"], base)])  # paired
        mean, half = row["gain_ci95"]
        assert mean == pytest.approx(sum(row["gains"]) / 2)
        assert row["verdict"] == ("above 0" if mean - half > 0 else "below 0" if mean + half < 0 else
                                  "inside the noise")
        assert label in report["verdict"]
    teacher, baseline = saved["models"]["teacher"], saved["models"]["baseline"]
    assert teacher["params_M"] > 2 * baseline["params_M"]
    assert (tmp_path / "w" / f"{domain}_teacher_quick.pt").is_file()  # cached for the next run
    grid = cv2.imread(str(out / "predictions.png"))
    assert grid.shape[1] == 256 * (1 + len(labels))  # the ground truth, then one column per model
    gt = grid[:, :256]
    assert ((gt[..., 1] == 200) & (gt[..., 0] == 0) & (gt[..., 2] == 0)).sum() > 50  # green ground-truth boxes
    assert (out / "pr_curves.png").stat().st_size > 1000
    assert saved["seconds"] > 0 and saved["labeled"] == (8 if domain == "defect" else saved["labeled"])
    if domain == "defect":  # 8 of the 16 training images keep their labels; the other 8 and 8 more are the pool
        pool = out / "pool"
        assert len(list((pool / "images" / "train").glob("*.jpg"))) == 8 and not (pool / "labels").exists()
        hidden = out / "data" / "hidden_labels.txt"
        assert saved["unlabeled"] == [str(hidden), str(pool / "images" / "train")]
        labeled = (out / "data" / "student_labeled.txt").read_text().split()
        assert len(labeled) == 8 and len(hidden.read_text().split()) == 8
        assert not set(labeled) & set(hidden.read_text().split())


def test_ground_truth_is_drawn_where_the_label_says(tmp_path):
    from yolo_kd.plots import draw_ground_truth

    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.25 0.5 0.25\n")  # box x 25-75, y 12.5-37.5 on a 100 x 100 image
    img = draw_ground_truth(np.zeros((100, 100, 3), np.uint8), str(label), {0: "x"})
    ys, xs = np.nonzero(img[..., 1] == 200)
    assert (xs.min(), xs.max()) == (25, 75) and ys.max() == 38 and img[60:, :, 1].max() == 0


def test_prediction_figure_uses_the_images_with_most_boxes(tmp_path):
    from yolo_kd.demo import busiest_images

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    counts = [0, 3, 1, 5, 2, 5]
    images = []
    for i, n in enumerate(counts):
        images.append(tmp_path / "images" / f"{i}.jpg")
        images[-1].write_bytes(b"")
        (tmp_path / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.1 0.1\n" * n)
    (tmp_path / "images" / "nolabel.jpg").write_bytes(b"")
    picked = busiest_images([*images, tmp_path / "images" / "nolabel.jpg"], 3)
    assert [p.name for p in picked] == ["1.jpg", "3.jpg", "5.jpg"]  # 5, 5, 3 boxes, kept in file order


def test_a_run_with_plots_draws_its_kd_terms(tiny_data, tiny_teacher, tmp_path):
    """With plots=True, kd_results.png lands beside results.png: one panel per KD term and one for kd_share, each
    drawn from results.csv."""
    from conftest import TINY_TRAIN
    from ultralytics import YOLO

    import yolo_kd
    from yolo_kd.plots import plot_kd_results

    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher), method="pred")
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="run", **{**TINY_TRAIN, "plots": True})
    run = tmp_path / "run"
    image = cv2.imread(str(run / "kd_results.png"))
    assert image is not None and (run / "results.png").is_file()
    assert plot_kd_results(run / "results.csv", ["pred_cls", "pred_ld", "absent"], tmp_path / "k.png") == [
        "train/pred_cls", "train/pred_ld", "kd_share"]
    assert cv2.imread(str(tmp_path / "k.png")).shape[1] > image.shape[1] * 0.9  # three panels, as the run's
