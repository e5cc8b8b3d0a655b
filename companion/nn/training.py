"""A small, reproducible training loop for the course's models.

:func:`train` draws batches from a task function ``batch_fn(rng, batch_size)``
(see :mod:`companion.data`), minimises the cross-entropy over the masked target
positions with AdamW, and returns a :class:`TrainHistory`. The same
:class:`TrainConfig` (same ``seed``) on an identically initialised model gives
the same losses: batches come from ``numpy.random.default_rng(seed)`` and
dropout from a torch generator seeded with ``seed`` inside a forked RNG state
(the caller's global torch generator is left as it was).

Example
-------
>>> import functools, torch
>>> from companion.data import lookback_task, task_vocab_size
>>> from companion.nn import TinyTransformer, TransformerConfig, TrainConfig, train
>>> _ = torch.manual_seed(0)
>>> model = TinyTransformer(TransformerConfig(vocab_size=task_vocab_size(8), d_model=32))
>>> task = functools.partial(lookback_task, seq_len=12, vocab_size=8, offset=2)
>>> history = train(model, task, TrainConfig(steps=3, batch_size=8), progress=False)
>>> len(history.losses)
3
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_array, check_float, check_int
from ..backend import array_kind, to_torch


@dataclasses.dataclass
class TrainConfig:
    """Settings of :func:`train`.

    Parameters
    ----------
    steps : int
        Optimiser steps (one batch each).
    lr : float
        Peak AdamW learning rate (> 0).
    weight_decay : float
        AdamW decoupled weight decay, applied to matrices and embeddings only
        (not to biases or LayerNorm gains).
    batch_size : int
        Sequences per batch, passed to ``batch_fn``.
    grad_clip : float or None
        Clip the global gradient norm to this value; ``None`` or ``0`` disables.
    warmup_steps : int
        Linear learning-rate warm-up from ``lr / warmup_steps`` to ``lr``; constant afterwards.
    eval_every : int
        Call ``eval_fn`` every this many steps (and after the last); ``0``
        means only after the last step.
    seed : int
        Seeds the batch generator and dropout.
    threads : int, optional
        torch intra-op threads during training; ``None`` takes ``OMP_NUM_THREADS``
        when it is set and otherwise leaves torch's setting alone.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    grad_clip: Optional[float] = 1.0
    warmup_steps: int = 0
    eval_every: int = 0
    seed: int = 0
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        self.steps = check_int(self.steps, "steps", minimum=1)
        self.lr = check_float(self.lr, "lr", minimum=0.0, strict_min=True)
        self.weight_decay = check_float(self.weight_decay, "weight_decay", minimum=0.0)
        self.batch_size = check_int(self.batch_size, "batch_size", minimum=1)
        if self.grad_clip is not None:
            self.grad_clip = check_float(self.grad_clip, "grad_clip", minimum=0.0)
        self.warmup_steps = check_int(self.warmup_steps, "warmup_steps", minimum=0)
        self.eval_every = check_int(self.eval_every, "eval_every", minimum=0)
        self.seed = check_int(self.seed, "seed", minimum=0)
        if self.threads is not None:
            self.threads = check_int(self.threads, "threads", minimum=1)


@dataclasses.dataclass
class TrainHistory:
    """What :func:`train` measured.

    Attributes
    ----------
    steps : list of int
        Step numbers ``1 .. steps``.
    losses : list of float
        Training loss of each step's batch (before that step's update).
    evals : list of (int, dict)
        ``(step, eval_fn(model))`` records.
    wall_time_s : float
        Seconds spent in the loop (evaluations included).
    """

    steps: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    evals: list = dataclasses.field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def final_loss(self) -> float:
        """Loss of the last step (NaN before any step)."""
        return self.losses[-1] if self.losses else float("nan")


# ------------------------------------------------------------------ helpers
def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _as_tensor(x: Any, name: str, dtype_kind: str, device) -> torch.Tensor:
    check_array(x, name, ndim=2, dtype_kind=dtype_kind)
    t = x if array_kind(x) == "torch" else to_torch(x)
    return t.to(device)


