import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.data import rle
from pipeline.config import HEIGHT, WIDTH


def reference_decode(encoded: str, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    """Slow, obviously-correct decoder: one slice per run."""
    values = [int(v) for v in encoded.split()]
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for start, length in zip(values[0::2], values[1::2]):
        flat[start - 1:start - 1 + length] = 1
    return flat.reshape(shape[1], shape[0]).T


@settings(max_examples=300, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 13))))
def test_roundtrip_random_masks(mask):
    encoded = rle.encode(mask)
    np.testing.assert_array_equal(rle.decode(encoded, mask.shape), mask)
    np.testing.assert_array_equal(reference_decode(encoded, mask.shape), mask)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_roundtrip_full_size_sparse(data):
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    n = data.draw(st.integers(0, 20))
    rows = data.draw(st.lists(st.integers(0, HEIGHT - 1), min_size=n, max_size=n))
    cols = data.draw(st.lists(st.integers(0, WIDTH - 1), min_size=n, max_size=n))
    mask[rows, cols] = 1
    assert rle.decode(rle.encode(mask)).tolist() == mask.tolist()


@pytest.mark.parametrize("name,expected", [
    ("empty", ""),
    ("full", f"1 {HEIGHT * WIDTH}"),
    ("first", "1 1"),
    ("last", f"{HEIGHT * WIDTH} 1"),
    ("across", f"{HEIGHT - 1} 3"),   # last 2 pixels of column 0 and first of column 1
])
def test_special_masks(name, expected):
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    if name == "full":
        mask[:] = 1
    elif name == "first":
        mask[0, 0] = 1
    elif name == "last":
        mask[-1, -1] = 1
    elif name == "across":
        mask[-2:, 0] = 1
        mask[0, 1] = 1
    assert rle.encode(mask) == expected
    np.testing.assert_array_equal(rle.decode(expected), mask)


def test_values_other_than_one_are_defect():
    mask = np.zeros((4, 3), dtype=np.uint8)
    mask[1, 0], mask[2, 0] = 1, 255
    assert rle.encode(mask) == "2 2"


def test_real_vectors_roundtrip_and_pixel_counts(real_sample):
    vectors = pd.read_csv(real_sample / "rle_vectors.csv", keep_default_na=False)
    counts = dict(zip(vectors["ImageId"], [rle.decode(s).sum() for s in vectors.EncodedPixels]))
    assert counts == {"0002cc93b.jpg": 4396, "unknown-a.jpg": 3108, "unknown-b.jpg": 7607}
    for encoded in vectors["EncodedPixels"]:
        mask = rle.decode(encoded)
        np.testing.assert_array_equal(mask, reference_decode(encoded))
        assert rle.encode(mask) == encoded
        assert rle.area(encoded) == mask.sum()
    # The 1,248-pixel run of unknown-b crosses columns: 55328..56575 spans 5 columns.
    assert "55328 1248" in vectors["EncodedPixels"].iloc[2]


def test_real_predictions_roundtrip(real_sample):
    table = pd.read_csv(real_sample / "test_predictions_oldformat.csv", keep_default_na=False)
    nonempty = table[table["EncodedPixels"] != ""]["EncodedPixels"]
    assert len(nonempty) == 782
    for encoded in nonempty:
        assert rle.encode(rle.decode(encoded)) == encoded


@pytest.mark.parametrize("empty", ["", "  ", None, float("nan")])
def test_empty_encodings(empty):
    assert rle.decode(empty).sum() == 0
    assert rle.decode(empty).shape == (HEIGHT, WIDTH)
    assert rle.is_empty(empty)


@pytest.mark.parametrize("encoded,message", [
    ("1 2 3", "odd number"),
    ("1 2 x 4", "'x'"),
    ("1.5 2", "'1.5'"),
    ("-1 2", "'-1'"),
    ("0 5", "start 0"),
    ("5 0", "length 0"),
    (f"{HEIGHT * WIDTH} 2", "past pixel"),
    ("10 2 5 2", "unsorted"),
    ("10 5 12 2", "overlapping"),
])
def test_invalid_strings_raise_clear_errors(encoded, message):
    with pytest.raises(ValueError, match=message):
        rle.decode(encoded)


def test_adjacent_runs_are_valid():
    mask = rle.decode("1 2 3 2")
    assert mask.sum() == 4
    assert rle.encode(mask) == "1 4"


def test_encode_rejects_wrong_rank():
    with pytest.raises(ValueError, match="shape"):
        rle.encode(np.zeros((2, 3, 4), dtype=np.uint8))
