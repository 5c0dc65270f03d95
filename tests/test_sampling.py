"""The balanced sampler: its group shares over many draws, ranks, epochs, empty groups."""

import numpy as np
import pandas as pd
import pytest

from pipeline.data import sampling


def presence(n_clean: int, per_class: tuple[int, ...], both: int = 0) -> np.ndarray:
    """(N, 4) bool: n_clean defect-free images, per_class[c] images of class c + 1 alone, and
    ``both`` images holding classes 3 and 4."""
    rows = [np.zeros(4, bool)] * n_clean
    for c, n in enumerate(per_class):
        rows += [np.eye(4, dtype=bool)[c]] * n
    rows += [np.array([False, False, True, True])] * both
    return np.stack(rows)


def group_shares(sampler: sampling.BalancedSampler, present: np.ndarray) -> np.ndarray:
    """Share of draws that land on each group (an image of two classes counts for both)."""
    drawn = present[sampler.draw()]
    clean = ~drawn.any(axis=1)
    return np.concatenate([[clean.mean()], drawn.mean(axis=0)])


def test_the_shares_over_many_draws_match_the_set_shares():
    present = presence(500, (60, 8, 400, 50))     # class 2 is 8 of 1,018 images
    shares = (0.2, 0.2, 0.2, 0.2, 0.2)
    sampler = sampling.BalancedSampler(present, shares, seed=3, num_samples=50_000)
    measured = group_shares(sampler, present)
    # binomial standard error at 50,000 draws is 0.0018: 5 of them
    np.testing.assert_allclose(measured, shares, atol=0.009)
    assert present[:, 1].mean() < 0.01   # uniform drawing would give class 2 under 1%


def test_uneven_shares_are_followed_too():
    present = presence(300, (30, 30, 300, 30))
    shares = (0.5, 0.1, 0.1, 0.2, 0.1)
    sampler = sampling.BalancedSampler(present, shares, seed=0, num_samples=40_000)
    np.testing.assert_allclose(group_shares(sampler, present), shares, atol=0.01)


def test_an_empty_group_gives_its_share_to_the_others(caplog):
    present = presence(100, (100, 0, 100, 100))    # no image of class 2
    sampler = sampling.BalancedSampler(present, (0.2,) * 5, seed=1, num_samples=40_000)
    assert "no training image in class 2" in caplog.text
    np.testing.assert_allclose(sampler.shares, [0.25, 0.25, 0.0, 0.25, 0.25])
    np.testing.assert_allclose(group_shares(sampler, present), sampler.shares, atol=0.01)


def test_the_trainers_samplers_are_quiet_and_empty_groups_are_named(caplog):
    present = presence(100, (100, 0, 100, 100))
    members = sampling.group_members(present)
    assert sampling.empty_groups(members, (0.2,) * 5) == ["class 2"]
    assert sampling.empty_groups(members, (0.25, 0.25, 0.0, 0.25, 0.25)) == []
    sampling.BalancedSampler(present, (0.2,) * 5, warn=False)   # built once per epoch
    assert caplog.text == ""


def test_nothing_to_draw_is_an_error():
    present = presence(0, (5, 0, 0, 0))
    with pytest.raises(ValueError, match="nothing to draw"):
        sampling.BalancedSampler(present, (1.0, 0.0, 0.0, 0.0, 0.0))


def test_ranks_split_one_epoch_draw_and_epochs_differ():
    present = presence(40, (10, 10, 10, 10))
    whole = sampling.BalancedSampler(present, (0.2,) * 5, seed=5)
    ranks = [sampling.BalancedSampler(present, (0.2,) * 5, seed=5, rank=r, world_size=3)
             for r in range(3)]
    for epoch in (0, 1):
        for sampler in (whole, *ranks):
            sampler.set_epoch(epoch)
        n = len(present)                       # 80 draws: 26 per rank, 2 dropped
        merged = np.empty(n // 3 * 3, dtype=np.int64)
        for r, sampler in enumerate(ranks):
            merged[r::3] = list(sampler)
        assert n % 3 and merged.tolist() == list(whole)[:n // 3 * 3]
        # equal lengths on every rank (DDP needs the same number of batches everywhere)
        assert [len(s) for s in ranks] == [len(list(s)) for s in ranks] == [n // 3] * 3
        assert len(whole) == len(list(whole)) == n
    whole.set_epoch(0)
    first = list(whole)
    whole.set_epoch(1)
    assert list(whole) != first
    whole.set_epoch(0)
    assert list(whole) == first   # an epoch's draw depends only on (seed, epoch): resumable


def test_presence_table_reads_the_rle_table():
    rles = pd.DataFrame({1: ["1 3", "", ""], 2: ["", "", ""], 3: ["", "5 2", ""],
                         4: ["", "7 1", ""]}, index=["a.jpg", "b.jpg", "c.jpg"])
    table = sampling.presence_table(rles, ["c.jpg", "a.jpg", "b.jpg"])
    assert table.tolist() == [[False] * 4, [True, False, False, False],
                              [False, False, True, True]]
