"""`yolo-kd bench`: real tiny runs of baseline, Ultralytics' built-in KD and a yolo-kd method, scored by pycocotools,
reported as markdown/JSON/plot; a re-run reuses finished runs; bad options fail before anything runs."""

import json
import subprocess
import sys

import pytest

from yolo_kd import KDConfigError
from yolo_kd.bench import bench_command
from yolo_kd.bench.machine import describe, fingerprint
from yolo_kd.bench.report import summarize


@pytest.fixture(scope="module")
def bench(tiny_data, tiny_teacher, tmp_path_factory):
    project = tmp_path_factory.mktemp("bench")
    opts = dict(data=str(tiny_data), teacher=str(tiny_teacher), epochs=1, imgsz=64, batch=4, seeds="1",
                methods="fgd+pred", workers=0, project=str(project), step_rounds=1, step_steps=1, step_batch=2)
    return project / "bench", opts, bench_command(dict(opts))


def test_bench_trains_every_candidate_and_reports(bench):
    out, _, summary = bench
    labels = [r["label"] for r in summary["runs"]]
    assert labels == ["baseline", "Ultralytics KD (dis=6)", "yolo-kd fgd+pred"]
    builtin_args = json.loads((out / "Ultralytics_KD_dis_6_s1" / "job.json").read_text())["train_args"]
    assert builtin_args["distill_model"] == summary["teacher"]["checkpoint"]
    for run in summary["runs"]:
        assert 0.0 <= run["mAP50-95"] <= run["mAP50"] <= 1.0
        assert run["sec_per_epoch"] > 0 and run["peak_mem_mb"] > 100
    rows = summary["rows"]
    assert rows["baseline"]["overhead"][0] == pytest.approx(1.0)
    kd = rows["yolo-kd fgd+pred"]
    base_map = rows["baseline"]["mAP50-95"][0]
    assert kd["gain_points"][0] == pytest.approx(100 * (kd["mAP50-95"][0] - base_map))
    text = (out / "bench.md").read_text()
    assert "| yolo-kd fgd+pred |" in text and "## Targets" in text and "## Step time" in text
    assert json.loads((out / "bench.json").read_text())["settings"]["seeds"] == [1]
    assert (out / "bench.png").stat().st_size > 10_000


def test_step_benchmark_ratios(bench):
    step = bench[2]["step"]
    rows = step["rows"]
    assert list(rows) == ["student", "Ultralytics KD (dis=6)", "yolo-kd fgd+pred",
                          "yolo-kd fgd+pred + unlabeled pool (ratio 1)",
                          "yolo-kd fgd+pred + unlabeled pool (ratio 1), unlabeled_kd=0.25",
                          "yolo-kd fgd+pred + unlabeled pool (ratio 1), unlabeled_kd=False",
                          "yolo-kd fgd+pred (teacher at 128)"]  # the large row last: it slowed the rows after it
    assert rows["student"]["ratio"] == pytest.approx(1.0)
    for label, row in rows.items():
        assert row["ms"] > 0
        if label != "student":
            # the teacher's forward and the whole step are timed apart: on a loaded CPU the share can pass 1 a little
            assert 0 < row["teacher_share"] < 1.5
    # batches of 2: the teacher reads both pool images (true), one (a quarter, at least one) or none (false)
    assert set(step["teacher_forward_ms"]) == {"Ultralytics built-in", "yolo-kd", "yolo-kd + 2 pool images",
                                               "yolo-kd + 1 pool image", "yolo-kd@128"}
    text = (bench[0] / "bench.md").read_text()  # the pool step is judged against the same recipe's labeled-only step
    for pool in ("", ", unlabeled_kd=0.25", ", unlabeled_kd=False"):
        assert f"yolo-kd fgd+pred + unlabeled pool (ratio 1){pool}: " in text and "x the labeled-only step <= 1.6x" in text
    assert "\nMachine: " in text  # the one machine every run ran on


