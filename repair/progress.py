"""Progress bars that stay readable in log files (frequent redraws on a terminal, sparse lines otherwise), and the
per-phase timing of a step."""
from __future__ import annotations

import contextlib
import sys
import time

from tqdm.auto import tqdm


def progress(*args, **kwargs):
    kwargs.setdefault("leave", False)
    kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(*args, **kwargs)


class Phases:
    """Wall seconds per named phase of one step (e.g. `unlearn.phases` in results.json); a phase entered several
    times adds up. Phases must not nest: each second is counted once, so the phases sum to at most the step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._open: str | None = None

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self._open is not None:
            raise RuntimeError(f"phase {name!r} opened inside phase {self._open!r}; phases do not nest")
        self._open, start = name, time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self._open = None

    def summary(self) -> str:
        """The breakdown for the log, largest first."""
        total = sum(self.seconds.values()) or 1.0
        return ", ".join(f"{name} {s:.2f} s ({100 * s / total:.0f}%)"
                         for name, s in sorted(self.seconds.items(), key=lambda kv: -kv[1]))
