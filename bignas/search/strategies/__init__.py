"""The search strategies, by name: `STRATEGIES` is the one list the CLI and the driver read.

A strategy module registers its factory with `@register("name", help=..., settings=...)`; importing
this package imports every strategy module, so they are all registered. Adding a strategy is one
new module here and its name in `_MODULES`.

A strategy's options are a frozen dataclass of defaults (`settings=`), each field built with
`bignas.schema.rules(default, help=..., positive=...)`. `bignas search --option key=value` sets
them; `make_settings` checks them with the one config loader, and search.json records them.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from bignas.schema import describe_options, from_dict, from_options
from bignas.search.strategies.base import NoSettings, StrategyFactory

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    factory: StrategyFactory
    multi_target: bool  # True: one search sees every target (gets the whole Problem)
    help: str  # one line for `bignas search --help`
    settings: type = NoSettings  # a frozen dataclass of the strategy's options, with their defaults

    def describe_settings(self) -> str:
        """`name=default (help)` for each option, for `--help`."""
        return describe_options(self.settings)


STRATEGIES: dict[str, StrategyInfo] = {}


def register(name: str, *, multi_target: bool = False, help: str,
             settings: type = NoSettings) -> Callable[[F], F]:
    """Register a strategy factory `(problem_view, rng, budget, settings) -> Strategy` under `name`."""
    def wrap(factory: F) -> F:
        if name in STRATEGIES:
            raise ValueError(f"a search strategy named {name!r} is already registered "
                             f"({STRATEGIES[name].factory.__module__})")
        STRATEGIES[name] = StrategyInfo(name, factory, multi_target, help, settings)
        return factory
    return wrap


def get_strategy(name: str) -> StrategyInfo:
    if name not in STRATEGIES:
        from bignas.search.problem import SearchError

        raise SearchError(f"unknown strategy {name!r} (expected one of {', '.join(sorted(STRATEGIES))})")
    return STRATEGIES[name]


def make_settings(name: str, options: list[str] | dict[str, Any] | None = None) -> Any:
    """The settings of strategy `name` from `key=value` strings (values read as YAML scalars) or a
    mapping; every key not given keeps its default. Unknown keys and bad values are a SearchError."""
    from bignas.search.problem import SearchError

    info = get_strategy(name)
    if isinstance(options, dict):
        return from_dict(info.settings, options, f"--option of strategy {name!r}", SearchError)
    return from_options(info.settings, options or [], f"--option of strategy {name!r}", SearchError)


def settings_dict(settings: Any) -> dict[str, Any]:
    return dataclasses.asdict(settings)


_MODULES = ("coarse_to_fine", "random", "evolution", "nsga2", "reinforce")
for _module in _MODULES:
    importlib.import_module(f"{__name__}.{_module}")
