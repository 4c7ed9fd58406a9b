"""Issue 22 item 4: the label-scarce bench: a fixed labeled subset, the rest as the unlabeled pool, pseudo-labels
beside (never over) the real labels, every row at the same optimizer steps, gains paired seed by seed."""

import json
import math
import shutil
from pathlib import Path

import pytest

from yolo_kd import KDConfigError
from yolo_kd.bench import bench_command
from yolo_kd.bench.machine import describe
from yolo_kd.bench.provenance import code_version
from yolo_kd.bench.scarce import epochs_for
from yolo_kd.bench.scarce_report import summarize


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


#: the module bench's settings, beside its data, teacher and project
SCARCE = dict(epochs=1, imgsz=64, batch=4, seeds="1", labeled_fraction=0.25, pseudo_conf=0.01, builtin=False, workers=0,
              mosaic=0.0)


@pytest.fixture(scope="module")
def scarce(tiny_data, tiny_teacher, tmp_path_factory):
    project = tmp_path_factory.mktemp("scarce")
    labels = tiny_data.parent / "labels" / "train"
    before = snapshot(labels)
    summary = bench_command(dict(SCARCE, data=str(tiny_data), teacher=str(tiny_teacher), project=str(project)))
    return project / "bench", summary, before, snapshot(labels)


def test_split_keeps_a_quarter_and_pseudo_labels_land_beside_the_pool(scarce):
    out, summary, before, after = scarce
    assert before == after  # the real label files are untouched
    split = out / "split"
    assert len((split / "labeled.txt").read_text().split()) == 2
    pool = sorted((split / "pool" / "images").iterdir())
    assert len(pool) == 6 and all(p.is_symlink() for p in pool)
    labeled = set((split / "labeled.txt").read_text().split())
    assert not labeled & {str(p.resolve()) for p in pool}  # pool and labeled subset are disjoint
    assert len(list((split / "pseudo_conf0.01" / "labels").glob("*.txt"))) == 6
    assert not (split / "pool" / "labels").exists()  # the pool's own folder holds links only
    assert summary["pseudo"][0.01]["images"] == 6


def test_every_row_makes_the_same_optimizer_steps(scarce):
    out, summary, _, _ = scarce
    images = {"labeled": 2, "pseudo": 8, "full": 8}
    steps = set()
    for job_file in out.glob("*_s1/job.json"):
        job = json.loads(job_file.read_text())
        data = job["train_args"]["data"]
        n = images["labeled"] if data.endswith("data_labeled.yaml") else images["full"]
        steps.add(job["train_args"]["epochs"] * math.ceil(n / 4))
    assert steps == {summary["steps"]} == {2}
    labels = [r["label"] for r in summary["runs"]]
    assert labels == ["baseline (labeled subset)", "yolo-kd sl2+pred",
                      "yolo-kd sl2+pred + unlabeled pool", "pseudo-labels (yolo-kd label conf=0.01) + plain student",
                      "ceiling: baseline on 100% of the labels"]
    unlabeled = json.loads((out / "yolo-kd_sl2+pred_+_unlabeled_pool_s1" / "job.json").read_text())
    assert unlabeled["kd"]["unlabeled"] == str(out / "split" / "pool" / "images")
    text = (out / "scarce.md").read_text()
    assert "| yolo-kd sl2+pred + unlabeled pool |" in text and "gap closed" in text
    assert summary["rows"]["baseline (labeled subset)"]["vs_pseudo"] is None
    results = [json.loads(f.read_text())["result"] for f in out.glob("*_s1/result.json")]
    machines = [r["machine"] for r in results]
    assert len(machines) == 5 and all(m == machines[0] for m in machines)  # one machine ran every row
    assert f"Machine: {describe(machines[0])}." in text
    for result in results:  # the training call's wall time holds its epochs and more
        assert result["train_wall_seconds"] > sum(result["epoch_seconds"]) > 0
    codes = {r["code"] for r in results}
    assert codes == {code_version()} and f"Code: {code_version()}." in text  # the code that ran every row


def test_epochs_for_equal_steps():
    assert epochs_for(240, 160, 8) == 12 and epochs_for(240, 40, 8) == 48 and epochs_for(3, 100, 8) == 1


