"""companion: the package behind the course on how neural networks remember,
compress, generalize, encode position and keep learning.

Subpackages mirror the book's parts (``positional`` so far); shared pieces are
``backend`` (NumPy / numba / CuPy choice and array conversion), ``claims``
(claim checks), ``nn`` (the course's tiny transformer), ``data`` (synthetic
tasks) and ``viz`` (offline-first Altair charts).
"""

__version__ = "0.1.0"

from . import backend, claims  # noqa: E402,F401

__all__ = ["backend", "claims", "__version__"]
