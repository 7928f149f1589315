"""Search spaces and child architectures as plain data (no torch).

A search space is a YAML file parsed once into frozen dataclasses; a child is one choice per
elastic dimension. Everything that depends only on the architecture lives here: validation,
sampling, mutation, crossover, JSON round-trip, hashing, and the per-block *plan* that the
supernet, the static child, the cost model and the latency tables all read.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Literal, get_args

from bignas.errors import BignasError
from bignas.io import digest, read_json
from bignas.schema import Invalid, from_dict, load_yaml, rules, shipped

Activation = Literal["relu", "hswish", "swish"]
Gate = Literal["sigmoid", "hsigmoid"]
Stride = Literal[1, 2]
ACTIVATIONS, GATES = get_args(Activation), get_args(Gate)
OPTIONS = {"positive": True, "unique": True, "non_empty": True}  # an elastic choice: distinct sizes
MAX_RESOLUTION = 4096  # pixels, as the ONNX export's dynamic size allows


class SpaceError(BignasError):
    """A search space file or a child architecture is invalid; the message names file and field."""


# --------------------------------------------------------------------------------------------
# Space
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StemSpace:
    widths: tuple[int, ...] = rules(**OPTIONS)
    kernel: int = rules(positive=True, odd=True)
    stride: Stride
    act: Activation


@dataclass(frozen=True)
class StageSpace:
    widths: tuple[int, ...] = rules(**OPTIONS)
    depths: tuple[int, ...] = rules(**OPTIONS)
    kernels: tuple[int, ...] = rules(**OPTIONS, odd=True)
    expands: tuple[int, ...] = rules(**OPTIONS)
    stride: Stride
    se: bool
    act: Activation

    def __post_init__(self) -> None:
        if 1 in self.expands and len(self.expands) > 1:
            raise Invalid("expands", "expand ratio 1 (no expansion conv) cannot be mixed with other ratios "
                                     "in one stage")

    @property
    def has_expand_conv(self) -> bool:
        # Expand ratio 1 means no 1x1 expansion at all (MobileNetV2's first block).
        return self.expands != (1,)


@dataclass(frozen=True)
class SESpace:
    reduction: int = rules(positive=True)
    # "expanded": mid channels / reduction (once-for-all); "input": block input (EfficientNet)
    relative_to: Literal["expanded", "input"]
    act: Activation
    gate: Gate


@dataclass(frozen=True)
class HeadSpace:
    widths: tuple[int, ...] = rules(**OPTIONS)  # 1x1 conv + BN + act before global pooling
    act: Activation
    # 1x1 conv + act after pooling (MobileNetV3); () for none
    mix_widths: tuple[int, ...] = rules((), positive=True, unique=True)


@dataclass(frozen=True)
class SearchSpace:
    name: str = rules(name=True)
    resolutions: tuple[int, ...] = rules(**OPTIONS, max=MAX_RESOLUTION)
    in_channels: int = rules(positive=True)
    num_classes: int = rules(positive=True)
    channel_divisor: int = rules(positive=True)
    stem: StemSpace
    stages: tuple[StageSpace, ...] = rules(non_empty=True)
    se: SESpace
    head: HeadSpace

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """Stable hash of everything that shapes a network of this space."""
        return _digest(self.to_dict())

    def max(self) -> "Child":
        return Child(
            resolution=max(self.resolutions),
            stem=max(self.stem.widths),
            stages=tuple(
                StageChoice(max(s.depths), max(s.widths), (max(s.kernels),) * max(s.depths),
                            (max(s.expands),) * max(s.depths))
                for s in self.stages
            ),
            head=max(self.head.widths),
            mix=max(self.head.mix_widths) if self.head.mix_widths else None,
        )

    def min(self) -> "Child":
        return Child(
            resolution=min(self.resolutions),
            stem=min(self.stem.widths),
            stages=tuple(
                StageChoice(min(s.depths), min(s.widths), (min(s.kernels),) * min(s.depths),
                            (min(s.expands),) * min(s.depths))
                for s in self.stages
            ),
            head=min(self.head.widths),
            mix=min(self.head.mix_widths) if self.head.mix_widths else None,
        )

    def sample(self, rng: random.Random) -> "Child":
        """A uniformly random child (each choice independent and uniform)."""
        stages = []
        for s in self.stages:
            depth = rng.choice(s.depths)
            stages.append(StageChoice(
                depth, rng.choice(s.widths),
                tuple(rng.choice(s.kernels) for _ in range(depth)),
                tuple(rng.choice(s.expands) for _ in range(depth)),
            ))
        return Child(
            resolution=rng.choice(self.resolutions),
            stem=rng.choice(self.stem.widths),
            stages=tuple(stages),
            head=rng.choice(self.head.widths),
            mix=rng.choice(self.head.mix_widths) if self.head.mix_widths else None,
        )

    def distinct_samples(self, rng: random.Random, n: int, first: Iterable["Child"] = (),
                         taken: Collection[str] = ()) -> list["Child"]:
        """`first`, then uniformly random children: `n` distinct in all, none whose hash is in
        `taken`; fewer where 100 n draws do not find that many (a space of few children)."""
        children = {c.hash: c for c in first}
        for _ in range(100 * n):
            if len(children) >= n:
                break
            child = self.sample(rng)
            if child.hash not in taken:
                children.setdefault(child.hash, child)
        return list(children.values())[:n]

    def mutate(self, child: "Child", rng: random.Random, prob: float = 0.1) -> "Child":
        """Resample each choice of `child` independently with probability `prob`."""
        def pick(current, options):
            return rng.choice(options) if rng.random() < prob else current

        stages = []
        for s, c in zip(self.stages, child.stages):
            depth = pick(c.depth, s.depths)
            kernels = [pick(k, s.kernels) for k in c.kernels[:depth]]
            expands = [pick(e, s.expands) for e in c.expands[:depth]]
            # Blocks that a deeper depth switches on get fresh random choices.
            kernels += [rng.choice(s.kernels) for _ in range(depth - len(kernels))]
            expands += [rng.choice(s.expands) for _ in range(depth - len(expands))]
            stages.append(StageChoice(depth, pick(c.width, s.widths), tuple(kernels), tuple(expands)))
        return Child(
            resolution=pick(child.resolution, self.resolutions),
            stem=pick(child.stem, self.stem.widths),
            stages=tuple(stages),
            head=pick(child.head, self.head.widths),
            mix=pick(child.mix, self.head.mix_widths) if self.head.mix_widths else None,
        )

    def crossover(self, a: "Child", b: "Child", rng: random.Random) -> "Child":
        """Each choice taken from `a` or `b` with equal probability."""
        def pick(x, y):
            return x if rng.random() < 0.5 else y

        stages = []
        for s, ca, cb in zip(self.stages, a.stages, b.stages):
            depth = pick(ca.depth, cb.depth)
            kernels, expands = [], []
            for i in range(depth):
                # A block only one parent has is inherited from that parent.
                ka = ca.kernels[i] if i < ca.depth else cb.kernels[i]
                kb = cb.kernels[i] if i < cb.depth else ca.kernels[i]
                ea = ca.expands[i] if i < ca.depth else cb.expands[i]
                eb = cb.expands[i] if i < cb.depth else ca.expands[i]
                kernels.append(pick(ka, kb))
                expands.append(pick(ea, eb))
            stages.append(StageChoice(depth, pick(ca.width, cb.width), tuple(kernels), tuple(expands)))
        return Child(
            resolution=pick(a.resolution, b.resolution),
            stem=pick(a.stem, b.stem),
            stages=tuple(stages),
            head=pick(a.head, b.head),
            mix=pick(a.mix, b.mix),
        )

    def child_count(self) -> int:
        """How many distinct children the space has: a stage of depth d has (kernels × expands)^d
        block choices, the blocks beyond d do not exist (unlike `decisions`, which counts them)."""
        count = len(self.resolutions) * len(self.stem.widths) * len(self.head.widths) * max(1, len(self.head.mix_widths))
        for s in self.stages:
            count *= len(s.widths) * sum((len(s.kernels) * len(s.expands)) ** d for d in s.depths)
        return count

    def decisions(self) -> list[tuple[str, tuple]]:
        """The fixed-length genome: (name, sorted options) of every choice, blocks up to each
        stage's maximum depth included (see `encode`)."""
        return list(self._decisions)

    def decision_blocks(self) -> list[tuple[int, int] | None]:
        """Per decision of `decisions()`: (stage i, block j) for block j's kernel or expand of stage i,
        which shapes a child only when that stage's depth is greater than j; None for the others."""
        out: list[tuple[int, int] | None] = []
        for name, _ in self._decisions:
            m = re.fullmatch(r"stages\[(\d+)\]\.(?:kernels|expands)\[(\d+)\]", name)
            out.append((int(m[1]), int(m[2])) if m else None)
        return out

    @functools.cached_property  # encode / decode run once per candidate of a search; a space never changes
    def _decisions(self) -> tuple[tuple[str, tuple], ...]:
        out: list[tuple[str, tuple]] = [("resolution", tuple(sorted(self.resolutions))),
                                        ("stem", tuple(sorted(self.stem.widths)))]
        for i, s in enumerate(self.stages):
            out += [(f"stages[{i}].depth", tuple(sorted(s.depths))), (f"stages[{i}].width", tuple(sorted(s.widths)))]
            out += [(f"stages[{i}].kernels[{j}]", tuple(sorted(s.kernels))) for j in range(max(s.depths))]
            out += [(f"stages[{i}].expands[{j}]", tuple(sorted(s.expands))) for j in range(max(s.depths))]
        out.append(("head", tuple(sorted(self.head.widths))))
        if self.head.mix_widths:
            out.append(("mix", tuple(sorted(self.head.mix_widths))))
        return tuple(out)

    def encode(self, child: "Child") -> tuple[int, ...]:
        """`child` as one option index per decision; blocks beyond a stage's depth encode as 0."""
        self.validate(child)
        values: dict[str, Any] = {"resolution": child.resolution, "stem": child.stem, "head": child.head,
                                  "mix": child.mix}
        for i, c in enumerate(child.stages):
            values[f"stages[{i}].depth"], values[f"stages[{i}].width"] = c.depth, c.width
            for j in range(c.depth):
                values[f"stages[{i}].kernels[{j}]"], values[f"stages[{i}].expands[{j}]"] = c.kernels[j], c.expands[j]
        return tuple(options.index(values[name]) if name in values else 0 for name, options in self._decisions)

    def decode(self, codes: Any) -> "Child":
        """The child of `encode`'s codes (codes of blocks beyond a stage's depth are ignored)."""
        decisions = self._decisions
        codes = tuple(codes)
        if len(codes) != len(decisions):
            raise SpaceError(f"space '{self.name}': an encoded child has {len(decisions)} codes, got {len(codes)}")
        values = {}
        for (name, options), code in zip(decisions, codes):
            code = code.__index__() if hasattr(code, "__index__") and not isinstance(code, bool) else code
            if not isinstance(code, int) or not 0 <= code < len(options):  # numpy / torch integers pass
                raise SpaceError(f"space '{self.name}': code {code!r} of decision '{name}' is out of range "
                                 f"(0..{len(options) - 1} for {list(options)})")
            values[name] = options[code]
        stages = []
        for i in range(len(self.stages)):
            depth = values[f"stages[{i}].depth"]
            stages.append(StageChoice(depth, values[f"stages[{i}].width"],
                                      tuple(values[f"stages[{i}].kernels[{j}]"] for j in range(depth)),
                                      tuple(values[f"stages[{i}].expands[{j}]"] for j in range(depth))))
        return Child(resolution=values["resolution"], stem=values["stem"], stages=tuple(stages),
                     head=values["head"], mix=values.get("mix"))

    def validate(self, child: "Child", source: str = "architecture") -> "Child":
        """Return `child` if every choice is allowed by this space, else raise SpaceError."""
        def bad(field: str, value, allowed) -> SpaceError:
            return SpaceError(f"{source}: field '{field}' = {value!r} is not allowed in space "
                              f"'{self.name}' (allowed: {list(allowed)})")

        if child.resolution not in self.resolutions:
            raise bad("resolution", child.resolution, self.resolutions)
        if child.stem not in self.stem.widths:
            raise bad("stem", child.stem, self.stem.widths)
        if len(child.stages) != len(self.stages):
            raise SpaceError(f"{source}: field 'stages' has {len(child.stages)} entries, space "
                             f"'{self.name}' has {len(self.stages)} stages")
        for i, (s, c) in enumerate(zip(self.stages, child.stages)):
            where = f"stages[{i}]"
            if c.depth not in s.depths:
                raise bad(f"{where}.depth", c.depth, s.depths)
            if c.width not in s.widths:
                raise bad(f"{where}.width", c.width, s.widths)
            for name, values, allowed in (("kernels", c.kernels, s.kernels),
                                          ("expands", c.expands, s.expands)):
                if len(values) != c.depth:
                    raise SpaceError(f"{source}: field '{where}.{name}' has {len(values)} entries "
                                     f"but depth is {c.depth}")
                for j, v in enumerate(values):
                    if v not in allowed:
                        raise bad(f"{where}.{name}[{j}]", v, allowed)
        if child.head not in self.head.widths:
            raise bad("head", child.head, self.head.widths)
        if self.head.mix_widths:
            if child.mix not in self.head.mix_widths:
                raise bad("mix", child.mix, self.head.mix_widths)
        elif child.mix is not None:
            raise SpaceError(f"{source}: field 'mix' must be null: space '{self.name}' has no mix layer")
        return child

    def child_from_dict(self, data: Any, source: str = "architecture") -> "Child":
        """Parse and validate a child from its JSON object (see `Child.to_dict`)."""
        child = _parse_child(data, source)
        if data.get("space", self.name) != self.name:
            raise SpaceError(f"{source}: field 'space' is '{data['space']}', expected '{self.name}'")
        return self.validate(child, source)

    def named_child(self, arch: str, rng: random.Random | None = None) -> "Child":
        """The child an `--arch` flag names: "max", "min", "random" (drawn from `rng`, where the
        command offers it) or a child architecture JSON file."""
        if arch == "max":
            return self.max()
        if arch == "min":
            return self.min()
        if arch == "random" and rng is not None:
            return self.sample(rng)
        return self.load_child(arch)

    def load_child(self, path: str | Path) -> "Child":
        """Read a child architecture JSON file and validate it against this space."""
        data = read_json(path, "architecture file", SpaceError)
        return self.child_from_dict(data, str(path))


