"""Predictor-guided search: any strategy screens many candidates on an accuracy predictor, and only
the most promising are evaluated (the loop of DyNAS-T's LINAS, Cummings et al., "A Hardware-Aware
Framework for Accelerating Neural Architecture Search Across Modalities", 2022).

`Guided` wraps a strategy and follows the same ask/tell protocol, so the driver still owns the
budget (real evaluations only), dedup and feasibility. Its loop:
1. The first `initial` children are the wrapped strategy's own first proposals, evaluated for
   real (nothing to fit yet; a strategy's start, e.g. the fullest feasible skeleton, is already
   its best guess), unless `prior` children (the run's accuracy cache) are known already.
2. Each round: fit the predictor (`predictor.fit`) on every measured child (the prior and the
   search's own), run the wrapped strategy for `screen` candidates with the predictor standing in
   for evaluation (measured children keep their measured top-1), and evaluate the `per_round` best
   predicted ones not measured yet. A share `explore` of the picks is a uniform draw among the
   screened candidates instead, so the predictor also learns where it is unsure rather than closing
   in on its own mistakes.
3. With several targets (a multi-target strategy), round r picks for target r mod T: the best
   predicted candidate that meets that target's budgets.

The predictor's guesses are never reported as accuracy: search.json gives each evaluated child its
measured `top1_val`, and beside it `predicted_top1`, what the predictor said when it was picked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from bignas.schema import from_options, rules
from bignas.search.strategies.base import Proposals, Strategy
from bignas.space import Child

if TYPE_CHECKING:
    from bignas.search.problem import Problem, Target


@dataclass(frozen=True)
class GuidedSettings:
    initial: int = rules(4, positive=True, help="the strategy's own first children, evaluated before the first "
                                                "fit (when no prior children are known)")
    screen: int = rules(500, positive=True, help="candidates the strategy screens on the predictor per round")
    per_round: int = rules(1, positive=True, help="children evaluated per round: the best predicted")
    explore: float = rules(0.2, min=0.0, max=1.0, help="share of picks drawn uniformly among the screened "
                                                      "candidates instead of the best predicted")
    model: Literal["ridge", "mlp"] = rules("ridge", help="the predictor (see 'bignas predictor')")


def make_guided(options: list[str]) -> GuidedSettings:
    """GuidedSettings from `key=value` strings (`--predictor-option`); unknown keys and bad values are refused."""
    from bignas.search.problem import SearchError

    return from_options(GuidedSettings, options, "--predictor-option", SearchError)


# (evaluate, budget, rng) -> the children the wrapped strategy evaluated, in order: the driver's loop
Screen = Callable[[Callable[[list[Child]], list[float]], int, random.Random], list[Child]]


class Guided:
    def __init__(self, problem: Problem, targets: Sequence[Target | None], rng: random.Random,
                 settings: GuidedSettings, start: Strategy, screen: Screen,
                 prior: Sequence[tuple[Child, float]] = ()) -> None:
        """`start`: the wrapped strategy, asked for the first children; `screen`: one search of it
        on a stand-in accuracy function."""
        self.problem, self.space, self.targets = problem, problem.space, list(targets)
        self.rng, self.s, self.start, self.screen = rng, settings, start, screen
        self.starting = False  # the last ask was the start's
        from bignas.search import predictor  # here, not at the top: the CLI imports the settings only

        self.predictor = predictor
        self.featurize = predictor.Featurizer(self.space)
        self.measured: dict[str, tuple[Child, float]] = {c.hash: (c, t) for c, t in prior}
        self.prior = len(self.measured)
        self.proposals = Proposals(self.space, self.fits_any, rng)
        self.proposals.seen.update(self.measured)  # a known child is never asked again
        self.predicted: dict[str, float] = {}  # hash -> the prediction it was picked on
        self.rounds = self.screened = 0

    def fits_any(self, child: Child) -> bool:
        return any(self.problem.fits(child, t) for t in self.targets)

    def ask(self, n: int) -> list[Child]:
        need = max(self.s.initial, 2) - len(self.measured)
        if need > 0:  # too little to fit yet: the strategy's own start (a uniform child if it has none)
            asked = [c for c in self.start.ask(min(n, need)) if c.hash not in self.proposals.seen]
            self.starting = bool(asked)
            return self.proposals.extend(asked, len(asked) or 1)
        self.starting = False
        model = self._fit()
        guess: dict[str, float] = {}  # this round's predictions

        def surrogate(children: list[Child]) -> list[float]:
            fresh = [c for c in children if c.hash not in self.measured and c.hash not in guess]
            if fresh:
                for c, p in zip(fresh, model.predict(self.featurize(fresh))):
                    guess[c.hash] = float(p)
            return [self.measured[c.hash][1] if c.hash in self.measured else guess[c.hash] for c in children]

        candidates = [c for c in self.screen(surrogate, self.s.screen, random.Random(self.rng.getrandbits(62)))
                      if c.hash not in self.measured and c.hash not in self.proposals.seen]
        self.screened += len(candidates)
        picks: list[Child] = []
        for _ in range(min(n, self.s.per_round)):
            target = self.targets[self.rounds % len(self.targets)]
            self.rounds += 1
            picked = {c.hash for c in picks}
            pool = [c for c in candidates if c.hash not in picked and self.problem.fits(c, target)]
            if not pool:
                continue
            explore = self.rng.random() < self.s.explore
            pick = self.rng.choice(pool) if explore else max(pool, key=lambda c: guess[c.hash])
            self.predicted[pick.hash] = guess[pick.hash]
            picks.append(pick)
        return self.proposals.extend(picks, max(len(picks), 1))  # nothing screened: one uniform feasible child

    def _fit(self) -> Any:
        """The predictor (`predictor.Model`) fitted on every measured child."""
        children = [c for c, _ in self.measured.values()]
        y = [t for _, t in self.measured.values()]
        return self.predictor.fit(self.s.model, self.featurize(children), y, self.rng.getrandbits(31))

    def tell(self, results: Sequence[Any]) -> None:
        for e in results:
            self.measured[e.child.hash] = (e.child, e.top1)
        if self.starting:
            self.start.tell(results)

    def notes(self) -> dict[str, Any]:
        """What search.json reports of the guidance (the predictions kept apart from the measurements)."""
        return {"predicted": dict(self.predicted),
                "predictor": {"model": self.s.model, "prior_children": self.prior, "rounds": self.rounds,
                              "screened": self.screened}}
