"""Console helpers shared by torch and torch-free code: silencing chatty libraries, a progress line."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
import warnings
from typing import Callable, Iterator

# A progress callback: (label, done, total), e.g. a `Progress`.
ProgressFn = Callable[[str, int, int], None]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The ONNX exporter and ONNX Runtime's provider fallback report on stdout and through
    warnings; keep the CLI's output (one JSON object) clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class Progress:
    """One self-overwriting line on stderr: `label: done/total`, at most a few updates a second."""

    def __init__(self, stream=None, interval: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last = 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{label}: {done}/{total}{end}")
        self.stream.flush()
