"""`bignas train` (a supernet, or with --arch one child alone) and `bignas finetune`: their parsers and commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bignas.cli_args import out_path, positive


def cmd_train(args: argparse.Namespace) -> int:
    from bignas.train.child import ChildRecipe
    from bignas.train.config import ConfigError, load_config
    from bignas.train.recipe import Recipe, train_run
    from bignas.train.run_dir import RunDir

    overrides = list(args.overrides)
    # Flag values are taken as given, not parsed as YAML (a path may look like a YAML value).
    values = {k: v for k, v in (("epochs", args.epochs), ("data", args.data)) if v is not None}
    run = RunDir(args.out)
    if args.resume and args.config is not None:
        raise ConfigError(f"--config {args.config} with --resume: a resumed run continues its own "
                          f"{run.config_file}; give changes as key=value overrides")
    # A resumed run continues from its own saved config; overrides apply on top of it, and the
    # recipe refuses those that would change the run's trajectory.
    config = run.read_config(overrides, values) if args.resume else \
        load_config(args.config or "quickstart.yaml", overrides, values)
    show = not args.quiet
    one_child = args.arch is not None or (args.resume and run.meta_file.exists() and "arch" in run.read_meta())
    if one_child:
        recipe = ChildRecipe(config, run.path, _arch(args.arch), show_progress=show, source=str(args.arch))
    else:
        recipe = Recipe(config, run.path, show_progress=show)
    summary = train_run(recipe, resume=args.resume)
    if summary is not None:
        print(json.dumps(summary))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from bignas.train.child import ChildRecipe, Finetune, finetune_config
    from bignas.train.config import ConfigError
    from bignas.train.recipe import train_run
    from bignas.train.run_dir import RunDir

    run = RunDir(args.out)
    if args.resume:
        given = [flag for flag, value in (("--run", args.run), ("--teacher", args.teacher)) if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: not with --resume, which continues with the run's own "
                              f"(in {run.meta_file} and {run.config_file})")
        values = {"epochs": args.epochs} if args.epochs is not None else {}
        config = run.read_config(list(args.overrides), values)
        finetune = None  # where it started is read from the run
    else:
        missing = [flag for flag, value in (("--run", args.run), ("--arch", args.arch), ("--epochs", args.epochs))
                   if value is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} needed to start fine-tuning (only --resume reads them from --out)")
        teacher = [f"finetune.teacher={args.teacher}"] if args.teacher else []
        config = finetune_config(args.run, args.epochs, teacher + list(args.overrides))
        finetune = Finetune(Path(args.run))
    recipe = ChildRecipe(config, run.path, _arch(args.arch), finetune, show_progress=not args.quiet, source=str(args.arch))
    summary = train_run(recipe, resume=args.resume)
    if summary is not None:
        print(json.dumps(summary))
    return 0


def _arch(value: str | None):
    """--arch: "max", "min", an architecture file's contents, or None (not given)."""
    from bignas.io import read_json
    from bignas.train.config import ConfigError

    if value is None or value in ("max", "min"):
        return value
    return read_json(value, "architecture file", ConfigError)


def add_train_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a supernet with the sandwich rule and inplace distillation "
                                     "(or, with --arch, one child alone)",
                       description="Train a supernet. The config file fully defines the run; flags and "
                                   "key=value pairs override its keys. Run with torchrun for several "
                                   "processes: torchrun --nproc_per_node=N -m bignas train ... With --arch, "
                                   "train that one child alone from scratch as a plain network, with the same "
                                   "recipe (data order, optimizer, schedule, label smoothing, dropout and "
                                   "drop-connect, zero-init of the last BN): the baseline a supernet child is "
                                   "compared with. Its run directory holds child.pt; evaluate and export take it.")
    p.add_argument("--config",
                   help="config YAML: a path, or a shipped recipe (quickstart.yaml, cifar10.yaml, imagenet.yaml); "
                        "default: quickstart.yaml; not with --resume, which continues the run's own config")
    p.add_argument("--data", help="dataset: mnist5k, cifar10:PATH, cifar100:PATH or imagefolder:PATH "
                                  "(overrides the config's 'data')")
    p.add_argument("--arch", metavar="max|min|FILE.json",
                   help="train only this child of the config's space, alone from scratch: 'max' (the largest), "
                        "'min' (the smallest) or an architecture JSON file (e.g. the best.json search writes)")
    p.add_argument("--out", type=out_path, default="runs/quickstart", help="run directory (default: runs/quickstart)")
    p.add_argument("--epochs", type=positive(int), help="number of epochs (overrides the config's 'epochs')")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, exactly as if never stopped; "
                        "only epochs and the device, worker, checkpoint, eval and log settings may change")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides with dotted keys and YAML values, e.g. optimizer.lr=0.05")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune one child extracted from a supernet, as a plain network",
                       description="Train one child of a trained supernet further, as a plain network starting "
                                   "from the supernet's weights (BN statistics recalibrated first, so its first step "
                                   "computes what the sliced child computes). The config is the supernet run's "
                                   "with no warm-up, half its peak learning rate and no dropout or drop-connect; "
                                   "key=value pairs override it. Writes a run directory (child.pt) that evaluate "
                                   "and export take; the export's card says it was fine-tuned, from which weights "
                                   "and for how many epochs.")
    p.add_argument("--run", help="the supernet run directory the child comes from")
    p.add_argument("--arch", metavar="max|min|FILE.json",
                   help="the child to fine-tune: 'max', 'min' or an architecture JSON file (e.g. best.json of a search)")
    p.add_argument("--epochs", type=positive(int), help="epochs of fine-tuning")
    p.add_argument("--teacher", choices=("none", "largest"),
                   help="what the child learns: 'none', the labels with the config's label smoothing (default), or "
                        "'largest', the soft predictions of the supernet's largest child (config key finetune.teacher)")
    p.add_argument("--out", type=out_path, required=True, help="run directory of the fine-tuned child")
    p.add_argument("--resume", action="store_true",
                   help="continue the fine-tuning in --out from its latest checkpoint; --run and --arch are read "
                        "from --out (with the teacher, the supernet run must still be there, with the same weights)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides with dotted keys and YAML values, e.g. optimizer.lr=0.005")
    p.set_defaults(func=cmd_finetune)