def test_scarce_summary_pairs_each_seed():
    def run(label, kind, seed, m):
        return {"label": label, "kind": kind, "seed": seed, "mAP50-95": m, "mAP50": m, "peak_mem_mb": 1.0,
                "epoch_seconds": [1.0]}

    results = [run("base", "baseline", 1, 0.10), run("base", "baseline", 2, 0.20),
               run("builtin", "builtin", 1, 0.12), run("builtin", "builtin", 2, 0.21),
               run("pool", "yolo-kd", 1, 0.15), run("pool", "yolo-kd", 2, 0.24),
               run("pseudo", "pseudo", 1, 0.13), run("pseudo", "pseudo", 2, 0.25),
               run("ceiling", "ceiling", 1, 0.20), run("ceiling", "ceiling", 2, 0.30)]
    rows = summarize(results)
    pool = rows["pool"]
    assert pool["gains"] == pytest.approx([5.0, 4.0])
    assert pool["vs_builtin"]["values"] == pytest.approx([3.0, 3.0])
    assert pool["vs_pseudo"]["values"] == pytest.approx([2.0, -1.0])
    assert pool["gap_closed"] == pytest.approx(9.0 / 20.0)
    assert pool["vs_target"]["values"] == pytest.approx([5.0 - 0.7 * 10.0, 4.0 - 0.7 * 10.0])  # ceiling +10, +10
    assert rows["builtin"]["vs_target"]["values"] == pytest.approx([2.0 - 7.0, 1.0 - 7.0])
    assert rows["builtin"]["vs_builtin"] is None and rows["pseudo"]["vs_pseudo"] is None
    assert rows["ceiling"]["vs_target"] is None and rows["base"]["vs_target"] is None


def test_rows_and_batchnorm_variants_pick_the_planned_runs(tmp_path):
    """`rows=` keeps only the named rows (a budget check runs baseline and ceiling alone); `unlabeled_bn=` adds one
    pool row per BatchNorm choice, each passing its choice to the recipe."""
    from yolo_kd.bench.scarce import Split, plan

    split = Split(labeled_yaml=tmp_path / "l.yaml", pool=tmp_path / "pool", full_yaml="full.yaml", n_labeled=2,
                  n_pool=6)
    opts = dict(batch=4, close_mosaic_share=0.1, epochs=1, seeds=[1, 2], builtin=True, dis=6.0, pseudo_builtin=False,
                model="yolov8n.yaml", imgsz=64)
    jobs = plan({**opts, "rows": ["baseline", "ceiling"]}, {}, split, "t.pt", {0.25: tmp_path / "p.yaml"})
    assert [(j.kind, j.seed) for j in jobs] == [("baseline", 1), ("ceiling", 1), ("baseline", 2), ("ceiling", 2)]
    jobs = plan({**opts, "rows": ["pool"], "unlabeled_bn": ["all", "labeled"]}, {}, split, "t.pt", {})
    assert [(j.label, j.kd["unlabeled_bn"]) for j in jobs if j.seed == 1] == [
        ("yolo-kd sl2+pred + unlabeled pool", "all"),
        ("yolo-kd sl2+pred + unlabeled pool (unlabeled_bn=labeled)", "labeled")]


