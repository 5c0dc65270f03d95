"""A DataLoader whose worker processes leave Ctrl-C to the main process."""

from __future__ import annotations

import signal

import torch.utils.data


class DataLoader(torch.utils.data.DataLoader):
    """torch's DataLoader, but its worker processes start with SIGINT blocked, and keep it so.

    Ctrl-C signals the whole process group. A worker caught between its fork and torch's worker
    loop (which leaves Ctrl-C to the main process) printed a traceback from multiprocessing's
    start-up; blocked, the signal reaches the main process alone (one line, exit 130). A Ctrl-C
    that comes while the workers start is delivered to the main process once they have.
    """

    def _get_iterator(self):
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
            return super()._get_iterator()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return super()._get_iterator()   # forks the workers, which inherit the mask
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
