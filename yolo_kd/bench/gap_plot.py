"""The label-scarce bench's figure (`scarce.png`): each row's gain over the same seed's baseline against the gap that
100% of the labels closes."""

from __future__ import annotations

import math
from pathlib import Path

from .scarce_report import TARGET_SHARE


def plot_gap(rows: dict, path: Path, title: str) -> Path | None:
    """One line per row that has gains (top to bottom in report order): a dot per seed, the mean with its 95%
    interval; vertical lines at 0 (the baseline on the labeled subset), at the ceiling's mean gain (100% of the gap)
    and at the target share of it (`TARGET_SHARE`). None (nothing drawn) when no row has a gain."""
    shown = [(label, r) for label, r in rows.items() if r["kind"] != "baseline" and r["gains"]]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 1.4 + 0.55 * len(shown)))
    for y, (label, r) in enumerate(reversed(shown)):
        color = "tab:green" if r["kind"] == "ceiling" else "tab:purple" if r["kind"].startswith("pseudo") \
            else "tab:orange" if r["kind"] == "builtin" else "tab:blue"
        ax.scatter(r["gains"], [y] * len(r["gains"]), color=color, alpha=0.45, s=22, zorder=3)
        mean, half = r["gain_ci95"]
        ax.errorbar([mean], [y], xerr=None if math.isinf(half) else [half], fmt="D", color=color, capsize=5, zorder=4)
    ax.set_yticks(range(len(shown)), [label for label, _ in reversed(shown)], fontsize=8)
    ax.axvline(0.0, color="tab:gray", ls=":", label="baseline (labeled subset)")
    ceiling = next((r for r in rows.values() if r["kind"] == "ceiling" and r["gains"]), None)
    if ceiling and ceiling["gain_ci95"][0] > 0:
        gap = ceiling["gain_ci95"][0]
        ax.axvline(gap, color="tab:green", ls="--", label=f"100% of the labels ({gap:+.2f})")
        ax.axvline(TARGET_SHARE * gap, color="tab:green", ls=":", alpha=0.6, label=f"{TARGET_SHARE:.0%} of that gap")
    ax.set_xlabel("mAP50-95 gain over the same seed's baseline (points)")
    ax.set_title(f"{title}\ndots: seeds; diamond: mean with its 95% interval", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
