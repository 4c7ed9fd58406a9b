"""The label-scarce bench's report (`scarce.md`, `scarce.json`): per row its mAP, its gain over the same seed's
baseline, paired differences from the built-in, the pseudo-label route and the recipe without the pool, the share of
the baseline-to-ceiling gap it closes and, seed by seed, its gain against `TARGET_SHARE` of the ceiling's; and which
finished runs of a bench folder belong in it (`same_bench`)."""

from __future__ import annotations

import json
from pathlib import Path

from .report import mean_ci95, verdict

DEFAULT_RECIPE = "sl2+pred"  # the rows' yolo-kd method: the default recipe (recipe.DEFAULT_METHOD)
LABELED_ROW = f"yolo-kd {DEFAULT_RECIPE}"  # the recipe on the labeled images alone: what the pool rows add images to
TARGET_SHARE = 0.7  # issue 32's target: the pool closes at least this share of the gap to 100% of the labels


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per row: mAP; gain over the same seed's baseline (seeds without a finished baseline run get none); paired
    differences, seed by seed, from the built-in, from the pseudo-label route (its best threshold: the pseudo row with
    the highest mean mAP) and, for the pool rows, from the same recipe on the labeled images alone; share of the
    baseline-to-ceiling gap closed, and against the target share of it (`vs_target`: per seed, gain - TARGET_SHARE x
    the ceiling's gain). A paired difference is 100 * (mAP - the reference row's mAP) of the same seed."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)

    def by_seed(runs):
        return {r["seed"]: r for r in runs}

    def first_of(kind):
        return by_seed(next((runs for runs in groups.values() if runs[0]["kind"] == kind), []))

    pseudo_rows = [runs for runs in groups.values() if runs[0]["kind"] == "pseudo"]
    best_pseudo = max(pseudo_rows, key=lambda runs: sum(r["mAP50-95"] for r in runs) / len(runs), default=[])
    refs = {"builtin": first_of("builtin"), "pseudo": by_seed(best_pseudo),
            "labeled": by_seed(groups.get(LABELED_ROW, []))}
    base = first_of("baseline")

    def points(a, b):
        return 100 * (a["mAP50-95"] - b["mAP50-95"])

    ceiling = {s: points(r, base[s]) for s, r in first_of("ceiling").items() if s in base}
    rows = {}
    for label, runs in groups.items():
        kind = runs[0]["kind"]
        paired_runs = [r for r in runs if r["seed"] in base]
        gains = [points(r, base[r["seed"]]) for r in paired_runs]

        def paired(ref_name, applies):
            ref = refs[ref_name]
            return with_ci([points(r, ref[r["seed"]]) for r in runs if r["seed"] in ref], applies)

        to_target = [g - TARGET_SHARE * ceiling[r["seed"]] for g, r in zip(gains, paired_runs) if r["seed"] in ceiling]
        seconds = [sum(r["epoch_seconds"]) for r in runs if r.get("epoch_seconds")]
        walls = [r["train_wall_seconds"] for r in runs if r.get("train_wall_seconds")]
        rows[label] = {
            "kind": kind, "seeds": [r["seed"] for r in runs], "maps": [r["mAP50-95"] for r in runs],
            "map50s": [r["mAP50"] for r in runs], "gain_seeds": [r["seed"] for r in paired_runs], "gains": gains,
            "gain_ci95": mean_ci95(gains) if gains else None,
            "vs_builtin": paired("builtin", kind not in {"builtin", "baseline"}),
            "vs_pseudo": paired("pseudo", kind not in {"pseudo", "baseline"}),
            "vs_labeled": paired("labeled", kind == "yolo-kd" and label != LABELED_ROW),
            "gap_closed": gap_closed(gains, [r["seed"] for r in paired_runs], ceiling),
            "vs_target": with_ci(to_target, kind not in {"baseline", "ceiling"}),
            "train_seconds": sum(seconds) / len(seconds) if seconds else None,
            "wall_seconds": sum(walls) / len(walls) if walls else None,
            "epochs": runs[0].get("epochs"), "peak_mem_mb": max((r["peak_mem_mb"] or 0) for r in runs),
        }
    return rows


