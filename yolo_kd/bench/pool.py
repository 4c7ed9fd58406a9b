"""Pool the seeds of benches run in parts (`python tools/pool_family_seeds.py a/families.md b/families.md`).

Reads each report's per-seed table of paired mAP50-95 gains (`report.paired_table`, one per `## <pair>` section),
joins the seeds of every file (a seed may appear once per pair) and gives, per pair and row, the gain over the
baseline and the paired difference from the built-in of the same seed, each as mean ± 95% interval (`mean_ci95`).
The pairing stays within a seed, so parts run on different machines pool: each seed's runs share its machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from .report import mean_ci95, verdict

BUILTIN = "Ultralytics KD"
TABLE_TITLE = "Paired gains in mAP50-95 points"


def read_gains(text: str) -> dict[str, dict[str, dict[int, float]]]:
    """pair -> row label -> seed -> paired mAP50-95 gain (points), from one families.md."""
    gains, pair, in_table, seeds = {}, None, False, []
    for line in text.splitlines():
        if line.startswith("## ") and ":" in line and not line.startswith("## Targets"):
            pair, in_table = line[3:].split(":")[0].strip(), False
        elif line.startswith(TABLE_TITLE) and pair is not None:
            in_table, seeds = True, []
        elif in_table and line.startswith("| model |"):
            seeds = [int(m) for m in re.findall(r"seed (\d+)", line)]
        elif in_table and line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            gains.setdefault(pair, {}).setdefault(cells[0], {}).update(
                {seed: float(cell) for seed, cell in zip(seeds, cells[1:]) if cell})
        elif in_table and not line.strip() and seeds:
            in_table = False
    return gains


def pool(texts: list[str]) -> dict[str, dict[str, dict[int, float]]]:
    """The per-seed gains of several reports joined; ValueError when a pair's row has the same seed twice."""
    pooled = {}
    for text in texts:
        for pair, rows in read_gains(text).items():
            for label, by_seed in rows.items():
                have = pooled.setdefault(pair, {}).setdefault(label, {})
                twice = sorted(set(have) & set(by_seed))
                if twice:
                    raise ValueError(f"{pair} / {label}: seeds {twice} are in two reports: pool disjoint seeds")
                have.update(by_seed)
    return pooled


def builtin_label(rows: dict) -> str | None:
    return next((label for label in rows if label.startswith(BUILTIN)), None)


def pooled_markdown(pooled: dict) -> str:
    """Per pair: each row's seeds, gain over the baseline and difference from the built-in (same seed), with CIs."""
    lines = []
    for pair, rows in pooled.items():
        builtin = builtin_label(rows)
        lines += ["", f"## {pair}", "", "| model | seeds | gain (95% CI) | vs built-in (95% CI) |", "|---|---|---|---|"]
        for label, by_seed in rows.items():
            gain = mean_ci95(list(by_seed.values()))
            cells = [label, str(len(by_seed)), f"{gain[0]:+.2f} ± {gain[1]:.2f} ({verdict(*gain)})", ""]
            if builtin and label != builtin:
                shared = sorted(set(by_seed) & set(rows[builtin]))
                diff = mean_ci95([by_seed[s] - rows[builtin][s] for s in shared])
                cells[3] = f"{diff[0]:+.2f} ± {diff[1]:.2f} ({verdict(*diff)}, {len(shared)} seeds)"
            lines.append("| " + " | ".join(cells) + " |")
        lines += per_seed_differences(rows, builtin)
    return "\n".join(lines[1:]) + "\n"


def per_seed_differences(rows: dict, builtin: str | None) -> list[str]:
    """A table of each row's gain minus the built-in's, seed by seed (the values the interval is taken over)."""
    if not builtin:
        return []
    seeds = sorted(rows[builtin])
    lines = ["", "Minus the built-in, per seed:", "", "| model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    for label, by_seed in rows.items():
        if label != builtin:
            lines.append(f"| {label} | " + " | ".join(f"{by_seed[s] - rows[builtin][s]:+.2f}" if s in by_seed else ""
                                                     for s in seeds) + " |")
    return lines


def pool_files(paths: list[Path]) -> str:
    return pooled_markdown(pool([Path(p).read_text() for p in paths]))
