"""Search spaces and child architectures as plain data (no torch).

A search space is a YAML file parsed once into frozen dataclasses; a child is one choice per
elastic dimension. Everything that depends only on the architecture lives here: validation,
sampling, mutation, crossover, JSON round-trip, hashing, and the per-block *plan* that the
supernet, the static child, the cost model and the latency tables all read.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from bignas.errors import BignasError, check_keys
from bignas.io import digest, read_json

ACTIVATIONS = ("relu", "hswish", "swish")
GATES = ("sigmoid", "hsigmoid")


class SpaceError(BignasError):
    """A search space file or a child architecture is invalid; the message names file and field."""


# --------------------------------------------------------------------------------------------
# Space
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StemSpace:
    widths: tuple[int, ...]
    kernel: int
    stride: int
    act: str


@dataclass(frozen=True)
class StageSpace:
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    stride: int
    se: bool
    act: str

    @property
    def has_expand_conv(self) -> bool:
        # Expand ratio 1 means no 1x1 expansion at all (MobileNetV2's first block).
        return self.expands != (1,)


@dataclass(frozen=True)
class SESpace:
    reduction: int
    relative_to: str  # "expanded": mid channels / reduction (once-for-all); "input": block input (EfficientNet)
    act: str
    gate: str


@dataclass(frozen=True)
class HeadSpace:
    widths: tuple[int, ...]  # 1x1 conv + BN + act before global pooling
    mix_widths: tuple[int, ...]  # 1x1 conv + act after pooling (MobileNetV3); () for none
    act: str


@dataclass(frozen=True)
class SearchSpace:
    name: str
    resolutions: tuple[int, ...]
    in_channels: int
    num_classes: int
    channel_divisor: int
    stem: StemSpace
    stages: tuple[StageSpace, ...]
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

    def at_levels(self, resolution: int, depth: float, width: float, kernel: float, expand: float) -> "Child":
        """The child that takes, in every stage, the option at the same relative position of each
        choice (0 = smallest, 1 = largest): a skeleton of the coarse search grid."""
        def at(options, level):
            return sorted(options)[round(level * (len(options) - 1))]

        stages = tuple(
            StageChoice(at(s.depths, depth), at(s.widths, width), (at(s.kernels, kernel),) * at(s.depths, depth),
                        (at(s.expands, expand),) * at(s.depths, depth))
            for s in self.stages)
        return Child(resolution=resolution, stem=at(self.stem.widths, width), stages=stages,
                     head=at(self.head.widths, width),
                     mix=at(self.head.mix_widths, width) if self.head.mix_widths else None)

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
    mix: int | None

    def to_dict(self, space: SearchSpace | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"resolution": self.resolution, "stem": self.stem,
                             "stages": [dataclasses.asdict(s) for s in self.stages],
                             "head": self.head, "mix": self.mix}
        for s in d["stages"]:
            s["kernels"], s["expands"] = list(s["kernels"]), list(s["expands"])
        return {"space": space.name, **d} if space is not None else d

    @property
    def hash(self) -> str:
        """Stable identifier of this architecture (independent of the space name)."""
        return _digest(self.to_dict())


_CHILD_KEYS = {"space", "resolution", "stem", "stages", "head", "mix"}
_STAGE_KEYS = {"depth", "width", "kernels", "expands"}


def _parse_child(data: Any, source: str) -> Child:
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a JSON object, got {type(data).__name__}")
    _check_keys(data, _CHILD_KEYS, {"resolution", "stem", "stages", "head"}, source, "")
    stages = data["stages"]
    if not isinstance(stages, list):
        raise SpaceError(f"{source}: field 'stages' must be a list")
    parsed = []
    for i, s in enumerate(stages):
        if not isinstance(s, dict):
            raise SpaceError(f"{source}: field 'stages[{i}]' must be an object")
        _check_keys(s, _STAGE_KEYS, _STAGE_KEYS, source, f"stages[{i}].")
        parsed.append(StageChoice(
            _int(s["depth"], source, f"stages[{i}].depth"),
            _int(s["width"], source, f"stages[{i}].width"),
            _ints(s["kernels"], source, f"stages[{i}].kernels", unique=False),
            _ints(s["expands"], source, f"stages[{i}].expands", unique=False),
        ))
    mix = data.get("mix")
    return Child(
        resolution=_int(data["resolution"], source, "resolution"),
        stem=_int(data["stem"], source, "stem"),
        stages=tuple(parsed),
        head=_int(data["head"], source, "head"),
        mix=None if mix is None else _int(mix, source, "mix"),
    )


# --------------------------------------------------------------------------------------------
# Loading spaces
# --------------------------------------------------------------------------------------------


def space_names() -> list[str]:
    """Names of the search spaces shipped with the package."""
    folder = resources.files("bignas") / "spaces"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a shipped space by name (`ofa-mbv3`) or any space YAML by path."""
    import yaml

    text_path = Path(name_or_path)
    if text_path.suffix in (".yaml", ".yml"):
        source = str(text_path)
        try:
            text = text_path.read_text()
        except FileNotFoundError:
            raise SpaceError(f"{text_path}: no such search-space file") from None
    else:
        if str(name_or_path) not in space_names():
            raise SpaceError(f"unknown search space '{name_or_path}' (shipped: {space_names()})")
        source = f"bignas/spaces/{name_or_path}.yaml"
        text = (resources.files("bignas") / "spaces" / f"{name_or_path}.yaml").read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{source}: malformed YAML ({e})") from None
    return parse_space(data, source)


