"""The Pareto front, hypervolume and progress of search.json, and `bignas compare`."""

import json
import subprocess
import sys

import pytest

from bignas.search import driver
from bignas.search.compare import compare
from bignas.search.front import hypervolume, pareto_front, progress
from bignas.search.problem import Problem, SearchError
from bignas.search.report import write_results
from bignas.space import load_space
from test_strategies import synthetic


def pts(*pairs):
    return [{"ms": x, "top1_val": y} for x, y in pairs]


def test_hypervolume_is_the_area_dominated_inside_the_reference_box():
    points = pts((1, 0.5), (2, 0.7), (3, 0.6), (5, 0.9))  # (3, 0.6) is dominated, (5, 0.9) beyond the box
    assert [p["ms"] for p in pareto_front(points, "ms")] == [1, 2, 5]
    assert hypervolume(points, "ms", ref_x=4) == pytest.approx(3 * 0.5 + 2 * 0.2)
    assert hypervolume(points, "ms", ref_x=4, ref_top1=0.6) == pytest.approx(2 * 0.1)
    assert hypervolume([], "ms", ref_x=4) == 0.0
    # adding a dominated point changes nothing; a better one grows it
    assert hypervolume(points + pts((2.5, 0.65)), "ms", 4) == hypervolume(points, "ms", 4)
    assert hypervolume(points + pts((0.5, 0.8)), "ms", 4) > hypervolume(points, "ms", 4)


def test_progress_is_the_best_feasible_so_far():
    assert progress([None, 0.3, 0.2, None, 0.5]) == [None, 0.3, 0.3, 0.3, 0.5]


def test_search_json_reports_progress_and_a_hypervolume_with_its_reference(tmp_path):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    doc = driver.run("coarse-to-fine", Problem(space, (), max_mflops=limit), evaluate, budget=10, seed=0,
                     settings=None)
    (result,) = doc["devices"]
    assert doc["strategy_settings"] == {"coarse_share": 0.5, "parents": 3, "mutate_prob": 0.2}
    assert len(result["progress"]) == len(result["evaluated"]) == 10
    assert result["progress"][-1] == result["best"]["top1_val"]
    assert result["progress"] == sorted(result["progress"])
    hv = result["hypervolume"]
    assert hv["reference"] == {"mflops": limit, "top1_val": 0.0}
    assert hv["value"] == pytest.approx(hypervolume(result["evaluated"], "mflops", limit))
    assert 0 < hv["normalised"] < 1


def test_compare_plots_several_searches_and_refuses_what_it_cannot_read(tmp_path):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    for name in ("random", "coarse-to-fine"):
        write_results(driver.run(name, Problem(space, (), max_mflops=limit), evaluate, budget=8, seed=0),
                      tmp_path / name)
    rows = compare([str(tmp_path / "random"), str(tmp_path / "coarse-to-fine")], tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    assert [r["strategy"] for r in rows] == ["random", "coarse-to-fine"] and all(r["evaluated"] == 8 for r in rows)

    old = json.loads((tmp_path / "random" / "search.json").read_text())
    del old["devices"][0]["progress"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "search.json").write_text(json.dumps(old))
    with pytest.raises(SearchError, match=r"old/search.json: field 'devices\[0\]\.progress' is missing"):
        compare([str(tmp_path / "old")], tmp_path / "x.png")
    with pytest.raises(SearchError, match="no such search result"):
        compare([str(tmp_path / "nowhere")], tmp_path / "x.png")
    with pytest.raises(SearchError, match="labels"):
        compare([str(tmp_path / "random")], tmp_path / "x.png", labels=["a", "b"])
    for stat in ("p50", "p90", None):  # one target's latency budgets on p50, on p90, unsaid (written before p90: p50)
        doc = json.loads((tmp_path / "random" / "search.json").read_text())
        result = doc["devices"][0]
        result.update(x="latency_ms", latency_stat=stat, pareto=[p | {"latency_ms": p["mflops"]} for p in result["pareto"]])
        if stat is None:
            del result["latency_stat"]
        (tmp_path / str(stat)).mkdir()
        (tmp_path / str(stat) / "search.json").write_text(json.dumps(doc))
    for pair in (("p50", "p90"), ("None", "p90")):
        with pytest.raises(SearchError, match="different statistics"):
            compare([str(tmp_path / pair[0]), str(tmp_path / pair[1])], tmp_path / "x.png")
    compare([str(tmp_path / "None"), str(tmp_path / "p50")], tmp_path / "same.png")  # both on p50
    assert not (tmp_path / "x.png").exists()

    cli = subprocess.run([sys.executable, "-m", "bignas", "compare", str(tmp_path / "old"), "--out",
                          str(tmp_path / "y.png")], capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr and "progress" in cli.stderr
    assert not (tmp_path / "y.png").exists()
