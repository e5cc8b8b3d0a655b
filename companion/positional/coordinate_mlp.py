"""Coordinate networks for chapter P3: activations, learnable Fourier features, training.

* :class:`FourierFeatures` - the Fourier feature map as a torch module whose
  frequency matrix ``B`` can be trained (Li et al. 2021, "Learnable Fourier
  Features for Multi-Dimensional Spatial Positional Encoding"), optionally
  followed by a small MLP;
* :class:`CoordinateMLP` - the coordinate network, with ReLU, sine (SIREN) or
  SPDER activations ("SPDER: Semiperiodic Damping-Enabled Object
  Representation": ``sin(z) * sqrt(|z|)``, :func:`spder_activation`);
* :func:`fit_coordinates` / :func:`predict_coordinates` - train it on
  (coordinate, value) pairs and evaluate it in batches.

The feature maps themselves (NumPy reference, numba and CuPy kernels) are in
:mod:`companion.positional.fourier`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_array, check_choice, check_float, check_int
from ..backend import to_numpy, to_torch
from .fourier import (
    _as_generator,
    _fourier_torch,
    _torch_generator,
    fourier_frequencies,
)

__all__ = [
    "ACTIVATIONS",
    "spder_activation",
    "FourierFeatures",
    "CoordinateMLP",
    "FitHistory",
    "fit_coordinates",
    "predict_coordinates",
]

ACTIVATIONS = ("relu", "sine", "spder")


# ------------------------------------------------------------ activations
def spder_activation(z: Any):
    """The SPDER activation ``sin(z) * sqrt(|z|)``: a sine whose amplitude grows sublinearly.

    The sine gives every neuron a periodic response (as in SIREN); the damping
    factor ``sqrt(|z|)`` keeps the size of ``z`` visible in the output, so the
    network is not confined to a bounded, periodic view of its input.

    Parameters
    ----------
    z : NumPy array or torch tensor
        Any shape.

    Returns
    -------
    Same kind and shape as ``z``. For torch the gradient at ``z = 0`` is 0
    (``|z|`` is clamped at ``1e-12`` inside the square root).

    References
    ----------
    "SPDER: Semiperiodic Damping-Enabled Object Representation" (2023). The
    paper applies it to ``omega_0 (W z + b)`` with SIREN's initialisation, as
    :class:`CoordinateMLP` does for ``activation="spder"``.

    Example
    -------
    >>> import numpy as np
    >>> spder_activation(np.array([0.0, np.pi / 2, -4.0])).round(3).tolist()
    [0.0, 1.253, 1.514]
    """
    if isinstance(z, torch.Tensor):
        return torch.sin(z) * torch.sqrt(torch.clamp(torch.abs(z), min=1e-12))
    z = np.asarray(z)
    return np.sin(z) * np.sqrt(np.abs(z))


class _Periodic(nn.Module):
    """``act(omega_0 * z)`` for act = sine or SPDER."""

    def __init__(self, kind: str, omega_0: float):
        super().__init__()
        self.kind = kind
        self.omega_0 = float(omega_0)

    def forward(self, z):
        z = self.omega_0 * z
        return torch.sin(z) if self.kind == "sine" else spder_activation(z)

    def extra_repr(self) -> str:
        return f"{self.kind}, omega_0={self.omega_0:g}"


# -------------------------------------------------------------- modules
def _init_linear(layer: nn.Linear, generator: torch.Generator, weight_bound: float) -> None:
    """Uniform weights in ``[-weight_bound, weight_bound]``, biases like torch's default, from ``generator``."""
    bias_bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-weight_bound, weight_bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bias_bound, bias_bound, generator=generator)


