"""int8 end to end on a tiny real run: an int8 latency table profiled here, a child exported with
--int8 and its accuracy measured in ONNX Runtime, a search with an int8 target, and the refusals
that keep the two precisions apart."""

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

import bignas
from bignas.cli import main
from bignas.data import load_dataset, resize_batch
from bignas.errors import BignasError
from bignas.evaluate import quantize_child
from bignas.latency.fit import predict
from bignas.latency.models import export_child
from bignas.latency.table import TableError, read_table
from bignas.quantize import Calibration, Int8Format
from bignas.space import load_space
from test_latency import FAST_PROFILE, TINY_SPACE, budget_between
from test_train import write_cifar10

INT8_PROFILE = FAST_PROFILE.replace("name: fast", "name: fast-int8") + "precision: int8\nint8: {activations: u8}\n"


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    """A tiny space trained two epochs on a small CIFAR-10 on disk, and fp32 and int8 tables of it."""
    root = tmp_path_factory.mktemp("int8")
    space_file = root / "tiny.yaml"
    space_file.write_text(TINY_SPACE.replace("num_classes: 4", "num_classes: 10"))
    data = write_cifar10(root / "cifar", n_train=320, n_test=120)
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump({
        "space": str(space_file), "data": f"cifar10:{data}", "epochs": 2, "batch_size": 32, "seed": 0,
        "device": "cpu", "eval": {"calibration_images": 64, "batch_size": 64, "every_epochs": 0},
        "log": {"every_steps": 5, "tensorboard": False}, "schedule": {"warmup_epochs": 0.5}}))
    run = root / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    tables = {}
    for name, text in (("fast", FAST_PROFILE), ("fast-int8", INT8_PROFILE)):
        (root / f"{name}.yaml").write_text(text)
        tables[name] = root / name / "tiny.json"
        assert main(["profile", "--profile", str(root / f"{name}.yaml"), "--space", str(space_file), "--out",
                     str(tables[name]), "--children", "6", "--quiet"]) == 0
    return root, run, tables, load_space(space_file), f"cifar10:{data}"


def ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_an_int8_profile_times_quantized_models_and_says_so(int8_run, tmp_path, capsys):
    root, _, tables, space, _ = int8_run
    table = read_table(tables["fast-int8"], space.hash, precision="int8")
    assert table.precision == "int8" and table.header["settings"]["int8"] == Int8Format().to_dict()
    assert read_table(tables["fast"], space.hash).precision == "fp32"
    with pytest.raises(TableError, match="header.settings.precision"):
        read_table(tables["fast-int8"], space.hash, precision="fp32")
    # Whole children timed for the int8 table are quantized exactly so: Q/DQ pairs, int8 weights.
    export_child(space, space.max(), tmp_path / "max.int8.onnx", table.profile.quantized)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(tmp_path / "max.int8.onnx")
    weights = [i for i in onnx.load(str(tmp_path / "max.int8.onnx")).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights
    # A check of the int8 table times int8 children: they differ from the fp32 ones in time.
    assert main(["latency-check", "--table", str(tables["fast-int8"]), "--space", str(root / "tiny.yaml"),
                 "--children", "3", "--repeat", "2", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    # An int8 table cannot be transferred under an fp32 profile (its blocks would be of the other precision).
    assert main(["profile", "--transfer", str(tables["fast-int8"]), "--profile", str(root / "fast.yaml"),
                 "--space", str(root / "tiny.yaml"), "--out", str(tmp_path / "moved.json"), "--quiet"]) == 2
    assert "precision" in capsys.readouterr().err and not (tmp_path / "moved.json").exists()


def onnx_val_top1(path, data, space, resolution):
    """The top-1 of an ONNX file on the val split, computed here from its logits."""
    dataset = load_dataset(data, image_size=32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    right = total = 0
    for images, labels in dataset.val.eval_batches(50):
        logits = session.run(None, {"images": resize_batch(images, resolution).numpy()})[0]
        right += int((logits.argmax(1) == labels.numpy()).sum())
        total += len(labels)
    return right / total, logits


def test_search_with_an_int8_target_and_its_export(int8_run, tmp_path, capsys):
    root, run, tables, space, data = int8_run
    t = read_table(tables["fast-int8"], space.hash)
    mid = budget_between(t, space)
    args = ["search", "--run", str(run), "--table", str(tables["fast-int8"]), "--max-latency-ms", str(mid),
            "--budget", "4", "--int8-finalists", "2", "--int8-images", "48", "--quiet"]
    assert main(args + ["--out", str(root / "int8")]) == 0
    result = json.loads((root / "int8" / "search.json").read_text())["devices"][0]
    finalists = result["int8"]["finalists"]
    assert len(finalists) == 2 and result["int8"]["calibration"] == {"method": "minmax", "images": 48}
    by_fp32 = sorted((p["top1_val"] for p in result["evaluated"]), reverse=True)[:2]
    assert sorted((f["top1_val"] for f in finalists), reverse=True) == by_fp32  # the best two by fp32 val top-1
    best = result["best"]
    assert best["top1_val_int8"] == max(f["top1_val_int8"] for f in finalists) and best["latency_ms"] <= mid
    records = [json.loads(line) for line in (run / "accuracy.jsonl").read_text().splitlines()]
    assert sum(r["precision"] == "int8" for r in records) == 2
    assert sum(r["precision"] == "fp32" for r in records) == len(result["evaluated"])
    # Searched again: every figure from the cache, fp32 and int8 kept apart.
    assert main(args + ["--out", str(root / "int8-again")]) == 0
    again = json.loads((root / "int8-again" / "search.json").read_text())
    assert again["evaluated_fresh"] == 0 and again["devices"][0]["best"] == best
    assert len((run / "accuracy.jsonl").read_text().splitlines()) == len(records)

    # The export quantizes the child as the search did: the same int8 val top-1, measured in ONNX
    # Runtime (computed here again from the file's logits), not copied from fp32.
    capsys.readouterr()
    out = root / "e8"
    assert main(["export", "--run", str(run), "--arch", str(root / "int8" / "best.json"), "--int8", "--int8-images",
                 "48", "--table", str(tables["fast"]), "--table", str(tables["fast-int8"]), "--max-latency-ms",
                 str(mid), "--out", str(out)]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["top1_val_int8"] == pytest.approx(best["top1_val_int8"], abs=1e-6)
    resolution = best["arch"]["resolution"]
    top1_int8, logits_int8 = onnx_val_top1(out / "child.int8.onnx", data, space, resolution)
    top1_fp32, logits_fp32 = onnx_val_top1(out / "child.onnx", data, space, resolution)
    assert card["top1_val_int8"] == pytest.approx(top1_int8, abs=1e-6)
    assert card["top1_val"] == pytest.approx(top1_fp32, abs=1e-6)
    assert not np.array_equal(logits_int8, logits_fp32)  # a quantized model, not the fp32 one
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(out / "child.int8.onnx")
    assert 0 <= card["top1_test_int8"] <= 1
    # bignas.load_child runs the int8 file as users would.
    model = bignas.load_child(out / "child.int8.onnx")
    images = np.random.default_rng(0).standard_normal((3, 3, resolution, resolution), dtype=np.float32)
    session = ort.InferenceSession(str(out / "child.int8.onnx"), providers=["CPUExecutionProvider"])
    assert model.resolution == resolution
    np.testing.assert_array_equal(model(images), session.run(None, {"images": images})[0])
    truncated = tmp_path / "truncated.int8.onnx"
    truncated.write_bytes((out / "child.int8.onnx").read_bytes()[:200])
    with pytest.raises(BignasError, match="truncated.int8.onnx"):
        bignas.load_child(truncated)
    int8 = card["int8"]
    assert int8["format"] == Int8Format().to_dict() and int8["calibration"]["split"] == "train"
    assert int8["table"] == str(tables["fast-int8"]) and card["table"] == str(tables["fast"])
    assert int8["predicted_latency_ms"] == pytest.approx(best["latency_ms"], abs=1e-6)
    assert int8["measured_latency_ms"] > 0 and int8["latency_budget"]["max_ms"] == mid
    assert card["measured_latency_ms"] > 0  # the fp32 file, on the fp32 table


def test_the_two_precisions_are_never_mixed(int8_run, capsys):
    root, run, tables, space, _ = int8_run
    arch = root / "max.json"
    arch.write_text(json.dumps(space.max().to_dict(space)))
    # An int8 table with no int8 model to time, or two tables of one precision: refused before any work.
    for extra, words in ((["--table", str(tables["fast-int8"])], "add --int8"),
                         (["--int8", "--table", str(tables["fast"]), "--table", str(tables["fast"])],
                          "one table per precision")):
        assert main(["export", "--run", str(run), "--arch", str(arch), *extra, "--out", str(root / "never")]) == 2
        assert words in capsys.readouterr().err
        assert not (root / "never").exists()


def test_calibration_reads_the_training_split_only(int8_run, tmp_path):
    """The activation ranges of an int8 model depend on the training images alone: swapping val and
    test leaves every scale and zero point as it was, while other training images change them.
    Entropy calibration too, whose calibration batches are of unequal sizes here (32, 32, 8)."""
    _, _, _, space, data = int8_run
    dataset = load_dataset(data)
    fp32 = tmp_path / "child.onnx"
    export_child(space, space.max(), fp32)

    def ranges(data, method: str) -> dict[str, bytes]:
        out = tmp_path / f"{method}.{len(list(tmp_path.glob('*.int8.onnx')))}.int8.onnx"
        quantize_child(fp32, out, data, 32, space.max().resolution, Int8Format(), Calibration(method, 72))
        return {i.name: onnx.numpy_helper.to_array(i).tobytes() for i in onnx.load(str(out)).graph.initializer}

    for method in ("minmax", "entropy"):
        base = ranges(dataset, method)
        assert ranges(dataclasses.replace(dataset, val=dataset.test, test=dataset.val), method) == base
        assert ranges(dataclasses.replace(dataset, train=dataset.test), method) != base
