"""One loader for every config file: a frozen dataclass built from a YAML or JSON mapping.

A field's type says what it accepts (`int`, `float`, `bool`, `str`, `X | None`, `tuple[X, ...]`,
`Literal[...]`, a nested dataclass, `dict[str, str]`); its metadata adds the constraints
(`positive`, `min`, `max`, `below`, `non_empty`, `name`, `unique`, `odd`; see `rules`). Rules a type cannot state go in
the dataclass's `__post_init__`, which raises `Invalid`. No yaml and no torch at import: the
device runner parses profiles with only onnxruntime and numpy.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

from bignas.errors import BignasError, check_keys

# Shipped YAML folders of the package: what a bare name means in each, and what its files are called.
KINDS = {"spaces": ("search space", "search-space file"), "recipes": ("recipe", "config file"),
         "profiles": ("device profile", "device profile file")}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class Invalid(ValueError):
    """A cross-field rule broken in `__post_init__`; `from_dict` adds the file and the field's path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")
        self.field, self.message = field, message


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*(\.[A-Za-z0-9_+-]+)*$")


def name_problem(value: object) -> str | None:
    """Why `value` cannot be a name (of a space, a profile, a target), or None when it can. A name
    becomes part of file names, so it is never a path: no separator, no `..`, no file extension."""
    if not isinstance(value, str) or not _NAME.match(value) or len(value) > 100:
        return (f"must be a plain name (letters, digits, '-', '_', '+', inner dots; at most 100 characters), "
                f"got {value!r}")
    if value.lower().endswith((".yaml", ".yml", ".json")):
        return f"must be a name, not a file name, got {value!r}"
    return None


def rules(default: Any = dataclasses.MISSING, **metadata: Any) -> Any:
    """A field with constraints, e.g. `epochs: int = rules(10, positive=True)`.

    positive / min=N / max=N / below=N (exclusive): numbers (each element of a tuple); name: a plain name
    that can be part of a file name (see `name_problem`); odd: integers; non_empty: strings and
    tuples; unique: tuples. internal=True: never read from the file (e.g. where it was read from)."""
    return dataclasses.field(default=default, metadata=metadata)


