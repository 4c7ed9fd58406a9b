"""Issue 16: one seam to Ultralytics, arrows the right way, imports without side effects."""

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "yolo_kd"
SEAM = {"ultra.py", "trainer.py"}  # the only modules that may touch Ultralytics internals
PUBLIC = {("ultralytics", "YOLO"), ("ultralytics.utils", "LOGGER")}


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) of every import in a file, at any depth (lazy imports inside functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, a.name) for a in node.names]
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_only_the_seam_imports_ultralytics_internals():
    offenders = []
    for path in modules():
        if path.relative_to(PACKAGE).as_posix() in SEAM:
            continue
        for module, name in imports(path):
            if module.split(".")[0] == "ultralytics" and (module, name) not in PUBLIC:
                offenders.append(f"{path.relative_to(PACKAGE)}: {module}.{name}")
    assert not offenders, offenders


def test_the_boundary_check_sees_lazy_imports(tmp_path):
    """The walk above must catch an import hidden inside a function (what most modules do)."""
    probe = tmp_path / "m.py"
    probe.write_text("def f():\n    from ultralytics.nn.tasks import DetectionModel\n")
    assert ("ultralytics.nn.tasks", "DetectionModel") in imports(probe)


def relative_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names.add(node.module or "")
    return names


def test_arrows_point_the_right_way():
    assert not {"methods"} & relative_imports(PACKAGE / "recipe.py")  # the recipe is data
    assert not any(m.startswith("evaluation") for m in relative_imports(PACKAGE / "preflight.py"))
    assert "demo" not in relative_imports(PACKAGE / "bench" / "__init__.py")


def test_package_init_files_only_hand_names_on():
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        for node in tree.body:
            allowed = (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)
            is_getattr = isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            assert isinstance(node, allowed) or is_getattr, f"{init.relative_to(PACKAGE)}: {type(node).__name__}"


def fresh_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "YOLO_OFFLINE"}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "config")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)


def test_losses_import_without_trainer_or_ultralytics(tmp_path):
    out = fresh_python("import sys\nfrom yolo_kd.losses import FGDLoss, PearsonFeatureLoss\n"
                       "print(sorted(m for m in sys.modules if m.startswith(('ultralytics', 'yolo_kd.trainer'))))",
                       tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_importing_yolo_kd_sets_nothing_and_writes_nothing(tmp_path):
    out = fresh_python("import os, yolo_kd\nyolo_kd.__all__\nprint(os.environ.get('YOLO_OFFLINE'))", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "None"
    assert list(tmp_path.iterdir()) == []  # no config folder, no fonts, no settings file


COMMANDS = ["train", "val", "export", "demo", "bench", "data"]


def test_every_command_lists_its_keys_with_defaults(capsys):
    from yolo_kd.cli import main

    for command in COMMANDS:
        assert main([command, "help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: yolo-kd {command}") and "keys (default):" in text, command
    assert "  epochs             (10)" in (main(["bench", "help"]), capsys.readouterr().out)[1]


def test_every_command_reports_an_unknown_key_in_one_format(capsys, tmp_path, monkeypatch):
    from yolo_kd.cli import main

    monkeypatch.chdir(tmp_path)
    for command in COMMANDS:
        extra = ["steel"] if command == "data" else []
        assert main([command, *extra, "no_such_key=1"]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"yolo-kd {command}: error: "), (command, err)
        assert "no_such_key" in err[0]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