def test_rerun_reuses_finished_runs(bench):
    out, opts, first = bench
    results = sorted(out.glob("*_s1/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    again = bench_command({**opts, "step": False})
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert [r["mAP50-95"] for r in again["runs"]] == [r["mAP50-95"] for r in first["runs"]]


def test_step_time_only_bench_names_its_machine(bench):
    out, opts, _ = bench
    summary = bench_command({**opts, "train": False, "name": "step_only"})
    assert summary["runs"] == [] and summary["step"]["machine"] == fingerprint()
    text = (out.parent / "step_only" / "bench.md").read_text()
    assert "## Step time" in text and text.endswith(f"\nMachine: {describe(fingerprint())}.\n")


def test_summary_pairs_seeds_with_their_baseline():
    runs = [dict(label="baseline", kind="baseline", seed=s, **{"mAP50-95": m, "mAP50": 2 * m}, sec_per_epoch=t,
                 peak_mem_mb=1.0) for s, m, t in ((1, 0.10, 10.0), (2, 0.20, 20.0))]
    runs += [dict(label="kd", kind="yolo-kd", seed=s, **{"mAP50-95": m, "mAP50": 2 * m}, sec_per_epoch=t,
                  peak_mem_mb=2.0) for s, m, t in ((1, 0.13, 15.0), (2, 0.21, 24.0))]
    rows = summarize(runs, {"mAP50-95": 0.35, "mAP50": 0.7})
    kd = rows["kd"]
    assert kd["gain_points"][0] == pytest.approx(2.0)  # (3 + 1) / 2 points
    assert kd["overhead"][0] == pytest.approx((1.5 + 1.2) / 2)
    assert kd["gap_closed"] == pytest.approx(0.02 / (0.35 - 0.15))
    assert kd["mAP50-95"][1] == pytest.approx(0.0565685, rel=1e-4)


@pytest.mark.parametrize("opts, match", [
    ({"teacher": "t.pt"}, "bench needs data="),
    ({"data": "defect", "teacher": "t.pt", "methods": "fgd,nope"}, "unknown method 'nope'"),
    ({"data": "defect", "teacher": "t.pt", "lr": 0.1}, r"unknown bench option\(s\) \['lr'\]"),
    ({"data": "defect", "teacher": "t.pt", "dis": 1.0, "distill_model": "x.pt"}, "distill_model"),
])
def test_bad_bench_options(opts, match, tmp_path):
    with pytest.raises(KDConfigError, match=match):
        bench_command({**opts, "project": str(tmp_path)})
    assert not any(tmp_path.iterdir())


def test_tools_script_is_the_command(tmp_path):
    from pathlib import Path

    script = Path(__file__).parents[1] / "tools" / "bench.py"
    proc = subprocess.run([sys.executable, str(script), "teacher=t.pt", f"project={tmp_path}"], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "yolo-kd bench: error: bench needs data=: e.g. data=defect teacher=teacher.pt (or " \
                                  "teacher=yolov8s.yaml to train one first)"


def test_family_plan_shares_the_yolo26n_baseline_and_picks_each_pairs_default():
    from yolo_kd.bench.families import PAIRS, plan
    from yolo_kd.methods.registry import check_method
    from yolo_kd.recipe import Recipe

    teachers = {"yolo11s.yaml": "t11.pt", "yolo26s.yaml": "t26.pt"}
    jobs = plan({"epochs": 1}, [1, 2], teachers, 6.0, 64, ["default"])
    seed1 = [j for j in jobs if j.seed == 1]
    assert [j.label for j in seed1 if j.kind == "baseline"] == ["baseline yolo11n", "baseline yolo26n"]
    kd_rows = [j for j in seed1 if j.kind == "yolo-kd"]
    assert [j.label for j in kd_rows] == [f"{p.name} yolo-kd {p.default}" for p in PAIRS]
    assert [j.kd["cfg"]["teachers"]["teacher"]["model"] for j in kd_rows] == ["t11.pt", "t26.pt", "t11.pt"]
    for job in kd_rows:  # valid recipes whose options the methods take
        for spec in Recipe.from_dict(job.kd["cfg"]).stages[0].methods:
            check_method(spec.name, spec.params)
    assert kd_rows[1].kd["cfg"]["stages"][0]["methods"]["pred"]["box_weight"] == 2.5
    assert {j.train_args["seed"] for j in jobs} == {1, 2} and len(jobs) == 2 * len(seed1)
    every = plan({"epochs": 1}, [1], teachers, 6.0, 64, None)
    assert len([j for j in every if j.kind == "yolo-kd"]) == sum(len(p.variants) for p in PAIRS)


def family_report(pair: str, seeds: list[int], builtin: list[float], ours: list[float]) -> str:
    head = "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | gain (95% CI) | vs built-in (95% CI) |"
    row = lambda label, gains: f"| {label} | " + " | ".join(f"{g:+.2f}" for g in gains) + " | x | |"  # noqa: E731
    return "\n".join([f"## {pair}: teacher mAP50-95 0.3", "", "Paired gains in mAP50-95 points (run - baseline):", "",
                      head, "|---|", row("Ultralytics KD (dis=6)", builtin), row("yolo-kd sl2+pred", ours), "",
                      "Paired gains in mAP50 points, mean with 95% interval:", "", head, "|---|",
                      row("yolo-kd sl2+pred", [99.0] * len(seeds)), ""])


def test_pooled_seeds_pair_each_seed_with_its_own_builtin():
    from yolo_kd.bench.pool import pool, pooled_markdown

    part1 = family_report("YOLO11 (11s -> 11n)", [1, 2], [1.0, 0.0], [2.0, 1.5])
    part2 = family_report("YOLO11 (11s -> 11n)", [3], [-1.0], [0.5])
    rows = pool([part1, part2])["YOLO11 (11s -> 11n)"]
    assert rows["yolo-kd sl2+pred"] == {1: 2.0, 2: 1.5, 3: 0.5}  # mAP50-95 table only, not the mAP50 one
    text = pooled_markdown(pool([part1, part2]))
    # gains 2, 1.5, 0.5: sd 0.764 -> 4.303 * 0.764 / sqrt 3 = 1.90; differences 1, 1.5, 1.5: sd 0.289 -> 0.72
    assert "| yolo-kd sl2+pred | 3 | +1.33 ± 1.90 (inside the noise) | +1.33 ± 0.72 (above 0, 3 seeds) |" in text
    assert "| yolo-kd sl2+pred | +1.00 | +1.50 | +1.50 |" in text  # per seed, minus the built-in
    with pytest.raises(ValueError, match=r"seeds \[1, 2\] are in two reports"):
        pool([part1, part1])


def test_a_run_saved_before_a_job_field_existed_is_reused(tmp_path):
    """A result.json whose job lacks the fields added since (the code that saved it ran them at their defaults) names
    the same run: `launch` returns it and starts nothing; a job that differs in such a field is run again (here with
    `false` as the interpreter, so the launch fails at once instead of training)."""
    from dataclasses import asdict, replace

    from yolo_kd.bench.runs import Job, launch

    job = Job(label="x", kind="baseline", model="m.yaml", seed=1, train_args={"project": str(tmp_path), "name": "x"})
    saved = {k: v for k, v in asdict(job).items() if k not in ("eval_data", "scored")}
    job.folder.mkdir(parents=True)
    (job.folder / "result.json").write_text(json.dumps({"job": saved, "result": {"mAP50-95": 0.5}}))
    assert launch(job, python="false") == {"mAP50-95": 0.5, "reused": True}
    with pytest.raises(RuntimeError, match="bench run 'x' seed 1 failed"):
        launch(replace(job, scored="last"), python="false")
