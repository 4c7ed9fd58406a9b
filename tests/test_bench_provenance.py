"""A bench run records the code that ran it (yolo-kd's version and git commit), and a report that gathers runs of
several invocations says which code made which rows."""

import subprocess

from yolo_kd import __version__
from yolo_kd.bench.provenance import code_note, code_version


def git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_code_version_names_the_commit_and_changes_under_the_folder(tmp_path):
    assert code_version(tmp_path) == f"yolo-kd {__version__}"  # not a git checkout
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("outside the package\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "pkg")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    commit = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert code_version(package) == f"yolo-kd {__version__} (git {commit})"  # the untracked notes are not the package's
    (package / "a.py").write_text("x = 2\n")
    assert code_version(package) == f"yolo-kd {__version__} (git {commit}+changes)"
    git(tmp_path, "checkout", "-q", "--", "pkg")
    (package / "b.py").write_text("y = 1\n")
    assert code_version(package) == f"yolo-kd {__version__} (git {commit}+changes)"  # an untracked file of its own


def test_code_note_names_one_code_once_and_each_code_with_its_rows():
    runs = [{"label": label, "seed": seed, "code": "yolo-kd 0.1.0 (git aaaaaaa)"} for seed in (1, 2)
            for label in ("baseline", "pool")]
    assert code_note(runs) == "\nCode: yolo-kd 0.1.0 (git aaaaaaa).\n"
    assert code_note([{"label": "baseline", "seed": 1}]) == ""  # runs from before the code was recorded
    runs += [{"label": "pool", "seed": 3, "code": "yolo-kd 0.1.0 (git bbbbbbb)"}, {"label": "baseline", "seed": 3}]
    assert code_note(runs) == ("\nCode:\n- yolo-kd 0.1.0 (git aaaaaaa): baseline (seeds 1, 2), pool (seeds 1, 2)\n"
                               "- yolo-kd 0.1.0 (git bbbbbbb): pool (seed 3)\n- not recorded: baseline (seed 3)\n")
