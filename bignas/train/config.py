"""Training configuration: one YAML file fully defines a run; the CLI only overrides keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args


from bignas.errors import BignasError
from bignas.schema import Invalid, from_dict, load_yaml, parse_assignments, rules, shipped

# Numbers no config may make negative, and those that must be above zero.
_NN, _POS = {"min": 0}, {"positive": True}


Device = Literal["auto", "cpu", "cuda"]  # the torch device; "auto": CUDA when available
DEVICES: tuple[str, ...] = get_args(Device)


class ConfigError(BignasError):
    """A config file or override that cannot be used; the message names the file and the key."""

    noun = "key"  # as in the `key=value` overrides


@dataclass(frozen=True)
class SandwichConfig:
    num_random: int = rules(2, **_NN)  # random children per step besides the largest and the smallest (BigNAS Sec. 3.1)
    distill: bool = True  # inplace distillation: other children learn the largest child's soft labels
    temperature: float = rules(1.0, **_POS)  # of those soft labels (1: the largest child's own predictions)
    distill_start_epochs: float = rules(0.0, **_NN)  # before this epoch, the other children learn the labels
    # How they learn those soft labels: "kl", the KL divergence (BigNAS); "alpha", AlphaNet's adaptive
    # alpha-divergence (Wang et al., 2021): per image the larger of D_alpha_min and D_alpha_max, its
    # importance weights clipped at alpha_clip, so that a child is pushed both to cover the teacher's
    # classes and not to be over-confident where the teacher is unsure.
    distill_loss: Literal["kl", "alpha"] = "kl"
    alpha_min: float = -1.0  # AlphaNet's defaults: -1, 1 (KL) and 5
    alpha_max: float = 1.0
    alpha_clip: float = rules(5.0, min=1)  # below 1 every weight is clipped and p = q costs a loss

    # Which random children: "uniform" draws (BigNAS), or AttentiveNAS's Pareto-aware "best-up" /
    # "worst-up": each the lowest- / highest-loss on the step's batch of `candidates` children of
    # about the same FLOPs (bignas.train.attentive; each candidate costs one forward pass).
    sampler: Literal["uniform", "best-up", "worst-up"] = "uniform"
    candidates: int = rules(3, min=2)  # AttentiveNAS's k

    def __post_init__(self) -> None:
        if self.alpha_min > self.alpha_max:
            raise Invalid("alpha_max", f"must be at least alpha_min ({self.alpha_min}), got {self.alpha_max}")


@dataclass(frozen=True)
class ModelConfig:
    dropout: float = rules(0.0, min=0, below=1)  # before the classifier, largest child only
    drop_connect: float = rules(0.0, min=0, below=1)  # stochastic depth of residual blocks, largest child only, scaled by depth
    zero_init_last_bn: bool = True  # BigNAS Sec. 3.2: each residual block starts as identity


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "rmsprop"] = "sgd"  # SGD with momentum (Nesterov by default) or RMSProp
    lr: float = rules(0.1, **_POS)  # peak learning rate for the global batch
    momentum: float = rules(0.9, **_NN)
    nesterov: bool = True
    weight_decay: float = rules(5e-5, **_NN)  # on conv / linear weights only, not on BN or biases
    alpha: float = rules(0.9, **_NN)  # RMSProp smoothing
    eps: float = rules(1e-3, **_POS)  # RMSProp epsilon (EfficientNet / BigNAS value)
    label_smoothing: float = rules(0.0, min=0, below=1)  # on the largest child's label loss
    grad_clip: float | None = rules(None, **_POS)  # max global gradient norm; None: no clipping


@dataclass(frozen=True)
class ScheduleConfig:
    warmup_epochs: float = rules(0.0, **_NN)  # linear warm-up from 0 to the peak
    decay: Literal["cosine", "exponential", "constant"] = "cosine"
    decay_rate: float = rules(0.97, **_POS)  # exponential: factor per epoch
    floor: float = rules(0.05, **_NN)  # constant ending at this fraction of the peak (BigNAS Sec. 3.2)


@dataclass(frozen=True)
class FinetuneConfig:
    # What a child fine-tuned from a supernet (`bignas finetune`) learns: the labels, with the
    # optimizer's label smoothing, or the soft predictions of the supernet's largest child.
    teacher: Literal["none", "largest"] = "none"


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = rules(200, **_POS)  # also at every epoch end
    keep: int = rules(2, **_POS)


@dataclass(frozen=True)
class EvalConfig:
    calibration_images: int = rules(2000, **_NN)  # training images to re-estimate BN statistics of a child
    batch_size: int = rules(200, **_POS)
    every_epochs: int = rules(1, **_NN)  # top-1 of the largest and smallest child on val; 0 disables


@dataclass(frozen=True)
class LogConfig:
    every_steps: int = rules(10, **_POS)
    tensorboard: bool = True  # written when the tensorboard package is installed


@dataclass(frozen=True)
class TrainConfig:
    space: str = "cifar-small"
    data: str = "mnist5k"
    epochs: int = rules(10, **_POS)
    batch_size: int = rules(64, **_POS)  # per process; the global batch is batch_size x world size
    seed: int = rules(0, **_NN)
    device: Device = "auto"  # "auto": CUDA when available
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast
    channels_last: bool = False
    sync_bn: bool = True  # with several processes, BN statistics over the global batch
    workers: int = rules(2, **_NN)  # ImageFolder decoding processes
    image_size: int = rules(224, **_POS)  # ImageFolder decode size
    sandwich: SandwichConfig = field(default_factory=SandwichConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# What a resumed run may change: nothing here alters the weights' trajectory up to the last
# checkpoint's step (epochs lengthens or shortens the schedule from there).
RESUMABLE_CHANGES = ("epochs", "device", "workers", "channels_last", "checkpoint", "eval", "log")


def config_changes(saved: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs between two config dicts: key -> (saved, new)."""
    changes = {}
    for key in sorted(set(saved) | set(new)):
        old, cur = saved.get(key), new.get(key)
        if isinstance(old, dict) and isinstance(cur, dict):
            changes.update(config_changes(old, cur, f"{prefix}{key}."))
        elif old != cur:
            changes[f"{prefix}{key}"] = (old, cur)
    return changes