# --------------------------------------------------------------------------------------------
# Child
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageChoice:
    depth: int
    width: int
    kernels: tuple[int, ...]  # one per active block (len == depth)
    expands: tuple[int, ...]


@dataclass(frozen=True)
class Child:
    resolution: int
    stem: int
    stages: tuple[StageChoice, ...]
    head: int
    mix: int | None = None

    def to_dict(self, space: SearchSpace | None = None) -> dict[str, Any]:
        stages = [{"depth": s.depth, "width": s.width, "kernels": list(s.kernels), "expands": list(s.expands)}
                  for s in self.stages]  # by hand: dataclasses.asdict was a tenth of the search overhead
        d: dict[str, Any] = {"resolution": self.resolution, "stem": self.stem, "stages": stages,
                             "head": self.head, "mix": self.mix}
        return {"space": space.name, **d} if space is not None else d

    @functools.cached_property  # a search asks for it many times per candidate; a child never changes
    def hash(self) -> str:
        """Stable identifier of this architecture (independent of the space name)."""
        return _digest(self.to_dict())


def _parse_child(data: Any, source: str) -> Child:
    # "space" names the space the child was saved for: checked by `child_from_dict`.
    fields = {k: v for k, v in data.items() if k != "space"} if isinstance(data, dict) else data
    return from_dict(Child, fields, source, SpaceError)


# --------------------------------------------------------------------------------------------
# Loading spaces
# --------------------------------------------------------------------------------------------


def space_names() -> list[str]:
    """Names of the search spaces shipped with the package."""
    return shipped("spaces")


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a shipped space by name (`ofa-mbv3`) or any space YAML by path."""
    return parse_space(*load_yaml(name_or_path, "spaces", SpaceError))


def parse_space(data: Any, source: str) -> SearchSpace:
    return from_dict(SearchSpace, data, source, SpaceError)


def iter_spaces() -> Iterator[SearchSpace]:
    for name in space_names():
        yield load_space(name)


def _digest(obj: Any) -> str:
    return digest(json.dumps(obj, sort_keys=True, separators=(",", ":")))
