"""SupernetStep: the one owner of a supernet's zero / backward / average / clip / step contract."""

import contextlib
import copy
import warnings

import pytest
import torch
from torch import nn

from bignas.nn import SupernetStep
from bignas.nn.step import LAYOUT_HINT
from bignas.train.config import SandwichConfig
from bignas.train.sandwich import children_for_step, distill_loss, sandwich_backward
from conftest import make_random_supernet

SANDWICH = dict(label_smoothing=0.1, dropout=0.0, drop_connect=0.0, distill=distill_loss(SandwichConfig()),
                autocast=contextlib.nullcontext)


@pytest.fixture(scope="module")
def tiny():
    """A trainable tiny supernet and one step's batch; tests copy the supernet."""
    net = make_random_supernet("cifar-small").train()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 28, 28, generator=gen)
    labels = torch.randint(0, net.space.num_classes, (4,), generator=gen)
    return net, images, labels


def sgd(net):
    # Momentum, so a second step depends on the first having been taken exactly once.
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)


def halve(model):
    """A stand-in for the all-reduce: deterministic, and it changes the clipped result if it ran
    after clipping instead of before."""
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(0.5)


def params(net):
    return [p.detach().clone() for p in net.parameters()]


def grad_norm(net):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters() if p.grad is not None]))


def test_step_equals_the_manual_sequence_and_is_reusable(tiny):
    """Two steps through one SupernetStep give the parameters of the hand-written sequence it
    replaces: zero in place, backward of every child, average, clip, optimizer step."""
    net, images, labels = tiny
    manual, stepped = copy.deepcopy(net), copy.deepcopy(net)
    clip = 0.5
    opt_manual, opt_stepped = sgd(manual), sgd(stepped)
    step = SupernetStep(stepped, opt_stepped, grad_clip=clip, average=halve)
    for i in range(2):
        children = children_for_step(net.space, 0, i, 2)
        opt_manual.zero_grad(set_to_none=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=LAYOUT_HINT, category=UserWarning)
            sandwich_backward(manual, images, labels, children, **SANDWICH, backward=lambda loss: loss.backward())
        halve(manual)
        nn.utils.clip_grad_norm_(manual.parameters(), clip)
        opt_manual.step()
        with step:
            sandwich_backward(stepped, images, labels, children, **SANDWICH, backward=step.backward)
    assert grad_norm(manual) > clip / 2  # clipping was active, so its place in the order matters
    for want, got in zip(manual.parameters(), stepped.parameters()):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), stepped.parameters()))


def test_an_exception_inside_the_step_takes_no_step(tiny):
    net, images = copy.deepcopy(tiny[0]), tiny[1]
    calls = []
    step = SupernetStep(net, sgd(net), grad_clip=0.5, average=calls.append)
    before, filters = params(net), list(warnings.filters)
    with pytest.raises(ValueError, match="mid-step"):
        with step:
            step.backward(net(images, net.space.min()).logsumexp(1).sum())
            raise ValueError("mid-step")
    assert calls == [] and warnings.filters == filters  # no average; the filter was left
    for want, got in zip(before, net.parameters()):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    with step:  # usable again, and its entry zeroes the partial gradients first
        step.backward(net(images, net.space.min()).logsumexp(1).sum())
    assert calls == [net]
    assert any(not torch.equal(p, q) for p, q in zip(before, net.parameters()))


def test_grad_clip_is_applied(tiny):
    net, images, labels = tiny
    norms = {}
    for clip in (None, 1e-3):
        model = copy.deepcopy(net)
        with SupernetStep(model, torch.optim.SGD(model.parameters(), lr=0.1), grad_clip=clip) as step:
            step.backward(model(images, model.space.max()).logsumexp(1).sum())
        norms[clip] = grad_norm(model)  # clip_grad_norm_ scales `.grad` in place, before the step
    assert norms[None] > 1.0
    torch.testing.assert_close(norms[1e-3], torch.tensor(1e-3), rtol=1e-3, atol=0)


def test_average_runs_once_per_clean_step_after_every_backward(tiny):
    net, images, labels = copy.deepcopy(tiny[0]), *tiny[1:]
    backwards, seen = [], []

    def average(model):
        seen.append((model, len(backwards)))

    step = SupernetStep(net, sgd(net), average=average)
    for i in range(2):
        with step:
            sandwich_backward(net, images, labels, children_for_step(net.space, 0, i, 2), **SANDWICH,
                              backward=lambda loss: (backwards.append(loss), step.backward(loss)))
    assert seen == [(net, 4), (net, 8)]  # 4 children a step, averaged once after the last


def test_misuse_is_refused(tiny):
    net = copy.deepcopy(tiny[0])
    step = SupernetStep(net, sgd(net))
    loss = net(tiny[1], net.space.min()).sum()
    with pytest.raises(RuntimeError, match="outside a `with` block"):
        step.backward(loss)
    with step:
        with pytest.raises(RuntimeError, match="entered again"):
            step.__enter__()


