"""One way to read options for every command (train, val, export, demo, bench, data): `key=value` tokens parsed as
Ultralytics parses them, then checked against the command's spec {key: (converter, default, help)}.

Every user mistake raises `KDConfigError` with one line naming the key and the fix; the command line prints it as
`yolo-kd <command>: error: ...` and exits with status 2. `yolo-kd <command> help` prints the spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import KDConfigError

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", "none", ""}


def as_bool(key: str, value: Any) -> bool:
    """`True`/`False`, or one of the strings true/false/1/0/yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise KDConfigError(f"{key}={value!r} is not a boolean: use {key}=True or {key}=False")


def as_int(key: str, value: Any, minimum: int = 1) -> int:
    """A whole number >= `minimum`."""
    try:
        number = float(value)
        number = int(number) if number.is_integer() and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise KDConfigError(f"{key}={value!r} must be a whole number >= {minimum}, e.g. {key}={max(minimum, 64)}")
    return number


def as_float(key: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    """A number in [low, high]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise KDConfigError(f"{key}={value!r} must be a number in [{low}, {high}]")
    return number


def as_count(key: str, value: Any) -> int:
    """A whole number >= 0 (seeds, workers, repetitions)."""
    return as_int(key, value, minimum=0)


def as_nonnegative(key: str, value: Any) -> float:
    """A number >= 0 (a loss weight)."""
    return as_float(key, value, low=0.0, high=float("inf"))


def as_str(key: str, value: Any) -> str | None:
    """A string, or None for an empty / 'none' value."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in {"", "none", "null"} else text


def existing_file(key: str, value: Any, suffixes: tuple[str, ...] = ()) -> Path:
    """A path to an existing file, optionally with one of `suffixes`."""
    text = as_str(key, value)
    if text is None:
        raise KDConfigError(f"{key}= is required, e.g. {key}=path/to/file{suffixes[0] if suffixes else ''}")
    path = Path(text).expanduser()
    if not path.is_file():
        raise KDConfigError(f"{key}={text} does not exist: pass the path of an existing file")
    if suffixes and path.suffix.lower() not in suffixes:
        raise KDConfigError(f"{key}={text} must be a {' or '.join(suffixes)} file")
    return path


def parse_tokens(tokens: list[str]) -> tuple[list[str], dict]:
    """Split ['defect', 'epochs=3', 'layers={student: [1]}'] into positionals and a dict of typed values (YAML for
    values starting with { or [, Ultralytics' own reading for the rest)."""
    from .ultra import parse_value

    positional, overrides = [], {}
    for token in tokens:
        if "=" not in token:
            positional.append(token)
            continue
        key, value = token.split("=", 1)
        if not key or not value:
            raise KDConfigError(f"'{token}' is not key=value: write e.g. epochs=10 (no spaces around '=')")
        if value[0] in "{[":
            try:
                overrides[key] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise KDConfigError(f"value of '{key}' is not valid YAML: {value}") from e
        else:
            overrides[key] = parse_value(value)
    return positional, overrides


def as_list(cast: Callable = str) -> Callable[[str, Any], list]:
    """A converter for '1,2,3' / 3 / [1, 2] -> a list of `cast` values."""
    def convert(key: str, value: Any) -> list:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        try:
            return [cast(v.strip() if isinstance(v, str) else v) for v in items if str(v).strip()]
        except (TypeError, ValueError):
            raise KDConfigError(f"{key}={value!r} must be a comma-separated list, e.g. {key}=1,2,3") from None
    return convert


def optional(convert: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """A converter that also accepts none/null (-> None)."""
    def wrapped(key: str, value: Any):
        return None if as_str(key, value) is None else convert(key, value)
    return wrapped


def read_options(command: str, overrides: dict, spec: dict[str, tuple], passthrough: set | None = None,
                 prog: str | None = None):
    """Check `overrides` against `spec` ({key: (converter, default[, help])}) and return every key with a typed
    value; with `passthrough` (e.g. Ultralytics' train keys), return (settings, the passed-through keys) instead.

    A default of `...` marks a required key. Unknown keys are refused with the list of known ones. Messages name the
    program as `prog` (default "yolo-kd <command>"; a script under tools/ passes its own name).
    """
    prog = prog or f"yolo-kd {command}"
    overrides = dict(overrides or {})
    extra = {k: v for k, v in overrides.items() if passthrough is not None and k not in spec and k in passthrough}
    unknown = sorted(set(overrides) - set(spec) - set(extra))
    if unknown:
        also = ", or any Ultralytics train argument" if passthrough is not None else ""
        raise KDConfigError(f"unknown {command} option(s) {unknown}: use one of {', '.join(sorted(spec))}{also} "
                            f"({prog} help lists them)")
    settings = {}
    for key, (convert, default, *_) in spec.items():
        if key in overrides and overrides[key] is not None:
            settings[key] = convert(key, overrides[key])
        elif default is ...:
            raise KDConfigError(f"'{prog}' needs {key}=..., e.g. {prog} {key}=<value>")
        else:
            settings[key] = default
    return settings if passthrough is None else (settings, extra)


def help_text(command: str, spec: dict[str, tuple], usage: str, more: str = "") -> str:
    """`yolo-kd <command> help`: the usage line, then every key with its default and meaning."""
    lines = [f"usage: {usage}", "", "keys (default):"]
    for key, (_, default, *text) in spec.items():
        shown = "required" if default is ... else repr(default)
        lines.append(f"  {key:<18} ({shown}) {text[0] if text else ''}".rstrip())
    if more:
        lines += ["", more]
    return "\n".join(lines)
