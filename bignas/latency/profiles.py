"""Device profiles: how ONNX Runtime runs a model on one target (provider, threads, batch, repeats).

A profile is a YAML file; shipped ones are in `bignas/profiles/` and load by name (`cpu-1t`).
Unknown keys are refused with the file and field named.
No torch here: the device runner parses the same profile from its bundle's manifest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from bignas.errors import BignasError
from bignas.quantize import Int8Format, Precision
from bignas.schema import from_dict, load_yaml, rules, shipped

ExecutionMode = Literal["sequential", "parallel"]
OptimizationLevel = Literal["disable", "basic", "extended", "all"]
EXECUTION_MODES, OPTIMIZATION_LEVELS = get_args(ExecutionMode), get_args(OptimizationLevel)


class ProfileError(BignasError):
    """A device profile is invalid or ONNX Runtime rejects it; the message names file and field."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str = rules(name=True)
    provider: str = rules(non_empty=True)
    provider_options: dict[str, str] = field(default_factory=dict)
    intra_op_threads: int = rules(1, min=0)  # 0: ONNX Runtime's default (one per core)
    inter_op_threads: int = rules(1, min=0)
    execution_mode: ExecutionMode = "sequential"
    graph_optimization_level: OptimizationLevel = "all"
    batch: int = rules(1, min=1)
    warmup: int = rules(10, min=0)
    repeats: int = rules(50, min=1)
    affinity: str | None = None  # ONNX Runtime's session.intra_op_thread_affinities, e.g. "2;3"
    # More ONNX Runtime session config entries, e.g. {"session.intra_op.allow_spinning": "0"}.
    session_config: dict[str, str] = field(default_factory=dict)
    # int8: every model timed (blocks, whole children, the anchor; not the reference, the clock) is
    # quantized with `int8` first, as `bignas export --int8` quantizes a child for this device.
    precision: Precision = "fp32"
    int8: Int8Format = field(default_factory=Int8Format)
    description: str = ""
    source: str = field(default="profile", compare=False, metadata={"internal": True})  # for messages

    @property
    def quantized(self) -> Int8Format | None:
        """How the models timed under this profile are quantized; None when they run in fp32."""
        return self.int8 if self.precision == "int8" else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["source"]
        return d


def parse_profile(data: Any, source: str) -> DeviceProfile:
    """Validate a profile mapping (from YAML or a bundle manifest)."""
    import onnxruntime as ort

    profile = from_dict(DeviceProfile, data, source, ProfileError)
    if profile.provider not in ort.get_all_providers():
        raise ProfileError(f"{source}: field 'provider': unknown ONNX Runtime execution provider "
                           f"'{profile.provider}' (known: {ort.get_all_providers()})")
    return dataclasses.replace(profile, source=source)


def profile_names() -> list[str]:
    """Names of the device profiles shipped with the package."""
    return shipped("profiles")


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Read and validate a device profile: a shipped name (`cpu-1t`) or a YAML file."""
    return parse_profile(*load_yaml(name_or_path, "profiles", ProfileError))
