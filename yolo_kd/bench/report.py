"""Benchmark results -> summary rows (mean and spread over seeds), a markdown report and a figure."""

from __future__ import annotations

import statistics
from pathlib import Path


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: list[dict], teacher: dict) -> dict[str, dict]:
    """Per label: mAP mean/std, gain over the baseline of the same seed (points), share of the teacher-baseline gap
    closed, median train seconds per epoch, overhead against the baseline of the same seed, peak memory."""
    base = {r["seed"]: r for r in results if r["kind"] == "baseline"}
    labels = list(dict.fromkeys(r["label"] for r in results))
    base_map = statistics.fmean(r["mAP50-95"] for r in base.values())
    gap = teacher["mAP50-95"] - base_map
    rows = {}
    for label in labels:
        runs = [r for r in results if r["label"] == label]
        gains = [100 * (r["mAP50-95"] - base[r["seed"]]["mAP50-95"]) for r in runs]
        overheads = [r["sec_per_epoch"] / base[r["seed"]]["sec_per_epoch"] for r in runs]
        rows[label] = {
            "kind": runs[0]["kind"], "seeds": [r["seed"] for r in runs],
            "mAP50-95": mean_std([r["mAP50-95"] for r in runs]), "mAP50": mean_std([r["mAP50"] for r in runs]),
            "gain_points": mean_std(gains),
            "gap_closed": statistics.fmean(gains) / (100 * gap) if gap > 0 else None,
            "sec_per_epoch": mean_std([r["sec_per_epoch"] for r in runs]),
            "overhead": mean_std(overheads),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in runs),
        }
    return rows


def _pm(value: tuple[float, float], digits: int = 4) -> str:
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def markdown(rows: dict, teacher: dict | None, step: dict | None, settings: dict) -> str:
    """The report: settings, the accuracy/overhead table, the step-time table and the targets as measured."""
    lines = [f"# yolo-kd bench: {settings['data']}", "",
             ", ".join(f"{k}={v}" for k, v in settings.items() if k != "data")]
    if rows:
        lines += ["", "| model | mAP50-95 | mAP50 | gain (points) | gap closed | s/epoch | overhead | peak mem (MB) |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| teacher | {teacher['mAP50-95']:.4f} | {teacher['mAP50']:.4f} | | | | | |"]
        for label, r in rows.items():
            closed = "" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"
            lines.append(f"| {label} | {_pm(r['mAP50-95'])} | {_pm(r['mAP50'])} | {_pm(r['gain_points'], digits=2)} "
                         f"| {closed} | {_pm(r['sec_per_epoch'], digits=1)} | {_pm(r['overhead'], digits=2)}x | "
                         f"{r['peak_mem_mb']:.0f} |")
        lines += ["", "mean ± standard deviation over seeds; gain and overhead are paired with the baseline of the "
                  "same seed; gap closed = gain / (teacher - baseline mAP50-95); peak memory is CUDA allocated, or "
                  "the process's resident set on CPU."]
    lines += targets(rows)
    if step:
        lines += ["", f"## Step time ({step['device']}, batch {step['batch']}, imgsz {step['imgsz']}"
                  + (", AMP" if step["amp"] else "") + f"; median of {step['rounds']} rounds x {step['steps']} steps)",
                  "", "| configuration | ms/step | ratio to student | teacher forward share |", "|---|---|---|---|"]
        for label, r in step["rows"].items():
            share = "" if r["teacher_share"] is None else f"{100 * r['teacher_share']:.0f}%"
            lines.append(f"| {label} | {r['ms']:.1f} | {r['ratio']:.2f}x | {share} |")
        lines += [""] + [f"- teacher forward ({k}): {v:.1f} ms" for k, v in step["teacher_forward_ms"].items()]
    return "\n".join(lines) + "\n"


def targets(rows: dict) -> list[str]:
    """The two targets, as measured: best yolo-kd gain >= 2x the built-in's; each method's overhead within +10%."""
    builtin = next((r for r in rows.values() if r["kind"] == "builtin"), None)
    ours = {k: r for k, r in rows.items() if r["kind"] == "yolo-kd"}
    if builtin is None or not ours:
        return []
    best = max(ours, key=lambda k: ours[k]["gain_points"][0])
    b_gain, o_gain = builtin["gain_points"][0], ours[best]["gain_points"][0]
    met = o_gain > 0 and o_gain >= 2 * max(b_gain, 0)
    lines = ["", "## Targets", "",
             f"- best yolo-kd gain ({best}: {o_gain:+.2f} points) >= 2 x built-in gain ({b_gain:+.2f}): "
             f"{'met' if met else 'NOT met'}"]
    limit = builtin["overhead"][0] * 1.1
    for label, r in ours.items():
        ok = r["overhead"][0] <= limit
        lines.append(f"- {label} overhead {r['overhead'][0]:.2f}x <= built-in {builtin['overhead'][0]:.2f}x + 10% "
                     f"({limit:.2f}x): {'met' if ok else 'NOT met'}")
    return lines


def plot(rows: dict, teacher: dict, path: Path) -> Path:
    """Two panels: mAP50-95 per model with its spread (teacher and baseline as lines), and train-time overhead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    colors = ["tab:gray" if rows[k]["kind"] == "baseline" else "tab:orange" if rows[k]["kind"] == "builtin"
              else "tab:blue" for k in labels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.bar(labels, [rows[k]["mAP50-95"][0] for k in labels], yerr=[rows[k]["mAP50-95"][1] for k in labels],
            color=colors, capsize=4)
    ax1.axhline(teacher["mAP50-95"], color="tab:green", ls="--", label="teacher")
    base = next(r for r in rows.values() if r["kind"] == "baseline")
    ax1.axhline(base["mAP50-95"][0], color="tab:gray", ls=":", label="baseline")
    ax1.set_ylabel("mAP50-95 (pycocotools)")
    ax1.legend()
    ax2.bar(labels, [rows[k]["overhead"][0] for k in labels], yerr=[rows[k]["overhead"][1] for k in labels],
            color=colors, capsize=4)
    ax2.axhline(1.0, color="tab:gray", ls=":")
    ax2.set_ylabel("train time per epoch / baseline")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_ha("right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
