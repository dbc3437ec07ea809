"""Progress bars that stay readable in log files: frequent redraws on a terminal, sparse lines otherwise."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(*args, **kwargs):
    kwargs.setdefault("leave", False)
    kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(*args, **kwargs)
