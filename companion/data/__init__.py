"""Synthetic tasks and datasets for the course's experiments.

Each task is ``task(rng, batch_size, ...) -> (inputs, targets, mask)`` with
NumPy arrays of shape ``(batch_size, seq)``; see :mod:`companion.data.sequences`
for the token layout and :mod:`companion.data.algorithmic` for the
length-generalization tasks (duplicate, sort, odds-first, modular sum).
``functools.partial(task, seq_len=..., vocab_size=...)`` is a ``batch_fn``
for :func:`companion.nn.train`.
"""

from .algorithmic import (
    ALGORITHMIC_TASKS,
    duplicate_task,
    modular_sum_task,
    odds_first_task,
    prompt_answer_batch,
    sort_task,
)
from .graphs import (
    CSL_SKIPS,
    circular_skip_link_graph,
    complete_graph,
    csl_dataset,
    cycle_graph,
    from_edges,
    path_graph,
    permute_graph,
    rook_graph,
    shrikhande_graph,
    star_graph,
)
from .images import detail_image, digits_image, image_coordinates, psnr
from .sequences import (
    IGNORE_INDEX,
    N_SPECIAL,
    PAD_ID,
    SEP_ID,
    TASKS,
    absolute_position_task,
    copy_task,
    lookback_task,
    reverse_task,
    task_vocab_size,
)

__all__ = [
    "ALGORITHMIC_TASKS",
    "duplicate_task",
    "modular_sum_task",
    "odds_first_task",
    "prompt_answer_batch",
    "sort_task",
    "IGNORE_INDEX",
    "N_SPECIAL",
    "PAD_ID",
    "SEP_ID",
    "TASKS",
    "absolute_position_task",
    "copy_task",
    "lookback_task",
    "reverse_task",
    "task_vocab_size",
    # images for coordinate networks (chapter P3)
    "detail_image",
    "digits_image",
    "image_coordinates",
    "psnr",
]

# graph families for curvature encodings (chapter P5)
from .graph_families import (
    balanced_tree_graph,
    clustering_classification_dataset,
    grid_graph,
    random_regular_graph,
    rewire_edges,
    ring_of_cliques_graph,
    watts_strogatz_graph,
)

__all__ += [
    "balanced_tree_graph",
    "clustering_classification_dataset",
    "grid_graph",
    "random_regular_graph",
    "rewire_edges",
    "ring_of_cliques_graph",
    "watts_strogatz_graph",
    # graphs (chapter P4)
    "CSL_SKIPS",
    "from_edges",
    "cycle_graph",
    "path_graph",
    "complete_graph",
    "star_graph",
    "circular_skip_link_graph",
    "csl_dataset",
    "shrikhande_graph",
    "rook_graph",
    "permute_graph",
]

# text and long-range memory tasks (Parts I and II)
from .kv_recall import key_value_recall_task, kv_recall_answer_positions, kv_recall_vocab_size
from .text_corpus import ALPHABET, CharCorpus, char_lm_task, stdlib_corpus, stdlib_source_files

__all__ += [
    "key_value_recall_task",
    "kv_recall_answer_positions",
    "kv_recall_vocab_size",
    "ALPHABET",
    "CharCorpus",
    "char_lm_task",
    "stdlib_corpus",
    "stdlib_source_files",
]

# associative-memory and induction-head tasks (chapters M1, M2)
from . import triggered_bigram as _triggered_bigram, zipf as _zipf  # noqa: E402
from .triggered_bigram import *  # noqa: E402,F401,F403
from .zipf import *  # noqa: E402,F401,F403

__all__ += [*_triggered_bigram.__all__, *_zipf.__all__]