def test_pool_variants_add_one_pool_row_each_and_pseudo_rows_one_per_threshold(tmp_path):
    """`pool_variants=` adds a pool row per entry with its recipe keys; `pseudo_conf=` a pseudo-label row per
    threshold, each training on its own labelled copy of the pool."""
    from yolo_kd.bench.scarce import Split, plan

    split = Split(labeled_yaml=tmp_path / "l.yaml", pool=tmp_path / "pool", full_yaml="full.yaml", n_labeled=2,
                  n_pool=6)
    opts = dict(batch=4, close_mosaic_share=0.1, epochs=1, seeds=[1], builtin=False, dis=6.0, pseudo_builtin=False,
                model="yolov8n.yaml", imgsz=64, rows=["pool", "variants", "pseudo"],
                pool_variants=["unlabeled_boxes:0.5", "unlabeled_ratio:2/unlabeled_bn:labeled"])
    jobs = plan(opts, {}, split, "t.pt", {0.25: tmp_path / "a.yaml", 0.5: tmp_path / "b.yaml"})
    pools = [(j.label, {k: v for k, v in j.kd.items() if k not in ("teacher", "method", "unlabeled")})
             for j in jobs if j.kind == "yolo-kd"]
    assert pools == [("yolo-kd sl2+pred + unlabeled pool", {"unlabeled_bn": "all", "unlabeled_boxes": "label+0.25"}),
                     ("yolo-kd sl2+pred + unlabeled pool (unlabeled_boxes=0.5)", {"unlabeled_boxes": 0.5}),
                     ("yolo-kd sl2+pred + unlabeled pool (unlabeled_ratio=2, unlabeled_bn=labeled)",
                      {"unlabeled_ratio": 2, "unlabeled_bn": "labeled"})]
    assert [j.train_args["data"] for j in jobs if j.kind == "pseudo"] == [str(tmp_path / "a.yaml"),
                                                                          str(tmp_path / "b.yaml")]
    alone = plan({**opts, "rows": ["variants"]}, {}, split, "t.pt", {})  # the variants without the default row
    assert [j.label for j in alone] == [label for label, _ in pools[1:]]
    with_kd = plan({**opts, "rows": ["pseudo"], "pseudo_kd": True}, {}, split, "t.pt", {0.25: tmp_path / "a.yaml"})
    assert [(j.label, j.kind, j.kd, j.train_args["data"]) for j in with_kd] == [
        ("pseudo-labels (yolo-kd label conf=0.25) + plain student", "pseudo", {}, str(tmp_path / "a.yaml")),
        ("pseudo-labels (conf=0.25) + yolo-kd sl2+pred", "pseudo-kd", {"teacher": "t.pt", "method": "sl2+pred"},
         str(tmp_path / "a.yaml"))]


def test_a_guarded_variant_validates_on_pool_images_and_is_scored_like_every_row(scarce, tmp_path):
    """A pool variant with `teacher_guard` trains on the labeled subset with `val=True` on `guard_val` pool images
    (their original files, labels beside them, still in the pool), without early stopping, and is scored on the data
    set's val split from its last.pt; the other rows keep val=False and best.pt; without guard_val the bench refuses it
    in one line."""
    from yolo_kd.bench.scarce import Split, guard_split, plan

    out, _, _, _ = scarce
    split = Split(labeled_yaml=out / "split" / "data_labeled.yaml", pool=out / "split" / "pool" / "images",
                  full_yaml="full.yaml", n_labeled=2, n_pool=6)
    guarded = guard_split(split, 2, tmp_path)
    chosen = (tmp_path / "guard_val2.txt").read_text().split()
    guard_split(split, 2, tmp_path / "again")
    assert (tmp_path / "again" / "guard_val2.txt").read_text().split() == chosen  # the same images for the same seed
    originals = {str(p.resolve()) for p in split.pool.iterdir()}
    assert len(chosen) == 2 and set(chosen) <= originals
    assert all((Path(c).parents[2] / "labels" / Path(c).parent.name / f"{Path(c).stem}.txt").is_file() for c in chosen)
    opts = dict(batch=4, close_mosaic_share=0.1, epochs=1, seeds=[1], builtin=False, dis=6.0, pseudo_builtin=False,
                model="yolov8n.yaml", imgsz=64, rows=["pool", "variants"],
                pool_variants=["teacher_guard:relabel", "unlabeled_ratio:2"])
    jobs = {j.label: j for j in plan(opts, {"val": False, "project": str(tmp_path)}, guarded, "t.pt", {})}
    guard = jobs["yolo-kd sl2+pred + unlabeled pool (teacher_guard=relabel)"]
    assert (guard.train_args["data"], guard.train_args["val"], guard.eval_data, guard.checkpoint.name) == (
        str(guarded.guard_yaml), True, str(split.labeled_yaml), "last.pt")
    assert guard.train_args["patience"] == 0  # runs every epoch, as the rows without validation do
    assert guard.kd["unlabeled"] == str(split.pool) and guard.kd["teacher_guard"] == "relabel"
    for label in ("yolo-kd sl2+pred + unlabeled pool", "yolo-kd sl2+pred + unlabeled pool (unlabeled_ratio=2)"):
        job = jobs[label]
        assert (job.train_args["data"], job.train_args["val"], job.eval_data, job.checkpoint.name) == (
            str(split.labeled_yaml), False, None, "best.pt")
    with pytest.raises(KDConfigError, match="a row with teacher_guard validates every epoch: give guard_val=N") as err:
        bench_command(dict(SCARCE, data="x.yaml", teacher="t.yaml", project=str(tmp_path), rows="variants",
                           pool_variants="teacher_guard:relabel"))
    assert "\n" not in str(err.value)


