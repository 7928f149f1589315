"""GPU readiness check of bignas: four short checks on one CUDA GPU, a few minutes in all.

    python tools/gpu_check.py              # on a GPU machine (under 5 minutes on one H200)
    python tools/gpu_check.py --dry-run    # the same code paths on this CPU, tiny sizes (about a minute)

1. throughput: the real sandwich step (largest + smallest + 2 random children, inplace
   distillation, one optimizer step through `SupernetStep`), bf16 autocast and channels_last,
   ofa-mbv3 at 224 px, batch 128, synthetic images already on the GPU. Prints images/s
   (batch x children per step), ms per step and the peak memory; the losses must be finite.
2. train: `torchrun --standalone --nproc_per_node 1 -m bignas train` of exactly N steps
   (quickstart recipe, mnist5k, bf16, channels_last); the run holds supernet.pt and
   metrics.jsonl with finite losses.
3. profile: a few distinct blocks of the largest ofa-mbv3 child timed with ONNX Runtime under
   the shipped `cuda` profile, with the profiler's own export and timer. SKIP when this ONNX
   Runtime has no CUDA execution provider (onnxruntime-gpu not installed).
4. search: `bignas search --strategy random --budget 4` on the run of check 2, twice; the
   second must evaluate no child afresh (the accuracy cache in RUN/accuracy.jsonl).

Each check prints one line, `PASS name: figures (seconds)`, `SKIP name: why` or
`FAIL name: error` (after its traceback); the exit code is 1 when any check failed.
--dry-run: CPU (one thread), the cifar-small space at 32 px, batch 4, 2 timed steps; a 3-step
train on a 50-image CIFAR-10-format folder written under --out (one mnist5k epoch is 16,000
child passes, minutes on a CPU); the `cpu-1t` profile and 2 blocks; the same search.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bignas.cost import child_cost
from bignas.data import load_dataset
from bignas.latency.keys import child_keys
from bignas.latency.measure import Timer
from bignas.latency.models import export_key, export_reference
from bignas.latency.profiles import load_profile
from bignas.latency.table import device_description
from bignas.nn import Supernet, SupernetStep
from bignas.space import load_space
from bignas.train.config import OptimizerConfig, SandwichConfig, load_config
from bignas.train.distributed import pick_device
from bignas.train.recipe import make_optimizer, zero_init_last_bn
from bignas.train.sandwich import children_for_step, distill_loss, sandwich_backward


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything --dry-run shrinks."""

    device: str
    space: str  # of checks 1 and 3
    resolution: int
    batch: int
    warmup_steps: int
    timed_steps: int
    train_steps: int
    profile: str
    blocks: int
    threads: int | None  # torch CPU threads here and in the subprocesses; None: torch's default


GPU = Sizes("cuda", "ofa-mbv3", 224, 128, 5, 20, 20, "cuda", 4, None)
# One thread: on a 2-core machine busy with anything else, torch's 2-thread pool runs these tiny
# steps 10-40x slower (measured: 0.23 s vs 7.7 s per sandwich step at batch 4).
DRY = Sizes("cpu", "cifar-small", 32, 4, 1, 2, 3, "cpu-1t", 2, 1)
SEARCH_BUDGET = 4
SUBPROCESS_TIMEOUT_S = 240


class CheckFailed(Exception):
    """A check's own verdict (as opposed to an unexpected exception)."""


class Skip(Exception):
    """The check cannot run here, and that is not an error of bignas."""


# ---------------------------------------------------------------------------- checks


def check_throughput(sizes: Sizes) -> str:
    device = pick_device(sizes.device)  # as training picks it (on CUDA: cuDNN autotuning on)
    torch.manual_seed(0)
    space = load_space(sizes.space)
    supernet = Supernet(space).to(device).to(memory_format=torch.channels_last).train()
    zero_init_last_bn(supernet)
    step = SupernetStep(supernet, make_optimizer(supernet, OptimizerConfig()), grad_clip=None, average=None)
    images = torch.randn(sizes.batch, 3, sizes.resolution, sizes.resolution, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, space.num_classes, (sizes.batch,), device=device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16)

    losses, images_done = [], 0
    with_cuda = device.type == "cuda"
    for i in range(sizes.warmup_steps + sizes.timed_steps):
        if i == sizes.warmup_steps:
            sync(device)
            if with_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
        # Children at their own sampled resolutions, resized from the batch, as in training.
        children = children_for_step(space, 0, i, num_random=2)
        with step:
            parts = sandwich_backward(supernet, images, labels, children, label_smoothing=0.1, dropout=0.1,
                                      drop_connect=0.1, distill=distill_loss(SandwichConfig()),
                                      autocast=autocast, backward=step.backward)
        if i >= sizes.warmup_steps:
            losses.extend(parts)
            images_done += sizes.batch * len(children)
    sync(device)
    seconds = time.perf_counter() - start
    values = torch.stack(losses).float().cpu()
    if not torch.isfinite(values).all():
        raise CheckFailed(f"non-finite losses: {values.tolist()}")
    if with_cuda:
        peak = f"peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    else:  # ru_maxrss is in KiB on Linux
        peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    return (f"{images_done / seconds:.1f} images/s, {1e3 * seconds / sizes.timed_steps:.1f} ms/step, {peak} "
            f"({space.name}, {sizes.resolution} px, batch {sizes.batch}, bf16, channels_last, "
            f"{sizes.timed_steps} steps after {sizes.warmup_steps} warm-up; last losses "
            f"{', '.join(f'{v:.3f}' for v in values[-4:].tolist())})")