def from_dict(cls: type, data: Any, source: str, error: type[BignasError], prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown, missing and bad fields with `error`,
    naming `source` and the dotted field (`stages[2].kernels[1]`). `prefix` ends with '.' if given."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")]
    required = {f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    check_keys(data, {f.name for f in fields}, required, source, prefix, error, noun=_noun(error))
    values = {f.name: _value(hints[f.name], data[f.name], f.metadata, source, prefix + f.name, error)
              for f in fields if f.name in data}
    try:
        return cls(**values)
    except Invalid as e:
        raise error(f"{source}: {_noun(error)} '{prefix}{e.field}': {e.message}") from None


def _noun(error: type[BignasError]) -> str:
    # Config errors say "key", as the `key=value` overrides do; every other file says "field".
    return getattr(error, "noun", "field")


def _value(tp: Any, v: Any, meta: Any, source: str, key: str, error: type[BignasError]) -> Any:
    def fail(what: str) -> BignasError:
        return error(f"{source}: {_noun(error)} '{key}' {what}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):  # only `X | None`
        if v is None:
            return None
        return _value(next(a for a in args if a is not type(None)), v, meta, source, key, error)
    if origin is Literal:
        if not any(type(v) is type(a) and v == a for a in args):  # True == 1, but not a choice of 1
            raise fail(f"= {v!r} is not one of {list(args)}")
        return v
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, source, error, key + ".")
    if origin is dict:  # dict[str, str]: ONNX Runtime options, given in YAML as any scalars
        if not isinstance(v, dict | None):
            raise fail(f"must be a mapping, got {v!r}")
        return {str(k): str(x) for k, x in (v or {}).items()}
    if origin is tuple:
        if not isinstance(v, list):
            raise fail(f"= {v!r} has the wrong type (expected a list)")
        items = tuple(_value(args[0], x, meta, source, f"{key}[{i}]", error) for i, x in enumerate(v))
        if meta.get("non_empty") and not items:
            raise fail("must be a non-empty list")
        if meta.get("unique") and len(set(items)) != len(items):
            raise fail(f"repeats a value: {list(items)}")
        return items
    ok = isinstance(v, tp) and not (isinstance(v, bool) and tp is not bool)
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise fail(f"= {v!r} has the wrong type (expected {_TYPE_NAMES[tp]})")
    if tp is float and not math.isfinite(v):
        raise fail(f"must be a finite number, got {v}")
    if tp is str and meta.get("non_empty") and not v:
        raise fail("must be a non-empty string")
    if tp is str and meta.get("name") and name_problem(v):
        raise fail(name_problem(v))
    if meta.get("positive") and v <= 0:
        raise fail(f"must be positive, got {v}")
    if "min" in meta and v < meta["min"]:
        raise fail(f"must not be negative, got {v}" if meta["min"] == 0 else
                   f"must be {_TYPE_NAMES[tp]} >= {meta['min']}, got {v}")
    if "max" in meta and v > meta["max"]:
        raise fail(f"must be at most {meta['max']}, got {v}")
    if "below" in meta and v >= meta["below"]:
        raise fail(f"must be below {meta['below']}, got {v}")
    if meta.get("odd") and v % 2 == 0:
        raise fail(f"must be odd, got {v}")
    return v


_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_assignments(items: list[str], what: str, error: type[BignasError]) -> list[tuple[str, Any]]:
    """`key=value` strings (overrides, options) as (key, value) pairs, each value read as a YAML
    scalar (`32`, `0.1`, `true`, `lstm`); a malformed item is an `error` naming it and `what` it is."""
    import yaml

    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise error(f"{what} {item!r}: expected key=value")
        try:
            parsed = yaml.safe_load(value)
            # YAML 1.1 reads 1e-4 (no dot in the mantissa) as a string: a number is meant.
            pairs.append((key, float(parsed) if isinstance(parsed, str) and _EXPONENT.match(parsed) else parsed))
        except yaml.YAMLError as e:
            raise error(f"{what} {item!r}: the value is not valid YAML ({e})") from None
    return pairs


def from_options(cls: type, items: list[str], what: str, error: type[BignasError]) -> Any:
    """Dataclass `cls` of options from `key=value` strings (`parse_assignments`); every key not given
    keeps its default, unknown keys and bad values are an `error` naming `what` (e.g. `--option`)."""
    return from_dict(cls, dict(parse_assignments(items, what, error)), what, error)


def describe_options(cls: type) -> str:
    """`name=default (help)` for each field of the options dataclass `cls`, for `--help`."""
    return ", ".join(f"{f.name}={f.default} ({f.metadata.get('help', '')})" for f in dataclasses.fields(cls)) \
        or "no options"


def shipped(kind: str) -> list[str]:
    """Names of the YAML files shipped in `bignas/<kind>/` (kind: spaces, recipes or profiles)."""
    folder = resources.files("bignas") / kind
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_yaml(name_or_path: str | Path, kind: str, error: type[BignasError]) -> tuple[dict[str, Any], str]:
    """The mapping in a YAML file and its source for messages: a path, or a shipped name
    (`cifar-small`, `quickstart` or `quickstart.yaml`, `cpu-1t`) resolved inside the package."""
    import yaml

    what, file_what = KINDS[kind]
    path = Path(name_or_path)
    name = path.name[:-5] if path.suffix == ".yaml" else path.name
    if path.is_file():
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise error(f"{source}: cannot be read as a UTF-8 text {file_what} ({e})") from None
    elif len(path.parts) == 1 and name in shipped(kind):
        text, source = (resources.files("bignas") / kind / f"{name}.yaml").read_text(), f"bignas/{kind}/{name}.yaml"
    elif len(path.parts) == 1 and path.suffix not in (".yaml", ".yml"):
        raise error(f"unknown {what} '{name_or_path}' (shipped: {shipped(kind)})")
    else:
        raise error(f"{path}: no such {file_what} (shipped: {', '.join(shipped(kind))})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{source}: malformed YAML ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping at the top level")
    return data, source
