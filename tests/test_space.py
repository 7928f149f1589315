import dataclasses
import json
import random
from importlib import resources

import pytest
import yaml

from bignas.cost import child_cost
from bignas.space import Child, SpaceError, StageChoice, load_space, space_names


def test_every_shipped_space_loads(space_name):
    space = load_space(space_name)
    assert space.name == space_name
    assert space.hash == load_space(space_name).hash
    for child in (space.max(), space.min()):
        assert space.validate(child) is child


def test_spaces_have_distinct_hashes():
    hashes = {load_space(n).hash for n in space_names()}
    assert len(hashes) == len(space_names())


def test_sample_mutate_crossover_stay_in_space(space_name):
    space = load_space(space_name)
    rng = random.Random(1)
    children = [space.sample(rng) for _ in range(30)]
    for a, b in zip(children, children[1:]):
        space.validate(space.mutate(a, rng, prob=0.5))
        space.validate(space.crossover(a, b, rng))
    assert len({c.hash for c in children}) == len(children)


def test_sampling_is_reproducible():
    space = load_space("ofa-mbv3")
    assert space.sample(random.Random(7)) == space.sample(random.Random(7))
    assert space.sample(random.Random(7)) != space.sample(random.Random(8))


def test_distinct_samples_and_named_children(tmp_path):
    space = load_space("cifar-small")
    ends = (space.min(), space.max())
    children = space.distinct_samples(random.Random(1), 12, first=ends)
    assert children[:2] == list(ends) and len({c.hash for c in children}) == 12
    assert children == space.distinct_samples(random.Random(1), 12, first=ends)  # reproducible
    fresh = space.distinct_samples(random.Random(1), 12, taken={c.hash for c in children})
    assert len(fresh) == 12 and not {c.hash for c in fresh} & {c.hash for c in children}
    # --arch names
    assert space.named_child("max") == space.max() and space.named_child("min") == space.min()
    assert space.named_child("random", random.Random(4)) == space.sample(random.Random(4))
    path = tmp_path / "a.json"
    path.write_text(json.dumps(children[5].to_dict(space)))
    assert space.named_child(str(path)) == children[5]
    with pytest.raises(SpaceError, match="random"):  # no generator given: "random" is a file name like any other
        space.named_child("random")


def test_mutation_with_zero_probability_is_identity():
    space = load_space("bignas-imagenet")
    child = space.sample(random.Random(3))
    assert space.mutate(child, random.Random(0), prob=0.0) == child


def test_json_round_trip(tmp_path, space_name):
    space = load_space(space_name)
    child = space.sample(random.Random(5))
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(child.to_dict(space)))
    loaded = space.load_child(path)
    assert loaded == child and loaded.hash == child.hash
    # to_dict writes every field by hand (for speed): a field added to a dataclass must appear here
    d = child.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(Child)]
    assert all(list(s) == [f.name for f in dataclasses.fields(StageChoice)] for s in d["stages"])


def test_hashes_are_pinned():
    # A hash change silently invalidates every accuracy cache and latency table: change on purpose only.
    assert load_space("ofa-mbv3").min().hash == "6080aff8783b2757"
    assert load_space("ofa-mbv3").hash == "d2461efa7370c983"


@pytest.mark.parametrize("arch, resolution, mflops, params_m", [
    ("max", 224, 566.2, 7.665), ("min", 224, 121.3, 3.411), ("min", 128, 41.5, 3.411),
])
def test_ofa_mbv3_matches_once_for_all_counter(arch, resolution, mflops, params_m):
    # Reference figures from once-for-all's own counter (1000 classes).
    space = load_space("ofa-mbv3")
    child = space.max() if arch == "max" else space.min()
    cost = child_cost(space, child, resolution)
    assert round(cost.mflops, 1) == mflops
    assert round(cost.params_m, 3) == params_m


def test_cifar_small_smallest_child_is_five_times_cheaper():
    space = load_space("cifar-small")
    assert child_cost(space, space.max()).mflops >= 5 * child_cost(space, space.min()).mflops


# ---- refusals ----------------------------------------------------------------------------

def _space_yaml(tmp_path, edit):
    data = yaml.safe_load((resources.files("bignas") / "spaces" / "cifar-small.yaml").read_text())
    edit(data)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(colour="blue"), "colour"),
    (lambda d: d["stages"][1].update(widht=[32]), "stages[1].widht"),
    (lambda d: d["stem"].update(padding=1), "stem.padding"),
    (lambda d: d["stages"][0].update(kernels=[3, 4]), "stages[0].kernels"),
    (lambda d: d["stages"][0].update(act="gelu"), "stages[0].act"),
    (lambda d: d["stages"][0].update(expands=[1, 3]), "stages[0].expands"),
    (lambda d: d.pop("resolutions"), "resolutions"),
    (lambda d: d.update(resolutions=[32, "x"]), "resolutions[1]"),
])
def test_bad_space_yaml_is_refused(tmp_path, edit, field):
    path = _space_yaml(tmp_path, edit)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_unknown_space_name_is_refused():
    with pytest.raises(SpaceError, match="unknown search space 'nope'"):
        load_space("nope")


def _bad_arch(tmp_path, edit):
    space = load_space("cifar-small")
    data = space.max().to_dict(space)
    edit(data)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    return space, path


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["stages"][1].update(width=33), "stages[1].width"),
    (lambda d: d["stages"].pop(), "stages"),
    (lambda d: d.update(resolution=224), "resolution"),
    (lambda d: d["stages"][2].update(kernels=[3, 7, 3]), "stages[2].kernels[1]"),
    (lambda d: d["stages"][2].update(kernels=[3]), "stages[2].kernels"),
    (lambda d: d["stages"][0].update(depth=5), "stages[0].depth"),
    (lambda d: d.update(space="ofa-mbv3"), "space"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d.pop("head"), "head"),
    (lambda d: d.update(stem="16"), "stem"),
    (lambda d: d.update(mix=1280), "mix"),
])
def test_bad_arch_is_refused(tmp_path, edit, field):
    space, path = _bad_arch(tmp_path, edit)
    with pytest.raises(SpaceError) as err:
        space.load_child(path)
    assert str(path) in str(err.value) and f"'{field}'" in str(err.value)


def test_malformed_json_is_refused(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text('{"resolution": 32, ')
    with pytest.raises(SpaceError, match="malformed JSON"):
        load_space("cifar-small").load_child(path)
    with pytest.raises(SpaceError, match="no such architecture file"):
        load_space("cifar-small").load_child(tmp_path / "missing.json")
