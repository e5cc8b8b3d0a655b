"""Hot loops shared by several parts: top-k inner-product search, nearest-codebook assignment, bit packing, block-sparse attention, KV eviction scores."""

from . import topk as _topk  # noqa: E402
from . import assign as _assign  # noqa: E402
from . import bitpack as _bitpack  # noqa: E402
from . import block_sparse as _block_sparse  # noqa: E402
from . import eviction as _eviction  # noqa: E402
from .topk import *  # noqa: E402,F401,F403
from .assign import *  # noqa: E402,F401,F403
from .bitpack import *  # noqa: E402,F401,F403
from .block_sparse import *  # noqa: E402,F401,F403
from .eviction import *  # noqa: E402,F401,F403

__all__ = [
    *_topk.__all__,
    *_assign.__all__,
    *_bitpack.__all__,
    *_block_sparse.__all__,
    *_eviction.__all__,
]
