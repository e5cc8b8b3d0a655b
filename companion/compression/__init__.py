"""Part II, compression: KV-cache eviction and quantization, codebooks, rate reduction and sparse coding, entropy coding."""

from . import kv_cache as _kv_cache  # noqa: E402
from . import quantization as _quantization  # noqa: E402
from . import kv_quantization as _kv_quantization  # noqa: E402
from . import codebooks as _codebooks  # noqa: E402
from . import rate_reduction as _rate_reduction  # noqa: E402
from . import sparse_coding as _sparse_coding  # noqa: E402
from . import local_rank as _local_rank  # noqa: E402
from . import entropy_coding as _entropy_coding  # noqa: E402
from . import tractable as _tractable  # noqa: E402
from .kv_cache import *  # noqa: E402,F401,F403
from .quantization import *  # noqa: E402,F401,F403
from .kv_quantization import *  # noqa: E402,F401,F403
from .codebooks import *  # noqa: E402,F401,F403
from .rate_reduction import *  # noqa: E402,F401,F403
from .sparse_coding import *  # noqa: E402,F401,F403
from .local_rank import *  # noqa: E402,F401,F403
from .entropy_coding import *  # noqa: E402,F401,F403
from .tractable import *  # noqa: E402,F401,F403

__all__ = [
    *_kv_cache.__all__,
    *_quantization.__all__,
    *_kv_quantization.__all__,
    *_codebooks.__all__,
    *_rate_reduction.__all__,
    *_sparse_coding.__all__,
    *_local_rank.__all__,
    *_entropy_coding.__all__,
    *_tractable.__all__,
]