def check_resume(saved: dict[str, Any], new: "TrainConfig", source: str) -> dict[str, tuple[Any, Any]]:
    """The changes a resume with config `new` makes to the run's `saved` config; refuses, naming
    every key, any change that would alter the trajectory of the run being continued. Keys added to
    the config since the run was saved read as their defaults, which reproduce what it did before."""
    changes = config_changes(config_from_dict(saved, source).to_dict(), new.to_dict())
    refused = [k for k in changes if k.split(".")[0] not in RESUMABLE_CHANGES]
    if refused:
        listed = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
        raise ConfigError(f"{source}: --resume cannot change {listed} (the run was trained with the saved "
                          f"values; start a new run with another --out instead). Changeable on resume: "
                          f"{', '.join(RESUMABLE_CHANGES)}")
    return changes


def recipe_names() -> list[str]:
    return [f"{name}.yaml" for name in shipped("recipes")]


def read_config_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """The mapping in a config file (a path, or the name of a shipped recipe such as quickstart.yaml)."""
    return load_yaml(path, "recipes", ConfigError)


def load_config(path: str | Path, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None) -> TrainConfig:
    """Read a config file, apply `key=value` overrides (dotted keys, YAML values), then `values`
    (dotted keys, values taken as they are); the result is validated as a whole."""
    data, source = read_config_file(path)
    for key, value in parse_assignments(overrides or [], "override", ConfigError):
        _set_dotted(data, key, value)
    for key, value in (values or {}).items():
        _set_dotted(data, key, value)
    return config_from_dict(data, source)


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    return from_dict(TrainConfig, data, source, ConfigError)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    data[last] = value
