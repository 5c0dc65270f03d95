"""The synthetic worlds: many looks and defects on the border in ``wide``, one look in
``narrow`` (both byte for byte as before); ``realistic`` the default, ``held-out`` its labels
with looks from other ranges; labels still where the defects are drawn."""

import dataclasses
import hashlib
import inspect

import cv2
import numpy as np
import pytest

from pipeline import cli
from pipeline.config import WIDTH
from pipeline.data import realistic, realistic_look, world
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


# sha256 of every file (relative path, then bytes) of write_dataset(12 train, 2 test, seed 11)
# and of its train.csv, as the classic generator made them before the realistic worlds came.
PINNED = {
    "narrow": ("590c4dc40c7c56ab34eb48e645a4605d6c269a0affe8b6566b2d75698ff4bf95",
               "9edd0973612ad03d839ae19e3f82d03fe2b2eade220c73e0a7f2690c126d30a5"),
    "wide": ("84276ad6b44f0ad6d85ce095f17d8873e615999884cab52a2afc4e3b023424fa",
             "46382dcdf3cdab5f0bcfd9b8687debad97a6895cf003d7194568ec18a932c7e6"),
}


def digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_classic_worlds_are_byte_identical_to_before(tmp_path, name):
    write_dataset(tmp_path, 12, 2, seed=11, quiet=True, workers=1, world=name)
    assert (digest(tmp_path), hashlib.sha256((tmp_path / "train.csv").read_bytes()).hexdigest()
            ) == PINNED[name]


def test_realistic_is_the_default_and_held_out_has_its_labels_not_its_looks(tmp_path):
    assert world.DEFAULT_WORLD == "realistic"
    assert inspect.signature(write_dataset).parameters["world"].default == "realistic"
    assert cli.parse(["synth", "--out", "x"]).world == "realistic"
    for name in ("default", "realistic", "held-out"):
        kwargs = {} if name == "default" else {"world": name}
        write_dataset(tmp_path / name, 6, 0, seed=2, quiet=True, workers=1, **kwargs)
    labels = {n: (tmp_path / n / "train.csv").read_bytes() for n in ("realistic", "held-out")}
    assert labels["realistic"] == labels["held-out"]
    assert digest(tmp_path / "default") == digest(tmp_path / "realistic")
    images = [sorted((tmp_path / n / "train_images").glob("*.jpg"))
              for n in ("realistic", "held-out")]
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(*images))


def test_held_out_looks_come_from_ranges_realistic_never_uses():
    def overlap(a: tuple, b: tuple) -> bool:
        return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a for lo2, hi2 in b)
    fields = [f.name for f in dataclasses.fields(realistic_look.Sheet) if f.name != "p_blur"]
    for field in fields:
        assert not overlap(getattr(realistic_look.REALISTIC, field),
                           getattr(realistic_look.HELD_OUT, field)), field
    qualities = [world.WORLDS[n].jpeg_quality for n in ("realistic", "held-out")]
    assert qualities[0][0] > qualities[1][1] or qualities[1][0] > qualities[0][1]
    rng = np.random.default_rng(0)
    values = [realistic_look.draw(rng, ((1.0, 2.0), (5.0, 6.0))) for _ in range(400)]
    assert all(1 <= v <= 2 or 5 <= v <= 6 for v in values)
    assert 100 < sum(v > 5 for v in values) < 300


def test_realistic_defects_stand_out_inside_their_masks():
    seen = set()
    for i in range(400):
        layout = realistic.sample_layout(np.random.default_rng([4, i, 0]))
        if not layout["defects"] or layout["defects"][0]["cls"] in seen:
            continue
        seen.add(layout["defects"][0]["cls"])
        for sheet in (realistic_look.REALISTIC, realistic_look.HELD_OUT):
            with_defects = realistic_look.render_image(layout, np.random.default_rng(i), 1.0, sheet)
            bare = realistic_look.render_image(layout, np.random.default_rng(i), 0.0, sheet)
            diff = np.abs(with_defects.astype(float) - bare)
            mask = layout_masks(layout).max(0)
            assert diff[mask > 0].mean() > 6, "defects must stand out of the texture"
            near = cv2.dilate(mask, np.ones((19, 19), np.uint8)) > 0
            assert diff[near].sum() >= 0.9 * diff.sum()
            if layout["off_sheet"] is not None:  # the defects lie on the sheet
                assert (with_defects[mask > 0] >= 10).mean() > 0.5
    assert seen == {1, 2, 3, 4}
