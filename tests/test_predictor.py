"""The accuracy predictor (fit, cross-validation, storage, staleness) and predictor-guided search,
on a synthetic accuracy function over a real space (no trained run)."""

import json
import math
import random

import numpy as np
import pytest
import torch

from bignas.cost import child_cost
from bignas.search import driver, predictor
from bignas.search.evaluator import Evaluator
from bignas.search.guided import GuidedSettings, make_guided
from bignas.search.predictor_run import PredictorError, fit_on_cache, load
from bignas.search.problem import Problem, SearchError
from bignas.space import load_space


def learnable(space):
    """A top-1 that depends on the architecture's choices (each option of each decision adds its
    own term) and on MFLOPs: what a supernet's children look like, and what a predictor can learn."""
    weights = random.Random(7)
    terms = {(name, o): weights.uniform(-0.01, 0.01) for name, options in space.decisions() for o in options}
    largest = child_cost(space, space.max()).mflops
    blocks = space.decision_blocks()

    def top1(child):
        codes = space.encode(child)
        value = 0.5 + 0.2 * math.sqrt(child_cost(space, child).mflops / largest)
        for (name, options), code, block in zip(space.decisions(), codes, blocks):
            if block is None or block[1] < child.stages[block[0]].depth:
                value += terms[(name, options[code])]
        return value

    return top1


def sample(space, n, seed):
    rng = random.Random(seed)
    return list({c.hash: c for c in (space.sample(rng) for _ in range(n))}.values())


@pytest.mark.parametrize("kind", predictor.KINDS)
def test_each_kind_ranks_unseen_children_better_than_a_constant(kind):
    space = load_space("cifar-small")
    top1 = learnable(space)
    featurize = predictor.Featurizer(space)
    train, test = sample(space, 80, 0), sample(space, 60, 1)
    x, y = featurize(train), np.array([top1(c) for c in train])
    truth = np.array([top1(c) for c in test])
    model = predictor.fit(kind, x, y, seed=0)
    got = model.predict(featurize(test))
    agreement = predictor.agreement(got, truth)
    constant_mae = 100 * np.abs(y.mean() - truth).mean()
    assert agreement["kendall"] > 0.6 and agreement["mae_points"] < 0.7 * constant_mae
    assert np.array_equal(predictor.fit(kind, x, y, seed=0).predict(featurize(test)), got)  # seeded


def test_features_are_one_hot_with_blocks_beyond_a_stage_depth_all_zero():
    space = load_space("cifar-small")
    featurize = predictor.Featurizer(space)
    for child in (space.min(), space.max(), space.sample(random.Random(3))):
        x = featurize([child])[0]
        for i, block in enumerate(space.decision_blocks()):
            hot = x[featurize.offsets[i]:featurize.offsets[i + 1]]
            shapes = block is None or block[1] < child.stages[block[0]].depth
            assert hot.sum() == (1.0 if shapes else 0.0)
            if shapes:
                assert space.decisions()[i][1][int(hot.argmax())] is not None
        cost = child_cost(space, child)
        assert x[-2] == cost.mflops / child_cost(space, space.max()).mflops
    assert np.array_equal(featurize([space.max()])[0, -2:], [1.0, 1.0])


def test_select_reports_every_kind_and_refuses_too_few_children():
    space = load_space("cifar-small")
    top1 = learnable(space)
    children = sample(space, 30, 2)
    x, y = predictor.Featurizer(space)(children), np.array([top1(c) for c in children])
    model, cv = predictor.select(x, y, seed=0, kinds=("ridge",))
    assert model.kind == "ridge" and set(cv["ridge"]) == {"kendall", "spearman", "mae_points"}
    with pytest.raises(ValueError, match="at least 10 children"):
        predictor.cross_validate("ridge", x[:9], y[:9], seed=0)


def cache(tmp_path, model, space, top1):
    return Evaluator(model, space, None, tmp_path / "accuracy.jsonl", data_spec="synthetic", calibration_images=8,
                     batch_size=8, evaluate_one=top1)


