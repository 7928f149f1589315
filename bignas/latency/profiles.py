"""Device profiles: how ONNX Runtime runs a model on one target (provider, threads, batch, repeats).

A profile is a YAML file in `profiles/`; unknown keys are refused with the file and field named.
No torch here: the device runner parses the same profile from its bundle's manifest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bignas.errors import BignasError, check_keys

EXECUTION_MODES = ("sequential", "parallel")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class ProfileError(BignasError):
    """A device profile is invalid or ONNX Runtime rejects it; the message names file and field."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    provider: str
    provider_options: dict[str, str] = field(default_factory=dict)
    intra_op_threads: int = 1  # 0: ONNX Runtime's default (one per core)
    inter_op_threads: int = 1
    execution_mode: str = "sequential"
    graph_optimization_level: str = "all"
    batch: int = 1
    warmup: int = 10
    repeats: int = 50
    affinity: str | None = None  # ONNX Runtime's session.intra_op_thread_affinities, e.g. "2;3"
    # More ONNX Runtime session config entries, e.g. {"session.intra_op.allow_spinning": "0"}.
    session_config: dict[str, str] = field(default_factory=dict)
    description: str = ""
    source: str = field(default="profile", compare=False)  # where it was read from, for messages

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["source"]
        return d


_REQUIRED = {"name", "provider"}


def parse_profile(data: Any, source: str) -> DeviceProfile:
    """Validate a profile mapping (from YAML or a bundle manifest)."""
    import onnxruntime as ort

    allowed = {f.name for f in dataclasses.fields(DeviceProfile)} - {"source"}
    check_keys(data, allowed, _REQUIRED, source, "", ProfileError)

    def check(name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ProfileError(f"{source}: field '{name}' must be {expected}, got {data[name]!r}")

    for name in ("name", "provider"):
        check(name, isinstance(data[name], str) and bool(data[name]), "a non-empty string")
    for name, low in (("intra_op_threads", 0), ("inter_op_threads", 0), ("batch", 1), ("warmup", 0),
                      ("repeats", 1)):
        if name in data:
            v = data[name]
            check(name, isinstance(v, int) and not isinstance(v, bool) and v >= low, f"an integer >= {low}")
    for name, choices in (("execution_mode", EXECUTION_MODES), ("graph_optimization_level", OPTIMIZATION_LEVELS)):
        if name in data:
            check(name, data[name] in choices, f"one of {list(choices)}")
    if data.get("affinity") is not None:
        check("affinity", isinstance(data["affinity"], str), "a string such as \"1;2\" (or null)")
    if "description" in data:
        check("description", isinstance(data["description"], str), "a string")
    options = data.get("provider_options", {}) or {}
    check("provider_options", isinstance(options, dict), "a mapping of option names to values")
    config = data.get("session_config", {}) or {}
    check("session_config", isinstance(config, dict), "a mapping of ONNX Runtime session config keys to values")
    if data["provider"] not in ort.get_all_providers():
        raise ProfileError(f"{source}: field 'provider': unknown ONNX Runtime execution provider "
                           f"'{data['provider']}' (known: {ort.get_all_providers()})")
    values = {**data, "provider_options": {str(k): str(v) for k, v in options.items()},
              "session_config": {str(k): str(v) for k, v in config.items()}}
    return DeviceProfile(**values, source=source)


def load_profile(path: str | Path) -> DeviceProfile:
    """Read and validate a device profile YAML file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such device profile") from None
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: malformed YAML ({e})") from None
    return parse_profile(data, str(path))
