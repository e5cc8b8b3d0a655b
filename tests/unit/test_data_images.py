"""Tests of companion.data.images: the test card, digits, pixel coordinates and PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from companion.data import detail_image, digits_image, image_coordinates, psnr


def test_detail_image_shape_range_and_determinism():
    img = detail_image(40, 24)
    assert img.shape == (40, 24) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.1
    np.testing.assert_array_equal(img, detail_image(40, 24))
    assert detail_image(16).shape == (16, 16)


def test_detail_image_is_one_scene_at_every_resolution():
    # a 2 x 2 block of the 128-pixel rendering averages exactly the samples of one 64-pixel pixel
    fine = detail_image(128, supersample=4).astype(np.float64)
    coarse = detail_image(64, supersample=8)
    np.testing.assert_allclose(fine.reshape(64, 2, 64, 2).mean(axis=(1, 3)), coarse, atol=1e-6)


def test_digits_image():
    img = digits_image(5, 40)
    assert img.shape == (40, 40) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.5
    with pytest.raises(ValueError, match="index must be <= 1796; got 1797"):
        digits_image(1797)


def test_image_coordinates_line_up_with_reshape():
    h, w = 3, 5
    coords = image_coordinates(h, w)
    assert coords.shape == (h * w, 2) and coords.dtype == np.float32
    img = np.arange(h * w).reshape(h, w)
    for k, value in enumerate(img.reshape(-1)):
        r, c = divmod(int(value), w)
        np.testing.assert_allclose(coords[k], [(r + 0.5) / h, (c + 0.5) / w], rtol=1e-6)
    assert (coords > 0).all() and (coords < 1).all()
    np.testing.assert_array_equal(image_coordinates(4), image_coordinates(4, 4))


def test_psnr_values_and_kinds():
    a = np.full((4, 4), 0.5)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a * 255, (a + 0.1) * 255, data_range=255.0) == pytest.approx(20.0)
    t = torch.tensor(a, dtype=torch.float32)
    assert psnr(t, t + 0.01) == pytest.approx(40.0, abs=1e-3)
    assert psnr(t, t) == math.inf


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="pred and target must have the same shape; got \\(3,\\) and \\(4,\\)"):
        psnr(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="pred must contain only finite values"):
        psnr(np.array([np.nan, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match="data_range must be > 0.0; got 0.0"):
        psnr(np.zeros(2), np.zeros(2), data_range=0.0)
    with pytest.raises(TypeError, match="target must be a NumPy array"):
        psnr(np.zeros(2), [0.0, 0.0])
    with pytest.raises(ValueError, match="height must be >= 4; got 2"):
        detail_image(2)
    with pytest.raises(ValueError, match="supersample must be <= 16; got 17"):
        detail_image(8, supersample=17)
    with pytest.raises(TypeError, match="width must be an integer"):
        image_coordinates(4, 2.5)
