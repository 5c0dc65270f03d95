"""Image files: listing a folder's JPEGs, reading one with clear errors, resizing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.config import HEIGHT, WIDTH

IMAGE_SUFFIX = ".jpg"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def list_images(images_dir: Path) -> list[str]:
    """Sorted file names of the JPEGs in a directory (the ImageIds)."""
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} is not a directory: run `make download` or "
                                "`make sample-data` to create the dataset")
    return sorted(p.name for p in images_dir.iterdir() if p.suffix == IMAGE_SUFFIX)


def read_image(path: Path, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB image at path; clear errors for missing, corrupt, wrong size."""
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    data = path.read_bytes()
    # OpenCV decodes a truncated JPEG with grey rows and a warning naming no file: refuse it.
    if data.startswith(JPEG_START) and not data.rstrip(b"\0").endswith(JPEG_END):
        raise ValueError(f"image {path} cannot be decoded (truncated: no JPEG end marker): "
                         "re-download it or pass --skip-bad-images")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"image {path} cannot be decoded (corrupt or not a JPEG): "
                         "re-download it or pass --skip-bad-images")
    if image.shape[:2] != shape:
        raise ValueError(f"image {path} is {image.shape[1]}x{image.shape[0]}, expected "
                         f"{shape[1]}x{shape[0]} (width x height)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize(image: np.ndarray, size: tuple[int, int], masks: bool = False) -> np.ndarray:
    """Resize ``(H, W, C)`` to ``size`` = (h, w): area for images, nearest for masks."""
    if image.shape[:2] == size:
        return image
    interpolation = cv2.INTER_NEAREST if masks else cv2.INTER_AREA
    resized = cv2.resize(image, (size[1], size[0]), interpolation=interpolation)
    return resized.reshape(size + image.shape[2:])
