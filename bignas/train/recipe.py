"""The training recipe: setup, train, save, resume. One config defines the run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from tqdm import tqdm

from bignas.data import load_dataset
from bignas.evaluate import evaluate_child
from bignas.nn import Supernet, SupernetStep
from bignas.seeds import derive_seed
from bignas.space import load_space
from bignas.train.attentive import pareto_draw
from bignas.train.checkpoint import CheckpointError
from bignas.train.config import TrainConfig, check_resume
from bignas.train.distributed import Distributed
from bignas.train.run_dir import RunDir, RunError
from bignas.train.sandwich import children_for_step, distill_loss, sandwich_backward
from bignas.train.schedule import lr_factor


def zero_init_last_bn(supernet: Supernet) -> None:
    """BigNAS Sec. 3.2: the last BN of each residual block starts at gamma 0, so every block
    begins as the identity and deep and shallow children start out alike."""
    zero_last_bn(block for stage in supernet.stages for block in list(stage)[1:])


def zero_last_bn(blocks: Iterable[nn.Module]) -> None:
    """Gamma 0 in the last BN of each of `blocks`: the supernet's blocks after the first of each
    stage (always residual), or those of a child trained alone (`ChildRecipe`)."""
    for block in blocks:
        nn.init.zeros_(block.project.bn.weight)


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """Weight decay on conv and linear weights only. It is applied once per step, on weights
    the largest child spans entirely: BigNAS's "regularise the largest child only"."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


