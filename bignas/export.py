"""ONNX export of a static child with an ONNX Runtime parity check, and its int8 model with measured accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from torch import nn

from bignas.errors import BignasError
from bignas.onnx_io import export_onnx, onnx_max_abs_diff, onnx_top1
from bignas.quantize import Calibration, Int8Format
from bignas.child_file import read_child, save_child

INT8_FILE = "child.int8.onnx"
OUTPUTS = ("child.pt", "child.onnx", INT8_FILE, "card.json")  # what an export may write into OUT (int8: --int8 only)
MAX_ONNX_DIFF = 1e-4  # largest |ONNX Runtime - PyTorch| output difference an export accepts


class ExportError(BignasError):
    """An export that cannot be written as asked, or whose ONNX file fails its check."""


class OnnxChild:
    """An exported ONNX child, fp32 (child.onnx) or int8 (child.int8.onnx), run by ONNX Runtime:
    `model(images)` returns the logits (numpy) of a float32 batch (N, C, R, R), normalised as in
    training, at the child's resolution `model.resolution`."""

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))
        except Exception as e:  # onnxruntime's NoSuchFile, InvalidProtobuf, ... derive from Exception only
            raise BignasError(f"{path}: ONNX Runtime cannot load it: {e}") from e
        self.input = self.session.get_inputs()[0]
        self.resolution = self.input.shape[2]

    def __call__(self, images):
        import numpy as np

        x = images.detach().cpu().numpy() if hasattr(images, "detach") else images
        return self.session.run(None, {self.input.name: np.asarray(x, dtype=np.float32)})[0]


def load_child(path: str | Path) -> nn.Module | OnnxChild:
    """The child saved by `bignas export`: child.pt as a static PyTorch module in eval mode, ready to
    run at its resolution (`model.arch` is its architecture dict); an .onnx file (child.onnx,
    child.int8.onnx) as an `OnnxChild`, run by ONNX Runtime."""
    if Path(path).suffix == ".onnx":
        return OnnxChild(path)
    from bignas.nn.child import StaticNet
    from bignas.plan import plan

    space, child, state_dict = read_child(path)
    model = StaticNet(plan(space, child))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        raise ExportError(f"{path}: field 'state_dict' does not fit the file's own 'arch' ({e})") from None
    model.arch = json.loads(json.dumps(child.to_dict(space)))  # lists, as in the file
    return model.eval()


def export_run_child(run: str | Path, arch: str | Path, out: str | Path, tables: Sequence[str | Path] = (),
                     device: str = "auto", max_latency_ms: float | None = None, latency_stat: str = "p50",
                     int8: Calibration | None = None) -> dict:
    """`bignas export`: extract `arch` from a trained run, recalibrate its BN statistics, write
    child.pt, child.onnx (checked against PyTorch with ONNX Runtime) and card.json; returns the card.
    `tables`: at most one latency table per precision; the card states the predicted (and, on the
    table's device, measured) p50 and p90 latency of the model of that precision, against
    `max_latency_ms` on `latency_stat` when given. With `int8` (its calibration), child.int8.onnx
    too: quantized as the int8 table's profile says (else `Int8Format()`), its top-1 measured in
    ONNX Runtime on val and test."""
    import onnxruntime

    from bignas.cost import child_cost
    from bignas.data import resize_batch
    from bignas.memory import child_memory
    from bignas.evaluate import top1
    from bignas.io import atomic_dir, check_output_dir, write_json
    from bignas.train.distributed import pick_device
    from bignas.train.run_dir import TrainedRun

    out = Path(out)
    check_output_dir(out, OUTPUTS, ExportError, "export")  # before any expensive work
    trained = TrainedRun.open(run, pick_device(device))
    space, config = trained.space, trained.config
    child = space.load_child(arch)  # refuses an arch of another space, naming the field
    by_precision = _tables(tables, space, int8 is not None, max_latency_ms, latency_stat)
    dataset = trained.dataset()
    top1_val, static = trained.evaluate(child, dataset, "val")
    top1_test = top1(static, dataset.test.eval_batches(config.eval.batch_size), child.resolution, trained.device)
    static = static.cpu().eval()
    images, _ = next(iter(dataset.val.eval_batches(16)))
    cost = child_cost(space, child)
    # Built beside OUT and renamed into place whole: a failed check or a kill leaves the earlier export.
    with atomic_dir(out) as tmp:
        save_child(static, space, child, tmp / "child.pt")
        export_onnx(static, child.resolution, tmp / "child.onnx", space.in_channels)
        diff = onnx_max_abs_diff(static, tmp / "child.onnx", resize_batch(images, child.resolution))
        if diff > MAX_ONNX_DIFF:
            raise ExportError(f"{out / 'child.onnx'}: ONNX Runtime differs from PyTorch by {diff:.2e} "
                              f"(> {MAX_ONNX_DIFF:g}); nothing was written")
        table, table_path = by_precision.get("fp32", (None, None))
        card = {"arch": child.to_dict(space), "space": space.name, "space_hash": space.hash,
                "top1_val": round(top1_val, 6), "top1_test": round(top1_test, 6),
                **cost.summary(), **child_memory(space, child).summary(),
                **model_latency(tmp / "child.onnx", table, space, child, max_latency_ms, latency_stat),
                "profile": table.header["profile"] if table is not None else None,
                "table": str(table_path) if table_path is not None else None,
                "onnxruntime": onnxruntime.__version__, "onnx_max_abs_diff": diff,
                "run": str(run), "data": config.data, "training": trained.training}
        if int8 is not None:
            card |= int8_export(tmp, dataset, config.eval.batch_size, space, child, int8, by_precision.get("int8"),
                                max_latency_ms, latency_stat)
        write_json(tmp / "card.json", card)
    return card


