"""One optimizer step of a supernet: the only place that knows how its gradients must be handled."""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

from torch import Tensor, nn, optim

# Autograd's hint when a gradient is not laid out like its parameter (accumulate_grad.h).
LAYOUT_HINT = "grad and param do not obey the gradient layout contract"


@contextlib.contextmanager
def _layout_hint_ignored() -> Iterator[None]:
    """Silence autograd's hint that a gradient's layout "may impair performance". A `GradSlices`
    leaf that is a strided slice of its parameter would like a contiguous gradient, and its gradient
    is the matching slice of the parameter's by design, so the hint is expected and harmless."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LAYOUT_HINT, category=UserWarning)
        yield


class SupernetStep:
    """The training contract of a supernet, one optimizer step per `with` block::

        step = SupernetStep(supernet, optimizer, grad_clip=1.0, average=dist.average_gradients)
        for images, labels in batches:
            with step:
                sandwich_backward(supernet, images, labels, children, ..., backward=step.backward)

    Entering zeroes the gradients in place; `backward` is the only backward of the step (every
    child of a sandwich step adds into the same `.grad`); a clean exit averages the gradients
    across processes, clips them and takes the optimizer step. An exception inside the block
    takes no step and propagates; the next entry zeroes the partial gradients. One object serves
    a whole run: it may be entered again after each exit, but not while it is entered.

    Why this order, and why in one place:

    - Sliced weights add their gradients straight into `.grad` in place (`ops.GradSlices`), so
      each `.grad` must stay the same tensor from forward to backward. Hence zeroing with
      `set_to_none=False`, and before any forward of the step: a gradient replaced in between
      would lose the pass's gradients, and backward refuses to run (see `GradSlices.guard`).
    - Autograd warns once that such a slice's gradient "does not obey the gradient layout
      contract": expected and harmless here, so the warning is ignored inside the block, and
      only there.
    - Parameters get no autograd gradient of their own, so DDP, which listens to autograd hooks,
      is not used: `average` (`bignas.train.distributed.Distributed.average_gradients`)
      all-reduces `.grad` once, after the step's last backward and before clipping, so every
      process clips and steps on the same gradients.

    `optimizer` must hold every trainable parameter of `supernet`: it is what zeroes them.
    """

    def __init__(self, supernet: nn.Module, optimizer: optim.Optimizer, *,
                 grad_clip: float | None = None,
                 average: Callable[[nn.Module], None] | None = None) -> None:
        self.supernet = supernet
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.average = average
        self._quiet: contextlib.ExitStack | None = None  # set while entered

    def __enter__(self) -> SupernetStep:
        if self._quiet is not None:
            raise RuntimeError("SupernetStep entered again inside its own block: one step at a time")
        self.optimizer.zero_grad(set_to_none=False)
        quiet = contextlib.ExitStack()
        quiet.enter_context(_layout_hint_ignored())
        self._quiet = quiet
        return self

    def backward(self, loss: Tensor) -> None:
        """Backward of one child's loss; its gradients add into those of the step's other children."""
        if self._quiet is None:
            raise RuntimeError("SupernetStep.backward outside a `with` block of the step: gradients "
                               "would not be zeroed before it, nor stepped on after")
        loss.backward()

    def __exit__(self, exc_type, exc, tb) -> None:
        quiet, self._quiet = self._quiet, None
        if quiet is not None:
            quiet.close()
        if exc_type is not None:
            return
        if self.average is not None:
            self.average(self.supernet)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.supernet.parameters(), self.grad_clip)
        self.optimizer.step()
