"""Codebooks: k-means, product quantization, residual quantization, codebook-compressed layers.

A *codebook* is a small table of vectors (codewords); a vector is stored as
the index of its nearest codeword. The methods of chapter C3:

* :func:`kmeans` learns a codebook (k-means++ seeding, Lloyd iterations; the
  assignment step is :func:`companion.kernels.nearest_centroid`);
* :class:`ProductQuantizer` keeps one codebook per slice of the coordinates and
  searches an encoded database by asymmetric distances (:func:`adc_search`, the
  table lookup/accumulate kernel, NumPy/numba/CuPy);
* :class:`ResidualQuantizer` chains codebooks, each quantizing the previous residual;
* :class:`CodebookLinear`, :func:`compress_linear_layers` and
  :func:`bits_per_weight` store a network's weights as codebook indices;
* :class:`StraightThroughVQ` is the vector-quantization layer trained with the
  straight-through gradient.

Papers of chapter C3: "Network Memory Footprint Compression Through Jointly
Learnable Codebooks and Mappings"; "Codebook Features: Sparse and Discrete
Interpretability for Neural Networks"; "Hierarchical Sketch Induction for
Paraphrase Generation"; "Disentanglement via Latent Quantization"; "Quantised
Global Autoencoder: A Holistic Approach to Representing Visual Data".
"""

from __future__ import annotations

from ._c3_adc import adc_search
from ._c3_kmeans import kmeans
from ._c3_quantizers import ProductQuantizer, ResidualQuantizer
from ._c3_torch import CodebookLinear, StraightThroughVQ, bits_per_weight, compress_linear_layers

__all__ = [
    "kmeans",
    "ProductQuantizer",
    "ResidualQuantizer",
    "adc_search",
    "CodebookLinear",
    "compress_linear_layers",
    "bits_per_weight",
    "StraightThroughVQ",
]
