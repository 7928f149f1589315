"""Low fidelity: successive halving over any strategy's candidates (Jamieson & Talwalkar,
"Non-stochastic Best Arm Identification and Hyperparameter Optimization", AISTATS 2016; the rungs
of Hyperband, Li et al., JMLR 2018).

The strategy searches as usual, with `budget` candidates, but each is scored at the lowest
fidelity: BN recalibration on fewer calibration images and top-1 on a fixed subset of the
validation images (`Split.subset`). Then, rung by rung, the best `keep` share of the previous
rung's children (by its accuracy; for several targets, the best share of those meeting each
target's budgets) is evaluated at the next fidelity; the last rung is the full estimate. Only
full-fidelity accuracies are reported as `top1_val`, and the best child is picked among them;
the lower rungs' accuracies stay apart, under each target's `fidelity.screened`.

The defaults come from tools/bench_fidelity.py (see the README, "Cheaper estimation").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from bignas.schema import Invalid, from_options, rules
from bignas.space import Child

if TYPE_CHECKING:  # the CLI imports the settings only: the search machinery loads when a search runs
    from bignas.search.problem import Problem, Search

Evaluate = Callable[[list[Child]], list[float]]


@dataclass(frozen=True)
class HalvingSettings:
    val_images: tuple[int, ...] = rules((128,), positive=True, non_empty=True,
                                        help="val images of each lower rung, lowest first (the last rung: all)")
    calibration_images: tuple[int, ...] = rules((64,), positive=True, non_empty=True,
                                                help="BN calibration images of each lower rung")
    keep: float = rules(0.2, positive=True, max=1.0, help="share of a rung's children promoted to the next")

    def __post_init__(self) -> None:
        if len(self.val_images) != len(self.calibration_images):
            raise Invalid("calibration_images", f"one per rung of val_images ({len(self.val_images)}), "
                                                f"got {len(self.calibration_images)}")


def make_halving(options: list[str]) -> HalvingSettings:
    """HalvingSettings from `key=value` strings (`--fidelity-option`); unknown keys and bad values are refused."""
    from bignas.search.problem import SearchError

    return from_options(HalvingSettings, options, "--fidelity-option", SearchError)


def promote(problem: Problem, searches: Sequence[Search], evaluates: Sequence[Evaluate],
            keep: float) -> list[Search]:
    """Each search's children promoted rung by rung (`evaluates[0]` scored them already; the last
    evaluate is the full estimate): the same searches with only full-fidelity children as `evaluated`."""
    from bignas.search.problem import Evaluated, Search

    out = []
    for search in searches:
        scores: dict[str, list[float]] = {e.child.hash: [e.top1] for e in search.evaluated}
        rungs = [{"children": len(search.evaluated), "evaluation_s": round(search.eval_s, 4)}]
        alive, eval_s = [e.child for e in search.evaluated], search.eval_s
        for evaluate in evaluates[1:]:
            alive = _best_share(problem, search, alive, {h: s[-1] for h, s in scores.items()}, keep)
            t0 = time.perf_counter()
            for child, top1 in zip(alive, evaluate(alive)):
                scores[child.hash].append(top1)
            spent = time.perf_counter() - t0
            eval_s += spent
            rungs.append({"children": len(alive), "evaluation_s": round(spent, 4)})
        full = [Evaluated(c, scores[c.hash][-1], problem.costs(c)) for c in alive]
        screened = [{"hash": h, "top1_low": s[:-1] if len(s) == len(evaluates) else s} for h, s in scores.items()]
        notes = {**search.notes, "fidelity": {"rungs": rungs, "screened": screened}}
        out.append(Search(search.strategy, search.targets, full, eval_s, search.overhead_s, search.considered, notes))
    return out


def _best_share(problem: Problem, search: Search, children: list[Child], top1: dict[str, float],
                keep: float) -> list[Child]:
    """The best ceil(keep * n) of `children` by `top1`; with several targets, that share of the
    children meeting each target's budgets (their union, in order of `children`)."""
    chosen: set[str] = set()
    for target in search.targets:
        pool = [c for c in children if len(search.targets) == 1 or not problem.violations(c, target)]
        chosen.update(pool[i].hash for i in best_share([top1[c.hash] for c in pool], keep))
    return [c for c in children if c.hash in chosen]


def best_share(scores: Sequence[float], keep: float) -> list[int]:
    """Positions of the best ceil(keep * n) `scores`, best first; among equals, the earlier."""
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable
    return ranked[:math.ceil(keep * len(scores))]


def rung_settings(settings: HalvingSettings) -> list[dict[str, Any]]:
    """(val_images, calibration_images) of each lower rung, for the evaluators and search.json."""
    return [{"val_images": v, "calibration_images": c} for v, c in zip(settings.val_images, settings.calibration_images)]