def test_pool_rows_are_paired_with_the_labeled_only_row_even_without_a_baseline():
    """A bench run in pieces (`rows=labeled,variants` alone, or seeds whose baseline has not run) still reports
    each row's mAP and its paired difference from the recipe without the pool; gains only where a baseline exists."""
    from yolo_kd.bench.scarce_report import LABELED_ROW, markdown

    def run(label, kind, seed, m):
        return {"label": label, "kind": kind, "seed": seed, "mAP50-95": m, "mAP50": m, "peak_mem_mb": 1.0}

    results = [run(LABELED_ROW, "yolo-kd", 1, 0.20), run(LABELED_ROW, "yolo-kd", 2, 0.30),
               run("boxes", "yolo-kd", 1, 0.23), run("boxes", "yolo-kd", 2, 0.29)]
    rows = summarize(results)
    assert rows["boxes"]["vs_labeled"]["values"] == pytest.approx([3.0, -1.0])
    assert rows["boxes"]["gains"] == [] and rows["boxes"]["gain_ci95"] is None
    assert rows[LABELED_ROW]["vs_labeled"] is None
    rows = summarize(results + [run("base", "baseline", 2, 0.25)])  # seed 2 only has a baseline
    assert rows["boxes"]["gain_seeds"] == [2] and rows["boxes"]["gains"] == pytest.approx([4.0])
    assert rows["boxes"]["maps"] == pytest.approx([0.23, 0.29])
    text = markdown(rows, None, {"data": "d.yaml", "labeled_fraction": 0.25, "teacher": "t.pt"}, 2, 6, 10, None)
    assert "| boxes |  | 0.2600 | (0.2300) | +4.00 | +4.00 ± inf (inside the noise) |" in text  # mAP where no baseline
    assert "teacher_guard" not in text
    guarded = markdown(rows, None, {"data": "d.yaml", "labeled_fraction": 0.25, "teacher": "t.pt", "guard_val": 16},
                       2, 6, 10, None)
    assert "guard_val=16" in guarded and "teacher_guard validate every epoch on 16 pool images" in guarded


def test_rows_are_paired_with_the_better_pseudo_label_threshold():
    def run(label, kind, seed, m):
        return {"label": label, "kind": kind, "seed": seed, "mAP50-95": m, "mAP50": m, "peak_mem_mb": 1.0}

    results = [run("base", "baseline", 1, 0.10), run("base", "baseline", 2, 0.20),
               run("p25", "pseudo", 1, 0.14), run("p25", "pseudo", 2, 0.22),
               run("p50", "pseudo", 1, 0.11), run("p50", "pseudo", 2, 0.21),
               run("pool", "yolo-kd", 1, 0.15), run("pool", "yolo-kd", 2, 0.24)]
    rows = summarize(results)
    assert rows["pool"]["vs_pseudo"]["values"] == pytest.approx([1.0, 2.0])  # against p25, the better one
    assert rows["p50"]["vs_pseudo"] is None and rows["p50"]["gains"] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("variant, says", [("unlabeled_boxes:2", "between 0 and 1"), ("teacher:x.pt", "can vary"),
                                           ("unlabeled_boxes", "key:value")])
def test_a_bad_pool_variant_is_refused_in_one_line(variant, says):
    from yolo_kd import KDConfigError
    from yolo_kd.bench.command import bench_options

    with pytest.raises(KDConfigError, match=says) as err:
        bench_options({"data": "defect", "teacher": "t.pt", "pool_variants": variant})
    assert "\n" not in str(err.value)