def test_the_stored_predictor_round_trips_and_a_stale_one_is_refused(tmp_path):
    space = load_space("cifar-small")
    top1 = learnable(space)
    weights = torch.nn.Linear(2, 2)
    evaluator = cache(tmp_path, weights, space, top1)
    with pytest.raises(PredictorError, match="holds 0 children"):
        fit_on_cache(evaluator, kinds=("ridge",))
    evaluator(sample(space, 24, 3))
    path = tmp_path / "predictor.json"
    # read back from accuracy.jsonl; ridge alone (the MLP is covered above): keep this test quick
    doc = fit_on_cache(cache(tmp_path, weights, space, top1), kinds=("ridge",))
    path.write_text(json.dumps(doc))
    assert doc["children"] == 24 and doc["kind"] == "ridge"
    loaded = load(path, space, cache(tmp_path, weights, space, top1))
    test = sample(space, 10, 4)
    featurize = predictor.Featurizer(space)
    want = predictor.fit("ridge", featurize([c for c, _ in evaluator.known_children()]),
                         [t for _, t in evaluator.known_children()], seed=0).predict(featurize(test))
    np.testing.assert_allclose(loaded.predict(featurize(test)), want, rtol=1e-12)
    grown = cache(tmp_path, weights, space, top1)
    grown(sample(space, 1, 5))  # the cache grew: the stored predictor no longer describes it
    with pytest.raises(PredictorError, match="stale, fitted on 24 children.*holds 25"):
        load(path, space, grown)
    with pytest.raises(PredictorError, match="cache.context' differs in weights:"):  # other weights
        load(path, space, cache(tmp_path, torch.nn.Linear(2, 3), space, top1))
    with pytest.raises(PredictorError, match="space_hash"):
        load(path, load_space("ofa-mbv3"), grown)
    path.write_text("{")
    with pytest.raises(PredictorError, match="predictor.json"):
        load(path, space, grown)


@pytest.mark.parametrize("strategy", ["evolution", "nsga2"])
def test_guided_search_spends_at_most_its_budget_and_keeps_predictions_apart(strategy):
    space = load_space("cifar-small")
    top1 = learnable(space)
    limit = (child_cost(space, space.min()).mflops + child_cost(space, space.max()).mflops) / 2
    calls = []

    def evaluate(children):
        calls.extend(children)
        return [top1(c) for c in children]

    settings = GuidedSettings(initial=4, screen=200)
    docs = [driver.run(strategy, Problem(space, (), max_mflops=limit), evaluate, 12, seed=1, guided=settings)
            for _ in range(2)]
    (result,) = docs[0]["devices"]
    assert len(result["evaluated"]) == 12 and len(calls) == 24  # the budget counts real evaluations only
    assert [p["hash"] for p in result["evaluated"]] == [p["hash"] for p in docs[1]["devices"][0]["evaluated"]]
    assert all(p["mflops"] <= limit for p in result["evaluated"])
    for p in result["evaluated"]:
        assert p["top1_val"] == top1(space.child_from_dict(p["arch"]))  # measured, never predicted
    guided = [p for p in result["evaluated"] if "predicted_top1" in p]
    assert len(guided) >= 6 and any(p["predicted_top1"] != p["top1_val"] for p in guided)
    assert result["predictor"]["rounds"] >= len(guided) and docs[0]["predictor"]["screen"] == 200


def test_guided_search_learns_from_prior_children_first():
    space = load_space("cifar-small")
    top1 = learnable(space)
    prior = [(c, top1(c)) for c in sample(space, 30, 6)]
    doc = driver.run("evolution", Problem(space), lambda cs: [top1(c) for c in cs], 3, seed=0,
                     guided=GuidedSettings(screen=100, explore=0.0), prior=prior)
    (result,) = doc["devices"]
    assert result["predictor"]["prior_children"] == 30
    assert all("predicted_top1" in p for p in result["evaluated"])  # no uniform start: there was data


def test_guided_options_are_checked():
    assert make_guided(["screen=50", "model=mlp"]) == GuidedSettings(screen=50, model="mlp")
    with pytest.raises(SearchError, match="unknown field 'nope'"):
        make_guided(["nope=1"])
    with pytest.raises(SearchError, match="explore"):
        make_guided(["explore=2"])
