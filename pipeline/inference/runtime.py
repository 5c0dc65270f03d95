"""The process policy that inference runs under, applied where models are loaded (predict, cv,
robustness and the kernel alike), so the product gets the speed its benchmark measures.

glibc's malloc hands every large block (> 32 MiB by default, adaptively less) back to the
kernel with ``munmap`` when it is freed and maps a fresh one for the next batch: each batch
then pays page faults and zeroing for its activations (hundreds of MiB at 256x1600). Asking
malloc to keep freed memory (no mmap for large blocks, no trimming) reuses the same pages from
batch to batch; the peak stays what one batch needs, so memory stays flat in the number of
images. Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc malloc to reuse freed memory instead of mmap/munmap per large block (once per
    process); True when it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        done = bool(libc.mallopt(M_MMAP_MAX, 0) and
                    libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):   # not glibc: nothing to tune
        return False
    log.debug("malloc keeps freed memory: %s", done)
    return done
