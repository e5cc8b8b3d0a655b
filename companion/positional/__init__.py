"""Positions in attention (chapter P1).

Four ways to tell a transformer where its tokens are:

* :func:`sinusoidal_table` - fixed sin/cos encodings added to the inputs
  ("Attention Is All You Need");
* :func:`rope_apply` - rotary embeddings, rotating queries and keys by their
  positions ("RoFormer");
* :func:`alibi_attention_scores` / :func:`alibi_bias` - a linear distance
  penalty on the attention logits ("Train Short, Test Long");
* :class:`RelativePositionBias` - a learned bias per bucketed relative offset
  (Shaw et al. 2018; T5).

Length generalization (chapter P2): :func:`randomized_positions` and
:func:`bilevel_positions` make position ids that stay in distribution on
longer sequences; :func:`run_length_generalization` trains on short
sequences and tests on long ones.

Graphs (chapter P4): :func:`laplacian_pe`, :func:`random_walk_pe` (one walk step: :func:`random_walk_step`),
:func:`random_feature_propagation`, :func:`ego_edge_encoding`, :func:`wl_colors`
and the message-passing classifier :class:`SimpleMPNN`.

Coordinates (chapter P3): :func:`fourier_features` (random or axis-aligned
Fourier features; ``learnable=True`` gives a :class:`FourierFeatures`
module), :func:`gaussian_basis_features` (shifted Gaussian bumps), and the
coordinate network :class:`CoordinateMLP` (ReLU, sine or SPDER units) with
:func:`fit_coordinates`.

Example
-------
>>> import numpy as np
>>> from companion import positional
>>> q = np.ones((1, 2, 4, 8), dtype=np.float32)
>>> positional.rope_apply(q).shape
(1, 2, 4, 8)
"""

from .alibi import alibi_attention_scores, alibi_bias, alibi_slopes
from .coordinate_mlp import (
    ACTIVATIONS,
    CoordinateMLP,
    FitHistory,
    FourierFeatures,
    fit_coordinates,
    predict_coordinates,
    spder_activation,
)
from .fourier import (
    FOURIER_KINDS,
    fourier_features,
    fourier_frequencies,
    gaussian_basis_centers,
    gaussian_basis_features,
)
from .length import (
    LENGTH_ENCODINGS,
    LengthGeneralizationResult,
    bilevel_positions,
    evaluate_lengths,
    randomized_positions,
    run_length_generalization,
    segments_from_separators,
)
from .graph import GraphFitHistory, SimpleMPNN, fit_graph_classifier, graph_batch
from .graph_ego import EGO_EDGE_FEATURES, ego_balls, ego_edge_encoding, wl_colors
from .graph_pe import (
    DENSE_EIGH_MAX_NODES,
    as_adjacency,
    laplacian,
    laplacian_pe,
    random_feature_propagation,
    random_sign_flip,
    random_walk_operator,
    random_walk_pe,
    random_walk_step,
)
from .relative import RelativePositionBias, relative_position_bucket
from .rope import LAYOUTS, rope_angles, rope_apply, rope_apply_torch
from .sinusoidal import sinusoidal_table

__all__ = [
    "sinusoidal_table",
    "rope_angles",
    "rope_apply",
    "rope_apply_torch",
    "LAYOUTS",
    "alibi_slopes",
    "alibi_bias",
    "alibi_attention_scores",
    "relative_position_bucket",
    "RelativePositionBias",
    "randomized_positions",
    "bilevel_positions",
    "segments_from_separators",
    "LENGTH_ENCODINGS",
    "LengthGeneralizationResult",
    "evaluate_lengths",
    "run_length_generalization",
    # coordinates (chapter P3)
    "FOURIER_KINDS",
    "ACTIVATIONS",
    "fourier_frequencies",
    "fourier_features",
    "FourierFeatures",
    "gaussian_basis_centers",
    "gaussian_basis_features",
    "spder_activation",
    "CoordinateMLP",
    "FitHistory",
    "fit_coordinates",
    "predict_coordinates",
]

# curvature structural encodings (chapter P5)
from .curvature import (
    LCP_COLUMNS,
    METHODS as CURVATURE_METHODS,
    curvature_edges,
    local_curvature_profile,
    ollivier_ricci_curvature,
)

__all__ += [
    "LCP_COLUMNS",
    "CURVATURE_METHODS",
    "curvature_edges",
    "local_curvature_profile",
    "ollivier_ricci_curvature",
    # graphs (chapter P4)
    "as_adjacency",
    "laplacian",
    "laplacian_pe",
    "random_sign_flip",
    "random_walk_operator",
    "random_walk_pe",
    "random_walk_step",
    "random_feature_propagation",
    "DENSE_EIGH_MAX_NODES",
    "EGO_EDGE_FEATURES",
    "ego_balls",
    "ego_edge_encoding",
    "wl_colors",
    "SimpleMPNN",
    "graph_batch",
    "fit_graph_classifier",
    "GraphFitHistory",
]
