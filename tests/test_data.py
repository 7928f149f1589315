import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bignas.data import (
    DataError,
    TensorSplit,
    load_dataset,
    random_flip,
    random_shift,
    resize_batch,
    safe_unpickle,
)
from bignas.data.mnist5k import load_mnist5k


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def _pixels(split):
    """All images of a split as uint8 N×3×H×W, undoing the normalisation."""
    x = torch.cat([images for images, _ in split.eval_batches(1000)])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (split.mean, split.std))
    return ((x * std + mean) * 255).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------ mnist5k


def test_mnist5k_shapes_classes_and_split_sizes(mnist):
    assert (mnist.name, mnist.num_classes, mnist.resolution) == ("mnist5k", 10, 28)
    assert mnist.classes == tuple("0123456789")
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (4000, 500, 500)
    for split, per_class in ((mnist.train, 400), (mnist.val, 50), (mnist.test, 50)):
        assert split.labels.dtype == torch.int64
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
    images, labels = next(mnist.test.eval_batches(64))
    assert images.shape == (64, 3, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


def test_mnist5k_splits_are_disjoint(mnist):
    seen = {}
    for name in ("train", "val", "test"):
        for image in mnist.split(name).images[:, 0].reshape(-1, 784).numpy():
            assert image.tobytes() not in seen, f"an image of {name} is also in {seen.get(image.tobytes())}"
            seen[image.tobytes()] = name
    assert len(seen) == 5000


def test_mnist5k_images_are_real_digits(mnist):
    # Nearest class-mean classifier: ~80% on real MNIST, 10% on noise or shuffled labels.
    train = mnist.train.images[:, 0].reshape(-1, 784).float()
    means = torch.stack([train[mnist.train.labels == c].mean(0) for c in range(10)])
    test = mnist.test.images[:, 0].reshape(-1, 784).float()
    predicted = torch.cdist(test, means).argmin(1)
    assert (predicted == mnist.test.labels).float().mean() > 0.7
    normalised, _ = next(mnist.train.eval_batches(4000))
    assert abs(normalised.mean().item()) < 0.05 and abs(normalised.std().item() - 1) < 0.05


# ------------------------------------------------------------------------------------------ CIFAR


def _write_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes, protocol: int = 5):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", label_key: labels, b"data": data}, f, protocol=protocol)


def _cifar_images(rng, n: int, num_classes: int):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return data, [i % num_classes for i in range(n)]


