"""The run directory, and a trained run opened from it. The only code that knows the layout:

    RUN/config.yaml      the full effective training config
    RUN/run.json         the search space, the dataset summary and the world size
    RUN/metrics.jsonl    one record per log interval and per evaluated epoch
    RUN/checkpoints/     step-XXXXXXXX.pt, the newest few (bignas.train.checkpoint)
    RUN/supernet.pt      the final weights
    RUN/child.pt         instead, those of a run that trained one child (`train --arch`, `finetune`),
                         in the child file format (bignas.child_file), with run.json's 'arch' and 'training'
    RUN/accuracy.jsonl   the search's accuracy cache (bignas.search.evaluator)
    RUN/predictor.json   the accuracy predictor fitted on that cache (bignas.search.predictor_run)
    RUN/tensorboard/     event files, when tensorboard is installed
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from bignas.data import Dataset, load_dataset
from bignas.errors import BignasError
from bignas.evaluate import evaluate_child
from bignas.io import atomic_path, read_json, write_json
from bignas.child_file import read_child, save_child
from bignas.nn import Supernet, embed
from bignas.space import Child, SearchSpace, parse_space
from bignas.train.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint,
                                     save_checkpoint)
from bignas.train.config import TrainConfig, load_config
from bignas.weights import load_weights, save_weights


class RunError(BignasError):
    """A run directory that cannot be used as asked (exists already, nothing to resume, ...)."""


class RunDir:
    """Paths, reads and writes of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_file = self.path / "config.yaml"
        self.meta_file = self.path / "run.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.final_file = self.path / "supernet.pt"
        self.child_file = self.path / "child.pt"
        self.accuracy_file = self.path / "accuracy.jsonl"
        self.predictor_file = self.path / "predictor.json"
        self.tensorboard_dir = self.path / "tensorboard"

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ training writes

    def create(self, config: TrainConfig, space: SearchSpace, data: dict[str, Any], world_size: int,
               fields: dict[str, Any] | None = None) -> None:
        """Start a fresh run: its config, space and data summary (and `fields`: see `read_meta`), and
        an empty metrics log."""
        held = [p.name for p in (self.meta_file, self.final_file, self.child_file) if p.exists()]
        held += [self.checkpoints.name] if self.latest_checkpoint() is not None else []
        held += [self.metrics_file.name] if self.metrics_file.exists() and self.metrics_file.stat().st_size else []
        if held:
            raise RunError(f"{self.path}: already holds a run ({', '.join(held)}); pass --resume to continue it "
                           f"or choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        write_json(self.meta_file, {"space": space.to_dict(), "space_hash": space.hash, "data": data,
                                    "world_size": world_size, **(fields or {})})
        self.metrics_file.write_text("")

    def write_config(self, config: TrainConfig) -> None:
        with atomic_path(self.config_file) as tmp:
            tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop records a killed run wrote after `step`, its last checkpoint: they will be written again."""
        lines = self.metrics_file.read_text().splitlines() if self.metrics_file.exists() else []
        kept = [ln for ln in lines if (at := _step_of(ln)) is not None and at <= step]
        with atomic_path(self.metrics_file) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in kept))

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files a killed write left behind (`.NAME.*.tmp`); returns them."""
        stale = [p for folder in (self.path, self.checkpoints) if folder.is_dir()
                 for p in folder.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink()
        return stale

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int) -> Path:
        return save_checkpoint(self.checkpoints, step, state, keep)

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    def load_latest_checkpoint(self, space_hash: str) -> tuple[Path, dict[str, Any]]:
        """The newest readable checkpoint. One cut short by a crash during its own write is
        skipped, with a warning, for the one before it."""
        found = list_checkpoints(self.checkpoints)
        if not found:
            raise RunError(f"{self.path}: no checkpoint to resume from ({self.checkpoints.name}/step-*.pt): it stopped "
                           f"before its first, so nothing is lost by removing the folder and starting again")
        for path in reversed(found[1:]):
            try:
                return path, load_checkpoint(path, space_hash)
            except CheckpointError as e:
                print(f"warning: {e}; resuming from the checkpoint before it", file=sys.stderr)
        return found[0], load_checkpoint(found[0], space_hash)

    def save_final(self, model_state: dict[str, Any], space_hash: str) -> None:
        save_weights({"model": model_state, "space_hash": space_hash}, self.final_file)

    # ------------------------------------------------------------------ reads

    def read_config(self, overrides: list[str] | None = None, values: dict[str, Any] | None = None) -> TrainConfig:
        if not self.config_file.exists():
            raise RunError(f"{self.path}: no {self.config_file.name} (is this a directory written by 'bignas train'?)")
        return load_config(self.config_file, overrides, values)

    def read_meta(self) -> dict[str, Any]:
        """run.json: 'space', 'space_hash', 'data', 'world_size'; a run of one child also 'arch' (its
        architecture) and 'training' (how: {"kind": "alone" | "finetuned", ...})."""
        meta = read_json(self.meta_file, "run file (is this a directory written by 'bignas train'?)", RunError)
        if not isinstance(meta, dict) or "space" not in meta:
            raise RunError(f"{self.meta_file}: field 'space' is missing")
        return meta

    def read_space(self) -> SearchSpace:
        return parse_space(self.read_meta()["space"], str(self.meta_file))

    def read_arch(self, space: SearchSpace) -> Child | None:
        """The child a run of one child trains; None for a supernet run."""
        arch = self.read_meta().get("arch")
        return None if arch is None else space.child_from_dict(arch, f"{self.meta_file}: arch")

    def save_child(self, model: nn.Module, space: SearchSpace, child: Child) -> None:
        save_child(model, space, child, self.child_file)

    def read_child_weights(self, space: SearchSpace, child: Child) -> dict[str, Any]:
        """The state dict of a run of one child: its child.pt, else its newest checkpoint's."""
        if not self.child_file.exists():
            if self.latest_checkpoint() is None:
                raise RunError(f"{self.path}: no weights yet (neither {self.child_file.name} nor "
                               f"{self.checkpoints.name}/step-*.pt)")
            return self.load_latest_checkpoint(space.hash)[1]["model"]
        saved_space, saved, state = read_child(self.child_file, CheckpointError)
        if saved_space.hash != space.hash or saved != child:
            raise CheckpointError(f"{self.child_file}: fields 'space' and 'arch' are not those of {self.meta_file}")
        return state

    def read_weights(self, space: SearchSpace) -> dict[str, Any]:
        """The supernet state dict: the final weights, else those of the newest checkpoint (a
        run still training); either must belong to `space`."""
        if not self.final_file.exists():
            if self.latest_checkpoint() is None:
                raise RunError(f"{self.path}: no weights yet (neither {self.final_file.name} nor "
                               f"{self.checkpoints.name}/step-*.pt)")
            return self.load_latest_checkpoint(space.hash)[1]["model"]
        try:
            state = load_weights(self.final_file, "weights file", CheckpointError)
        except CheckpointError as e:
            if self.latest_checkpoint() is None:
                raise
            world = self.read_meta().get("world_size", 1)
            raise CheckpointError(f"{e}; 'bignas train --out {self.path} --resume' writes it again from the run's "
                                  f"newest checkpoint" + (f" (run it under torchrun with {world} processes, as the "
                                                          f"run was trained)" if world > 1 else "")) from None
        if state.get("space_hash") != space.hash:
            raise CheckpointError(f"{self.final_file}: field 'space_hash' does not match {self.meta_file}")
        if not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{self.final_file}: field 'model' is missing")
        return state["model"]


