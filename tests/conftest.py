import functools
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from bignas.nn import Supernet
from bignas.space import load_space, space_names

SPACES = space_names()

# Resolution each space's children are run at in equivalence tests: small enough to be quick,
# large enough that most kernels are not cropped.
TEST_RESOLUTION = {"cifar-small": None, "ofa-mbv3": 64, "bignas-imagenet": 64}


def make_random_supernet(name: str) -> Supernet:
    """A supernet whose weights and BN statistics are all non-trivial, so that any slicing error
    shows in the outputs (fresh BN statistics and near-zero classifier weights would hide it)."""
    gen = torch.Generator().manual_seed(0)
    net = Supernet(load_space(name))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        net.head.classifier.weight.normal_(0, 1, generator=gen)
    return net.eval()


# Shared, read-only (eval mode) across tests: building the large spaces takes a moment.
random_supernet = functools.lru_cache(maxsize=None)(make_random_supernet)


@pytest.fixture(params=SPACES)
def space_name(request) -> str:
    return request.param


# Training runs as the user starts them (`python -m bignas train`), shared by test_train and test_faults.

def write_cifar10(folder, n_train=320, n_test=64, seed=0):
    """A small CIFAR-10 in the real on-disk format, with learnable (class-dependent) images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        base = (labels[:, None] * 25).astype(np.int64)
        data = np.clip(base + rng.integers(0, 40, (n, 3072)), 0, 255).astype(np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_train // 5), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return folder


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    data = write_cifar10(tmp_path_factory.mktemp("cifar"))
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    cfg = {}
    cfg.update({"space": "cifar-small", "data": f"cifar10:{data}", "epochs": 2, "batch_size": 32,
                "seed": 3, "device": "cpu", "model": {"dropout": 0.1, "drop_connect": 0.1},
                "checkpoint": {"every_steps": 3, "keep": 2}, "eval": {"calibration_images": 64,
                "batch_size": 64, "every_epochs": 1}, "log": {"every_steps": 1, "tensorboard": False},
                "schedule": {"warmup_epochs": 0.5}})
    path.write_text(yaml.safe_dump(cfg))
    return path


def final_weights(run):
    return torch.load(run / "supernet.pt", weights_only=True)["model"]


def metric_records(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("images_per_s", None)
    return records


def assert_same_run(run, reference):
    """`run` ended where `reference` did: the same final weights and the same metrics records."""
    a, b = final_weights(reference), final_weights(run)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    assert metric_records(run) == metric_records(reference)


def train(config, run, *extra):
    source = [] if "--resume" in extra else ["--config", str(config)]  # a resumed run has its own
    return subprocess.Popen([sys.executable, "-m", "bignas", "train", *source,
                             "--out", str(run), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
