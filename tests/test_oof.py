import itertools

import numpy as np
import pytest
import torch

from pipeline import metrics
from pipeline.inference import oof, postprocess, tuning
from pipeline.inference.postprocess import PostProcess


def random_set(seed=0, n=12, shape=(32, 48)):
    """Probabilities with blobs near the truth blobs, and truths of which about half are empty."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 4, *shape), dtype=np.uint8)
    probs = rng.random((n, 4, *shape), dtype=np.float32) * 0.45
    for i, c in itertools.product(range(n), range(4)):
        if rng.random() < 0.4:
            r, q = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 12)
            h, w = rng.integers(3, 10), rng.integers(3, 12)
            truth[i, c, r:r + h, q:q + w] = 1
            probs[i, c, r:r + h, q + 1:q + w + 1] += rng.uniform(0.2, 0.5)
        if rng.random() < 0.3:   # false-positive specks of various sizes
            r, q = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
            probs[i, c, r:r + rng.integers(1, 4), q:q + rng.integers(1, 4)] = 0.95
    return torch.from_numpy(probs.clip(0, 0.999)), torch.from_numpy(truth)


def test_accumulator_equals_brute_force_on_every_grid_point():
    thresholds = (0.3, 0.5, 0.6)
    min_areas = (0, 2, 5, 9, 20, 60)
    probs, truth = random_set()
    accumulator = oof.OOFAccumulator("sigmoid", thresholds)
    accumulator.add([f"{i}" for i in range(6)], probs[:6], truth[:6])   # two batches
    accumulator.add([f"{i}" for i in range(6, 12)], probs[6:], truth[6:])
    grid = tuning.score_grid(accumulator.counts(), min_areas)
    for (k, t), (m, area) in itertools.product(enumerate(thresholds), enumerate(min_areas)):
        params = PostProcess(head="sigmoid", threshold=t, min_area=area)
        pred = postprocess.class_masks(probs, params).numpy()
        brute = metrics.dice(pred, truth.numpy()).mean(axis=0)
        np.testing.assert_allclose(grid[0, k, m], brute, rtol=0, atol=1e-12)


def test_tuning_picks_the_best_and_scores_match_brute_force():
    probs, truth = random_set(seed=1, n=16)
    thresholds = tuning.default_thresholds("softmax")
    accumulator = oof.OOFAccumulator("softmax", thresholds)
    accumulator.add([str(i) for i in range(16)], probs, truth)
    counts = accumulator.counts()
    chosen = tuning.tune(counts, (0, 3, 10, 30))
    for c in range(4):
        assert chosen.grid[0, chosen.threshold_index[c], (0, 3, 10, 30).index(chosen.min_area[c]),
                           c] == chosen.grid[..., c].max()
    params = PostProcess(head="softmax", threshold=[thresholds[k] for k in chosen.threshold_index],
                         min_area=chosen.min_area)
    pred = postprocess.class_masks(probs, params).numpy()
    brute = metrics.score_masks(pred, truth.numpy())
    tuned = tuning.scores_at(counts, chosen.threshold_index, chosen.min_area)
    assert tuned.score == brute.score and tuned.confusion == brute.confusion
    default = tuning.scores_at(counts, (0,) * 4, (0,) * 4)
    assert tuned.score >= default.score


def test_min_area_rescues_empty_pairs():
    probs, truth = random_set(seed=2)
    accumulator = oof.OOFAccumulator("sigmoid", (0.5,))
    accumulator.add([str(i) for i in range(12)], probs, truth)
    grid = tuning.score_grid(accumulator.counts(), (0, 10))
    assert grid[0, 0, 1].mean() > grid[0, 0, 0].mean() + 0.05


@pytest.mark.parametrize("min_area", [0, 1, 5, 40])
def test_min_area_means_the_same_in_tuning_and_in_the_masks(min_area):
    """The OOF search scores exactly what ``class_masks`` later writes, min_area 0 included."""
    torch.manual_seed(min_area)
    probs = torch.rand(3, 4, 8, 12) ** 4          # some classes empty at 0.5, some not
    truth = torch.rand(3, 4, 8, 12) > 0.9
    truth[0] = False
    params = PostProcess(threshold=0.5, min_area=min_area)
    masks = postprocess.class_masks(probs, params)
    accumulator = oof.OOFAccumulator("softmax", (0.5,))
    accumulator.add(["a", "b", "c"], probs, truth)
    chosen = tuning.scores_at(accumulator.counts(), (0,) * 4, (min_area,) * 4)
    direct = metrics.summarize(*metrics.pair_counts(masks.numpy(), truth.numpy()))
    assert chosen == direct


def test_gate_tuning_equals_brute_force_on_every_grid_point():
    """With presence probabilities, every (gate, threshold, min_area) of the grid scores what
    ``class_masks`` would write with those values."""
    probs, truth = random_set(seed=3)
    rng = np.random.default_rng(3)
    present = truth.flatten(2).any(dim=2).numpy()
    presence = torch.from_numpy(np.clip(present * 0.5 + rng.random((12, 4)) * 0.6, 0, 0.999)
                                .astype(np.float32))
    thresholds, min_areas, gates = (0.3, 0.6), (0, 5, 20), (None, 0.4, 0.7)
    accumulator = oof.OOFAccumulator("sigmoid", thresholds)
    accumulator.add([str(i) for i in range(12)], probs, truth, presence)
    grid = tuning.score_grid(accumulator.counts(), min_areas, accumulator.presence(), gates)
    for (g, gate), (k, t), (m, area) in itertools.product(
            enumerate(gates), enumerate(thresholds), enumerate(min_areas)):
        params = PostProcess(head="sigmoid", threshold=t, min_area=area, presence=gate)
        pred = postprocess.class_masks(probs, params, presence).numpy()
        brute = metrics.dice(pred, truth.numpy()).mean(axis=0)
        np.testing.assert_allclose(grid[g, k, m], brute, rtol=0, atol=1e-12)
    chosen = tuning.tune(accumulator.counts(), min_areas, accumulator.presence(), gates)
    best = tuning.scores_at(accumulator.counts(), chosen.threshold_index, chosen.min_area,
                            accumulator.presence(), chosen.presence)
    params = PostProcess(head="sigmoid", threshold=[thresholds[k] for k in chosen.threshold_index],
                         min_area=chosen.min_area, presence=chosen.presence)
    assert best.score == metrics.score_masks(
        postprocess.class_masks(probs, params, presence).numpy(), truth.numpy()).score
    ungated = tuning.tune(accumulator.counts(), min_areas)
    assert best.score >= tuning.scores_at(accumulator.counts(), ungated.threshold_index,
                                          ungated.min_area).score


def test_presence_comes_with_every_batch_or_none():
    probs, truth = random_set(seed=4, n=4)
    accumulator = oof.OOFAccumulator("sigmoid", (0.5,))
    accumulator.add(["a", "b"], probs[:2], truth[:2])
    with pytest.raises(ValueError, match="every batch or with none"):
        accumulator.add(["c", "d"], probs[2:], truth[2:], torch.ones(2, 4))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_counting_path_and_the_mask_path_agree_at_every_grid_point(seed):
    """Each post-processing step is defined once (``steps``): the counts that tuning scores
    equal the counts of ``class_masks`` at every (presence, threshold, min_component,
    min_area) point, on random probabilities, truths and presence probabilities."""
    from pipeline.inference import steps

    probs, truth = random_set(seed, n=6)
    presence = torch.from_numpy(np.random.default_rng(seed).random((6, 4), dtype=np.float32))
    thresholds = (None, 0.3, 0.5)
    for min_component in ((0,) * 4, (3, 1, 6, 2)):
        accumulator = oof.OOFAccumulator("softmax", thresholds, min_component)
        accumulator.add([f"{i}" for i in range(6)], probs, truth, presence)
        counts = accumulator.counts()
        for gate, (k, threshold), min_area in itertools.product(
                (None, 0.3, 0.6), enumerate(thresholds), (0, 5, 20, 60)):
            is_open = steps.PRESENCE.keep(None, presence.numpy(), (gate,) * 4)
            counted = np.stack(tuning.apply_gates(counts[:, k], (min_area,) * 4, is_open), -1)
            params = PostProcess(threshold=threshold, min_component=min_component,
                                 min_area=min_area, presence=gate)
            masks = postprocess.class_masks(probs, params, presence)
            direct = np.stack([c.numpy() for c in metrics.pair_counts(masks, truth)], -1)
            np.testing.assert_array_equal(counted, direct)