def as_batch(inputs: Any, targets: Any, mask: Any, device=None):
    """Validate a ``(inputs, targets, mask)`` batch and return torch tensors on ``device``.

    ``inputs`` and ``targets`` are ``(batch, seq)`` integer arrays, ``mask`` a
    ``(batch, seq)`` boolean or real array (non-zero entries count; real values
    weight the loss). Returns ``(inputs int64, targets int64, weights float32)``.
    """
    inputs = _as_tensor(inputs, "inputs", "iu", device).long()
    targets = _as_tensor(targets, "targets", "iu", device).long()
    mask = _as_tensor(mask, "mask", "biuf", device)
    if targets.shape != inputs.shape or mask.shape != inputs.shape:
        raise ValueError(
            "inputs, targets and mask must have the same (batch, seq) shape; got "
            f"{tuple(inputs.shape)}, {tuple(targets.shape)} and {tuple(mask.shape)}"
        )
    weights = mask.to(torch.float32)
    if bool((weights < 0).any()):
        raise ValueError("mask must be non-negative")
    return inputs, targets, weights


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions where ``weights > 0`` (weighted by ``weights``).

    ``logits`` is ``(batch, seq, vocab)``; ``targets`` and ``weights`` are
    ``(batch, seq)``. Targets outside the mask are ignored (they may be -100).
    """
    counted = weights > 0
    total = weights.sum()
    if not bool(counted.any()):
        raise ValueError("mask selects no target position; nothing to learn from")
    vocab = logits.shape[-1]
    chosen = targets[counted]
    if bool((chosen < 0).any()) or bool((chosen >= vocab).any()):
        raise ValueError(
            f"targets at masked positions must lie in [0, {vocab}); got values in "
            f"[{int(chosen.min())}, {int(chosen.max())}]"
        )
    safe = torch.where(counted, targets, torch.zeros_like(targets))
    per_token = F.cross_entropy(logits.reshape(-1, vocab), safe.reshape(-1), reduction="none")
    return (per_token * weights.reshape(-1)).sum() / total


def _thread_count(threads: Optional[int]) -> Optional[int]:
    if threads is not None:
        return threads
    env = os.environ.get("OMP_NUM_THREADS")
    if not env:
        return None
    try:
        return check_int(int(env), "OMP_NUM_THREADS", minimum=1)
    except ValueError:
        raise ValueError(f"OMP_NUM_THREADS must be a positive integer; got {env!r}") from None


# ------------------------------------------------------------------- train
def train(
    model: nn.Module,
    batch_fn: Callable[[np.random.Generator, int], Any],
    config: TrainConfig,
    *,
    device: Any = None,
    eval_fn: Optional[Callable[[nn.Module], dict]] = None,
    progress: bool = True,
) -> TrainHistory:
    """Train ``model`` on batches from ``batch_fn`` with AdamW and masked cross-entropy.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, seq)`` int64 tokens to ``(batch, seq, vocab)`` logits
        (e.g. :class:`~companion.nn.TinyTransformer`).
    batch_fn : callable
        ``batch_fn(rng, batch_size) -> (inputs, targets, mask)``, NumPy arrays or
        torch tensors of shape ``(batch, seq)``; ``rng`` is a
        ``numpy.random.Generator`` seeded from ``config.seed``.
    config : TrainConfig
    device : str or torch.device, optional
        Move the model there first; default: where the model already is.
    eval_fn : callable, optional
        ``eval_fn(model) -> dict`` run in eval mode without gradients every
        ``config.eval_every`` steps and after the last step.
    progress : bool
        Show a ``tqdm.auto`` progress bar.

    Returns
    -------
    TrainHistory
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(batch_fn):
        raise TypeError(f"batch_fn must be callable as batch_fn(rng, batch_size); got {type(batch_fn).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable as eval_fn(model) -> dict; got {type(eval_fn).__name__}")
    if config.eval_every and eval_fn is None:
        raise ValueError(f"eval_every={config.eval_every} needs an eval_fn")

    if device is not None:
        model.to(torch.device(device))
    device = _model_device(model)
    threads = _thread_count(config.threads)
    previous_threads = torch.get_num_threads()
    was_training = model.training
    history = TrainHistory()

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warmup) if warmup else 1.0
    )
    rng = np.random.default_rng(config.seed)
    cuda_devices = [device] if device.type == "cuda" else []

    def run_eval(step: int) -> None:
        model.eval()
        with torch.no_grad():
            record = eval_fn(model)
        model.train()
        if not isinstance(record, dict):
            raise TypeError(f"eval_fn must return a dict; got {type(record).__name__}")
        history.evals.append((step, dict(record)))

    start = time.perf_counter()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(config.seed)
            model.train()
            bar = tqdm(range(1, config.steps + 1), desc="train", disable=not progress, leave=False)
            for step in bar:
                batch = batch_fn(rng, config.batch_size)
                if not isinstance(batch, (tuple, list)) or len(batch) != 3:
                    raise TypeError("batch_fn must return a tuple (inputs, targets, mask)")
                inputs, targets, weights = as_batch(*batch, device=device)
                logits = model(inputs)
                loss = masked_cross_entropy(logits, targets, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                if not np.isfinite(value):
                    raise FloatingPointError(f"training loss became {value} at step {step}; lower lr or check the data")
                history.steps.append(step)
                history.losses.append(value)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                if eval_fn is not None and (
                    step == config.steps or (config.eval_every and step % config.eval_every == 0)
                ):
                    run_eval(step)
    finally:
        history.wall_time_s = time.perf_counter() - start
        if threads is not None:
            torch.set_num_threads(previous_threads)
        model.train(was_training)
    return history


# ---------------------------------------------------------------- evaluate
def evaluate_accuracy(
    model: nn.Module,
    inputs: Any,
    targets: Any,
    mask: Any,
    *,
    positions: Any = None,
    device: Any = None,
    batch_size: int = 256,
) -> dict:
    """Greedy (argmax) accuracy of ``model`` over the masked target positions.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(inputs)`` or ``model(inputs, positions)``; run in eval mode.
    inputs, targets : array of int, shape (n, seq)
    mask : array of bool or real, shape (n, seq)
        Non-zero entries are scored.
    positions : array of int, shape (seq,) or (n, seq), optional
        Position ids passed to the model.
    device : str or torch.device, optional
        Where to compute; default: the model's device (the model is not moved).
    batch_size : int
        Sequences per forward pass.

    Returns
    -------
    dict
        ``token_accuracy`` (fraction of masked positions predicted right),
        ``sequence_accuracy`` (fraction of sequences with every masked
        position right, over sequences with at least one), ``n_tokens``,
        ``n_sequences``.

    Example
    -------
    >>> import numpy as np, torch
    >>> from companion.data import lookback_task, task_vocab_size
    >>> from companion.nn import TinyTransformer, TransformerConfig, evaluate_accuracy
    >>> model = TinyTransformer(TransformerConfig(vocab_size=task_vocab_size(4), d_model=16))
    >>> x, y, m = lookback_task(np.random.default_rng(0), 8, 6, vocab_size=4, offset=1)
    >>> sorted(evaluate_accuracy(model, x, y, m))
    ['n_sequences', 'n_tokens', 'sequence_accuracy', 'token_accuracy']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    device = torch.device(device) if device is not None else _model_device(model)
    inputs, targets, weights = as_batch(inputs, targets, mask, device=device)
    counted = weights > 0
    n = inputs.shape[0]
    pos = None
    if positions is not None:
        check_array(positions, "positions", ndim=(1, 2), dtype_kind="iu")
        pos = (positions if array_kind(positions) == "torch" else to_torch(positions)).to(device)
        if pos.ndim == 2 and pos.shape[0] != n:
            raise ValueError(f"positions of shape (n, seq) must have n={n} rows; got {tuple(pos.shape)}")

    was_training = model.training
    model.eval()
    correct = torch.zeros_like(counted)
    try:
        with torch.no_grad():
            for lo in range(0, n, batch_size):
                hi = min(lo + batch_size, n)
                chunk_pos = pos[lo:hi] if pos is not None and pos.ndim == 2 else pos
                logits = model(inputs[lo:hi]) if chunk_pos is None else model(inputs[lo:hi], chunk_pos)
                correct[lo:hi] = logits.argmax(dim=-1) == targets[lo:hi]
    finally:
        model.train(was_training)

    n_tokens = int(counted.sum())
    scored_rows = counted.any(dim=1)
    row_ok = (correct | ~counted).all(dim=1) & scored_rows
    n_sequences = int(scored_rows.sum())
    return {
        "token_accuracy": float((correct & counted).sum()) / n_tokens if n_tokens else float("nan"),
        "sequence_accuracy": float(row_ok.sum()) / n_sequences if n_sequences else float("nan"),
        "n_tokens": n_tokens,
        "n_sequences": n_sequences,
    }