class FourierFeatures(nn.Module):
    """Fourier feature map ``[cos(2 pi B x), sin(2 pi B x)]`` as a torch module, optionally trainable.

    With ``learnable=True`` the frequency matrix ``B`` is a parameter that the
    optimiser moves along with the network, as in Li et al. (2021); with
    ``mlp_hidden`` the features pass through a small MLP (Linear, GELU, Linear)
    as in that paper, giving a learned positional encoding of ``out_features``
    dimensions.

    Parameters
    ----------
    in_features : int
        Coordinate dimension ``d``.
    n_frequencies : int
        Number of frequencies ``F``.
    scale : float, optional
        Initial bandwidth (see :func:`fourier_frequencies`); needed unless
        ``frequencies`` is given.
    kind : {"gaussian", "axis"}, default "gaussian"
    rng : None, int or numpy.random.Generator
        Draws ``B`` and seeds the MLP's initial weights; ``None`` means seed 0.
    learnable : bool, default True
        Register ``B`` as an ``nn.Parameter`` (else a fixed buffer).
    mlp_hidden : int, optional
        Width of the MLP after the features; ``None`` for no MLP.
    out_features : int, optional
        Output width of the MLP (default ``mlp_hidden``); without an MLP the
        output has ``2 F`` columns.
    frequencies : array of shape (F, d), optional
        Initial ``B`` to use instead of a draw.

    Attributes
    ----------
    frequencies : torch.Tensor of shape (F, d)
        ``B`` (a parameter or a buffer).
    out_features : int
        Width of the output.

    Example
    -------
    >>> import torch
    >>> from companion.positional import FourierFeatures
    >>> ff = FourierFeatures(2, 16, scale=10.0, rng=0)
    >>> y = ff(torch.rand(5, 2))
    >>> y.shape, ff.frequencies.requires_grad
    (torch.Size([5, 32]), True)
    """

    def __init__(
        self,
        in_features: int,
        n_frequencies: int,
        *,
        scale: Optional[float] = None,
        kind: str = "gaussian",
        rng: Any = None,
        learnable: bool = True,
        mlp_hidden: Optional[int] = None,
        out_features: Optional[int] = None,
        frequencies: Any = None,
    ):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        n_freq = check_int(n_frequencies, "n_frequencies", minimum=1)
        gen = _as_generator(rng)
        if frequencies is None:
            if scale is None:
                raise ValueError("FourierFeatures needs scale (or a frequencies matrix)")
            B = fourier_frequencies(self.in_features, n_freq, scale=scale, kind=kind, rng=gen)
        else:
            check_array(frequencies, "frequencies", ndim=2, dtype_kind="fiu")
            B = np.asarray(to_numpy(frequencies), dtype=np.float64)
            if B.shape != (n_freq, self.in_features):
                raise ValueError(f"frequencies must have shape ({n_freq}, {self.in_features}); got {B.shape}")
        B_t = torch.tensor(B, dtype=torch.float32)  # (F, d)
        if learnable:
            self.frequencies = nn.Parameter(B_t)
        else:
            self.register_buffer("frequencies", B_t)
        self.n_frequencies = n_freq
        self.mlp = None
        self.out_features = 2 * n_freq
        if mlp_hidden is not None:
            hidden = check_int(mlp_hidden, "mlp_hidden", minimum=1)
            out = hidden if out_features is None else check_int(out_features, "out_features", minimum=1)
            self.mlp = nn.Sequential(nn.Linear(2 * n_freq, hidden), nn.GELU(), nn.Linear(hidden, out))
            g = _torch_generator(int(gen.integers(2**31)))
            for layer in (self.mlp[0], self.mlp[2]):
                _init_linear(layer, g, 1.0 / math.sqrt(layer.in_features))
            self.out_features = out
        elif out_features is not None:
            raise ValueError("out_features needs mlp_hidden (without an MLP the output has 2 * n_frequencies columns)")

    def forward(self, coords):
        if coords.shape[-1] != self.in_features:
            raise ValueError(f"coords must have {self.in_features} columns; got shape {tuple(coords.shape)}")
        feats = _fourier_torch(coords, self.frequencies.to(coords.dtype))  # (n, 2F)
        return feats if self.mlp is None else self.mlp(feats)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, n_frequencies={self.n_frequencies}, "
                f"learnable={isinstance(self.frequencies, nn.Parameter)}")


