"""Search under constraints, the accuracy cache, export and its model card, on a tiny real run:
a tiny space trained one epoch on a small CIFAR-10 written to disk, profiled with ONNX Runtime."""

import json
import math
import shutil

import pytest
import torch
import yaml

import bignas
from bignas.cli import main
from bignas.cost import child_cost
from bignas.errors import BignasError
from bignas.latency.fit import predict
from bignas.latency.table import TableError, read_table, write_table
from bignas.nn import extract
from bignas.search.command import search_run
from bignas.search.halving import HalvingSettings
from bignas.search.problem import SearchError
from bignas.space import load_space
from bignas.train.run_dir import TrainedRun
from test_latency import FAST_PROFILE, TINY_SPACE, budget_between
from test_train import write_cifar10


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    space_file = root / "tiny.yaml"
    space_file.write_text(TINY_SPACE.replace("num_classes: 4", "num_classes: 10"))  # as the data
    profile_file = root / "fast.yaml"
    profile_file.write_text(FAST_PROFILE)
    data = write_cifar10(root / "cifar", n_train=320, n_test=120)
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump({
        "space": str(space_file), "data": f"cifar10:{data}", "epochs": 2, "batch_size": 32, "seed": 0,
        "device": "cpu", "eval": {"calibration_images": 64, "batch_size": 64, "every_epochs": 0},
        "log": {"every_steps": 5, "tensorboard": False}, "schedule": {"warmup_epochs": 0.5}}))
    run = root / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet"]) == 0
    table = root / "fast" / "tiny.json"
    assert main(["profile", "--profile", str(profile_file), "--space", str(space_file), "--out", str(table),
                 "--children", "6", "--quiet"]) == 0
    space = load_space(space_file)
    return root, run, table, space, budget_between(read_table(table, space.hash), space)


def fits(doc, space, table, limit, max_mflops=None, stat="p50"):
    t = read_table(table, space.hash)
    for result in doc["devices"]:
        for p in result["evaluated"]:
            child = space.child_from_dict(p["arch"])
            assert predict(t, space, child, stat=stat) <= limit
            if max_mflops is not None:
                assert child_cost(space, child).mflops <= max_mflops


def test_search_respects_constraints_is_deterministic_and_reuses_the_cache(tiny_run):
    root, run, table, space, mid = tiny_run
    max_mflops = (child_cost(space, space.min()).mflops + child_cost(space, space.max()).mflops) / 2
    runs = []
    for i in range(2):
        out = root / f"s{i}"
        runs.append(search_run(run, [str(table)], [mid], out=out, max_mflops=max_mflops, budget=5, seed=1,
                               quiet=True))
        assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
        assert json.loads((out / "search.json").read_text())["devices"][0]["best"] == runs[-1]["devices"][0]["best"]
    first, second = runs
    fits(first, space, table, mid, max_mflops)
    assert first["devices"][0]["evaluated"] == second["devices"][0]["evaluated"]
    assert first["evaluated_fresh"] > 0 and second["evaluated_fresh"] == 0  # all from RUN/accuracy.jsonl
    best = first["devices"][0]["best"]
    assert best["top1_val"] == max(p["top1_val"] for p in first["devices"][0]["evaluated"])
    front = first["devices"][0]["pareto"]
    assert all(a["latency_ms"] <= b["latency_ms"] and a["top1_val"] < b["top1_val"] for a, b in zip(front, front[1:]))


def test_random_strategy_and_several_devices(tiny_run):
    root, run, table, space, mid = tiny_run
    other = root / "other" / "tiny.json"
    other.parent.mkdir(exist_ok=True)
    shutil.copy(table, other)
    t = read_table(table, space.hash)
    tight = predict(t, space, space.min()) * 1.0001
    doc = search_run(run, [str(table), str(other)], [mid, tight], out=root / "multi", strategy="random",
                     budget=4, quiet=True)
    assert [r["device"] for r in doc["devices"]] == ["fast", "fast-1"]
    assert (root / "multi" / "pareto-fast.png").exists() and (root / "multi" / "pareto-fast-1.png").exists()
    for result, limit in zip(doc["devices"], (mid, tight)):
        assert result["best"]["latency_ms"] <= limit
        for p in result["evaluated"]:
            assert p["latency_ms"] <= limit


