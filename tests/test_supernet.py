"""Invariants of the elastic supernet: exact extraction, gradients, costs, ONNX parity."""

import copy
import random

import pytest
import torch
import torch.nn.functional as F

from bignas.cost import child_cost
from bignas.onnx_io import export_onnx, onnx_max_abs_diff
from bignas.nn import SupernetStep, extract
from bignas.nn.ops import ElasticBatchNorm2d, conv_index
from bignas.nn.step import LAYOUT_HINT
from bignas.space import load_space
from bignas.plan import effective_kernel, plan
from conftest import SPACES, TEST_RESOLUTION, make_random_supernet, random_supernet


def children(space, n, seed=0):
    rng = random.Random(seed)
    return [space.max(), space.min()] + [space.sample(rng) for _ in range(n)]


def resolution(name, child):
    return TEST_RESOLUTION[name] or child.resolution


def training_step(net):
    """A supernet training step: gradients zeroed in place before the forward, the layout hint
    of sliced weights silenced, an optimizer step after (whose update leaves `.grad` as it is)."""
    return SupernetStep(net, torch.optim.SGD(net.parameters(), lr=0.01))


def test_supernet_equals_extracted_child(space_name):
    """min, max and 50 random children: same logits in eval mode, same parameter count as analytic."""
    net = random_supernet(space_name)
    gen = torch.Generator().manual_seed(1)
    for child in children(net.space, 50):
        r = resolution(space_name, child)
        x = torch.randn(2, 3, r, r, generator=gen)
        static = extract(net, child, r)
        with torch.no_grad():
            want, got = net(x, child), static(x)
        assert want.std() > 0.1  # outputs carry signal, so a slicing error would show
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        n_params = sum(p.numel() for p in static.parameters())
        assert n_params == child_cost(net.space, child, r).params


def test_extraction_in_train_mode_matches_too():
    net = random_supernet("cifar-small").train()
    try:
        child = net.space.sample(random.Random(2))
        x = torch.randn(4, 3, child.resolution, child.resolution)
        static = extract(net, child)
        assert static.training
        torch.testing.assert_close(static(x), net(x, child), atol=1e-5, rtol=0)
    finally:
        net.eval()


def test_every_parameter_gets_a_gradient_under_the_largest_child(space_name):
    space = load_space(space_name)
    net = make_random_supernet(space_name).train()
    child = space.max()
    r = min(space.resolutions)  # large enough that no kernel is cropped
    assert all(b.kernel == max(space.stages[b.stage].kernels)
               for b in plan(space, child, r).blocks)
    with training_step(net) as step:
        step.backward(net(torch.randn(2, 3, r, r), child).logsumexp(1).sum())
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_supernet_gradients_equal_the_extracted_childs(space_name):
    """Sliced weights add their gradients straight into `.grad` (ops.GradSlices): each slice must get
    exactly the static child's gradient, accumulate over backward passes, and nothing else."""
    net = copy.deepcopy(random_supernet(space_name))
    gen = torch.Generator().manual_seed(4)
    for child in (net.space.min(), net.space.sample(random.Random(3))):
        r = resolution(space_name, child)
        x = torch.randn(2, 3, r, r, generator=gen)
        static = extract(net, child, r)
        with training_step(net) as step:  # zeroes the previous child's gradients
            for _ in range(2):  # the second backward accumulates into the first's gradients
                out = net(x, child)  # with gradients: the gradient leaves (ops.GradSlices)
                torch.testing.assert_close(out, static(x), atol=1e-5, rtol=0)
                step.backward(out.logsumexp(1).sum())
        static(x).logsumexp(1).sum().backward()
        grads = copy.deepcopy(net)  # a supernet holding the gradients as its weights
        with torch.no_grad():
            for g, p in zip(grads.parameters(), net.parameters()):
                g.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
        sliced = extract(grads, child, r).state_dict()
        for name, p in static.named_parameters():
            torch.testing.assert_close(sliced[name], 2 * p.grad, atol=1e-5, rtol=1e-4)
        total = sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)
        torch.testing.assert_close(total, 2 * sum(p.grad.abs().sum() for p in static.parameters()), rtol=1e-4, atol=0)


def test_gradient_leaves_are_reused_and_follow_moved_storage():
    """GradSlices keeps each slice's leaf from pass to pass, across optimizer steps. A parameter
    or gradient moved to new storage must not leave a stale leaf behind: output and gradients
    equal those of a fresh copy, which has no leaves yet."""
    net = make_random_supernet("cifar-small").train()
    child = net.space.min()
    x = torch.randn(2, 3, 28, 28)
    w = net.stages[1][0].project.conv.weight  # sliced by the smallest child (width 32 of 40)

    def step(model):  # SGD keeps no state: a fresh one steps as the same one would
        with SupernetStep(model, torch.optim.SGD(model.parameters(), lr=0.1)) as s:
            out = model(x, child)
            s.backward(out.logsumexp(1).sum())
        return out.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]

    def leaves():
        return {id(leaf) for _, known in net._grad_slices._leaves.values() for _, leaf in known}

    def check():
        want = step(copy.deepcopy(net))
        got = step(net)
        torch.testing.assert_close(got[0], want[0], atol=0, rtol=0)
        for g, v in zip(got[1], want[1]):
            torch.testing.assert_close(g, v, atol=0, rtol=0)

    step(net)  # including an optimizer step: leaves must outlive the update
    made = leaves()
    check()
    assert leaves() == made and len(made) > 10  # reused, not made again
    w.data = w.data * 1.5  # the parameter alone moves: a stale leaf would see the old values
    check()
    w.grad = w.grad.clone()  # the gradient alone moves: a stale leaf would add into the old one
    check()
    net.to(torch.float64)  # both move
    x = x.double()
    check()


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
@pytest.mark.filterwarnings(f"ignore:{LAYOUT_HINT}:UserWarning")  # raw backward, outside a SupernetStep
def test_backward_that_would_lose_sliced_gradients_is_refused():
    """Sliced weights add into `.grad` in place: a gradient replaced between forward and backward,
    or a backward that builds a graph, would lose them silently, so backward refuses."""
    net = make_random_supernet("cifar-small").train()
    x = torch.randn(2, 3, 28, 28)
    out = net(x, net.space.min())
    net.zero_grad(set_to_none=True)  # the usual optimizer.zero_grad(), but after the forward
    with pytest.raises(RuntimeError, match="replaced between forward and backward"):
        out.sum().backward()
    out = net(x, net.space.min())
    with pytest.raises(RuntimeError, match="create_graph"):
        out.sum().backward(create_graph=True)
    net.zero_grad(set_to_none=False)  # zeroing in place keeps the gradients: allowed
    out.sum().backward()