class CoordinateMLP(nn.Module):
    """A coordinate network: (optional embedding) -> ``n_layers`` hidden layers -> linear output.

    Parameters
    ----------
    in_features : int
        Width of the input: the coordinate dimension, or the feature width when
        the features are computed outside the model (e.g. by
        :func:`fourier_features`).
    hidden : int
        Width of every hidden layer.
    n_layers : int
        Number of hidden layers (>= 1).
    out_features : int
        Output channels (1 for a grayscale image).
    embedding : torch.nn.Module, optional
        Applied to the input first (e.g. a :class:`FourierFeatures`); it must have
        an ``out_features`` attribute, and an ``in_features`` attribute equal to
        ``in_features`` if it has one.
    activation : {"relu", "sine", "spder"}, default "relu"
        ``"sine"``: SIREN layers ``sin(omega_0 (W z + b))`` with SIREN's
        initialisation (first layer ``U(-1/fan_in, 1/fan_in)``, later layers
        ``U(-sqrt(6/fan_in)/omega_0, ...)``). ``"spder"``: the same layers and
        initialisation with ``sin(u) sqrt(|u|)``, ``u = omega_0 (W z + b)``.
    omega_0 : float, default 30.0
        Frequency factor of the sine and SPDER layers.
    seed : int, default 0
        Seeds the initial weights (the caller's torch generator is not used).

    Example
    -------
    >>> import torch
    >>> from companion.positional import CoordinateMLP
    >>> net = CoordinateMLP(2, 32, 2, 1, activation="sine")
    >>> net(torch.rand(7, 2)).shape
    torch.Size([7, 1])
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        n_layers: int,
        out_features: int,
        *,
        embedding: Optional[nn.Module] = None,
        activation: str = "relu",
        omega_0: float = 30.0,
        seed: int = 0,
    ):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        hidden = check_int(hidden, "hidden", minimum=1)
        n_layers = check_int(n_layers, "n_layers", minimum=1)
        self.out_features = check_int(out_features, "out_features", minimum=1)
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.omega_0 = check_float(omega_0, "omega_0", minimum=0.0, strict_min=True)
        seed = check_int(seed, "seed", minimum=0)
        if embedding is not None:
            if not isinstance(embedding, nn.Module):
                raise TypeError(f"embedding must be a torch.nn.Module; got {type(embedding).__name__}")
            if not isinstance(getattr(embedding, "out_features", None), int):
                raise TypeError("embedding must have an integer attribute out_features (its output width)")
            emb_in = getattr(embedding, "in_features", None)
            if isinstance(emb_in, int) and emb_in != self.in_features:
                raise ValueError(f"embedding.in_features = {emb_in} but in_features = {self.in_features}")
        self.embedding = embedding
        width_in = embedding.out_features if embedding is not None else self.in_features
        g = _torch_generator(seed)
        layers: list[nn.Module] = []
        widths = [width_in] + [hidden] * n_layers
        for i in range(n_layers):
            linear = nn.Linear(widths[i], widths[i + 1])
            if self.activation == "relu":
                _init_linear(linear, g, 1.0 / math.sqrt(linear.in_features))
                layers += [linear, nn.ReLU()]
            else:
                bound = 1.0 / linear.in_features if i == 0 else math.sqrt(6.0 / linear.in_features) / self.omega_0
                _init_linear(linear, g, bound)
                layers += [linear, _Periodic(self.activation, self.omega_0)]
        head = nn.Linear(hidden, self.out_features)
        if self.activation == "relu":
            _init_linear(head, g, 1.0 / math.sqrt(hidden))
        else:
            _init_linear(head, g, math.sqrt(6.0 / hidden) / self.omega_0)
        layers.append(head)
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        if self.embedding is not None:
            x = self.embedding(x)
        return self.net(x)

    def n_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------- training
@dataclasses.dataclass
class FitHistory:
    """What :func:`fit_coordinates` recorded.

    Attributes
    ----------
    steps : list of int
        Step index of every entry of ``losses`` (1-based).
    losses : list of float
        Mean squared error on the training batch before each update.
    eval_steps, eval_losses : list
        Steps and mean squared errors on the evaluation set, when one was given.
    seconds : float
        Wall time of the loop.
    """

    steps: list = dataclasses.field(default_factory=list)
    losses: list = dataclasses.field(default_factory=list)
    eval_steps: list = dataclasses.field(default_factory=list)
    eval_losses: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @staticmethod
    def to_psnr(losses, data_range: float = 1.0) -> np.ndarray:
        """Convert mean squared errors to PSNR in dB (``inf`` for zero error)."""
        mse = np.asarray(losses, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return 10.0 * np.log10(data_range**2 / mse)


def _as_float_tensor(x: Any, name: str, device) -> torch.Tensor:
    check_array(x, name, ndim=(1, 2), dtype_kind="f")
    t = to_torch(x).to(device=device, dtype=torch.float32)
    return t[:, None] if t.ndim == 1 else t


def fit_coordinates(
    model: nn.Module,
    coords: Any,
    targets: Any,
    *,
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    device: Any = None,
    batch_size: Optional[int] = None,
    eval_coords: Any = None,
    eval_targets: Any = None,
    eval_every: int = 10,
    callback: Optional[Any] = None,
    progress: bool = False,
) -> FitHistory:
    """Fit a coordinate network to ``targets`` by mean squared error with Adam.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(n, in)`` inputs to ``(n, out)`` outputs (e.g. :class:`CoordinateMLP`);
        trained in place and moved to ``device``.
    coords : array of shape (n, in)
        Model inputs: coordinates, or features computed from them.
    targets : array of shape (n, out) or (n,)
        Values to fit.
    steps : int
        Optimiser steps (>= 1).
    lr : float, default 1e-3
        Adam learning rate (> 0).
    seed : int, default 0
        Seeds the order of mini-batches (unused for full-batch training).
    device : torch.device or str, optional
        Where to train; default the model's device.
    batch_size : int, optional
        Points per step; ``None`` uses all of them every step (full batch).
    eval_coords, eval_targets : arrays, optional
        A held-out set whose error is recorded every ``eval_every`` steps and after the last.
    eval_every : int, default 10
        Steps between evaluations (and ``callback`` calls).
    callback : callable, optional
        ``callback(step, model)`` is called (under ``torch.no_grad``, model in eval
        mode) at step 0 and every ``eval_every`` steps, e.g. to record predictions
        during training.
    progress : bool, default False
        Show a ``tqdm`` progress bar.

    Returns
    -------
    FitHistory

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import CoordinateMLP, fit_coordinates
    >>> x = np.linspace(0, 1, 64, dtype=np.float32)[:, None]
    >>> net = CoordinateMLP(1, 16, 2, 1)
    >>> h = fit_coordinates(net, x, np.sin(6 * x), steps=50, lr=1e-2)
    >>> h.losses[-1] < h.losses[0]
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, strict_min=True)
    seed = check_int(seed, "seed", minimum=0)
    eval_every = check_int(eval_every, "eval_every", minimum=1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    x = _as_float_tensor(coords, "coords", device)
    y = _as_float_tensor(targets, "targets", device)
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"coords (n, in) and targets (n, out) must have the same n; got {tuple(x.shape)} and {tuple(y.shape)}")
    has_eval = eval_coords is not None or eval_targets is not None
    if has_eval:
        if eval_coords is None or eval_targets is None:
            raise ValueError("give both eval_coords and eval_targets, or neither")
        xe = _as_float_tensor(eval_coords, "eval_coords", device)
        ye = _as_float_tensor(eval_targets, "eval_targets", device)
        if ye.shape[0] != xe.shape[0] or xe.shape[1] != x.shape[1] or ye.shape[1] != y.shape[1]:
            raise ValueError(f"eval set shapes {tuple(xe.shape)}, {tuple(ye.shape)} do not match "
                             f"the training set {tuple(x.shape)}, {tuple(y.shape)}")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        batch_size = min(batch_size, n)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    order_rng = np.random.default_rng(seed)
    history = FitHistory()

    def _evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            history.eval_losses.append(float(torch.mean((model(xe) - ye) ** 2)))
        history.eval_steps.append(step)
        model.train()

    def _call_back(step: int) -> None:
        model.eval()
        with torch.no_grad():
            callback(step, model)
        model.train()

    start = time.perf_counter()
    if callback is not None:
        _call_back(0)
    perm, cursor = None, n
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="fit", leave=False):
        if batch_size is None or batch_size == n:
            xb, yb = x, y
        else:
            if cursor + batch_size > n:
                perm = torch.as_tensor(order_rng.permutation(n), device=device)
                cursor = 0
            idx = perm[cursor:cursor + batch_size]
            cursor += batch_size
            xb, yb = x[idx], y[idx]
        loss = torch.mean((model(xb) - yb) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.steps.append(step)
        history.losses.append(float(loss.detach()))
        if has_eval and (step % eval_every == 0 or step == steps):
            _evaluate(step)
        if callback is not None and step % eval_every == 0:
            _call_back(step)
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


def predict_coordinates(model: nn.Module, coords: Any, *, batch_size: int = 65536) -> np.ndarray:
    """Evaluate a coordinate network on ``coords`` without gradients; returns NumPy ``(n, out)``.

    Example
    -------
    >>> import numpy as np
    >>> from companion.positional import CoordinateMLP, predict_coordinates
    >>> predict_coordinates(CoordinateMLP(2, 8, 1, 3), np.zeros((4, 2), np.float32)).shape
    (4, 3)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = _as_float_tensor(coords, "coords", device)
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            outs.append(model(x[i:i + batch_size]).cpu())
    return torch.cat(outs).numpy()