@pytest.mark.parametrize("subfolder", [None, "cifar-10-batches-py"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_loads_real_format(tmp_path, subfolder, protocol):
    rng = np.random.default_rng(0)
    folder = tmp_path / subfolder if subfolder else tmp_path
    folder.mkdir(exist_ok=True)
    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", *_cifar_images(rng, 20, 10), b"labels", protocol)
    test_data, test_labels = _cifar_images(rng, 30, 10)
    _write_batch(folder / "test_batch", test_data, test_labels, b"labels", protocol)
    names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)

    ds = load_dataset(f"cifar10:{tmp_path}")
    assert (ds.name, ds.num_classes, ds.resolution) == ("cifar10", 10, 32)
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (90, 10, 30)  # 10% of each class held out
    assert torch.bincount(ds.val.labels, minlength=10).tolist() == [1] * 10
    # Pixels arrive unchanged: rows are 1024 red, 1024 green, 1024 blue values.
    assert torch.equal(_pixels(ds.test), torch.from_numpy(test_data.reshape(-1, 3, 32, 32)))
    assert ds.test.labels.tolist() == test_labels
    train_and_val = torch.cat([ds.train.images, ds.val.images]).reshape(-1, 3072).numpy()
    assert len({row.tobytes() for row in train_and_val}) == 100
    images, labels = next(ds.train.train_batches(16, seed=0, epoch=0))
    assert images.shape == (16, 3, 32, 32) and labels.shape == (16,)


def test_cifar100_loads_real_format(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_data, train_labels = _cifar_images(rng, 300, 100)
    with open(folder / "train", "wb") as f:
        pickle.dump({b"data": train_data, b"fine_labels": train_labels, b"coarse_labels": [0] * 300}, f)
    _write_batch(folder / "test", *_cifar_images(rng, 100, 100), b"fine_labels")
    ds = load_dataset(f"cifar100:{tmp_path}")
    assert (ds.name, ds.num_classes) == ("cifar100", 100)
    assert ds.classes == tuple(str(i) for i in range(100))  # no meta file: label numbers
    assert (len(ds.train), len(ds.val), len(ds.test)) == (200, 100, 100)
    assert torch.bincount(ds.val.labels, minlength=100).tolist() == [1] * 100


def test_cifar_pickle_from_numpy_1_loads(tmp_path):
    # Pickles written by numpy 1.x (as the official batches were) name numpy.core, not numpy._core.
    data, labels = _cifar_images(np.random.default_rng(2), 10, 10)
    raw = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "old_batch").write_bytes(raw)
    loaded = safe_unpickle(tmp_path / "old_batch")
    assert np.array_equal(loaded[b"data"], data) and loaded[b"labels"] == labels


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _Evals:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", [_RunsShell(), _Evals()])
def test_malicious_pickle_is_refused(tmp_path, payload, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": payload, b"labels": [0]}, f)
    with pytest.raises(DataError, match="refused global") as info:
        load_dataset(f"cifar10:{folder}")
    assert str(folder / "data_batch_1") in str(info.value)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------ ImageFolder


COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def _write_tree(root: Path, n_train: int = 10, n_val: int = 2):
    for split, n in (("train", n_train), ("val", n_val)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                size = (40, 30) if i % 2 else (30, 50)  # PIL size is (width, height)
                Image.new("RGB", size, colour).save(root / split / name / f"{i}.png")


@pytest.fixture
def folder_tree(tmp_path):
    _write_tree(tmp_path / "tree")
    return tmp_path / "tree"


def test_imagefolder_loads(folder_tree):
    ds = load_dataset(f"imagefolder:{folder_tree}", image_size=24, workers=0)
    assert (ds.name, ds.num_classes, ds.resolution) == ("imagefolder", 3, 24)
    assert ds.classes == ("cat", "dog", "emu")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (27, 3, 6)
    assert not set(ds.train.files) & set(ds.val.files)
    images, labels = next(ds.test.eval_batches(6))
    assert images.shape == (6, 3, 24, 24) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    # One-colour images stay that colour through resize, crop and normalisation.
    assert torch.equal(_pixels(ds.test)[0, :, 5, 5], torch.tensor(COLOURS["cat"], dtype=torch.uint8))
    batches = list(ds.train.train_batches(8, seed=3, epoch=0))
    assert len(batches) == 3 and all(x.shape == (8, 3, 24, 24) for x, _ in batches)


def test_imagefolder_batches_do_not_depend_on_workers(tmp_path):
    root = tmp_path / "tree"
    for name in ("a", "b"):
        for split in ("train", "val"):
            (root / split / name).mkdir(parents=True)
        for i in range(6):
            pattern = np.random.default_rng(i).integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
            Image.fromarray(pattern).save(root / "train" / name / f"{i}.png")
        Image.fromarray(pattern).save(root / "val" / name / "0.png")
    single = load_dataset(f"imagefolder:{root}", image_size=16, workers=0)
    multi = load_dataset(f"imagefolder:{root}", image_size=16, workers=2)
    pairs = zip(single.train.train_batches(4, seed=1, epoch=2), multi.train.train_batches(4, seed=1, epoch=2))
    for a, b in pairs:
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    again = next(single.train.train_batches(4, seed=1, epoch=2))[0]
    other_epoch = next(single.train.train_batches(4, seed=1, epoch=3))[0]
    assert torch.equal(again, next(multi.train.train_batches(4, seed=1, epoch=2))[0])
    assert not torch.equal(again, other_epoch)


# ------------------------------------------------------------------------ order, resume, augment


def _indexed_split(n: int = 100, pad: int = 0, flip: bool = False) -> TensorSplit:
    """A split whose label is the image's index, so batches reveal the order."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    return TensorSplit(images, torch.arange(n), (0.5,) * 3, (0.25,) * 3, pad=pad, flip=flip)


def test_order_is_reproducible_and_differs_across_epochs():
    split = _indexed_split()
    epoch0 = [y for _, y in split.train_batches(10, seed=7, epoch=0)]
    again = [y for _, y in split.train_batches(10, seed=7, epoch=0)]
    assert all(torch.equal(a, b) for a, b in zip(epoch0, again))
    epoch1 = torch.cat([y for _, y in split.train_batches(10, seed=7, epoch=1)])
    assert sorted(torch.cat(epoch0).tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(torch.cat(epoch0), epoch1)
    other_seed = torch.cat([y for _, y in split.train_batches(10, seed=8, epoch=0)])
    assert not torch.equal(torch.cat(epoch0), other_seed)


def test_resume_from_step_and_drop_last():
    split = _indexed_split(n=105, pad=2, flip=True)
    full = list(split.train_batches(10, seed=1, epoch=4))
    assert len(full) == split.steps_per_epoch(10) == 10  # the last 5 images are dropped
    resumed = list(split.train_batches(10, seed=1, epoch=4, start_step=6))
    assert len(resumed) == 4
    for (x, y), (rx, ry) in zip(full[6:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert list(split.train_batches(10, seed=1, epoch=4, start_step=10)) == []
    with pytest.raises(ValueError, match="start_step"):
        split.train_batches(10, seed=1, epoch=4, start_step=11)
    with pytest.raises(ValueError, match="fewer than one batch"):
        split.train_batches(60, seed=1, epoch=0, world_size=2)


def test_ranks_share_each_global_batch():
    split = _indexed_split()
    whole = [y for _, y in split.train_batches(20, seed=3, epoch=0)]
    ranks = [
        [y for _, y in split.train_batches(10, seed=3, epoch=0, rank=r, world_size=2)] for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == split.steps_per_epoch(10, world_size=2) == 5
    for step, global_batch in enumerate(whole):
        assert torch.equal(torch.cat([ranks[0][step], ranks[1][step]]), global_batch)


def test_augmentation_is_deterministic_given_the_generator():
    split = _indexed_split(pad=4, flip=True)
    a = [x for x, _ in split.train_batches(25, seed=5, epoch=0)]
    b = [x for x, _ in split.train_batches(25, seed=5, epoch=0)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    c = [x for x, _ in split.train_batches(25, seed=6, epoch=0)]
    assert not any(torch.equal(p, q) for p, q in zip(a, c))
    # Augmented images differ from the same images without augmentation.
    augmented, indices = next(split.train_batches(25, seed=5, epoch=0))
    plain = next(split.eval_batches(100))[0]
    assert not torch.equal(augmented, plain[indices])
    assert augmented.shape == plain[indices].shape


def test_random_shift_and_flip_match_a_per_image_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 10, 9), generator=gen, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(4)
    shifted = random_shift(x, 3, gen)
    gen = torch.Generator().manual_seed(4)
    top, left = torch.randint(0, 7, (12,), generator=gen), torch.randint(0, 7, (12,), generator=gen)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(12):
        assert torch.equal(shifted[i], padded[i, :, top[i] : top[i] + 10, left[i] : left[i] + 9])
    flipped = random_flip(x, torch.Generator().manual_seed(9))
    which = torch.rand(12, generator=torch.Generator().manual_seed(9)) < 0.5
    for i in range(12):
        assert torch.equal(flipped[i], x[i].flip(-1) if which[i] else x[i])
    assert 0 < which.sum() < 12


def test_resize_batch_and_calibration(mnist):
    x = torch.rand(4, 3, 28, 28)
    assert resize_batch(x, 28) is x
    assert resize_batch(x, 16).shape == (4, 3, 16, 16)
    assert resize_batch(x, 40).shape == (4, 3, 40, 40)
    flat = torch.full((2, 3, 32, 32), 0.3)
    torch.testing.assert_close(resize_batch(flat, 20), torch.full((2, 3, 20, 20), 0.3))
    first = list(mnist.calibration_batches(300, 128, 32))
    assert [b.shape for b in first] == [(128, 3, 32, 32), (128, 3, 32, 32), (44, 3, 32, 32)]
    assert all(torch.equal(a, b) for a, b in zip(first, mnist.calibration_batches(300, 128, 32)))
    with pytest.raises(ValueError, match="n_images"):
        mnist.calibration_batches(4001, 128, 32)


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("spec", ["foo:bar", "mnist5k:extra", "cifar10:", "imagefolder", "MNIST5K"])
def test_unknown_spec(spec):
    with pytest.raises(DataError, match="unknown data spec") as info:
        load_dataset(spec)
    assert repr(spec) in str(info.value)


@pytest.mark.parametrize("kind", ["cifar10", "cifar100", "imagefolder"])
def test_missing_path(tmp_path, kind):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="no such directory") as info:
        load_dataset(f"{kind}:{missing}")
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("kind, expected", [("cifar10", "data_batch_1"), ("cifar100", "train")])
def test_cifar_folder_without_batch_files(tmp_path, kind, expected):
    (tmp_path / "unrelated.txt").write_text("hello")
    with pytest.raises(DataError, match="batch files not found") as info:
        load_dataset(f"{kind}:{tmp_path}")
    assert str(tmp_path) in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not a pickle", "not a valid CIFAR batch file"),
        (pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]})[:200], "not a valid"),
        (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
        (pickle.dumps({b"labels": [0]}), "missing field 'data'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "N×3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 integer labels"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "outside 0..9"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, [1, 2]]}), "integer labels"),
    ],
)
def test_corrupt_cifar_batch(tmp_path, content, message):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _write_batch(tmp_path / f"data_batch_{i}", *_cifar_images(rng, 10, 10), b"labels")
    _write_batch(tmp_path / "test_batch", *_cifar_images(rng, 10, 10), b"labels")
    (tmp_path / "data_batch_3").write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(f"cifar10:{tmp_path}")
    assert str(tmp_path / "data_batch_3") in str(info.value)


@pytest.mark.parametrize("missing", ["train", "val"])
def test_imagefolder_without_train_or_val(folder_tree, missing):
    (folder_tree / missing).rename(folder_tree / "elsewhere")
    with pytest.raises(DataError, match=f"missing {missing}/ folder") as info:
        load_dataset(f"imagefolder:{folder_tree}")
    assert str(folder_tree) in str(info.value)


def test_imagefolder_without_images(tmp_path):
    root = tmp_path / "tree"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders") as info:
        load_dataset(f"imagefolder:{root}")
    assert str(root / "train") in str(info.value)
    (root / "train" / "cat").mkdir()
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images") as info:
        load_dataset(f"imagefolder:{root}")
    assert str(root / "train" / "cat") in str(info.value)
    Image.new("RGB", (8, 8)).save(root / "train" / "cat" / "0.png")
    with pytest.raises(DataError, match="no images") as info:
        load_dataset(f"imagefolder:{root}")
    assert str(root / "val") in str(info.value)


def test_imagefolder_ignores_hidden_folders(folder_tree):
    (folder_tree / "train" / ".ipynb_checkpoints").mkdir()
    (folder_tree / "val" / ".cache").mkdir()
    assert load_dataset(f"imagefolder:{folder_tree}", workers=0).classes == ("cat", "dog", "emu")


def test_imagefolder_val_class_unknown_to_train(folder_tree):
    (folder_tree / "val" / "yak").mkdir()
    with pytest.raises(DataError, match="'yak' has no folder") as info:
        load_dataset(f"imagefolder:{folder_tree}")
    assert str(folder_tree / "val" / "yak") in str(info.value)


def test_imagefolder_image_size_is_capped(folder_tree):
    with pytest.raises(DataError, match="image_size 100000 is above the largest resolution, 4096"):
        load_dataset(f"imagefolder:{folder_tree}", image_size=100_000)  # 30 GB an image


def test_imagefolder_unreadable_image_is_refused_when_opened(folder_tree):
    broken = folder_tree / "val" / "dog" / "0.png"
    broken.write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataError, match="cannot decode image") as info:
        load_dataset(f"imagefolder:{folder_tree}", image_size=16, workers=0)
    assert str(info.value).startswith(f"{broken}: ")


@pytest.mark.parametrize("workers", [0, 2])
def test_imagefolder_corrupt_image(folder_tree, workers):
    # A valid header with the pixel data cut short: only decoding finds it.
    broken = folder_tree / "val" / "dog" / "0.png"
    data = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    Image.fromarray(data).save(broken)
    broken.write_bytes(broken.read_bytes()[:200])
    ds = load_dataset(f"imagefolder:{folder_tree}", image_size=16, workers=workers)
    with pytest.raises(DataError, match="cannot decode image") as info:
        list(ds.test.eval_batches(4))
    assert str(info.value).startswith(f"{broken}: ")  # the worker's traceback is not in the message


def _palette(transparent_pixel: bool) -> Image.Image:
    image = Image.new("P", (8, 6), 0)
    image.putpalette([200, 30, 30, 0, 0, 0] + [0] * 762)
    if transparent_pixel:
        image.putpixel((0, 0), 1)
    image.info["transparency"] = 1  # palette index 1 is transparent
    return image


def _with_pixel(image: Image.Image, value) -> Image.Image:
    image.putpixel((0, 0), value)
    return image


# Images PIL opens but converts to RGB wrongly, each saved by PIL as a real file: (name, image,
# words of the refusal).
WRONG_AS_RGB = [
    ("gray16.png", lambda: Image.fromarray((np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000)),
     "'I;16' has 16- or 32-bit integer pixels"),
    ("int32.tiff", lambda: Image.new("I", (8, 6), 70000), "'I' has 16- or 32-bit integer pixels"),
    ("float.tiff", lambda: Image.new("F", (8, 6), 0.5), "floating-point pixels"),
    ("cmyk.jpg", lambda: Image.new("CMYK", (8, 6), (0, 200, 200, 0)), "CMYK image"),
    ("lab.tiff", lambda: Image.new("LAB", (8, 6), (50, 10, 10)), "'LAB' has no exact conversion"),
    ("palette-transparent.png", lambda: _palette(True), "'P' with a transparency key"),
    ("alpha.webp", lambda: Image.new("RGBA", (8, 6), (200, 30, 30, 100)), "'RGBA' with an alpha channel"),
    ("gray-key.png", lambda: _with_pixel(Image.new("L", (8, 6), 9), 3), "'L' with a transparency key"),
    ("rgba.png", lambda: _with_pixel(Image.new("RGBA", (8, 6), (200, 30, 30, 255)), (0, 0, 0, 254)),
     "'RGBA' with an alpha channel and pixels that are not opaque (alpha down to 254)"),
    ("la.png", lambda: Image.new("LA", (8, 6), (90, 0)), "'LA' with an alpha channel"),
]


def _save(image: Image.Image, path: Path) -> None:
    if path.name == "gray-key.png":
        image.save(path, transparency=3)
    else:
        image.save(path)


@pytest.mark.parametrize("name, make, words", WRONG_AS_RGB, ids=[c[0] for c in WRONG_AS_RGB])
def test_imagefolder_refuses_images_that_convert_to_rgb_wrongly(folder_tree, name, make, words):
    bad = folder_tree / "train" / "emu" / name
    _save(make(), bad)
    with pytest.raises(DataError) as info:
        load_dataset(f"imagefolder:{folder_tree}", image_size=16, workers=0)  # at open, not mid-epoch
    assert str(info.value).startswith(f"{bad}: ") and words in str(info.value)


# Images whose conversion to RGB is exact: (name, image, the RGB of pixel (2, 2)).
EXACT_AS_RGB = [
    ("opaque-rgba.png", lambda: Image.new("RGBA", (8, 6), (200, 30, 30, 255)), (200, 30, 30)),
    ("opaque-la.png", lambda: Image.new("LA", (8, 6), (90, 255)), (90, 90, 90)),
    ("palette-key-unused.png", lambda: _palette(False), (200, 30, 30)),
    ("bilevel.png", lambda: Image.new("1", (8, 6), 1), (255, 255, 255)),
    ("gray.jpg", lambda: Image.new("L", (8, 6), 90), (90, 90, 90)),
    ("rgb.png", lambda: Image.new("RGB", (8, 6), (200, 30, 30)), (200, 30, 30)),
]


@pytest.mark.parametrize("name, make, rgb", EXACT_AS_RGB, ids=[c[0] for c in EXACT_AS_RGB])
def test_imagefolder_accepts_images_that_convert_to_rgb_exactly(tmp_path, name, make, rgb):
    root = tmp_path / "tree"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        _save(make(), root / split / "a" / name)
    ds = load_dataset(f"imagefolder:{root}", image_size=8, workers=0)
    pixel = _pixels(ds.test)[0, :, 2, 2]
    assert torch.allclose(pixel.float(), torch.tensor(rgb, dtype=torch.float), atol=2)  # JPEG rounding


def test_imagefolder_names_many_refused_images_at_once(folder_tree):
    bad = sorted(folder_tree / "train" / "dog" / f"cmyk{i:02d}.jpg" for i in range(12))
    for path in bad:
        Image.new("CMYK", (8, 6)).save(path)
    with pytest.raises(DataError) as info:
        load_dataset(f"imagefolder:{folder_tree}", workers=0)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{folder_tree}: 12 images cannot be decoded to RGB as they are:"
    assert [line.strip().split(": ")[0] for line in lines[1:11]] == [str(p) for p in bad[:10]]
    assert lines[11].strip() == "... and 2 more"


def test_imagefolder_check_in_workers(folder_tree, monkeypatch):
    import bignas.data.imagefolder as imagefolder

    monkeypatch.setattr(imagefolder, "PARALLEL_CHECK_MIN", 1)  # DataLoader workers fork: they see it
    monkeypatch.setattr(imagefolder, "_CHECK_CHUNK", 7)
    assert load_dataset(f"imagefolder:{folder_tree}", image_size=16, workers=2).classes == ("cat", "dog", "emu")
    bad = folder_tree / "val" / "emu" / "1.png"
    Image.fromarray(np.full((6, 8), 60000, np.uint16)).save(bad)
    with pytest.raises(DataError, match="16- or 32-bit") as info:
        load_dataset(f"imagefolder:{folder_tree}", image_size=16, workers=2)
    assert str(info.value).startswith(f"{bad}: ")


@pytest.mark.parametrize("workers", [0, 2])
def test_imagefolder_image_changed_after_open_is_refused_at_decode(folder_tree, workers):
    ds = load_dataset(f"imagefolder:{folder_tree}", image_size=16, workers=workers)
    changed = folder_tree / "val" / "cat" / "1.png"
    _with_pixel(Image.new("RGBA", (40, 30), (200, 30, 30, 255)), (3, 3, 3, 0)).save(changed)
    with pytest.raises(DataError, match="not opaque") as info:
        list(ds.test.eval_batches(6))
    assert str(info.value).startswith(f"{changed}: ")


@pytest.mark.parametrize(
    "content, message",
    [(b"garbage", "cannot read the embedded mnist5k"), (None, "missing field 'val_images'")],
)
def test_corrupt_mnist5k_file(tmp_path, content, message):
    path = tmp_path / "mnist5k.npz"
    if content is None:
        zeros = np.zeros((4, 28, 28), np.uint8)
        np.savez_compressed(path, train_images=zeros, train_labels=np.zeros(4, np.uint8))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_mnist5k(path, "mnist5k")
    assert str(path) in str(info.value)


def test_rank_slices_are_the_single_process_global_batch():
    """Data parallelism splits a global batch without changing its images or their augmentation."""
    train = load_dataset("mnist5k").train
    images, labels = next(iter(train.train_batches(32, seed=1, epoch=0)))
    parts = [next(iter(train.train_batches(16, seed=1, epoch=0, rank=r, world_size=2))) for r in (0, 1)]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), images, atol=0, rtol=0)
    assert torch.equal(torch.cat([p[1] for p in parts]), labels)