def with_ci(values: list[float], applies: bool = True) -> dict | None:
    """{'values', 'ci95': (mean, half-width)} of per-seed values; None when there are none or the row does not apply."""
    return {"values": values, "ci95": mean_ci95(values)} if values and applies else None


def gap_closed(gains: list[float], seeds: list[int], ceiling: dict[int, float]) -> float | None:
    """Mean gain / mean ceiling gain over the seeds both have; None when the ceiling gains nothing on them (at a
    small budget the 100%-labels run need not beat the labeled subset at equal steps: no gap to close)."""
    pairs = [(g, ceiling[s]) for g, s in zip(gains, seeds) if s in ceiling]
    gap = sum(c for _, c in pairs)
    return sum(g for g, _ in pairs) / gap if pairs and gap > 0 else None


#: the order of the report's rows: by kind, the recipe on the labeled images before the pool rows
KIND_ORDER = {"baseline": 0, "builtin": 1, "yolo-kd": 2, "pseudo": 3, "pseudo-builtin": 4, "pseudo-kd": 5, "ceiling": 6}
PER_RUN_ARGS = {"data", "epochs", "seed", "close_mosaic", "name", "distill_model", "dis", "val",
                "patience"}  # set by `plan` per row


def same_bench(job: dict, train_args: dict, model: str, imgsz: int, teacher: str, labeled_yamls: set[str],
               sub_epochs: int, full_epochs: int) -> bool:
    """Whether a saved job is a row of this bench: the same student, evaluation size and training arguments (all but
    those `plan` sets per row), the same optimizer steps (`sub_epochs` on the labeled subset, whichever of
    `labeled_yamls` names it, `full_epochs` on any other data) and, for a distilled run, the same teacher checkpoint."""
    args = job["train_args"]
    common = ({k: v for k, v in args.items() if k not in PER_RUN_ARGS}
              == {k: v for k, v in train_args.items() if k not in PER_RUN_ARGS})
    epochs = sub_epochs if args["data"] in labeled_yamls else full_epochs
    teachers = {t for t in (job["kd"].get("teacher"), args.get("distill_model")) if t is not None}
    return (common and job["model"] == model and job["eval_imgsz"] == imgsz and args["epochs"] == epochs
            and teachers <= {teacher})


def saved_runs(out: Path) -> list[tuple[Path, dict]]:
    """(folder, its result.json: the saved job and result) of every finished run in the bench folder `out`."""
    return [(f.parent, json.loads(f.read_text())) for f in sorted(out.glob("*/result.json"))]


def with_earlier_runs(results: list[dict], jobs: list, out: Path, matches) -> list[dict]:
    """This invocation's results (with 'epochs') and every other finished run in `out` whose saved job `matches`,
    ordered by row (`KIND_ORDER`, then label) and seed; each earlier run is marked `earlier: True`."""
    done = {job.folder.resolve() for job in jobs}
    earlier = []
    for folder, saved in saved_runs(out):
        job = saved.get("job", {})
        if folder.resolve() in done or job.get("kind") not in KIND_ORDER or not matches(job):
            continue
        earlier.append({**saved["result"], "epochs": job["train_args"]["epochs"], "earlier": True})
    return sorted(results + earlier, key=lambda r: (KIND_ORDER.get(r["kind"], len(KIND_ORDER)),
                                                     r["label"] != LABELED_ROW, r["label"], r["seed"]))


def _ci(ci) -> str:
    if ci is None:
        return ""
    mean, half = ci["ci95"] if isinstance(ci, dict) else ci
    return f"{mean:+.2f} ± {half:.2f} ({verdict(mean, half)})"


