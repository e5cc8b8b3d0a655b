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

from . import backend, claims  # noqa: E402,F401

__all__ = ["backend", "claims", "__version__"]
