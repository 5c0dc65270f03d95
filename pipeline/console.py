"""Messages to the user: the package logs through ``logging``; this sets up where they go.

Library modules log with ``logging.getLogger(__name__)``; the CLI and the kernel call
``setup()`` once, so warnings reach stderr as one line ``warning: ...`` with no traceback.
"""

from __future__ import annotations

import logging
import sys


class _Stderr(logging.Handler):
    """Writes ``level: message`` to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # logging's contract: report, never raise from a handler
            self.handleError(record)


def setup(level: int = logging.INFO) -> None:
    """Send the package's log records at ``level`` and above to stderr (once per process)."""
    logger = logging.getLogger("pipeline")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(level)
