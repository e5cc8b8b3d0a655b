"""companion: the package behind the course on how neural networks remember,
compress, generalize, encode position and keep learning.

Subpackages mirror the book's parts (``memory``, ``compression`` and
``positional`` so far); shared pieces are ``backend`` (NumPy / numba / CuPy
choice and array conversion), ``kernels`` (hot loops used by several parts:
top-k search, nearest-centroid assignment, bit packing, block-sparse attention,
KV eviction), ``claims`` (claim checks), ``nn`` (the course's tiny transformer
and its step-by-step decoding loop), ``data`` (synthetic tasks and the
standard-library text corpus) and ``viz`` (offline-first Altair charts).
"""

__version__ = "0.1.0"

# torch is imported before anything here can launch numba's OpenMP threads: when numba's
# threading layer (the system libgomp) starts first, torch's own libgomp-parallel kernels
# ran 5-7 times slower for the rest of the process on the course machines (measured with
# scaled_dot_product_attention in benchmarks/harness.py). Importing torch first avoids that.
try:  # noqa: SIM105 - torch is a dependency; a broken install should not break companion's NumPy paths
    import torch as _torch  # noqa: F401
except ImportError:  # pragma: no cover
    pass

from . import backend, claims  # noqa: E402,F401

__all__ = ["backend", "claims", "__version__"]
