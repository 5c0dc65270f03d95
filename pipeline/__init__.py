"""Severstal steel-defect segmentation pipeline: data, training, inference, Kaggle I/O."""

__version__ = "0.1.0"
