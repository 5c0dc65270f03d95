import numpy as np
import pytest
import torch

from pipeline import metrics


def masks(*areas_per_pair):
    """(1, C, 4, 4) masks whose class c has the first areas[c] pixels set (row-major)."""
    out = np.zeros((1, len(areas_per_pair), 4, 4), dtype=np.uint8)
    for c, n in enumerate(areas_per_pair):
        out[0, c].reshape(-1)[:n] = 1
    return out


def test_empty_empty_is_one_and_stray_pixel_is_zero():
    truth = masks(0, 0, 0, 0)
    assert metrics.score_masks(masks(0, 0, 0, 0), truth).score == 1.0
    scores = metrics.score_masks(masks(1, 0, 0, 0), truth)
    assert scores.per_class == [0.0, 1.0, 1.0, 1.0]
    assert scores.score == 0.75


def test_identical_disjoint_and_partial():
    truth = masks(4, 0, 0, 0)
    pred = np.zeros_like(truth)
    pred[0, 0, 3, :] = 1  # last row: disjoint from the first 4 pixels
    np.testing.assert_allclose(metrics.dice(truth, truth)[0], [1, 1, 1, 1])
    np.testing.assert_allclose(metrics.dice(pred, truth)[0], [0, 1, 1, 1])
    half = masks(2, 0, 0, 0)  # 2 of the 4 true pixels: 2*2 / (2+4)
    np.testing.assert_allclose(metrics.dice(half, truth)[0, 0], 4 / 6)


def test_summary_baseline_nonempty_and_confusion():
    truth = np.concatenate([masks(4, 0, 0, 0), masks(0, 0, 0, 0), masks(3, 0, 5, 0)])
    pred = np.concatenate([masks(4, 0, 0, 0), masks(0, 2, 0, 0), masks(0, 0, 0, 0)])
    scores = metrics.score_masks(pred, truth)
    # pair dice: image0 [1,1,1,1], image1 [1,0,1,1], image2 [0,1,0,1]
    assert scores.score == pytest.approx(9 / 12)
    assert scores.per_class == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1.0])
    assert scores.nonempty == pytest.approx(1 / 3)   # pairs with truth: 1, 0, 0
    assert scores.all_empty_baseline == pytest.approx(9 / 12)
    # true counts [1, 0, 2], predicted [1, 1, 0]
    expected = np.zeros((5, 5), dtype=int)
    expected[1, 1] = expected[0, 1] = expected[2, 0] = 1
    assert scores.confusion == expected.tolist()
    assert scores.n_images == 3


def test_all_empty_baseline_matches_scoring_empty_prediction():
    rng = np.random.default_rng(0)
    truth = (rng.random((6, 4, 4, 4)) > 0.97).astype(np.uint8)
    empty = np.zeros_like(truth)
    _, _, true_area = metrics.pair_counts(empty, truth)
    assert metrics.score_masks(empty, truth).score == metrics.all_empty_baseline(true_area)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must both be"):
        metrics.dice(masks(1, 0), masks(1, 0, 0))


@pytest.mark.parametrize("shape", [(3, 4, 17, 40), (0, 4, 8, 8), (1, 1, 1, 1)])
def test_plane_counts_match_a_reduction_for_arrays_tensors_and_slices(shape):
    torch = pytest.importorskip("torch")
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.6
    want = torch.count_nonzero(masks, dim=(2, 3))
    got = metrics.plane_counts(masks)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    assert torch.equal(got, want)
    assert np.array_equal(metrics.plane_counts(masks.numpy()), want.numpy())
    sliced = masks[:, ::2, :, 1:]  # not contiguous
    assert torch.equal(metrics.plane_counts(sliced), torch.count_nonzero(sliced, dim=(2, 3)))
    as_uint8 = masks.to(torch.uint8) * 3
    assert torch.equal(metrics.plane_counts(as_uint8), want)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_threshold_counts_are_the_pair_counts_of_each_thresholded_mask(n):
    torch.manual_seed(n)
    probs = torch.rand(n, 5, 24, 40).softmax(1)[:, 1:]   # non-contiguous, as in evaluation
    truth = (torch.rand(n, 4, 24, 40) < 0.2).to(torch.uint8)
    if n:
        truth[0, 1] = 0   # an empty true plane
        probs[0, 2, 0, 0] = 0.2   # a probability exactly at a threshold is not above it
    thresholds = (0.1, 0.2, 0.25, 0.5)
    got = metrics.threshold_counts(probs, truth, thresholds)
    assert got.shape == (n, 4, 4, 3) and got.dtype == torch.int64
    for k, t in enumerate(thresholds):
        want = torch.stack(metrics.pair_counts(probs > t, truth), dim=-1)
        assert torch.equal(got[:, k], want), t
    with pytest.raises(ValueError, match="must both be"):
        metrics.threshold_counts(probs, truth[:, :3], thresholds)
