"""Attention-pattern diagnostics and the training helper of chapter M2 (re-exported by ``induction``).

* :func:`previous_token_score`: how much each head attends from ``t`` to ``t - 1``.
* :func:`induction_score`: how much each head attends, from a token that occurred
  before, to the positions right after its earlier occurrences.
* :func:`train_induction_model`: trains on the triggered-bigram task with
  :func:`companion.nn.train` and records accuracies and both scores.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .._validation import check_array, check_float, check_int
from ..backend import array_kind, to_numpy

__all__ = ["attention_maps", "previous_token_score", "induction_score", "InductionRun", "train_induction_model"]


def _weights_numpy(weights: Any) -> np.ndarray:
    check_array(weights, "weights", ndim=4, dtype_kind="f")
    w = to_numpy(weights)
    if w.shape[-1] != w.shape[-2]:
        raise ValueError(f"weights must have shape (batch, heads, seq, seq); got {w.shape}")
    return w


def attention_maps(model: nn.Module, inputs: Any) -> list:
    """Per-layer attention weights of ``model`` on ``inputs``, as NumPy arrays.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(tokens, return_attention=True)``, e.g.
        :class:`~companion.memory.AttentionOnlyTransformer`.
    inputs : array of shape (batch, seq), integer
        NumPy array or torch tensor.

    Returns
    -------
    list of numpy.ndarray, each of shape (batch, heads, seq, seq)
        One per layer; row ``t`` of a map is the distribution over keys ``<= t``.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import AttentionOnlyConfig, AttentionOnlyTransformer, attention_maps
    >>> m = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=8, d_model=8))
    >>> [a.shape for a in attention_maps(m, np.zeros((2, 5), dtype=np.int64))]
    [(2, 1, 5, 5), (2, 1, 5, 5)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    check_array(inputs, "inputs", ndim=2, dtype_kind="iu")
    device = next(model.parameters()).device
    tokens = inputs if array_kind(inputs) == "torch" else torch.as_tensor(np.asarray(inputs))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, maps = model(tokens.long().to(device), return_attention=True)
    finally:
        model.train(was_training)
    return [m.detach().cpu().numpy() for m in maps]


def previous_token_score(weights: Any, query_mask: Any = None) -> np.ndarray:
    """Mean attention weight on the previous position, ``weights[..., t, t - 1]``, per head.

    Parameters
    ----------
    weights : array of shape (batch, heads, seq, seq)
        Attention weights of one layer (rows sum to 1), ``seq >= 2``.
    query_mask : array of shape (batch, seq), bool, optional
        Average only over the query positions ``t >= 1`` where it is true
        (e.g. the positions right after a trigger).

    Returns
    -------
    numpy.ndarray of shape (heads,)
        1 for a perfect previous-token head; about ``mean(1 / t)`` for uniform causal attention.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.zeros((1, 1, 4, 4)); w[0, 0, 0, 0] = 1; w[0, 0, 1:, :3] = np.eye(3)
    >>> previous_token_score(w).tolist()
    [1.0]
    """
    w = _weights_numpy(weights)
    if w.shape[-1] < 2:
        raise ValueError("weights must cover at least 2 positions to have a previous token")
    t = np.arange(1, w.shape[-1])
    prev = w[:, :, t, t - 1]  # (batch, heads, seq - 1)
    if query_mask is None:
        return prev.mean(axis=(0, 2))
    check_array(query_mask, "query_mask", ndim=2, dtype_kind="b")
    qm = np.asarray(to_numpy(query_mask))
    if qm.shape != (w.shape[0], w.shape[-1]):
        raise ValueError(f"query_mask must have shape {(w.shape[0], w.shape[-1])}; got {qm.shape}")
    chosen = qm[:, 1:]
    if not chosen.any():
        return np.full(w.shape[1], np.nan)
    return np.array([prev[:, k][chosen].mean() for k in range(w.shape[1])])


def induction_score(weights: Any, inputs: Any, query_mask: Any = None) -> np.ndarray:
    """Attention mass on "the position after an earlier occurrence of my token", per head.

    For a query position ``t`` whose token occurred before at positions
    ``s < t``, the score of that query is ``sum_s weights[t, s + 1]``; the
    result averages it over every such query (or over those where
    ``query_mask`` is true).

    Parameters
    ----------
    weights : array of shape (batch, heads, seq, seq)
        Attention weights of one layer.
    inputs : array of shape (batch, seq), integer
        The tokens the weights were computed on.
    query_mask : array of shape (batch, seq), bool, optional
        Restrict the queries (e.g. to repeated triggers).

    Returns
    -------
    numpy.ndarray of shape (heads,)
        1 for a perfect induction head; NaN when no query qualifies.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[3, 4, 3]])
    >>> w = np.zeros((1, 1, 3, 3)); w[0, 0, 0, 0] = w[0, 0, 1, 0] = 1; w[0, 0, 2, 1] = 1
    >>> induction_score(w, x).tolist()
    [1.0]
    """
    w = _weights_numpy(weights)
    check_array(inputs, "inputs", ndim=2, dtype_kind="iu")
    x = np.asarray(to_numpy(inputs))
    b, h, t, _ = w.shape
    if x.shape != (b, t):
        raise ValueError(f"inputs must have shape (batch, seq) = {(b, t)}; got {x.shape}")
    same = x[:, :, None] == x[:, None, :]  # (batch, query, key): same token
    earlier = np.tril(np.ones((t, t), dtype=bool), k=-1)  # key strictly before query
    after_match = np.zeros((b, t, t), dtype=bool)  # (batch, query, key): key = s + 1 for a match s
    after_match[:, :, 1:] = (same & earlier)[:, :, :-1]
    queries = after_match.any(axis=2)
    if query_mask is not None:
        check_array(query_mask, "query_mask", ndim=2, dtype_kind="b")
        qm = np.asarray(to_numpy(query_mask))
        if qm.shape != (b, t):
            raise ValueError(f"query_mask must have shape {(b, t)}; got {qm.shape}")
        queries &= qm
    if not queries.any():
        return np.full(h, np.nan)
    mass = (w * after_match[:, None]).sum(axis=-1)  # (batch, heads, query)
    return np.array([mass[:, k][queries].mean() for k in range(h)])


@dataclasses.dataclass
class InductionRun:
    """What :func:`train_induction_model` measured.

    Attributes
    ----------
    history : companion.nn.TrainHistory
        Per-step training losses and the evaluation records.
    curve : list of dict
        One record per evaluation: ``step``, ``loss`` (held-out, all positions),
        ``acc_repeat_triggers``, ``acc_first_triggers``, ``acc_non_triggers``,
        ``previous_token_score`` (best layer-1 head, at the positions right
        after a trigger), ``induction_score`` (best last-layer head, at
        repeated triggers).
    """

    history: Any
    curve: list

    def final(self) -> dict:
        """The last evaluation record."""
        return dict(self.curve[-1]) if self.curve else {}


def _evaluate(model, inputs, targets, masks, triggers_mask) -> dict:
    device = next(model.parameters()).device
    tokens = torch.as_tensor(inputs, device=device)
    logits, maps = model(tokens, return_attention=True)
    target = torch.as_tensor(targets, device=device)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    right = (logits.argmax(-1) == target).cpu().numpy()
    record = {"loss": float(loss)}
    for name in ("repeat_triggers", "first_triggers", "non_triggers"):
        m = masks[name]
        record[f"acc_{name}"] = float(right[m].mean()) if m.any() else float("nan")
    first, last = maps[0].cpu().numpy(), maps[-1].cpu().numpy()
    after_trigger = np.zeros_like(masks["triggers"])
    after_trigger[:, 1:] = masks["triggers"][:, :-1]  # the positions whose predecessor is a trigger
    record["previous_token_score"] = float(np.nanmax(previous_token_score(first, after_trigger)))
    record["induction_score"] = float(np.nanmax(induction_score(last, inputs, triggers_mask)))
    return record


def train_induction_model(
    model: nn.Module,
    source: Any,
    *,
    steps: int,
    seq_len: int = 64,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    eval_every: int = 100,
    eval_size: int = 256,
    device: Any = None,
    progress: bool = True,
) -> InductionRun:
    """Train ``model`` on the triggered-bigram task (next token at every position) and track the induction head.

    Uses :func:`companion.nn.train` with Adam (AdamW without weight decay),
    gradient clipping at 1 and no warm-up. Every ``eval_every`` steps it scores a
    fixed held-out batch.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. :class:`~companion.memory.AttentionOnlyTransformer`, with
        ``task_vocab_size(source.vocab_size)`` token ids and ``max_len >= seq_len``.
    source : companion.data.triggered_bigram.TriggeredBigramSource
    steps : int
        Optimiser steps, >= 1.
    seq_len, batch_size : int
        Shape of each training batch.
    lr : float, default 1e-2
        Learning rate (the head forms reliably at 1e-2, not at 3e-3, at width 64).
    seed : int
        Seeds the training batches; the held-out batch uses ``seed + 1``.
    eval_every : int
        Steps between evaluations (0: only after the last step).
    eval_size : int
        Held-out sequences.
    device : str or torch.device, optional
        Where to train (default: where the model is).
    progress : bool
        Show a progress bar.

    Returns
    -------
    InductionRun

    References
    ----------
    Bietti et al., "Birth of a Transformer: A Memory Viewpoint", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.data.triggered_bigram import make_triggered_bigram
    >>> from companion.data import task_vocab_size
    >>> from companion.memory import AttentionOnlyConfig, AttentionOnlyTransformer, train_induction_model
    >>> src = make_triggered_bigram(np.random.default_rng(0), vocab_size=16, n_triggers=2)
    >>> m = AttentionOnlyTransformer(AttentionOnlyConfig(vocab_size=task_vocab_size(16), d_model=16, max_len=32))
    >>> run = train_induction_model(m, src, steps=4, seq_len=32, batch_size=8, eval_every=2, eval_size=16, progress=False)
    >>> [r["step"] for r in run.curve]
    [2, 4]
    """
    from ..data.triggered_bigram import TriggeredBigramSource, trigger_masks, triggered_bigram_task
    from ..nn import TrainConfig, train

    if not isinstance(source, TriggeredBigramSource):
        raise TypeError(f"source must be a TriggeredBigramSource; got {type(source).__name__}")
    steps = check_int(steps, "steps", minimum=1)
    seq_len = check_int(seq_len, "seq_len", minimum=2)
    eval_size = check_int(eval_size, "eval_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    lr = check_float(lr, "lr", minimum=0.0, strict_min=True)
    eval_inputs, eval_targets, _ = triggered_bigram_task(
        np.random.default_rng(seed + 1), eval_size, seq_len, source=source, mask="all")
    masks = trigger_masks(eval_inputs, source.triggers)
    curve: list = []

    def eval_fn(m: nn.Module) -> dict:
        record = _evaluate(m, eval_inputs, eval_targets, masks, masks["repeat_triggers"])
        curve.append(record)
        return record

    config = TrainConfig(steps=steps, lr=lr, batch_size=batch_size, weight_decay=0.0, grad_clip=1.0,
                         eval_every=eval_every, seed=seed)
    batch_fn = functools.partial(triggered_bigram_task, seq_len=seq_len, source=source)
    history = train(model, batch_fn, config, device=device, eval_fn=eval_fn, progress=progress)
    curve = [{"step": step, **record} for (step, _), record in zip(history.evals, curve)]
    return InductionRun(history=history, curve=curve)
