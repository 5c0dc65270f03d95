"""Inference: fold ensembles and their probabilities, post-processing, out-of-fold scoring and
tuning, submission files, and the CV reports."""
