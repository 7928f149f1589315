import functools

import pytest
import torch

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
