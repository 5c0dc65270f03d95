"""The synthetic world's spread: many looks and defects on the border in ``wide``, one look in
``narrow``; labels still where the defects are drawn."""

import cv2
import numpy as np

from pipeline.config import WIDTH
from pipeline.data import world
from pipeline.data.render import layout_masks, render_image, sample_layout
from pipeline.data.synthetic import write_dataset


def layouts(name: str, n: int, seed: int = 7) -> list[dict]:
    spread = world.WORLDS[name]
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 0])
        out.append(world.touch_borders(sample_layout(rng, p_dark_edge=spread.p_dark_edge), rng,
                                       spread))
    return out


def test_wide_puts_defects_on_the_border_far_more_often():
    def on_border(layout: dict) -> bool:
        masks = layout_masks(layout)
        return bool(masks[..., 0].any() or masks[..., WIDTH - 1].any())
    wide, narrow = layouts("wide", 300), layouts("narrow", 300)
    assert sum(map(on_border, wide)) >= 4 * sum(map(on_border, narrow)) + 5
    assert sum(lay["edge"] is not None for lay in wide) > 1.5 * sum(
        lay["edge"] is not None for lay in narrow)


def test_moved_defects_are_drawn_inside_their_masks():
    moved = [lay for lay in layouts("wide", 300) if lay["defects"] and lay["edge"] is None and (
        layout_masks(lay)[..., [0, WIDTH - 1]].any())]
    assert {d["cls"] for lay in moved for d in lay["defects"]} >= {3, 4}
    for i, layout in enumerate(moved[:8]):
        with_defects = render_image(layout, np.random.default_rng(i), contrast=1.0)
        bare = render_image(layout, np.random.default_rng(i), contrast=0.0)
        diff = np.abs(with_defects.astype(float) - bare)
        near = cv2.dilate(layout_masks(layout).max(0), np.ones((19, 19), np.uint8)) > 0
        assert diff[near].sum() >= 0.9 * diff.sum() and diff[near].mean() > 2


def test_wide_spans_dark_to_bright_and_jpeg_qualities(tmp_path):
    means = {}
    for name in ("wide", "narrow"):
        write_dataset(tmp_path / name, n_train=30, n_test=1, seed=3, quiet=True, workers=2,
                      world=name)
        means[name] = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).mean()
                       for p in sorted((tmp_path / name / "train_images").glob("*.jpg"))]
    assert 65 < min(means["narrow"]) and max(means["narrow"]) < 125
    assert min(means["wide"]) < 50 and max(means["wide"]) > 140
    rng = np.random.default_rng(0)
    qualities = {world.jpeg_quality(rng, world.WORLDS["wide"]) for _ in range(200)}
    assert min(qualities) < 40 and max(qualities) > 85
    assert world.jpeg_quality(rng, world.WORLDS["narrow"]) == 90
