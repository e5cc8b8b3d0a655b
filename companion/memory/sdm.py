"""Sparse distributed memories: competitive-module codes, Kanerva's SDM and the Willshaw net.

:class:`CompetitiveModuleMemory` follows the model of "Superposed Episodic and
Semantic Memory via Sparse Distributed Representation" (Rinkus and Leveille,
2017; the model is called Sparsey). A coding field of ``Q`` modules of ``K``
binary units represents any input by one active unit per module: a sparse
code of ``Q`` out of ``Q * K`` units. Binary weights from the input bits to the
units are set in a single trial (Hebbian: the active input bits connect to the
winners). What makes the codes *similarity preserving* is how winners are
chosen: the memory first measures how familiar the input is (``G``, the mean over
modules of the best match of a unit to the input), then picks winners at random
with a bias towards well-matching units whose strength grows with ``G``. A
familiar input reuses units of the stored inputs it resembles; a novel one gets a
fresh random code. Similar inputs therefore share units, and the overlap of two
codes tracks the similarity of the inputs.

Our version simplifies the paper's code selection: the bias is a softmax over
each module with an inverse temperature that grows linearly with ``G`` between
two familiarity levels (the paper shapes it with a sigmoid whose height depends
on ``G``), and a unit's match is penalised for connections the input does not
use, which keeps units that have absorbed many inputs from matching everything
in a memory as small as ours.

Baselines with the same ``store`` / ``recall`` interface:

* :class:`KanervaSDM` (Kanerva, *Sparse Distributed Memory*, 1988): random hard
  locations, each input activates its nearest locations, whose counters add the
  (bipolar) pattern; recall sums and thresholds the counters;
* :class:`WillshawNet` (Willshaw, Buneman and Longuet-Higgins, 1969): binary
  clipped-Hebbian auto-associative weights, recall by keeping the ``k`` best-supported bits.

Where the time goes: the competitive memory's loop (input sums, familiarity,
winner choice, learning, one input after the other) is not a matrix product;
it has a NumPy reference, a numba kernel and a CuPy RawKernel (``_m3_kernels``).
The baselines' hot loops *are* matrix products (distances to hard locations,
counter sums, Willshaw dendritic sums) and run on BLAS/cuBLAS through NumPy/CuPy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import dispatch, for_backend, to_kind, to_numpy
from . import _m3_kernels as _k

__all__ = [
    "CompetitiveModuleConfig",
    "CompetitiveModuleMemory",
    "KanervaSDM",
    "WillshawNet",
    "code_overlap",
    "flip_bits",
]


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)); got {type(rng).__name__}")
    return rng


def _check_binary(patterns: Any, name: str, n_bits: int) -> tuple[str, np.ndarray]:
    """A (n, n_bits) array of 0/1 values (bool, int or float); returns its kind and a uint8 NumPy copy."""
    kind = check_array(patterns, name, ndim=2, dtype_kind="biuf")
    if patterns.shape[1] != n_bits:
        raise ValueError(f"{name} must have shape (n, n_bits={n_bits}); got shape {tuple(patterns.shape)}")
    x = np.asarray(to_numpy(patterns))
    if not np.isin(x, (0, 1)).all():
        raise ValueError(f"{name} must be binary (only 0 and 1); found other values")
    return kind, x.astype(np.uint8)


# ---------------------------------------------------------- competitive modules
@dataclasses.dataclass(frozen=True)
class CompetitiveModuleConfig:
    """Settings of a :class:`CompetitiveModuleMemory`.

    Parameters
    ----------
    n_modules : int
        ``Q``, number of competitive modules (one winner each), >= 1.
    module_size : int
        ``K``, units per module, >= 2.
    beta_max : float
        Inverse temperature of the winner choice at full familiarity, >= 0.
        ``0`` gives purely random codes (no similarity preservation: the ablation).
    familiarity_floor : float
        Familiarity ``G`` at or below which the choice is uniform (a fresh random code), in [0, 1).
    familiarity_ceiling : float
        ``G`` at or above which the inverse temperature is ``beta_max``, in (floor, 1].
    mismatch_penalty : float
        ``mu``: how much each connection of a unit that the input does not use lowers
        the unit's match, >= 0.
    """

    n_modules: int = 16
    module_size: int = 256
    beta_max: float = 30.0
    familiarity_floor: float = 0.75
    familiarity_ceiling: float = 1.0
    mismatch_penalty: float = 1.0

    def __post_init__(self):
        check_int(self.n_modules, "n_modules", minimum=1)
        check_int(self.module_size, "module_size", minimum=2)
        check_float(self.beta_max, "beta_max", minimum=0.0)
        check_float(self.familiarity_floor, "familiarity_floor", minimum=0.0, maximum=1.0)
        check_float(self.familiarity_ceiling, "familiarity_ceiling", minimum=0.0, maximum=1.0)
        if self.familiarity_ceiling <= self.familiarity_floor:
            raise ValueError(
                f"familiarity_ceiling must be > familiarity_floor; got {self.familiarity_ceiling} <= {self.familiarity_floor}"
            )
        check_float(self.mismatch_penalty, "mismatch_penalty", minimum=0.0)

    @property
    def params(self) -> tuple[float, float, float, float]:
        """``(beta_max, familiarity_floor, familiarity_ceiling, mismatch_penalty)`` as the kernels take them."""
        return (float(self.beta_max), float(self.familiarity_floor), float(self.familiarity_ceiling),
                float(self.mismatch_penalty))


class CompetitiveModuleMemory:
    """Single-trial sparse distributed memory with familiarity-modulated winner-take-all modules.

    Parameters
    ----------
    n_bits : int
        Input size, >= 1.
    config : CompetitiveModuleConfig, optional
        Module counts and the familiarity-to-bias settings; defaults as listed there.

    Attributes
    ----------
    weights : numpy.ndarray of shape (n_bits, n_modules * module_size), uint8
        Binary input-to-unit weights (set to 1 by learning, never reset).
    codes : numpy.ndarray of shape (n_stored, n_modules), int64
        Winner (index inside its module) of every stored input, in storage order.

    References
    ----------
    Rinkus and Leveille, "Superposed Episodic and Semantic Memory via Sparse Distributed Representation", 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import CompetitiveModuleConfig, CompetitiveModuleMemory, code_overlap, flip_bits
    >>> rng = np.random.default_rng(0)
    >>> patterns = (rng.random((30, 64)) < 0.2).astype(np.uint8)
    >>> mem = CompetitiveModuleMemory(64, CompetitiveModuleConfig(n_modules=8, module_size=128))
    >>> codes = mem.store(patterns, rng)
    >>> codes.shape
    (30, 8)
    >>> recalled, _ = mem.recall(flip_bits(rng, patterns, 3), rng)     # noisy cues
    >>> overlap = code_overlap(recalled, codes)                         # (30 cues, 30 stored)
    >>> float(np.mean(overlap.argmax(axis=1) == np.arange(30)))
    1.0
    """

    def __init__(self, n_bits: int, config: CompetitiveModuleConfig | None = None):
        self.n_bits = check_int(n_bits, "n_bits", minimum=1)
        if config is None:
            config = CompetitiveModuleConfig()
        if not isinstance(config, CompetitiveModuleConfig):
            raise TypeError(f"config must be a CompetitiveModuleConfig; got {type(config).__name__}")
        self.config = config
        self.n_units = config.n_modules * config.module_size
        self.weights = np.zeros((self.n_bits, self.n_units), dtype=np.uint8)  # (n_bits, Q * K)
        self.codes = np.zeros((0, config.n_modules), dtype=np.int64)

    @property
    def n_stored(self) -> int:
        return self.codes.shape[0]

    def _run(self, patterns, rng, learn: bool, deterministic: bool, backend):
        kind, x = _check_binary(patterns, "patterns", self.n_bits)
        rng = _check_rng(rng)
        cfg = self.config
        uniforms = rng.random((x.shape[0], cfg.n_modules))  # (n, Q): one draw per module and input
        name, kernel = dispatch(_k.ENCODE, backend, patterns)
        weights = for_backend(self.weights, name)
        if name == "cupy":
            import cupy

            weights = cupy.ascontiguousarray(weights)
        codes, familiarity = kernel(for_backend(x, name), weights, cfg.n_modules, cfg.module_size,
                                    for_backend(uniforms, name), cfg.params, learn, deterministic)
        if learn:
            self.weights = to_numpy(weights)
        return kind, to_numpy(codes), to_numpy(familiarity)

    def store(self, patterns: Any, rng: np.random.Generator, *, backend: str | None = None) -> Any:
        """Store each pattern once, in order (single-trial learning); return their codes.

        Parameters
        ----------
        patterns : array of shape (n, n_bits)
            Binary (0/1) patterns, bool, integer or floating.
        rng : numpy.random.Generator
            Source of the winner draws (one uniform per module and pattern).
        backend : {"auto", "numpy", "numba", "cupy"}, optional

        Returns
        -------
        array of shape (n, n_modules), int64
            Winner of each module (0 .. module_size - 1); same kind as ``patterns``.
        """
        kind, codes, familiarity = self._run(patterns, rng, True, False, backend)
        self.codes = np.concatenate([self.codes, codes])
        self.last_familiarity = familiarity
        return to_kind(codes, kind, like=patterns)

    def encode(self, patterns: Any, rng: np.random.Generator, *, backend: str | None = None) -> tuple[Any, Any]:
        """Codes the memory would choose for ``patterns`` now, without learning.

        Returns
        -------
        codes : array of shape (n, n_modules), int64
        familiarity : array of shape (n,), float64
            ``G`` of each pattern, in [0, 1].
        """
        kind, codes, familiarity = self._run(patterns, rng, False, False, backend)
        return to_kind(codes, kind, like=patterns), to_kind(familiarity, kind, like=patterns)

    def recall(self, cues: Any, rng: np.random.Generator, *, backend: str | None = None) -> tuple[Any, Any]:
        """Deterministic retrieval: the best-matching unit of each module (ties drawn from ``rng``).

        Parameters
        ----------
        cues : array of shape (n, n_bits)
            Binary cues (noisy or partial versions of stored patterns).
        rng : numpy.random.Generator
            Breaks ties between equally matching units.
        backend : {"auto", "numpy", "numba", "cupy"}, optional

        Returns
        -------
        codes : array of shape (n, n_modules), int64
        familiarity : array of shape (n,), float64

        Raises
        ------
        ValueError
            Nothing stored yet, wrong ``n_bits``, non-binary cues.
        """
        if self.n_stored == 0:
            raise ValueError("the memory is empty: store(patterns, rng) before recall(cues, rng)")
        kind, codes, familiarity = self._run(cues, rng, False, True, backend)
        return to_kind(codes, kind, like=cues), to_kind(familiarity, kind, like=cues)

    def decode(self, codes: Any, *, threshold: float = 0.5) -> np.ndarray:
        """Input pattern of a code: bit ``j`` is on when at least ``threshold * Q`` of the code's units connect to it.

        Parameters
        ----------
        codes : array of shape (n, n_modules)
            Integer winners per module.
        threshold : float, default 0.5
            Fraction of the ``Q`` winners that must agree, in (0, 1].

        Returns
        -------
        numpy.ndarray of shape (n, n_bits), uint8
        """
        check_array(codes, "codes", ndim=2, dtype_kind="iu")
        c = np.asarray(to_numpy(codes), dtype=np.int64)
        cfg = self.config
        if c.shape[1] != cfg.n_modules:
            raise ValueError(f"codes must have shape (n, n_modules={cfg.n_modules}); got shape {c.shape}")
        if c.size and (c.min() < 0 or c.max() >= cfg.module_size):
            raise ValueError(f"codes must lie in 0 .. {cfg.module_size - 1}")
        threshold = check_float(threshold, "threshold", minimum=0.0, maximum=1.0, strict_min=True)
        units = c + np.arange(cfg.n_modules) * cfg.module_size  # (n, Q) global unit ids
        support = self.weights[:, units].sum(axis=2, dtype=np.int64).T  # (n, n_bits)
        return (support >= threshold * cfg.n_modules - 1e-9).astype(np.uint8)


def code_overlap(codes_a: Any, codes_b: Any | None = None) -> np.ndarray:
    """Fraction of modules in which two codes choose the same winner.

    Parameters
    ----------
    codes_a : array of shape (n, n_modules)
    codes_b : array of shape (m, n_modules), optional
        Defaults to ``codes_a``.

    Returns
    -------
    numpy.ndarray of shape (n, m), float64
        Entry ``[i, j]`` in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import code_overlap
    >>> code_overlap(np.array([[0, 1, 2, 3]]), np.array([[0, 1, 0, 0], [0, 1, 2, 3]])).tolist()
    [[0.5, 1.0]]
    """
    check_array(codes_a, "codes_a", ndim=2, dtype_kind="iu")
    a = np.asarray(to_numpy(codes_a))
    b = a if codes_b is None else np.asarray(to_numpy(codes_b))
    if codes_b is not None:
        check_array(codes_b, "codes_b", ndim=2, dtype_kind="iu")
        if b.shape[1] != a.shape[1]:
            raise ValueError(f"codes_a and codes_b must have the same number of modules; got {a.shape[1]} and {b.shape[1]}")
    same = np.zeros((a.shape[0], b.shape[0]))
    for q in range(a.shape[1]):  # (n, m) per module: cheap, Q is small
        same += a[:, q][:, None] == b[:, q][None, :]
    return same / a.shape[1]


def flip_bits(rng: np.random.Generator, patterns: Any, n_flips: int) -> np.ndarray:
    """Copies of binary ``patterns`` with exactly ``n_flips`` bits flipped in each row, positions at random.

    Parameters
    ----------
    rng : numpy.random.Generator
    patterns : array of shape (n, n_bits)
        Binary patterns.
    n_flips : int
        Bits flipped per pattern, 0 .. n_bits.

    Returns
    -------
    numpy.ndarray of shape (n, n_bits), uint8

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import flip_bits
    >>> x = np.zeros((2, 10), dtype=np.uint8)
    >>> flip_bits(np.random.default_rng(0), x, 3).sum(axis=1).tolist()
    [3, 3]
    """
    rng = _check_rng(rng)
    check_array(patterns, "patterns", ndim=2, dtype_kind="biuf")
    x = np.asarray(to_numpy(patterns)).astype(np.uint8)
    n_flips = check_int(n_flips, "n_flips", minimum=0, maximum=x.shape[1])
    order = np.argsort(rng.random(x.shape), axis=1)[:, :n_flips]  # (n, n_flips) distinct positions
    out = x.copy()
    rows = np.arange(x.shape[0])[:, None]
    out[rows, order] ^= 1
    return out


# ------------------------------------------------------------------ baselines
class KanervaSDM:
    """Kanerva's sparse distributed memory (auto-associative), with nearest-``k`` activation.

    ``n_locations`` hard locations get random binary addresses. Writing a pattern
    ``x`` adds its bipolar form ``2x - 1`` to the counters of the ``n_active``
    locations whose addresses are closest to ``x`` in Hamming distance (the
    classic model activates every location inside a radius; a fixed count keeps
    the activation sparse even for inputs that cluster in a corner of the cube, as
    digits do). Reading sums the counters of the cue's nearest locations and
    thresholds at 0; ``iterations > 1`` feeds the output back as the next cue.
    Distances and counter sums are matrix products (BLAS, or cuBLAS for CuPy input).

    Parameters
    ----------
    n_bits : int
        Pattern size, >= 1.
    n_locations : int
        Number of hard locations, >= 1.
    n_active : int
        Locations activated per access, 1 .. n_locations.
    rng : numpy.random.Generator
        Draws the addresses.

    References
    ----------
    Kanerva, "Sparse Distributed Memory", MIT Press, 1988.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import KanervaSDM
    >>> rng = np.random.default_rng(0)
    >>> x = (rng.random((5, 64)) < 0.5).astype(np.uint8)
    >>> sdm = KanervaSDM(64, 2000, 100, rng)
    >>> sdm.store(x)
    >>> bool((sdm.recall(x) == x).all())
    True
    """

    def __init__(self, n_bits: int, n_locations: int, n_active: int, rng: np.random.Generator):
        self.n_bits = check_int(n_bits, "n_bits", minimum=1)
        self.n_locations = check_int(n_locations, "n_locations", minimum=1)
        self.n_active = check_int(n_active, "n_active", minimum=1, maximum=self.n_locations)
        rng = _check_rng(rng)
        self.addresses = (2.0 * (rng.random((self.n_locations, self.n_bits)) < 0.5) - 1.0)  # (L, n_bits), +-1
        self.counters = np.zeros((self.n_locations, self.n_bits))  # (L, n_bits)
        self.n_stored = 0

    def _active(self, bipolar: np.ndarray) -> np.ndarray:
        """Indices (n, n_active) of the nearest locations: largest inner product = smallest Hamming distance."""
        scores = bipolar @ self.addresses.T  # (n, L), BLAS
        if self.n_active == self.n_locations:
            return np.broadcast_to(np.arange(self.n_locations), scores.shape)
        return np.argpartition(-scores, self.n_active - 1, axis=1)[:, : self.n_active]

    def store(self, patterns: Any) -> None:
        """Add every pattern (shape (n, n_bits), binary) to its nearest locations' counters."""
        _, x = _check_binary(patterns, "patterns", self.n_bits)
        bipolar = 2.0 * x - 1.0  # (n, n_bits)
        active = self._active(bipolar)
        np.add.at(self.counters, active.reshape(-1), np.repeat(bipolar, self.n_active, axis=0))
        self.n_stored += x.shape[0]

    def recall(self, cues: Any, *, iterations: int = 1) -> Any:
        """Patterns read from the cues' nearest locations, shape (n, n_bits), uint8 (same kind as ``cues``)."""
        if self.n_stored == 0:
            raise ValueError("the memory is empty: store(patterns) before recall(cues)")
        kind, x = _check_binary(cues, "cues", self.n_bits)
        iterations = check_int(iterations, "iterations", minimum=1)
        for _ in range(iterations):
            active = self._active(2.0 * x - 1.0)
            sums = self.counters[active].sum(axis=1)  # (n, n_bits)
            x = (sums > 0).astype(np.uint8)
        return to_kind(x, kind, like=cues)


