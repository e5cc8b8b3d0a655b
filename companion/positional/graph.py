"""Positional encodings for graphs (chapter P4): the encodings and a small message-passing classifier.

The encodings live in :mod:`companion.positional.graph_pe` (Laplacian
eigenvectors, random-walk return probabilities, random feature propagation) and
:mod:`companion.positional.graph_ego` (edge-level ego-network counts, 1-WL colour
refinement); this module adds :class:`SimpleMPNN`, a GIN-style
network with a sum readout, with :func:`graph_batch` and :func:`fit_graph_classifier`
to train it on a list of small graphs.

Example
-------
>>> import numpy as np
>>> from companion.data import csl_dataset
>>> from companion.positional import graph_batch, random_walk_pe
>>> graphs, labels = csl_dataset(0, 1)
>>> adj, x, mask = graph_batch(graphs, [random_walk_pe(g, 4) for g in graphs])
>>> tuple(adj.shape), tuple(x.shape)
((10, 41, 41), (10, 41, 5))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .._validation import check_float, check_int
from .graph_pe import as_adjacency

__all__ = ["SimpleMPNN", "graph_batch", "fit_graph_classifier", "GraphFitHistory"]


def graph_batch(
    graphs: Sequence[Any],
    features: Sequence[np.ndarray] | None = None,
    *,
    device: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a list of graphs into dense batched tensors for :class:`SimpleMPNN`.

    Every node gets a constant input feature 1; ``features[i]`` (n_i, f), when
    given, is appended after it.

    Parameters
    ----------
    graphs : sequence of scipy.sparse matrices or edge indices
        ``B`` undirected graphs (validated by :func:`as_adjacency`).
    features : sequence of arrays (n_i, f), optional
        Extra node features (e.g. a positional encoding), same ``f`` for all graphs.
    device : torch device, optional

    Returns
    -------
    adjacency : float32 tensor (B, n_max, n_max)
    x : float32 tensor (B, n_max, 1 + f)
        Zero rows for padding nodes.
    mask : bool tensor (B, n_max)
        True for real nodes.
    """
    if len(graphs) == 0:
        raise ValueError("graphs must not be empty")
    mats = [as_adjacency(g)[0] for g in graphs]
    sizes = [m.shape[0] for m in mats]
    n_max = max(sizes)
    f = 0
    if features is not None:
        if len(features) != len(mats):
            raise ValueError(f"features must have one array per graph ({len(mats)}); got {len(features)}")
        arrs = [np.asarray(ft, dtype=np.float32) for ft in features]
        f = arrs[0].shape[1] if arrs[0].ndim == 2 else -1
        for i, (arr, n) in enumerate(zip(arrs, sizes)):
            if arr.ndim != 2 or arr.shape != (n, f):
                raise ValueError(f"features[{i}] must have shape ({n}, {f}); got {arr.shape}")
    adj = np.zeros((len(mats), n_max, n_max), dtype=np.float32)  # (B, n_max, n_max)
    x = np.zeros((len(mats), n_max, 1 + f), dtype=np.float32)  # (B, n_max, 1 + f)
    mask = np.zeros((len(mats), n_max), dtype=bool)
    for i, (m, n) in enumerate(zip(mats, sizes)):
        adj[i, :n, :n] = m.toarray()
        x[i, :n, 0] = 1.0
        if f:
            x[i, :n, 1:] = arrs[i]
        mask[i, :n] = True
    return (torch.from_numpy(adj).to(device), torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device))


class SimpleMPNN(nn.Module):
    """A GIN-style message-passing graph classifier with a sum readout.

    Layer ``l`` computes ``h_i <- MLP_l((1 + eps_l) h_i + sum_{j ~ i} h_j)``; the graph
    vector is the sum over nodes of every layer's output (concatenated), and a
    linear layer maps it to class logits. Its power is bounded by 1-WL: without
    node features that break symmetry, it gives all regular graphs of the same
    size and degree the same output.

    Parameters
    ----------
    in_features : int
        Node input width (1 for the constant feature alone, 1 + k with a k-dim encoding).
    n_classes : int
    hidden : int, default 64
    layers : int, default 4

    Example
    -------
    >>> import torch
    >>> from companion.positional import SimpleMPNN
    >>> model = SimpleMPNN(3, 10, hidden=16, layers=2)
    >>> model(torch.zeros(2, 5, 5), torch.ones(2, 5, 3)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_features: int, n_classes: int, *, hidden: int = 64, layers: int = 4):
        super().__init__()
        in_features = check_int(in_features, "in_features", minimum=1)
        n_classes = check_int(n_classes, "n_classes", minimum=2)
        hidden = check_int(hidden, "hidden", minimum=1)
        layers = check_int(layers, "layers", minimum=1)
        self.embed = nn.Linear(in_features, hidden)
        self.eps = nn.Parameter(torch.zeros(layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()) for _ in range(layers)
        )
        self.head = nn.Linear(hidden * (layers + 1), n_classes)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_classes) from ``adjacency`` (B, n, n) and node features ``x`` (B, n, in_features)."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, n, 1)
        h = self.embed(x) * m  # (B, n, hidden)
        readouts = [h.sum(dim=1)]
        for eps, mlp in zip(self.eps, self.mlps):
            h = mlp((1.0 + eps) * h + adjacency @ h) * m
            readouts.append(h.sum(dim=1))  # (B, hidden)
        return self.head(torch.cat(readouts, dim=-1))


@dataclass
class GraphFitHistory:
    """Loss and accuracies recorded by :func:`fit_graph_classifier`."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


def _accuracy(model: nn.Module, batch: tuple[torch.Tensor, ...], y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(*batch).argmax(dim=-1)
    model.train()
    return float((pred == y).float().mean())


def fit_graph_classifier(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    y_train: Any,
    *,
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    y_test: Any = None,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 32,
    augment: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
    rng: Any = 0,
    eval_every: int = 25,
) -> GraphFitHistory:
    """Train a graph classifier with Adam and cross-entropy on minibatches of graphs.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(adjacency, x, mask)``, returns logits (B, classes).
    train, test : tuples ``(adjacency, x, mask)`` from :func:`graph_batch`
    y_train, y_test : int arrays (B,)
    steps : int, default 300
    lr : float, default 3e-3
    batch_size : int, default 32
    augment : callable ``(x, rng) -> x``, optional
        Applied to each training minibatch's node features (e.g. random sign flips
        of Laplacian eigenvector columns).
    rng : numpy.random.Generator or int
        Minibatch order and augmentation randomness.
    eval_every : int, default 25

    Returns
    -------
    GraphFitHistory
    """
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    eval_every = check_int(eval_every, "eval_every", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, strict_min=True)
    rng = np.random.default_rng(rng)
    device = train[0].device
    y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.long, device=device)
    if y_test is not None:
        y_test = torch.as_tensor(np.asarray(y_test), dtype=torch.long, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = GraphFitHistory()
    n = y_train.shape[0]
    for step in range(1, steps + 1):
        idx = torch.as_tensor(rng.choice(n, size=min(batch_size, n), replace=False), device=device)
        adj, x, mask = (t[idx] for t in train)
        if augment is not None:
            x = augment(x, rng)
        loss = nn.functional.cross_entropy(model(adj, x, mask), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            history.step.append(step)
            history.loss.append(float(loss.detach()))
            history.train_accuracy.append(_accuracy(model, train, y_train))
            history.test_accuracy.append(_accuracy(model, test, y_test) if test is not None else float("nan"))
    return history