def _step_of(line: str) -> int | None:
    """The step of one metrics record; None for a line a kill cut short."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class TrainedRun:
    """A trained run opened for use: its space, config and supernet, in eval mode on `device`.

    Evaluate, search and export all go through it. The device is the caller's choice: under
    torchrun each rank passes its own (`Distributed.from_env(choice).device`). A run of one child
    (`arch` set) is opened as a supernet holding that child's weights: it evaluates and exports that
    child only (`check_child`), and cannot be searched (`require_supernet`).
    """

    dir: RunDir
    space: SearchSpace
    config: TrainConfig
    supernet: Supernet
    device: torch.device
    arch: Child | None = None
    training: dict[str, Any] = field(default_factory=lambda: {"kind": "supernet"})

    @classmethod
    def open(cls, path: str | Path, device: torch.device) -> "TrainedRun":
        run = RunDir(path)
        meta = run.read_meta()
        space = parse_space(meta["space"], str(run.meta_file))
        config = run.read_config()
        arch = run.read_arch(space)
        supernet = Supernet(space)
        state = run.read_weights(space) if arch is None else run.read_child_weights(space, arch)
        try:
            if arch is None:
                supernet.load_state_dict(state)
            else:
                embed(supernet, arch, state)
        except (RuntimeError, KeyError, ValueError) as e:  # other shapes under the right hash: a corrupt file
            raise CheckpointError(f"{run.path}: weights do not fit its space ({e})") from None
        training = dict(meta.get("training", {"kind": "supernet"}), epochs=config.epochs)
        return cls(run, space, config, supernet.to(device).eval(), device, arch, training)

    def check_child(self, child: Child) -> None:
        """Refuse, in a run of one child, any other child: the rest of its supernet is untrained."""
        if self.arch is not None and child != self.arch:
            raise RunError(f"{self.dir}: trained one child ({self.dir.meta_file.name}, field 'arch'), not a "
                           f"supernet; only that child can be evaluated or exported from it")

    def require_supernet(self, what: str) -> None:
        if self.arch is not None:
            raise RunError(f"{self.dir}: trained one child ({self.dir.meta_file.name}, field 'arch'), not a "
                           f"supernet: {what} needs a run of 'bignas train' without --arch")

    def dataset(self, data: str | None = None) -> Dataset:
        """The run's dataset, or `data` instead (same classes), at the run's image size."""
        spec = data or self.config.data
        dataset = load_dataset(spec, image_size=self.config.image_size, workers=self.config.workers)
        if dataset.num_classes != self.space.num_classes:
            raise RunError(f"{spec}: {dataset.num_classes} classes, but run {self.dir} was trained for "
                           f"{self.space.num_classes}")
        return dataset

    def evaluate(self, child: Child, dataset: Dataset, split: str = "val",
                 calibration_images: int | None = None) -> tuple[float, nn.Module]:
        """Top-1 of `child` on `split` after BN recalibration with the run's eval settings (or on
        `calibration_images` images instead), and the calibrated static child."""
        self.check_child(child)
        return evaluate_child(self.supernet, child, dataset, split,
                              calibration_images=calibration_images or self.config.eval.calibration_images,
                              batch_size=self.config.eval.batch_size)