class WillshawNet:
    """Willshaw's binary auto-associative net: clipped Hebbian weights, ``k``-winners recall.

    Storing a pattern sets ``W[i, j] = 1`` for every pair of its active bits. A cue
    ``c`` gives each bit the support ``s_j = sum_i c_i W[i, j]``; recall keeps the
    ``k`` bits of highest support (``k`` = the cue's number of active bits unless
    given), the usual threshold when cues may contain wrong bits. The support is a
    matrix product (BLAS).

    Parameters
    ----------
    n_bits : int
        Pattern size, >= 1.

    References
    ----------
    Willshaw, Buneman and Longuet-Higgins, "Non-Holographic Associative Memory", Nature 222, 1969.

    Examples
    --------
    >>> import numpy as np
    >>> from companion.memory import WillshawNet
    >>> x = np.zeros((3, 30), dtype=np.uint8)
    >>> for i in range(3):
    ...     x[i, 10 * i: 10 * i + 4] = 1
    >>> net = WillshawNet(30)
    >>> net.store(x)
    >>> bool((net.recall(x) == x).all()), round(net.load, 3)
    (True, 0.053)
    """

    def __init__(self, n_bits: int):
        self.n_bits = check_int(n_bits, "n_bits", minimum=1)
        self.weights = np.zeros((self.n_bits, self.n_bits), dtype=np.uint8)
        self.n_stored = 0

    @property
    def load(self) -> float:
        """Fraction of weights set to 1 (near 1, the net has saturated and recalls nothing useful)."""
        return float(self.weights.mean())

    def store(self, patterns: Any) -> None:
        """Set the weight of every pair of co-active bits of each pattern (shape (n, n_bits), binary)."""
        _, x = _check_binary(patterns, "patterns", self.n_bits)
        co_active = x.T.astype(np.float64) @ x  # (n_bits, n_bits) counts, BLAS
        self.weights |= (co_active > 0).astype(np.uint8)
        self.n_stored += x.shape[0]

    def recall(self, cues: Any, *, k: int | None = None) -> Any:
        """Keep the ``k`` best-supported bits of each cue (ties: lower bit index first)."""
        if self.n_stored == 0:
            raise ValueError("the memory is empty: store(patterns) before recall(cues)")
        kind, c = _check_binary(cues, "cues", self.n_bits)
        support = c.astype(np.float64) @ self.weights  # (n, n_bits), BLAS
        counts = c.sum(axis=1) if k is None else np.full(c.shape[0], check_int(k, "k", minimum=0, maximum=self.n_bits))
        order = np.argsort(-support, axis=1, kind="stable")  # (n, n_bits)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(self.n_bits)[None, :].repeat(c.shape[0], 0), axis=1)
        out = (ranks < counts[:, None]).astype(np.uint8)
        return to_kind(out, kind, like=cues)
