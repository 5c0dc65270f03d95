"""Image files: listing a folder's JPEGs, reading one with clear errors, resizing."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import HEIGHT, WIDTH

# JPEG names as cameras and tools write them: ``.jpg``, ``.JPG``, ``.jpeg``, ``.JPEG``.
IMAGE_SUFFIXES = (".jpg", ".jpeg")
# How a loader reads a JPEG for a smaller input: "scaled" decodes at 1/2, 1/4 or 1/8 size where
# the scale allows (``reduction_for``), "full" at 256x1600; each then resizes the rest of the way.
DECODES = ("scaled", "full")
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def is_image(path: Path) -> bool:
    """Whether ``path`` is named as a JPEG (any case of ``.jpg`` or ``.jpeg``)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(images_dir: Path) -> list[str]:
    """Sorted file names of the JPEGs in a directory (the ImageIds), any case of ``.jpg`` or
    ``.jpeg``."""
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} is not a directory: run `make download` or "
                                "`make sample-data` to create the dataset")
    return sorted(p.name for p in images_dir.iterdir() if is_image(p) and p.is_file())


# libjpeg decodes at 1/2, 1/4 or 1/8 scale in its inverse DCT, for a fraction of the work.
# Pixels are read as stored: the competition's images are sensor frames, so an EXIF
# orientation tag (which OpenCV applies by default) would only rotate image against masks.
REDUCED_FLAGS = {r: flag | cv2.IMREAD_IGNORE_ORIENTATION
                 for r, flag in {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                                 4: cv2.IMREAD_REDUCED_COLOR_4,
                                 8: cv2.IMREAD_REDUCED_COLOR_8}.items()}


def reduction_for(scale: float) -> int:
    """The largest JPEG decode reduction r (1, 2, 4 or 8) whose image, 1/r of the original, is
    not smaller than ``scale``: a resize from there to ``scale`` only ever shrinks."""
    return max((r for r in REDUCED_FLAGS if 1 / r >= scale - 1e-9), default=1)


def read_image(path: Path, shape: tuple[int, int] = (HEIGHT, WIDTH),
               reduce: int = 1) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB image at path; clear errors for missing, corrupt, wrong size.

    ``reduce`` (2, 4 or 8): decode at that fraction of ``shape`` (sides rounded up), directly
    from the JPEG's DCT coefficients; the file's size is checked from its header first.
    """
    if reduce not in REDUCED_FLAGS:
        raise ValueError(f"reduce={reduce}: valid reductions are {sorted(REDUCED_FLAGS)}")
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    data = path.read_bytes()
    # OpenCV decodes a truncated JPEG with grey rows and a warning naming no file: refuse it.
    if data.startswith(JPEG_START) and not data.rstrip(b"\0").endswith(JPEG_END):
        raise ValueError(f"image {path} cannot be decoded (truncated: no JPEG end marker): "
                         "re-download it")
    if reduce > 1:
        _check_size(path, _header_size(data, path), shape)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), REDUCED_FLAGS[reduce])
    if image is None:
        raise ValueError(f"image {path} cannot be decoded (corrupt or not a JPEG): "
                         "re-download it")
    _check_size(path, image.shape[:2], tuple(-(-side // reduce) for side in shape))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _header_size(data: bytes, path: Path) -> tuple[int, int]:
    """(height, width) from the image's header, without decoding it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"image {path} cannot be decoded (corrupt or not a JPEG): "
                         "re-download it") from None


def _check_size(path: Path, size: tuple[int, int], shape: tuple[int, int]) -> None:
    if tuple(size) != tuple(shape):
        raise ValueError(f"image {path} is {size[1]}x{size[0]}, expected "
                         f"{shape[1]}x{shape[0]} (width x height)")


def resize(image: np.ndarray, size: tuple[int, int], masks: bool = False) -> np.ndarray:
    """Resize ``(H, W, C)`` to ``size`` = (h, w): area for images, nearest for masks.

    Masks shrunk by whole factors are a strided view (OpenCV's nearest picks the same first
    pixel of each block, 10x slower on 4-channel masks).
    """
    if image.shape[:2] == size:
        return image
    (height, width), (h, w) = image.shape[:2], size
    if masks and height % h == 0 and width % w == 0:
        return image[::height // h, ::width // w]
    interpolation = cv2.INTER_NEAREST if masks else cv2.INTER_AREA
    resized = cv2.resize(image, (size[1], size[0]), interpolation=interpolation)
    return resized.reshape(size + image.shape[2:])
