"""Data: RLE, labels and images of the competition layout, datasets, folds, statistics and the
synthetic generator."""
