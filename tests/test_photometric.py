"""Photometric operations: identities, clipping, shapes and determinism on tiny images."""

import numpy as np
import pytest
import torch

from pipeline.data import photometric


def grey(value=100.0, shape=(4, 6)):
    return np.full(shape, value, dtype=np.float32)


def test_unit_parameters_are_identities():
    values = np.arange(24, dtype=np.float32).reshape(4, 6) * 10
    np.testing.assert_array_equal(photometric.exposure(values, 1.0), values)
    np.testing.assert_array_equal(photometric.contrast(values, values.mean(), 1.0), values)
    np.testing.assert_allclose(photometric.gamma_curve(values, 1.0), values, rtol=1e-6)
    np.testing.assert_array_equal(photometric.gamma_table(1.0), np.arange(256, dtype=np.uint8))


def test_contrast_scales_deviations_about_the_mean():
    values = np.array([[90.0, 110.0]], dtype=np.float32)
    np.testing.assert_array_equal(photometric.contrast(values, 100.0, 0.5), [[95.0, 105.0]])


def test_quantising_rounds_and_clips():
    out = photometric.to_uint8(np.array([-3.0, 0.4, 0.6, 254.5, 300.0]))
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 254, 255]


def test_gamma_darkens_above_one_and_keeps_the_ends():
    table = photometric.gamma_table(2.0)
    assert table[0] == 0 and table[255] == 255 and table[128] == 64


def test_blur_keeps_a_flat_image_and_spreads_a_dot():
    np.testing.assert_allclose(photometric.gaussian_blur(grey(), 2.0), grey(), rtol=1e-6)
    dot = np.zeros((9, 9), dtype=np.float32)
    dot[4, 4] = 1.0
    spread = photometric.gaussian_blur(dot, 1.0)
    assert spread[4, 4] < 1.0 and spread[4, 5] > 0 and spread.sum() == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("shape", [(16, 24), (16, 24, 3)])
def test_jpeg_keeps_shape_and_dtype_and_loses_detail_at_low_quality(shape):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    low, high = (photometric.jpeg_roundtrip(pixels, q) for q in (10, 95))
    assert low.shape == pixels.shape and low.dtype == np.uint8
    error = [np.abs(x.astype(int) - pixels).mean() for x in (low, high)]
    assert error[0] > error[1]


def test_the_ramp_rises_from_the_floor_to_one():
    ramp = photometric.smoothstep_ramp(10, 0.05)
    assert ramp[0] == pytest.approx(0.05) and np.all(np.diff(ramp) > 0) and ramp[-1] < 1.0


def test_log_uniform_draws_stay_in_range_and_repeat_under_a_seed():
    draws = [photometric.log_uniform(np.random.default_rng(s), 0.5, 2.0) for s in range(50)]
    assert min(draws) >= 0.5 and max(draws) <= 2.0
    assert photometric.log_uniform(np.random.default_rng(3), 0.5, 2.0) == draws[3]
    torch.manual_seed(1)
    first = photometric.log_uniform_torch(0.5, 2.0)
    torch.manual_seed(1)
    assert photometric.log_uniform_torch(0.5, 2.0) == first and 0.5 <= first <= 2.0
