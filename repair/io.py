"""Atomic writes: a crash or Ctrl-C never leaves a half-written cache entry or results file."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def stable_digest(value: Any, length: int = 16) -> str:
    """A short, stable hex name for JSON-able content (cache keys, fingerprints): the same value gives the same name
    in every process and on every machine."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _remove_stale_temporaries(target: Path) -> None:
    """Delete `.<name>.<random>.tmp` beside `target` (what atomic_path makes for it). The random part holds no dot,
    so the temporaries of another entry whose name starts with `<name>.` never match."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[^./]+\.tmp")
    for stale in target.parent.iterdir():
        if not pattern.fullmatch(stale.name):
            continue
        log.warning("removing %s, left by a cache build that was killed", stale)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def cached_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Return the cache folder `target`, building it with `build(tmp_dir)` unless a complete copy is there.

    A file lock makes concurrent jobs wait for one builder instead of building twice; the COMPLETE marker is
    written inside the temporary folder, so only a fully built entry is ever renamed into place. Temporary folders a
    killed builder (kill -9, power loss) left beside `target` are removed under the lock: no live builder of this
    target can be using them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        _remove_stale_temporaries(target)
        if (target / "COMPLETE").exists():
            return target
        if target.exists():
            log.warning("cache entry %s is incomplete; rebuilding it", target)
            shutil.rmtree(target)
        with atomic_path(target, is_dir=True) as tmp:
            build(tmp)
            (tmp / "COMPLETE").write_text("ok\n")
    return target


def replace_section(path: str | os.PathLike, start: str, end: str, text: str) -> None:
    """Replace what lies between the `start` and `end` marker lines of a generated-report section (atomically)."""
    path = Path(path)
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} … {end} section to replace")
    head, rest = doc.split(start, 1)
    with atomic_path(path) as tmp:
        tmp.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