def _tables(paths: Sequence[str | Path], space, int8: bool, budget: float | None, stat: str) -> dict:
    """The latency tables of an export by the precision they time: {"fp32" | "int8": (table, path)}."""
    from bignas.latency.fit import p90_scale
    from bignas.latency.table import read_table

    found: dict = {}
    for path in paths:
        table = read_table(path, space.hash)
        if table.precision in found:
            raise ExportError(f"{path}: a second {table.precision} table (after {found[table.precision][1]}); "
                              f"give at most one table per precision")
        if table.precision == "int8" and not int8:
            raise ExportError(f"{path}: an int8 table (field 'header.settings.precision'), but no int8 model is "
                              f"exported; add --int8, or give an fp32 table")
        if stat == "p90":
            p90_scale(table)  # a table that predicts no p90 is refused before any work
        found[table.precision] = (table, path)
    if budget is not None and not found:
        raise ExportError("--max-latency-ms needs --table: the budget is a latency on that table's device")
    if stat == "p90" and not found:
        raise ExportError("--latency-stat p90 needs --table: the statistic is of that table's device")
    return found


def model_latency(model: Path, table, space, child, budget: float | None, stat: str,
                  missing: str = "no --table given") -> dict:
    """The card's latency fields for the ONNX file `model` on `table` (None: `missing` says why)."""
    from bignas.latency.fit import predict, table_stats

    predicted = {s: predict(table, space, child, stat=s) for s in table_stats(table)}
    measured, reason = (None, missing) if table is None else \
        measure_on_table_device(table, model, space)
    return latency_fields(predicted, measured, reason, budget, stat)


def int8_export(tmp: Path, dataset, batch_size: int, space, child, calibration: Calibration, table_at,
                budget: float | None, stat: str) -> dict:
    """Quantize tmp/child.onnx into tmp/child.int8.onnx (calibrated on the training split's fixed
    calibration images) and measure it: its top-1 in ONNX Runtime on val and test, its latency on
    the int8 table `table_at` ((table, path) or None). Returns the card's int8 fields."""
    from bignas.evaluate import quantize_child
    from bignas.memory import child_memory

    table, path = table_at or (None, None)
    fmt = table.profile.int8 if table is not None else Int8Format()
    images = quantize_child(tmp / "child.onnx", tmp / INT8_FILE, dataset, batch_size, child.resolution, fmt,
                            calibration)
    return {"top1_val_int8": round(onnx_top1(tmp / INT8_FILE, dataset.val.eval_batches(batch_size),
                                             child.resolution), 6),
            "top1_test_int8": round(onnx_top1(tmp / INT8_FILE, dataset.test.eval_batches(batch_size),
                                              child.resolution), 6),
            "int8": {"file": INT8_FILE, "format": fmt.to_dict(),
                     "weights_mb": round(child_memory(space, child, fmt.per_channel).weights_mb("int8"), 6),
                     "calibration": {**calibration.to_dict(), "images": images, "split": "train"},
                     **model_latency(tmp / INT8_FILE, table, space, child, budget, stat,
                                     "no int8 table given (--table of an int8 profile)"),
                     "profile": table.header["profile"] if table is not None else None,
                     "table": str(path) if path is not None else None}}


def latency_fields(predicted: dict[str, float], measured: dict[str, float] | None, reason: str | None,
                   budget: float | None, stat: str) -> dict:
    """The card's latency: predicted and measured p50 (`*_latency_ms`) and p90 (`*_latency_p90_ms`),
    and the budget on `stat` with whether each meets it (None where there is no figure to judge)."""
    def meets(figures):
        return None if budget is None or not figures or stat not in figures else figures[stat] <= budget

    rounded = {s: round(v, 6) for s, v in predicted.items()}
    return {"predicted_latency_ms": rounded.get("p50"), "predicted_latency_p90_ms": rounded.get("p90"),
            "measured_latency_ms": measured["p50"] if measured else None,
            "measured_latency_p90_ms": measured["p90"] if measured else None, "measured_latency_note": reason,
            "latency_budget": {"max_ms": budget, "stat": stat, "predicted_meets": meets(predicted),
                               "measured_meets": meets(measured)}}


def measure_on_table_device(table, model: Path, space=None) -> tuple[dict[str, float] | None, str | None]:
    """Latency of `model` ({"p50", "p90"} ms, on the table's scale) when this host is the table's
    device; else (None, why not)."""
    from bignas.latency.clock import table_clock
    from bignas.latency.table import TableError

    try:
        with table_clock(table, space=space) as measure:
            t = measure(model)
            return {"p50": round(t.p50_ms, 6), "p90": round(t.p90_ms, 6)}, None
    except TableError as e:
        return None, str(e)
