"""`bignas predictor`: fit a run's accuracy predictor on its accuracy cache, store it, and load it
only while it is fresh.

RUN/predictor.json holds the fitted model (`predictor.Model`), the cross-validated agreement of
every kind compared, the training-set size, and the cache it was fitted on: the cache's context
(weights digest, data, calibration size, precision) and its digest (`Evaluator.digest`). A
predictor whose cache has grown since, or whose weights changed, is stale: `load` refuses it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from bignas.errors import BignasError
from bignas.io import read_json, write_json
from bignas.search import predictor
from bignas.search.evaluator import Evaluator
from bignas.seeds import derive_seed
from bignas.space import SearchSpace

SCHEMA = 1
DEFAULT_SAMPLES = 100


class PredictorError(BignasError):
    """A predictor that cannot be fitted or used: too few children, stale, another space."""


def fit_on_cache(evaluator: Evaluator, seed: int = 0, kinds: Sequence[str] = predictor.KINDS) -> dict[str, Any]:
    """The predictor document for everything `evaluator`'s cache holds (see the module docstring):
    the best of `kinds` by cross-validated Kendall tau."""
    known = evaluator.known_children()
    if len(known) < predictor.MIN_CHILDREN:
        raise PredictorError(f"{evaluator.path}: the accuracy cache holds {len(known)} children for these weights "
                             f"and data; a predictor needs at least {predictor.MIN_CHILDREN} (use --samples N)")
    featurize = predictor.Featurizer(evaluator.space)
    x, y = featurize([c for c, _ in known]), np.array([t for _, t in known])
    model, cv = predictor.select(x, y, seed, kinds)
    return {"schema": SCHEMA, "space_hash": evaluator.space.hash, "kind": model.kind, "children": len(known),
            "cross_validation": {"folds": predictor.FOLDS, **cv}, "seed": seed,
            "cache": {"context": evaluator.context, "digest": evaluator.digest()}, "model": model.to_dict()}


def load(path: str | Path, space: SearchSpace, evaluator: Evaluator) -> predictor.Model:
    """The stored model, refused when it was fitted for another space or on another cache than
    `evaluator`'s (other weights or data, or fewer children than the cache holds now)."""
    doc = read_json(path, "predictor", PredictorError)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise PredictorError(f"{path}: not a predictor of schema {SCHEMA} (field 'schema')")
    if doc.get("space_hash") != space.hash:
        raise PredictorError(f"{path}: fitted for another search space (field 'space_hash'), not '{space.name}'")
    cache = doc.get("cache", {})
    stored = cache.get("context") if isinstance(cache.get("context"), dict) else {}
    if stored != evaluator.context:
        differ = sorted(k for k in {*stored, *evaluator.context} if stored.get(k) != evaluator.context.get(k))
        raise PredictorError(f"{path}: fitted on accuracies measured otherwise (field 'cache.context' differs in "
                             f"{', '.join(differ)}: other weights, data or evaluation): "
                             f"refit it with 'bignas predictor --run RUN'")
    if cache.get("digest") != evaluator.digest():
        raise PredictorError(f"{path}: stale, fitted on {doc.get('children')} children, and the accuracy cache "
                             f"has changed since (it holds {len(evaluator.known())}): refit it with "
                             f"'bignas predictor --run RUN --samples 0'")
    try:
        return predictor.Model.from_dict(doc["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise PredictorError(f"{path}: field 'model' is malformed ({e})") from None


def predictor_run(run: str | Path, *, samples: int = DEFAULT_SAMPLES, seed: int = 0, data: str | None = None,
                  device: str = "auto", quiet: bool = False) -> dict[str, Any]:
    """Evaluate `samples` random children of the run (seeded; cached ones cost nothing), fit the
    predictor on every child the cache holds, write RUN/predictor.json and return a summary."""
    from bignas.train.distributed import pick_device
    from bignas.train.run_dir import TrainedRun

    if samples < 0:
        raise PredictorError(f"--samples must be 0 or more, got {samples}")
    trained = TrainedRun.open(run, pick_device(device))
    trained.require_supernet("an accuracy predictor")
    data = data or trained.config.data
    dataset = trained.dataset(data)
    rng = random.Random(derive_seed("predictor", seed))
    children = list({c.hash: c for c in (trained.space.sample(rng) for _ in range(samples))}.values())
    start = time.perf_counter()
    with tqdm(total=len(children), unit="child", desc="evaluate", disable=quiet or not samples, dynamic_ncols=True) as bar:
        evaluator = Evaluator(trained.supernet, trained.space, dataset, trained.dir.accuracy_file, data_spec=data,
                              calibration_images=trained.config.eval.calibration_images,
                              batch_size=trained.config.eval.batch_size)
        bar.update(len({c.hash for c in children} & set(evaluator.known())))  # cached: free
        evaluator.on_result = lambda: bar.update(1)
        evaluator(children)
    evaluate_s = time.perf_counter() - start
    start = time.perf_counter()
    doc = fit_on_cache(evaluator, seed)
    fit_s = time.perf_counter() - start
    path = trained.dir.predictor_file
    write_json(path, doc)
    return {"predictor": str(path), "kind": doc["kind"], "children": doc["children"],
            "evaluated_fresh": evaluator.fresh, "evaluate_s": round(evaluate_s, 1), "fit_s": round(fit_s, 1),
            "cross_validation": doc["cross_validation"]}
