"""A REINFORCE controller: NAS-RL (Zoph & Le, "Neural Architecture Search with Reinforcement
Learning", ICLR 2017) over the shared weights, as in ENAS (Pham et al., "Efficient Neural
Architecture Search via Parameter Sharing", ICML 2018), with a latency-aware reward.

The controller emits one decision per step of the space's fixed-length encoding
(`SearchSpace.decisions()`: resolution, stem, then per stage depth, width, each block's kernel and
expand, then head; decisions with one option are no step); `decode` builds the child.
`policy=lstm` (default) is the ENAS controller: one LSTM layer, stepped once per decision, whose
input is the embedding of the previous choice, one linear head per decision; `policy=factorised`
has independent logits per decision. Logits are bounded to +-tanh_constant. See `controller.py`.

Training (Williams 1992; Zoph & Le, Sec. 3.2): each `ask` samples `batch` encodings at once from
the current policy and asks for the new feasible ones; after `tell`, one Adam step on
    -mean_b[(R_b - baseline) * log p(a_b)] - entropy_weight * mean_b[H(p(. | a_b))],
then baseline <- decay * baseline + (1 - decay) * mean_b R_b (ENAS's exponential moving-average
baseline, started at the first batch's mean; the entropy bonus of its released controller).
Decisions that do not shape the child (blocks beyond a stage's depth) are masked out of log p and
H. The budgets here are 20-60 evaluations, not ENAS's thousands of controller steps, hence a small
batch and a large learning rate (see `ReinforceSettings`).

Reward. u = the child's largest fraction of any budget (`TargetView.budget_use`): latency / T, T
the target's latency budget, when that budget binds; its MFLOPs or params fraction when one of those
binds (or there is no latency budget), so the reward aims at the budget the child will hit.
- `absolute` (default; Bender et al., "Can Weight Sharing Outperform Random Architecture Search?
  An Investigation with TuNAS", CVPR 2020): R = acc + beta * |u - 1|, beta < 0.
- `mnasnet` (Tan et al., "MnasNet", CVPR 2019, Sec. 3): R = acc * u ** w, w <= 0.
With no budget at all, R = acc. Why `absolute` for a HARD budget: infeasible children are never
evaluated, so every evaluated child has u <= 1. There MnasNet's soft reward (w = -0.07) rewards a
child for being *further* under the budget, pulling the controller towards small children, and its
hard form (w = 0 below T) says nothing about cost. The most accurate feasible child lies near u = 1
(accuracy grows with size), and the absolute reward peaks exactly there, from both sides. beta =
-0.3 costs a child 10% under (or over) the budget 0.03 of reward (3 top-1 points): strong, as the
cost term only steers where the controller looks; the search still reports the most accurate child.

Infeasible samples are never asked and never cost an evaluation: they are scored with the lowest
accuracy evaluated so far as their accuracy (pessimistic: they cannot be deployed), so
R = acc_min + beta * (u - 1) (or acc_min * u ** w), and enter the update like any sample. Before
any accuracy is known only the cost term tells samples apart: a batch's rewards are then centred
(no baseline yet). Samples already evaluated get their known reward again, without being asked.
A batch with no new child is learned from at once and sampling goes on, at most MAX_SAMPLES per
ask; then one uniform feasible child (`base.Proposals`, whose reward is recorded but not
learned from: it is off-policy); then [].

Determinism and resume: the torch seed is drawn from the given `rng`, parameters are initialised
and samples drawn with one `torch.Generator`: no global RNG state is read or changed. The policy is
a function of that seed and of the rewards, so a re-run of a killed search re-asks the same
children in the same order and, with their cached accuracies, rebuilds the same controller.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from bignas.schema import rules
from bignas.search.strategies import register
from bignas.search.strategies.base import Proposals
from bignas.space import Child, SearchSpace

if TYPE_CHECKING:  # types only: the registry stays light for the CLI
    from bignas.search.problem import Evaluated, TargetView

MAX_SAMPLES = 256  # architectures drawn per ask before falling back to a random feasible child


@dataclass(frozen=True)
class ReinforceSettings:
    # Tuned on the synthetic problem of tests/test_strategies.py (12 seeds, budgets 20, 40 and 60):
    # a batch of 8 with lr 0.2 (as good as 4 with lr 0.1, at half the controller steps per child)
    # moves the policy in the 3-10 updates a budget allows; a short baseline memory (0.7) follows
    # the rewards as the policy moves (0.9 lagged); a bound of 1.5 (an option at most e^3 = 20
    # times likelier than another) keeps new children coming where 2.5 let the controller
    # collapse onto ones it had already evaluated.
    policy: Literal["lstm", "factorised"] = rules("lstm", help="lstm: the ENAS controller; factorised: "
                                                              "independent logits per decision")
    hidden: int = rules(32, positive=True, max=512, help="LSTM hidden and embedding size")
    lr: float = rules(0.2, positive=True, help="Adam learning rate of the controller")
    baseline_decay: float = rules(0.7, min=0.0, below=1.0, help="decay of the moving-average reward baseline")
    entropy_weight: float = rules(0.001, min=0.0, help="weight of the entropy bonus")
    tanh_constant: float = rules(1.5, positive=True, help="logits are bounded to +-C (C*tanh): no option dies")
    reward: Literal["absolute", "mnasnet"] = rules("absolute", help="absolute: acc + beta*|u-1| (TuNAS), mnasnet: "
                                                                   "acc * u**w; u = the budget's use, e.g. latency/T")
    beta: float = rules(-0.3, max=0.0, help="cost coefficient of the absolute reward (TuNAS beta)")
    w: float = rules(-0.07, max=0.0, help="cost exponent of the mnasnet reward")
    batch: int = rules(8, positive=True, help="architectures sampled per update")


def packing(space: SearchSpace) -> Any:
    """The controller's view of `space`'s encoding (see `controller.Packing`): its decisions with
    more than one option (a fixed one is no choice: code 0, not a controller step)."""
    from bignas.search.strategies.controller import Packing

    decisions, blocks = space.decisions(), space.decision_blocks()
    free = [i for i, (_, options) in enumerate(decisions) if len(options) > 1]
    at = {decisions[i][0]: k for k, i in enumerate(free)}  # name -> position among the free ones
    parents: list[tuple[int, int] | None] = []
    for i in free:
        depth = f"stages[{blocks[i][0]}].depth" if blocks[i] else None
        parents.append((at[depth], blocks[i][1]) if depth in at else None)  # a fixed depth: always active
    depths = {at[name]: options for name, options in decisions if name in at and name.endswith(".depth")}
    return Packing([len(decisions[i][1]) for i in free], parents, depths, free, len(decisions))


@register("reinforce", settings=ReinforceSettings,
          help="an LSTM controller trained with REINFORCE on a latency-aware reward (NAS-RL / ENAS)")
class Reinforce:
    def __init__(self, problem: TargetView, rng: random.Random, budget: int, settings: ReinforceSettings) -> None:
        import torch

        from bignas.search.strategies.controller import POLICIES, one_thread

        self.view, self.rng, self.s, self.one_thread = problem, rng, settings, one_thread
        self.space = problem.space
        p = problem.problem
        self.has_budget = bool(p.max_mflops or p.max_params_m or (problem.target is not None and problem.target.max_ms))
        self.generator = torch.Generator().manual_seed(rng.getrandbits(62))
        self.policy = POLICIES[settings.policy](packing(self.space), settings.hidden, settings.tanh_constant,
                                                self.generator)
        # fused: one kernel per step, half the step time of the default
        self.optimizer = torch.optim.Adam(self.policy.parameters(), settings.lr, fused=True)
        self.rewards: dict[str, float] = {}  # evaluated: hash -> reward
        self.top1_min: float | None = None
        self.over: dict[str, float] = {}  # infeasible: hash -> budget use
        self.proposals = Proposals(self.space, problem.fits, rng)  # what was asked
        self.pending: tuple[Any, Any, list[str]] | None = None  # the samples of the last ask, rated at tell
        self.children: dict[tuple[int, ...], tuple[str, Child]] = {}
        self.baseline: float | None = None

    def reward(self, top1: float, use: float) -> float:
        if not self.has_budget:
            return top1
        if self.s.reward == "mnasnet":
            return top1 * max(use, 1e-6) ** self.s.w
        return top1 + self.s.beta * abs(use - 1)

    def ask(self, n: int) -> list[Child]:
        if self.proposals.exhausted:
            return []
        drawn = 0
        while drawn < MAX_SAMPLES and self.policy.p.n:  # n = 0: a space of one child
            codes = self.policy.sample(self.s.batch, self.generator)
            active = self.policy.p.active(codes)
            drawn += self.s.batch
            hashes, asked = [], {}
            for key in self.policy.p.full(codes * active.long()).tolist():  # canonical: as `encode` writes it
                h, child = self.child_of(tuple(key))
                hashes.append(h)
                if h in self.rewards or h in self.over or h in asked:
                    continue
                if not self.view.fits(child):
                    self.over[h] = self.view.budget_use(child)
                elif len(asked) < n:  # beyond n (the end of the budget): left unrated
                    asked[h] = child
            if asked:
                self.pending = (codes, active, hashes)
                return self.proposals.extend(list(asked.values()), len(asked))
            self.learn(codes, active, hashes)
        return self.proposals.extend([], 1)

    def child_of(self, key: tuple[int, ...]) -> tuple[str, Child]:
        """(hash, child) of canonical codes, memoised: a trained policy draws the same ones often."""
        if key not in self.children:
            child = self.space.decode(key)
            self.children[key] = (child.hash, child)
        return self.children[key]

    def tell(self, results: Sequence[Evaluated]) -> None:
        for e in results:
            self.rewards[e.child.hash] = self.reward(e.top1, self.view.budget_use(e.child))
            self.top1_min = e.top1 if self.top1_min is None else min(self.top1_min, e.top1)
        if self.pending is not None:
            self.learn(*self.pending)
            self.pending = None

    def learn(self, codes: Any, active: Any, hashes: list[str]) -> None:
        """One REINFORCE step on the rated samples of a batch (evaluated or infeasible)."""
        import torch

        floor = self.top1_min if self.top1_min is not None else 1.0  # unknown: the cost term alone counts
        rated, values = [], []
        for b, h in enumerate(hashes):
            if h in self.rewards:
                rated.append(b)
                values.append(self.rewards[h])
            elif h in self.over:
                rated.append(b)
                values.append(self.reward(floor, self.over[h]))
        if not rated:
            return
        r = torch.tensor(values, dtype=torch.float32)
        mean = float(r.mean())
        if self.top1_min is None:  # only infeasible samples yet: no accuracy to scale a baseline
            baseline = mean
        else:
            baseline = mean if self.baseline is None else self.baseline
            self.baseline = self.s.baseline_decay * baseline + (1 - self.s.baseline_decay) * mean
        if len(rated) < len(hashes):
            codes, active = codes[rated], active[rated]
        # loss = -mean_b[A_b * sum_i active * log p] - entropy_weight * mean_b[sum_i active * H]: the
        # weights of both sums are constants, formed first, so that autograd records four ops
        weight = r.sub_(baseline).div_(-len(rated))[:, None] * active
        bonus = active * (-self.s.entropy_weight / len(rated))
        with self.one_thread():
            logp, entropy = self.policy.score(codes)
            loss = (logp * weight + entropy * bonus).sum()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
