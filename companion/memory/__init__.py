"""Part I, memory: associative memories, Hopfield retrieval, sparse distributed memories, external memory, attention patterns."""

from . import associative as _associative  # noqa: E402
from . import hopfield as _hopfield  # noqa: E402
from . import induction as _induction  # noqa: E402
from . import sdm as _sdm  # noqa: E402
from . import retrieval as _retrieval  # noqa: E402
from . import recurrent_memory as _recurrent_memory  # noqa: E402
from . import sparse_attention as _sparse_attention  # noqa: E402
from . import linear_attention as _linear_attention  # noqa: E402
from . import long_conv as _long_conv  # noqa: E402
from .associative import *  # noqa: E402,F401,F403
from .hopfield import *  # noqa: E402,F401,F403
from .induction import *  # noqa: E402,F401,F403
from .sdm import *  # noqa: E402,F401,F403
from .retrieval import *  # noqa: E402,F401,F403
from .recurrent_memory import *  # noqa: E402,F401,F403
from .sparse_attention import *  # noqa: E402,F401,F403
from .linear_attention import *  # noqa: E402,F401,F403
from .long_conv import *  # noqa: E402,F401,F403

__all__ = [
    *_associative.__all__,
    *_hopfield.__all__,
    *_induction.__all__,
    *_sdm.__all__,
    *_retrieval.__all__,
    *_recurrent_memory.__all__,
    *_sparse_attention.__all__,
    *_linear_attention.__all__,
    *_long_conv.__all__,
]
