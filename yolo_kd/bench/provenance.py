"""Which code ran a bench run: yolo-kd's version and, when the package is a git checkout, its commit ('+changes' when
the package's files differ from that commit). Each run records it in its result.json beside its machine, so a report
that gathers the runs of several invocations (the label-scarce bench's folder) says which code made which rows."""

from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the yolo_kd folder


def git_commit(folder: Path) -> str | None:
    """'<short commit>' of the git checkout holding `folder`, '<short commit>+changes' when files under `folder`
    differ from it (or are untracked); None outside a checkout or without git."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                              timeout=20).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if changed else "")


def code_version(folder: Path = PACKAGE) -> str:
    """'yolo-kd 0.1.0 (git 1a2b3c4)', '... (git 1a2b3c4+changes)', or 'yolo-kd 0.1.0' outside a git checkout."""
    from .. import __version__

    commit = git_commit(folder)
    return f"yolo-kd {__version__}" + (f" (git {commit})" if commit else "")


def code_note(results: list[dict]) -> str:
    """The report's line on the code its runs ran: 'Code: <version>.' when they share one, else each version with
    its rows and seeds. Runs from before the code was recorded are counted as such; '' when none is known."""
    runs: dict[str, dict[str, set]] = {}
    for r in results:
        runs.setdefault(r.get("code") or "not recorded", {}).setdefault(r["label"], set()).add(r["seed"])
    if set(runs) <= {"not recorded"}:
        return ""
    if len(runs) == 1:
        return f"\nCode: {next(iter(runs))}.\n"
    named = [f"{code}: " + ", ".join(f"{label} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, sorted(seeds)))})"
                                     for label, seeds in labels.items())
             for code, labels in runs.items()]
    return "\nCode:\n" + "".join(f"- {line}\n" for line in named)
