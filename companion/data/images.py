"""Small grayscale images for coordinate-fitting experiments (chapter P3).

A *coordinate network* learns the map ``(row, col) -> intensity`` of a single
image. These helpers give it something to fit and a way to score the fit:

* :func:`detail_image` - a synthetic "test card" with fine detail in every
  quadrant (a zone plate, a checkerboard, crossed gratings, block letters on a
  disc). The scene is defined in continuous coordinates and rendered with
  supersampling, so any resolution shows the same picture without aliasing;
* :func:`digits_image` - one of scikit-learn's bundled 8x8 handwritten digits,
  upscaled bilinearly (a smooth, easy image);
* :func:`image_coordinates` - the pixel-centre coordinates of an ``h x w`` grid
  in ``[0, 1]``, row-major, one row per pixel;
* :func:`psnr` - peak signal-to-noise ratio in decibels.

Example
-------
>>> from companion.data import detail_image, image_coordinates, psnr
>>> img = detail_image(32)
>>> coords = image_coordinates(*img.shape)
>>> img.shape, coords.shape, float(coords.min()) > 0.0, psnr(img, img)
((32, 32), (1024, 2), True, inf)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_array, check_float, check_int
from ..backend import to_numpy

__all__ = ["detail_image", "digits_image", "image_coordinates", "psnr"]

# Block letters "P3" on a 5 x 3 grid of cells (1 = ink).
_GLYPHS = {
    "P": ("111", "101", "111", "100", "100"),
    "3": ("111", "001", "111", "001", "111"),
}


def _scene(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Intensity in [0, 1] of the test card at continuous points (y = row, x = column, both in [0, 1])."""
    out = 0.3 + 0.4 * x  # smooth background ramp
    top, left = y < 0.5, x < 0.5

    # top left: a zone plate, cos(k r^2): the local frequency grows with the radius
    r2 = (y - 0.25) ** 2 + (x - 0.25) ** 2
    zone = 0.5 + 0.5 * np.cos(150.0 * r2)  # up to ~11 cycles per unit at the rim
    inside = r2 < 0.23**2
    out = np.where(top & left & inside, zone, out)

    # top right: a checkerboard of squares 1/8 wide
    checker = ((np.floor(8 * y) + np.floor(8 * x)) % 2).astype(np.float64)
    out = np.where(top & ~left, 0.1 + 0.8 * checker, out)

    # bottom left: two crossed gratings at different angles and frequencies
    a1, a2 = math.radians(30.0), math.radians(115.0)
    g1 = np.cos(2 * np.pi * 6.0 * (x * math.cos(a1) + y * math.sin(a1)))
    g2 = np.cos(2 * np.pi * 9.0 * (x * math.cos(a2) + y * math.sin(a2)))
    out = np.where(~top & left, 0.5 + 0.22 * g1 + 0.22 * g2, out)

    # bottom right: a bright disc with dark block letters on it
    disc = (y - 0.75) ** 2 + (x - 0.75) ** 2 < 0.2**2
    br = ~top & ~left
    out = np.where(br, 0.15, out)
    out = np.where(br & disc, 0.9, out)
    cell = 0.045
    for k, ch in enumerate("P3"):
        top_y, left_x = 0.75 - 2.5 * cell, 0.75 - 3.5 * cell + 4 * cell * k
        for i, row in enumerate(_GLYPHS[ch]):
            for j, ink in enumerate(row):
                if ink == "1":
                    y0, x0 = top_y + i * cell, left_x + j * cell
                    block = (y >= y0) & (y < y0 + cell) & (x >= x0) & (x < x0 + cell)
                    out = np.where(block, 0.05, out)
    return np.clip(out, 0.0, 1.0)


