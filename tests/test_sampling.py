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


def mixed(n_real: int, n_pseudo: int, share: float, seed: int = 0, rank: int = 0,
          world_size: int = 1, balanced: bool = False) -> sampling.MixedSampler:
    """A mixed sampler over a real sampler of ``n_real`` images (balanced or a shuffle)."""
    from torch.utils.data import DistributedSampler

    if balanced:
        real = sampling.BalancedSampler(presence(n_real // 2, (n_real - n_real // 2, 0, 0, 0)),
                                        (0.5, 0.5, 0, 0, 0), seed=seed, rank=rank,
                                        world_size=world_size, warn=False)
    else:
        real = DistributedSampler(range(n_real), num_replicas=world_size, rank=rank, seed=seed,
                                  drop_last=world_size > 1)
    return sampling.MixedSampler(real, n_real, n_pseudo, share, seed=seed, rank=rank,
                                 world_size=world_size)


@pytest.mark.parametrize("balanced", [False, True])
def test_the_pseudo_share_of_an_epoch_is_close_to_the_set_share(balanced):
    sampler = mixed(4000, 37, 0.25, seed=2, balanced=balanced)
    drawn = np.array(list(sampler))
    assert len(drawn) == len(sampler) == 4000    # the epoch is as long as the real images
    is_pseudo = drawn >= 4000
    # binomial standard error at 4,000 draws is 0.0068: 3.7 of them
    assert abs(is_pseudo.mean() - 0.25) < 0.025
    counts = np.bincount(drawn[is_pseudo] - 4000, minlength=37)
    assert counts.max() - counts.min() <= 1      # every pseudo image in turn
    # the real draws are the real sampler's own, in its order
    sampler.real_sampler.set_epoch(0)
    assert drawn[~is_pseudo].tolist() == list(sampler.real_sampler)[:(~is_pseudo).sum()]


def test_the_mixed_draw_depends_on_seed_and_epoch_only():
    first, again, other = mixed(500, 20, 0.3, seed=1), mixed(500, 20, 0.3, seed=1), \
        mixed(500, 20, 0.3, seed=2)
    assert list(first) == list(again) and list(first) != list(other)
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch1 != list(again)
    first.set_epoch(0)
    assert list(first) == list(again)
    again.set_epoch(1)
    assert list(again) == epoch1


@pytest.mark.parametrize("balanced", [False, True])
def test_ranks_take_equal_shares_of_one_mixed_draw(balanced):
    whole = mixed(90, 11, 0.25, seed=3, balanced=balanced)
    ranks = [mixed(90, 11, 0.25, seed=3, rank=r, world_size=4, balanced=balanced)
             for r in range(4)]
    draws = [list(s) for s in ranks]
    assert [len(d) for d in draws] == [len(s) for s in ranks] == [22] * 4   # 2 dropped
    # which draws are pseudo, and which pseudo image, is the one-process draw split by rank
    merged = np.empty(88, dtype=np.int64)
    for r, d in enumerate(draws):
        merged[r::4] = d
    single = np.array(list(whole))[:88]
    assert ((merged >= 90) == (single >= 90)).all()
    assert (merged[merged >= 90] == single[single >= 90]).all()


def test_a_mixed_sampler_needs_pseudo_images_and_a_share_below_one():
    with pytest.raises(ValueError, match="needs pseudo images"):
        mixed(10, 0, 0.2)
    with pytest.raises(ValueError, match=r"share in \(0, 1\) \(got 1.0\)"):
        mixed(10, 3, 1.0)
