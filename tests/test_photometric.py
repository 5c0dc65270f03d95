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
    first = photometric.log_uniform(None, 0.5, 2.0)
    torch.manual_seed(1)
    assert photometric.log_uniform(None, 0.5, 2.0) == first and 0.5 <= first <= 2.0


def levels(channels=3):
    """Every grey level once per channel: a (channels, 4, 64) uint8 tensor."""
    return torch.arange(256, dtype=torch.uint8).reshape(4, 64).repeat(channels, 1, 1)


def test_tensor_brightness_clips_truncates_and_matches_torchvision():
    from torchvision.transforms.v2 import functional
    image = levels()
    assert torch.equal(photometric.tensor_brightness(image, 1.0), image)
    out = photometric.tensor_brightness(torch.tensor([[[3, 200]]], dtype=torch.uint8), 1.5)
    assert out.dtype == torch.uint8 and out.tolist() == [[[4, 255]]]  # 4.5 truncated, clipped
    for factor in (0.3, 0.77, 1.33, 1.8):
        assert torch.equal(photometric.tensor_brightness(image, factor),
                           functional.adjust_brightness(image, factor))


def test_tensor_contrast_and_gamma_of_one_are_identities():
    image = levels()
    assert torch.equal(photometric.tensor_contrast(image, 1.0), image)
    assert torch.equal(photometric.tensor_gamma(image, 1.0), image)


def test_tensor_contrast_of_zero_is_the_mean_luma_and_gamma_keeps_the_ends():
    flat = photometric.tensor_contrast(levels(), 0.0)
    # the mean of the floored luma (weights summing to 0.9999: 0..254 for 0..255), truncated
    assert flat.unique().tolist() == [126]
    dark = photometric.tensor_gamma(levels(), 2.0)
    assert dark.flatten()[[0, 255]].tolist() == [0, 255] and dark[0, 2, 0] == 64  # level 128


def test_tensor_blur_keeps_a_flat_image_and_spreads_a_dot():
    flat = torch.full((3, 8, 8), 90, dtype=torch.uint8)
    assert torch.equal(photometric.tensor_blur(flat, 1.2), flat)
    dot = torch.zeros((1, 9, 9), dtype=torch.uint8)
    dot[0, 4, 4] = 255
    spread = photometric.tensor_blur(dot, 1.0)
    assert spread.dtype == torch.uint8 and 0 < spread[0, 4, 5] < spread[0, 4, 4] < 255


def test_tensor_noise_adds_rounds_and_clips():
    image = torch.tensor([[[0, 100, 250]]], dtype=torch.uint8)
    assert torch.equal(photometric.tensor_noise(image, torch.zeros(1, 1, 3)), image)
    out = photometric.tensor_noise(image, torch.tensor([[[-3.0, 0.6, 9.0]]]))
    assert out.dtype == torch.uint8 and out.tolist() == [[[0, 101, 255]]]


@pytest.mark.parametrize("channels", [1, 3])
def test_tensor_jpeg_keeps_shape_dtype_and_a_flat_grey(channels):
    flat = torch.full((channels, 16, 24), 120, dtype=torch.uint8)
    out = photometric.tensor_jpeg(flat, 30)
    assert out.shape == flat.shape and out.dtype == torch.uint8
    assert (out.int() - 120).abs().max() <= 1


def test_grain_repeats_under_a_seed_in_each_precision_and_scales_with_sigma():
    shape = (64, 64)
    for draws in (np.float32, np.float64):
        first, again = (photometric.gaussian_grain(np.random.default_rng(5), shape, 4.0, draws)
                        for _ in range(2))
        assert first.dtype == np.float32 and first.shape == shape
        np.testing.assert_array_equal(first, again)
        assert 3.6 < first.std() < 4.4
    draws32, draws64 = (photometric.gaussian_grain(np.random.default_rng(5), shape, 4.0, d)
                        for d in (np.float32, np.float64))
    assert not np.array_equal(draws32, draws64)  # two streams: each user keeps its own
    first, again = (photometric.gaussian_grain(torch.Generator().manual_seed(2), (3, 8), 2.0)
                    for _ in range(2))
    assert first.dtype == torch.float32 and torch.equal(first, again)


def test_log_uniform_takes_a_torch_generator():
    first, again = (photometric.log_uniform(torch.Generator().manual_seed(4), 0.3, 1.8)
                    for _ in range(2))
    assert first == again and 0.3 <= first <= 1.8
