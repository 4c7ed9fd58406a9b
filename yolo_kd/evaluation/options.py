"""Turn `key=value` overrides (strings from the command line, or Python values) into typed settings.

Every user mistake raises `KDConfigError` with one line naming the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from yolo_kd.errors import KDConfigError

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


def parse_overrides(command: str, overrides: dict, spec: dict[str, tuple[Callable[[str, Any], Any], Any]]) -> dict:
    """Check `overrides` against `spec` ({key: (converter, default)}) and return every key with a typed value.

    A default of `...` marks a required key. Unknown keys are refused with the list of known ones.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(spec))
    if unknown:
        raise KDConfigError(
            f"'{unknown[0]}' is not a valid argument of 'yolo-kd {command}': use one of {', '.join(sorted(spec))}"
        )
    settings = {}
    for key, (convert, default) in spec.items():
        if key in overrides and overrides[key] is not None:
            settings[key] = convert(key, overrides[key])
        elif default is ...:
            raise KDConfigError(f"'yolo-kd {command}' needs {key}=..., e.g. yolo-kd {command} {key}=<value>")
        else:
            settings[key] = default
    return settings
