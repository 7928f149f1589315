"""The BigNAS claim, measured: are children sliced from the supernet as good as the same networks
trained alone from scratch with the same recipe and epochs? And how many epochs of `bignas
finetune` close the gap where one remains?

Under OUT, every step is a run directory that is reused when finished and resumed when cut short,
so the benchmark can be stopped and started again at any point:

    OUT/supernet/          the supernet (or --supernet RUN, an existing one, whose config is used)
    OUT/arch/NAME.json     the children: largest, smallest and --random fixed random ones
    OUT/alone/NAME/        each child trained alone (`bignas train --arch`), the supernet's config
    OUT/finetune/E/NAME/   each child fine-tuned for E epochs (`bignas finetune`), per --finetune
    OUT/claim.json         every figure below, with the machine, threads and wall-clock times
    OUT/claim.png          test top-1 of each child, sliced, alone and fine-tuned, side by side

Every child is scored the same way: BN statistics recalibrated on the run's calibration images,
then top-1 on val and test. The table prints test top-1 and the gap (supernet child minus alone)
at equal epochs; the costs (wall-clock of each training) let the gap be read at equal compute too:
a sandwich step trains 2 + num_random children.

Usage:
  python tools/bench_claim.py --config cifar10-5k.yaml --data cifar10:../shared/data/cifar10-5k \\
      --epochs 10 --out runs/claim10 [--finetune 1 3]
  python tools/bench_claim.py --supernet runs/c5k --out runs/claim20      # reuse a trained supernet
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from bignas.cost import child_cost
from bignas.io import write_json
from bignas.latency.table import device_description
from bignas.seeds import derive_seed
from bignas.train.child import ChildRecipe, Finetune, finetune_config
from bignas.train.config import load_config
from bignas.train.recipe import Recipe, train_run
from bignas.train.run_dir import RunDir, TrainedRun
from bignas.train.sandwich import children_for_step


def train(recipe, run: Path, times: dict, key: str) -> None:
    """Train `recipe` into `run` unless finished; resume it if cut short (started over if cut before
    its first checkpoint: nothing was trained). Records its wall-clock."""
    folder = RunDir(run)
    if folder.final_file.exists() or folder.child_file.exists():
        return
    resume = folder.latest_checkpoint() is not None
    if not resume and run.exists():
        shutil.rmtree(run)
    start = time.perf_counter()
    train_run(recipe, resume=resume)
    times[key] = times.get(key, 0.0) + time.perf_counter() - start  # a resumed run adds its share


def training_gmacs(space, config, steps: int, child=None) -> float:
    """Multiply-accumulates of training, forward and backward (about 3x forward), in billions: of the
    supernet's sandwich steps (the children each step trains), or of `child` trained alone. A host-free
    measure of compute, beside the wall-clock."""
    if child is not None:
        per_step = child_cost(space, child).mflops
        return 3 * per_step * config.batch_size * steps / 1e3
    total = sum(child_cost(space, c).mflops for step in range(steps)
                for c in children_for_step(space, config.seed, step, config.sandwich.num_random))
    return 3 * total * config.batch_size / 1e3


def check_countable(config) -> None:
    """Refuse, before any training, a run whose compute `training_gmacs` cannot count."""
    if config.sandwich.sampler != "uniform":
        raise SystemExit(f"bench_claim: sandwich.sampler={config.sandwich.sampler} picks children by their loss "
                         "during training, which the compute count cannot replay; it counts uniform sampling only")


def score(run: Path, child, device, calibration_images: int | None = None) -> dict[str, float]:
    trained = TrainedRun.open(run, device)
    if calibration_images is not None:  # BN recalibration on more or fewer images than the run's setting
        cfg = trained.config
        trained = dataclasses.replace(trained, config=dataclasses.replace(
            cfg, eval=dataclasses.replace(cfg.eval, calibration_images=calibration_images)))
    dataset = trained.dataset()
    return {split: round(trained.evaluate(child, dataset, split)[0], 6) for split in ("val", "test")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="benchmark folder (reused and resumed)")
    parser.add_argument("--supernet", type=Path, help="an existing supernet run to measure (its config is used)")
    parser.add_argument("--config", default="cifar10-5k.yaml", help="recipe of a new supernet (default: %(default)s)")
    parser.add_argument("--data", help="dataset spec of a new supernet (overrides the config's)")
    parser.add_argument("--epochs", type=int, help="epochs of a new supernet and of the children trained alone")
    parser.add_argument("--random", type=int, default=3, help="fixed random children besides the largest and "
                                                               "smallest (default: %(default)s)")
    parser.add_argument("--finetune", type=int, nargs="*", default=[], metavar="E",
                        help="also fine-tune every child for each of these epoch counts (default: none)")
    parser.add_argument("--alone-from", type=Path, metavar="DIR",
                        help="take (or train) the children trained alone in DIR/alone/, another benchmark folder: "
                             "for ablations of the supernet's recipe against one baseline")
    parser.add_argument("--calibration-images", type=int, metavar="N",
                        help="BN recalibration images when scoring every child (default: the run's setting)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of a new supernet")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "claim.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    times = results.setdefault("seconds", {})

    supernet = args.supernet or out / "supernet"
    if args.supernet is None:
        values = {k: v for k, v in (("epochs", args.epochs), ("data", args.data)) if v is not None}
        config = RunDir(supernet).read_config() if RunDir(supernet).config_file.exists() else \
            load_config(args.config, args.overrides, values)
        check_countable(config)
        train(Recipe(config, supernet), supernet, times, "supernet")
        write_json(results_file, results)
    config = RunDir(supernet).read_config()
    check_countable(config)
    trained = TrainedRun.open(supernet, device)
    space = trained.space
    print(f"machine: {device_description()}; torch threads {args.threads}; supernet {supernet}: "
          f"{config.epochs} epochs on {config.data}, space {space.name}", file=sys.stderr)

    rng = random.Random(derive_seed("bench_claim", config.seed))
    children = {"largest": space.max(), "smallest": space.min()}
    children |= {f"random{i + 1}": space.sample(rng) for i in range(args.random)}
    (out / "arch").mkdir(exist_ok=True)
    for name, child in children.items():
        write_json(out / "arch" / f"{name}.json", child.to_dict(space))

    steps = config.epochs * trained.dataset().train.steps_per_epoch(config.batch_size, 1)
    results["gmacs"] = {"supernet": round(training_gmacs(space, config, steps), 1)}
    rows = results.setdefault("children", {})
    for name, child in children.items():
        arch = child.to_dict(space)
        row = rows.setdefault(name, {"arch": arch})
        results["gmacs"][name] = round(training_gmacs(space, config, steps, child), 1)
        row["supernet"] = score(supernet, child, device, args.calibration_images)
        alone = (args.alone_from or out) / "alone" / name
        train(ChildRecipe(config, alone, arch), alone, times, f"alone/{name}")
        row["alone"] = score(alone, child, device, args.calibration_images)
        for epochs in args.finetune:
            tuned = out / "finetune" / str(epochs) / name
            recipe = ChildRecipe(finetune_config(supernet, epochs), tuned, arch, Finetune(supernet))
            train(recipe, tuned, times, f"finetune/{epochs}/{name}")
            row[f"finetune{epochs}"] = score(tuned, child, device, args.calibration_images)
        write_json(results_file, results)  # after each child: a stop loses at most one

    results |= {"machine": device_description(), "threads": args.threads, "supernet": str(supernet),
                "epochs": config.epochs, "data": config.data, "space": space.name,
                "children_per_step": 2 + config.sandwich.num_random}
    write_json(results_file, results)
    plot(results, args.finetune, out / "claim.png")
    report(results, args.finetune)
    return 0


def plot(results: dict, finetune: list[int], path: Path) -> None:
    """Test top-1 of each child: sliced from the supernet, trained alone, and fine-tuned."""
    from bignas.plots import figure, save_figure

    names = list(results["children"])
    kinds = [("supernet", "supernet child"), ("alone", "trained alone")]
    kinds += [(f"finetune{e}", f"fine-tuned {e} ep") for e in finetune]
    fig, ax = figure(1.6 + 1.2 * len(names), 3.6)
    width = 0.8 / len(kinds)
    for i, (key, label) in enumerate(kinds):
        xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [100 * results["children"][n].get(key, {}).get("test", float("nan")) for n in names], width,
               label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test top-1 (%)")
    low = min(100 * results["children"][n][k]["test"] for n in names for k, _ in kinds if k in results["children"][n])
    ax.set_ylim(max(0.0, low - 5), None)
    ax.set_title(f"{results['space']} on {results['data']}, {results['epochs']} epochs", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def report(results: dict, finetune: list[int]) -> None:
    times = results["seconds"]
    print(f"{results['machine']}, torch threads {results['threads']}; {results['data']}, space {results['space']}, "
          f"{results['epochs']} epochs")
    header = ["child", "supernet test", "alone test", "gap (points)"] + [f"finetune {e} ep" for e in finetune]
    header += ["alone s", "supernet / alone compute"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    gaps = []
    for name, row in results["children"].items():
        sup, alone = row["supernet"]["test"], row["alone"]["test"]
        gaps.append(100 * (sup - alone))
        cells = [name, f"{sup:.4f}", f"{alone:.4f}", f"{100 * (sup - alone):+.1f}"]
        cells += [f"{row[f'finetune{e}']['test']:.4f}" for e in finetune if f"finetune{e}" in row]
        cells += [f"{times.get(f'alone/{name}', float('nan')):.0f}",
                  f"{results['gmacs']['supernet'] / results['gmacs'][name]:.1f}x"]
        print("| " + " | ".join(cells) + " |")
    print(f"median gap {statistics.median(gaps):+.1f} points; supernet training "
          f"{times.get('supernet', float('nan')):.0f} s, all children alone "
          f"{sum(v for k, v in times.items() if k.startswith('alone/')):.0f} s")


if __name__ == "__main__":
    sys.exit(main())