def parse_space(data: Any, source: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping at the top level")
    keys = {"name", "resolutions", "in_channels", "num_classes", "channel_divisor", "stem",
            "stages", "se", "head"}
    _check_keys(data, keys, keys, source, "")
    stem = data["stem"]
    _check_keys(stem, {"widths", "kernel", "stride", "act"}, {"widths", "kernel", "stride", "act"},
                source, "stem.")
    se = data["se"]
    se_keys = {"reduction", "relative_to", "act", "gate"}
    _check_keys(se, se_keys, se_keys, source, "se.")
    head = data["head"]
    _check_keys(head, {"widths", "mix_widths", "act"}, {"widths", "act"}, source, "head.")
    if not isinstance(data["stages"], list) or not data["stages"]:
        raise SpaceError(f"{source}: field 'stages' must be a non-empty list")
    stage_keys = {"widths", "depths", "kernels", "expands", "stride", "se", "act"}
    stages = []
    for i, s in enumerate(data["stages"]):
        where = f"stages[{i}]."
        _check_keys(s, stage_keys, stage_keys, source, where)
        kernels = _ints(s["kernels"], source, where + "kernels", positive=True)
        if any(k % 2 == 0 for k in kernels):
            raise SpaceError(f"{source}: field '{where}kernels' must hold odd sizes, got {list(kernels)}")
        expands = _ints(s["expands"], source, where + "expands", positive=True)
        if 1 in expands and len(expands) > 1:
            raise SpaceError(f"{source}: field '{where}expands': expand ratio 1 (no expansion conv) "
                             f"cannot be mixed with other ratios in one stage")
        stages.append(StageSpace(
            widths=_ints(s["widths"], source, where + "widths", positive=True),
            depths=_ints(s["depths"], source, where + "depths", positive=True),
            kernels=kernels,
            expands=expands,
            stride=_choice(s["stride"], (1, 2), source, where + "stride"),
            se=_bool(s["se"], source, where + "se"),
            act=_choice(s["act"], ACTIVATIONS, source, where + "act"),
        ))
    return SearchSpace(
        name=_str(data["name"], source, "name"),
        resolutions=_ints(data["resolutions"], source, "resolutions", positive=True),
        in_channels=_int(data["in_channels"], source, "in_channels", positive=True),
        num_classes=_int(data["num_classes"], source, "num_classes", positive=True),
        channel_divisor=_int(data["channel_divisor"], source, "channel_divisor", positive=True),
        stem=StemSpace(
            widths=_ints(stem["widths"], source, "stem.widths", positive=True),
            kernel=_int(stem["kernel"], source, "stem.kernel", positive=True),
            stride=_choice(stem["stride"], (1, 2), source, "stem.stride"),
            act=_choice(stem["act"], ACTIVATIONS, source, "stem.act"),
        ),
        stages=tuple(stages),
        se=SESpace(
            reduction=_int(se["reduction"], source, "se.reduction", positive=True),
            relative_to=_choice(se["relative_to"], ("expanded", "input"), source, "se.relative_to"),
            act=_choice(se["act"], ACTIVATIONS, source, "se.act"),
            gate=_choice(se["gate"], GATES, source, "se.gate"),
        ),
        head=HeadSpace(
            widths=_ints(head["widths"], source, "head.widths", positive=True),
            mix_widths=_ints(head.get("mix_widths", []), source, "head.mix_widths", positive=True,
                             allow_empty=True),
            act=_choice(head["act"], ACTIVATIONS, source, "head.act"),
        ),
    )


def iter_spaces() -> Iterator[SearchSpace]:
    for name in space_names():
        yield load_space(name)


# --------------------------------------------------------------------------------------------
# Small validation helpers
# --------------------------------------------------------------------------------------------


def _digest(obj: Any) -> str:
    return digest(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def _check_keys(d: Any, allowed: set[str], required: set[str], source: str, where: str) -> None:
    check_keys(d, allowed, required, source, where, SpaceError)


def _int(v: Any, source: str, field: str, positive: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpaceError(f"{source}: field '{field}' must be an integer, got {v!r}")
    if positive and v <= 0:
        raise SpaceError(f"{source}: field '{field}' must be positive, got {v}")
    return v


def _ints(v: Any, source: str, field: str, positive: bool = False,
          allow_empty: bool = False, unique: bool = True) -> tuple[int, ...]:
    if not isinstance(v, list) or (not v and not allow_empty):
        raise SpaceError(f"{source}: field '{field}' must be a {'' if allow_empty else 'non-empty '}"
                         f"list of integers, got {v!r}")
    values = tuple(_int(x, source, f"{field}[{i}]", positive) for i, x in enumerate(v))
    if unique and len(set(values)) != len(values):
        raise SpaceError(f"{source}: field '{field}' repeats a value: {list(values)}")
    return values


def _bool(v: Any, source: str, field: str) -> bool:
    if not isinstance(v, bool):
        raise SpaceError(f"{source}: field '{field}' must be true or false, got {v!r}")
    return v


def _str(v: Any, source: str, field: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpaceError(f"{source}: field '{field}' must be a non-empty string, got {v!r}")
    return v


def _choice(v: Any, allowed: tuple, source: str, field: str):
    if v not in allowed or isinstance(v, bool):
        raise SpaceError(f"{source}: field '{field}' = {v!r} is not one of {list(allowed)}")
    return v