def test_smaller_child_leaves_unused_weights_without_gradient():
    space = load_space("cifar-small")
    net = make_random_supernet("cifar-small").train()
    with training_step(net) as step:
        step.backward(net(torch.randn(2, 3, 28, 28), space.min()).sum())
    deepest = net.stages[1][2]  # stage 1 has depth 3 at most, min uses 1 block
    assert all(p.grad is None for p in deepest.parameters())
    w = net.stages[1][0].project.conv.weight  # min width 32 of 40
    assert w.grad[32:].abs().sum() == 0 and w.grad[:32].abs().sum() > 0


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_kernel_cropped_to_feature_map_gives_the_same_output(size, stride):
    gen = torch.Generator().manual_seed(size)
    x = torch.randn(2, 4, size, size, generator=gen)
    w = torch.randn(4, 1, 7, 7, generator=gen)
    k = effective_kernel(7, size)
    full = F.conv2d(x, w, None, stride, 3, 1, 4)
    cropped = F.conv2d(x, w[conv_index(w.shape, 4, 1, k) or ...], None, stride, k // 2, 1, 4)
    torch.testing.assert_close(cropped, full, atol=1e-6, rtol=0)


def test_mflops_match_fvcore(space_name):
    """Analytic MACs equal fvcore's conv + linear count exactly (tolerance 0). fvcore's total also
    counts batch norm (one op per element; 1-5% here), which the analytic model leaves out as
    once-for-all's counter does: the gap is exactly that and nothing else."""
    from fvcore.nn import FlopCountAnalysis

    net = random_supernet(space_name)
    for child in children(net.space, 4, seed=3):
        r = resolution(space_name, child)
        static = extract(net, child, r)
        flops = FlopCountAnalysis(static, torch.randn(1, 3, r, r))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        by_op = flops.by_operator()
        analytic = child_cost(net.space, child, r).macs
        assert by_op["conv"] + by_op["linear"] == analytic
        assert flops.total() - by_op["batch_norm"] == analytic


def _onnx_diff(name, child, tmp_path):
    """Largest |ONNX Runtime - PyTorch| of `child`'s exported static network."""
    net = random_supernet(name)
    r = resolution(name, child)
    static = extract(net, child, r)
    path = export_onnx(static, r, tmp_path / "child.onnx")
    x = torch.randn(3, 3, r, r)  # batch 3: the exported batch axis is dynamic
    return onnx_max_abs_diff(static, path, x)


# The largest, the smallest and a random child of the small space, a random child (cropped
# kernels, partial depths) of each larger one: their 50 random children each are in the slow suite.
@pytest.mark.parametrize("space_name, which", [("cifar-small", "max"), ("cifar-small", "min"),
                                               *((name, "random") for name in SPACES)])
def test_onnx_runtime_equals_pytorch(space_name, which, tmp_path):
    space = load_space(space_name)
    child = {"max": space.max(), "min": space.min(), "random": space.sample(random.Random(11))}[which]
    assert _onnx_diff(space_name, child, tmp_path) <= 1e-4


@pytest.mark.slow
def test_onnx_runtime_equals_pytorch_on_50_random_children(space_name, tmp_path):
    space = load_space(space_name)
    rng = random.Random(2024)
    diffs = [_onnx_diff(space_name, space.sample(rng), tmp_path) for _ in range(50)]
    assert max(diffs) <= 1e-4


@pytest.mark.parametrize("norm", [torch.nn.BatchNorm2d, ElasticBatchNorm2d])
def test_bn_recalibration_counts_every_image_once_whatever_the_batches(norm):
    from bignas.evaluate import recalibrate_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), norm(4))
    x = torch.randn(70, 3, 5, 5)
    x[64:] += 3.0  # a short last batch unlike the rest: weighted like a full one, it would pull the mean
    recalibrate_bn(model, [x[:64], x[64:]], torch.device("cpu"))
    with torch.no_grad():
        features = model[0](x)
    torch.testing.assert_close(model[1].running_mean, features.mean((0, 2, 3)))
    # equal batches: exactly PyTorch's cumulative average, so accuracies cached before stay valid
    reference = copy.deepcopy(model)
    reference[1].reset_running_stats()
    reference[1].momentum = None
    reference.train()
    for batch in x[:60].split(20):
        reference(batch)
    recalibrate_bn(model, x[:60].split(20), torch.device("cpu"))
    assert torch.equal(model[1].running_mean, reference[1].running_mean)
    assert torch.equal(model[1].running_var, reference[1].running_var)
    assert model[1].momentum == 0.1 and not model.training  # its own momentum back, in eval mode