def test_a_bench_run_in_parts_reports_every_part_at_its_budget(tiny_data, tmp_path):
    """Three invocations into one bench folder (real tiny training): the second reports the first's runs beside its
    own (and draws scarce.png); the third, at another budget, reports only its own run; a fourth on another split of
    the data is refused before it changes the folder."""
    opts = dict(data=str(tiny_data), model="yolov8n.yaml", teacher="yolov8s.yaml", epochs=1, imgsz=64, batch=4,
                labeled_fraction=0.25, builtin=False, workers=0, project=str(tmp_path), mosaic=0.0)
    first = bench_command({**opts, "rows": "baseline,ceiling", "seeds": "1"})
    second = bench_command({**opts, "rows": "baseline", "seeds": "2"})
    out = tmp_path / "bench"
    assert [(r["kind"], r["seed"]) for r in second["runs"]] == [("baseline", 1), ("baseline", 2), ("ceiling", 1)]
    assert [r["checkpoint"] for r in second["runs"] if r["seed"] == 1] == [r["checkpoint"] for r in first["runs"]]
    assert [r["seed"] for r in second["runs"] if r.get("earlier")] == [1, 1]
    assert second["rows"]["ceiling: baseline on 100% of the labels"]["gain_seeds"] == [1]  # paired with seed 1's
    assert second["settings"]["seeds"] == [1, 2]
    assert "2 of the runs below are earlier runs of this bench" in (out / "scarce.md").read_text()
    assert (out / "scarce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    third = bench_command({**opts, "rows": "baseline", "seeds": "3", "epochs": 2})
    assert [(r["seed"], r["epochs"], r.get("earlier")) for r in third["runs"]] == [(3, 4, None)]  # 4 steps, not 2
    split = (out / "split" / "labeled.txt").read_text()
    with pytest.raises(KDConfigError, match="holds runs of another split .*labeled_fraction=0.25.*name="):
        bench_command({**opts, "rows": "baseline", "seeds": "1", "labeled_fraction": 0.5})
    assert (out / "split" / "labeled.txt").read_text() == split  # the folder's split and runs are left as they were


def test_only_runs_of_the_same_student_teacher_and_arguments_join_the_report(tmp_path):
    from yolo_kd.bench.scarce_report import same_bench

    labeled = tmp_path / "data_labeled.yaml"
    args = {"imgsz": 64, "batch": 4, "project": str(tmp_path), "val": False}
    job = {"model": "yolov8n.yaml", "eval_imgsz": 64, "kd": {"teacher": "t.pt", "method": "sl2+pred"},
           "train_args": {**args, "data": str(labeled), "epochs": 4, "seed": 2, "name": "x_s2", "close_mosaic": 1}}

    def joins(job, teacher="t.pt"):
        return same_bench(job, args, "yolov8n.yaml", 64, teacher, {str(labeled)}, sub_epochs=4, full_epochs=1)

    assert joins(job)
    assert not joins(job, teacher="other.pt")  # distilled by another teacher
    assert not joins({**job, "model": "yolov8s.yaml"})
    assert not joins({**job, "train_args": {**job["train_args"], "epochs": 8}})  # another budget
    assert not joins({**job, "train_args": {**job["train_args"], "imgsz": 96}})
    full = {**job, "kd": {}, "train_args": {**job["train_args"], "data": "full.yaml", "epochs": 1}}
    assert joins(full) and joins(full, teacher="other.pt")  # a plain student on the full set: no teacher to match
    builtin = {**job, "kd": {}, "train_args": {**job["train_args"], "distill_model": "other.pt", "dis": 6.0}}
    assert not joins(builtin) and joins(builtin, teacher="other.pt")


def test_a_bench_folder_refuses_another_teacher_while_it_holds_that_teachers_runs(scarce, tiny_data, tiny_teacher,
                                                                                 tmp_path):
    """The module bench's distilled and pseudo-label runs came from tiny_teacher: the same rows with another teacher
    checkpoint would name the same label files and folders, so they are refused and nothing is relabeled."""
    out = scarce[0]
    other = tmp_path / "other.pt"
    shutil.copy(tiny_teacher, other)
    labels = snapshot(out / "split" / "pseudo_conf0.01" / "labels")
    with pytest.raises(KDConfigError, match=r"holds \d+ runs of another teacher .*name="):
        bench_command(dict(SCARCE, data=str(tiny_data), teacher=str(other), project=str(out.parent), rows="pseudo"))
    assert snapshot(out / "split" / "pseudo_conf0.01" / "labels") == labels
    again = bench_command(dict(SCARCE, data=str(tiny_data), teacher=str(tiny_teacher), project=str(out.parent),
                               rows="pseudo"))  # the folder's own teacher: reused, reported with the folder's runs
    assert all(r.get("reused") or r.get("earlier") for r in again["runs"]) and len(again["runs"]) == 5