class Recipe:
    """Train a supernet with the sandwich rule and inplace distillation into `run_dir`
    (laid out by `bignas.train.run_dir.RunDir`). `self.model` is the network trained."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, show_progress: bool = True) -> None:
        self.cfg = config
        self.run = RunDir(run_dir)
        self.show_progress = show_progress
        self.dist: Distributed | None = None

    # ------------------------------------------------------------------ setup

    def setup(self, resume: bool = False) -> None:
        cfg = self.cfg
        self.dist = Distributed.from_env(cfg.device)
        self.device = self.dist.device
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        self.dataset = load_dataset(cfg.data, image_size=cfg.image_size, workers=cfg.workers)
        self.space = dataclasses.replace(load_space(cfg.space), num_classes=self.dataset.num_classes)
        self.model = self.build_model().to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.prepare_distributed()
        # Weights were initialised alike on every rank; dropout and drop-connect masks must not be.
        torch.manual_seed(derive_seed("masks", cfg.seed, self.dist.rank))
        self.optimizer = make_optimizer(self.model, cfg.optimizer)
        self.steps_per_epoch = self.dataset.train.steps_per_epoch(cfg.batch_size, self.dist.world_size)
        if self.steps_per_epoch == 0:
            raise RunError(f"{cfg.data}: {len(self.dataset.train)} training images are fewer than one global "
                           f"batch of {cfg.batch_size} x {self.dist.world_size}")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.steps_per_epoch, cfg.epochs, cfg.schedule))
        self.training_step = SupernetStep(self.model, self.optimizer, grad_clip=cfg.optimizer.grad_clip,
                                          average=self.dist.average_gradients)
        self.step = 0
        if self.dist.is_main:
            self.run.remove_temporaries()
        if resume:
            self.resume()
        elif self.dist.is_main:
            self.run.create(cfg, self.space, self.dataset.summary(), self.dist.world_size, self.run_fields())
        self.finite_step = self.step  # the last step `check_finite` passed
        self.writer = self._tensorboard() if self.dist.is_main else None

    # ------------------------------------------------------------------ what a supernet run trains
    # (`bignas.train.child.ChildRecipe` trains one static child instead, through these five methods)

    def build_model(self) -> nn.Module:
        supernet = Supernet(self.space)
        if self.cfg.model.zero_init_last_bn:
            zero_init_last_bn(supernet)
        return supernet

    def prepare_distributed(self) -> None:
        self.dist.prepare(self.model, self.cfg.sync_bn)

    def run_fields(self) -> dict[str, Any]:
        """What run.json records besides the space, data and world size."""
        return {}

    def backward_step(self, images: torch.Tensor, labels: torch.Tensor, autocast, backward) -> dict[str, torch.Tensor]:
        """Forward and backward of one step's children; their detached losses by log name."""
        cfg = self.cfg
        draw = None if cfg.sandwich.sampler == "uniform" else pareto_draw(
            self.model, images, labels, self.space, candidates=cfg.sandwich.candidates,
            best=cfg.sandwich.sampler == "best-up", autocast=autocast, mean=self.dist.mean_)
        children = children_for_step(self.space, cfg.seed, self.step, cfg.sandwich.num_random, draw)
        parts = sandwich_backward(
            self.model, images, labels, children, label_smoothing=cfg.optimizer.label_smoothing,
            dropout=cfg.model.dropout, drop_connect=cfg.model.drop_connect,
            distill=distill_loss(cfg.sandwich) if cfg.sandwich.distill and self.step >= (
                cfg.sandwich.distill_start_epochs * self.steps_per_epoch) else None,
            autocast=autocast, backward=backward)
        return {"loss_max": parts[0], "loss_min": parts[1]}

    def children_per_step(self) -> int:
        """Children trained per step: the logged images_per_s counts their images (not the extra
        forward passes of a loss-ranking `sandwich.sampler`'s candidates)."""
        return 2 + self.cfg.sandwich.num_random

    def evaluate_epoch(self) -> dict[str, float]:
        """Val top-1 of the largest and smallest child, by log name."""
        record = {}
        for name, child in (("max", self.space.max()), ("min", self.space.min())):
            record[f"top1_{name}"], _ = evaluate_child(
                self.model, child, self.dataset, "val",
                calibration_images=self.cfg.eval.calibration_images, batch_size=self.cfg.eval.batch_size)
        return record

    def save_final(self) -> None:
        self.run.save_final(self.model.state_dict(), self.space.hash)

    def _tensorboard(self):
        if not self.cfg.log.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        # On resume, drop the events a killed run logged after its last checkpoint: they are logged again.
        return SummaryWriter(str(self.run.tensorboard_dir), purge_step=self.step + 1 if self.step else None)

    # ------------------------------------------------------------------ train

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        total = cfg.epochs * self.steps_per_epoch
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not (self.show_progress and self.dist.is_main),
                   dynamic_ncols=True)
        images_per_step = cfg.batch_size * self.dist.world_size * self.children_per_step()
        autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16,  # noqa: E731
                                          enabled=cfg.precision == "bf16")
        last = {}
        tick, tick_step = time.perf_counter(), self.step
        while self.step < total:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            self.model.train()
            for images, labels in self.dataset.train.train_batches(
                    cfg.batch_size, seed=cfg.seed, epoch=epoch, start_step=start,
                    rank=self.dist.rank, world_size=self.dist.world_size):
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                lr = self.optimizer.param_groups[0]["lr"]
                with self.training_step as step:
                    losses = self.backward_step(images, labels, autocast, step.backward)
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                log_now = self.step % cfg.log.every_steps == 0 or self.step == total
                save_now = self.step % self.steps_per_epoch == 0 or self.step % cfg.checkpoint.every_steps == 0
                if log_now or save_now:
                    # The loop's only host sync but for a loss-ranking sampler's: once per log interval
                    # and checkpoint, so that no diverged weights are ever logged or saved.
                    self.check_finite(losses, epoch)
                if log_now:
                    now = time.perf_counter()
                    speed = images_per_step * (self.step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    last = {"kind": "step", "step": self.step, "epoch": epoch, "lr": lr,
                            **{name: loss.item() for name, loss in losses.items()},
                            "images_per_s": round(speed, 1)}
                    first = next(iter(losses))
                    bar.set_postfix(loss=f"{last[first]:.3f}", lr=f"{lr:.4f}", img_s=f"{speed:.0f}")
                    self._log(last)
                if self.step % self.steps_per_epoch == 0:
                    self._end_epoch(epoch)
                elif save_now:
                    self.save()
        bar.close()
        if self.dist.is_main:
            self.save_final()
        self.dist.barrier()
        return last

    def check_finite(self, losses: dict[str, torch.Tensor], epoch: int) -> None:
        """Stop a diverged run with a RunError before it logs or saves anything more: the step's
        losses and the weights the step left must all be finite. Every process calls this at the
        same steps and the flags are shared, so all of them stop together and none is left waiting
        for the others at the next collective."""
        losses_bad = ~torch.stack([loss.detach().float() for loss in losses.values()]).isfinite()
        weights_bad = ~torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()
        bad = self.dist.mean_(torch.cat([losses_bad, weights_bad.reshape(1)]).float())
        if bool(bad.any()):
            names = ", ".join(name for name, b in zip([*losses, "weights"], bad.tolist()) if b)
            kept = self.run.latest_checkpoint()
            raise RunError(
                f"training diverged: not finite at step {self.step} (epoch {epoch + 1} of {self.cfg.epochs}): "
                f"{names}; finite at step {self.finite_step}, the check before. Nothing was logged or saved "
                f"after step {self.finite_step}" + (f" (the last checkpoint, {kept.name}, is intact)" if kept else "")
                + ". Train again into a new --out with a lower optimizer.lr, optimizer.grad_clip set or "
                  "precision=fp32: resuming this run would repeat the same steps")
        self.finite_step = self.step

    def _end_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        if cfg.eval.every_epochs and (epoch + 1) % cfg.eval.every_epochs == 0 and self.dist.is_main:
            scores = self.evaluate_epoch()
            self._log({"kind": "epoch", "epoch": epoch, "step": self.step, **scores})
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: val " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        self.dist.barrier()
        self.save()

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.run.log(record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step", "epoch"):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.dist is not None:
            self.dist.close()

    # ------------------------------------------------------------------ save / resume

    def save(self) -> None:
        if not self.dist.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "space_hash": self.space.hash,
            "data_fingerprint": self.dataset.fingerprint,
            "config": self.cfg.to_dict(),
            # Data order, augmentation and children are functions of (seed, step); only the
            # global generators (dropout, drop-connect) carry state of their own.
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        self.run.save_checkpoint(self.step, state, self.cfg.checkpoint.keep)

    def resume(self) -> None:
        path, state = self.run.load_latest_checkpoint(self.space.hash)
        saved_world = self.run.read_meta().get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise RunError(f"{self.run.meta_file}: field 'world_size' is {saved_world}, but this resume runs "
                           f"{self.dist.world_size} process(es): the global batch and the steps of an epoch depend "
                           f"on it, so the run cannot be continued exactly; resume it with {saved_world} processes in "
                           f"all, as torchrun started it")
        saved_data = state.get("data_fingerprint")
        if saved_data is not None and saved_data != self.dataset.fingerprint:
            raise RunError(f"{path}: field 'data_fingerprint' is {saved_data!r}, but {self.cfg.data} now "
                           f"fingerprints to {self.dataset.fingerprint!r}: the dataset changed since this run "
                           f"started, so it cannot be continued exactly; start a new run")
        if isinstance(state.get("config"), dict):  # the config the weights were trained with
            changes = check_resume(state["config"], self.cfg, str(path))
            if changes and self.dist.is_main:
                tqdm.write("resuming with " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items()))
                self.run.write_config(self.cfg)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
            torch.set_rng_state(state["rng_cpu"])
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng_cuda"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: does not fit this run ({type(e).__name__}: {e})") from None
        if self.dist.is_main:
            self.run.truncate_metrics(self.step)


def train_run(recipe: Recipe, resume: bool = False) -> dict[str, Any] | None:
    """`bignas train` and `bignas finetune`: set up, train (or resume) and close; the last log
    record on rank 0, None on the other ranks under torchrun."""
    try:
        recipe.setup(resume=resume)
        last = recipe.train()
    finally:
        recipe.close()
    if not recipe.dist.is_main:
        return None
    return {"run": str(recipe.run), "steps": recipe.step, **{k: v for k, v in last.items() if k != "kind"}}