def check_train(sizes: Sizes, out: Path, dry_run: bool) -> str:
    run = out / "run"
    data = write_tiny_cifar10(out / "tiny-cifar10") if dry_run else "mnist5k"
    n_train = len(load_dataset(data).train)
    batch = n_train // sizes.train_steps
    if batch < 1 or n_train // batch != sizes.train_steps:
        raise CheckFailed(f"{data}: {n_train} training images cannot make exactly {sizes.train_steps} steps "
                          f"of one epoch")
    overrides = [f"data={data}", "epochs=1", f"batch_size={batch}", f"device={sizes.device}",
                 "precision=bf16", "channels_last=true", "eval.every_epochs=1",
                 f"eval.calibration_images={min(1000, n_train)}", "log.every_steps=1", "log.tensorboard=false"]
    load_config("quickstart.yaml", overrides)  # a config error is reported here, not by the subprocess
    start = time.perf_counter()
    result = run_command([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                          "-m", "bignas", "train", "--config", "quickstart.yaml", "--out", str(run), "--quiet",
                          *overrides], sizes.threads)
    seconds = time.perf_counter() - start
    if not (run / "supernet.pt").is_file():
        raise CheckFailed(f"{run}: no supernet.pt after the run")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if r["kind"] == "step"]
    if [r["step"] for r in steps] != list(range(1, sizes.train_steps + 1)):
        raise CheckFailed(f"{run / 'metrics.jsonl'}: step records {[r['step'] for r in steps]}, expected 1.."
                          f"{sizes.train_steps}")
    bad = [r for r in steps if not (math.isfinite(r["loss_max"]) and math.isfinite(r["loss_min"]))]
    if bad:
        raise CheckFailed(f"{run / 'metrics.jsonl'}: non-finite losses at steps {[r['step'] for r in bad]}")
    final = json.loads(result.stdout.strip().splitlines()[-1])
    epoch = [r for r in records if r["kind"] == "epoch"][-1]
    return (f"{sizes.train_steps} steps in {seconds:.1f} s wall (torchrun start included), last step "
            f"{final['images_per_s']:.0f} images/s, loss_max {steps[0]['loss_max']:.3f} -> "
            f"{steps[-1]['loss_max']:.3f}, val top-1 largest {epoch['top1_max']:.3f} "
            f"({data}, batch {batch}, {sizes.device}, bf16, channels_last)")


def check_profile(sizes: Sizes, out: Path) -> str:
    import onnxruntime as ort

    profile = load_profile(sizes.profile)
    available = ort.get_available_providers()
    if profile.provider not in available:
        hint = " (onnxruntime-gpu is not installed)" if profile.provider == "CUDAExecutionProvider" else ""
        raise Skip(f"profile {profile.name!r} needs {profile.provider}, which onnxruntime {ort.__version__} "
                   f"here lacks{hint}; available: {', '.join(available)}")
    space = load_space(sizes.space)
    keys = list({str(k): k for k in child_keys(space, space.max())}.values())  # distinct, in network order
    picked = [keys[round(i * (len(keys) - 1) / max(1, sizes.blocks - 1))] for i in range(sizes.blocks)]
    folder, cache = out / "profile", out / "profile" / "shared"
    export_reference(folder / "reference.onnx", cache)
    timer = Timer(profile, folder / "reference.onnx")
    figures = []
    for i, key in enumerate(picked):
        path = folder / f"block{i}.onnx"
        export_key(key, path, cache)
        timing = timer.time(path)
        if not (timing.ms > 0 and math.isfinite(timing.ratio)):
            raise CheckFailed(f"{key}: timing {timing}")
        figures.append(f"{key.kind} {key.resolution} px {timing.ms:.3f} ms")
    return (f"{'; '.join(figures)}; reference {timer.reference_ms:.3f} ms "
            f"({profile.name}, {profile.provider}, onnxruntime {ort.__version__}, {space.name})")


