"""The search strategies, by name: `STRATEGIES` is the one list the CLI and the driver read.

A strategy module registers its factory with `@register("name", help=...)`; importing this
package imports every strategy module, so they are all registered. Adding a strategy is one new
module here and its name in `_MODULES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, TypeVar

from bignas.search.strategies.base import StrategyFactory

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    factory: StrategyFactory
    multi_target: bool  # True: one search sees every target (gets the whole Problem)
    help: str  # one line for `bignas search --help`


STRATEGIES: dict[str, StrategyInfo] = {}


def register(name: str, *, multi_target: bool = False, help: str) -> Callable[[F], F]:
    """Register a strategy factory `(problem_view, rng, budget) -> Strategy` under `name`."""
    def wrap(factory: F) -> F:
        if name in STRATEGIES:
            raise ValueError(f"a search strategy named {name!r} is already registered "
                             f"({STRATEGIES[name].factory.__module__})")
        STRATEGIES[name] = StrategyInfo(name, factory, multi_target, help)
        return factory
    return wrap


def get_strategy(name: str) -> StrategyInfo:
    if name not in STRATEGIES:
        from bignas.search.problem import SearchError

        raise SearchError(f"unknown strategy {name!r} (expected one of {', '.join(sorted(STRATEGIES))})")
    return STRATEGIES[name]


_MODULES = ("coarse_to_fine", "random")
for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")