def detail_image(height: int = 64, width: int | None = None, *, supersample: int = 4) -> np.ndarray:
    """A synthetic grayscale test card with fine detail, rendered at ``height x width``.

    The four quadrants hold a zone plate (rings whose frequency rises outwards),
    a checkerboard with sharp edges, two crossed oriented gratings, and block
    letters on a disc. The scene lives in continuous coordinates, so renderings
    at different sizes show the same picture; each pixel is the mean of
    ``supersample**2`` point samples, which removes aliasing.

    Parameters
    ----------
    height : int, default 64
        Rows, >= 4.
    width : int, optional
        Columns, >= 4; default ``height``.
    supersample : int, default 4
        Point samples per pixel along each axis (1 .. 16).

    Returns
    -------
    numpy.ndarray of shape (height, width), float32
        Intensities in ``[0, 1]``.

    Example
    -------
    >>> img = detail_image(48, 64)
    >>> img.shape, img.dtype.name, bool(0.0 <= img.min() and img.max() <= 1.0)
    ((48, 64), 'float32', True)
    """
    height = check_int(height, "height", minimum=4)
    width = height if width is None else check_int(width, "width", minimum=4)
    supersample = check_int(supersample, "supersample", minimum=1, maximum=16)
    sub = (np.arange(supersample) + 0.5) / supersample  # (s,) offsets inside a pixel
    ys = ((np.arange(height)[:, None] + sub[None, :]) / height).reshape(-1)  # (height * s,)
    xs = ((np.arange(width)[:, None] + sub[None, :]) / width).reshape(-1)  # (width * s,)
    fine = _scene(ys[:, None], xs[None, :])  # (height * s, width * s)
    img = fine.reshape(height, supersample, width, supersample).mean(axis=(1, 3))
    return img.astype(np.float32)


def digits_image(index: int = 0, size: int = 64) -> np.ndarray:
    """One of scikit-learn's bundled 8x8 digits, upscaled bilinearly to ``size x size``.

    Parameters
    ----------
    index : int, default 0
        Which of the 1797 digits (0 .. 1796).
    size : int, default 64
        Output side, >= 8.

    Returns
    -------
    numpy.ndarray of shape (size, size), float32
        Intensities in ``[0, 1]`` (ink is bright).

    Example
    -------
    >>> digits_image(3, 32).shape
    (32, 32)
    """
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    index = check_int(index, "index", minimum=0, maximum=1796)
    size = check_int(size, "size", minimum=8)
    small = load_digits().images[index] / 16.0  # (8, 8) in [0, 1]
    big = zoom(small, size / 8.0, order=1, mode="nearest", grid_mode=True)
    return np.clip(big[:size, :size], 0.0, 1.0).astype(np.float32)


def image_coordinates(height: int, width: int | None = None) -> np.ndarray:
    """Pixel-centre coordinates of an ``height x width`` grid, scaled into ``[0, 1]``.

    Row ``r * width + c`` of the result is ``((r + 0.5) / height, (c + 0.5) / width)``,
    so ``image.reshape(-1)`` lines up with it (row-major). Column 0 is the
    vertical coordinate (row), column 1 the horizontal one (column).

    Parameters
    ----------
    height : int
        Rows, >= 1.
    width : int, optional
        Columns, >= 1; default ``height``.

    Returns
    -------
    numpy.ndarray of shape (height * width, 2), float32

    Example
    -------
    >>> image_coordinates(2, 3).tolist()[:2]
    [[0.25, 0.1666666716337204], [0.25, 0.5]]
    """
    height = check_int(height, "height", minimum=1)
    width = height if width is None else check_int(width, "width", minimum=1)
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)  # (height, width, 2)
    return grid.reshape(-1, 2).astype(np.float32)


def psnr(pred: Any, target: Any, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in decibels.

    Parameters
    ----------
    pred, target : arrays of the same shape
        NumPy arrays, CuPy arrays or torch tensors; finite floating values.
    data_range : float, default 1.0
        Difference between the largest and smallest possible value (1 for
        images in ``[0, 1]``), > 0.

    Returns
    -------
    float
        ``inf`` when the two arrays are identical. Every 10 dB is a tenfold
        smaller mean squared error.

    Example
    -------
    >>> import numpy as np
    >>> round(psnr(np.full(4, 0.5), np.full(4, 0.6)), 3)
    20.0
    """
    check_array(pred, "pred")
    check_array(target, "target")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}")
    data_range = check_float(data_range, "data_range", minimum=0.0, strict_min=True)
    diff = np.asarray(to_numpy(pred), dtype=np.float64) - np.asarray(to_numpy(target), dtype=np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return float(10.0 * math.log10(data_range**2 / mse))
