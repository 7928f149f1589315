"""Training configuration: one YAML file fully defines a run; the CLI only overrides keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bignas.errors import BignasError


class ConfigError(BignasError):
    """A config file or override that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class SandwichConfig:
    num_random: int = 2  # random children per step besides the largest and the smallest (BigNAS Sec. 3.1)
    distill: bool = True  # inplace distillation: other children learn the largest child's soft labels


@dataclass(frozen=True)
class ModelConfig:
    dropout: float = 0.0  # before the classifier, largest child only
    drop_connect: float = 0.0  # stochastic depth of residual blocks, largest child only, scaled by depth
    zero_init_last_bn: bool = True  # BigNAS Sec. 3.2: each residual block starts as identity


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"  # "sgd" (with momentum, Nesterov by default) or "rmsprop"
    lr: float = 0.1  # peak learning rate for the global batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5  # on conv / linear weights only, not on BN or biases
    alpha: float = 0.9  # RMSProp smoothing
    eps: float = 1e-3  # RMSProp epsilon (EfficientNet / BigNAS value)
    label_smoothing: float = 0.0  # on the largest child's label loss
    grad_clip: float | None = None  # max global gradient norm; None: no clipping


@dataclass(frozen=True)
class ScheduleConfig:
    warmup_epochs: float = 0.0  # linear warm-up from 0 to the peak
    decay: str = "cosine"  # "cosine", "exponential" or "constant"
    decay_rate: float = 0.97  # exponential: factor per epoch
    floor: float = 0.05  # constant ending at this fraction of the peak (BigNAS Sec. 3.2)


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 200  # also at every epoch end
    keep: int = 2


@dataclass(frozen=True)
class EvalConfig:
    calibration_images: int = 2000  # training images to re-estimate BN statistics of a child
    batch_size: int = 200
    every_epochs: int = 1  # top-1 of the largest and smallest child on val; 0 disables


@dataclass(frozen=True)
class LogConfig:
    every_steps: int = 10
    tensorboard: bool = True  # written when the tensorboard package is installed


@dataclass(frozen=True)
class TrainConfig:
    space: str = "cifar-small"
    data: str = "mnist5k"
    epochs: int = 10
    batch_size: int = 64  # per process; the global batch is batch_size x world size
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    channels_last: bool = False
    sync_bn: bool = True  # with several processes, BN statistics over the global batch
    workers: int = 2  # ImageFolder decoding processes
    image_size: int = 224  # ImageFolder decode size
    sandwich: SandwichConfig = field(default_factory=SandwichConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {"device": ("auto", "cpu", "cuda"), "precision": ("fp32", "bf16"),
            "optimizer.name": ("sgd", "rmsprop"), "schedule.decay": ("cosine", "exponential", "constant")}


def recipe_names() -> list[str]:
    folder = resources.files("bignas") / "recipes"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_config_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """The mapping in a config file (a path, or the name of a shipped recipe such as quickstart.yaml)."""
    p = Path(path)
    name = p.name if p.suffix else p.name + ".yaml"
    if p.is_file():
        text, source = p.read_text(), str(p)
    elif len(p.parts) == 1 and name in recipe_names():
        text, source = (resources.files("bignas") / "recipes" / name).read_text(), f"bignas/recipes/{name}"
    else:
        raise ConfigError(f"{path}: no such config file (shipped recipes: {', '.join(recipe_names())})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: malformed YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return data, source


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a config file and apply `key=value` overrides (dotted keys, YAML values)."""
    data, source = read_config_file(path)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optimizer.lr=0.05)")
        _set_dotted(data, key, yaml.safe_load(value))
    return config_from_dict(data, source)


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    return _build(TrainConfig, data, source, "")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    data[last] = value


def _build(cls, data: Any, source: str, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(sorted(fields))})")
    values = {}
    for name, value in data.items():
        f, key = fields[name], prefix + name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, source, key + ".")
        else:
            values[name] = _check_value(value, default, f.type, source, key)
    return cls(**values)


def _check_value(value: Any, default: Any, type_text: str, source: str, key: str) -> Any:
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{source}: '{key}' = {value!r} is not one of {list(_CHOICES[key])}")
    if value is None and "None" in str(type_text):
        return None
    if isinstance(default, bool) or "bool" == type_text:
        ok = isinstance(value, bool)
    elif isinstance(default, int) and "float" not in str(type_text):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float) or "float" in str(type_text):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{source}: '{key}' = {value!r} has the wrong type (expected {type_text})")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{source}: '{key}' = {value!r} must not be negative")
    return value