def check_search(sizes: Sizes, out: Path) -> str:
    run = out / "run"
    if not (run / "supernet.pt").is_file():
        raise CheckFailed(f"{run}: no trained run (the train check did not finish)")
    space = load_space(load_config(run / "config.yaml").space)
    max_mflops = math.ceil(child_cost(space, space.max()).mflops) + 1  # every child is feasible
    command = [sys.executable, "-m", "bignas", "search", "--run", str(run), "--budget", str(SEARCH_BUDGET),
               "--strategy", "random", "--out", str(out / "search"), "--max-mflops", str(max_mflops),
               "--device", sizes.device, "--quiet"]
    figures = []
    for _ in range(2):
        start = time.perf_counter()
        run_command(command, sizes.threads)
        seconds = time.perf_counter() - start
        doc = json.loads((out / "search" / "search.json").read_text())
        figures.append((doc["evaluated_fresh"], seconds, doc["devices"][0]["best"]["top1_val"]))
    (fresh1, s1, top1), (fresh2, s2, top2) = figures
    if fresh1 < 1:
        raise CheckFailed(f"the first search evaluated {fresh1} children afresh, expected at least 1")
    if fresh2 != 0:
        raise CheckFailed(f"the second search evaluated {fresh2} children afresh: the accuracy cache "
                          f"({run / 'accuracy.jsonl'}) was not used")
    if top1 != top2:
        raise CheckFailed(f"best val top-1 {top1} on the first search, {top2} on the cached one")
    return (f"first search {fresh1} children evaluated in {s1:.1f} s, second {fresh2} in {s2:.1f} s "
            f"(cached), best val top-1 {top1:.3f} (budget {SEARCH_BUDGET}, random, {sizes.device})")


# ---------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_command(command: list[str], threads: int | None) -> subprocess.CompletedProcess:
    """Run a bignas command; CheckFailed with the end of its stderr when it fails."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"timed out after {SUBPROCESS_TIMEOUT_S} s: {' '.join(command)}") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise CheckFailed(f"exit code {result.returncode}: {' '.join(command)}\n{tail}")
    return result


def write_tiny_cifar10(folder: Path, n_train: int = 50, n_test: int = 10) -> str:
    """A small CIFAR-10 in the official on-disk format, with class-dependent (learnable) images."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> dict:
        labels = rng.integers(0, 10, n)
        data = np.clip(labels[:, None] * 25 + rng.integers(0, 40, (n, 3072)), 0, 255).astype(np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    for name, n in [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch(n), f)
    return f"cifar10:{folder}"


def machine(sizes: Sizes) -> str:
    import onnxruntime as ort

    if sizes.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = (f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, "
               f"x{torch.cuda.device_count()}); CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        gpu = "none (dry run on CPU)"
    return (f"machine: {device_description()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}; "
            f"GPU: {gpu}; torch {torch.__version__}; onnxruntime {ort.__version__} "
            f"({', '.join(ort.get_available_providers())}); python {platform.python_version()}")


def run_check(name: str, check: Callable[[], str]) -> str:
    """Run one check and print its result line; returns PASS, SKIP or FAIL."""
    start = time.perf_counter()
    try:
        figures = check()
    except Skip as e:
        print(f"SKIP {name}: {e}", flush=True)
        return "SKIP"
    except Exception as e:  # every failure of a check is reported, and the other checks still run
        if not isinstance(e, CheckFailed):
            traceback.print_exc()
        print(f"FAIL {name}: {type(e).__name__}: {e} ({time.perf_counter() - start:.1f} s)", flush=True)
        return "FAIL"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next check may be a subprocess on the same GPU
    print(f"PASS {name}: {figures} ({time.perf_counter() - start:.1f} s)", flush=True)
    return "PASS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="run every check on this CPU with tiny sizes (no GPU needed), to test this script")
    parser.add_argument("--out", metavar="DIR",
                        help="scratch folder for the run, the ONNX files and the search; kept afterwards, and "
                             "must not hold an earlier gpu_check's files (default: a temporary folder, removed "
                             "at the end)")
    parser.add_argument("--steps", type=int, metavar="N",
                        help=f"timed sandwich steps of the throughput check (default: {GPU.timed_steps}, "
                             f"{DRY.timed_steps} with --dry-run; after {GPU.warmup_steps} warm-up steps, "
                             f"{DRY.warmup_steps} with --dry-run)")
    parser.add_argument("--train-steps", type=int, metavar="N",
                        help=f"steps of the torchrun training check (default: {GPU.train_steps}, "
                             f"{DRY.train_steps} with --dry-run)")
    args = parser.parse_args()
    sizes = DRY if args.dry_run else GPU
    for flag, value, field in (("--steps", args.steps, "timed_steps"), ("--train-steps", args.train_steps,
                                                                         "train_steps")):
        if value is not None:
            if value < 1:
                parser.error(f"{flag} must be at least 1, got {value}")
            sizes = dataclasses.replace(sizes, **{field: value})
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: run on a GPU machine, or pass --dry-run to check this script on CPU")

    if sizes.threads:
        torch.set_num_threads(sizes.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bignas-gpu-check-"))
    print(machine(sizes), flush=True)
    print(f"scratch: {out}", flush=True)
    wall = time.perf_counter()
    checks = [("throughput", lambda: check_throughput(sizes)),
              ("train", lambda: check_train(sizes, out, args.dry_run)),
              ("profile", lambda: check_profile(sizes, out)),
              ("search", lambda: check_search(sizes, out))]
    results = [run_check(name, check) for name, check in checks]
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    counts = ", ".join(f"{results.count(r)} {r}" for r in ("PASS", "SKIP", "FAIL"))
    print(f"summary: {counts} in {time.perf_counter() - wall:.1f} s", flush=True)
    return 1 if "FAIL" in results else 0


if __name__ == "__main__":
    sys.exit(main())
