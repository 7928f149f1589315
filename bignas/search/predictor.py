"""An accuracy predictor: val top-1 of a child from its architecture, learned from evaluated children.

Features (`Featurizer`): the fixed-length child encoding (`SearchSpace.decisions`) one-hot, with
the kernel and expand of blocks beyond a stage's depth all zero (they do not shape the child; the
encoding of once-for-all's predictor), plus the child's MFLOPs and parameters as fractions of the
largest child's. Models, compared by cross-validated Kendall tau (`select`):
- `ridge`: ridge regression on those features, its penalty chosen by leave-one-out error (closed
  form) among `RIDGE_PENALTIES`;
- `mlp`: once-for-all's accuracy predictor (Cai et al., "Once-for-All", ICLR 2020, released
  `AccuracyPredictor`): 3 hidden layers of 400 ReLU units, the output bias set to the mean target,
  Adam 1e-3 with weight decay 1e-4, trained on the targets scaled to [0, 1].
Prediction is numpy only; torch trains the MLP. Everything is seeded: a fit is a function of its
data and seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bignas.cost import child_cost
from bignas.latency.stats import kendall, spearman
from bignas.space import Child, SearchSpace

KINDS = ("ridge", "mlp")
RIDGE_PENALTIES = (0.01, 0.1, 1.0, 10.0, 100.0)
MLP_HIDDEN, MLP_LAYERS, MLP_EPOCHS = 400, 3, 300
FOLDS = 5
MIN_CHILDREN = FOLDS * 2  # fewer cannot be cross-validated


class Featurizer:
    """Child -> feature vector (see the module docstring); one per space."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.decisions, self.blocks = space.decisions(), space.decision_blocks()
        self.offsets = np.cumsum([0] + [len(o) for _, o in self.decisions])
        largest = child_cost(space, space.max())
        self.max_mflops, self.max_params = largest.mflops, largest.params_m
        self.width = int(self.offsets[-1]) + 2

    def __call__(self, children: Sequence[Child]) -> np.ndarray:
        x = np.zeros((len(children), self.width), np.float64)
        for row, child in enumerate(children):
            codes = self.space.encode(child)
            for i, block in enumerate(self.blocks):
                if block is None or block[1] < child.stages[block[0]].depth:
                    x[row, self.offsets[i] + codes[i]] = 1.0
            cost = child_cost(self.space, child)
            x[row, -2:] = cost.mflops / self.max_mflops, cost.params_m / self.max_params
        return x


@dataclass
class Model:
    """A fitted model: `kind` and its arrays (ridge: w, b; mlp: W0, b0, ..., with the target scale)."""

    kind: str
    arrays: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)  # ridge: the chosen penalty

    def predict(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays
        if self.kind == "ridge":
            return x @ a["w"] + a["b"]
        h = x
        for i in range(MLP_LAYERS):
            h = np.maximum(h @ a[f"W{i}"] + a[f"b{i}"], 0.0)
        scaled = h @ a[f"W{MLP_LAYERS}"] + a[f"b{MLP_LAYERS}"]
        return scaled * a["scale"] + a["low"]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "info": self.info, "arrays": {k: v.tolist() for k, v in self.arrays.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Model":
        return cls(d["kind"], {k: np.asarray(v, np.float64) for k, v in d["arrays"].items()}, d.get("info", {}))


def fit(kind: str, x: np.ndarray, y: np.ndarray, seed: int) -> Model:
    y = np.asarray(y, np.float64)
    if kind == "ridge":
        return _fit_ridge(x, y)
    if kind == "mlp":
        return _fit_mlp(x, y, seed)
    raise ValueError(f"unknown predictor kind {kind!r} (known: {', '.join(KINDS)})")


def _fit_ridge(x: np.ndarray, y: np.ndarray) -> Model:
    """Ridge on centred data (the intercept is not penalised); the penalty with the least
    leave-one-out squared error, computed in closed form from the hat matrix's diagonal."""
    mx, my = x.mean(0), y.mean()
    xc, yc = x - mx, y - my
    best = None
    for lam in RIDGE_PENALTIES:
        inverse = np.linalg.inv(xc.T @ xc + lam * np.eye(x.shape[1]))
        w = inverse @ xc.T @ yc
        leverage = np.einsum("ij,jk,ik->i", xc, inverse, xc) + 1 / len(y)
        loo = np.mean(((yc - xc @ w) / np.maximum(1 - leverage, 1e-9)) ** 2)
        if best is None or loo < best[0]:
            best = (loo, lam, w)
    _, lam, w = best
    return Model("ridge", {"w": w, "b": np.asarray(my - mx @ w)}, {"penalty": lam})


def _fit_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> Model:
    import torch
    from torch import nn

    low, high = float(y.min()), float(y.max())
    scale = high - low if high > low else 1.0
    target = torch.tensor((y - low) / scale, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    sizes = [x.shape[1]] + [MLP_HIDDEN] * MLP_LAYERS + [1]
    layers = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    with torch.no_grad():  # PyTorch's default init, drawn from `g` (no global RNG state)
        for layer in layers:
            bound = 1 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.uniform_(-bound, bound, generator=g)
        layers[-1].bias.fill_(float(target.mean()))  # once-for-all: the output starts at the mean
    net = nn.Sequential(*[m for layer in layers[:-1] for m in (layer, nn.ReLU())], layers[-1])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    inputs = torch.tensor(x, dtype=torch.float32)
    batch = min(len(y), 256)
    for _ in range(MLP_EPOCHS):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            pick = order[i:i + batch]
            loss = nn.functional.mse_loss(net(inputs[pick]).squeeze(-1), target[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    arrays = {}
    for i, layer in enumerate(layers):
        arrays[f"W{i}"] = layer.weight.detach().double().numpy().T.copy()
        arrays[f"b{i}"] = layer.bias.detach().double().numpy().copy()
    arrays[f"W{MLP_LAYERS}"] = arrays[f"W{MLP_LAYERS}"][:, 0]
    arrays[f"b{MLP_LAYERS}"] = arrays[f"b{MLP_LAYERS}"][0]
    arrays.update(scale=np.asarray(scale), low=np.asarray(low))
    return Model("mlp", arrays)


def agreement(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Kendall tau, Spearman and mean absolute error (top-1 points) of predictions against measurements."""
    return {"kendall": round(kendall(predicted, measured), 4), "spearman": round(spearman(predicted, measured), 4),
            "mae_points": round(float(100 * np.abs(predicted - measured).mean()), 4)}


def cross_validate(kind: str, x: np.ndarray, y: np.ndarray, seed: int, folds: int = FOLDS) -> dict[str, float]:
    """`agreement` of out-of-fold predictions, pooled over `folds` seeded folds."""
    if len(y) < 2 * folds:
        raise ValueError(f"cross-validation needs at least {2 * folds} children, got {len(y)}")
    order = np.random.default_rng(seed).permutation(len(y))
    out = np.empty(len(y))
    for k in range(folds):
        held = order[k::folds]
        kept = np.setdiff1d(order, held)
        out[held] = fit(kind, x[kept], y[kept], seed + k).predict(x[held])
    return agreement(out, y)


def select(x: np.ndarray, y: np.ndarray, seed: int, kinds: Sequence[str] = KINDS) -> tuple[Model, dict[str, Any]]:
    """The kind with the best cross-validated Kendall tau (ties: the first of `kinds`), refitted on all
    the data, and every kind's cross-validated agreement."""
    cv = {kind: cross_validate(kind, x, y, seed) for kind in kinds}
    best = max(kinds, key=lambda k: (cv[k]["kendall"], -kinds.index(k)))
    return fit(best, x, y, seed), cv
