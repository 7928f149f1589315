"""Training one child as a static network with a supernet's recipe: alone from scratch (`bignas train
--arch`, the baseline every NAS paper reports), or fine-tuned from a trained supernet's weights, on
the labels or with its largest child as teacher (`bignas finetune`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bignas.data import resize_batch
from bignas.evaluate import calibrate_static, evaluate_static
from bignas.nn import StaticNet, extract
from bignas.plan import plan
from bignas.space import Child
from bignas.train.config import ConfigError, TrainConfig
from bignas.train.recipe import Recipe, zero_last_bn
from bignas.train.run_dir import RunDir, RunError, TrainedRun
from bignas.train.sandwich import distill_loss
from bignas.weights import weights_digest

# A fine-tuning run starts from its supernet's config, with: no warm-up (the weights are trained
# already), half the peak learning rate, and no dropout or drop-connect (the sliced children were
# trained without them). Measured on cifar10-5k (tools/bench_claim.py, README): a tenth of the peak,
# or the largest child as teacher, left children below where they started. Overrides given on the
# command line come after these.
FINETUNE_LR_SCALE = 0.5
FINETUNE_DEFAULTS = ("schedule.warmup_epochs=0.0", "model.dropout=0.0", "model.drop_connect=0.0")


@dataclass(frozen=True)
class Finetune:
    """Where a fine-tuned child starts: `run`, a supernet run. What it learns is the config's
    `finetune.teacher`: the labels, or that run's largest child's soft predictions."""

    run: Path


class ChildRecipe(Recipe):
    """Train the child `arch` ("max", "min", or a dict as in an architecture file) of the config's space into
    `run_dir`, from scratch or as `finetune` says. Resuming reads the child (and where it started)
    from the run; an `arch` given then must be the same. Everything else (data order, optimizer,
    schedule, checkpoints, resume) is the supernet recipe's."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, arch: dict[str, Any] | str | None,
                 finetune: Finetune | None = None, show_progress: bool = True, source: str = "--arch") -> None:
        super().__init__(config, run_dir, show_progress)
        self.arch, self.finetune, self.source = arch, finetune, source
        self.teacher: nn.Module | None = None
        self.resuming = False
        self._weights: str | None = None  # digest of the supernet weights fine-tuning starts from
        self._expected_weights: str | None = None  # on resume, the digest the run recorded

    def setup(self, resume: bool = False) -> None:
        self.resuming = resume
        super().setup(resume)

    # ------------------------------------------------------------------ the five methods of a recipe

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        self.child = self._child()
        layers = plan(self.space, self.child)
        model = StaticNet(layers, dropout=cfg.model.dropout, drop_connect=cfg.model.drop_connect).to(self.device)
        if self.finetune is None:
            if cfg.model.zero_init_last_bn:  # the blocks the supernet zero-inits: all but each stage's first
                zero_last_bn(b for b, p in zip(model.blocks, layers.blocks) if p.index > 0)
            return model
        if self.resuming and cfg.finetune.teacher == "none":
            return model  # the checkpoint holds all it needs: the supernet run may have moved since
        trained = self._source()
        if not self.resuming:
            model.load_state_dict(extract(trained.supernet, self.child).state_dict())
            self._recalibrate(model, self.child)
        if cfg.finetune.teacher == "largest":
            largest = self.space.max()
            self.teacher = self._recalibrate(extract(trained.supernet, largest), largest).requires_grad_(False)
            if cfg.channels_last:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        return model

    def prepare_distributed(self) -> None:
        if self.dist.world_size > 1 and self.cfg.sync_bn:
            if self.device.type != "cuda":
                raise ConfigError(f"{self.run}: sync_bn for one child needs CUDA (torch's SyncBatchNorm); "
                                  f"set sync_bn=false to normalise each process's own batch")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.dist.prepare(self.model, sync_bn=False)

    def run_fields(self) -> dict[str, Any]:
        if self.finetune is None:
            training = {"kind": "alone"}
        else:
            training = {"kind": "finetuned", "from": str(self.finetune.run.resolve()), "weights": self._weights,
                        "teacher": self.cfg.finetune.teacher}
        return {"arch": self.child.to_dict(self.space), "training": training}

    def backward_step(self, images: torch.Tensor, labels: torch.Tensor, autocast, backward) -> dict[str, torch.Tensor]:
        with autocast():
            logits = self.model(resize_batch(images, self.child.resolution)).float()
            if self.teacher is None:
                loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.optimizer.label_smoothing)
            else:
                with torch.no_grad():
                    teacher = self.teacher(resize_batch(images, self.space.max().resolution)).float()
                loss = distill_loss(self.cfg.sandwich)(logits, teacher)  # as the supernet's children learnt
        backward(loss)
        return {"loss": loss.detach()}

    def children_per_step(self) -> int:
        return 1

    def evaluate_epoch(self) -> dict[str, float]:
        # A plain copy: recalibration must not touch the running statistics trained, nor (SyncBatchNorm
        # in train mode) wait for processes that do not evaluate.
        model = StaticNet(plan(self.space, self.child)).to(self.device)
        model.load_state_dict(self.model.state_dict())
        return {"top1": evaluate_static(model, self.child.resolution, self.dataset, "val",
                                        calibration_images=self.cfg.eval.calibration_images,
                                        batch_size=self.cfg.eval.batch_size)}

    def save_final(self) -> None:
        self.run.save_child(self.model, self.space, self.child)

    # ------------------------------------------------------------------ where the child comes from

    def _child(self) -> Child:
        if not self.resuming:
            if self.arch is None:
                raise RunError(f"{self.run}: no child architecture given")
            return self._given()
        meta = self.run.read_meta()
        saved = self.run.read_arch(self.space)
        if saved is None:
            raise RunError(f"{self.run}: a supernet run (no field 'arch' in {self.run.meta_file.name}); resume it "
                           f"with 'bignas train --resume', without --arch")
        if self.arch is not None and self._given() != saved:
            raise RunError(f"{self.source}: not the child this run trains ({self.run.meta_file}, field 'arch')")
        training = meta.get("training", {})
        if self.finetune is None and training.get("kind") == "finetuned":
            if not isinstance(training.get("from"), str):
                raise RunError(f"{self.run.meta_file}: field 'training.from' (the supernet run it was fine-tuned "
                               f"from) is missing or not a path")
            self.finetune = Finetune(Path(training["from"]))
        self._expected_weights = training.get("weights")
        return saved

    def _recalibrate(self, net: nn.Module, child: Child) -> nn.Module:
        """`net`'s BN statistics for `child`, re-estimated as evaluate does; left in eval mode."""
        calibrate_static(net, child.resolution, self.dataset, self.cfg.eval.calibration_images,
                         self.cfg.eval.batch_size)
        return net

    def _given(self) -> Child:
        if self.arch in ("max", "min"):
            return self.space.max() if self.arch == "max" else self.space.min()
        return self.space.child_from_dict(self.arch, self.source)

    def _source(self) -> TrainedRun:
        """The supernet run fine-tuning starts from; on resume, refused if its weights changed since."""
        trained = TrainedRun.open(self.finetune.run, self.device)
        trained.require_supernet("fine-tuning")
        if trained.space.hash != self.space.hash:
            raise RunError(f"{self.finetune.run}: its search space is not this run's ('{self.cfg.space}')")
        self._weights = weights_digest(trained.supernet)
        if self.resuming and self._expected_weights not in (None, self._weights):
            raise RunError(f"{self.finetune.run}: its weights changed since this fine-tuning began "
                           f"({self.run.meta_file}, field 'training.weights'): the teacher would not be the same")
        return trained


def finetune_config(run: str | Path, epochs: int, overrides: list[str] | None = None) -> TrainConfig:
    """The config of fine-tuning a child of supernet run `run` for `epochs`: the run's own config,
    changed by `FINETUNE_DEFAULTS` and the learning rate scale, then by `overrides` (`key=value`)."""
    source = RunDir(run)
    lr = source.read_config().optimizer.lr * FINETUNE_LR_SCALE
    return source.read_config([*FINETUNE_DEFAULTS, f"optimizer.lr={lr!r}", *(overrides or [])], {"epochs": epochs})
