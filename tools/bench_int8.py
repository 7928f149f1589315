"""int8 deployment, measured: accuracy of quantized children against fp32, and int8 speed-up.

accuracy: children of a trained run (the largest, the smallest and --children - 2 random ones)
are extracted, BN-recalibrated and exported as `bignas export` does; each is quantized with every
--setting (calibration method:images, ONNX Runtime's static QDQ in bignas's default format, U8S8
per channel, or --activations s8) and scored in ONNX Runtime on val and test. Prints per setting the median and
worst int8 top-1 drop against the same fp32 ONNX file, and for the worst child of the first
setting the tensors that quantization hurt most: ONNX Runtime's qdq_loss_debug, the
signal-to-quantization-noise ratio (dB) of every activation, int8 model against fp32 model.

speed: --children fresh children of a space, each exported in fp32 and in int8 (as an int8
profile quantizes them) and timed under one device profile, fp32 and int8 of a child one after
the other against the interleaved reference (`latency.measure.Timer`); prints the int8 / fp32
speed-up per child: median and range. State the CPU's VNNI / AMX (printed from /proc/cpuinfo).

    python tools/bench_int8.py accuracy --run runs/c5k --children 5
    python tools/bench_int8.py speed --space cifar-small --children 20

Run it alone: anything else on the host is what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from bignas.console import Progress
from bignas.evaluate import evaluate_child, quantize_child
from bignas.latency.measure import Timer
from bignas.latency.models import export_child, export_reference
from bignas.latency.profiles import load_profile
from bignas.latency.table import cpu_identity, device_description
from bignas.onnx_io import export_onnx, onnx_top1
from bignas.quantize import Calibration, Int8Format, QuantizeError
from bignas.space import load_space
from bignas.train.run_dir import TrainedRun


def machine(threads: int | None = None) -> str:
    isa = cpu_identity()["isa"].split(",")
    int8 = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm") if f in isa]
    return (f"machine: {device_description()}, {platform.machine()}; int8 instructions: {', '.join(int8) or 'none'}"
            + (f"; torch threads {threads}" if threads else ""))


def children_of(space, n: int, seed: int = 0):
    rng, found = random.Random(seed), {space.max().hash: space.max(), space.min().hash: space.min()}
    while len(found) < n:
        child = space.sample(rng)
        found.setdefault(child.hash, child)
    return list(found.values())[:n]


def worst_tensors(fp32: Path, int8: Path, batches: list[np.ndarray], tmp: Path, k: int = 3) -> list[tuple[str, float]]:
    """The `k` activations of the int8 model furthest from the fp32 model's (lowest SQNR, dB)."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    class Reader(CalibrationDataReader):  # its iterator protocol is what collect_activations reads
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x}

    modify_model_output_intermediate_tensors(str(fp32), str(tmp / "fp32.aug.onnx"))
    modify_model_output_intermediate_tensors(str(int8), str(tmp / "int8.aug.onnx"))
    match = create_activation_matching(collect_activations(str(tmp / "int8.aug.onnx"), Reader()),
                                       collect_activations(str(tmp / "fp32.aug.onnx"), Reader()))
    errors = compute_activation_error(match)
    model = onnx.load(str(fp32))
    weights = {i.name for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def label(tensor: str) -> str:  # the module that wrote it, from the name of its weights
        node = producer.get(tensor)
        owner = next((x.removesuffix(".weight") for x in (node.input if node else []) if x in weights), None)
        return f"{tensor} ({node.op_type} of {owner})" if owner else f"{tensor} ({node.op_type if node else 'input'})"

    scored = [(label(name), e["xmodel_err"]) for name, e in errors.items() if "xmodel_err" in e]
    return sorted(scored, key=lambda t: t[1])[:k]


def accuracy(args) -> dict:
    torch.set_num_threads(args.threads)
    trained = TrainedRun.open(args.run, torch.device("cpu"))
    space, config = trained.space, trained.config
    dataset = trained.dataset(args.data)
    batch = config.eval.batch_size
    fmt = Int8Format(activations=args.activations)
    settings = [Calibration(m, int(i)) for m, i in (s.split(":") for s in args.setting)]
    print(machine(args.threads))
    print(f"run {args.run}; data {args.data or config.data}; space {space.name}; format {fmt.to_dict()}")
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, child in enumerate(children_of(space, args.children)):
            val_torch, static = evaluate_child(trained.supernet, child, dataset, "val",
                                               calibration_images=config.eval.calibration_images, batch_size=batch)
            fp32 = tmp / f"child{i}.onnx"
            export_onnx(static.cpu().eval(), child.resolution, fp32, space.in_channels)
            row = {"child": i, "hash": child.hash, "resolution": child.resolution,
                   "val_fp32": onnx_top1(fp32, dataset.val.eval_batches(batch), child.resolution),
                   "test_fp32": onnx_top1(fp32, dataset.test.eval_batches(batch), child.resolution),
                   "val_torch": val_torch, "settings": {}}
            for s in settings:
                int8 = tmp / f"child{i}.{s.method}.{s.images}.onnx"
                t0 = time.perf_counter()
                try:
                    quantize_child(fp32, int8, dataset, batch, child.resolution, fmt, s)
                except QuantizeError as e:  # one setting failing must not lose the others' figures
                    print(f"child {i}, {s.method}:{s.images}: {e}", flush=True)
                    row["settings"][f"{s.method}:{s.images}"] = {"val_int8": float("nan"), "test_int8": float("nan"),
                                                                "quantize_s": float("nan")}
                    continue
                row["settings"][f"{s.method}:{s.images}"] = {
                    "val_int8": onnx_top1(int8, dataset.val.eval_batches(batch), child.resolution),
                    "test_int8": onnx_top1(int8, dataset.test.eval_batches(batch), child.resolution),
                    "quantize_s": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            first = row["settings"][args.setting[0]]
            print(f"child {i} ({child.hash}, {child.resolution} px): val fp32 {row['val_fp32']:.4f} int8 "
                  f"{first['val_int8']:.4f}; test fp32 {row['test_fp32']:.4f} int8 {first['test_int8']:.4f}",
                  flush=True)
        print(f"\n{'setting':>16} {'val drop median':>16} {'worst':>8} {'test drop median':>17} {'worst':>8} "
              f"{'quantize s':>11}   (points: fp32 ONNX top-1 minus int8)")
        summary = {}
        for key in args.setting:
            val = [100 * (r["val_fp32"] - r["settings"][key]["val_int8"]) for r in rows]
            test = [100 * (r["test_fp32"] - r["settings"][key]["test_int8"]) for r in rows]
            secs = statistics.median(r["settings"][key]["quantize_s"] for r in rows)
            summary[key] = {"val_drop_median": statistics.median(val), "val_drop_worst": max(val),
                            "test_drop_median": statistics.median(test), "test_drop_worst": max(test)}
            print(f"{key:>16} {statistics.median(val):>16.2f} {max(val):>8.2f} {statistics.median(test):>17.2f} "
                  f"{max(test):>8.2f} {secs:>11.2f}")
        key = args.setting[0]
        worst = max(rows, key=lambda r: r["val_fp32"] - r["settings"][key]["val_int8"])
        i = worst["child"]
        images = [x.numpy() for x in dataset.calibration_batches(32, 32, worst["resolution"])]
        hurt = worst_tensors(tmp / f"child{i}.onnx", tmp / f"child{i}.{key.replace(':', '.')}.onnx", images, tmp)
        print(f"\nworst child under {key}: child {i} ({worst['hash']}), val drop "
              f"{100 * (worst['val_fp32'] - worst['settings'][key]['val_int8']):.2f} points; activations with the "
              f"lowest SQNR, int8 against fp32: " + ", ".join(f"{n} {db:.1f} dB" for n, db in hurt))
    print(f"\nwhole benchmark: {(time.perf_counter() - start) / 60:.1f} min")
    return {"rows": rows, "summary": summary, "worst": {"child": i, "tensors": hurt}}


def speed(args) -> dict:
    profile = load_profile(args.profile)
    fmt = profile.int8
    space = load_space(args.space)
    print(machine())
    print(f"profile {profile.name} ({profile.intra_op_threads} intra-op threads, batch {profile.batch}); "
          f"space {space.name}; int8 format {fmt.to_dict()}")
    progress = Progress()
    ratios, rows = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        export_reference(tmp / "reference.onnx", tmp / "shared")
        children = children_of(space, args.children, seed=args.seed)
        for i, child in enumerate(children):
            export_child(space, child, tmp / f"{i}.fp32.onnx")
            export_child(space, child, tmp / f"{i}.int8.onnx", fmt)
            progress("export", i + 1, len(children))
        timer = Timer(profile, tmp / "reference.onnx")
        for i, child in enumerate(children):
            fp32, int8 = timer.time(tmp / f"{i}.fp32.onnx"), timer.time(tmp / f"{i}.int8.onnx")
            ratios.append(fp32.ratio / int8.ratio)
            rows.append({"hash": child.hash, "fp32_ms": fp32.ms, "int8_ms": int8.ms, "speedup": ratios[-1]})
            progress("time", i + 1, len(children))
    print(f"int8 speed-up (fp32 time / int8 time) over {len(ratios)} children: median {statistics.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}x..{max(ratios):.2f}x; fp32 median {statistics.median(r['fp32_ms'] for r in rows):.3f} ms, "
          f"int8 median {statistics.median(r['int8_ms'] for r in rows):.3f} ms")
    return {"rows": rows, "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("accuracy", help="int8 top-1 drop of exported children")
    p.add_argument("--run", required=True, help="run directory of 'bignas train'")
    p.add_argument("--data", help="dataset spec (default: the run's)")
    p.add_argument("--children", type=int, default=5, help="largest, smallest and random children (default 5)")
    p.add_argument("--setting", nargs="+", default=["minmax:256", "entropy:256", "percentile:256", "minmax:64",
                                                    "minmax:1000"],
                   help="calibration METHOD:IMAGES to compare; the first is the one diagnosed")
    p.add_argument("--activations", choices=["s8", "u8"], default=Int8Format().activations,
                   help="int8 activations (default: bignas's default format)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    p = sub.add_parser("speed", help="int8 / fp32 speed-up of fresh children")
    p.add_argument("--space", default="cifar-small")
    p.add_argument("--profile", default="cpu-1t-int8", help="the timing profile (its int8 format quantizes)")
    p.add_argument("--children", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    for p in sub.choices.values():
        p.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()
    result = accuracy(args) if args.what == "accuracy" else speed(args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **result}, indent=1))


if __name__ == "__main__":
    main()
