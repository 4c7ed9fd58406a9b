"""Issues 2 and 5: the demos' quick profiles run end to end and write their table and figures."""

import json

import pytest

from yolo_kd.demo import demo_command


@pytest.mark.parametrize("domain", ["defect", "agriculture"])
def test_demo_quick_profile(domain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative project and weights folders, like the command's defaults
    report = demo_command(domain, {"profile": "quick", "project": "runs", "weights": "w"})
    out = tmp_path / "runs" / f"{domain}_quick"
    assert (out / "demo_table.md").read_text().count("\n") == 2 + 3
    assert (out / "pr_curves.png").stat().st_size > 1000 and (out / "predictions.png").stat().st_size > 1000
    saved = json.loads((out / "demo_results.json").read_text())
    assert list(saved["models"]) == list(report["models"]) and len(saved["models"]) == 3
    for row in saved["models"].values():
        assert 0 <= row["mAP50-95"] <= 1 and row["params_M"] > 0 and row["cpu_ms"] > 0
    teacher, baseline = saved["models"]["teacher"], saved["models"]["baseline"]
    assert teacher["params_M"] > 2 * baseline["params_M"]
    assert (tmp_path / "w" / f"{domain}_teacher_quick.pt").is_file()  # cached for the next run


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