def markdown(rows: dict, teacher: dict | None, settings: dict, n_labeled: int, n_pool: int, steps: int,
             pseudo: dict[float, dict] | None, earlier: int = 0) -> str:
    """The report: settings, the split (labeled and pool images) and budget, the per-seed table and the targets as
    measured; `earlier`: how many of the runs came from earlier invocations."""
    seeds = sorted({s for r in rows.values() for s in r["seeds"]})
    lines = [f"# yolo-kd label-scarce bench: {settings['data']}", "",
             ", ".join(f"{k}={v}" for k, v in settings.items() if k != "data"), "",
             f"{n_labeled} labeled training images ({100 * settings['labeled_fraction']:g}%), "
             f"{n_pool} in the unlabeled pool; every run makes {steps} optimizer steps. "
             + (("Teacher " + ("(trained here on the labeled subset only)"
                               if settings["teacher"].endswith((".yaml", ".yml"))
                               else f"({settings['teacher']}, as given)") + f": mAP50-95 {teacher['mAP50-95']:.4f}.")
                if teacher else "No row needs the teacher: none trained.")
             + "".join(f" Pseudo-labels at conf {conf:g}: {p['boxes']} boxes on {p['images']} pool images, "
                       f"{p['empty']} without a box." for conf, p in (pseudo or {}).items())
             + (f" {earlier} of the runs below are earlier runs of this bench (same budget, teacher and arguments), "
                "read from their result.json." if earlier else "")
             + (f" Rows with teacher_guard validate every epoch on {settings['guard_val']} pool images with their "
                "labels (still in the pool) and are scored here from last.pt." if settings.get("guard_val") else ""),
             "",
             "| model | epochs | mAP50-95 (mean) | " + " | ".join(f"seed {s}" for s in seeds)
             + " | gain (95% CI) | vs built-in (95% CI) | vs pseudo-labels (95% CI) | vs labeled-only (95% CI) "
             "| gap closed | train s (wall) |",
             "|---|---|---|" + "---|" * len(seeds) + "---|---|---|---|---|---|"]
    for label, r in rows.items():
        by_seed, maps = dict(zip(r["gain_seeds"], r["gains"])), dict(zip(r["seeds"], r["maps"]))
        cells = [f"{by_seed[s]:+.2f}" if s in by_seed else f"({maps[s]:.4f})" if s in maps else "" for s in seeds]
        closed = "" if r["gap_closed"] is None or r["kind"] == "baseline" else f"{100 * r['gap_closed']:.0f}%"
        if closed and r["vs_target"]:
            closed += f"; vs {TARGET_SHARE:.0%}: {_ci(r['vs_target'])}"
        secs = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        secs += "" if r["wall_seconds"] is None else f" ({r['wall_seconds']:.0f})"
        gain = "" if r["kind"] == "baseline" else _ci(r["gain_ci95"])
        lines.append(f"| {label} | {r['epochs'] or ''} | {sum(r['maps']) / len(r['maps']):.4f} | " + " | ".join(cells)
                     + f" | {gain} | {_ci(r['vs_builtin'])} | {_ci(r['vs_pseudo'])} | {_ci(r['vs_labeled'])} "
                     f"| {closed} | {secs} |")
    lines += ["", "Gains in mAP50-95 points over the same seed's baseline on the labeled subset; 'vs' columns are "
              "paired differences in mAP50-95 points, seed by seed (vs labeled-only: a pool row against the same "
              "recipe without the pool); gap closed = mean gain / mean gain of the 100%-labels ceiling, and vs "
              f"{TARGET_SHARE:.0%}: seed by seed, the gain minus {TARGET_SHARE:.0%} of the ceiling's gain (above 0: "
              f"the row closes {TARGET_SHARE:.0%} of the gap on the interval). A verdict holds only when the 95% "
              "interval excludes 0. In parentheses: the mAP50-95 of a seed with no baseline run. Train s: the epochs' "
              "seconds (mean over seeds); in parentheses, the training call's wall time (the epochs, and what runs "
              "between and around them: building, the pool's labeling, checkpoints)."]
    return "\n".join(lines) + "\n"