def test_no_layout_hint_escapes_a_step(tiny):
    """Autograd warns once per process, so warn always here: otherwise an earlier test that
    triggered the hint would make this one pass whatever the step does."""
    net, images, labels = copy.deepcopy(tiny[0]), *tiny[1:]
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as raw:
            warnings.simplefilter("always")
            net(images, net.space.min()).sum().backward()
        assert any(LAYOUT_HINT in str(w.message) for w in raw)  # the hint is there to be silenced
        step = SupernetStep(net, sgd(net))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for i in range(2):
                with step:
                    sandwich_backward(net, images, labels, children_for_step(net.space, 0, i, 2), **SANDWICH,
                                      backward=step.backward)
        assert [str(w.message) for w in seen if LAYOUT_HINT in str(w.message)] == []
    finally:
        torch.set_warn_always(always)


def test_soft_cross_entropy_at_a_temperature_keeps_the_gradient_scale():
    from bignas.train.sandwich import soft_cross_entropy

    gen = torch.Generator().manual_seed(1)
    student = torch.randn(6, 10, generator=gen, requires_grad=True)
    teacher = torch.randn(6, 10, generator=gen)
    t = 4.0
    soft_cross_entropy(student, torch.softmax(teacher / t, 1), t).backward()
    # d/ds of T^2 * H(softmax(teacher/T), softmax(s/T)) is T * (softmax(s/T) - softmax(teacher/T)) / N
    expected = t * (torch.softmax(student.detach() / t, 1) - torch.softmax(teacher / t, 1)) / 6
    torch.testing.assert_close(student.grad, expected)


def _alpha_divergence_exact(student, teacher, alpha):
    """D_alpha(p||q) per image from its definition, differentiable in the student's logits."""
    q, p = torch.softmax(student, 1), torch.softmax(teacher, 1)
    return (q * ((p / q) ** alpha - 1)).sum(1) / (alpha * (alpha - 1))


def test_alpha_divergence_is_the_larger_divergence_with_its_exact_gradient_where_nothing_is_clipped():
    from bignas.train.sandwich import alpha_divergence

    gen = torch.Generator().manual_seed(2)
    student = torch.randn(16, 10, generator=gen, requires_grad=True)
    teacher = torch.randn(16, 10, generator=gen)
    low, high = -1.0, 2.0
    alpha_divergence(student, teacher, low, high, clip=1e9).backward()
    got = student.grad.clone()

    exact = torch.maximum(_alpha_divergence_exact(student, teacher, low),
                          _alpha_divergence_exact(student, teacher, high))
    student.grad = None
    exact.mean().backward()
    torch.testing.assert_close(got, student.grad)
    picks = _alpha_divergence_exact(student, teacher, low) > _alpha_divergence_exact(student, teacher, high)
    assert 0 < picks.sum() < 16  # both ends were picked for some images: the test covers the choice
    torch.testing.assert_close(alpha_divergence(student, teacher, low, high, clip=1e9), exact.mean())


def test_alpha_divergence_at_alpha_one_is_the_kl_of_soft_cross_entropy_and_its_clip_bounds_the_gradient():
    from bignas.train.sandwich import alpha_divergence, soft_cross_entropy

    gen = torch.Generator().manual_seed(3)
    teacher = torch.randn(8, 10, generator=gen)
    student = torch.randn(8, 10, generator=gen, requires_grad=True)
    # alpha = 1 (and within 1e-3 of it): KL(p||q), whose gradient is that of the soft cross-entropy.
    alpha_divergence(student, teacher, 1.0 - 1e-4, 1.0, clip=5.0).backward()
    kl_grad = student.grad.clone()
    student.grad = None
    soft_cross_entropy(student, torch.softmax(teacher, 1)).backward()
    torch.testing.assert_close(kl_grad, student.grad, atol=1e-6, rtol=1e-4)

    # A student sure of a class the teacher rules out: its unclipped alpha=-1 weights q/p are huge.
    confident = torch.zeros(1, 10)
    confident[0, 0] = 30.0
    unsure = torch.zeros(1, 10)
    unsure[0, 0] = -30.0
    grads = []
    for clip in (5.0, 1e30):
        s = confident.clone().requires_grad_(True)
        alpha_divergence(s, unsure, -1.0, 1.0, clip=clip).backward()
        grads.append(s.grad.abs().max().item())
    assert grads[0] <= 5.0 < grads[1]


def test_alpha_divergence_at_alpha_zero_is_the_reverse_kl_and_stays_finite_on_extreme_logits():
    from bignas.train.sandwich import alpha_divergence

    gen = torch.Generator().manual_seed(4)
    teacher = torch.randn(8, 10, generator=gen)
    student = torch.randn(8, 10, generator=gen, requires_grad=True)
    value = alpha_divergence(student, teacher, 0.0, 0.0, clip=1e9)
    value.backward()
    got = student.grad.clone()
    student.grad = None
    q_log, p_log = torch.log_softmax(student, 1), torch.log_softmax(teacher, 1)
    reverse_kl = (q_log.exp() * (q_log - p_log)).sum(1).mean()  # KL(q||p)
    reverse_kl.backward()
    torch.testing.assert_close(got, student.grad)
    torch.testing.assert_close(value, reverse_kl)

    extreme = torch.zeros(2, 10)
    extreme[:, 0] = 1e4
    s = (-extreme).requires_grad_(True)
    loss = alpha_divergence(s, extreme, -1.0, 1.0, clip=5.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
