"""The torch policies of the `reinforce` strategy: a distribution over a space's child encoding.

Imported only when a `reinforce` search starts (the strategy registry must stay light for the
CLI), so torch is imported here at the top. No global RNG state is read or written: parameters
are initialised and architectures sampled with one explicit `torch.Generator`.

Both policies are `torch.nn.Module`s that emit one option index per decision of
`SearchSpace.decisions()`, in its order, and score a batch of encodings at once. The options of
every decision are packed into one axis of length K (decision i owns the slice
`offsets[i]:offsets[i] + sizes[i]`), so one linear layer gives the logits of every decision, and
one masked `log_softmax` normalises each decision's slice.

- `LSTMPolicy` (Zoph & Le 2017, Sec. 3.1; Pham et al. 2018, "ENAS"): one LSTM layer steps
  once per decision; its input is a learned start vector, then the embedding of the option chosen
  at the previous decision (an embedding row per option of every decision); a linear head per
  decision (one packed `nn.Linear`) reads the hidden state. Parameters are uniform in [-0.1, 0.1]
  (as in ENAS) except the heads, which start at zero: the first architectures are uniform, as in
  random search.
- `FactorisedPolicy`: independent categorical logits per decision, zero-initialised.

Every logit is bounded, `bound * tanh(logit)` (the logit clipping of Bello et al., "Neural
Combinatorial Optimization with Reinforcement Learning", 2016, that ENAS's controller uses): an
option is never more than exp(2 * bound) times likelier than another, so a policy that has found a
good region keeps proposing new children near it instead of collapsing onto the ones it has seen.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

INIT_RANGE = 0.1  # the ENAS controller's initialisation: uniform in [-0.1, 0.1]
_MASKED = -1e9  # a logit outside a decision's slice: exp() underflows to exactly 0


class Packing:
    """Where each decision's options lie on the packed option axis, and which decisions matter.
    The controller steps only through the decisions with a choice: `columns` are their positions
    among the `width` decisions of the encoding.

    `parents[i]` = (index of stage depth decision, block j) when decision i is a kernel / expand of
    block j of that stage: it only shapes the child when the stage's depth is greater than j (the
    encoding keeps such blocks, `decode` ignores them). `depth_values[i]` are a depth decision's
    options."""

    def __init__(self, sizes: Sequence[int], parents: Sequence[tuple[int, int] | None],
                 depth_values: dict[int, Sequence[int]], columns: Sequence[int], width: int) -> None:
        self.sizes = list(sizes)
        self.columns, self.width = torch.tensor(list(columns), dtype=torch.long), width
        self.n = len(self.sizes)
        offsets = [0]
        for k in self.sizes[:-1]:
            offsets.append(offsets[-1] + k)
        self.k = sum(self.sizes)
        self.offset_list = offsets
        self.offsets = torch.tensor(offsets, dtype=torch.long)
        inside = torch.zeros(self.n, self.k, dtype=torch.bool)
        for i, (o, k) in enumerate(zip(offsets, self.sizes)):
            inside[i, o:o + k] = True
        self.penalty = torch.zeros(self.n, self.k).masked_fill_(~inside, _MASKED)  # added to packed logits
        child = [i for i, p in enumerate(parents) if p is not None]
        self.child_cols = torch.tensor(child, dtype=torch.long)
        self.parent_cols = torch.tensor([parents[i][0] for i in child], dtype=torch.long)
        self.block = torch.tensor([parents[i][1] for i in child], dtype=torch.long)
        table = torch.zeros(self.n, max(self.sizes, default=1), dtype=torch.long)
        for i, values in depth_values.items():
            table[i, :len(values)] = torch.tensor(list(values))
        self.depth_table = table

    def full(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, width) codes of every decision of the encoding from the controller's (B, n): 0 for fixed ones."""
        out = codes.new_zeros(codes.shape[0], self.width)
        out[:, self.columns] = codes
        return out

    def active(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, n) float mask: 1 where a decision shapes the child, 0 for blocks beyond a stage's depth."""
        mask = torch.ones(codes.shape, dtype=torch.float32)
        if len(self.child_cols):
            depth = self.depth_table[self.parent_cols, codes[:, self.parent_cols]]  # (B, n')
            mask[:, self.child_cols] = (depth > self.block).float()
        return mask

    def score(self, logits: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probability of `codes` (B, n) and entropy, from packed logits (B, n, K)."""
        masked = logits + self.penalty
        logp = torch.log_softmax(masked, dim=-1)
        chosen = logp.gather(-1, (codes + self.offsets).unsqueeze(-1)).squeeze(-1)
        entropy = -(torch.softmax(masked, dim=-1) * logp).sum(-1)  # not logp.exp(): exp() of underflows is slow
        return chosen, entropy


def gumbel_noise(steps: int, batch: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, batch, width) standard Gumbel noise: argmax(logits + noise) over a row's first k
    entries is an exact draw from softmax(logits) over those k options (the Gumbel-max trick)."""
    u = torch.rand(steps, batch, width, generator=generator)  # in [0, 1): -log(-log(0)) = -inf, never drawn
    return -torch.log(-torch.log(u))


class FactorisedPolicy(nn.Module):
    def __init__(self, packing: Packing, hidden: int, bound: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.bound = packing, bound
        self.logits = nn.Parameter(torch.zeros(packing.k))  # zero: uniform

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, n) option indices."""
        p = self.p
        with torch.no_grad():
            probs = torch.softmax(self.bound * torch.tanh(self.logits) + p.penalty, -1)  # (n, K)
            packed = torch.multinomial(probs, batch, replacement=True, generator=generator)  # (n, batch)
            return packed.t() - p.offsets

    def score(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probabilities of `codes` (B, n) and entropies (B, n), with gradients."""
        logits = self.bound * torch.tanh(self.logits)
        return self.p.score(logits.expand(codes.shape[0], self.p.n, -1), codes)


class LSTMPolicy(nn.Module):
    def __init__(self, packing: Packing, hidden: int, bound: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.bound = packing, bound
        # Default inits draw from the global RNG: build inside a fork of it (left as it was), then
        # initialise every parameter from `generator`. (nn.utils.skip_init does the same on the
        # "meta" device, but its first call in a process imports torch._dynamo: 1.2 s.)
        with torch.random.fork_rng(devices=[]):
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)  # `sample` steps it as a cell
            self.embed = nn.Embedding(packing.k, hidden)  # row offsets[i] + j: option j of decision i
            self.head = nn.Linear(hidden, packing.k)  # every decision's head, packed
        self.start = nn.Parameter(torch.empty(hidden))
        for param in [*self.lstm.parameters(), self.embed.weight, self.start]:
            nn.init.uniform_(param, -INIT_RANGE, INIT_RANGE, generator=generator)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, n) option indices: the batch steps through the decisions together, one LSTM cell
        step per decision, reading decision i's head on its slice of the packed option axis; the
        draw is Gumbel-max (`gumbel_noise`). A step is a dozen ops on (batch, 4 * hidden) arrays,
        so per-op dispatch is the cost: the steps run in numpy on the parameters (about 2 us an op
        here, torch about 5: a draw of cifar-small's 33 decisions takes 0.8 ms; stepped in torch
        it took 2.7). Every input is the start vector or an option's embedding, so the input half of the
        gates is computed once per draw for all of them. `score` runs the same parameters in
        torch; a test checks that the draws are Gumbel-max on its logits."""
        p, lstm, hs = self.p, self.lstm, self.lstm.hidden_size
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: with the input, forget and output columns of the gate
        # weights halved (exact in floating point), one tanh gives every gate of a step, and it never
        # overflows as exp(-x) does (numpy's overflow warnings cost more than a step once weights grow)
        scale = np.full(4 * hs, 0.5, np.float32)
        scale[2 * hs:3 * hs] = 1.0  # PyTorch's gate order: input, forget, cell (tanh), output
        with torch.no_grad():
            noise = gumbel_noise(p.n, batch, max(p.sizes), generator).numpy()
            bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
            inputs = torch.addmm(bias, torch.cat([self.start[None], self.embed.weight]), lstm.weight_ih_l0.t()).numpy()
        inputs, recurrent = inputs * scale, lstm.weight_hh_l0.detach().t().numpy() * scale
        head_weight, head_bias = self.head.weight.detach().t().numpy(), self.head.bias.detach().numpy()
        gx = np.broadcast_to(inputs[0], (batch, 4 * hs))  # row 0: the start; row 1 + offsets[i] + j: an option
        h, c = np.zeros((batch, hs), np.float32), np.zeros((batch, hs), np.float32)
        picks = np.empty((batch, p.n), np.int64)
        for i, (at, k) in enumerate(zip(p.offset_list, p.sizes)):
            t = np.tanh(gx + h @ recurrent)
            gate = 0.5 * t + 0.5
            c = gate[:, hs:2 * hs] * c + gate[:, :hs] * t[:, 2 * hs:3 * hs]
            h = gate[:, 3 * hs:] * np.tanh(c)
            logits = np.tanh(h @ head_weight[:, at:at + k] + head_bias[at:at + k]) * self.bound
            pick = (logits + noise[i, :, :k]).argmax(1)
            picks[:, i] = pick
            gx = inputs[1 + at + pick]
        return torch.from_numpy(picks)

    def score(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probabilities of `codes` (B, n) and entropies (B, n), with gradients.
        The inputs are known here (the start, then the embeddings of the given choices), so the
        LSTM runs over the whole sequence in one call: a third less search overhead than stepping
        it as a cell (measured, cifar-small)."""
        p, batch = self.p, codes.shape[0]
        previous = self.embed(codes[:, :-1] + p.offsets[:-1])  # (B, n - 1, h)
        hidden, _ = self.lstm(torch.cat([self.start.expand(batch, 1, -1), previous], 1))  # (B, n, h)
        return p.score(self.bound * torch.tanh(self.head(hidden)), codes)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the controller's tiny ops on one thread: on a busy 2-core host, intra-op threads made
    them several times slower. The caller's setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


POLICIES = {"lstm": LSTMPolicy, "factorised": FactorisedPolicy}