def test_p90_budgets_are_respected(tiny_run, capsys):
    root, run, table, space, _ = tiny_run
    t = read_table(table, space.hash)
    scale = t.calibration["p90_over_p50"]  # measured on this host: the runs' p90 over their median
    assert scale >= 1
    assert predict(t, space, space.max(), stat="p90") == pytest.approx(scale * predict(t, space, space.max()))
    mid = budget_between(t, space, stat="p90")
    assert main(["search", "--run", str(run), "--table", str(table), "--max-latency-ms", str(mid),
                 "--latency-stat", "p90", "--budget", "4", "--out", str(root / "p90"), "--quiet"]) == 0
    doc = json.loads((root / "p90" / "search.json").read_text())
    assert doc["constraints"]["devices"][0]["latency_stat"] == "p90" and doc["devices"][0]["latency_stat"] == "p90"
    fits(doc, space, table, mid, stat="p90")
    best = doc["devices"][0]["best"]
    assert best["latency_ms"] == pytest.approx(predict(t, space, space.child_from_dict(best["arch"]), stat="p90"))
    capsys.readouterr()
    # The card states p50 and p90, predicted and measured, against the budget on p90.
    (root / "best.json").write_text(json.dumps(best["arch"]))
    assert main(["export", "--run", str(run), "--arch", str(root / "best.json"), "--table", str(table),
                 "--max-latency-ms", str(mid), "--latency-stat", "p90", "--out", str(root / "p90-export")]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["predicted_latency_p90_ms"] == pytest.approx(best["latency_ms"], abs=1e-6)  # the card rounds to 1 ns
    assert card["measured_latency_p90_ms"] >= card["measured_latency_ms"] > 0
    assert card["latency_budget"] == {"max_ms": mid, "stat": "p90", "predicted_meets": True,
                                      "measured_meets": card["measured_latency_p90_ms"] <= mid}
    # A table timed before p90 was recorded predicts p50 only: a p90 budget on it is refused, naming the field.
    del t.calibration["p90_over_p50"]
    old = root / "old" / "tiny.json"
    old.parent.mkdir()
    write_table(old, t)
    for command in (["search", "--run", str(run), "--max-latency-ms", str(mid)], ["export", "--arch", str(root / "best.json"), "--run", str(run)]):
        assert main([*command, "--table", str(old), "--latency-stat", "p90", "--out", str(root / "never")]) == 2
        assert "calibration.p90_over_p50" in capsys.readouterr().err
    assert not (root / "never").exists()


def test_refusals(tiny_run, capsys):
    root, run, table, space, mid = tiny_run
    t = read_table(table, space.hash)
    smallest = predict(t, space, space.min())
    with pytest.raises(SearchError, match="smallest child needs"):
        search_run(run, [str(table)], [smallest * 0.5], out=root / "never", budget=3, quiet=True)
    assert not (root / "never").exists()
    assert main(["search", "--run", str(run), "--table", str(table), "--max-latency-ms", "1", "--max-latency-ms", "2",
                 "--out", str(root / "never"), "--quiet"]) == 2
    assert "one budget per table" in capsys.readouterr().err
    foreign = root / "foreign.json"
    t.header["space_hash"] = "0" * 16
    write_table(foreign, t)
    with pytest.raises(TableError, match="space"):
        search_run(run, [str(foreign)], [mid], out=root / "never", budget=3, quiet=True)
    arch = root / "ofa.json"
    arch.write_text(json.dumps(load_space("ofa-mbv3").min().to_dict(load_space("ofa-mbv3"))))
    assert main(["export", "--run", str(run), "--arch", str(arch), "--out", str(root / "never")]) == 2
    assert "field 'space'" in capsys.readouterr().err
    assert not (root / "never").exists()


def test_export_writes_a_consistent_checked_card(tiny_run, capsys):
    root, run, table, space, mid = tiny_run
    child = space.sample(__import__("random").Random(5))
    arch = root / "arch.json"
    arch.write_text(json.dumps(child.to_dict(space)))
    out = root / "export"
    assert main(["export", "--run", str(run), "--arch", str(arch), "--table", str(table), "--out", str(out)]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card == json.loads((out / "card.json").read_text())
    assert {"arch", "space", "top1_val", "top1_test", "mflops", "params_m", "predicted_latency_ms",
            "measured_latency_ms", "profile", "onnxruntime", "onnx_max_abs_diff"} <= set(card)
    assert main(["inspect", "--space", str(root / "tiny.yaml"), "--arch", str(arch)]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert (card["mflops"], card["params_m"]) == (inspected["mflops"], inspected["params_m"])
    assert card["onnx_max_abs_diff"] <= 1e-4 and 0 <= card["top1_test"] <= 1
    assert card["predicted_latency_ms"] == pytest.approx(predict(read_table(table, space.hash), space, child), rel=1e-3)
    assert card["measured_latency_ms"] > 0 and card["profile"] == "fast"  # the table was measured on this host
    # child.pt: loads with weights_only through the public API, and is the recalibrated extracted child.
    model = bignas.load_child(out / "child.pt")
    assert model.arch == child.to_dict(space)
    x = torch.randn(3, 3, child.resolution, child.resolution)
    static = extract(TrainedRun.open(run, torch.device("cpu")).supernet, child)
    static.load_state_dict(torch.load(out / "child.pt", weights_only=True)["state_dict"])
    torch.testing.assert_close(model(x), static.eval()(x))
    (out / "truncated.pt").write_bytes((out / "child.pt").read_bytes()[:100])
    with pytest.raises(BignasError, match="truncated.pt"):
        bignas.load_child(out / "truncated.pt")
    saved = torch.load(out / "child.pt", weights_only=True)
    saved["state_dict"].pop(next(iter(saved["state_dict"])))
    torch.save(saved, out / "mismatched.pt")
    with pytest.raises(BignasError, match="mismatched.pt: field 'state_dict' does not fit the file's own 'arch'"):
        bignas.load_child(out / "mismatched.pt")
    (out / "mismatched.pt").unlink()
    # OUT now holds a file that is not an export's: refused before any work, nothing touched.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["export", "--run", str(run), "--arch", str(arch), "--out", str(out)]) == 2
    assert "truncated.pt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # An earlier export is replaced as a whole set.
    (out / "truncated.pt").unlink()
    other = space.max()
    arch.write_text(json.dumps(other.to_dict(space)))
    assert main(["export", "--run", str(run), "--arch", str(arch), "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "child.onnx", "child.pt"]
    assert json.loads((out / "card.json").read_text())["arch"] == other.to_dict(space)
    assert bignas.load_child(out / "child.pt").arch == other.to_dict(space)
    assert not [p for p in root.iterdir() if p.name.startswith(".export")]  # no temporary folder left


def test_predictor_command_and_a_guided_search(tiny_run, capsys):
    root, run, table, space, mid = tiny_run
    assert main(["search", "--run", str(run), "--table", str(table), "--max-latency-ms", str(mid), "--predictor",
                 "--predictor-option", "screen=50", "--budget", "3", "--out", str(root / "guided"), "--quiet"]) == 0
    doc = json.loads((root / "guided" / "search.json").read_text())
    (result,) = doc["devices"]
    assert doc["predictor"]["screen"] == 50 and result["predictor"]["prior_children"] >= 0
    assert len(result["evaluated"]) <= 3 and all("top1_val" in p for p in result["evaluated"])
    fits(doc, space, table, mid)
    assert main(["predictor", "--run", str(run), "--samples", "-1"]) == 2
    assert "--samples must be 0 or more" in capsys.readouterr().err
    assert main(["predictor", "--run", str(run), "--samples", "40", "--quiet"]) == 0  # the tiny space has 12 children
    out = json.loads(capsys.readouterr().out)
    assert out["children"] == space.child_count() and set(out["cross_validation"]) == {"folds", "ridge", "mlp"}
    stored = json.loads((run / "predictor.json").read_text())
    assert stored["kind"] == out["kind"] and stored["children"] == out["children"]
    assert main(["search", "--run", str(run), "--predictor-option", "screen=0", "--predictor", "--budget", "3",
                 "--out", str(root / "bad")]) == 2
    assert "--predictor-option" in capsys.readouterr().err and not (root / "bad").exists()


def test_successive_halving_reports_full_fidelity_top1_only(tiny_run):
    root, run, table, space, mid = tiny_run
    doc = search_run(run, [str(table)], [mid], out=root / "halving", budget=4, seed=2, quiet=True,
                     halving=HalvingSettings(val_images=(32,), calibration_images=(16,), keep=0.5))
    (result,) = doc["devices"]
    screened = result["fidelity"]["screened"]
    assert doc["fidelity"]["method"] == "successive-halving" and 1 <= len(screened) <= 4
    assert len(result["evaluated"]) == math.ceil(0.5 * len(screened))
    trained = TrainedRun.open(run, torch.device("cpu"))
    dataset = trained.dataset()
    for p in result["evaluated"]:  # the full estimate, as `bignas evaluate` gives it
        assert p["top1_val"] == trained.evaluate(space.child_from_dict(p["arch"]), dataset, "val")[0]
