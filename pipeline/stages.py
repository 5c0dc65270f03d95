"""Named stages of the work (decode, forward, backward, ...), as ``torch.profiler`` ranges.

The code marks each stage with ``with stage("decode"):``; outside a profiler a range costs a
few microseconds. ``bench/demo_profile.py`` runs the demo's commands under the profiler and
sums the time of each stage, so the profile is of the real code paths, not a model of them.
Stages do not nest in one another, so their times add up.
"""

from __future__ import annotations

from torch.profiler import record_function

# The model's own compute: what a faster machine or a compiled model speeds up.
MODEL = ("forward", "backward", "optimizer")
# Everything else that the code marks.
OTHER = ("decode", "resize", "masks", "augment", "loss", "upsample", "probabilities",
         "postprocess", "metric", "search", "plots", "rle", "checkpoint", "load")
STAGES = MODEL + OTHER


def stage(name: str) -> record_function:
    """A profiler range named ``name`` (one of ``STAGES``)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    return record_function(name)
